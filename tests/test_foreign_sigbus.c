/* SPDX-License-Identifier: MIT */
/*
 * test_foreign_sigbus - the exit-mode SIGBUS handler must not swallow a
 * SIGBUS that is not a userfault of a region.
 *
 * In a forked child with a started exit-mode region (whose own faults were
 * just resolved by that handler): touching a file mapping beyond EOF, or
 * kill(getpid(), SIGBUS), must still kill the child with SIGBUS, exactly as
 * it would without the library, instead of looping or being ignored.  The
 * same after the region was destroyed.  In the parent, the region's own
 * faults keep working.
 */
#include <inttypes.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "postcopy.h"
#include "tap.h"

#define REGION_SIZE (1 * MIB)

/* Child exit codes when it did not die as it should. */
enum { CHILD_SETUP = 2, CHILD_BAD_DATA = 3, CHILD_SURVIVED = 4 };

enum foreign { BEYOND_EOF, KILL_SELF, BEYOND_EOF_AFTER_DESTROY };

/* Create and start an exit-mode region and fault one page through it. */
static pc_region *started_region(enum pc_backend backend, uint64_t seed)
{
	struct pc_region_opts opts = { .size = REGION_SIZE, .backend = backend };
	char want[SRC_PAGE];
	pc_source *src, *ref;
	pc_region *r;

	if (pc_source_pattern(REGION_SIZE, seed, &src) ||
	    pc_source_pattern(REGION_SIZE, seed, &ref) ||
	    pc_region_create(&opts, src, &r, NULL, 0) || pc_region_start(r))
		_exit(CHILD_SETUP);
	pc_source_read(ref, 3, 1, want);
	pc_source_destroy(ref);
	if (memcmp((char *)pc_region_addr(r) + 3 * SRC_PAGE, want, SRC_PAGE))
		_exit(CHILD_BAD_DATA);
	return r;
}

static void touch_beyond_eof(void)
{
	char path[] = "/tmp/postcopy-test-foreign-sigbus-XXXXXX";
	volatile char *map;
	int fd = mkstemp(path);

	if (fd < 0 || ftruncate(fd, SRC_PAGE))
		_exit(CHILD_SETUP);
	map = mmap(NULL, 2 * SRC_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   0);
	unlink(path);
	close(fd);
	if (map == MAP_FAILED)
		_exit(CHILD_SETUP);
	map[0] = 1;
	map[SRC_PAGE] = 1;	/* beyond EOF: SIGBUS (BUS_ADRERR) */
}

static void child(enum foreign what, enum pc_backend backend)
{
	struct rlimit no_core = { 0, 0 };
	pc_region *r;

	setrlimit(RLIMIT_CORE, &no_core);
	alarm(10);		/* a handler that loops dies by SIGALRM */
	r = started_region(backend, 7);
	switch (what) {
	case BEYOND_EOF:
		touch_beyond_eof();
		break;
	case KILL_SELF:
		kill(getpid(), SIGBUS);
		break;
	case BEYOND_EOF_AFTER_DESTROY:
		pc_region_destroy(r);
		touch_beyond_eof();
		break;
	}
	_exit(CHILD_SURVIVED);
}

static void expect_sigbus_death(enum foreign what, enum pc_backend backend,
				const char *name)
{
	int status;
	pid_t pid;

	pid = fork_or_bail();
	if (pid == 0)
		child(what, backend);
	status = wait_child(pid);
	if (ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS, "%s", name))
		return;
	if (WIFSIGNALED(status))
		diag("child died by signal %d (%s)%s", WTERMSIG(status),
		     strsignal(WTERMSIG(status)),
		     WTERMSIG(status) == SIGALRM ?
			     ": it hung, the SIGBUS was retried forever?" : "");
	else if (WEXITSTATUS(status) == CHILD_SURVIVED)
		diag("child survived the SIGBUS");
	else if (WEXITSTATUS(status) == CHILD_BAD_DATA)
		diag("child: region page has wrong contents");
	else
		diag("child exited with status %d (setup failed?)",
		     WEXITSTATUS(status));
}

static void parent_region_still_works(void)
{
	struct pc_region_opts opts = { .size = 4 * MIB };
	pc_source *src, *ref;
	pc_region *r;
	char why[200] = "";
	int ret;

	tap_watchdog(60);
	if (pc_source_pattern(opts.size, 9, &src) ||
	    pc_source_pattern(opts.size, 9, &ref))
		bail_out("pc_source_pattern failed");
	ret = pc_region_create(&opts, src, &r, why, sizeof(why));
	if (ret)
		bail_out("pc_region_create = %d (%s)", ret, why);
	ret = pc_region_start(r);
	if (!ok(ret == 0 &&
		verify_mem(pc_region_addr(r), opts.size, ref, NULL, NULL) == 0 &&
		pc_region_wait(r, 10000) == 0,
		"exit_mode_region_faults_still_resolved_in_parent"))
		diag("start = %d, present %" PRIu64 " (%s)", ret,
		     pc_region_present(r), pc_region_error(r));
	pc_region_destroy(r);
	pc_source_destroy(ref);
}

int main(void)
{
	plan(7);
	tap_watchdog(120);
	expect_sigbus_death(BEYOND_EOF, PC_BACKEND_SHMEM,
			    "exit_mode_shmem_file_sigbus_beyond_eof_kills_process");
	expect_sigbus_death(BEYOND_EOF, PC_BACKEND_ANON,
			    "exit_mode_anon_file_sigbus_beyond_eof_kills_process");
	expect_sigbus_death(KILL_SELF, PC_BACKEND_SHMEM,
			    "exit_mode_shmem_kill_self_sigbus_kills_process");
	expect_sigbus_death(KILL_SELF, PC_BACKEND_ANON,
			    "exit_mode_anon_kill_self_sigbus_kills_process");
	expect_sigbus_death(BEYOND_EOF_AFTER_DESTROY, PC_BACKEND_SHMEM,
			    "exit_mode_file_sigbus_after_region_destroy_kills_process");
	parent_region_still_works();
	/* A child forked after the parent installed the handler itself. */
	expect_sigbus_death(BEYOND_EOF, PC_BACKEND_SHMEM,
			    "exit_mode_file_sigbus_kills_child_of_a_process_that_used_regions");
	return done();
}
