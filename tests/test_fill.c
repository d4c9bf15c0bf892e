/* SPDX-License-Identifier: MIT */
/*
 * test_fill - the background filler.
 *
 * (a) With nobody touching the region, the filler alone completes it, byte
 *     for byte, every page installed by the filler and fetched once.
 * (b) vCPU threads fault while the filler runs: byte exact, no page fetched
 *     twice, demand + prefetch + fill add up to the region's pages.
 * (c) The region completes (and unregisters) while threads keep touching
 *     it: no crash, reads and writes stay right.
 * (d) A source that fails during a fill stops the region: pc_region_wait()
 *     returns the source's errno and pc_region_error() says why.
 */
#include <inttypes.h>
#include <pthread.h>

#include "postcopy.h"
#include "tap.h"

#define SMALL_SIZE (8 * MIB)
#define HUGETLB_SIZE (16 * MIB)
#define NVCPUS 2

/* The word the vCPUs write: touch_mark(MARK_BASE, p). */
#define MARK_BASE 0xf111f111f1110000ull

struct vcpu {
	pthread_t tid;
	pc_region *r;
	pthread_barrier_t *barrier;
	const uint64_t *want_read;
	_Atomic bool *stop;		/* NULL: one pass */
	unsigned id;
	uint64_t npages;
	_Atomic uint64_t passes;
	int attach_ret;
	uint64_t bad_reads;
};

/* Touch this vCPU's half in a scrambled order: even pages written, odd read. */
static void touch_pass(struct vcpu *v, char *mem)
{
	uint64_t lo = v->npages * v->id / NVCPUS;
	uint64_t n = v->npages * (v->id + 1) / NVCPUS - lo;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = lo + (i * 7919) % n;
		char *page = mem + p * SRC_PAGE;

		if (p % 2 == 0)
			touch_write(page, MARK_BASE, p);
		else if (touch_read(page, p) != v->want_read[p])
			v->bad_reads++;
	}
}

static void *vcpu_main(void *arg)
{
	struct vcpu *v = arg;
	char *mem = pc_region_addr(v->r);

	v->attach_ret = pc_thread_attach(v->r, v->id);
	pthread_barrier_wait(v->barrier);
	do {
		touch_pass(v, mem);
		atomic_fetch_add(&v->passes, 1);
	} while (v->stop && !atomic_load(v->stop));
	pc_thread_detach(v->r);
	return NULL;
}

enum scenario { FILL_ALONE, FILL_WITH_FAULTS, COMPLETE_WHILE_RUNNING };

struct fill_case {
	enum scenario scenario;
	enum pc_backend backend;
	enum pc_mode mode;
	unsigned delay_us;
};

/* Run the vCPUs around the filler; @why stays empty on success. */
static void drive(const struct fill_case *c, pc_region *r,
		  const uint64_t *want_read, char *why, size_t len)
{
	struct vcpu v[NVCPUS];
	pthread_barrier_t barrier;
	_Atomic bool stop = false;
	uint64_t npages = pc_region_size(r) / SRC_PAGE, at_complete[NVCPUS];
	int ret;

	if (c->scenario == FILL_ALONE) {
		ret = pc_region_start_fill(r);
		if (ret)
			snprintf(why, len, "pc_region_start_fill = %d", ret);
		return;
	}

	pthread_barrier_init(&barrier, NULL, NVCPUS + 1);
	for (unsigned i = 0; i < NVCPUS; i++) {
		v[i] = (struct vcpu){
			.r = r, .barrier = &barrier, .want_read = want_read,
			.id = i, .npages = npages,
			.stop = c->scenario == COMPLETE_WHILE_RUNNING ? &stop :
									 NULL,
		};
		if (pthread_create(&v[i].tid, NULL, vcpu_main, &v[i]))
			bail_out("pthread_create failed");
	}
	pthread_barrier_wait(&barrier);
	ret = pc_region_start_fill(r);
	if (ret)
		snprintf(why, len, "pc_region_start_fill = %d", ret);

	if (c->scenario == COMPLETE_WHILE_RUNNING) {
		if (!ret)
			ret = pc_region_wait(r, 10000);
		if (ret && !why[0])
			snprintf(why, len, "pc_region_wait = %d (%s)", ret,
				 pc_region_error(r));
		/* Let every vCPU make two more full passes after completion. */
		for (unsigned i = 0; i < NVCPUS; i++)
			at_complete[i] = atomic_load(&v[i].passes);
		for (unsigned i = 0; i < NVCPUS; i++)
			while (atomic_load(&v[i].passes) < at_complete[i] + 2)
				sleep_ms(1);
		atomic_store(&stop, true);
	}
	for (unsigned i = 0; i < NVCPUS; i++)
		pthread_join(v[i].tid, NULL);
	pthread_barrier_destroy(&barrier);
	for (unsigned i = 0; i < NVCPUS && !why[0]; i++)
		if (v[i].attach_ret || v[i].bad_reads)
			snprintf(why, len, "vCPU %u: attach %d, %" PRIu64
				 " wrong reads", i, v[i].attach_ret,
				 v[i].bad_reads);
	if (c->scenario == COMPLETE_WHILE_RUNNING && !why[0])
		diag("vCPUs made %" PRIu64 " and %" PRIu64
		     " passes, completion came after %" PRIu64 " and %" PRIu64,
		     (uint64_t)atomic_load(&v[0].passes),
		     (uint64_t)atomic_load(&v[1].passes), at_complete[0],
		     at_complete[1]);
}

static void check_stats(const struct fill_case *c, pc_region *r,
			struct counting_src *cs, char *why, size_t len)
{
	struct pc_stats *st = counted_stats(r, cs, why, len);

	if (!st)
		return;
	diag("%s/%s: demand %" PRIu64 " prefetch %" PRIu64 " fill %" PRIu64
	     " faults %" PRIu64 " refaults %" PRIu64,
	     mode_name(c->mode), backend_name(c->backend), st->pages_demand,
	     st->pages_prefetch, st->pages_fill, st->faults, st->refaults);
	if (why[0]) {
		/* the counters do not add up */
	} else if (c->scenario == FILL_ALONE &&
		   (st->pages_fill != st->pages || st->faults)) {
		snprintf(why, len, "nobody touched it, yet fill %" PRIu64
			 " of %" PRIu64 " pages, %" PRIu64 " faults",
			 st->pages_fill, st->pages, st->faults);
	} else if (c->scenario != FILL_ALONE && st->pages_fill == 0) {
		diag("note: the vCPUs faulted in every page before the filler installed any");
	}
	free(st);
}

static void check(const struct fill_case *c, pc_region *r,
		  struct counting_src *cs, pc_source *ref, struct verdict *v)
{
	uint64_t size = pc_region_size(r), rp = pc_region_page_size(r);
	char why[256];
	int ret;

	ret = pc_region_wait(r, 10000);
	if (ret || !pc_region_complete(r)) {
		snprintf(why, sizeof(why), "pc_region_wait = %d, complete %d, present %"
			 PRIu64 " (%s)", ret, pc_region_complete(r),
			 pc_region_present(r), pc_region_error(r));
		fail_all(v, why);
		return;
	}
	counting_check(cs, ref, rp, true, v->fetch, sizeof(v->fetch));
	check_stats(c, r, cs, v->stats, sizeof(v->stats));
	if (verify_mem(pc_region_addr(r), size, ref,
		       c->scenario == FILL_ALONE ? NULL : touch_patch_marks,
		       &(uint64_t){ MARK_BASE }))
		snprintf(v->data, sizeof(v->data),
			 "memory differs from the source");
}

static void run(const struct fill_case *c, const char *name, uint64_t seed,
		const struct hugepages *hp, bool huge_ok)
{
	uint64_t size = c->backend == PC_BACKEND_HUGETLB ? HUGETLB_SIZE :
							   SMALL_SIZE;
	struct pc_region_opts opts = {
		.size = size, .backend = c->backend, .mode = c->mode,
	};
	struct verdict v = { "", "", "" };
	struct counting_src cs;
	pc_source *src, *ref;
	pc_region *r;
	uint64_t *want_read;
	char why[256] = "", cwhy[200] = "";
	int ret;

	if (c->backend == PC_BACKEND_HUGETLB && !huge_ok) {
		verdict_skip(hp->why, name, "_byte_exact");
		return;
	}
	tap_watchdog(120);
	if (counting_new(&cs, size, seed, &src) ||
	    pc_source_pattern(size, seed, &ref))
		bail_out("cannot create sources");
	if (c->delay_us)
		pc_source_set_delay(src, c->delay_us, PC_DELAY_SLEEP);
	want_read = touch_want_reads(ref, size / SRC_PAGE);

	ret = pc_region_create(&opts, src, &r, cwhy, sizeof(cwhy));
	if (ret) {
		snprintf(why, sizeof(why), "pc_region_create = %d (%s)", ret,
			 cwhy);
		fail_all(&v, why);
	} else {
		ret = pc_region_start(r);
		if (ret)
			snprintf(why, sizeof(why), "pc_region_start = %d (%s)",
				 ret, pc_region_error(r));
		else
			drive(c, r, want_read, why, sizeof(why));
		if (why[0])
			fail_all(&v, why);
		else
			check(c, r, &cs, ref, &v);
		pc_region_destroy(r);
	}
	verdict_report(&v, name, "_byte_exact");
	pc_source_destroy(ref);
	counting_free(&cs);
	free(want_read);
}

/* (d) a fetch that fails stops the pager with the source's errno. */
static void run_source_error(enum pc_mode mode, uint64_t seed)
{
	struct pc_region_opts opts = { .size = SMALL_SIZE, .mode = mode };
	struct counting_src cs;
	pc_source *src;
	pc_region *r;
	char why[256] = "", cwhy[200] = "";
	int ret;

	tap_watchdog(60);
	if (counting_new(&cs, opts.size, seed, &src))
		bail_out("cannot create source");
	/* A data page in the middle of the region fails to fetch. */
	for (uint64_t p = cs.npages / 2;; p++) {
		if (!pc_source_is_zero(cs.inner, p)) {
			atomic_store(&cs.fail_page, (int64_t)p);
			break;
		}
	}
	ret = pc_region_create(&opts, src, &r, cwhy, sizeof(cwhy));
	if (ret) {
		snprintf(why, sizeof(why), "pc_region_create = %d (%s)", ret,
			 cwhy);
	} else {
		ret = pc_region_start(r);
		if (!ret)
			ret = pc_region_start_fill(r);
		if (!ret)
			ret = pc_region_wait(r, 10000);
		if (ret != -ENODATA)
			snprintf(why, sizeof(why),
				 "pc_region_wait = %d, want -ENODATA (%d)", ret,
				 -ENODATA);
		else if (pc_region_complete(r))
			snprintf(why, sizeof(why), "complete despite the error");
		else if (!pc_region_error(r) || !pc_region_error(r)[0])
			snprintf(why, sizeof(why), "pc_region_error is empty");
		else
			diag("pc_region_error: %s", pc_region_error(r));
		pc_region_destroy(r);
	}
	if (!ok(!why[0], "%s_mode_filler_source_error_stops_region_with_errno",
		mode_name(mode)))
		diag("%s", why);
	counting_free(&cs);
}

int main(void)
{
	static const struct {
		struct fill_case c;
		const char *name;
	} cases[] = {
		{ { FILL_ALONE, PC_BACKEND_SHMEM, PC_MODE_EXIT, 0 },
		  "exit_mode_shmem_filler_alone_completes" },
		{ { FILL_ALONE, PC_BACKEND_ANON, PC_MODE_EXIT, 0 },
		  "exit_mode_anon_filler_alone_completes" },
		{ { FILL_ALONE, PC_BACKEND_HUGETLB, PC_MODE_EXIT, 0 },
		  "exit_mode_hugetlb_filler_alone_completes" },
		{ { FILL_ALONE, PC_BACKEND_SHMEM, PC_MODE_WAIT, 0 },
		  "wait_mode_shmem_filler_alone_completes" },
		{ { FILL_ALONE, PC_BACKEND_ANON, PC_MODE_WAIT, 0 },
		  "wait_mode_anon_filler_alone_completes" },
		{ { FILL_WITH_FAULTS, PC_BACKEND_SHMEM, PC_MODE_EXIT, 100 },
		  "exit_mode_shmem_faults_during_fill" },
		{ { FILL_WITH_FAULTS, PC_BACKEND_ANON, PC_MODE_EXIT, 100 },
		  "exit_mode_anon_faults_during_fill" },
		{ { FILL_WITH_FAULTS, PC_BACKEND_HUGETLB, PC_MODE_EXIT, 100 },
		  "exit_mode_hugetlb_faults_during_fill" },
		{ { FILL_WITH_FAULTS, PC_BACKEND_SHMEM, PC_MODE_WAIT, 100 },
		  "wait_mode_shmem_faults_during_fill" },
		{ { FILL_WITH_FAULTS, PC_BACKEND_ANON, PC_MODE_WAIT, 100 },
		  "wait_mode_anon_faults_during_fill" },
		{ { COMPLETE_WHILE_RUNNING, PC_BACKEND_SHMEM, PC_MODE_EXIT, 0 },
		  "exit_mode_shmem_completion_while_threads_run" },
		{ { COMPLETE_WHILE_RUNNING, PC_BACKEND_ANON, PC_MODE_EXIT, 0 },
		  "exit_mode_anon_completion_while_threads_run" },
		{ { COMPLETE_WHILE_RUNNING, PC_BACKEND_SHMEM, PC_MODE_WAIT, 0 },
		  "wait_mode_shmem_completion_while_threads_run" },
		{ { COMPLETE_WHILE_RUNNING, PC_BACKEND_ANON, PC_MODE_WAIT, 0 },
		  "wait_mode_anon_completion_while_threads_run" },
	};
	const size_t n = sizeof(cases) / sizeof(cases[0]);
	struct hugepages hp;
	bool huge_ok;

	plan(3 * n + 2);
	huge_ok = hugepages_reserve(&hp, HUGETLB_SIZE / HUGE_PAGE);
	for (size_t i = 0; i < n; i++)
		run(&cases[i].c, cases[i].name, 200 + i, &hp, huge_ok);
	hugepages_restore(&hp);
	run_source_error(PC_MODE_EXIT, 300);
	run_source_error(PC_MODE_WAIT, 301);
	return done();
}
