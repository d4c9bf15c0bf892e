/* SPDX-License-Identifier: MIT */
/*
 * test_refault - faults the pager did not cause, and pc_resolve().
 *
 * shmem: MADV_DONTNEED on present pages of the guest view zaps the mapping
 * but the page-cache page survives, so the next access must see the same
 * bytes (including what the guest wrote), must not fetch again, and is
 * counted as a refault; in both modes.
 * anon: after MADV_DONTNEED the page reads as zeros, as the kernel gives a
 * discarded anon page back, without a new fetch; in both modes, before and
 * after completion (and the access neither hangs nor crashes).
 * pc_resolve(): makes a missing page present with one fetch, does not fetch
 * an already present page again, accepts an address inside the page, does
 * not fetch a zero page, restores a zapped shmem mapping without a fetch,
 * and is -EFAULT outside every region.
 */
#include <inttypes.h>
#include <sys/mman.h>

#include "postcopy.h"
#include "tap.h"

#define REGION_PAGES 256
#define REGION_SIZE (REGION_PAGES * SRC_PAGE)
#define FIRST 16		/* the DONTNEED range: pages [FIRST, LAST) */
#define LAST 80

static int setup(struct fixture *f, enum pc_backend backend,
		 enum pc_mode mode, uint64_t seed)
{
	struct pc_region_opts opts = {
		.size = REGION_SIZE, .backend = backend, .mode = mode,
	};

	return fixture_setup(f, &opts, seed);
}

static uint64_t mark(uint64_t p)
{
	return 0xdeadbeef00000000ull | p;
}

static void patch_marks(void *ctx, uint64_t p, void *buf)
{
	(void)ctx;
	if (p >= FIRST && p < LAST)
		memcpy((char *)buf + 8 * (p % 512), &(uint64_t){ mark(p) }, 8);
}

static uint64_t refaults(pc_region *r)
{
	struct pc_stats *st;
	uint64_t n;

	if (pc_region_stats(r, &st))
		bail_out("pc_region_stats failed");
	n = st->refaults;
	free(st);
	return n;
}

/* Fault in [FIRST, LAST) with one write each. */
static void touch_range(struct fixture *f)
{
	for (uint64_t p = FIRST; p < LAST; p++)
		memcpy(f->mem + p * SRC_PAGE + 8 * (p % 512),
		       &(uint64_t){ mark(p) }, 8);
}

static bool fetched_once_each(struct fixture *f, uint64_t *bad)
{
	for (uint64_t p = FIRST; p < LAST; p++) {
		if (fetched(f, p) != (pc_source_is_zero(f->ref, p) ? 0u : 1u)) {
			*bad = p;
			return false;
		}
	}
	return true;
}

/* Same bytes as before, no new fetch, and a refault counted. */
static void shmem_dontneed(enum pc_mode mode)
{
	const char *m = mode_name(mode);
	uint64_t before, after, bad = 0, differ;
	struct fixture f;
	int ret;

	tap_watchdog(60);
	if (setup(&f, PC_BACKEND_SHMEM, mode, 31 + mode))
		bail_out("setup failed");
	touch_range(&f);
	before = refaults(f.r);
	ret = madvise(f.mem + FIRST * SRC_PAGE, (LAST - FIRST) * SRC_PAGE,
		      MADV_DONTNEED);
	if (ret)
		bail_out("madvise(MADV_DONTNEED): %s", strerror(errno));

	/* Compare the whole DONTNEED range (and only it: the rest is missing). */
	differ = 0;
	for (uint64_t p = FIRST; p < LAST; p++) {
		char want[SRC_PAGE];

		pc_source_read(f.ref, p, 1, want);
		patch_marks(NULL, p, want);
		if (memcmp(f.mem + p * SRC_PAGE, want, SRC_PAGE) && !differ++)
			diag("page %" PRIu64 " differs after MADV_DONTNEED", p);
	}
	after = refaults(f.r);
	if (!ok(differ == 0 && fetched_once_each(&f, &bad),
		"%s_mode_shmem_dontneed_then_access_sees_same_bytes_without_refetch",
		m))
		diag("%" PRIu64 " pages differ; page %" PRIu64 " fetched %u times",
		     differ, bad, fetched(&f, bad));
	if (!ok(after > before, "%s_mode_shmem_dontneed_access_counted_as_refault",
		m))
		diag("refaults %" PRIu64 " -> %" PRIu64, before, after);
	fixture_teardown(&f);
}

/*
 * anon: MADV_DONTNEED discards a private anonymous page, and the kernel
 * gives a discarded anon page back as zeros.  The pager does the same
 * (install.c, resolve_present(): "for anonymous memory that was discarded,
 * a zero page as the kernel would"), without fetching the page again;
 * after completion the range is unregistered and the kernel alone zero-fills
 * it.  So the page reads as zeros, never as the source, in both modes,
 * before and after completion.  In a child, so that a hang (alarm) or a
 * crash fails this check only.
 */
enum {
	READ_ZEROS = 0, READ_SOURCE, READ_OTHER, SETUP_FAILED, REFETCHED,
	NOT_COMPLETE, BAD_BEFORE
};

static const char *const anon_result[] = {
	[READ_ZEROS] = "zeros",
	[READ_SOURCE] = "the source's bytes, not zeros",
	[READ_OTHER] = "bytes that are neither zeros nor the source's",
	[SETUP_FAILED] = "setup failed",
	[REFETCHED] = "zeros, but the page was fetched again",
	[NOT_COMPLETE] = "the region did not complete within 5 s",
	[BAD_BEFORE] = "the page was wrong before MADV_DONTNEED",
};

static void anon_dontneed(enum pc_mode mode, bool complete)
{
	const char *m = mode_name(mode);
	const char *when = complete ? "after" : "before";
	int status;
	pid_t pid;

	pid = fork_or_bail();
	if (pid == 0) {
		struct fixture f;
		char want[SRC_PAGE], zero[SRC_PAGE] = { 0 };
		volatile char sink = 0;
		uint64_t p = FIRST;

		alarm(10);
		if (setup(&f, PC_BACKEND_ANON, mode, 41 + 2 * mode + complete))
			_exit(SETUP_FAILED);
		while (pc_source_is_zero(f.ref, p))
			p++;
		pc_source_read(f.ref, p, 1, want);
		if (memcmp(f.mem + p * SRC_PAGE, want, SRC_PAGE))
			_exit(BAD_BEFORE);
		if (complete) {
			for (uint64_t q = 0; q < REGION_PAGES; q++)
				sink += f.mem[q * SRC_PAGE];
			(void)sink;
			if (pc_region_wait(f.r, 5000) != 0 ||
			    !pc_region_complete(f.r))
				_exit(NOT_COMPLETE);
		}
		madvise(f.mem + p * SRC_PAGE, SRC_PAGE, MADV_DONTNEED);
		int result = !memcmp(f.mem + p * SRC_PAGE, want, SRC_PAGE) ? READ_SOURCE :
			     memcmp(f.mem + p * SRC_PAGE, zero, SRC_PAGE)   ? READ_OTHER :
			     fetched(&f, p) == 1			     ? READ_ZEROS :
										       REFETCHED;
		/* Joins the handler threads: TSan calls threads left
		 * running at exit a leak and changes the exit status. */
		fixture_teardown(&f);
		_exit(result);
	}
	status = wait_child(pid);
	if (ok(WIFEXITED(status) && WEXITSTATUS(status) == READ_ZEROS,
	       "%s_mode_anon_dontneed_%s_completion_reads_zeros_without_refetch",
	       m, when))
		return;
	if (WIFSIGNALED(status))
		diag("child died by signal %d (%s)%s", WTERMSIG(status),
		     strsignal(WTERMSIG(status)),
		     WTERMSIG(status) == SIGALRM ? ": the access hung" : "");
	else
		diag("after MADV_DONTNEED the page reads as %s",
		     WEXITSTATUS(status) <= BAD_BEFORE ?
		     anon_result[WEXITSTATUS(status)] : "?");
}

static void resolve(enum pc_backend backend)
{
	const char *b = backend_name(backend);
	uint64_t p = 100, q = 120, z = 0, present;
	char want[SRC_PAGE], zero[SRC_PAGE] = { 0 };
	struct fixture f;
	int ret, ret2;

	tap_watchdog(60);
	if (setup(&f, backend, PC_MODE_EXIT, 51 + backend))
		bail_out("setup failed");
	while (pc_source_is_zero(f.ref, p))
		p++;
	while (pc_source_is_zero(f.ref, q))
		q++;
	while (z < REGION_PAGES && !pc_source_is_zero(f.ref, z))
		z++;

	present = pc_region_present(f.r);
	ret = pc_resolve(f.mem + p * SRC_PAGE);
	pc_source_read(f.ref, p, 1, want);
	if (!ok(ret == 0 && fetched(&f, p) == 1 &&
		pc_region_present(f.r) == present + 1 &&
		memcmp(f.mem + p * SRC_PAGE, want, SRC_PAGE) == 0 &&
		fetched(&f, p) == 1,
		"exit_mode_%s_resolve_before_touch_fetches_page_once", b))
		diag("pc_resolve = %d, fetched %u, present %" PRIu64 " -> %" PRIu64,
		     ret, fetched(&f, p), present, pc_region_present(f.r));

	ret = pc_resolve(f.mem + p * SRC_PAGE);
	ret2 = pc_resolve(f.mem + p * SRC_PAGE + 4000);
	if (!ok(ret == 0 && ret2 == 0 && fetched(&f, p) == 1 &&
		memcmp(f.mem + p * SRC_PAGE, want, SRC_PAGE) == 0,
		"exit_mode_%s_resolve_of_present_page_does_not_fetch_again", b))
		diag("pc_resolve = %d, %d, fetched %u", ret, ret2,
		     fetched(&f, p));

	ret = pc_resolve(f.mem + q * SRC_PAGE + 1234);
	pc_source_read(f.ref, q, 1, want);
	if (!ok(ret == 0 && fetched(&f, q) == 1 &&
		fetched(&f, q - 1) == 0 && fetched(&f, q + 1) == 0 &&
		memcmp(f.mem + q * SRC_PAGE, want, SRC_PAGE) == 0,
		"exit_mode_%s_resolve_address_inside_page_resolves_that_page", b))
		diag("pc_resolve = %d, fetched %u (neighbours %u %u)", ret,
		     fetched(&f, q), fetched(&f, q - 1), fetched(&f, q + 1));

	if (z == REGION_PAGES) {
		skip("the source has no zero page",
		     "exit_mode_%s_resolve_of_zero_page_fetches_nothing", b);
	} else {
		present = pc_region_present(f.r);
		ret = pc_resolve(f.mem + z * SRC_PAGE);
		if (!ok(ret == 0 && fetched(&f, z) == 0 &&
			pc_region_present(f.r) == present + 1 &&
			memcmp(f.mem + z * SRC_PAGE, zero, SRC_PAGE) == 0,
			"exit_mode_%s_resolve_of_zero_page_fetches_nothing", b))
			diag("pc_resolve = %d, fetched %u, present %" PRIu64
			     " -> %" PRIu64, ret, fetched(&f, z), present,
			     pc_region_present(f.r));
	}

	if (backend == PC_BACKEND_SHMEM) {
		/* Zap the mapping of p; pc_resolve must restore it, no fetch. */
		memcpy(f.mem + p * SRC_PAGE, "guest wrote this", 16);
		memcpy(want, f.mem + p * SRC_PAGE, SRC_PAGE);
		madvise(f.mem + p * SRC_PAGE, SRC_PAGE, MADV_DONTNEED);
		ret = pc_resolve(f.mem + p * SRC_PAGE);
		if (!ok(ret == 0 && fetched(&f, p) == 1 &&
			memcmp(f.mem + p * SRC_PAGE, want, SRC_PAGE) == 0,
			"exit_mode_shmem_resolve_after_dontneed_reinstalls_without_fetch"))
			diag("pc_resolve = %d, fetched %u", ret,
			     fetched(&f, p));
	}
	fixture_teardown(&f);
}

int main(void)
{
	int local;

	plan(18);
	tap_watchdog(60);
	/* Forked children first, while this process has no threads. */
	anon_dontneed(PC_MODE_EXIT, false);
	anon_dontneed(PC_MODE_WAIT, false);
	anon_dontneed(PC_MODE_EXIT, true);
	anon_dontneed(PC_MODE_WAIT, true);
	shmem_dontneed(PC_MODE_EXIT);
	shmem_dontneed(PC_MODE_WAIT);
	resolve(PC_BACKEND_SHMEM);
	resolve(PC_BACKEND_ANON);
	if (!ok(pc_resolve(&local) == -EFAULT && pc_resolve(NULL) == -EFAULT,
		"resolve_outside_every_region_is_efault"))
		diag("pc_resolve(stack) = %d, pc_resolve(NULL) = %d",
		     pc_resolve(&local), pc_resolve(NULL));
	return done();
}
