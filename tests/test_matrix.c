/* SPDX-License-Identifier: MIT */
/*
 * test_matrix - every backend x delivery mode x thread count x access
 * pattern restores memory byte for byte, fetching each page exactly once.
 *
 * vCPU threads attach to the region and touch every 4 KiB page of their
 * share (even pages: write one word; odd pages: read one word and check it
 * against the source right away).  Each case reports three checks:
 *   _complete_byte_exact      the region completes and every byte equals
 *                             the source plus the written words;
 *   _each_page_fetched_once   no page fetched twice, every data page fetched,
 *                             zero pages never (4 KiB pages);
 *   _stats_add_up             pc_stats agrees with what the source saw.
 */
#include <inttypes.h>
#include <pthread.h>

#include "postcopy.h"
#include "tap.h"

enum pattern { PAT_SEQ, PAT_RANDOM, PAT_OVERLAP };

static const char *const pattern_names[] = { "seq", "random", "overlap" };

struct mode_cfg {
	const char *name;
	enum pc_mode mode;
	bool uffd_per_thread;
	unsigned readers;
};

static const struct mode_cfg modes[] = {
	{ "exit", PC_MODE_EXIT, false, 0 },
	{ "wait_one_uffd_1_reader", PC_MODE_WAIT, false, 1 },
	{ "wait_uffd_per_thread_2_readers", PC_MODE_WAIT, true, 2 },
};

static const enum pc_backend backends[] = {
	PC_BACKEND_SHMEM, PC_BACKEND_HUGETLB, PC_BACKEND_ANON,
};

static const unsigned thread_counts[] = { 1, 2, 8 };

#define HUGETLB_SIZE (16 * MIB)
#define SMALL_SIZE (4 * MIB)

/* The word the vCPUs write: touch_mark(MARK_BASE, p). */
#define MARK_BASE 0x5eedf00d00000000ull

struct vcpu {
	pthread_t tid;
	pc_region *r;
	pthread_barrier_t *barrier;
	const uint64_t *want_read;	/* source word at touch_read_off(p) */
	unsigned id, nthreads;
	enum pattern pat;
	uint64_t npages;		/* 4 KiB pages in the region */
	int attach_ret;
	uint64_t bad_reads;
	uint64_t first_bad;
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *vcpu_main(void *arg)
{
	struct vcpu *v = arg;
	char *mem = pc_region_addr(v->r);
	uint64_t lo = 0, hi = v->npages, n, *order;
	uint64_t rng = 0x2545f4914f6cdd1dull * (v->id + 1);

	if (v->pat != PAT_OVERLAP) {
		lo = v->npages * v->id / v->nthreads;
		hi = v->npages * (v->id + 1) / v->nthreads;
	}
	n = hi - lo;
	order = malloc((n ? n : 1) * sizeof(*order));
	if (!order)
		bail_out("out of memory");
	for (uint64_t i = 0; i < n; i++)
		order[i] = lo + i;
	if (v->pat != PAT_SEQ) {
		for (uint64_t i = n; i > 1; i--) {
			uint64_t j = xorshift(&rng) % i, t = order[i - 1];

			order[i - 1] = order[j];
			order[j] = t;
		}
	}

	v->attach_ret = pc_thread_attach(v->r, v->id);
	pthread_barrier_wait(v->barrier);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = order[i];
		char *page = mem + p * SRC_PAGE;

		if (p % 2 == 0) {
			touch_write(page, MARK_BASE, p);
		} else {
			uint64_t have = touch_read(page, p);

			if (have != v->want_read[p] && !v->bad_reads++)
				v->first_bad = p;
		}
	}
	pc_thread_detach(v->r);
	free(order);
	return NULL;
}

static bool run_vcpus(pc_region *r, unsigned nthreads, enum pattern pat,
		      const uint64_t *want_read, uint64_t npages, char *why,
		      size_t len)
{
	struct vcpu v[8];
	pthread_barrier_t barrier;
	bool good = true;

	pthread_barrier_init(&barrier, NULL, nthreads);
	for (unsigned i = 0; i < nthreads; i++) {
		v[i] = (struct vcpu){
			.r = r, .barrier = &barrier, .want_read = want_read,
			.id = i, .nthreads = nthreads, .pat = pat,
			.npages = npages,
		};
		if (pthread_create(&v[i].tid, NULL, vcpu_main, &v[i]))
			bail_out("pthread_create failed");
	}
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(v[i].tid, NULL);
	pthread_barrier_destroy(&barrier);

	for (unsigned i = 0; i < nthreads && good; i++) {
		if (v[i].attach_ret) {
			snprintf(why, len, "pc_thread_attach(%u) = %d", i,
				 v[i].attach_ret);
			good = false;
		} else if (v[i].bad_reads) {
			snprintf(why, len,
				 "vCPU %u read wrong data on %" PRIu64
				 " pages, first page %" PRIu64,
				 i, v[i].bad_reads, v[i].first_bad);
			good = false;
		}
	}
	return good;
}

static void check_stats(pc_region *r, struct counting_src *cs, pc_source *ref,
			char *why, size_t len)
{
	uint64_t region_page = pc_region_page_size(r);
	struct pc_stats *st = counted_stats(r, cs, why, len);

	if (!st)
		return;
	if (why[0]) {
		/* the counters do not add up */
	} else if (st->pages_fill || st->pages_prefetch) {
		snprintf(why, len,
			 "no filler and window 1, yet fill %" PRIu64
			 " prefetch %" PRIu64,
			 st->pages_fill, st->pages_prefetch);
	} else if (st->zero_pages != zero_region_pages(ref, region_page)) {
		snprintf(why, len, "zero_pages %" PRIu64 ", source has %" PRIu64,
			 st->zero_pages, zero_region_pages(ref, region_page));
	}
	free(st);
}

/* Start @r, run the vCPUs and judge the outcome. */
static void check_case(pc_region *r, struct counting_src *cs, pc_source *ref,
		       unsigned nthreads, enum pattern pat,
		       const uint64_t *want_read, struct verdict *v)
{
	uint64_t size = pc_region_size(r), region_page = pc_region_page_size(r);
	char why[256] = "";
	uint64_t bad;
	int ret;

	ret = pc_region_start(r);
	if (ret) {
		snprintf(why, sizeof(why), "pc_region_start = %d (%s)", ret,
			 pc_region_error(r));
		fail_all(v, why);
		return;
	}
	if (!run_vcpus(r, nthreads, pat, want_read, size / SRC_PAGE, why,
		       sizeof(why))) {
		fail_all(v, why);
		return;
	}
	ret = pc_region_wait(r, 10000);
	if (ret || !pc_region_complete(r)) {
		snprintf(why, sizeof(why),
			 "pc_region_wait = %d, complete %d, present %" PRIu64
			 " (%s)",
			 ret, pc_region_complete(r), pc_region_present(r),
			 pc_region_error(r));
		fail_all(v, why);
		return;
	}
	/* Counts first: reading a missing page would fetch it. */
	counting_check(cs, ref, region_page, true, v->fetch, sizeof(v->fetch));
	check_stats(r, cs, ref, v->stats, sizeof(v->stats));
	bad = verify_mem(pc_region_addr(r), size, ref, touch_patch_marks,
			 &(uint64_t){ MARK_BASE });
	if (bad)
		snprintf(v->data, sizeof(v->data), "%" PRIu64 " pages differ",
			 bad);
}

static void run_case(enum pc_backend backend, const struct mode_cfg *m,
		     unsigned nthreads, enum pattern pat, uint64_t seed,
		     const struct hugepages *hp, bool huge_ok)
{
	uint64_t size = backend == PC_BACKEND_HUGETLB ? HUGETLB_SIZE :
							SMALL_SIZE;
	struct pc_region_opts opts = {
		.size = size,
		.backend = backend,
		.mode = m->mode,
	};
	struct counting_src cs;
	struct verdict v = { "", "", "" };
	pc_source *src, *ref;
	pc_region *r = NULL;
	uint64_t npages = size / SRC_PAGE, *want_read;
	char name[160], why[200] = "";
	int ret;

	snprintf(name, sizeof(name), "%s_%s_%u_threads_%s", m->name,
		 backend_name(backend), nthreads, pattern_names[pat]);
	if (backend == PC_BACKEND_HUGETLB && !huge_ok) {
		verdict_skip(hp->why, name, "_complete_byte_exact");
		return;
	}
	if (m->mode == PC_MODE_WAIT) {
		opts.uffds = m->uffd_per_thread ? nthreads : 1;
		opts.readers = m->readers;
	}
	tap_watchdog(120);

	if (counting_new(&cs, size, seed, &src) ||
	    pc_source_pattern(size, seed, &ref))
		bail_out("cannot create sources");
	want_read = touch_want_reads(ref, npages);

	ret = pc_region_create(&opts, src, &r, why, sizeof(why));
	if (ret) {
		char msg[256];

		snprintf(msg, sizeof(msg), "pc_region_create = %d (%s)", ret,
			 why);
		fail_all(&v, msg);
	} else {
		check_case(r, &cs, ref, nthreads, pat, want_read, &v);
		pc_region_destroy(r);
		if (!v.data[0] && !atomic_load(&cs.destroyed))
			snprintf(v.data, sizeof(v.data),
				 "pc_region_destroy did not destroy the source");
	}
	verdict_report(&v, name, "_complete_byte_exact");

	pc_source_destroy(ref);
	counting_free(&cs);
	free(want_read);
}

int main(void)
{
	const size_t nb = sizeof(backends) / sizeof(backends[0]);
	const size_t nm = sizeof(modes) / sizeof(modes[0]);
	const size_t nt = sizeof(thread_counts) / sizeof(thread_counts[0]);
	struct hugepages hp;
	bool huge_ok;
	uint64_t seed = 1;

	plan(nb * nm * nt * 3 * 3);
	huge_ok = hugepages_reserve(&hp, HUGETLB_SIZE / HUGE_PAGE);
	for (size_t b = 0; b < nb; b++)
		for (size_t m = 0; m < nm; m++)
			for (size_t t = 0; t < nt; t++)
				for (int pat = PAT_SEQ; pat <= PAT_OVERLAP;
				     pat++)
					run_case(backends[b], &modes[m],
						 thread_counts[t], pat,
						 seed++, &hp, huge_ok);
	hugepages_restore(&hp);
	return done();
}
