/* SPDX-License-Identifier: MIT */
/*
 * fault_exit.c - the exit path: a faulting thread resolves its own fault.
 *
 * The userfaultfd of an exit-mode region has UFFD_FEATURE_SIGBUS, so the
 * kernel never queues a fault: the faulting thread gets SIGBUS with the
 * address, and this handler, on that same thread, claims the page, fetches
 * it, installs it with DONTWAKE (nobody sleeps on it) and returns; the
 * access is retried and succeeds.  pc_resolve() is the same code for a VMM
 * whose vCPU thread learned the address from KVM_EXIT_MEMORY_FAULT.
 *
 * Why this is async-signal-safe: the handler reads the region registry
 * with atomic loads, reads its thread binding from initial-exec TLS, and
 * then calls only resolve_page() (install.c: atomics, futex, pwrite,
 * fallocate, madvise and userfaultfd ioctls, all raw system calls) and the
 * source's fetch, which the API requires to be async-signal-safe.  It
 * saves and restores errno.  Nothing takes a lock, so a thread interrupted
 * anywhere (even inside malloc) can resolve its fault.
 *
 * Global state: the registry and the previous SIGBUS action are process
 * wide because a signal handler is; nothing else here is.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static _Atomic(struct pc_region *) registry[PC_MAX_REGIONS];
static struct sigaction previous_action;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_error;

int registry_add(struct pc_region *r)
{
	for (unsigned i = 0; i < PC_MAX_REGIONS; i++) {
		struct pc_region *empty = NULL;
		if (atomic_compare_exchange_strong(&registry[i], &empty, r))
			return 0;
	}
	return -ENOSPC;
}

void registry_remove(struct pc_region *r)
{
	for (unsigned i = 0; i < PC_MAX_REGIONS; i++) {
		struct pc_region *self = r;
		atomic_compare_exchange_strong(&registry[i], &self, NULL);
	}
}

struct pc_region *region_lookup(const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	for (unsigned i = 0; i < PC_MAX_REGIONS; i++) {
		struct pc_region *r = atomic_load_explicit(
			&registry[i], memory_order_acquire);
		if (!r)
			continue;
		uintptr_t base = (uintptr_t)r->guest;
		if (a >= base && a - base < r->opts.size &&
		    len <= r->opts.size - (a - base))
			return r;
	}
	return NULL;
}

/* Resolve on the calling thread with a bounce buffer on its stack. */
static int resolve_here(struct pc_region *r, void *addr)
{
	char scratch[PC_STACK_SCRATCH] __attribute__((aligned(64)));
	struct install_ctx ic = {
		.r = r,
		.slot = region_current_slot(r),
		.wake = r->opts.mode == PC_MODE_WAIT,
		.scratch = scratch,
		.scratch_len = sizeof(scratch),
	};
	uint64_t t0 = now_ns();
	uint64_t page = ((uintptr_t)addr - (uintptr_t)r->guest) / r->page_size;
	atomic_fetch_add_explicit(&ic.slot->faults, 1, memory_order_relaxed);
	int ret = resolve_page(&ic, page);
	uint64_t dt = now_ns() - t0;

	atomic_fetch_add_explicit(&ic.slot->blocked_ns, dt,
				  memory_order_relaxed);
	hist_record(&ic.slot->latency, dt);
	return ret;
}

int pc_resolve(void *addr)
{
	struct pc_region *r = region_lookup(addr, 1);
	if (!r)
		return -EFAULT;
	int ret = resolve_here(r, addr);
	if (ret < 0)
		region_fail(r, ret);
	return ret;
}

/* The default action of SIGBUS, as if we had never been installed. */
static void foreign_sigbus(int sig, siginfo_t *si, void *uc)
{
	if (previous_action.sa_flags & SA_SIGINFO) {
		previous_action.sa_sigaction(sig, si, uc);
		return;
	}
	if (previous_action.sa_handler != SIG_DFL &&
	    previous_action.sa_handler != SIG_IGN) {
		previous_action.sa_handler(sig);
		return;
	}
	/* Restore the default and let the kernel kill us with the usual
	 * status (and core): a hardware fault repeats when the access is
	 * retried on return; a sent signal is raised again (it stays
	 * blocked until we return). */
	signal(SIGBUS, SIG_DFL);
	if (si->si_code <= 0)
		raise(SIGBUS);
}

static void say(const char *s)
{
	if (write(STDERR_FILENO, s, strlen(s)) < 0) {
		/* Nothing left to tell it to. */
	}
}

static void sigbus_handler(int sig, siginfo_t *si, void *uc)
{
	int saved_errno = errno;
	struct pc_region *r = si->si_code == BUS_ADRERR ?
				      region_lookup(si->si_addr, 1) :
				      NULL;
	if (!r) {
		foreign_sigbus(sig, si, uc);
	} else if (resolve_here(r, si->si_addr) < 0) {
		/* The page cannot be had: the thread must not run on with
		 * a missing page, so die the way an unhandled SIGBUS does. */
		say("postcopy: cannot fetch a missing guest page; terminating\n");
		region_fail(r, -EIO);
		signal(SIGBUS, SIG_DFL);
	}
	errno = saved_errno;
}

static void install_once(void)
{
	struct sigaction sa = {
		.sa_sigaction = sigbus_handler,
		.sa_flags = SA_SIGINFO | SA_RESTART,
	};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &previous_action) < 0)
		handler_error = -errno;
}

int exit_mode_install_handler(void)
{
	pthread_once(&handler_once, install_once);
	return handler_error;
}

int pc_populate(void *addr, size_t len)
{
	if (!len)
		return 0;
	struct pc_region *r = region_lookup(addr, len);
	if (!r)
		return -EFAULT;
	uint64_t first = ((uintptr_t)addr - (uintptr_t)r->guest) / r->page_size;
	uint64_t end = ((uintptr_t)addr + len - (uintptr_t)r->guest +
			r->page_size - 1) / r->page_size;
	char *start = r->guest + first * r->page_size;
	size_t span = (end - first) * r->page_size;

	/* Wait mode: the kernel's own faults are served by handler threads. */
	if (r->opts.mode == PC_MODE_WAIT || atomic_load(&r->done) == 1)
		return madvise(start, span, MADV_POPULATE_WRITE) < 0 ? -errno :
								       0;

	/* Exit mode: install what is missing in runs, wait for what is in
	 * flight, then map what is present but unmapped. */
	char scratch[PC_STACK_SCRATCH] __attribute__((aligned(64)));
	struct install_ctx ic = {
		.r = r,
		.slot = region_current_slot(r),
		.scratch = scratch,
		.scratch_len = sizeof(scratch),
	};
	for (uint64_t p = first; p < end; p++) {
		uint32_t s = atomic_load(&r->state[p]);
		if (s & PAGE_INFLIGHT)
			s = page_wait(r, p);
		if (s != PAGE_MISSING || !page_try_claim(r, p)) {
			if (atomic_load(&r->state[p]) != PAGE_PRESENT)
				p--; /* lost a race: look at it again */
			continue;
		}
		uint64_t run_first, n;
		uint64_t hi = end - p > PC_MAX_RUN_BYTES / r->page_size ?
				      p + PC_MAX_RUN_BYTES / r->page_size :
				      end;
		if (hi == p)
			hi = p + 1;
		claim_around(r, p, p, hi, &run_first, &n);
		int ret = install_run(&ic, run_first, n, NULL, ORIGIN_DEMAND);
		if (ret < 0) {
			region_fail(r, ret);
			return ret;
		}
		p = run_first + n - 1;
	}
	if (madvise(start, span, MADV_POPULATE_WRITE) == 0)
		return 0;
	/* Some page lost its mapping: resolve each, which reinstalls. */
	for (uint64_t p = first; p < end; p++) {
		int ret = resolve_here(r, r->guest + p * r->page_size);
		if (ret < 0)
			return ret;
	}
	return 0;
}
