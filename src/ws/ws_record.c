/* SPDX-License-Identifier: MIT */
/*
 * ws_record.c - recording a working set: the region's fault hook writes
 * each fetching demand fault into the faulting thread's own buffer.
 *
 * Why this is cheap and safe in a SIGBUS handler: the hook does one
 * relaxed atomic add on the slot's own cache line (vCPUs never share one;
 * only the "other" slot is shared, by unattached threads and wait-mode
 * handlers, and the add keeps them apart), a vDSO clock read and two
 * stores.  No lock, no system call, no allocation: every slot's buffer is
 * mapped beforehand, as large as the region has pages (a page is recorded
 * once), virtual memory of which only what is written is ever backed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ws_int.h"

static void record_hook(void *arg, uint64_t offset, unsigned thread)
{
	pc_ws *ws = arg;
	unsigned k = thread < ws->nslots - 1 ? thread : ws->nslots - 1;
	struct rec_slot *s = &ws->slots[k];
	uint64_t i = atomic_fetch_add_explicit(&s->n, 1, memory_order_relaxed);
	if (i >= ws->cap)
		return; /* a page recorded again after a failed fetch: full */
	s->e[i].ns = now_ns();
	atomic_store_explicit(&s->e[i].page1, offset / PC_SOURCE_PAGE_SIZE + 1,
			      memory_order_release);
}

int pc_ws_record(pc_region *r, const struct pc_image_id *image, pc_ws **out)
{
	if (!r || !image || image->size != r->opts.size)
		return -EINVAL;
	if (r->mem.slices)
		return -EBUSY; /* started: too late to see every fault */
	if (r->fault_hook)
		return -EBUSY;
	pc_ws *ws = calloc(1, sizeof(*ws));
	if (!ws)
		return -ENOMEM;
	ws->image = *image;
	ws->runs = 1;
	ws->r = r;
	ws->nslots = r->nslots;
	ws->cap = r->npages;
	ws->slots = calloc(ws->nslots, sizeof(*ws->slots));
	ws->area_len = (size_t)ws->nslots * ws->cap * sizeof(struct rec_entry);
	void *area = mmap(NULL, ws->area_len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!ws->slots || area == MAP_FAILED) {
		if (area != MAP_FAILED)
			munmap(area, ws->area_len);
		free(ws->slots);
		free(ws);
		return -ENOMEM;
	}
	ws->area = area;
	for (unsigned i = 0; i < ws->nslots; i++)
		ws->slots[i].e = (struct rec_entry *)area + (size_t)i * ws->cap;
	int ret = pc_region_set_fault_hook(r, record_hook, ws);
	if (ret < 0) {
		ws->r = NULL;
		pc_ws_destroy(ws);
		return ret;
	}
	*out = ws;
	return 0;
}

static int by_time(const void *a, const void *b)
{
	const struct ws_entry *x = a, *y = b;
	if (x->time_us != y->time_us)
		return x->time_us < y->time_us ? -1 : 1;
	return x->page < y->page ? -1 : x->page > y->page;
}

struct stamped {
	uint64_t ns, page;
	uint16_t thread;
};

static int by_ns(const void *a, const void *b)
{
	const struct stamped *x = a, *y = b;
	if (x->ns != y->ns)
		return x->ns < y->ns ? -1 : 1;
	return x->page < y->page ? -1 : x->page > y->page;
}

int ws_collect(const pc_ws *ws, struct ws_entry **out, uint64_t *count)
{
	uint64_t total = 0;
	for (unsigned k = 0; k < ws->nslots; k++) {
		uint64_t n = atomic_load(&ws->slots[k].n);
		total += n < ws->cap ? n : ws->cap;
	}
	struct stamped *st = malloc((total ? total : 1) * sizeof(*st));
	uint64_t pages = ws->image.size / PC_SOURCE_PAGE_SIZE;
	uint64_t *seen = calloc((pages + 63) / 64, sizeof(*seen));
	struct ws_entry *e = malloc((total ? total : 1) * sizeof(*e));
	if (!st || !seen || !e) {
		free(st);
		free(seen);
		free(e);
		return -ENOMEM;
	}
	uint64_t m = 0, start = ws->r->start_ns;
	for (unsigned k = 0; k < ws->nslots; k++) {
		const struct rec_slot *s = &ws->slots[k];
		uint64_t n = atomic_load(&s->n);
		for (uint64_t i = 0; i < n && i < ws->cap && m < total; i++) {
			uint64_t p1 = atomic_load_explicit(&s->e[i].page1, memory_order_acquire);
			if (!p1 || p1 > pages)
				continue; /* still being written */
			uint64_t ns = s->e[i].ns;
			st[m++] = (struct stamped){
				.ns = ns > start ? ns - start : 0,
				.page = p1 - 1,
				.thread = k == ws->nslots - 1 ? WS_THREAD_OTHER : (uint16_t)k,
			};
		}
	}
	qsort(st, m, sizeof(*st), by_ns);
	uint64_t c = 0;
	for (uint64_t i = 0; i < m; i++) {
		if (bitmap_test(seen, st[i].page))
			continue; /* fetched again after a failure: the first counts */
		bitmap_set(seen, st[i].page);
		uint64_t us = st[i].ns / 1000;
		e[c++] = (struct ws_entry){ st[i].page, us > UINT32_MAX ? UINT32_MAX : (uint32_t)us,
					    st[i].thread, 1 };
	}
	/* Already in order; keeps ties as the file requires. */
	qsort(e, c, sizeof(*e), by_time);
	free(st);
	free(seen);
	*out = e;
	*count = c;
	return 0;
}
