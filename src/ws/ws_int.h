/* SPDX-License-Identifier: MIT */
/*
 * ws_int.h - what the working-set files share: a pc_ws is either a
 * recorder (per-thread buffers the fault path writes into) or a list of
 * entries in first-touch order (loaded, merged).
 */
#ifndef PC_WS_INT_H
#define PC_WS_INT_H

#include "internal.h"

#define WS_THREAD_OTHER 0xffffu

/* A list entry, as in the file (docs/working-set.md). */
struct ws_entry {
	uint64_t page;	  /* 4 KiB page number */
	uint32_t time_us; /* first touch since start (merged: median) */
	uint16_t thread;  /* attached slot, WS_THREAD_OTHER */
	uint16_t runs;	  /* recordings holding the page */
};

/* A recorder's buffer entry: the page + 1 is stored last (release), so a
 * reader that sees it non-zero sees the time too. */
struct rec_entry {
	_Atomic uint64_t page1;
	uint64_t ns;
};

struct rec_slot {
	_Atomic uint64_t n; /* entries taken */
	struct rec_entry *e;
} __attribute__((aligned(64)));

struct pc_ws {
	struct pc_image_id image;
	/* A list (loaded, merged). */
	struct ws_entry *e;
	uint64_t count;
	unsigned runs;
	/* A recorder. */
	struct pc_region *r;
	unsigned nslots;	/* attachable slots + "other", the last */
	uint64_t cap;		/* entries per slot: the region's pages */
	struct rec_slot *slots;
	void *area;		/* every slot's buffer, one mapping */
	size_t area_len;
};

/* A list of @count entries, allocated (zeroed) for @image. */
int ws_alloc(const struct pc_image_id *image, uint64_t count, pc_ws **out);

/* A recorder's entries so far, sorted by first touch, each page once
 * (malloc'ed into *e); also its duration. */
int ws_collect(const pc_ws *rec, struct ws_entry **e, uint64_t *count);

#endif
