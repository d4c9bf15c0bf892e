/* SPDX-License-Identifier: MIT */
/*
 * ws_replay.c - replaying a working set: a thread that installs the
 * recorded pages in their recorded order, ahead of the guest.
 *
 * The one idea: the replay is a third kind of installer, between demand
 * faults and the filler.  It claims pages in the one page-state table like
 * everybody else, so nothing is fetched twice, and it works in batches
 * (the next REPLAY_BATCH entries, sorted and merged into runs, fetched as
 * one pipelined request; REPLAY_LANES lanes take consecutive batches): a
 * fault that lands on a page of a batch in flight waits for that batch,
 * never for more.  Before
 * each batch it looks at the newest fetching fault of every thread: a
 * fault on a listed page at or past its position means the guest got
 * there first, and the replay skips ahead to it; what it skipped and is
 * still missing it brings in a second pass.  The filler waits while the
 * replay runs (r->feed.replaying).
 *
 * A source that streams pages on its own (the network push) is handed the
 * order too, by the first lane before its first batch: the push then
 * sends the listed pages ahead of its sweep, and the lanes and the push
 * meet in the page-state table like any two installers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_int.h"

/* Pages per batch (4 KiB pages; one huge page per entry for hugetlb,
 * bounded by the 2 MiB buffer). */
#define REPLAY_BATCH 128u
/* Batches in flight at once, each on its own thread: a source with
 * latency answers them in parallel, so the replay outruns a guest that
 * only touches memory (one lane would let it catch up and wait on every
 * batch). */
#define REPLAY_LANES 4u
/* Holes of up to this many pages between listed pages of a batch are
 * brought with them: a working set is clustered, and the next run of the
 * same guest touches pages near the ones this recording saw (they cost
 * the batch's request nothing more than their bytes). */
#define REPLAY_BRIDGE 16u
#define NOT_LISTED UINT32_MAX

struct ws_replay {
	struct pc_region *r;
	uint64_t *order;  /* region pages in replay order, each once */
	uint64_t count;
	uint32_t *pos;	  /* per region page: its index in order[], or NOT_LISTED */
	/* Next position to take: the list in order, skipping ahead of the
	 * guest, then once more for what that skipped and is still missing
	 * (positions count..2*count-1), still before the filler. */
	_Atomic uint64_t cursor;
	_Atomic unsigned live;	 /* lanes still running */
	_Atomic bool handed;	 /* the source was given the order */
	pthread_t lanes[REPLAY_LANES];
	unsigned nlanes;
};

/* The position just past the guest, if a thread's newest fetching fault
 * is on a listed page at or after @cursor: the least such, so that no
 * thread's upcoming pages are given up for another's. */
static uint64_t skip_to(const struct ws_replay *rp, uint64_t cursor)
{
	struct pc_region *r = rp->r;
	uint64_t to = cursor;
	bool found = false;
	unsigned hw = atomic_load_explicit(&r->attached_hw, memory_order_relaxed);
	for (unsigned k = 0; k <= hw; k++) {
		const struct thread_slot *t = &r->slots[k < hw ? k : r->nslots - 1];
		uint64_t p1 = atomic_load_explicit(&t->last_fault, memory_order_relaxed);
		if (!p1 || p1 > r->npages)
			continue;
		uint32_t at = rp->pos[p1 - 1];
		if (at == NOT_LISTED || at < cursor)
			continue;
		if (!found || at + 1 < to)
			to = at + 1;
		found = true;
	}
	return found ? to : cursor;
}

static int by_page(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void let_readers_read(struct pc_region *r)
{
	(void)r;
	sleep_ns(200000);
}

/* Claim the next batch from *cursor, fetch it in one request, install it.
 * Returns pages installed or a negative errno. */
static int replay_batch(struct ws_replay *rp, const struct install_ctx *lane,
			char *buf)
{
	struct pc_region *r = rp->r;
	uint64_t claimed[REPLAY_BATCH], nc = 0;
	uint64_t max = PC_MAX_RUN_BYTES / r->page_size;
	if (max > REPLAY_BATCH)
		max = REPLAY_BATCH;
	/* The next @max positions are this lane's. */
	uint64_t at = atomic_fetch_add(&rp->cursor, max);
	for (uint64_t i = at; i < 2 * rp->count && i < at + max; i++) {
		uint64_t p = rp->order[i < rp->count ? i : i - rp->count];
		if (page_try_claim(r, p)) /* present or in flight: skipped */
			claimed[nc++] = p;
	}
	if (!nc)
		return 0;
	qsort(claimed, nc, sizeof(claimed[0]), by_page);
	uint64_t first[REPLAY_BATCH], n[REPLAY_BATCH];
	uint64_t room = PC_MAX_RUN_BYTES / r->page_size - nc, bridged = 0;
	unsigned runs = 0;
	for (uint64_t i = 0; i < nc; i++) {
		if (runs) {
			/* A hole of a few pages between two listed ones is
			 * brought too, as far as it can be claimed. */
			uint64_t end = first[runs - 1] + n[runs - 1];
			if (claimed[i] - end <= REPLAY_BRIDGE && claimed[i] - end <= room)
				while (end < claimed[i] && page_try_claim(r, end)) {
					n[runs - 1]++;
					end++;
					room--;
					bridged++;
				}
			if (end == claimed[i]) {
				n[runs - 1]++;
				continue;
			}
		}
		first[runs] = claimed[i];
		n[runs++] = 1;
	}
	/* One pipelined request for them all (or none: views). */
	struct install_ctx ic = *lane; /* charged for this batch only */
	char *data;
	int ret = fetch_batch(&ic, runs, first, n, buf, &data);
	for (unsigned i = 0; i < runs; i++) {
		if (ret == 0) {
			ret = install_run(&ic, first[i], n[i], data, ORIGIN_REPLAY);
			if (ret == -EAGAIN)
				ret = install_again(&ic, first[i], n[i], data, ORIGIN_REPLAY,
						    let_readers_read);
		} else {
			release_pages(r, first[i], n[i]);
		}
		if (data)
			data += n[i] * r->page_size;
	}
	return ret < 0 ? ret : (int)(nc + bridged);
}

static void *replay_main(void *arg)
{
	struct ws_replay *rp = arg;
	struct pc_region *r = rp->r;
	struct install_ctx ic = {
		.r = r,
		.slot = &r->slots[r->nslots - 1],
		.wake = r->opts.mode == PC_MODE_WAIT,
		.prefetch = true,
	};
	char *buf = malloc(PC_MAX_RUN_BYTES);
	ic.scratch = buf; /* a view that fails falls back to a fetch */
	if (!buf) {
		region_set_error(r, -ENOMEM, "replaying the working set: out of memory");
		region_fail(r, -ENOMEM);
	}
	/* Region pages are 4 KiB pages here: the push carries no others. */
	if (r->src->follow && r->page_size == PC_SOURCE_PAGE_SIZE &&
	    !atomic_exchange(&rp->handed, true))
		(void)r->src->follow(r->src->ctx, rp->order, rp->count);
	while (buf && !atomic_load(&r->stopping) && atomic_load(&r->done) == 0) {
		uint64_t cur = atomic_load(&rp->cursor);
		if (cur >= 2 * rp->count)
			break;
		uint64_t to = cur < rp->count ? skip_to(rp, cur) : cur;
		if (to > cur) /* the guest got there first: lanes race to move it */
			atomic_compare_exchange_strong(&rp->cursor, &cur, to);
		int ret = replay_batch(rp, &ic, buf);
		if (ret < 0) {
			region_set_error(r, ret, "replaying the working set: %s",
					 strerror(-ret));
			region_fail(r, ret);
			break;
		}
	}
	free(buf);
	/* The last lane out lets the filler go on. */
	if (atomic_fetch_sub(&rp->live, 1) == 1)
		atomic_store_explicit(&r->feed.replaying, false, memory_order_release);
	return NULL;
}

int pc_region_replay(pc_region *r, const pc_ws *ws,
		     const struct pc_image_id *image, char *why, size_t why_len)
{
	char dummy[1];
	if (!why) {
		why = dummy;
		why_len = sizeof(dummy);
	}
	why[0] = '\0';
	if (!r->mem.nslices || ws->r || !image) {
		snprintf(why, why_len, "%s", !r->mem.nslices ? "the region is not started" :
					     ws->r ? "a recorder cannot be replayed" :
						     "no image identity");
		return -EINVAL;
	}
	if (r->feed.replay) {
		snprintf(why, why_len, "a replay was started already");
		return -EBUSY;
	}
	int ret = pc_ws_check_image(ws, image, why, why_len);
	if (ret < 0)
		return ret;
	if (image->size != r->opts.size) {
		snprintf(why, why_len, "the image is not the region's size");
		return -ESTALE;
	}
	struct ws_replay *rp = calloc(1, sizeof(*rp));
	if (!rp)
		return -ENOMEM;
	rp->r = r;
	rp->order = malloc((ws->count ? ws->count : 1) * sizeof(*rp->order));
	rp->pos = malloc(r->npages * sizeof(*rp->pos));
	if (!rp->order || !rp->pos) {
		ret = -ENOMEM;
		goto err;
	}
	memset(rp->pos, 0xff, r->npages * sizeof(*rp->pos));
	/* 4 KiB entries to region pages (huge pages: each once). */
	uint64_t per = r->page_size / PC_SOURCE_PAGE_SIZE;
	for (uint64_t i = 0; i < ws->count; i++) {
		uint64_t p = ws->e[i].page / per;
		if (rp->pos[p] != NOT_LISTED)
			continue;
		rp->pos[p] = (uint32_t)rp->count;
		rp->order[rp->count++] = p;
	}
	atomic_store(&r->feed.replaying, true);
	atomic_store(&rp->live, REPLAY_LANES);
	for (unsigned i = 0; i < REPLAY_LANES; i++) {
		ret = pthread_create(&rp->lanes[i], NULL, replay_main, rp);
		if (ret) {
			/* The lanes that run do the whole list. */
			if (atomic_fetch_sub(&rp->live, REPLAY_LANES - i) == REPLAY_LANES - i)
				atomic_store(&r->feed.replaying, false);
			if (!i) {
				ret = -ret;
				goto err;
			}
			break;
		}
		rp->nlanes++;
	}
	r->feed.replay = rp;
	return 0;
err:
	snprintf(why, why_len, "starting the replay: %s", strerror(-ret));
	free(rp->order);
	free(rp->pos);
	free(rp);
	return ret;
}

void replay_stop(struct pc_region *r)
{
	struct ws_replay *rp = r->feed.replay;
	if (!rp)
		return;
	for (unsigned i = 0; i < rp->nlanes; i++)
		pthread_join(rp->lanes[i], NULL); /* they see r->stopping */
	r->feed.replay = NULL;
	free(rp->order);
	free(rp->pos);
	free(rp);
}
