/* SPDX-License-Identifier: MIT */
/*
 * ws_merge.c - several recordings of one image made into one working set:
 * the pages that at least K of N runs touched, ordered by the median of
 * their first touches (what the runs agree on, in the order they agree
 * on; a page one run touched early by chance does not jump the queue).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_int.h"

struct hit {
	uint64_t page;
	uint32_t time_us;
	uint16_t thread;
};

static int by_page_time(const void *a, const void *b)
{
	const struct hit *x = a, *y = b;
	if (x->page != y->page)
		return x->page < y->page ? -1 : 1;
	return x->time_us < y->time_us ? -1 : x->time_us > y->time_us;
}

static int by_time(const void *a, const void *b)
{
	const struct ws_entry *x = a, *y = b;
	if (x->time_us != y->time_us)
		return x->time_us < y->time_us ? -1 : 1;
	return x->page < y->page ? -1 : x->page > y->page;
}

int pc_ws_merge(const pc_ws *const *in, unsigned n, unsigned k, pc_ws **out,
		char *why, size_t why_len)
{
	char dummy[1];
	if (!why) {
		why = dummy;
		why_len = sizeof(dummy);
	}
	why[0] = '\0';
	if (!n || k < 1 || k > n || n > 0xffff) {
		snprintf(why, why_len, "need 1 <= K <= N working sets");
		return -EINVAL;
	}
	uint64_t total = 0;
	for (unsigned i = 0; i < n; i++) {
		if (in[i]->r) {
			snprintf(why, why_len, "working set %u is a recorder: save and load it", i + 1);
			return -EINVAL;
		}
		if (pc_ws_check_image(in[i], &in[0]->image, NULL, 0) < 0) {
			snprintf(why, why_len, "working set %u was recorded on another image than the first", i + 1);
			return -ESTALE;
		}
		total += in[i]->count;
	}
	struct hit *h = malloc((total ? total : 1) * sizeof(*h));
	if (!h)
		return -ENOMEM;
	uint64_t m = 0, runs = 0;
	for (unsigned i = 0; i < n; i++) {
		runs += in[i]->runs;
		for (uint64_t j = 0; j < in[i]->count; j++)
			h[m++] = (struct hit){ in[i]->e[j].page, in[i]->e[j].time_us,
					       in[i]->e[j].thread };
	}
	if (runs > 0xffff)
		runs = 0xffff;
	qsort(h, m, sizeof(*h), by_page_time);
	/* Pages held by at least k: count them first. */
	uint64_t keep = 0;
	for (uint64_t i = 0; i < m;) {
		uint64_t j = i;
		while (j < m && h[j].page == h[i].page)
			j++;
		keep += j - i >= k;
		i = j;
	}
	pc_ws *ws;
	int ret = ws_alloc(&in[0]->image, keep, &ws);
	if (ret < 0) {
		free(h);
		return ret;
	}
	uint64_t c = 0;
	for (uint64_t i = 0; i < m;) {
		uint64_t j = i;
		while (j < m && h[j].page == h[i].page)
			j++;
		uint64_t held = j - i;
		if (held >= k) {
			/* Sorted by time within the page: the median (the
			 * lower one of an even count) and its thread. */
			const struct hit *med = &h[i + (held - 1) / 2];
			ws->e[c++] = (struct ws_entry){ med->page, med->time_us, med->thread,
							(uint16_t)(held > 0xffff ? 0xffff : held) };
		}
		i = j;
	}
	qsort(ws->e, c, sizeof(*ws->e), by_time);
	ws->runs = (unsigned)runs;
	free(h);
	*out = ws;
	return 0;
}
