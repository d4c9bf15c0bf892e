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
 * Why this is async-signal-safe: the handler finds the region through the
 * registry (atomics; registry.c), reads its thread binding from
 * initial-exec TLS, takes a bounce buffer allocated beforehand (thread.c),
 * and then calls only resolve_page() (install.c: atomics, futex, pwrite,
 * fallocate, madvise and userfaultfd ioctls, all raw system calls) and the
 * source's fetch, which is async-signal-safe or reached through a fetcher
 * thread by a futex hand-off (fetch.c).  It saves and restores errno.
 * Nothing takes a lock, so a thread interrupted anywhere (even inside
 * malloc) can resolve its fault, and it needs little stack.
 *
 * Global state: the previous SIGBUS action and the lock its replacement
 * takes, process wide because a signal disposition is, and the futex word
 * parked threads sleep on; nothing else here is.
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


static struct sigaction previous_action;

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

/* Whether installs into @r need a bounce buffer (install.c's
 * fetch_and_put): all but a direct source writing into the memory. */
static bool needs_scratch(const struct pc_region *r)
{
	return !memory_direct(r, 0);
}

/* Resolve on the calling thread, which may be in a signal handler. */
static int resolve_here(struct pc_region *r, void *addr)
{
	/* Complete: every page is present, so this is a signal raised
	 * before the last page arrived and delivered after, or a call with
	 * nothing to do.  Not counted: pc_region_wait() waits only for the
	 * threads inside at completion, and what it returns to must see
	 * final stats.  (seq_cst: a thread region_quiesce() did not wait for
	 * entered after the epoch moved, so it sees done.) */
	if (atomic_load(&r->done) == 1)
		return 0;
	struct install_ctx ic = {
		.r = r,
		.slot = region_current_slot(r),
		.wake = r->opts.mode == PC_MODE_WAIT,
		.signal_safe = true,
	};
	_Atomic bool *busy = NULL;
	if (needs_scratch(r))
		ic.scratch = scratch_claim(r, ic.slot, &busy);
	uint64_t page = ((uintptr_t)addr - (uintptr_t)r->mem.guest) / r->page_size;
	int ret = resolve_counted(&ic, page);
	if (busy)
		scratch_release(busy);
	return ret;
}

static void fail_from_handler(struct pc_region *r, void *addr, int err);

int pc_resolve(void *addr)
{
	struct region_entry e;
	struct pc_region *r = region_enter(addr, 1, &e);
	if (!r)
		return -EFAULT;
	int ret = resolve_here(r, addr);
	if (ret < 0)
		fail_from_handler(r, addr, ret);
	region_leave(&e);
	return ret;
}

/* Synchronous faults repeat when the access is retried. */
static bool fault_repeats(const siginfo_t *si)
{
	return si->si_code == BUS_ADRALN || si->si_code == BUS_ADRERR ||
	       si->si_code == BUS_OBJERR || si->si_code == BUS_MCEERR_AR;
}

/*
 * Whatever SIGBUS would have done had we never been installed: the
 * previous handler, run with the mask and flags it asked for, or the
 * default action.
 */
static void foreign_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct sigaction prev = previous_action;
	bool custom = (prev.sa_flags & SA_SIGINFO) ||
		      (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN);
	if (custom) {
		/* The mask the kernel would have given it: the one at
		 * delivery (ours adds SIGBUS, which SA_NODEFER takes off
		 * again) plus its sa_mask. */
		sigset_t mask, old;
		if (uc)
			mask = ((const ucontext_t *)uc)->uc_sigmask;
		else
			pthread_sigmask(SIG_BLOCK, NULL, &mask);
		sigorset(&mask, &mask, &prev.sa_mask);
		if (prev.sa_flags & SA_NODEFER)
			sigdelset(&mask, sig);
		else
			sigaddset(&mask, sig);
		if (prev.sa_flags & SA_RESETHAND) { /* one shot, as asked */
			previous_action.sa_handler = SIG_DFL;
			previous_action.sa_flags &= ~SA_SIGINFO;
		}
		pthread_sigmask(SIG_SETMASK, &mask, &old);
		if (prev.sa_flags & SA_SIGINFO)
			prev.sa_sigaction(sig, si, uc);
		else
			prev.sa_handler(sig);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		return;
	}
	if (prev.sa_handler == SIG_IGN && si->si_code <= 0)
		return; /* an ignored signal sent by someone: ignore it */
	/* The default action: terminate with SIGBUS (and core); the process
	 * is ending, so resetting the disposition harms nobody.  A fault
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
	uint64_t page = ((uintptr_t)addr - (uintptr_t)r->mem.guest) / r->page_size;
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

bool pc_sigbus_handle(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (sig != SIGBUS || si->si_code != BUS_ADRERR)
		return false;
	int saved_errno = errno;
	struct region_entry e;
	struct pc_region *r = region_enter(si->si_addr, 1, &e);
	if (!r) {
		errno = saved_errno;
		return false;
	}
	int ret = resolve_here(r, si->si_addr);
	bool handled = true;
	if (ret < 0) {
		/* The page cannot be had (transient errors were retried):
		 * fail the region, so that whoever waits on it hears why,
		 * and never return to the access.  Park this thread (the
		 * default), or let the signal go on to what would handle it
		 * without us, which by default ends the process. */
		bool die = r->opts.sigbus_on_failure;
		fail_from_handler(r, si->si_addr, ret);
		region_leave(&e); /* a parked thread is not inside */
		if (!die)
			park_forever();
		say("postcopy: cannot fetch a missing guest page\n");
		handled = false;
	} else {
		region_leave(&e);
	}
	errno = saved_errno;
	return handled;
}

static void sigbus_handler(int sig, siginfo_t *si, void *uc)
{
	if (!pc_sigbus_handle(sig, si, uc))
		foreign_sigbus(sig, si, uc);
}

/* Guards previous_action against two threads installing at once. */
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;

int pc_sigbus_install(void)
{
	int ret = 0;
	pthread_mutex_lock(&install_lock);
	struct sigaction cur;
	if (sigaction(SIGBUS, NULL, &cur) < 0) {
		ret = -errno;
	} else if (!((cur.sa_flags & SA_SIGINFO) &&
		     cur.sa_sigaction == sigbus_handler)) {
		/* Not ours (never installed, or replaced since): chain to
		 * whatever is there now.  SA_ONSTACK: a thread with an
		 * alternate signal stack resolves its faults on it. */
		struct sigaction sa = {
			.sa_sigaction = sigbus_handler,
			.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK,
		};
		sigemptyset(&sa.sa_mask);
		previous_action = cur;
		if (sigaction(SIGBUS, &sa, NULL) < 0)
			ret = -errno;
	}
	pthread_mutex_unlock(&install_lock);
	return ret;
}

/* Exit mode: install what is missing of [first, end) in runs, and wait
 * for what other threads have in flight. */
static int populate_missing(struct pc_region *r, uint64_t first, uint64_t end)
{
	struct install_ctx ic = {
		.r = r,
		.slot = region_current_slot(r),
		.signal_safe = true,
	};
	_Atomic bool *busy = NULL;
	if (needs_scratch(r))
		ic.scratch = scratch_claim(r, ic.slot, &busy);
	uint64_t max_run = PC_MAX_RUN_BYTES / r->page_size;
	int ret = 0;

	for (uint64_t p = first; p < end && ret == 0;) {
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
		ret = install_run(&ic, run, n, NULL, ORIGIN_DEMAND);
		p = run + n;
	}
	if (busy)
		scratch_release(busy);
	return ret;
}

/* Map [start, start + span) for the kernel's access in @flags' direction:
 * a read leaves zero pages shared with the zero page. */
static int populate_mapping(char *start, size_t span, unsigned flags)
{
	int advice = flags & PC_POPULATE_WRITE ? MADV_POPULATE_WRITE :
						 MADV_POPULATE_READ;
	return madvise(start, span, advice) < 0 ? -errno : 0;
}

static int populate_in(struct pc_region *r, void *addr, size_t len,
		       unsigned flags)
{
	uint64_t first = ((uintptr_t)addr - (uintptr_t)r->mem.guest) / r->page_size;
	uint64_t end = ((uintptr_t)addr + len - (uintptr_t)r->mem.guest +
			r->page_size - 1) / r->page_size;
	char *start = r->mem.guest + first * r->page_size;
	size_t span = (end - first) * r->page_size;

	/* Wait mode: the kernel's own faults are served by handler threads. */
	if (r->opts.mode == PC_MODE_WAIT || region_all_present(r))
		return populate_mapping(start, span, flags);
	int ret = populate_missing(r, first, end);
	if (ret < 0) {
		region_fail(r, ret);
		return ret;
	}
	/* Everything is present; map whatever lost its mapping. */
	if (populate_mapping(start, span, flags) == 0)
		return 0;
	for (uint64_t p = first; p < end; p++) {
		ret = resolve_here(r, r->mem.guest + p * r->page_size);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int pc_populate(void *addr, size_t len, unsigned flags)
{
	if (flags & ~PC_POPULATE_WRITE)
		return -EINVAL;
	if (!len)
		return 0;
	struct region_entry e;
	struct pc_region *r = region_enter(addr, len, &e);
	if (!r)
		return -EFAULT;
	int ret = populate_in(r, addr, len, flags);
	region_leave(&e);
	return ret;
}
