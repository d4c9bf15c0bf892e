/* SPDX-License-Identifier: MIT */
/*
 * fetch.c - every call into a source goes through source_fetch(), which
 * does two things the sources should not each do themselves:
 *
 *  - Transient errors are retried.  A source that fails with an error that
 *    may go away (EIO, EAGAIN, a reset connection, ...) is asked again with
 *    a backoff from 1 ms to 100 ms, for the region's retry budget; only
 *    then, or at once for any other error, is the page lost (postcopy.h,
 *    WHEN A PAGE CANNOT BE HAD).
 *
 *  - A source that is not async-signal-safe (it takes locks, allocates,
 *    uses libcurl or TLS) is never called in a signal handler.  A faulting
 *    thread in exit mode puts a job on its own stack, pushes it on a
 *    lock-free list, wakes a fetcher thread with a futex and sleeps on the
 *    job's futex until the fetcher has filled its buffer; then it installs
 *    the page itself as usual.  Pushing (a compare-and-swap) and futexes
 *    are async-signal-safe.  Fetchers only ever exchange the whole list or
 *    push onto it, never pop one element, so the list has no ABA problem.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define RETRY_FIRST_NS (1000000ull)
#define RETRY_MAX_NS (100000000ull)

struct fetch_job {
	struct fetch_job *next;
	struct pc_source *src;
	unsigned k, flags;
	const uint64_t *first, *n;
	void *const *dst;
	int ret;
	_Atomic uint32_t done;
};

bool fetch_error_transient(int err)
{
	switch (-err) {
	case EAGAIN:
	case EINTR:
	case EIO:
	case EBUSY:
	case ETIMEDOUT:
	case ECONNRESET:
	case ECONNABORTED:
	case ECONNREFUSED:
	case EPIPE:
	case ENETDOWN:
	case ENETUNREACH:
	case EHOSTUNREACH:
	case ENOBUFS:
		return true;
	default:
		return false;
	}
}

static void futex_wait(_Atomic uint32_t *word, uint32_t val)
{
	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_one(_Atomic uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static int call_source(struct pc_source *src, unsigned k, const uint64_t *first,
		       const uint64_t *n, void *const *dst, unsigned flags)
{
	if (src->ops.fetch_many)
		return src->ops.fetch_many(src->ctx, k, first, n, dst, flags);
	int ret = 0;
	for (unsigned i = 0; i < k && ret == 0; i++)
		ret = src->ops.fetch(src->ctx, first[i], n[i], dst[i]);
	return ret;
}

/* Push @head..@tail (linked) onto the list. */
static void push_jobs(struct pc_region *r, struct fetch_job *head,
		      struct fetch_job *tail)
{
	struct fetch_job *old = atomic_load(&r->handoff.jobs);
	do
		tail->next = old;
	while (!atomic_compare_exchange_weak(&r->handoff.jobs, &old, head));
	atomic_fetch_add(&r->handoff.jobs_seq, 1);
	futex_wake_one(&r->handoff.jobs_seq);
}

static int hand_off(struct pc_region *r, unsigned k, const uint64_t *first,
		    const uint64_t *n, void *const *dst, unsigned flags)
{
	struct fetch_job job = { .src = r->src, .k = k, .flags = flags,
				 .first = first, .n = n, .dst = dst };
	push_jobs(r, &job, &job);
	while (!atomic_load_explicit(&job.done, memory_order_acquire))
		futex_wait(&job.done, 0);
	return job.ret;
}

static void *fetcher_main(void *arg)
{
	struct pc_region *r = arg;
	for (;;) {
		uint32_t seq = atomic_load(&r->handoff.jobs_seq);
		struct fetch_job *list = atomic_exchange(&r->handoff.jobs, NULL);
		if (!list) {
			if (atomic_load(&r->handoff.fetchers_stop))
				return NULL;
			futex_wait(&r->handoff.jobs_seq, seq);
			continue;
		}
		/* Take the oldest (the list's tail); the rest go back for
		 * the other fetchers. */
		struct fetch_job *job = list, *prev = NULL;
		while (job->next) {
			prev = job;
			job = job->next;
		}
		if (prev) {
			prev->next = NULL;
			push_jobs(r, list, prev);
		}
		job->ret = call_source(job->src, job->k, job->first, job->n,
				       job->dst, job->flags);
		/* The job lives on the waiter's stack: nothing of it is
		 * touched after this store except the wake. */
		atomic_store_explicit(&job->done, 1, memory_order_release);
		futex_wake_one(&job->done);
	}
}

int fetchers_start(struct pc_region *r)
{
	if (r->src->flags & PC_SOURCE_ASYNC_SIGNAL_SAFE)
		return 0;
	unsigned n = r->opts.fetchers ? r->opts.fetchers : 1;
	r->handoff.fetchers = calloc(n, sizeof(*r->handoff.fetchers));
	if (!r->handoff.fetchers)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		int ret = pthread_create(&r->handoff.fetchers[i], NULL, fetcher_main, r);
		if (ret)
			return -ret;
		r->handoff.nfetchers++;
	}
	return 0;
}

/* After registry_remove(): no thread can hand off a job any more. */
void fetchers_stop(struct pc_region *r)
{
	atomic_store(&r->handoff.fetchers_stop, true);
	atomic_fetch_add(&r->handoff.jobs_seq, 1);
	futex_wake_all(&r->handoff.jobs_seq);
	for (unsigned i = 0; i < r->handoff.nfetchers; i++)
		pthread_join(r->handoff.fetchers[i], NULL);
	free(r->handoff.fetchers);
	r->handoff.fetchers = NULL;
	r->handoff.nfetchers = 0;
}

int source_fetch(const struct install_ctx *ic, unsigned k,
		 const uint64_t *first, const uint64_t *n, void *const *dst)
{
	struct pc_region *r = ic->r;
	struct pc_source *src = r->src;
	unsigned flags = ic->prefetch ? PC_FETCH_PREFETCH : 0;
	bool via_fetcher = ic->signal_safe && r->handoff.nfetchers;
	uint64_t backoff = RETRY_FIRST_NS, deadline = 0;
	int ret;

	for (;;) {
		ret = via_fetcher ? hand_off(r, k, first, n, dst, flags) :
				    call_source(src, k, first, n, dst, flags);
		if (ret == 0 || !fetch_error_transient(ret) ||
		    r->opts.no_fetch_retry || atomic_load(&r->stopping))
			break;
		uint64_t now = now_ns();
		if (!deadline)
			deadline = now + (uint64_t)r->opts.fetch_retry_ms * 1000000ull;
		if (now >= deadline)
			break;
		atomic_fetch_add_explicit(&ic->slot->fetch_retries, 1,
					  memory_order_relaxed);
		sleep_ns(backoff < deadline - now ? backoff : deadline - now);
		backoff = backoff * 2 < RETRY_MAX_NS ? backoff * 2 : RETRY_MAX_NS;
	}
	if (ret < 0)
		return ret;
	uint64_t pages = 0;
	for (unsigned i = 0; i < k; i++)
		pages += n[i];
	source_count(ic, k, pages);
	return 0;
}

void source_count(const struct install_ctx *ic, unsigned fetches, uint64_t pages)
{
	atomic_fetch_add_explicit(&ic->slot->fetches, fetches, memory_order_relaxed);
	atomic_fetch_add_explicit(&ic->slot->bytes_fetched,
				  pages * PC_SOURCE_PAGE_SIZE,
				  memory_order_relaxed);
}
