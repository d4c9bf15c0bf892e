/* SPDX-License-Identifier: MIT */
/*
 * fault_exit.c - the exit path: a faulting thread resolves its own fault.
 *
 * The userfaultfd of an exit-mode region has UFFD_FEATURE_SIGBUS, so the
 * kernel never queues a fault: the faulting thread gets SIGBUS with the
 * address, and this handler, on that same thread, claims the page, fetches
 * it, installs it with DONTWAKE (nobody sleeps on it) and returns; the
 * access is retried and succeeds.  pc_resolve() is the same code for a VMM
 * whose vCPU thread learned the address from KVM_EXIT_MEMORY_FAULT.  A page
 * that cannot be fetched fails the region and parks the thread in the
 * handler (postcopy.h, WHEN A PAGE CANNOT BE HAD).
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
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"


/*
 * The registry keeps each region's bounds beside its pointer, so a lookup
 * for one region never reads another region's struct (which a concurrent
 * pc_region_destroy() may be freeing).  A slot's bounds are written before
 * its pointer is published and stay until the slot is reused.
 */
static struct registry_slot {
	_Atomic(struct pc_region *) region;
	_Atomic uintptr_t base;
	_Atomic uint64_t size;
} registry[PC_MAX_REGIONS];
static _Atomic(struct pc_region *) registry_claim[PC_MAX_REGIONS];
static struct sigaction previous_action;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_error;

int registry_add(struct pc_region *r)
{
	for (unsigned i = 0; i < PC_MAX_REGIONS; i++) {
		struct pc_region *empty = NULL;
		if (!atomic_compare_exchange_strong(&registry_claim[i], &empty,
						    r))
			continue;
		atomic_store(&registry[i].base, (uintptr_t)r->guest);
		atomic_store(&registry[i].size, r->opts.size);
		atomic_store_explicit(&registry[i].region, r,
				      memory_order_release);
		return 0;
	}
	return -ENOSPC;
}

void registry_remove(struct pc_region *r)
{
	for (unsigned i = 0; i < PC_MAX_REGIONS; i++) {
		if (atomic_load(&registry_claim[i]) != r)
			continue;
		atomic_store(&registry[i].region, NULL);
		atomic_store(&registry_claim[i], NULL);
	}
}

struct pc_region *region_lookup(const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	for (unsigned i = 0; i < PC_MAX_REGIONS; i++) {
		struct pc_region *r = atomic_load_explicit(
			&registry[i].region, memory_order_acquire);
		if (!r)
			continue;
		uintptr_t base = atomic_load_explicit(&registry[i].base,
						      memory_order_relaxed);
		uint64_t size = atomic_load_explicit(&registry[i].size,
						     memory_order_relaxed);
		if (a >= base && a - base < size && len <= size - (a - base))
			return r;
	}
	return NULL;
}

/* Count, time and resolve one fault on the calling thread. */
static int resolve_counted(const struct install_ctx *ic, uint64_t page)
{
	uint64_t t0 = now_ns();
	atomic_fetch_add_explicit(&ic->slot->faults, 1, memory_order_relaxed);
	int ret = resolve_page(ic, page);
	uint64_t dt = now_ns() - t0;
	atomic_fetch_add_explicit(&ic->slot->blocked_ns, dt,
				  memory_order_relaxed);
	hist_record(&ic->slot->latency, dt);
	return ret;
}

/*
 * Resolve on the calling thread.  Backends that write straight into the
 * alias need no bounce buffer; the others take 64 KiB of this thread's
 * stack, and only they do.
 */
static int resolve_here(struct pc_region *r, void *addr)
{
	size_t scratch_len = r->write_direct ? 0 : PC_STACK_SCRATCH;
	char scratch[scratch_len ? scratch_len : 1] __attribute__((aligned(64)));
	struct install_ctx ic = {
		.r = r,
		.slot = region_current_slot(r),
		.wake = r->opts.mode == PC_MODE_WAIT,
		.scratch = scratch,
		.scratch_len = scratch_len,
	};
	uint64_t page = ((uintptr_t)addr - (uintptr_t)r->guest) / r->page_size;
	return resolve_counted(&ic, page);
}

static void fail_from_handler(struct pc_region *r, void *addr, int err);

int pc_resolve(void *addr)
{
	struct pc_region *r = region_lookup(addr, 1);
	if (!r)
		return -EFAULT;
	int ret = resolve_here(r, addr);
	if (ret < 0)
		fail_from_handler(r, addr, ret);
	return ret;
}

/* Synchronous faults repeat when the access is retried. */
static bool fault_repeats(const siginfo_t *si)
{
	return si->si_code == BUS_ADRALN || si->si_code == BUS_ADRERR ||
	       si->si_code == BUS_OBJERR || si->si_code == BUS_MCEERR_AR;
}

/* Whatever SIGBUS would have done had we never been installed. */
static void foreign_sigbus(int sig, siginfo_t *si, void *uc)
{
	if (previous_action.sa_flags & SA_SIGINFO) {
		previous_action.sa_sigaction(sig, si, uc);
		return;
	}
	if (previous_action.sa_handler == SIG_IGN && si->si_code <= 0)
		return; /* an ignored signal sent by someone: ignore it */
	if (previous_action.sa_handler != SIG_DFL &&
	    previous_action.sa_handler != SIG_IGN) {
		previous_action.sa_handler(sig);
		return;
	}
	/* The default action: terminate with SIGBUS (and core).  A fault
	 * that repeats does it when we return; anything else is raised
	 * again, pending until we return. */
	signal(SIGBUS, SIG_DFL);
	if (!fault_repeats(si))
		raise(SIGBUS);
}

static void say(const char *s)
{
	if (write(STDERR_FILENO, s, strlen(s)) < 0) {
		/* Nothing left to tell it to. */
	}
}

/* Append @s to @buf (of @len, kept NUL-terminated) at *@at; no stdio. */
static void put_str(char *buf, size_t len, size_t *at, const char *s)
{
	while (*s && *at + 1 < len)
		buf[(*at)++] = *s++;
	buf[*at] = '\0';
}

static void put_u64(char *buf, size_t len, size_t *at, uint64_t v)
{
	char digits[21];
	int i = (int)sizeof(digits) - 1;
	digits[i] = '\0';
	do {
		digits[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put_str(buf, len, at, digits + i);
}

/*
 * The region's reason, as wait mode words it, built without stdio or
 * locale: strerrordesc_np() is a lookup in a constant table, unlike
 * strerror(), which may translate.
 */
static void fail_from_handler(struct pc_region *r, void *addr, int err)
{
	char msg[160];
	size_t at = 0;
	uint64_t page = ((uintptr_t)addr - (uintptr_t)r->guest) / r->page_size;
	const char *desc = strerrordesc_np(-err);
	put_str(msg, sizeof(msg), &at, "fetching page ");
	put_u64(msg, sizeof(msg), &at, page);
	put_str(msg, sizeof(msg), &at, " for a faulting thread: ");
	put_str(msg, sizeof(msg), &at, desc ? desc : "unknown error");
	region_set_error_str(r, err, msg);
	region_fail(r, err);
}

/*
 * Where a thread whose page cannot be had waits for the process to end: a
 * futex word nobody ever changes (not the region's, so that a destroyed
 * region is never touched again).  The access is never retried, so the
 * thread never runs on over a missing page.
 */
static _Atomic uint32_t parked;

static void __attribute__((noreturn)) park_forever(void)
{
	for (;;)
		syscall(SYS_futex, &parked, FUTEX_WAIT_PRIVATE, 0, NULL, NULL,
			0);
}

static void sigbus_handler(int sig, siginfo_t *si, void *uc)
{
	int saved_errno = errno;
	struct pc_region *r = si->si_code == BUS_ADRERR ?
				      region_lookup(si->si_addr, 1) :
				      NULL;
	if (!r) {
		foreign_sigbus(sig, si, uc);
	} else {
		int ret = resolve_here(r, si->si_addr);
		if (ret < 0) {
			/* The page cannot be had (the source has retried
			 * what it could): fail the region, so that whoever
			 * waits on it hears why, and never return to the
			 * access.  The embedder's choice: park this thread
			 * (the default), or die the way an unhandled SIGBUS
			 * does. */
			bool die = r->opts.sigbus_on_failure;
			fail_from_handler(r, si->si_addr, ret);
			if (!die)
				park_forever();
			say("postcopy: cannot fetch a missing guest page; terminating\n");
			signal(SIGBUS, SIG_DFL);
		}
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

/* Exit mode: install what is missing of [first, end) in runs, and wait
 * for what other threads have in flight. */
static int populate_missing(struct pc_region *r, uint64_t first, uint64_t end)
{
	char scratch[PC_STACK_SCRATCH] __attribute__((aligned(64)));
	struct install_ctx ic = {
		.r = r,
		.slot = region_current_slot(r),
		.scratch = scratch,
		.scratch_len = sizeof(scratch),
	};
	uint64_t max_run = PC_MAX_RUN_BYTES / r->page_size;

	for (uint64_t p = first; p < end;) {
		uint32_t s = atomic_load(&r->state[p]);
		if (s & PAGE_INFLIGHT)
			s = page_wait(r, p);
		if (s == PAGE_PRESENT) {
			p++;
			continue;
		}
		if (!page_try_claim(r, p))
			continue; /* lost a race: look at it again */
		uint64_t hi = end - p > max_run ? p + max_run : end;
		uint64_t run, n;
		claim_around(r, p, p, hi, &run, &n);
		int ret = install_run(&ic, run, n, NULL, ORIGIN_DEMAND);
		if (ret < 0)
			return ret;
		p = run + n;
	}
	return 0;
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
	if (r->opts.mode == PC_MODE_WAIT || region_all_present(r))
		return madvise(start, span, MADV_POPULATE_WRITE) < 0 ? -errno :
								       0;
	int ret = populate_missing(r, first, end);
	if (ret < 0) {
		region_fail(r, ret);
		return ret;
	}
	/* Everything is present; map whatever lost its mapping. */
	if (madvise(start, span, MADV_POPULATE_WRITE) == 0)
		return 0;
	for (uint64_t p = first; p < end; p++) {
		ret = resolve_here(r, r->guest + p * r->page_size);
		if (ret < 0)
			return ret;
	}
	return 0;
}
