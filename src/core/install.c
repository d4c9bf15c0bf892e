/* SPDX-License-Identifier: MIT */
/*
 * install.c - claim, fetch, install, publish: the one path by which a page
 * becomes present, shared by the SIGBUS handler, pc_resolve(), the
 * wait-mode handler threads, pc_populate() and the filler.
 *
 * A page is MISSING, INFLIGHT (exactly one thread owns it and is fetching
 * and installing it) or PRESENT.  Claiming is a compare-and-swap, so when
 * several threads fault on one page only the winner fetches; the others
 * sleep on the page's state word as a futex until it is published.
 *
 * How contents go into each kind of memory is memory.c's; this file
 * decides what goes in and when, and publishes it.
 *
 * Everything here runs inside the SIGBUS handler in exit mode, so it uses
 * only atomics, raw system calls (futex, pwrite, fallocate, madvise, ioctl)
 * and source_fetch() (fetch.c: the source's own fetch when that is
 * async-signal-safe, else a futex hand-off to a fetcher thread): no locks,
 * no malloc, no stdio.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

static void stat_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

bool page_try_claim(struct pc_region *r, uint64_t p)
{
	uint32_t missing = PAGE_MISSING;
	return atomic_compare_exchange_strong_explicit(
		&r->state[p], &missing, PAGE_INFLIGHT, memory_order_acquire,
		memory_order_relaxed);
}

uint32_t page_wait(struct pc_region *r, uint64_t p)
{
	_Atomic uint32_t *word = &r->state[p];
	for (;;) {
		uint32_t s = atomic_load_explicit(word, memory_order_acquire);
		if (!(s & PAGE_INFLIGHT))
			return s;
		if (!(s & PAGE_WAITERS) &&
		    !atomic_compare_exchange_weak(word, &s, s | PAGE_WAITERS))
			continue;
		syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE,
			PAGE_INFLIGHT | PAGE_WAITERS, NULL, NULL, 0);
	}
}

/* Set pages to @to (PRESENT or back to MISSING), waking their sleepers. */
static void pages_settle(struct pc_region *r, uint64_t first, uint64_t n,
			 uint32_t to)
{
	for (uint64_t p = first; p < first + n; p++) {
		uint32_t old = atomic_exchange_explicit(&r->state[p], to,
							memory_order_release);
		if (old & PAGE_WAITERS)
			futex_wake_all(&r->state[p]);
	}
}

bool count_present(struct pc_region *r, uint64_t first, uint64_t n)
{
	bool complete = false;
	for (uint64_t p = first; p < first + n;) {
		uint64_t k = 64 - p % 64 < first + n - p ? 64 - p % 64 : first + n - p;
		uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << (p % 64);
		atomic_fetch_or_explicit(&r->present_bits[p / 64], mask,
					 memory_order_relaxed);
		p += k;
	}
	for (uint64_t p = first; p < first + n;) {
		uint64_t c = p / PRESENT_CHUNK, end = (c + 1) * PRESENT_CHUNK;
		if (end > r->npages)
			end = r->npages;
		uint64_t k = first + n < end ? first + n - p : end - p;
		uint32_t now = atomic_fetch_add(&r->chunk_present[c].n, (uint32_t)k) +
			       (uint32_t)k;
		if (now == end - c * PRESENT_CHUNK &&
		    atomic_fetch_add(&r->chunks_full, 1) + 1 == r->nchunks)
			complete = true;
		p += k;
	}
	return complete;
}

uint64_t region_present_count(const struct pc_region *r)
{
	uint64_t n = 0;
	for (uint64_t c = 0; c < r->nchunks; c++)
		n += atomic_load_explicit(&r->chunk_present[c].n, memory_order_relaxed);
	return n;
}

void release_pages(struct pc_region *r, uint64_t first, uint64_t n)
{
	pages_settle(r, first, n, PAGE_MISSING);
}

void claim_around(struct pc_region *r, uint64_t p, uint64_t lo, uint64_t hi,
		  uint64_t *first, uint64_t *n)
{
	uint64_t a = p, b = p + 1;
	while (a > lo && page_try_claim(r, a - 1))
		a--;
	while (b < hi && page_try_claim(r, b))
		b++;
	*first = a;
	*n = b - a;
}

/* Fetch region pages [first, first+n) into @dst with one request. */
static int fetch_pages(const struct install_ctx *ic, uint64_t first, uint64_t n,
		       void *dst)
{
	uint64_t per = ic->r->page_size / PC_SOURCE_PAGE_SIZE;
	uint64_t sfirst = first * per, sn = n * per;
	return source_fetch(ic, 1, &sfirst, &sn, &dst);
}

int fetch_runs(const struct install_ctx *ic, unsigned count,
	       const uint64_t *first, const uint64_t *n, char *dst)
{
	struct pc_region *r = ic->r;
	uint64_t per = r->page_size / PC_SOURCE_PAGE_SIZE;
	/* As many sub-runs as there are, up to PC_MAX_BATCH: an exit-mode
	 * fault runs this on the signal stack, which may be small, and
	 * mostly has one. */
	unsigned most = 0;
	for (unsigned i = 0; i < count && most < PC_MAX_BATCH; i++)
		for (uint64_t p = first[i]; p < first[i] + n[i] && most < PC_MAX_BATCH; p++)
			most += !page_is_zero(r, p) &&
				(p == first[i] || page_is_zero(r, p - 1));
	uint64_t sfirst[most ? most : 1], sn[most ? most : 1];
	void *sdst[most ? most : 1];
	unsigned k = 0;

	/* The data sub-runs of every run; zero pages are never fetched. */
	for (unsigned i = 0; i < count; i++) {
		for (uint64_t p = first[i]; p < first[i] + n[i];) {
			if (page_is_zero(r, p)) {
				p++;
				continue;
			}
			uint64_t q = p + 1;
			while (q < first[i] + n[i] && !page_is_zero(r, q))
				q++;
			if (k == most) { /* very fragmented: flush */
				int ret = source_fetch(ic, k, sfirst, sn, sdst);
				if (ret < 0)
					return ret;
				k = 0;
			}
			sfirst[k] = p * per;
			sn[k] = (q - p) * per;
			sdst[k] = dst + (p - first[i]) * r->page_size;
			k++;
			p = q;
		}
		dst += n[i] * r->page_size;
	}
	if (!k)
		return 0;
	source_delay(r->src); /* pipelined: one round trip for them all */
	return source_fetch(ic, k, sfirst, sn, sdst);
}

/*
 * Fetch data pages [first, first+n) and put them in place: through the
 * bounce buffer, so that the shared page cache (which other processes may
 * map) only ever holds what a successful fetch returned; straight into
 * the memory when the source writes only good bytes (PC_SOURCE_DIRECT)
 * and the memory lets it (memory_direct()).  *@mapped: the pages from
 * @first mapped so far.
 */
static int fetch_and_put(const struct install_ctx *ic, uint64_t first,
			 uint64_t n, uint64_t *mapped)
{
	struct pc_region *r = ic->r;
	char *direct = memory_direct(r, first);
	*mapped = 0;
	if (direct)
		return fetch_pages(ic, first, n, direct);
	uint64_t chunk = PC_SCRATCH_BYTES / r->page_size;
	for (uint64_t p = first; p < first + n; p += chunk) {
		uint64_t k = first + n - p < chunk ? first + n - p : chunk, m = 0;
		int ret = fetch_pages(ic, p, k, ic->scratch);
		if (ret == 0)
			ret = memory_put_data(ic, p, k, ic->scratch, &m);
		*mapped += m;
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int place_data(const struct install_ctx *ic, uint64_t first,
		      uint64_t n, const char *from, uint64_t *mapped)
{
	if (!from)
		return fetch_and_put(ic, first, n, mapped);
	return memory_put_data(ic, first, n, from, mapped);
}

/* Pages [first, first+n) are mapped: count them, publish them present,
 * and complete the region with its last. */
static void settle_installed(const struct install_ctx *ic, uint64_t first,
			     uint64_t n, uint64_t zeros, enum origin origin)
{
	struct pc_region *r = ic->r;
	struct thread_slot *slot = ic->slot;
	if (!n)
		return;
	stat_add(&slot->zero_pages, zeros);
	if (origin == ORIGIN_DEMAND) {
		stat_add(&slot->pages[ORIGIN_DEMAND], 1);
		stat_add(&slot->pages[ORIGIN_PREFETCH], n - 1);
	} else {
		stat_add(&slot->pages[origin], n);
	}
	pages_settle(r, first, n, PAGE_PRESENT);
	if (count_present(r, first, n))
		region_complete(r);
}

bool install_views(const struct pc_region *r)
{
	return r->src->view && memory_takes_views(r);
}

int fetch_batch(struct install_ctx *ic, unsigned count, const uint64_t *first,
		const uint64_t *n, char *buf, char **data)
{
	struct pc_region *r = ic->r;
	if (!install_views(r)) {
		*data = buf;
		return fetch_runs(ic, count, first, n, buf);
	}
	*data = NULL;
	for (unsigned i = 0; r->src->delay_us && i < count; i++)
		for (uint64_t p = first[i]; p < first[i] + n[i]; p++)
			if (!page_is_zero(r, p)) { /* a request only for data */
				source_delay(r->src);
				ic->charged = true;
				return 0;
			}
	return 0;
}

int install_run(const struct install_ctx *ic, uint64_t first, uint64_t n,
		const void *prefetched, enum origin origin)
{
	struct pc_region *r = ic->r;
	const char *from = prefetched;
	uint64_t zeros = 0, end = first + n;
	/* Anonymous memory is mapped segment by segment as it is put,
	 * shared memory only by memory_map() at the end.  After a failure
	 * part way, what is mapped is present, and only the rest goes back
	 * to missing. */
	uint64_t mapped_end = first, zeros_mapped = 0;
	bool requested = from != NULL || ic->charged;
	int ret = 0;

	/* A source whose pages lie in memory hands them over as they are:
	 * the kernel's copy reads them, and nothing is fetched. */
	uint64_t per = r->page_size / PC_SOURCE_PAGE_SIZE;
	bool viewed = !from && install_views(r) &&
		      (from = r->src->view(r->src->ctx, first * per, n * per));

	if (r->mem.adopted && !from) { /* fetch first: nothing slow under the lock */
		ret = ic->scratch ? fetch_runs(ic, 1, &first, &n, ic->scratch) : -EINVAL;
		if (ret < 0) {
			release_pages(r, first, n);
			return ret;
		}
		from = ic->scratch;
		requested = true;
	}
	memory_installs_begin(r);
	/* Split the run where pages switch between zero and data. */
	for (uint64_t p = first; p < end && ret == 0;) {
		bool zero = page_gets_zeros(r, p);
		uint64_t q = p + 1, mapped;
		while (q < end && page_gets_zeros(r, q) == zero)
			q++;
		if (zero) {
			ret = memory_put_zeros(ic, p, q - p, ic->retry, &mapped);
			zeros += q - p;
			zeros_mapped += mapped;
		} else {
			/* One request per run, charged at its first data. */
			if (!requested) {
				source_delay(r->src);
				requested = true;
			}
			if (viewed) /* counted as the fetch it replaces */
				source_count(ic, 1, (q - p) * per);
			ret = place_data(ic, p, q - p,
					 from ? from + (p - first) * r->page_size :
						NULL, &mapped);
			if (ret == -EFAULT && viewed) {
				/* The file shrank under its mapping: the
				 * fetch reads what is left, or says why. */
				uint64_t more;
				ret = fetch_and_put(ic, p + mapped, q - p - mapped, &more);
				mapped += more;
			}
		}
		if (mapped) /* memory that maps as it is put (not shared) */
			mapped_end = p + mapped;
		p = q;
	}
	memory_installs_end(r);
	if (ret == 0) {
		uint64_t mapped;
		ret = memory_map(ic, first, n, false, &mapped);
		if (mapped)
			mapped_end = first + mapped;
	}
	/* An adopted region's pending event: the pages stay claimed (threads
	 * that found them in flight wait for this install), and the caller
	 * tries again, with ic->retry, once the event is read. */
	if (ret == -EAGAIN && r->mem.adopted)
		return ret;
	if (ret < 0) {
		/* The failed run's fault is not among what is counted. */
		settle_installed(ic, first, mapped_end - first, zeros_mapped,
				 origin == ORIGIN_DEMAND ? ORIGIN_PREFETCH : origin);
		release_pages(r, mapped_end, end - mapped_end);
		return ret;
	}
	settle_installed(ic, first, n, zeros, origin);
	return 0;
}

int install_again(const struct install_ctx *ic, uint64_t first, uint64_t n,
		  const void *prefetched, enum origin origin,
		  void (*wait_event)(struct pc_region *r))
{
	struct install_ctx again = *ic;
	again.retry = true;
	int ret;
	do {
		wait_event(ic->r);
		ret = install_run(&again, first, n, prefetched, origin);
	} while (ret == -EAGAIN);
	return ret;
}

/*
 * A fault on a page we already installed: a racing install that finished
 * after the fault was raised, or a fault the pager did not cause (the
 * kernel swapped the page, broke COW or KSM sharing, or zapped the
 * mapping).  Let the kernel populate it the ordinary way; if the mapping
 * is gone, userfaultfd intercepts that too (EFAULT in SIGBUS mode), and we
 * reinstall from what we hold: the page cache for shared backends, and for
 * anonymous memory that was discarded, a zero page as the kernel would.
 */
static int resolve_present(const struct install_ctx *ic, uint64_t p)
{
	struct pc_region *r = ic->r;
	stat_add(&ic->slot->refaults, 1);
	if (r->opts.mode == PC_MODE_EXIT &&
	    madvise(r->mem.guest + p * r->page_size, r->page_size,
		    MADV_POPULATE_WRITE) == 0)
		return 0;
	int ret = memory_reinstate(ic, p);
	/* Completion unregisters the range under us: every page is in place
	 * and the retried access is an ordinary fault. */
	if (ret < 0 && region_all_present(r))
		return 0;
	return ret;
}

/*
 * PC_WINDOW_AUTO: a fault that lands right after one of the slot's streams'
 * last window reads sequentially, so that stream's window doubles, up to
 * 2 MiB; any other fault starts a stream in place of the oldest.  A new
 * stream is one page, or the filler's short step while pages come in the
 * background (the filler, a server's push): every page comes then
 * anyway, and what a fault costs is its wakeups (two in wait mode) and
 * round trip, which 64 KiB costs hardly more than 4 KiB: a guest at
 * random or at a stride takes up to sixteen times fewer; a fault already
 * waits that long when it lands on the filler's step.  And it grows to
 * PC_BUSY_RUN_BYTES only, what the filler and the push bring at a time
 * then: more, and the faults that land on its pages in flight (a vCPU
 * walking right behind another) wait for milliseconds.  The window runs
 * forward from @p (claimed already).  The state is the slot's, relaxed: a
 * guess, never a correctness matter.
 */
static void claim_readahead(const struct install_ctx *ic, uint64_t p,
			    uint64_t *first, uint64_t *n)
{
	struct pc_region *r = ic->r;
	struct thread_slot *t = ic->slot;
	uint64_t max = PC_MAX_RUN_BYTES / r->page_size, w = 1;
	if (atomic_load_explicit(&r->feed.background, memory_order_relaxed) &&
	    PC_FILL_STEP_BYTES > r->page_size) {
		w = PC_FILL_STEP_BYTES / r->page_size;
		max = PC_BUSY_RUN_BYTES / r->page_size;
	}
	unsigned k = RA_STREAMS;
	for (unsigned i = 0; i < RA_STREAMS && k == RA_STREAMS; i++)
		if (atomic_load_explicit(&t->ra_next[i], memory_order_relaxed) == p + 1)
			k = i;
	if (k < RA_STREAMS) {
		w = 2 * atomic_load_explicit(&t->ra_window[k], memory_order_relaxed);
		w = w < max ? w : max;
	} else {
		k = atomic_fetch_add_explicit(&t->ra_victim, 1, memory_order_relaxed) %
		    RA_STREAMS;
	}
	uint64_t hi = r->npages - p < w ? r->npages : p + w;
	claim_around(r, p, p, hi, first, n);
	atomic_store_explicit(&t->ra_window[k], (uint32_t)w, memory_order_relaxed);
	/* Pages already there end the run early: the stream goes on after
	 * the window, not after what happened to be missing. */
	atomic_store_explicit(&t->ra_next[k], hi + 1, memory_order_relaxed);
}

int claim_fault(const struct install_ctx *ic, uint64_t p, uint64_t *first,
		uint64_t *n)
{
	struct pc_region *r = ic->r;

	for (;;) {
		uint32_t s = atomic_load_explicit(&r->state[p],
						  memory_order_acquire);
		if (s == PAGE_PRESENT)
			return resolve_present(ic, p);
		if (s & PAGE_INFLIGHT) {
			stat_add(&ic->slot->dups_avoided, 1);
			/* A handler thread: the owner's install wakes the
			 * sleeper it serves, so it need not wait. */
			if (ic->handler)
				return RESOLVE_SKIPPED;
			if (page_wait(r, p) == PAGE_PRESENT)
				return 0;
			continue; /* the owner failed: try ourselves */
		}
		if (page_try_claim(r, p))
			break;
	}

	atomic_store_explicit(&ic->slot->last_fault, p + 1, memory_order_relaxed);
	atomic_store_explicit(&ic->slot->last_fault_ns, now_ns(),
			      memory_order_relaxed);
	if (r->fault_hook)
		r->fault_hook(r->fault_hook_arg, p * r->page_size,
			      ic->slot == &r->slots[r->nslots - 1] ?
				      PC_THREAD_OTHER :
				      (unsigned)(ic->slot - r->slots));
	if (r->opts.window == PC_WINDOW_AUTO) {
		claim_readahead(ic, p, first, n);
		return RESOLVE_CLAIMED;
	}
	uint64_t w = r->opts.window;
	uint64_t lo = p - p % w;
	uint64_t hi = lo + w < r->npages ? lo + w : r->npages;
	claim_around(r, p, lo, hi, first, n);
	return RESOLVE_CLAIMED;
}

int resolve_page(const struct install_ctx *ic, uint64_t p)
{
	uint64_t first, n;
	int ret = claim_fault(ic, p, &first, &n);
	if (ret != RESOLVE_CLAIMED)
		return ret;
	ret = install_run(ic, first, n, NULL, ORIGIN_DEMAND);
	if (ret == -EAGAIN) /* adopted: an owner's event is queued */
		ret = install_again(ic, first, n, NULL, ORIGIN_DEMAND,
				    wait_mode_read_events);
	return ret;
}
