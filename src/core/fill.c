/* SPDX-License-Identifier: MIT */
/*
 * fill.c - the background filler: installs the pages nobody asked for.
 *
 * It walks the region continuing right after the most recent demand fault
 * (the guest tends to go on where it was), and wraps around to cover the
 * rest.  It claims pages like any faulting thread, so no page is fetched
 * twice, in steps whose size follows the guest: 64 KiB while demand
 * faults find their pages in flight (a fault that lands on a page the
 * filler holds waits for at most one such step, and the next step starts
 * at the new fault), doubling for every step during which none did: up to
 * 256 KiB while faults come elsewhere (a guest faulting all over its
 * memory, vCPUs at a stride or at random, seldom waits for the filler),
 * up to 2 MiB when none comes.  A guest reading in order runs into the
 * filler's pages and keeps the steps short.
 *
 * It runs on opts.fillers threads: one installing a step takes a CPU
 * (allocating and filling the pages), so while it does, another claims
 * and fetches the next.  The fetches stay one at a time and in order,
 * under the fill lock, as a source reading ahead expects them.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Pages claimed, fetched and installed at a time while faults wait for
 * pages in flight (PC_FILL_STEP_BYTES, 64 KiB of 4 KiB pages): the longest
 * a demand fault then waits behind the filler; and the most, once none
 * did for a while. */
#define FILL_STEP_MAX_BYTES PC_MAX_RUN_BYTES

/* First missing page at or after @from, wrapping; npages if none.  The
 * present bits are read a word of 64 pages at a time: once most of the
 * region is there (and the cursor jumps to each new fault), reading the
 * state word of every page from the cursor on could cost more than the
 * fill itself.  A page not present may be in flight: its state says. */
static uint64_t next_missing(struct pc_region *r, uint64_t from)
{
	uint64_t words = (r->npages + 63) / 64;
	for (uint64_t i = 0; i <= words; i++) {
		uint64_t w = (from / 64 + i) % words;
		uint64_t absent = ~atomic_load_explicit(&r->present_bits[w],
							memory_order_relaxed);
		if (i == 0)
			absent &= ~0ull << (from % 64); /* from @from on */
		else if (i == words)
			absent &= (1ull << (from % 64)) - 1; /* and before it, last */
		while (absent) {
			uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(absent);
			if (p >= r->npages)
				break;
			if (atomic_load_explicit(&r->state[p], memory_order_relaxed) ==
			    PAGE_MISSING)
				return p;
			absent &= absent - 1;
		}
	}
	return r->npages;
}

/* What the guest did, over the slots attached so far and "other" (the
 * last), in one walk: the page + 1 of the newest demand fault (0: none
 * yet), the demand faults so far, and of them those that found their page
 * in flight (mostly the filler's).  Compared with the last step's: whether
 * any fault came, and whether any waited, since. */
struct guest_activity {
	uint64_t latest, faults, waits;
};

static struct guest_activity guest_activity(struct pc_region *r)
{
	struct guest_activity a = { 0 };
	uint64_t when = 0;
	unsigned hw = atomic_load_explicit(&r->attached_hw, memory_order_relaxed);
	for (unsigned k = 0; k <= hw; k++) {
		const struct thread_slot *t = &r->slots[k < hw ? k : r->nslots - 1];
		uint64_t ns = atomic_load_explicit(&t->last_fault_ns, memory_order_relaxed);
		if (ns > when) {
			when = ns;
			a.latest = atomic_load_explicit(&t->last_fault, memory_order_relaxed);
		}
		a.faults += atomic_load_explicit(&t->faults, memory_order_relaxed);
		a.waits += atomic_load_explicit(&t->dups_avoided, memory_order_relaxed);
	}
	return a;
}

static void idle(struct pc_region *r, int ms)
{
	struct pollfd pfd = { .fd = r->feed.stop_fd, .events = POLLIN };
	poll(&pfd, 1, ms);
}

/* An install met an event of the owner's (adopted regions): give a
 * reader time to read it. */
static void let_readers_read(struct pc_region *r)
{
	(void)r;
	sleep_ns(200000);
}

/* The steps' sizes in pages, set before the threads start: the first
 * and the one after a fault waited (@small), the longest (@big), and the
 * longest while faults come but none waits for the filler, a guest at a
 * stride or at random (@busy). */
static void pace_init(struct pc_region *r)
{
	struct fill_pace *pc = &r->feed.pace;
	pc->small = PC_FILL_STEP_BYTES / r->page_size;
	if (!pc->small)
		pc->small = 1;
	pc->big = FILL_STEP_MAX_BYTES / r->page_size;
	if (pc->big < pc->small)
		pc->big = pc->small;
	pc->busy = PC_BUSY_RUN_BYTES / r->page_size;
	if (pc->busy < pc->small)
		pc->busy = pc->small;
	pc->step = pc->small;
}

/* Under the fill lock: the next step's size, from what the guest did
 * since the last step; the cursor follows its newest fault. */
static uint64_t pace_step(struct pc_region *r)
{
	struct fill_pace *pc = &r->feed.pace;
	struct guest_activity now = guest_activity(r);
	if (now.latest != pc->seen_fault) { /* follow the guest */
		pc->seen_fault = now.latest;
		pc->cursor = now.latest % r->npages;
	}
	bool busy_now = now.faults != pc->faults;
	if (now.waits != pc->waits) /* a fault waited: short steps */
		pc->step = pc->small;
	else if (pc->step < (busy_now ? pc->busy : pc->big)) /* longer */
		pc->step *= 2;
	else if (busy_now) /* faults elsewhere: no longer than busy */
		pc->step = pc->busy;
	pc->faults = now.faults;
	pc->waits = now.waits;
	return pc->step;
}

/* Under the fill lock: claim the next step, and fetch its data pages in
 * one request (unless the install copies them from the source's view).
 * 1 when every page is claimed already, else 0 (*@n 0: a fault got
 * there first) or a negative errno. */
static int take_step(const struct install_ctx *ic, char *data, uint64_t *first,
		     uint64_t *n)
{
	struct pc_region *r = ic->r;
	struct fill_pace *pc = &r->feed.pace;
	uint64_t step = pace_step(r);
	uint64_t p = next_missing(r, pc->cursor);
	*n = 0;
	if (p == r->npages)
		return 1;
	pc->cursor = p + 1;
	if (!page_try_claim(r, p))
		return 0;
	uint64_t hi = r->npages - p < step ? r->npages : p + step;
	claim_around(r, p, p, hi, first, n);
	int ret = data ? fetch_runs(ic, 1, first, n, data) : 0;
	if (ret < 0) {
		/* Give the pages back so that nobody waits on them forever. */
		release_pages(r, *first, *n);
		return ret;
	}
	pc->cursor = *first + *n;
	return 0;
}

/* A filler thread: steps one after another, the fetch of each under the
 * fill lock (the source sees one read at a time, in order), its install
 * outside it, beside the other threads' installs. */
static void *fill_main(void *arg)
{
	struct pc_region *r = arg;
	char *buf = malloc(FILL_STEP_MAX_BYTES > r->page_size ? FILL_STEP_MAX_BYTES :
								 r->page_size);
	struct install_ctx ic = {
		.r = r,
		.slot = &r->slots[r->nslots - 1],
		.wake = r->opts.mode == PC_MODE_WAIT,
		.prefetch = true,
		.scratch = buf,
	};
	char *data = install_views(r) ? NULL : buf;

	if (!buf) {
		region_set_error(r, -ENOMEM, "filler: out of memory");
		region_fail(r, -ENOMEM);
	}
	while (buf && !atomic_load(&r->stopping) && atomic_load(&r->done) == 0) {
		if (atomic_load_explicit(&r->feed.replaying, memory_order_acquire)) {
			idle(r, 1); /* a working-set replay goes first */
			continue;
		}
		uint64_t first = 0, n = 0;
		pthread_mutex_lock(&r->feed.fill_lock);
		int ret = take_step(&ic, data, &first, &n);
		pthread_mutex_unlock(&r->feed.fill_lock);
		if (ret == 1) {
			/* All claimed, the last ones in flight: completion
			 * writes stop_fd, so a long nap costs nothing. */
			idle(r, 20);
			continue;
		}
		if (ret == 0 && n) {
			ret = install_run(&ic, first, n, data, ORIGIN_FILL);
			if (ret == -EAGAIN)
				ret = install_again(&ic, first, n, data, ORIGIN_FILL,
						    let_readers_read);
		}
		if (ret < 0) {
			region_set_error(r, ret, "filler: fetching page %llu: %s",
					 (unsigned long long)first, strerror(-ret));
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

int offer_claim(struct pc_region *r, uint64_t first, uint64_t npages,
		uint64_t *claimed)
{
	if (!r->mem.nslices || first > r->npages || npages > r->npages - first ||
	    npages > OFFER_MAX)
		return -EINVAL;
	memset(claimed, 0, (npages + 63) / 64 * 8);
	for (uint64_t i = 0; i < npages; i++)
		if (page_try_claim(r, first + i))
			bitmap_set(claimed, i);
	return 0;
}

/* The claimed runs of an offer, one after another: install (@data) or
 * give back (NULL). */
static int offer_settle(struct pc_region *r, uint64_t first, uint64_t npages,
			const uint64_t *claimed, const char *data)
{
	struct install_ctx ic = {
		.r = r,
		.slot = &r->slots[r->nslots - 1],
		.wake = r->opts.mode == PC_MODE_WAIT,
	};
	int ret = 0;
	for (uint64_t i = 0; i < npages;) {
		if (!bitmap_test(claimed, i)) {
			i++; /* present, or someone else is fetching it */
			continue;
		}
		uint64_t k = i + 1;
		while (k < npages && bitmap_test(claimed, k))
			k++;
		if (data && ret == 0) {
			ret = install_run(&ic, first + i, k - i,
					  data + i * r->page_size, ORIGIN_FILL);
			if (ret == -EAGAIN)
				ret = install_again(&ic, first + i, k - i,
						    data + i * r->page_size,
						    ORIGIN_FILL, let_readers_read);
		} else {
			release_pages(r, first + i, k - i);
		}
		i = k;
	}
	return ret;
}

int offer_install(struct pc_region *r, uint64_t first, uint64_t npages,
		  const uint64_t *claimed, const void *data)
{
	return offer_settle(r, first, npages, claimed, data);
}

void offer_release(struct pc_region *r, uint64_t first, uint64_t npages,
		   const uint64_t *claimed)
{
	offer_settle(r, first, npages, claimed, NULL);
}

int pc_region_offer(pc_region *r, uint64_t first, uint64_t npages,
		    const void *data)
{
	uint64_t claimed[OFFER_MAX / 64];
	const char *from = data;
	struct region_entry e;
	/* Counted inside: installing the last page wakes pc_region_wait(),
	 * and destroy must not free the region under the rest of this. */
	int err = region_enter_direct(r, &e);
	if (err < 0)
		return err;
	while (npages) {
		uint64_t n = npages < OFFER_MAX ? npages : OFFER_MAX;
		int ret = offer_claim(r, first, n, claimed);
		if (ret == 0)
			ret = offer_install(r, first, n, claimed, from);
		if (ret < 0) {
			err = ret;
			break;
		}
		first += n;
		npages -= n;
		from += n * r->page_size;
	}
	region_leave(&e);
	return err;
}

void fed_in_background(struct pc_region *r)
{
	atomic_store_explicit(&r->feed.background, true, memory_order_relaxed);
}

static int start_fillers(struct pc_region *r)
{
	pace_init(r);
	for (unsigned i = 0; i < r->opts.fillers; i++) {
		int ret = pthread_create(&r->feed.fillers[i], NULL, fill_main, r);
		if (ret && !i)
			return -ret;
		if (ret)
			break; /* those running do it all */
		r->feed.nfillers++;
	}
	return 0;
}

uint64_t fill_next_missing(struct pc_region *r, uint64_t from)
{
	return next_missing(r, from % r->npages);
}

uint64_t fill_latest_fault(struct pc_region *r)
{
	return guest_activity(r).latest;
}

void fill_rest(struct pc_region *r)
{
	if (atomic_load(&r->stopping) || pc_region_complete(r))
		return;
	int ret = start_fillers(r);
	if (ret < 0) {
		region_set_error(r, ret, "starting the filler: %s", strerror(-ret));
		region_fail(r, ret);
	}
}

int pc_region_start_fill(pc_region *r)
{
	if (!r->mem.nslices)
		return -EINVAL; /* not started */
	if (r->feed.filler_started)
		return -EBUSY;
	/* A source that streams installs as its data arrives, and hands
	 * what it did not bring to the filler's threads as it ends. */
	bool streams = r->src->stream && r->page_size == PC_SOURCE_PAGE_SIZE &&
		       r->src->stream(r->src->ctx, r) == 0;
	if (!streams) {
		int ret = start_fillers(r);
		if (ret < 0)
			return ret;
	}
	r->feed.filler_started = true;
	fed_in_background(r);
	return 0;
}
