/* SPDX-License-Identifier: MIT */
/*
 * test_bad_input - wrong arguments fail cleanly.
 *
 * Every bad pc_region_create() returns a negative errno, writes a non-empty
 * one-line reason when asked (truncated, NUL-terminated, never overflowing
 * the buffer) and still destroys the source it was handed.  Bad sources,
 * bad thread ids and an untouched region's wait fail the documented way.
 * Nothing crashes, and under ASan nothing leaks.
 */
#include <inttypes.h>
#include <limits.h>

#include "postcopy.h"
#include "tap.h"

struct owned {
	bool destroyed;
	unsigned fetches;
};

static int owned_fetch(void *ctx, uint64_t first, uint64_t npages, void *dst)
{
	(void)first;
	memset(dst, 0x42, npages * SRC_PAGE);
	((struct owned *)ctx)->fetches++;
	return 0;
}

static void owned_destroy(void *ctx)
{
	((struct owned *)ctx)->destroyed = true;
}

static const struct pc_source_ops owned_ops = {
	.fetch = owned_fetch,
	.destroy = owned_destroy,
};

static pc_source *owned_source(struct owned *o, uint64_t size)
{
	pc_source *s;
	int ret;

	memset(o, 0, sizeof(*o));
	ret = pc_source_custom(&owned_ops, o, size, &s);
	if (ret)
		bail_out("pc_source_custom(%" PRIu64 ") = %d", size, ret);
	return s;
}

/*
 * pc_region_create(@opts) over a fresh source of @src_size must fail with
 * @want, say why, and destroy the source.
 */
static void expect_create_fails(const struct pc_region_opts *opts,
				uint64_t src_size, int want, const char *name)
{
	struct owned o;
	pc_region *r = NULL;
	char why[256] = "";
	int ret;

	ret = pc_region_create(opts, owned_source(&o, src_size), &r, why,
			       sizeof(why));
	if (!ok(ret == want && why[0] && strchr(why, '\n') == NULL &&
		o.destroyed, "%s", name))
		diag("pc_region_create = %d (want %d), why \"%s\", source %s",
		     ret, want, why, o.destroyed ? "destroyed" : "leaked");
	else
		diag("%s: %s", name, why);
	if (ret == 0)
		pc_region_destroy(r);
}

static void region_create_errors(void)
{
	const uint64_t four = 4 * SRC_PAGE;

	expect_create_fails(&(struct pc_region_opts){ .size = 0 }, four,
			    -EINVAL, "region_size_zero_is_einval");
	expect_create_fails(&(struct pc_region_opts){ .size = 3 * SRC_PAGE + 1 },
			    four, -EINVAL,
			    "region_size_not_page_multiple_is_einval");
	expect_create_fails(&(struct pc_region_opts){ .size = 8 * SRC_PAGE },
			    four, -EINVAL,
			    "region_larger_than_source_is_einval");
	expect_create_fails(&(struct pc_region_opts){ .size = 2 * SRC_PAGE },
			    four, -EINVAL,
			    "region_smaller_than_source_is_einval");
	expect_create_fails(&(struct pc_region_opts){
				    .size = 4 * MIB + SRC_PAGE,
				    .backend = PC_BACKEND_HUGETLB },
			    4 * MIB + SRC_PAGE, -EINVAL,
			    "hugetlb_size_not_2mib_multiple_is_einval");
	expect_create_fails(&(struct pc_region_opts){
				    .size = 1 * MIB,
				    .backend = PC_BACKEND_HUGETLB },
			    1 * MIB, -EINVAL, "hugetlb_size_below_2mib_is_einval");
	expect_create_fails(&(struct pc_region_opts){
				    .size = four, .backend = (enum pc_backend)7 },
			    four, -EINVAL, "region_unknown_backend_is_einval");
	expect_create_fails(&(struct pc_region_opts){
				    .size = four, .mode = (enum pc_mode)9 },
			    four, -EINVAL, "region_unknown_mode_is_einval");
	expect_create_fails(&(struct pc_region_opts){
				    .size = four, .mode = PC_MODE_WAIT,
				    .uffds = 8 },
			    four, -EINVAL,
			    "wait_mode_more_uffds_than_pages_is_einval");
	expect_create_fails(&(struct pc_region_opts){
				    .size = four, .reserved[6] = 1 },
			    four, -EINVAL,
			    "region_nonzero_reserved_option_is_einval");
	expect_create_fails(&(struct pc_region_opts){
				    .size = four, .reserved32 = 1 },
			    four, -EINVAL,
			    "region_nonzero_reserved32_option_is_einval");
	expect_create_fails(&(struct pc_region_opts){
				    .size = four, .fillers = 9 },
			    four, -EINVAL, "region_more_than_8_fillers_is_einval");
}

static void region_create_why_handling(void)
{
	struct pc_region_opts opts = { .size = 0 };
	char why[16];
	pc_region *r = NULL;
	struct owned o;
	bool canary = true;
	int ret;

	memset(why, 'X', sizeof(why));
	ret = pc_region_create(&opts, owned_source(&o, 4 * SRC_PAGE), &r, why,
			       8);
	for (size_t i = 8; i < sizeof(why); i++)
		canary &= why[i] == 'X';
	if (!ok(ret == -EINVAL && why[0] && why[0] != 'X' &&
		memchr(why, 0, 8) != NULL && canary && o.destroyed,
		"region_create_why_is_truncated_to_why_len_and_terminated"))
		diag("ret %d, NUL within 8: %s, bytes past 8 untouched: %s", ret,
		     memchr(why, 0, 8) ? "yes" : "no", canary ? "yes" : "no");

	ret = pc_region_create(&opts, owned_source(&o, 4 * SRC_PAGE), &r, NULL,
			       0);
	ok(ret == -EINVAL && o.destroyed,
	   "region_create_without_why_buffer_still_fails_cleanly");

	ret = pc_region_create(&(struct pc_region_opts){ .size = 4 * SRC_PAGE },
			       NULL, &r, why, sizeof(why));
	if (!ok(ret == -EINVAL, "region_create_null_source_is_einval"))
		diag("pc_region_create(NULL source) = %d", ret);
	if (ret == 0)
		pc_region_destroy(r);
}

static void region_huge_max_threads(void)
{
	struct pc_region_opts opts = { .size = 4 * SRC_PAGE,
				       .max_threads = UINT_MAX };
	pc_region *r = NULL;
	char why[256] = "";
	struct owned o;
	int ret;

	ret = pc_region_create(&opts, owned_source(&o, opts.size), &r, why,
			       sizeof(why));
	/* region.c takes at most 65536 slots: UINT_MAX is refused before
	 * anything is allocated, saying which option, and the source goes. */
	if (!ok(ret == -EINVAL && strstr(why, "max_threads") && o.destroyed,
		"region_max_threads_uint_max_is_einval_naming_the_option"))
		diag("pc_region_create = %d, why \"%s\", source destroyed %d",
		     ret, why, o.destroyed);
	if (ret == 0)
		pc_region_destroy(r);
}

static void thread_attach_ids(void)
{
	struct pc_region_opts opts = { .size = 4 * SRC_PAGE, .max_threads = 4 };
	int bad, good;
	pc_region *r;
	struct owned o;

	if (pc_region_create(&opts, owned_source(&o, opts.size), &r, NULL, 0))
		bail_out("pc_region_create failed");
	bad = pc_thread_attach(r, 4);
	good = pc_thread_attach(r, 3);
	if (!good)
		pc_thread_detach(r);
	if (!ok(bad == -EINVAL && good == 0,
		"thread_attach_id_equal_to_max_threads_is_einval"))
		diag("attach(4) = %d, attach(3) = %d with max_threads 4", bad,
		     good);
	pc_region_destroy(r);

	opts.max_threads = 0;	/* default 64 */
	if (pc_region_create(&opts, owned_source(&o, opts.size), &r, NULL, 0))
		bail_out("pc_region_create failed");
	bad = pc_thread_attach(r, 64);
	good = pc_thread_attach(r, 63);
	if (!good)
		pc_thread_detach(r);
	if (!ok(bad == -EINVAL && good == 0,
		"thread_attach_id_64_with_default_max_threads_is_einval"))
		diag("attach(64) = %d, attach(63) = %d", bad, good);
	pc_region_destroy(r);
	ok(o.destroyed, "region_destroyed_without_start_destroys_source");
}

static void source_errors(void)
{
	static const struct pc_source_ops no_fetch = {
		.destroy = owned_destroy,
	};
	pc_source *s = NULL;
	struct owned o = { 0 };
	int ret;

	ret = pc_source_custom(&no_fetch, &o, 4 * SRC_PAGE, &s);
	if (!ok(ret == -EINVAL && !o.destroyed,
		"custom_source_without_fetch_is_einval_and_leaves_ctx"))
		diag("pc_source_custom = %d, destroy %scalled", ret,
		     o.destroyed ? "" : "not ");
	if (ret == 0)
		pc_source_destroy(s);

	ret = pc_source_custom(NULL, &o, 4 * SRC_PAGE, &s);
	ok(ret == -EINVAL, "custom_source_null_ops_is_einval");
	if (ret == 0)
		pc_source_destroy(s);

	o.destroyed = false;
	ret = pc_source_custom(&owned_ops, &o, 0, &s);
	if (!ok(ret == -EINVAL && !o.destroyed,
		"custom_source_size_zero_is_einval"))
		diag("pc_source_custom(size 0) = %d", ret);
	if (ret == 0)
		pc_source_destroy(s);

	o.destroyed = false;
	ret = pc_source_custom(&owned_ops, &o, SRC_PAGE + 1, &s);
	if (!ok(ret == -EINVAL && !o.destroyed,
		"custom_source_size_not_page_multiple_is_einval"))
		diag("pc_source_custom(4097) = %d", ret);
	if (ret == 0)
		pc_source_destroy(s);

	struct pc_source_ops newer = owned_ops;
	newer.reserved[3] = 1;
	o.destroyed = false;
	ret = pc_source_custom(&newer, &o, 4 * SRC_PAGE, &s);
	if (!ok(ret == -EINVAL && !o.destroyed,
		"custom_source_nonzero_reserved_field_is_einval"))
		diag("pc_source_custom(reserved[3] = 1) = %d", ret);
	if (ret == 0)
		pc_source_destroy(s);

	ret = pc_source_pattern(0, 1, &s);
	ok(ret == -EINVAL, "pattern_source_size_zero_is_einval");
	if (ret == 0)
		pc_source_destroy(s);
	ret = pc_source_pattern(SRC_PAGE + 1, 1, &s);
	ok(ret == -EINVAL, "pattern_source_size_not_page_multiple_is_einval");
	if (ret == 0)
		pc_source_destroy(s);

	/* In a child, so that a crash is this check's failure, not the end
	 * of the program; the child must return and exit 0. */
	pid_t pid = fork_or_bail();
	if (pid == 0) {
		pc_source_destroy(NULL);
		_exit(0);
	}
	int status = wait_child(pid);
	if (!ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"source_destroy_null_is_a_noop"))
		diag("child wait status 0x%x%s", status,
		     WIFSIGNALED(status) ? " (killed by a signal)" : "");

	s = owned_source(&o, 2 * SRC_PAGE);
	pc_source_destroy(s);
	ok(o.destroyed, "source_destroy_calls_ops_destroy");
}

static void wait_times_out(enum pc_mode mode)
{
	struct pc_region_opts opts = { .size = 16 * SRC_PAGE, .mode = mode };
	pc_region *r;
	struct owned o;
	int ret0, ret50;

	if (pc_region_create(&opts, owned_source(&o, opts.size), &r, NULL, 0) ||
	    pc_region_start(r))
		bail_out("cannot start a region");
	ret0 = pc_region_wait(r, 0);
	ret50 = pc_region_wait(r, 50);
	if (!ok(ret0 == -ETIMEDOUT && ret50 == -ETIMEDOUT &&
		!pc_region_complete(r) && pc_region_present(r) == 0 &&
		pc_region_error(r) && pc_region_error(r)[0] == 0 &&
		o.fetches == 0,
		"%s_mode_untouched_region_wait_times_out_without_error",
		mode_name(mode)))
		diag("wait(0) = %d, wait(50) = %d, complete %d, present %" PRIu64
		     ", error \"%s\", fetches %u", ret0, ret50,
		     pc_region_complete(r), pc_region_present(r),
		     pc_region_error(r), o.fetches);
	pc_region_destroy(r);
}

int main(void)
{
	plan(30);
	tap_watchdog(60);
	region_create_errors();
	region_create_why_handling();
	region_huge_max_threads();
	thread_attach_ids();
	source_errors();
	wait_times_out(PC_MODE_EXIT);
	wait_times_out(PC_MODE_WAIT);
	return done();
}
