/* SPDX-License-Identifier: MIT */
/*
 * fill.c - the background filler: installs the pages nobody asked for.
 *
 * It walks the region in batches of up to 2 MiB, continuing right after
 * the most recent demand fault (the guest tends to go on where it was),
 * and wraps around to cover the rest.  To keep demand faults from waiting
 * behind it, a batch is fetched before any of its pages is claimed, so a
 * fault meanwhile just claims its page and fetches it itself; the filler
 * then claims only what is still missing, in short steps, and installs
 * those.  A fault can therefore wait at most for one short step's copy and
 * install, never for a batch's fetch.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Pages claimed and installed at a time (64 KiB of 4 KiB pages): the
 * longest a demand fault can wait behind the filler. */
#define FILL_STEP_BYTES (64u << 10)

/* First missing page at or after @from, wrapping; npages if none. */
static uint64_t next_missing(struct pc_region *r, uint64_t from)
{
	for (uint64_t i = 0; i < r->npages; i++) {
		uint64_t p = (from + i) % r->npages;
		if (atomic_load_explicit(&r->state[p], memory_order_relaxed) ==
		    PAGE_MISSING)
			return p;
	}
	return r->npages;
}

/* Claim and install what is still missing of a fetched batch. */
static int install_batch(const struct install_ctx *ic, uint64_t first,
			 uint64_t n, const char *data)
{
	struct pc_region *r = ic->r;
	uint64_t step = FILL_STEP_BYTES / r->page_size;
	if (!step)
		step = 1;
	for (uint64_t p = first; p < first + n; p++) {
		if (!page_try_claim(r, p))
			continue;
		uint64_t hi = p + step < first + n ? p + step : first + n;
		uint64_t run, k;
		claim_around(r, p, p, hi, &run, &k);
		int ret = install_run(ic, run, k,
				      data + (run - first) * r->page_size,
				      ORIGIN_FILL);
		if (ret < 0)
			return ret;
		p = run + k - 1;
	}
	return 0;
}

static void idle(struct pc_region *r, int ms)
{
	struct pollfd pfd = { .fd = r->stop_fd, .events = POLLIN };
	poll(&pfd, 1, ms);
}

void *fill_main(void *arg)
{
	struct pc_region *r = arg;
	uint64_t batch = PC_MAX_RUN_BYTES / r->page_size;
	if (!batch)
		batch = 1;
	char *buf = malloc(batch * r->page_size);
	struct install_ctx ic = {
		.r = r,
		.slot = &r->slots[r->nslots - 1],
		.wake = r->opts.mode == PC_MODE_WAIT,
	};
	uint64_t cursor = 0, seen_fault = 0;

	if (!buf) {
		region_set_error(r, -ENOMEM, "filler: out of memory");
		region_fail(r, -ENOMEM);
		return NULL;
	}
	while (!atomic_load(&r->stopping) && atomic_load(&r->done) == 0) {
		uint64_t fault = atomic_load_explicit(&r->last_fault,
						      memory_order_relaxed);
		if (fault != seen_fault) { /* follow the guest */
			seen_fault = fault;
			cursor = fault % r->npages;
		}
		uint64_t p = next_missing(r, cursor);
		if (p == r->npages) {
			/* All claimed; the last ones are in flight. */
			idle(r, 1);
			continue;
		}
		uint64_t n = r->npages - p < batch ? r->npages - p : batch;
		/* Trim trailing pages that are already there. */
		while (n > 1 && atomic_load_explicit(&r->state[p + n - 1],
						     memory_order_relaxed) !=
					PAGE_MISSING)
			n--;

		uint64_t per = r->page_size / PC_SOURCE_PAGE_SIZE;
		source_delay(r->src);
		int ret = r->src->ops.fetch(r->src->ctx, p * per, n * per, buf);
		if (ret == 0) {
			atomic_fetch_add_explicit(&ic.slot->fetches, 1,
						  memory_order_relaxed);
			atomic_fetch_add_explicit(&ic.slot->bytes_fetched,
						  n * r->page_size,
						  memory_order_relaxed);
			ret = install_batch(&ic, p, n, buf);
		}
		if (ret < 0) {
			region_set_error(r, ret,
					 "filler: fetching pages %llu-%llu: %s",
					 (unsigned long long)p,
					 (unsigned long long)(p + n - 1),
					 strerror(-ret));
			region_fail(r, ret);
			break;
		}
		cursor = p + n;
	}
	free(buf);
	return NULL;
}

int pc_region_start_fill(pc_region *r)
{
	if (!r->nslices)
		return -EINVAL; /* not started */
	if (r->filler_started)
		return -EBUSY;
	int ret = pthread_create(&r->filler, NULL, fill_main, r);
	if (ret)
		return -ret;
	r->filler_started = true;
	return 0;
}
