/* SPDX-License-Identifier: MIT */
/*
 * test_same_page_race - eight threads fault on the same few pages at once,
 * over and over with fresh regions, in both delivery modes.
 *
 * The source sleeps in every fetch so that the race is wide: while one
 * thread (or handler) fetches a page the others fault on it too.  Each page
 * must be fetched exactly once, a zero page never, no thread may see
 * wrong contents, no write may be lost to a second install of the same
 * page, and the faults that waited for a fetch in flight are counted in
 * duplicate_fetches_avoided.
 */
#include <inttypes.h>
#include <pthread.h>

#include "postcopy.h"
#include "tap.h"

#define NTHREADS 8
#define REGION_PAGES 64
#define RACE_PAGES 4		/* three with data, one zero page */
#define REPS 12
#define FETCH_DELAY_US 3000

#define WRITE_OFF(t) (64 + 8 * (t))
#define READ_OFF(t) (2048 + 8 * (t))

static uint64_t mark(unsigned t, uint64_t p)
{
	return 0xab5e000000000000ull | (uint64_t)t << 32 | p;
}

struct race {
	pc_region *r;
	pthread_barrier_t barrier;
	uint64_t pages[RACE_PAGES];
	uint64_t want_read[RACE_PAGES][NTHREADS];
};

struct racer {
	pthread_t tid;
	struct race *race;
	unsigned id;
	int attach_ret;
	unsigned bad_reads;
};

static void read_check(struct racer *t, char *page, unsigned i)
{
	uint64_t have = __atomic_load_n((uint64_t *)(page + READ_OFF(t->id)),
					__ATOMIC_RELAXED);

	if (have != t->race->want_read[i][t->id])
		t->bad_reads++;
}

static void *racer_main(void *arg)
{
	struct racer *t = arg;
	struct race *race = t->race;
	char *mem = pc_region_addr(race->r);

	t->attach_ret = pc_thread_attach(race->r, t->id);
	pthread_barrier_wait(&race->barrier);
	for (unsigned i = 0; i < RACE_PAGES; i++) {
		uint64_t p = race->pages[i];
		char *page = mem + p * SRC_PAGE;
		uint64_t *word = (uint64_t *)(page + WRITE_OFF(t->id));

		/* Half of the threads fault with a read, half with a write. */
		if (t->id % 2)
			read_check(t, page, i);
		__atomic_store_n(word, mark(t->id, p), __ATOMIC_RELAXED);
		if (t->id % 2 == 0)
			read_check(t, page, i);
	}
	pc_thread_detach(race->r);
	return NULL;
}

struct patch_ctx {
	const struct race *race;
};

static void patch_race(void *ctx, uint64_t p, void *buf)
{
	const struct race *race = ((struct patch_ctx *)ctx)->race;

	for (unsigned i = 0; i < RACE_PAGES; i++) {
		if (race->pages[i] != p)
			continue;
		for (unsigned t = 0; t < NTHREADS; t++)
			memcpy((char *)buf + WRITE_OFF(t),
			       &(uint64_t){ mark(t, p) }, 8);
	}
}

/* Pick three data pages and, when the source has one, a zero page. */
static void pick_pages(struct race *race, pc_source *ref)
{
	unsigned ndata = 0;
	bool have_zero = false;

	for (uint64_t p = 1; p < REGION_PAGES && ndata < RACE_PAGES - 1; p += 3)
		if (!pc_source_is_zero(ref, p))
			race->pages[ndata++] = p;
	if (ndata < RACE_PAGES - 1)
		bail_out("pattern has too few data pages");
	for (uint64_t p = 0; p < REGION_PAGES && !have_zero; p++) {
		if (pc_source_is_zero(ref, p)) {
			race->pages[RACE_PAGES - 1] = p;
			have_zero = true;
		}
	}
	/* No zero page in this source: race on a fourth data page. */
	for (uint64_t p = 2; !have_zero; p += 3) {
		if (!pc_source_is_zero(ref, p)) {
			race->pages[RACE_PAGES - 1] = p;
			have_zero = true;
		}
	}
	for (unsigned i = 0; i < RACE_PAGES; i++) {
		char buf[SRC_PAGE];

		if (pc_source_read(ref, race->pages[i], 1, buf))
			bail_out("pc_source_read failed");
		for (unsigned t = 0; t < NTHREADS; t++)
			memcpy(&race->want_read[i][t], buf + READ_OFF(t), 8);
	}
}

/* One repetition with a fresh region; @why stays empty on success. */
static void one_rep(enum pc_backend backend, enum pc_mode mode, uint64_t seed,
		    uint64_t *dups, char *why, size_t len, char *swhy,
		    size_t slen)
{
	struct pc_region_opts opts = {
		.size = REGION_PAGES * SRC_PAGE,
		.backend = backend,
		.mode = mode,
		.readers = mode == PC_MODE_WAIT ? 2 : 0,
	};
	struct counting_src cs;
	struct race race = { 0 };
	struct racer t[NTHREADS];
	struct pc_stats *st = NULL;
	pc_source *src, *ref;
	pc_region *r;
	char cwhy[200] = "";
	int ret;

	if (counting_new(&cs, opts.size, seed, &src) ||
	    pc_source_pattern(opts.size, seed, &ref))
		bail_out("cannot create sources");
	pc_source_set_delay(src, FETCH_DELAY_US, PC_DELAY_SLEEP);
	pick_pages(&race, ref);

	ret = pc_region_create(&opts, src, &r, cwhy, sizeof(cwhy));
	if (ret) {
		snprintf(why, len, "pc_region_create = %d (%s)", ret, cwhy);
		goto out;
	}
	ret = pc_region_start(r);
	if (ret) {
		snprintf(why, len, "pc_region_start = %d (%s)", ret,
			 pc_region_error(r));
		goto destroy;
	}

	race.r = r;
	pthread_barrier_init(&race.barrier, NULL, NTHREADS);
	for (unsigned i = 0; i < NTHREADS; i++) {
		t[i] = (struct racer){ .race = &race, .id = i };
		if (pthread_create(&t[i].tid, NULL, racer_main, &t[i]))
			bail_out("pthread_create failed");
	}
	for (unsigned i = 0; i < NTHREADS; i++)
		pthread_join(t[i].tid, NULL);
	pthread_barrier_destroy(&race.barrier);

	for (unsigned i = 0; i < NTHREADS; i++) {
		if (t[i].attach_ret || t[i].bad_reads) {
			snprintf(why, len,
				 "thread %u: attach %d, %u wrong reads", i,
				 t[i].attach_ret, t[i].bad_reads);
			goto destroy;
		}
	}
	for (unsigned i = 0; i < RACE_PAGES; i++) {
		uint64_t p = race.pages[i];
		uint32_t n = atomic_load(&cs.fetched[p]);
		uint32_t want = pc_source_is_zero(ref, p) ? 0 : 1;

		if (n != want) {
			snprintf(why, len, "page %" PRIu64 " (%s) fetched %u times",
				 p, want ? "data" : "zero", n);
			goto destroy;
		}
	}
	if (counting_total(&cs) != RACE_PAGES - !!pc_source_is_zero(
					    ref, race.pages[RACE_PAGES - 1])) {
		snprintf(why, len, "%" PRIu64 " pages fetched, want only the raced ones",
			 counting_total(&cs));
		goto destroy;
	}
	/* Only the raced pages are read: reading others would fault them. */
	for (unsigned i = 0; i < RACE_PAGES; i++) {
		char *page = (char *)pc_region_addr(r) + race.pages[i] * SRC_PAGE;
		struct patch_ctx pctx = { &race };
		char want[SRC_PAGE];

		pc_source_read(ref, race.pages[i], 1, want);
		patch_race(&pctx, race.pages[i], want);
		if (memcmp(page, want, SRC_PAGE)) {
			snprintf(why, len,
				 "page %" PRIu64 " differs from source + 8 writes (lost write or refetch)",
				 race.pages[i]);
			goto destroy;
		}
	}
	/* Wait mode wakes the faulting threads from inside the install
	 * ioctl, a moment before the handler publishes the page: stats are
	 * final only once the handlers have caught up. */
	for (int tries = 0; pc_region_present(r) < RACE_PAGES && tries < 5000;
	     tries++)
		usleep(1000);
	ret = pc_region_stats(r, &st);
	if (ret) {
		snprintf(why, len, "pc_region_stats = %d", ret);
		goto destroy;
	}
	*dups += st->duplicate_fetches_avoided;
	if (st->present != RACE_PAGES || st->fetches != atomic_load(&cs.calls)) {
		snprintf(swhy, slen,
			 "present %" PRIu64 " (want %d), fetches %" PRIu64
			 " (source saw %" PRIu64 ")",
			 st->present, RACE_PAGES, st->fetches,
			 (uint64_t)atomic_load(&cs.calls));
	}
	free(st);
destroy:
	pc_region_destroy(r);
out:
	pc_source_destroy(ref);
	counting_free(&cs);
}

static void run_config(enum pc_backend backend, enum pc_mode mode,
		       uint64_t *seed)
{
	const char *m = mode_name(mode), *b = backend_name(backend);
	char why[256] = "", swhy[256] = "", later[256];
	unsigned rep, srep = 0;
	uint64_t dups = 0;

	tap_watchdog(120);
	for (rep = 0; rep < REPS && !why[0]; rep++) {
		/* Keep the first stats complaint; later ones go to @later. */
		one_rep(backend, mode, (*seed)++, &dups, why, sizeof(why),
			swhy[0] ? later : swhy, sizeof(swhy));
		if (!swhy[0])
			srep = rep + 1;
	}
	if (!ok(!why[0],
		"%s_mode_%s_%d_threads_same_page_fetches_once_no_write_lost",
		m, b, NTHREADS))
		diag("repetition %u: %s", rep - 1, why);
	if (!ok(!swhy[0], "%s_mode_%s_same_page_race_stats_add_up", m, b))
		diag("repetition %u: %s", srep, swhy);
	if (!ok(dups > 0,
		"%s_mode_%s_same_page_race_counts_duplicate_fetches_avoided",
		m, b))
		diag("duplicate_fetches_avoided summed over %u repetitions = %" PRIu64
		     " (fetch delay %d us, %d threads on %d pages)",
		     rep, dups, FETCH_DELAY_US, NTHREADS, RACE_PAGES);
	else
		diag("%s/%s: %" PRIu64 " duplicate fetches avoided in %u repetitions",
		     m, b, dups, rep);
}

int main(void)
{
	uint64_t seed = 100;

	plan(12);
	run_config(PC_BACKEND_SHMEM, PC_MODE_EXIT, &seed);
	run_config(PC_BACKEND_ANON, PC_MODE_EXIT, &seed);
	run_config(PC_BACKEND_SHMEM, PC_MODE_WAIT, &seed);
	run_config(PC_BACKEND_ANON, PC_MODE_WAIT, &seed);
	return done();
}
