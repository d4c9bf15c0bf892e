/* SPDX-License-Identifier: MIT */
/*
 * test_lifetime - a region's lifetime against the threads that use it:
 *  - destroy right after pc_region_wait() returned is safe while other
 *    threads are still calling pc_resolve() and pc_region_offer() on it
 *    (the thread that installed the last page may still be counting it;
 *    ASan reports the use after free if destroy does not wait for it),
 *    and later faults get -EFAULT, never a crash;
 *  - when pc_region_wait() returns 0 the stats are final: every counted
 *    fault has its latency recorded (in wait mode, except those a handler
 *    left to the thread that had the page in flight: counted as
 *    duplicate fetches avoided);
 *  - a thread bound to a destroyed region is not taken for a thread of a
 *    new region at the same address (its slot id would be out of bounds):
 *    regions are made until one lands at the old address (ASan's
 *    quarantine drained first), a skip if none does.
 * Every page is compared with the source before each destroy.
 */
#include <sched.h>
#include <pthread.h>
#include <stdlib.h>

#include "postcopy.h"
#include "tap.h"

#define SIZE (256 * 1024)
#define ROUNDS 100

enum { TOUCH, RESOLVE, OFFER };

struct racer {
	pc_region *r;
	char *mem;
	pc_source *ref;
	unsigned id;
	int how;
	int last;   /* resolve: a call begun after destroy; offer: the last */
	_Atomic bool *destroyed;
	_Atomic unsigned *attached;
};

#define PAGES (SIZE / SRC_PAGE)

static void *race_main(void *arg)
{
	struct racer *rc = arg;
	char page[SRC_PAGE];
	pc_thread_attach(rc->r, rc->id); /* before main may destroy */
	atomic_fetch_add(rc->attached, 1);
	switch (rc->how) {
	case TOUCH: /* every page, each thread from its own end */
		for (uint64_t i = 0; i < PAGES; i++) {
			uint64_t p = rc->id ? PAGES - 1 - i : i;
			(void)*(volatile char *)(rc->mem + p * SRC_PAGE);
		}
		break;
	case OFFER: /* its half, each page once; the region is not touched
		     * after the last call, which may install the last page
		     * while main destroys */
		for (uint64_t p = rc->id * PAGES / 2; p < (rc->id + 1) * PAGES / 2; p++) {
			if (pc_source_read(rc->ref, p, 1, page))
				bail_out("pc_source_read");
			rc->last = pc_region_offer(rc->r, p, 1, page);
			if (rc->last)
				break;
		}
		break;
	case RESOLVE: /* until one call begun after destroy has returned
		       * (it holds only an address, so that is allowed) */
		for (uint64_t i = 0;; i++) {
			bool after = atomic_load(rc->destroyed);
			uint64_t p = rc->id ? PAGES - 1 - i % PAGES : i % PAGES;
			rc->last = pc_resolve(rc->mem + p * SRC_PAGE);
			if (after)
				break;
		}
		break;
	}
	return NULL;
}

/* One round: two racers complete the region, main waits and destroys at
 * once.  Returns false with @why set on a failure. */
static bool one_round(enum pc_mode m, int how, pc_source *ref, char *why,
		      size_t len)
{
	pc_source *src;
	pc_region *r;
	char cwhy[256] = "";
	if (pc_source_pattern(SIZE, 9, &src))
		bail_out("pc_source_pattern");
	struct pc_region_opts o = { .size = SIZE, .mode = m, .max_threads = 2 };
	if (pc_region_create(&o, src, &r, cwhy, sizeof(cwhy)) ||
	    pc_region_start(r))
		bail_out("region: %s", cwhy);
	_Atomic bool destroyed = false;
	_Atomic unsigned attached = 0;
	struct racer rc[2];
	pthread_t t[2];
	for (unsigned i = 0; i < 2; i++) {
		rc[i] = (struct racer){ r, pc_region_addr(r), ref, i, how, 0,
					&destroyed, &attached };
		if (pthread_create(&t[i], NULL, race_main, &rc[i]))
			bail_out("pthread_create");
	}
	while (atomic_load(&attached) < 2)
		sched_yield();
	int ret = pc_region_wait(r, 30000);
	bool good = ret == 0;
	if (!good)
		snprintf(why, len, "pc_region_wait = %d (%s)", ret, pc_region_error(r));
	/* Touching threads only fault, so the counts must agree at once. */
	struct pc_stats *s = NULL;
	if (good && how == TOUCH && pc_region_stats(r, &s) == 0) {
		uint64_t left = m == PC_MODE_WAIT ? s->duplicate_fetches_avoided : 0;
		if (s->latency.count + left != s->faults) {
			snprintf(why, len, "after wait: %llu faults but %llu latencies (+%llu left to another)",
				 (unsigned long long)s->faults,
				 (unsigned long long)s->latency.count,
				 (unsigned long long)left);
			good = false;
		}
	}
	free(s);
	if (how != TOUCH) { /* touching threads must be done first */
		uint64_t bad = good ? verify_mem(pc_region_addr(r), SIZE, ref, NULL, NULL) : 0;
		if (bad) {
			snprintf(why, len, "%llu pages differ", (unsigned long long)bad);
			good = false;
		}
		pc_region_destroy(r); /* the racers may still be inside */
		atomic_store(&destroyed, true);
	}
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	if (how == TOUCH) {
		uint64_t bad = good ? verify_mem(pc_region_addr(r), SIZE, ref, NULL, NULL) : 0;
		if (bad) {
			snprintf(why, len, "%llu pages differ", (unsigned long long)bad);
			good = false;
		}
		pc_region_destroy(r);
	}
	int want = how == OFFER ? 0 : -EFAULT;
	for (unsigned i = 0; good && how != TOUCH && i < 2; i++)
		if (rc[i].last != want) {
			snprintf(why, len, "%s returned %d, want %d",
				 how == OFFER ? "the last offer" : "a fault after destroy",
				 rc[i].last, want);
			good = false;
		}
	return good;
}

static void races(enum pc_mode m, int how, pc_source *ref)
{
	static const char *const what[] = {
		"stats_are_final_when_wait_returns_after_faults",
		"destroy_right_after_wait_while_threads_resolve_faults",
		"destroy_right_after_wait_while_threads_offer_pages",
	};
	char why[256] = "";
	unsigned round = 0;
	while (round < ROUNDS && one_round(m, how, ref, why, sizeof(why)))
		round++;
	if (!ok(round == ROUNDS, "%s_%s", mode_name(m), what[how]))
		diag("round %u: %s", round, why);
}

/* ASan keeps freed blocks out of use for a while (its quarantine, so a
 * plain retry never gets the old address back); this sanitizer call
 * drains it.  Weak: NULL in a build without a sanitizer runtime. */
void __sanitizer_purge_allocator(void) __attribute__((weak));

#define REUSE_TRIES 200

/* A region like @o at address @old, or NULL after REUSE_TRIES regions
 * that landed elsewhere (each destroyed before the next is made). */
static pc_region *region_at(const struct pc_region_opts *o, void *old,
			    unsigned *tries)
{
	char why[256] = "";
	for (unsigned i = 0; i < REUSE_TRIES; i++) {
		pc_source *src;
		pc_region *r;
		if (pc_source_pattern(SIZE, 9, &src))
			bail_out("pc_source_pattern");
		if (__sanitizer_purge_allocator)
			__sanitizer_purge_allocator();
		if (pc_region_create(o, src, &r, why, sizeof(why)))
			bail_out("region b: %s", why);
		*tries = i + 1;
		if ((void *)r == old)
			return r;
		pc_region_destroy(r);
	}
	return NULL;
}

/* A binding to a destroyed region with slot 7 must not index the slots of
 * a region with 2 slots that got its address.  Only a region at the same
 * address tests that, so the check is a skip when none can be had. */
static void stale_binding(pc_source *ref)
{
	static const char name[] = "a_binding_to_a_destroyed_region_does_not_match_a_new_one";
	pc_source *src;
	pc_region *a, *b;
	char why[256] = "";
	struct pc_region_opts o = { .size = SIZE, .max_threads = 8 };
	if (pc_source_pattern(SIZE, 9, &src) ||
	    pc_region_create(&o, src, &a, why, sizeof(why)))
		bail_out("region a: %s", why);
	if (pc_thread_attach(a, 7))
		bail_out("pc_thread_attach");
	void *old = a;
	pc_region_destroy(a); /* still bound: nobody detached */
	o.max_threads = 2;
	unsigned tries = 0;
	b = region_at(&o, old, &tries);
	if (!b) {
		snprintf(why, sizeof(why), "no new region landed at the "
			 "destroyed one's address in %u tries (the allocator "
			 "keeps freed blocks out of use)", REUSE_TRIES);
		skip(why, "%s", name);
		return;
	}
	diag("a new region at the destroyed one's address after %u tries", tries);
	if (pc_region_start(b))
		bail_out("region b: %s", pc_region_error(b));
	uint64_t bad = verify_mem(pc_region_addr(b), SIZE, ref, NULL, NULL);
	struct pc_stats *s;
	if (pc_region_stats(b, &s))
		bail_out("pc_region_stats");
	uint64_t other = s->thread[s->nthreads - 1].faults;
	if (!ok(bad == 0 && other == s->faults && s->faults > 0, "%s", name))
		diag("%llu pages differ; %llu of %llu faults counted as other",
		     (unsigned long long)bad, (unsigned long long)other,
		     (unsigned long long)s->faults);
	free(s);
	pc_region_destroy(b);
}

int main(void)
{
	pc_source *ref;
	plan(7);
	tap_watchdog(600);
	if (pc_source_pattern(SIZE, 9, &ref))
		bail_out("pc_source_pattern");
	for (int how = TOUCH; how <= OFFER; how++) {
		races(PC_MODE_EXIT, how, ref);
		races(PC_MODE_WAIT, how, ref);
	}
	stale_binding(ref);
	pc_source_destroy(ref);
	return done();
}
