/* SPDX-License-Identifier: MIT */
/*
 * test_sigbus_contract - what an embedder may rely on about the exit-mode
 * SIGBUS handler (postcopy.h, THE SIGBUS CONTRACT).  Each case runs in a
 * forked child, since signal dispositions are process wide, and every
 * byte the child's threads read is compared with the source:
 *  - a thread with a 64 KiB stack, and one with a 16 KiB alternate signal
 *    stack, resolve their faults (no bounce buffer on the signal stack);
 *  - with sigbus_chained the library installs nothing, and the embedder's
 *    handler resolves the faults through pc_sigbus_handle() and still
 *    sees the SIGBUS that are not the pager's;
 *  - a handler the embedder installs after start is put behind the
 *    library's by pc_sigbus_install(), and gets the foreign SIGBUS with
 *    its own sa_mask in force;
 *  - with sigbus_on_failure, pc_sigbus_handle() returns false for a page
 *    that cannot be had, and the embedder decides;
 *  - the flags of the handler the library chains to are honoured as the
 *    kernel would: SA_NODEFER leaves SIGBUS unblocked in it (without it,
 *    SIGBUS is blocked), and SA_RESETHAND runs it once, the next foreign
 *    SIGBUS taking the default action (the child dies of it), while the
 *    pager goes on resolving faults in between.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "postcopy.h"
#include "tap.h"

#define SIZE (4 * MIB)

enum { CHILD_OK = 0, CHILD_SETUP = 2, CHILD_BAD_DATA = 3, CHILD_NO_FOREIGN = 4,
       CHILD_MASK = 5, CHILD_INSTALLED = 6, CHILD_SIGBUS_BLOCKED = 7,
       CHILD_SIGBUS_UNBLOCKED = 8, CHILD_RESET_IGNORED = 9, CHILD_DECIDED = 42 };

static pc_source *ref;
static _Atomic int foreign_seen;
static _Atomic int mask_held;
/* Calls of the previous handler, shared with the parent: a child that a
 * SIGBUS ends cannot say so by its exit status. */
static _Atomic int *prev_calls;
static _Atomic int prev_sigbus_blocked, prev_usr1_blocked;

static pc_region *region(enum pc_backend b, bool chained, bool die, int64_t bad_page,
			 struct counting_src *cs)
{
	pc_source *src;
	pc_region *r;
	if (bad_page >= 0) {
		if (counting_new(cs, SIZE, 3, &src))
			_exit(CHILD_SETUP);
		atomic_store(&cs->fail_page, bad_page);
	} else if (pc_source_pattern(SIZE, 3, &src)) {
		_exit(CHILD_SETUP);
	}
	struct pc_region_opts o = { .size = SIZE, .backend = b,
				    .sigbus_chained = chained,
				    .sigbus_on_failure = die };
	if (pc_region_create(&o, src, &r, NULL, 0) || pc_region_start(r))
		_exit(CHILD_SETUP);
	return r;
}

/* Read every page of @r on the calling thread and compare it. */
static bool read_all(pc_region *r)
{
	return verify_mem(pc_region_addr(r), SIZE, ref, NULL, NULL) == 0;
}

struct reader {
	pc_region *r;
	size_t altstack; /* bytes of alternate signal stack, or 0 */
	bool good;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	void *alt = NULL;
	if (rd->altstack) {
		alt = malloc(rd->altstack);
		stack_t ss = { .ss_sp = alt, .ss_size = rd->altstack };
		if (!alt || sigaltstack(&ss, NULL))
			return NULL;
	}
	pc_thread_attach(rd->r, 0);
	/* verify_mem's own page buffer is malloc'ed: the stack holds little. */
	rd->good = read_all(rd->r);
	if (alt) {
		stack_t off = { .ss_flags = SS_DISABLE };
		sigaltstack(&off, NULL);
		free(alt);
	}
	return NULL;
}

static int small_stack(enum pc_backend b, size_t altstack)
{
	pc_region *r = region(b, false, false, -1, NULL);
	struct reader rd = { r, altstack, false };
	pthread_attr_t a;
	pthread_t t;
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, 64 * KIB);
	if (pthread_create(&t, &a, reader_main, &rd))
		return CHILD_SETUP;
	pthread_join(t, NULL);
	return rd.good ? CHILD_OK : CHILD_BAD_DATA;
}

static void embedder_handler(int sig, siginfo_t *si, void *uc)
{
	if (pc_sigbus_handle(sig, si, uc))
		return;
	sigset_t now;
	pthread_sigmask(SIG_BLOCK, NULL, &now);
	if (sigismember(&now, SIGUSR1))
		atomic_store(&mask_held, 1);
	if (si->si_code == BUS_ADRERR) /* a page the pager could not have */
		_exit(CHILD_DECIDED);
	atomic_fetch_add(&foreign_seen, 1);
}

static void install_embedder(void)
{
	struct sigaction sa = { .sa_sigaction = embedder_handler,
				.sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR1);
	if (sigaction(SIGBUS, &sa, NULL))
		_exit(CHILD_SETUP);
}

static bool embedder_installed(void)
{
	struct sigaction cur;
	sigaction(SIGBUS, NULL, &cur);
	return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == embedder_handler;
}

static int chained(enum pc_backend b)
{
	install_embedder();
	pc_region *r = region(b, true, false, -1, NULL);
	if (!embedder_installed())
		return CHILD_INSTALLED; /* the library replaced it */
	if (!read_all(r))
		return CHILD_BAD_DATA;
	kill(getpid(), SIGBUS);
	return atomic_load(&foreign_seen) == 1 ? CHILD_OK : CHILD_NO_FOREIGN;
}

static int installed_later(enum pc_backend b)
{
	pc_region *r = region(b, false, false, -1, NULL);
	install_embedder(); /* replaces the library's */
	if (pc_sigbus_install())
		return CHILD_SETUP;
	if (embedder_installed())
		return CHILD_INSTALLED; /* the library's is not in front */
	if (!read_all(r))
		return CHILD_BAD_DATA;
	kill(getpid(), SIGBUS);
	if (atomic_load(&foreign_seen) != 1)
		return CHILD_NO_FOREIGN;
	return atomic_load(&mask_held) ? CHILD_OK : CHILD_MASK;
}

static int decides(enum pc_backend b)
{
	struct counting_src cs;
	install_embedder();
	pc_region *r = region(b, true, true, 5, &cs);
	(void)*(volatile char *)((char *)pc_region_addr(r) + 5 * SRC_PAGE);
	return CHILD_OK; /* ran on over a page that never came */
}

/* @want: the child's exit status, or minus the signal it must die of. */
static void run(const char *name, enum pc_backend b, int (*fn)(enum pc_backend),
		int want)
{
	atomic_store(prev_calls, 0);
	pid_t pid = fork_or_bail();
	if (pid == 0)
		_exit(fn(b));
	int st = wait_child(pid);
	bool good = want >= 0 ? WIFEXITED(st) && WEXITSTATUS(st) == want :
				WIFSIGNALED(st) && WTERMSIG(st) == -want;
	if (!ok(good, "%s_%s", backend_name(b), name)) {
		if (WIFSIGNALED(st))
			diag("child killed by signal %d", WTERMSIG(st));
		else
			diag("child exit %d", WEXITSTATUS(st));
		if (want >= 0)
			diag("want exit %d", want);
		else
			diag("want death by signal %d", -want);
		diag("previous handler called %d times", atomic_load(prev_calls));
	}
}

static void previous_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)si, (void)uc;
	sigset_t now;
	pthread_sigmask(SIG_BLOCK, NULL, &now);
	atomic_store(&prev_sigbus_blocked, sigismember(&now, SIGBUS));
	atomic_store(&prev_usr1_blocked, sigismember(&now, SIGUSR1));
	atomic_fetch_add(prev_calls, 1);
}

/* A handler with @flags installed before the region starts, so the
 * library's goes in front of it; one foreign SIGBUS after every page was
 * read through the pager. */
static pc_region *behind_the_library(enum pc_backend b, int flags)
{
	struct sigaction sa = { .sa_sigaction = previous_handler,
				.sa_flags = SA_SIGINFO | flags };
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR1);
	if (sigaction(SIGBUS, &sa, NULL))
		_exit(CHILD_SETUP);
	pc_region *r = region(b, false, false, -1, NULL);
	if (!read_all(r))
		_exit(CHILD_BAD_DATA);
	kill(getpid(), SIGBUS);
	if (atomic_load(prev_calls) != 1)
		_exit(CHILD_NO_FOREIGN);
	if (!atomic_load(&prev_usr1_blocked))
		_exit(CHILD_MASK);
	return r;
}

static int nodefer(enum pc_backend b)
{
	behind_the_library(b, SA_NODEFER);
	return atomic_load(&prev_sigbus_blocked) ? CHILD_SIGBUS_BLOCKED : CHILD_OK;
}

static int deferred(enum pc_backend b)
{
	behind_the_library(b, 0);
	return atomic_load(&prev_sigbus_blocked) ? CHILD_OK : CHILD_SIGBUS_UNBLOCKED;
}

/* Must not return: the second foreign SIGBUS takes the default action. */
static int resethand(enum pc_backend b)
{
	pc_region *r = behind_the_library(b, SA_RESETHAND);
	(void)r;
	/* The pager still resolves faults: a second region, read in full. */
	if (!read_all(region(b, false, false, -1, NULL)))
		return CHILD_BAD_DATA;
	kill(getpid(), SIGBUS);
	return CHILD_RESET_IGNORED;
}

static int stack_64k(enum pc_backend b) { return small_stack(b, 0); }
static int altstack_16k(enum pc_backend b) { return small_stack(b, 16 * KIB); }

int main(void)
{
	static const enum pc_backend backends[] = { PC_BACKEND_SHMEM, PC_BACKEND_ANON };
	plan(13);
	tap_watchdog(300);
	if (pc_source_pattern(SIZE, 3, &ref))
		bail_out("pc_source_pattern");
	prev_calls = mmap(NULL, sizeof(*prev_calls), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (prev_calls == MAP_FAILED)
		bail_out("mmap");
	for (unsigned i = 0; i < 2; i++) {
		enum pc_backend b = backends[i];
		run("thread_with_64k_stack_resolves_its_faults", b, stack_64k, CHILD_OK);
		run("thread_on_16k_alternate_signal_stack_resolves_its_faults", b,
		    altstack_16k, CHILD_OK);
		run("chained_handler_resolves_faults_and_sees_foreign_sigbus", b,
		    chained, CHILD_OK);
		run("handler_installed_later_goes_behind_the_librarys_with_its_mask",
		    b, installed_later, CHILD_OK);
		run("chained_handler_decides_when_a_page_cannot_be_had", b, decides,
		    CHILD_DECIDED);
	}
	/* Flags are the library's business, not the backend's: once. */
	run("previous_handler_with_sa_nodefer_runs_with_sigbus_unblocked",
	    PC_BACKEND_SHMEM, nodefer, CHILD_OK);
	run("previous_handler_without_sa_nodefer_runs_with_sigbus_blocked",
	    PC_BACKEND_SHMEM, deferred, CHILD_OK);
	run("previous_handler_with_sa_resethand_runs_once_then_sigbus_kills",
	    PC_BACKEND_SHMEM, resethand, -SIGBUS);
	pc_source_destroy(ref);
	return done();
}
