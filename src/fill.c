/* SPDX-License-Identifier: MIT */
/*
 * fill.c - the background filler: installs the pages nobody asked for.
 *
 * It walks the region continuing right after the most recent demand fault
 * (the guest tends to go on where it was), and wraps around to cover the
 * rest.  It claims pages like any faulting thread, so no page is fetched
 * twice, but in short steps: a demand fault that lands on a page the
 * filler holds waits for at most one step's fetch and install (64 KiB),
 * never for a long batch, and the next step starts at the new fault.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Pages claimed, fetched and installed at a time (64 KiB of 4 KiB pages):
 * the longest a demand fault can wait behind the filler. */
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

static void idle(struct pc_region *r, int ms)
{
	struct pollfd pfd = { .fd = r->stop_fd, .events = POLLIN };
	poll(&pfd, 1, ms);
}

/* Claim a step at @p, fetch its data pages in one request, install. */
static int fill_step(const struct install_ctx *ic, uint64_t p, uint64_t step,
		     char *buf, uint64_t *next)
{
	struct pc_region *r = ic->r;
	uint64_t first, n;

	*next = p + 1;
	if (!page_try_claim(r, p))
		return 0; /* a fault got there first */
	uint64_t hi = r->npages - p < step ? r->npages : p + step;
	claim_around(r, p, p, hi, &first, &n);
	int ret = fetch_runs(ic, 1, &first, &n, buf);
	if (ret < 0) {
		/* Give the pages back so that nobody waits on them forever. */
		release_pages(r, first, n);
		return ret;
	}
	*next = first + n;
	return install_run(ic, first, n, buf, ORIGIN_FILL);
}

static void *fill_main(void *arg)
{
	struct pc_region *r = arg;
	uint64_t step = FILL_STEP_BYTES / r->page_size;
	if (!step)
		step = 1;
	char *buf = malloc(step * r->page_size);
	struct install_ctx ic = {
		.r = r,
		.slot = &r->slots[r->nslots - 1],
		.wake = r->opts.mode == PC_MODE_WAIT,
		.prefetch = true,
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
			/* All claimed, the last ones in flight: completion
			 * writes stop_fd, so a long nap costs nothing. */
			idle(r, 20);
			continue;
		}
		int ret = fill_step(&ic, p, step, buf, &cursor);
		if (ret < 0) {
			region_set_error(r, ret, "filler: fetching page %llu: %s",
					 (unsigned long long)p, strerror(-ret));
			region_fail(r, ret);
			break;
		}
	}
	/* After a failure, stay until destroy joins us. */
	while (!region_finished(r))
		idle(r, -1);
	free(buf);
	return NULL;
}

int pc_region_offer(pc_region *r, uint64_t first, uint64_t npages,
		    const void *data)
{
	if (!r->nslices || first > r->npages || npages > r->npages - first)
		return -EINVAL;
	struct install_ctx ic = {
		.r = r,
		.slot = &r->slots[r->nslots - 1],
		.wake = r->opts.mode == PC_MODE_WAIT,
	};
	const char *from = data;
	for (uint64_t p = first; p < first + npages;) {
		if (!page_try_claim(r, p)) {
			p++; /* present, or someone is fetching it */
			continue;
		}
		uint64_t run, n;
		claim_around(r, p, p, first + npages, &run, &n);
		int ret = install_run(&ic, run, n,
				      from + (run - first) * r->page_size,
				      ORIGIN_FILL);
		if (ret < 0)
			return ret;
		p = run + n;
	}
	return 0;
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
