/* SPDX-License-Identifier: MIT */
/*
 * test_fatal_fetch - what a thread gets when its page cannot be fetched
 * (postcopy.h, WHEN A PAGE CANNOT BE HAD), the same in both modes.
 *
 * Pins, each in a child process of its own (parked threads stay parked):
 *   - exit and wait mode: a thread faulting on a page whose fetch fails
 *     never returns from the access (no zeros, no stale data), the process
 *     lives, pc_region_wait() returns the source's -ENODATA and
 *     pc_region_error() names the page and the error; another thread's
 *     fault on a good page is still served byte-exact;
 *   - exit mode: pc_region_destroy() after the failure does not disturb
 *     the parked thread (it never touches the region again);
 *   - exit mode with sigbus_on_failure: the process dies of SIGBUS;
 *   - a run that fails part way (its zero pages mapped, its data not
 *     fetched): what it mapped is present, the rest missing, as the
 *     page tables say (before, all of it went back to missing, and a
 *     later install of a mapped page met EEXIST).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "postcopy.h"
#include "tap.h"

#define SIZE (4 * MIB)
#define SEED 4242

enum {
	CHILD_OK = 0,
	CHILD_SETUP = 10,
	CHILD_WAIT_RESULT,
	CHILD_NO_REASON,
	CHILD_RETURNED,
	CHILD_GOOD_PAGE_WRONG,
	CHILD_SURVIVED,
};

static const char *child_code(int code)
{
	switch (code) {
	case CHILD_OK: return "ok";
	case CHILD_SETUP: return "setup failed";
	case CHILD_WAIT_RESULT: return "pc_region_wait did not return -ENODATA";
	case CHILD_NO_REASON: return "pc_region_error lacks the page or the error";
	case CHILD_RETURNED: return "the faulting thread ran on past its access";
	case CHILD_GOOD_PAGE_WRONG: return "a good page was not served right";
	case CHILD_SURVIVED: return "survived the access it should have died of";
	}
	return "?";
}

struct toucher {
	const volatile uint8_t *page;
	_Atomic bool returned;
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	uint8_t sum = 0;

	for (uint64_t i = 0; i < SRC_PAGE; i++)
		sum |= t->page[i];
	(void)sum;
	atomic_store(&t->returned, true);
	return NULL;
}

/* Two data pages far apart: one that fails, one that is served. */
static void pick_pages(struct counting_src *cs, uint64_t *bad, uint64_t *good)
{
	uint64_t p = cs->npages / 2;

	while (pc_source_is_zero(cs->inner, p))
		p++;
	*bad = p;
	p = cs->npages / 8;
	while (pc_source_is_zero(cs->inner, p))
		p++;
	*good = p;
}

static void child(enum pc_mode mode, bool die, bool destroy)
{
	struct rlimit no_core = { 0, 0 };
	struct pc_region_opts ro = { .size = SIZE, .mode = mode,
				     .sigbus_on_failure = die };
	struct counting_src cs;
	char why[256] = "", want[SRC_PAGE], msg[32];
	pc_source *src;
	pc_region *r;
	uint64_t bad, good;

	setrlimit(RLIMIT_CORE, &no_core);
	alarm(30);
	if (counting_new(&cs, SIZE, SEED, &src))
		_exit(CHILD_SETUP);
	pick_pages(&cs, &bad, &good);
	if (pc_source_read(cs.inner, good, 1, want))
		_exit(CHILD_SETUP);
	atomic_store(&cs.fail_page, (int64_t)bad);
	if (pc_region_create(&ro, src, &r, why, sizeof(why)) ||
	    pc_region_start(r)) {
		diag("child setup: %s", why);
		_exit(CHILD_SETUP);
	}
	char *mem = pc_region_addr(r);

	if (die) {
		volatile uint8_t *p = (uint8_t *)mem + bad * SRC_PAGE;
		(void)*p; /* must die of SIGBUS here */
		_exit(CHILD_SURVIVED);
	}

	struct toucher t = { .page = (uint8_t *)mem + bad * SRC_PAGE };
	pthread_t tid;
	if (pthread_create(&tid, NULL, toucher_main, &t))
		_exit(CHILD_SETUP);
	int ret = pc_region_wait(r, 10000);
	const char *reason = pc_region_error(r);
	diag("child (%s): pc_region_wait = %d: %s", mode_name(mode), ret,
	     reason);
	if (ret != -ENODATA)
		_exit(CHILD_WAIT_RESULT);
	snprintf(msg, sizeof(msg), "page %llu", (unsigned long long)bad);
	if (!strstr(reason, msg) || !strstr(reason, strerror(ENODATA)))
		_exit(CHILD_NO_REASON);
	/* The rest of the region is still served. */
	if (memcmp(mem + good * SRC_PAGE, want, SRC_PAGE))
		_exit(CHILD_GOOD_PAGE_WRONG);
	usleep(300 * 1000);
	if (atomic_load(&t.returned))
		_exit(CHILD_RETURNED);
	if (destroy) {
		pc_region_destroy(r);
		usleep(200 * 1000);
		if (atomic_load(&t.returned))
			_exit(CHILD_RETURNED);
	}
	/* The toucher stays parked: leave it to the process's end. */
	_exit(CHILD_OK);
}

/* A fault whose window starts with a zero page and then a data page that
 * cannot be fetched, on anonymous memory: the zero page is mapped before
 * the fetch fails. */
static void test_partial_run(void)
{
	struct pc_region_opts ro = { .size = SIZE, .mode = PC_MODE_EXIT,
				     .backend = PC_BACKEND_ANON, .window = 16 };
	struct counting_src cs;
	char why[256] = "";
	pc_source *src;
	pc_region *r;
	uint64_t z = 64;

	if (counting_new(&cs, SIZE, SEED, &src))
		bail_out("counting source");
	while (!pc_source_is_zero(cs.inner, z) || pc_source_is_zero(cs.inner, z + 1))
		z++;
	atomic_store(&cs.fail_page, (int64_t)(z + 1));
	if (pc_region_create(&ro, src, &r, why, sizeof(why)) || pc_region_start(r))
		bail_out("region: %s", why);
	char *mem = pc_region_addr(r);
	int ret = pc_resolve(mem + z * SRC_PAGE);
	unsigned char *vec = malloc(SIZE / SRC_PAGE);
	uint64_t wrong = 0, mapped = 0;
	if (!vec || mincore(mem, SIZE, vec))
		bail_out("mincore");
	for (uint64_t q = 0; q < SIZE / SRC_PAGE; q++) {
		bool in = vec[q] & 1;
		mapped += in;
		if (in != pc_region_page_present(r, q * SRC_PAGE))
			wrong++;
	}
	if (!ok(ret == -ENODATA && mapped >= 1 && wrong == 0,
		"partly_installed_run_that_fails_keeps_what_it_mapped_present"))
		diag("pc_resolve = %d; %" PRIu64 " pages mapped, %" PRIu64
		     " where the table disagrees", ret, mapped, wrong);
	free(vec);
	pc_region_destroy(r); /* and its source */
	counting_free(&cs);
}

static void report(int status, bool want_sigbus, const char *name)
{
	bool good = want_sigbus ?
			    WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS :
			    WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK;
	if (!ok(good, "%s", name))
		diag("child %s %d (%s)",
		     WIFSIGNALED(status) ? "killed by signal" : "exited",
		     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
		     WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) :
					   child_code(WEXITSTATUS(status)));
}

static int run(enum pc_mode mode, bool die, bool destroy)
{
	pid_t pid = fork_or_bail();

	if (pid == 0)
		child(mode, die, destroy);
	return wait_child(pid);
}

int main(void)
{
	plan(5);
	tap_watchdog(120);
	report(run(PC_MODE_EXIT, false, false), false,
	       "exit_mode_failed_fetch_parks_thread_region_fails_with_reason");
	report(run(PC_MODE_EXIT, false, true), false,
	       "exit_mode_destroy_after_failed_fetch_leaves_parked_thread_alone");
	report(run(PC_MODE_WAIT, false, false), false,
	       "wait_mode_failed_fetch_thread_sleeps_region_fails_with_reason");
	report(run(PC_MODE_EXIT, true, false), true,
	       "exit_mode_sigbus_on_failure_kills_process_with_sigbus");
	test_partial_run();
	return done();
}
