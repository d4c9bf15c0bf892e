/* SPDX-License-Identifier: MIT */
/*
 * fault_wait.c - the classic path: faulting threads sleep on the
 * userfaultfd, handler threads serve them (what QEMU, Firecracker and the
 * KVM demand_paging_test do).
 *
 * Each userfaultfd gets R reader threads.  Every reader has its own epoll
 * instance holding the userfaultfd with EPOLLEXCLUSIVE, so one fault wakes
 * one reader rather than all of them, and the region's stop eventfd, which
 * wakes all of them.  Readers drain the non-blocking userfaultfd in
 * batches.  Installs wake the sleepers (no DONTWAKE).
 */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "internal.h"

#define MSG_BATCH 64
#define BACKLOG 256
/* Faults left to another thread's install that a reader wakes itself once
 * the page is no longer in flight (see defer()). */
#define DEFER_MAX 256

struct reader {
	struct pc_region *r;
	int uffd;
	int epfd;
	/* Faults read while draining events for an install that got EAGAIN,
	 * served once the batch in hand is. */
	struct uffd_msg backlog[BACKLOG];
	size_t nbacklog;
	/* Pages of faults this reader read and left to the thread that had
	 * them in flight, to be woken once that thread is done with them. */
	uint64_t deferred[DEFER_MAX];
	unsigned ndeferred;
};

/* The reader running on this thread, for wait_mode_read_events(). */
static __thread struct reader *this_reader;

/* A fault whose run this reader claimed, waiting for its data. */
struct claimed {
	uint64_t first, n;
	struct thread_slot *slot;
	uint64_t t0;
};

/*
 * The owner gave [start, end) back (a balloon's MADV_DONTNEED): from now on
 * those pages read as zeros, never as the source's data.  A missing page is
 * marked present (a later fault maps a zero page, as for any present page
 * the owner lost); a page being fetched is installed as zeros by its
 * installer (install_run checks the bit); a present one needs nothing, the
 * owner's own zap empties it.
 */
static void handle_remove(struct pc_region *r, uint64_t start, uint64_t end)
{
	struct thread_slot *slot = &r->slots[r->nslots - 1];
	for (uint64_t a = start - start % r->page_size; a < end; a += r->page_size) {
		uint64_t p = addr_page(r, a);
		if (p == r->npages)
			continue;
		atomic_fetch_or(&r->mem.removed[p / 64], 1ull << (p % 64));
		atomic_fetch_add_explicit(&slot->pages_removed, 1, memory_order_relaxed);
		uint32_t missing = PAGE_MISSING;
		if (atomic_compare_exchange_strong(&r->state[p], &missing, PAGE_PRESENT) &&
		    count_present(r, p, 1))
			region_complete(r);
	}
}

void wait_mode_read_events(struct pc_region *r)
{
	struct reader *rd = this_reader;
	if (!rd || rd->r != r || rd->nbacklog == BACKLOG) {
		sched_yield(); /* a reader will read it */
		return;
	}
	struct uffd_msg m;
	pthread_rwlock_wrlock(&r->mem.remove_lock);
	while (rd->nbacklog < BACKLOG && read(rd->uffd, &m, sizeof(m)) == sizeof(m)) {
		if (m.event == UFFD_EVENT_REMOVE)
			handle_remove(r, m.arg.remove.start, m.arg.remove.end);
		else if (m.event == UFFD_EVENT_PAGEFAULT)
			rd->backlog[rd->nbacklog++] = m;
	}
	pthread_rwlock_unlock(&r->mem.remove_lock);
}

/* Read a batch of messages; an adopted region's REMOVE events are
 * handled before the lock that excludes installs is let go. */
static ssize_t read_batch(struct pc_region *r, int uffd, struct uffd_msg *msgs,
			  size_t len)
{
	if (!r->mem.removed)
		return read(uffd, msgs, len);
	pthread_rwlock_wrlock(&r->mem.remove_lock);
	ssize_t got = read(uffd, msgs, len);
	for (ssize_t i = 0; i < got / (ssize_t)sizeof(*msgs); i++)
		if (msgs[i].event == UFFD_EVENT_REMOVE)
			handle_remove(r, msgs[i].arg.remove.start, msgs[i].arg.remove.end);
	pthread_rwlock_unlock(&r->mem.remove_lock);
	return got;
}

/*
 * A fault read here on a page another thread has in flight.  That thread's
 * install wakes the range's sleepers, which should include this one, but
 * under load a sleeper was seen left asleep with its page present and its
 * fault read (fdinfo: pending 0, total 1; test_same_page_race, wait mode,
 * anon, about 1 run in 30), so the page is woken once more here when it is
 * no longer in flight.  A spare UFFDIO_WAKE costs nothing when nobody
 * sleeps; one on a page that went back to missing makes the sleeper fault
 * again, and its new fault is served.  With the list full, wait here.
 */
static void defer(struct reader *rd, struct pc_region *r, uint64_t p)
{
	if (rd->ndeferred < DEFER_MAX) {
		rd->deferred[rd->ndeferred++] = p;
		return;
	}
	page_wait(r, p);
	region_uffd_wake(r, p);
}

/* Wake the deferred faults whose pages are out of flight (all of them
 * with @all); true while some are left. */
static bool wake_deferred(struct reader *rd, struct pc_region *r, bool all)
{
	unsigned kept = 0;
	for (unsigned i = 0; i < rd->ndeferred; i++) {
		uint64_t p = rd->deferred[i];
		if (!all && (atomic_load_explicit(&r->state[p], memory_order_acquire) &
			     PAGE_INFLIGHT))
			rd->deferred[kept++] = p;
		else
			region_uffd_wake(r, p);
	}
	rd->ndeferred = kept;
	return kept != 0;
}

static void record(struct thread_slot *slot, uint64_t t0)
{
	uint64_t dt = now_ns() - t0;
	atomic_fetch_add_explicit(&slot->blocked_ns, dt, memory_order_relaxed);
	hist_record(&slot->latency, dt);
}

static void fail(struct pc_region *r, int err, uint64_t page)
{
	region_set_error(r, err, "serving a fault batch around page %llu: %s",
			 (unsigned long long)page, strerror(-err));
	region_fail(r, err);
}

/*
 * Fetch the data of runs [0, count) with one pipelined source request and
 * install them; or, where the source gives views of its pages, install
 * each straight from there.  On failure every run from there on goes back
 * to missing.
 */
static int fetch_and_install(struct pc_region *r, struct claimed *c,
			     unsigned count, char *buf)
{
	struct install_ctx ic = { .r = r, .wake = true, .handler = true, .scratch = buf };
	uint64_t first[MSG_BATCH] = { 0 }, n[MSG_BATCH] = { 0 };
	for (unsigned i = 0; i < count; i++) {
		first[i] = c[i].first;
		n[i] = c[i].n;
	}
	ic.slot = c[0].slot;
	char *data;
	int ret = fetch_batch(&ic, count, first, n, buf, &data);
	for (unsigned i = 0; i < count; i++) {
		if (ret == 0) {
			ic.slot = c[i].slot;
			ret = install_run(&ic, c[i].first, c[i].n, data,
					  ORIGIN_DEMAND);
			/* An event of the owner's came first: read it, then
			 * install again (its pages may be removed now). */
			if (ret == -EAGAIN)
				ret = install_again(&ic, c[i].first, c[i].n, data,
						    ORIGIN_DEMAND, wait_mode_read_events);
			if (ret == 0)
				record(c[i].slot, c[i].t0);
		} else {
			release_pages(r, c[i].first, c[i].n);
		}
		if (data)
			data += c[i].n * r->page_size;
	}
	return ret;
}

/*
 * Serve a batch of fault messages in three steps: claim every faulting
 * page (and its window), fetch all their data in pipelined requests (a
 * network source sends them all before it waits for the first answer, so
 * one round trip does not serialize the next fault), then install each
 * and wake its sleeper.  The latency recorded is the handler's service
 * time, from the batch read to the page installed, not the time the
 * sleeper spent in the queue before that.
 */
static void serve_batch(struct reader *rd, const struct uffd_msg *msgs,
			size_t count, char *buf)
{
	struct pc_region *r = rd->r;
	struct claimed c[MSG_BATCH];
	unsigned nc = 0;
	uint64_t bytes = 0, t0 = now_ns();

	for (size_t i = 0; i < count; i++) {
		const struct uffd_msg *m = &msgs[i];
		if (m->event != UFFD_EVENT_PAGEFAULT) /* REMOVE: read_batch */
			continue;
		struct install_ctx ic = {
			.r = r,
			.slot = region_slot_by_tid(r, (int32_t)m->arg.pagefault.feat.ptid),
			.wake = true,
			.handler = true,
		};
		uintptr_t addr = (uintptr_t)m->arg.pagefault.address;
		uint64_t page = addr_page(r, addr);
		if (page == r->npages) { /* registered by an owner, not ours */
			fail(r, -EFAULT, page);
			continue;
		}
		/* Count before installing: the install may complete the
		 * region and let the caller read final stats. */
		atomic_fetch_add_explicit(&ic.slot->faults, 1, memory_order_relaxed);
		uint64_t first, n;
		int ret = claim_fault(&ic, page, &first, &n);
		while (ret == -EAGAIN) { /* an owner's event first (above) */
			wait_mode_read_events(r);
			ret = claim_fault(&ic, page, &first, &n);
		}
		if (ret == 0)
			record(ic.slot, t0);
		if (ret < 0)
			fail(r, ret, page);
		if (ret == RESOLVE_SKIPPED)
			defer(rd, r, page);
		if (ret != RESOLVE_CLAIMED)
			continue;
		/* The buffer holds 2 MiB: fetch what it has first. */
		if (bytes + n * r->page_size > PC_MAX_RUN_BYTES) {
			ret = fetch_and_install(r, c, nc, buf);
			if (ret < 0)
				fail(r, ret, c[0].first);
			nc = 0;
			bytes = 0;
		}
		c[nc++] = (struct claimed){ first, n, ic.slot, t0 };
		bytes += n * r->page_size;
	}
	if (nc) {
		int ret = fetch_and_install(r, c, nc, buf);
		if (ret < 0)
			fail(r, ret, c[0].first);
	}
}

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	struct pc_region *r = rd->r;
	struct uffd_msg msgs[MSG_BATCH];
	char *scratch = malloc(PC_MAX_RUN_BYTES);
	struct uffd_msg backlog[BACKLOG];

	this_reader = rd;
	while (scratch && !region_finished(r)) {
		struct epoll_event ev[2];
		/* Deferred faults: look again every millisecond. */
		int n = epoll_wait(rd->epfd, ev, 2, rd->ndeferred ? 1 : -1);
		if (n < 0 && errno != EINTR)
			break;
		wake_deferred(rd, r, false);
		/* Counted inside while serving, so that pc_region_wait(),
		 * woken by the install of the last page, returns only once
		 * that page's fault is counted in the stats. */
		struct region_entry e;
		bool inside = region_enter_direct(r, &e) == 0;
		for (;;) {
			ssize_t got = read_batch(r, rd->uffd, msgs, sizeof(msgs));
			if (got <= 0)
				break; /* EAGAIN: drained */
			serve_batch(rd, msgs, (size_t)got / sizeof(msgs[0]),
				    scratch);
			while (rd->nbacklog) { /* what draining events read */
				size_t k = rd->nbacklog;
				memcpy(backlog, rd->backlog, k * sizeof(backlog[0]));
				rd->nbacklog = 0;
				for (size_t i = 0; i < k; i += MSG_BATCH)
					serve_batch(rd, backlog + i,
						    k - i < MSG_BATCH ? k - i : MSG_BATCH,
						    scratch);
			}
		}
		if (inside)
			region_leave(&e);
	}
	if (!scratch)
		region_fail(r, -ENOMEM);
	wake_deferred(rd, r, true); /* complete (or failed): nothing in flight */
	free(scratch);
	close(rd->epfd);
	free(rd);
	return NULL;
}

static int start_reader(struct pc_region *r, int uffd, pthread_t *tid)
{
	struct reader *rd = calloc(1, sizeof(*rd));
	if (!rd)
		return -ENOMEM;
	rd->r = r;
	rd->uffd = uffd;
	rd->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (rd->epfd < 0)
		goto err;
	struct epoll_event fault_ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	struct epoll_event stop_ev = { .events = EPOLLIN };
	if (epoll_ctl(rd->epfd, EPOLL_CTL_ADD, uffd, &fault_ev) < 0 ||
	    epoll_ctl(rd->epfd, EPOLL_CTL_ADD, r->feed.stop_fd, &stop_ev) < 0)
		goto err;
	int ret = pthread_create(tid, NULL, reader_main, rd);
	if (ret) {
		errno = ret;
		goto err;
	}
	return 0;
err:;
	int err = -errno;
	if (rd->epfd >= 0)
		close(rd->epfd);
	free(rd);
	return err;
}

int wait_mode_start(struct pc_region *r)
{
	unsigned total = r->mem.nslices * r->opts.readers;
	r->feed.handlers = calloc(total, sizeof(*r->feed.handlers));
	if (!r->feed.handlers)
		return -ENOMEM;
	for (unsigned i = 0; i < r->mem.nslices; i++) {
		for (unsigned k = 0; k < r->opts.readers; k++) {
			int ret = start_reader(r, r->mem.slices[i].fd,
					       &r->feed.handlers[r->feed.nhandlers]);
			if (ret < 0)
				return ret;
			r->feed.nhandlers++;
		}
	}
	return 0;
}

void wait_mode_stop(struct pc_region *r)
{
	for (unsigned i = 0; i < r->feed.nhandlers; i++)
		pthread_join(r->feed.handlers[i], NULL);
	free(r->feed.handlers);
	r->feed.handlers = NULL;
	r->feed.nhandlers = 0;
}
