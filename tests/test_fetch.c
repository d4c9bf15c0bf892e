/* SPDX-License-Identifier: MIT */
/*
 * test_fetch - how the pager calls its source, in both modes and on every
 * backend, every byte of the result compared with the source:
 *  - a fetch that fails with a transient error (-EIO) is asked again and
 *    the region completes; the retries are counted; a fatal error is not
 *    retried;
 *  - bytes a failed fetch left behind never reach the shared page cache
 *    (the source looks through the region's memfd while it fails);
 *  - a source that is not async-signal-safe (it locks a mutex and
 *    allocates) is never called on a faulting thread in exit mode: its
 *    fetches run on the library's fetcher thread (wait mode fetches on
 *    handler threads anyway).
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "postcopy.h"
#include "tap.h"

#define SIZE (4 * MIB)

/* A pattern source that fails some fetches after writing garbage, looks
 * at the region's memfd meanwhile, and notes which threads fetch. */
struct probe {
	pc_source *inner;
	int memfd;		 /* the region's, once known; -1 */
	_Atomic int transient;	 /* fetches left to fail with -EIO */
	_Atomic int fatal;	 /* fetches left to fail with -ENODATA */
	_Atomic int leaked;	 /* garbage seen through the memfd */
	_Atomic int on_faulter;	 /* fetches on a thread that faults */
	_Atomic int fetches;
	pthread_mutex_t lock;	 /* what makes it unsafe in a handler */
};

static __thread bool faulting_thread;

/* Take one from @left if it is positive. */
static bool take(_Atomic int *left)
{
	int n = atomic_load(left);
	while (n > 0 && !atomic_compare_exchange_weak(left, &n, n - 1))
		;
	return n > 0;
}

static int probe_fetch(void *ctx, uint64_t first, uint64_t n, void *dst)
{
	struct probe *pr = ctx;
	atomic_fetch_add(&pr->fetches, 1);
	if (faulting_thread)
		atomic_fetch_add(&pr->on_faulter, 1);
	bool transient = take(&pr->transient);
	if (transient || take(&pr->fatal)) {
		memset(dst, 0xee, n * SRC_PAGE);
		char seen[SRC_PAGE];
		if (pr->memfd >= 0 &&
		    pread(pr->memfd, seen, SRC_PAGE, (off_t)(first * SRC_PAGE)) == (ssize_t)SRC_PAGE &&
		    (unsigned char)seen[0] == 0xee && (unsigned char)seen[SRC_PAGE - 1] == 0xee)
			atomic_fetch_add(&pr->leaked, 1);
		return transient ? -EIO : -ENODATA;
	}
	return pc_source_read(pr->inner, first, n, dst);
}

static bool probe_is_zero(void *ctx, uint64_t page)
{
	return pc_source_is_zero(((struct probe *)ctx)->inner, page);
}

/* The same, doing what no signal handler may. */
static int unsafe_fetch(void *ctx, uint64_t first, uint64_t n, void *dst)
{
	struct probe *pr = ctx;
	pthread_mutex_lock(&pr->lock);
	free(malloc(64));
	pthread_mutex_unlock(&pr->lock);
	return probe_fetch(ctx, first, n, dst);
}

struct setup {
	enum pc_backend b;
	enum pc_mode m;
	bool prealloc, safe;
	int transient, fatal;
};

static const char *setup_name(const struct setup *s, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s_%s", backend_name(s->b),
		 s->prealloc ? "_prealloc" : "", mode_name(s->m));
	return buf;
}

struct toucher {
	char *mem;
	bool good;
	pc_region *r;
	pc_source *ref;
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;
	faulting_thread = true;
	pc_thread_attach(t->r, 0);
	t->good = verify_mem(t->mem, SIZE, t->ref, NULL, NULL) == 0;
	return NULL;
}

/* Run one region over a probe; the verdict's pieces go to @out. */
static int run(const struct setup *s, pc_source *ref, struct probe *pr,
	       struct pc_stats **stats, bool *good)
{
	memset(pr, 0, sizeof(*pr));
	pr->memfd = -1;
	pr->transient = s->transient;
	pr->fatal = s->fatal;
	pthread_mutex_init(&pr->lock, NULL);
	if (pc_source_pattern(SIZE, 21, &pr->inner))
		bail_out("pc_source_pattern");
	struct pc_source_ops ops = {
		.fetch = s->safe ? probe_fetch : unsafe_fetch,
		.is_zero = probe_is_zero,
		.flags = s->safe ? PC_SOURCE_ASYNC_SIGNAL_SAFE : 0,
	};
	pc_source *src;
	pc_region *r;
	char why[256] = "";
	if (pc_source_custom(&ops, pr, SIZE, &src))
		bail_out("pc_source_custom");
	struct pc_region_opts o = { .size = SIZE, .backend = s->b, .mode = s->m,
				    .prealloc = s->prealloc, .window = 4,
				    .max_threads = 1 };
	if (pc_region_create(&o, src, &r, why, sizeof(why)))
		bail_out("pc_region_create: %s", why);
	pr->memfd = pc_region_fd(r);
	int ret = pc_region_start(r);
	struct toucher t = { pc_region_addr(r), false, r, ref };
	pthread_t th;
	if (ret == 0 && s->fatal) {
		/* pc_resolve() returns the error instead of parking, so the
		 * failed region can be destroyed: nobody sleeps on it. */
		uint64_t p = 0;
		while (pc_source_is_zero(ref, p))
			p++;
		faulting_thread = true;
		ret = pc_resolve((char *)pc_region_addr(r) + p * SRC_PAGE);
		faulting_thread = false;
	} else if (ret == 0) {
		if (pthread_create(&th, NULL, touch_main, &t))
			bail_out("pthread_create");
		pthread_join(th, NULL);
		ret = pc_region_wait(r, 30000);
	}
	*good = t.good;
	if (pc_region_stats(r, stats))
		bail_out("pc_region_stats");
	pc_region_destroy(r);
	pc_source_destroy(pr->inner);
	pthread_mutex_destroy(&pr->lock);
	return ret;
}

static void retried(const struct setup *s, pc_source *ref)
{
	struct probe pr;
	struct pc_stats *st;
	bool good;
	char name[64];
	int ret = run(s, ref, &pr, &st, &good);
	setup_name(s, name, sizeof(name));
	if (!ok(ret == 0 && good && st->fetch_retries == (uint64_t)s->transient,
		"%s_transient_errors_are_retried_and_every_byte_arrives", name))
		diag("wait %d, bytes %s, %llu retries of %d", ret, good ? "right" : "WRONG",
		     (unsigned long long)st->fetch_retries, s->transient);
	if (s->b == PC_BACKEND_ANON)
		skip("anonymous memory has no page cache",
		     "%s_bytes_of_a_failed_fetch_never_reach_the_page_cache", name);
	else if (!ok(atomic_load(&pr.leaked) == 0,
		     "%s_bytes_of_a_failed_fetch_never_reach_the_page_cache", name))
		diag("%d failed fetches' garbage was visible through the memfd",
		     atomic_load(&pr.leaked));
	free(st);
}

static void not_retried(const struct setup *s, pc_source *ref)
{
	struct probe pr;
	struct pc_stats *st;
	bool good;
	char name[64];
	/* Only the first fetch fails, so a retry would succeed. */
	int ret = run(s, ref, &pr, &st, &good);
	setup_name(s, name, sizeof(name));
	if (!ok(ret == -ENODATA && st->fetch_retries == 0,
		"%s_a_fatal_error_is_not_retried", name))
		diag("wait %d, %llu retries", ret, (unsigned long long)st->fetch_retries);
	free(st);
}

static void handed_off(const struct setup *s, pc_source *ref)
{
	struct probe pr;
	struct pc_stats *st;
	bool good;
	char name[64];
	int ret = run(s, ref, &pr, &st, &good);
	setup_name(s, name, sizeof(name));
	/* (Wait mode fetches on handler threads anyway.) */
	if (!ok(ret == 0 && good && atomic_load(&pr.fetches) > 0 &&
			atomic_load(&pr.on_faulter) == 0,
		"%s_unsafe_source_never_runs_on_the_faulting_thread", name))
		diag("wait %d, bytes %s, %d of %d fetches on the faulting thread",
		     ret, good ? "right" : "WRONG", atomic_load(&pr.on_faulter),
		     atomic_load(&pr.fetches));
	free(st);
}

int main(void)
{
	pc_source *ref;
	struct hugepages hp;
	bool huge = hugepages_reserve(&hp, SIZE / (2 * MIB));
	static const struct setup base[] = {
		{ PC_BACKEND_SHMEM, PC_MODE_EXIT, false, true, 0, 0 },
		{ PC_BACKEND_SHMEM, PC_MODE_EXIT, true, true, 0, 0 },
		{ PC_BACKEND_ANON, PC_MODE_EXIT, false, true, 0, 0 },
		{ PC_BACKEND_HUGETLB, PC_MODE_EXIT, false, true, 0, 0 },
	};
	plan(4 * (4 + 3));
	tap_watchdog(600);
	if (pc_source_pattern(SIZE, 21, &ref))
		bail_out("pc_source_pattern");
	for (unsigned i = 0; i < 4; i++) {
		for (int m = PC_MODE_EXIT; m <= PC_MODE_WAIT; m++) {
			struct setup s = base[i];
			char name[64];
			s.m = (enum pc_mode)m;
			setup_name(&s, name, sizeof(name));
			if (s.b == PC_BACKEND_HUGETLB && !huge) {
				skip("no 2 MiB huge pages", "%s_transient_errors_are_retried_and_every_byte_arrives", name);
				skip("no 2 MiB huge pages", "%s_bytes_of_a_failed_fetch_never_reach_the_page_cache", name);
				skip("no 2 MiB huge pages", "%s_a_fatal_error_is_not_retried", name);
				if (m == PC_MODE_EXIT)
					skip("no 2 MiB huge pages", "%s_unsafe_source_never_runs_on_the_faulting_thread", name);
				continue;
			}
			s.transient = 3;
			retried(&s, ref);
			s.transient = 0;
			s.fatal = 1;
			not_retried(&s, ref);
			s.fatal = 0;
			s.safe = false;
			if (m == PC_MODE_EXIT)
				handed_off(&s, ref);
		}
	}
	if (huge)
		hugepages_restore(&hp);
	pc_source_destroy(ref);
	return done();
}
