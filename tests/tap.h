/* SPDX-License-Identifier: MIT */
/*
 * tap.h - a tiny Test Anything Protocol helper for the postcopy tests, plus
 * the few helpers every postcopy test program shares.
 *
 * Part 1 (always): plan(), ok(), skip(), diag(), bail_out(), done() and a
 * watchdog.  Each test program prints "1..N" and one "ok"/"not ok" line per
 * check; done() returns the exit status (0 only when every planned check
 * ran and passed or was skipped).  Also: forking a child without printing
 * buffered TAP twice, and a clock and a sleep.
 *
 * Part 2 (only when postcopy.h was included first): a counting source that
 * records how often each 4 KiB page was fetched, byte-for-byte verification
 * of a region against a reference source, stats checks, a case's verdict
 * and its three checks, huge page reservation, the words vCPU threads write
 * and read, and a fixture: a started region over a counting source.
 */
#ifndef POSTCOPY_TESTS_TAP_H
#define POSTCOPY_TESTS_TAP_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Part 1: TAP                                                         */
/* ------------------------------------------------------------------ */

static struct {
	unsigned planned;
	unsigned run;
	unsigned failed;
} tap_state;

static inline void plan(unsigned n)
{
	tap_state.planned = n;
	printf("1..%u\n", n);
	fflush(stdout);
}

static inline void diag(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* Report one check; returns @cond so callers can react to a failure. */
static inline bool ok(bool cond, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline bool ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	tap_state.run++;
	if (!cond)
		tap_state.failed++;
	printf("%sok %u - ", cond ? "" : "not ", tap_state.run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	return cond;
}

/* A check that could not run here: "ok N - name # SKIP reason". */
static inline void skip(const char *reason, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline void skip(const char *reason, const char *fmt, ...)
{
	va_list ap;

	tap_state.run++;
	printf("ok %u - ", tap_state.run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" # SKIP %s\n", reason);
	fflush(stdout);
}

static inline void bail_out(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));
static inline void bail_out(const char *fmt, ...)
{
	va_list ap;

	fputs("Bail out! ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	exit(1);
}

/* Exit status for main(): 0 when every planned check ran and none failed. */
static inline int done(void)
{
	if (tap_state.run != tap_state.planned) {
		diag("planned %u checks but ran %u", tap_state.planned,
		     tap_state.run);
		return 1;
	}
	if (tap_state.failed)
		diag("%u of %u checks failed", tap_state.failed, tap_state.run);
	return tap_state.failed ? 1 : 0;
}

static inline void tap_watchdog_fired(int sig)
{
	static const char msg[] = "Bail out! watchdog: test hung\n";
	ssize_t n;

	(void)sig;
	n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
	(void)n;
	_exit(1);
}

/*
 * A hung pager must fail the test, not stall the runner: after @seconds the
 * program bails out.  Call again to re-arm; 0 disarms.
 */
static inline void tap_watchdog(unsigned seconds)
{
	signal(SIGALRM, tap_watchdog_fired);
	alarm(seconds);
}

/*
 * fork() with stdout and stderr flushed first, so that the child does not
 * print the parent's buffered output again; bails out when fork() fails.
 */
static inline pid_t fork_or_bail(void)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		bail_out("fork: %s", strerror(errno));
	return pid;
}

/* Wait for child @pid; returns its wait status. */
static inline int wait_child(pid_t pid)
{
	int status = 0;

	if (waitpid(pid, &status, 0) != pid)
		bail_out("waitpid: %s", strerror(errno));
	return status;
}

/* Seconds on the monotonic clock. */
static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* Part 2: helpers shared by the postcopy tests                        */
/* ------------------------------------------------------------------ */
#ifdef POSTCOPY_H

#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>

#define KIB 1024ull
#define MIB (1024ull * 1024)
#define SRC_PAGE ((uint64_t)PC_SOURCE_PAGE_SIZE)
#define HUGE_PAGE (2 * MIB)

static inline const char *backend_name(enum pc_backend b)
{
	switch (b) {
	case PC_BACKEND_SHMEM:
		return "shmem";
	case PC_BACKEND_HUGETLB:
		return "hugetlb";
	case PC_BACKEND_ANON:
		return "anon";
	case PC_BACKEND_ADOPTED:
		return "adopted";
	}
	return "?";
}

static inline const char *mode_name(enum pc_mode m)
{
	return m == PC_MODE_WAIT ? "wait" : "exit";
}

/*
 * A counting source: a pattern source wrapped in a custom source whose
 * fetch counts, per 4 KiB page, how often the region asked for it.  The
 * fetch may run inside a SIGBUS handler (exit mode), so it only uses
 * atomics and pc_source_read() of a pattern source.
 *
 * The struct belongs to the test, not to the region: the region's destroy
 * only releases the inner pattern source and sets @destroyed, so counters
 * can still be read after pc_region_destroy().  Free with counting_free().
 */
struct counting_src {
	pc_source *inner;
	uint64_t npages;		/* 4 KiB pages */
	_Atomic uint32_t *fetched;	/* per 4 KiB page */
	_Atomic uint64_t calls;		/* fetch calls */
	_Atomic uint64_t fetch_max_pages;	/* largest single fetch */
	_Atomic int64_t fail_page;	/* fetch of this page fails for good
					 * (-ENODATA), or -1 */
	_Atomic int transient;		/* this many fetches fail with -EIO */
	_Atomic bool destroyed;
};

static inline int counting_fetch(void *ctx, uint64_t first, uint64_t npages,
				 void *dst)
{
	struct counting_src *cs = ctx;
	int64_t fail = atomic_load(&cs->fail_page);
	uint64_t max = atomic_load(&cs->fetch_max_pages);

	atomic_fetch_add(&cs->calls, 1);
	while (npages > max &&
	       !atomic_compare_exchange_weak(&cs->fetch_max_pages, &max,
					     npages))
		;
	if (first + npages > cs->npages || npages == 0)
		return -ERANGE;
	if (fail >= 0 && (uint64_t)fail >= first &&
	    (uint64_t)fail < first + npages)
		return -ENODATA;
	int left = atomic_load(&cs->transient);
	while (left > 0 &&
	       !atomic_compare_exchange_weak(&cs->transient, &left, left - 1))
		;
	if (left > 0) { /* garbage first, as a source that checks late */
		memset(dst, 0xee, npages * PC_SOURCE_PAGE_SIZE);
		return -EIO;
	}
	for (uint64_t p = first; p < first + npages; p++)
		atomic_fetch_add(&cs->fetched[p], 1);
	return pc_source_read(cs->inner, first, npages, dst);
}

static inline bool counting_is_zero(void *ctx, uint64_t page)
{
	struct counting_src *cs = ctx;

	return pc_source_is_zero(cs->inner, page);
}

static inline void counting_destroy(void *ctx)
{
	struct counting_src *cs = ctx;

	pc_source_destroy(cs->inner);
	cs->inner = NULL;
	atomic_store(&cs->destroyed, true);
}

static const struct pc_source_ops counting_ops = {
	.fetch = counting_fetch,
	.is_zero = counting_is_zero,
	.destroy = counting_destroy,
	/* Not DIRECT: a transient failure leaves garbage in @dst. */
	.flags = PC_SOURCE_ASYNC_SIGNAL_SAFE,
};

/* Set up @cs over pattern(@size, @seed); *out is the source to hand over. */
static inline int counting_new(struct counting_src *cs, uint64_t size,
			       uint64_t seed, pc_source **out)
{
	int ret;

	memset(cs, 0, sizeof(*cs));
	atomic_store(&cs->fail_page, -1);
	cs->npages = size / SRC_PAGE;
	cs->fetched = calloc(cs->npages ? cs->npages : 1,
			     sizeof(*cs->fetched));
	if (!cs->fetched)
		return -ENOMEM;
	ret = pc_source_pattern(size, seed, &cs->inner);
	if (ret)
		goto fail;
	ret = pc_source_custom(&counting_ops, cs, size, out);
	if (ret) {
		pc_source_destroy(cs->inner);
		goto fail;
	}
	return 0;
fail:
	free(cs->fetched);
	cs->fetched = NULL;
	return ret;
}

static inline void counting_free(struct counting_src *cs)
{
	free(cs->fetched);
	cs->fetched = NULL;
}

static inline uint64_t counting_total(struct counting_src *cs)
{
	uint64_t sum = 0;

	for (uint64_t p = 0; p < cs->npages; p++)
		sum += atomic_load(&cs->fetched[p]);
	return sum;
}

/*
 * Check fetch counts against @ref (a pattern source with the same seed):
 * no page fetched twice; every non-zero page fetched exactly once when
 * @complete; zero pages never fetched when the region pages are 4 KiB
 * (a 2 MiB page is fetched as a run that may include zero pages).
 * Returns true when fine, else describes the first offender in @why.
 */
static inline bool counting_check(struct counting_src *cs, pc_source *ref,
				  uint64_t region_page, bool complete,
				  char *why, size_t len)
{
	uint64_t twice = 0, zero_fetched = 0, never = 0;
	uint64_t first_twice = 0, first_zero = 0, first_never = 0;
	uint32_t most = 0;

	why[0] = 0;
	for (uint64_t p = 0; p < cs->npages; p++) {
		uint32_t n = atomic_load(&cs->fetched[p]);
		bool zero = pc_source_is_zero(ref, p);

		if (n > 1 && !twice++)
			first_twice = p;
		most = n > most ? n : most;
		if (zero && n && region_page == SRC_PAGE && !zero_fetched++)
			first_zero = p;
		if (complete && !zero && n == 0 && !never++)
			first_never = p;
	}
	if (twice)
		snprintf(why, len,
			 "%llu pages fetched more than once (first %llu, up to %u times); ",
			 (unsigned long long)twice,
			 (unsigned long long)first_twice, most);
	if (zero_fetched)
		snprintf(why + strlen(why), len - strlen(why),
			 "%llu zero pages fetched (first %llu); ",
			 (unsigned long long)zero_fetched,
			 (unsigned long long)first_zero);
	if (never)
		snprintf(why + strlen(why), len - strlen(why),
			 "%llu data pages never fetched (first %llu); ",
			 (unsigned long long)never,
			 (unsigned long long)first_never);
	return why[0] == 0;
}

/* Number of region pages of @ref whose source pages are all zero. */
static inline uint64_t zero_region_pages(pc_source *ref, uint64_t region_page)
{
	uint64_t per = region_page / SRC_PAGE, n = 0;
	uint64_t pages = pc_source_size(ref) / SRC_PAGE;

	for (uint64_t p = 0; p < pages; p += per) {
		uint64_t i = 0;

		while (i < per && pc_source_is_zero(ref, p + i))
			i++;
		n += i == per;
	}
	return n;
}

/*
 * Expected writes: a test that wrote into the region patches the expected
 * contents of 4 KiB page @page in @buf.  NULL: the region is untouched.
 */
typedef void (*patch_fn)(void *ctx, uint64_t page, void *buf);

/*
 * Compare EVERY byte of [mem, mem + size) with @ref (patched by @patch):
 * returns the number of 4 KiB pages that differ and describes the first
 * few with diag().  Reading a missing page faults it in, so check fetch
 * counts before calling this.
 */
static inline uint64_t verify_mem(const void *mem, uint64_t size,
				  pc_source *ref, patch_fn patch, void *pctx)
{
	unsigned char *want = malloc(SRC_PAGE);
	const unsigned char *have = mem;
	uint64_t bad = 0;

	if (!want)
		bail_out("out of memory");
	for (uint64_t p = 0; p < size / SRC_PAGE; p++) {
		const unsigned char *h = have + p * SRC_PAGE;
		int ret = pc_source_read(ref, p, 1, want);

		if (ret) {
			diag("pc_source_read(ref, %llu) = %d",
			     (unsigned long long)p, ret);
			bad++;
			continue;
		}
		if (patch)
			patch(pctx, p, want);
		if (memcmp(h, want, SRC_PAGE) == 0)
			continue;
		if (bad++ < 4) {
			uint64_t off = 0;
			bool all_zero = true;

			while (off < SRC_PAGE && h[off] == want[off])
				off++;
			for (uint64_t i = 0; i < SRC_PAGE; i++)
				all_zero &= h[i] == 0;
			diag("page %llu differs at byte %llu: have 0x%02x want 0x%02x%s",
			     (unsigned long long)p, (unsigned long long)off,
			     h[off], want[off],
			     all_zero ? " (page is all zero)" : "");
		}
	}
	free(want);
	return bad;
}

/* The sum of per-slot fault counters (the last slot is "other"). */
static inline uint64_t stats_thread_faults(const struct pc_stats *s)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < s->nthreads; i++)
		sum += s->thread[i].faults;
	return sum;
}

/*
 * Stats invariants every complete region must satisfy: the page counts add
 * up, and what the region says it fetched is what the source saw
 * (@bytes_fetched and @fetch_calls, as counted by a counting source).
 */
static inline bool stats_consistent(const struct pc_stats *s, uint64_t pages,
				    uint64_t page_size, uint64_t bytes_fetched,
				    uint64_t fetch_calls, char *why, size_t len)
{
	const struct pc_latency *l = &s->latency;

	why[0] = 0;
	if (s->pages != pages || s->page_size != page_size)
		snprintf(why, len, "pages %llu page_size %llu, want %llu %llu",
			 (unsigned long long)s->pages,
			 (unsigned long long)s->page_size,
			 (unsigned long long)pages,
			 (unsigned long long)page_size);
	else if (s->present != pages)
		snprintf(why, len, "present %llu of %llu",
			 (unsigned long long)s->present,
			 (unsigned long long)pages);
	else if (s->pages_demand + s->pages_prefetch + s->pages_fill != pages)
		snprintf(why, len,
			 "demand %llu + prefetch %llu + fill %llu != pages %llu",
			 (unsigned long long)s->pages_demand,
			 (unsigned long long)s->pages_prefetch,
			 (unsigned long long)s->pages_fill,
			 (unsigned long long)pages);
	else if (s->zero_pages > pages)
		snprintf(why, len, "zero_pages %llu > pages",
			 (unsigned long long)s->zero_pages);
	else if (s->faults < s->pages_demand)
		snprintf(why, len, "faults %llu < pages_demand %llu",
			 (unsigned long long)s->faults,
			 (unsigned long long)s->pages_demand);
	else if (s->bytes_fetched != bytes_fetched)
		snprintf(why, len, "bytes_fetched %llu, source saw %llu",
			 (unsigned long long)s->bytes_fetched,
			 (unsigned long long)bytes_fetched);
	else if (stats_thread_faults(s) != s->faults)
		snprintf(why, len, "per-thread faults sum %llu != faults %llu",
			 (unsigned long long)stats_thread_faults(s),
			 (unsigned long long)s->faults);
	else if (l->count && !(l->p50 <= l->p90 && l->p90 <= l->p99 &&
			       l->p99 <= l->p999 && l->p999 <= l->max))
		snprintf(why, len, "latency percentiles not ordered");
	else if (s->fetches != fetch_calls)
		snprintf(why, len, "fetches %llu, source saw %llu calls",
			 (unsigned long long)s->fetches,
			 (unsigned long long)fetch_calls);
	return why[0] == 0;
}

/*
 * The stats of complete region @r, checked with stats_consistent() against
 * what counting source @cs saw: free() them.  @why is empty when they add
 * up, else says why not; NULL (with the reason in @why): no stats.
 */
static inline struct pc_stats *counted_stats(pc_region *r,
					     struct counting_src *cs,
					     char *why, size_t len)
{
	uint64_t region_page = pc_region_page_size(r);
	struct pc_stats *st = NULL;
	int ret;

	ret = pc_region_stats(r, &st);
	if (ret) {
		snprintf(why, len, "pc_region_stats = %d", ret);
		return NULL;
	}
	stats_consistent(st, pc_region_size(r) / region_page, region_page,
			 counting_total(cs) * SRC_PAGE, atomic_load(&cs->calls),
			 why, len);
	return st;
}

/*
 * What a case found, one reason per reported check; empty means it passed.
 * A case that cannot get that far fails all three with the same reason.
 */
struct verdict {
	char data[256];		/* complete, every byte right */
	char fetch[256];	/* each page fetched once, zero pages never */
	char stats[256];	/* counters add up */
};

static inline void fail_all(struct verdict *v, const char *why)
{
	snprintf(v->data, sizeof(v->data), "%.240s", why);
	snprintf(v->fetch, sizeof(v->fetch), "not checked: %.200s", why);
	snprintf(v->stats, sizeof(v->stats), "not checked: %.200s", why);
}

/*
 * Report @v as three checks: @name followed by @data_check (the data
 * check's suffix, such as "_byte_exact"), @name_each_page_fetched_once and
 * @name_stats_add_up.  Each failure is followed by its reason.
 */
static inline void verdict_report(const struct verdict *v, const char *name,
				  const char *data_check)
{
	if (!ok(!v->data[0], "%s%s", name, data_check))
		diag("%s", v->data);
	if (!ok(!v->fetch[0], "%s_each_page_fetched_once", name))
		diag("%s", v->fetch);
	if (!ok(!v->stats[0], "%s_stats_add_up", name))
		diag("%s", v->stats);
}

/* The same three checks, skipped for @reason. */
static inline void verdict_skip(const char *reason, const char *name,
				const char *data_check)
{
	skip(reason, "%s%s", name, data_check);
	skip(reason, "%s_each_page_fetched_once", name);
	skip(reason, "%s_stats_add_up", name);
}

/*
 * 2 MiB huge pages for the hugetlb backend.  hugepages_reserve() raises
 * nr_hugepages when fewer than @need are free (root only);
 * hugepages_restore() puts the original value back.
 */
#define HUGEPAGES_DIR "/sys/kernel/mm/hugepages/hugepages-2048kB/"

struct hugepages {
	long orig;
	bool changed;
	char why[160];
};

static inline long hugepages_read(const char *name)
{
	char path[256], buf[32];
	long v = -1;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), HUGEPAGES_DIR "%s", name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n > 0) {
		buf[n] = 0;
		v = strtol(buf, NULL, 10);
	}
	close(fd);
	return v;
}

static inline bool hugepages_write(long nr)
{
	char buf[32];
	int fd, len;
	bool good;

	fd = open(HUGEPAGES_DIR "nr_hugepages", O_WRONLY);
	if (fd < 0)
		return false;
	len = snprintf(buf, sizeof(buf), "%ld\n", nr);
	good = write(fd, buf, len) == len;
	close(fd);
	return good;
}

static inline long hugepages_available(void)
{
	long free_ = hugepages_read("free_hugepages");
	long resv = hugepages_read("resv_hugepages");

	if (free_ < 0 || resv < 0)
		return -1;
	return free_ - resv;
}

static inline bool hugepages_reserve(struct hugepages *h, long need)
{
	long avail;

	memset(h, 0, sizeof(*h));
	h->orig = hugepages_read("nr_hugepages");
	avail = hugepages_available();
	if (h->orig >= 0 && avail >= 0 && avail < need) {
		h->changed = hugepages_write(h->orig + need - avail);
		avail = hugepages_available();
	}
	if (avail >= need)
		return true;
	snprintf(h->why, sizeof(h->why),
		 "no 2 MiB huge pages (nr_hugepages %ld, available %ld, need %ld)",
		 hugepages_read("nr_hugepages"), avail, need);
	return false;
}

static inline void hugepages_restore(struct hugepages *h)
{
	if (h->changed && !hugepages_write(h->orig))
		diag("could not restore nr_hugepages to %ld", h->orig);
	h->changed = false;
}

/*
 * What vCPU threads touch: in an even 4 KiB page @p a vCPU writes the word
 * touch_mark(base, p) at touch_write_off(p); in an odd one it reads the word
 * at touch_read_off(p) and compares it with the source's (see
 * touch_want_reads()).  Each test picks its own @base.
 */
static inline uint64_t touch_write_off(uint64_t p)
{
	return 8 * ((p * 37) % 256);
}

static inline uint64_t touch_read_off(uint64_t p)
{
	return 2048 + 8 * ((p * 53) % 256);
}

static inline uint64_t touch_mark(uint64_t base, uint64_t p)
{
	return base ^ (p * 0x9e3779b97f4a7c15ull);
}

/* Write the mark of page @p (at @page) as a vCPU does: one relaxed atomic. */
static inline void touch_write(char *page, uint64_t base, uint64_t p)
{
	__atomic_store_n((uint64_t *)(page + touch_write_off(p)),
			 touch_mark(base, p), __ATOMIC_RELAXED);
}

/* Read the word of page @p (at @page) as a vCPU does. */
static inline uint64_t touch_read(const char *page, uint64_t p)
{
	return __atomic_load_n((const uint64_t *)(page + touch_read_off(p)),
			       __ATOMIC_RELAXED);
}

/* A patch_fn for verify_mem(): the written marks; @ctx points to the base. */
static inline void touch_patch_marks(void *ctx, uint64_t p, void *buf)
{
	const uint64_t *base = ctx;

	if (p % 2 == 0)
		memcpy((char *)buf + touch_write_off(p),
		       &(uint64_t){ touch_mark(*base, p) }, 8);
}

/* The source's word at touch_read_off(p) of @npages pages; free() it. */
static inline uint64_t *touch_want_reads(pc_source *ref, uint64_t npages)
{
	uint64_t *w = malloc(npages * sizeof(*w));

	if (!w)
		bail_out("out of memory");
	for (uint64_t p = 0; p < npages; p++) {
		char buf[SRC_PAGE];

		if (pc_source_read(ref, p, 1, buf))
			bail_out("pc_source_read failed");
		memcpy(&w[p], buf + touch_read_off(p), 8);
	}
	return w;
}

/*
 * A fixture for tests of single pages: a started region over a counting
 * source, and a pattern source with the same seed to compare with.
 */
struct fixture {
	struct counting_src cs;
	pc_source *ref;
	pc_region *r;
	char *mem;		/* the region's guest view */
};

/*
 * Create the region with @opts (its size is the sources' size) over a
 * counting pattern source of @seed, and start it.  Returns 0, or a negative
 * errno after saying why with diag() (-ENOMEM: the sources could not be
 * made).  Call fixture_teardown() in either case.
 */
static inline int fixture_setup(struct fixture *f,
				const struct pc_region_opts *opts,
				uint64_t seed)
{
	pc_source *src;
	char why[200] = "";
	int ret;

	memset(f, 0, sizeof(*f));
	if (counting_new(&f->cs, opts->size, seed, &src) ||
	    pc_source_pattern(opts->size, seed, &f->ref)) {
		diag("cannot create sources");
		return -ENOMEM;
	}
	ret = pc_region_create(opts, src, &f->r, why, sizeof(why));
	if (ret) {
		diag("pc_region_create = %d (%s)", ret, why);
		return ret;
	}
	ret = pc_region_start(f->r);
	if (ret) {
		diag("pc_region_start = %d (%s)", ret, pc_region_error(f->r));
		return ret;
	}
	f->mem = pc_region_addr(f->r);
	return 0;
}

static inline void fixture_teardown(struct fixture *f)
{
	if (f->r)
		pc_region_destroy(f->r);
	pc_source_destroy(f->ref);
	counting_free(&f->cs);
}

/* How often the region fetched 4 KiB page @p of the fixture's source. */
static inline uint32_t fetched(struct fixture *f, uint64_t p)
{
	return atomic_load(&f->cs.fetched[p]);
}

#endif /* POSTCOPY_H */
#endif /* POSTCOPY_TESTS_TAP_H */
