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

struct reader {
	struct pc_region *r;
	int uffd;
	int epfd;
};

/*
 * Serve one fault message.  The latency recorded here is the handler's
 * service time (message read to page installed), not the time the
 * faulting thread slept, which also includes its wait in the queue.
 */
static void serve(struct pc_region *r, const struct uffd_msg *m,
		  void *scratch, size_t scratch_len)
{
	if (m->event != UFFD_EVENT_PAGEFAULT)
		return;
	uint64_t t0 = now_ns();
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address;
	struct install_ctx ic = {
		.r = r,
		.slot = region_slot_by_tid(r, (int32_t)m->arg.pagefault.feat.ptid),
		.wake = true,
		.scratch = scratch,
		.scratch_len = scratch_len,
	};
	uint64_t page = (addr - (uintptr_t)r->guest) / r->page_size;
	/* Count before installing: the install may complete the region and
	 * let the caller read final stats. */
	atomic_fetch_add_explicit(&ic.slot->faults, 1, memory_order_relaxed);
	int ret = resolve_page(&ic, page);
	if (ret == RESOLVE_SKIPPED)
		return; /* no service time of ours to record */
	if (ret < 0) {
		region_set_error(r, ret, "fetching page %llu for a fault: %s",
				 (unsigned long long)page, strerror(-ret));
		region_fail(r, ret);
		return;
	}
	uint64_t dt = now_ns() - t0;
	atomic_fetch_add_explicit(&ic.slot->blocked_ns, dt,
				  memory_order_relaxed);
	hist_record(&ic.slot->latency, dt);
}

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	struct pc_region *r = rd->r;
	struct uffd_msg msgs[MSG_BATCH];
	void *scratch = malloc(PC_MAX_RUN_BYTES);
	size_t scratch_len = scratch ? PC_MAX_RUN_BYTES : 0;

	while (scratch && !atomic_load(&r->stopping) &&
	       atomic_load(&r->done) != 1) {
		struct epoll_event ev[2];
		int n = epoll_wait(rd->epfd, ev, 2, -1);
		if (n < 0 && errno != EINTR)
			break;
		for (;;) {
			ssize_t got = read(rd->uffd, msgs, sizeof(msgs));
			if (got <= 0)
				break; /* EAGAIN: drained */
			for (size_t i = 0; i < (size_t)got / sizeof(msgs[0]); i++)
				serve(r, &msgs[i], scratch, scratch_len);
		}
	}
	if (!scratch)
		region_fail(r, -ENOMEM);
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
	    epoll_ctl(rd->epfd, EPOLL_CTL_ADD, r->stop_fd, &stop_ev) < 0)
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
	unsigned total = r->nslices * r->opts.readers;
	r->handlers = calloc(total, sizeof(*r->handlers));
	if (!r->handlers)
		return -ENOMEM;
	for (unsigned i = 0; i < r->nslices; i++) {
		for (unsigned k = 0; k < r->opts.readers; k++) {
			int ret = start_reader(r, r->slices[i].fd,
					       &r->handlers[r->nhandlers]);
			if (ret < 0)
				return ret;
			r->nhandlers++;
		}
	}
	return 0;
}

void wait_mode_stop(struct pc_region *r)
{
	for (unsigned i = 0; i < r->nhandlers; i++)
		pthread_join(r->handlers[i], NULL);
	free(r->handlers);
	r->handlers = NULL;
	r->nhandlers = 0;
}
