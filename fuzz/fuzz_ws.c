/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ws.c - libFuzzer harness for the working-set file reader
 * (src/ws/ws_file.c, docs/working-set.md): the bytes become a file (a
 * memfd) loaded with pc_ws_load(), as `--replay-ws` would load it.
 *
 * Input: byte 0 bit 0 set: the harness rewrites the trailer with the
 * file's checksum first (XXH3, unkeyed: anyone can compute it), so that
 * mutations reach the entries.  The rest is the file.
 *
 * Checks: a refusal is a negative errno and says why; a file that loads
 * keeps the promises replay relies on: every page inside the image and
 * present once, first touches in order, each held by 1..runs runs; and a
 * merge of it with itself (k = 1 and k = 2) gives the same pages.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "fuzz_memfd.h"
#include "postcopy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The entries' offsets, sorted; abort() if a promise is broken. */
static uint64_t *check_loaded(const pc_ws *ws, struct pc_ws_info *info)
{
	if (pc_ws_info(ws, info) < 0 || !info->image.size ||
	    info->image.size % PC_SOURCE_PAGE_SIZE || !info->runs)
		abort();
	uint64_t *off = malloc((info->pages ? info->pages : 1) * sizeof(*off));
	if (!off)
		abort();
	uint64_t last_ns = 0;
	for (uint64_t i = 0; i < info->pages; i++) {
		struct pc_ws_entry e;
		if (pc_ws_entry(ws, i, &e) < 0 || e.offset >= info->image.size ||
		    e.offset % PC_SOURCE_PAGE_SIZE || e.time_ns < last_ns ||
		    !e.runs || e.runs > info->runs)
			abort();
		last_ns = e.time_ns;
		off[i] = e.offset;
	}
	if (pc_ws_entry(ws, info->pages, &(struct pc_ws_entry){ 0 }) != -EINVAL)
		abort();
	qsort(off, info->pages, sizeof(*off), cmp_u64);
	for (uint64_t i = 1; i < info->pages; i++)
		if (off[i] == off[i - 1])
			abort();
	return off;
}

static void check_merge(const pc_ws *ws, const struct pc_ws_info *info,
			const uint64_t *off, unsigned k)
{
	const pc_ws *in[2] = { ws, ws };
	pc_ws *m = NULL;
	char why[256];
	int ret = pc_ws_merge(in, 2, k, &m, why, sizeof(why));
	if (ret > 0)
		abort();
	if (ret < 0)
		return; /* -ENOMEM, or more runs than a file can say */
	struct pc_ws_info mi;
	uint64_t *moff = check_loaded(m, &mi);
	if (mi.pages != info->pages ||
	    memcmp(&mi.image, &info->image, sizeof(mi.image)) ||
	    (info->pages && memcmp(moff, off, info->pages * sizeof(*off))))
		abort();
	free(moff);
	pc_ws_destroy(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned flags = data[0];
	size_t len = size - 1;
	uint8_t *b = malloc(len ? len : 1);
	if (!b)
		return 0;
	memcpy(b, data + 1, len);
	if ((flags & 1) && len >= 8) {
		uint64_t sum = XXH3_64bits(b, len - 8);
		memcpy(b + len - 8, &sum, 8); /* little-endian hosts */
	}
	char path[64], why[256] = "";
	int fd = fuzz_memfd("fuzz_ws", b, len, path);
	free(b);
	if (fd < 0)
		return 0;
	pc_ws *ws = NULL;
	int ret = pc_ws_load(path, &ws, why, sizeof(why));
	close(fd);
	if (ret > 0 || (ret < 0 && !why[0]))
		abort();
	if (ret < 0)
		return 0;
	struct pc_ws_info info;
	uint64_t *off = check_loaded(ws, &info);
	check_merge(ws, &info, off, 1);
	check_merge(ws, &info, off, 2);
	free(off);
	pc_ws_destroy(ws);
	return 0;
}
