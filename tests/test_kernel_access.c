/* SPDX-License-Identifier: MIT */
/*
 * test_kernel_access - system calls that touch guest memory.
 *
 * Exit mode (the documented hazard): write() from a missing page and read()
 * into a missing page fail with EFAULT and fetch nothing; after
 * pc_populate() on the range both succeed with the right bytes; populate
 * covers every page an unaligned range touches; a range outside any
 * region, or straddling a region's end, is -EFAULT.
 * Wait mode: the same system calls just work, served by a handler thread.
 * Both modes: pc_populate() for a read leaves an anonymous zero page on the
 * shared zero page; for a write it gets a page of its own.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/mman.h>

#include "postcopy.h"
#include "tap.h"

#define REGION_PAGES 256
#define REGION_SIZE (REGION_PAGES * SRC_PAGE)

/* The next untouched page data_page() may hand out. */
static uint64_t next_page;

static void setup(struct fixture *f, enum pc_backend backend,
		  enum pc_mode mode, uint64_t seed)
{
	struct pc_region_opts opts = {
		.size = REGION_SIZE, .backend = backend, .mode = mode,
	};

	if (fixture_setup(f, &opts, seed))
		bail_out("setup(%s, %s) failed", backend_name(backend),
			 mode_name(mode));
	next_page = 1;
}

/* A fresh missing page with data in the source (and untouched neighbours). */
static uint64_t data_page(struct fixture *f)
{
	while (next_page + 4 < REGION_PAGES &&
	       pc_source_is_zero(f->ref, next_page))
		next_page++;
	if (next_page + 4 >= REGION_PAGES)
		bail_out("out of pages");
	next_page += 4;
	return next_page - 4;
}

static bool same_as_source(struct fixture *f, uint64_t p, const void *have)
{
	char want[SRC_PAGE];

	return pc_source_read(f->ref, p, 1, want) == 0 &&
	       memcmp(have, want, SRC_PAGE) == 0;
}

/* The page frame behind @addr (/proc/self/pagemap; needs root), or 0. */
static uint64_t pfn_of(const void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t e = 0;
	if (fd < 0)
		return 0;
	if (pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / SRC_PAGE * 8)) != sizeof(e))
		e = 0;
	close(fd);
	return (e >> 63) & 1 ? e & ((1ull << 55) - 1) : 0;
}

/* The shared zero page's frame: what a read of fresh anonymous memory maps. */
static uint64_t zero_pfn(void)
{
	char *p = mmap(NULL, SRC_PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	(void)*(volatile char *)p;
	uint64_t pfn = pfn_of(p);
	munmap(p, SRC_PAGE);
	return pfn;
}

/* pc_populate's direction on a zero page of an anonymous region. */
static void populate_direction(enum pc_mode mode)
{
	struct fixture f;
	setup(&f, PC_BACKEND_ANON, mode, 41);
	uint64_t zero = zero_pfn(), z[2] = { 0, 0 };
	for (uint64_t p = 1, k = 0; p < REGION_PAGES && k < 2; p++)
		if (pc_source_is_zero(f.ref, p))
			z[k++] = p;
	if (!zero || !z[1]) {
		skip(!zero ? "page frames are hidden (pagemap needs root)" : "no zero pages",
		     "%s_mode_anon_populate_for_read_keeps_the_zero_page", mode_name(mode));
		skip(!zero ? "page frames are hidden (pagemap needs root)" : "no zero pages",
		     "%s_mode_anon_populate_for_write_allocates", mode_name(mode));
		fixture_teardown(&f);
		return;
	}
	int r1 = pc_populate(f.mem + z[0] * SRC_PAGE, SRC_PAGE, 0);
	uint64_t read_pfn = pfn_of(f.mem + z[0] * SRC_PAGE);
	if (!ok(r1 == 0 && read_pfn == zero,
		"%s_mode_anon_populate_for_read_keeps_the_zero_page", mode_name(mode)))
		diag("pc_populate = %d, frame %#llx, zero page %#llx", r1,
		     (unsigned long long)read_pfn, (unsigned long long)zero);
	int r2 = pc_populate(f.mem + z[1] * SRC_PAGE, SRC_PAGE, PC_POPULATE_WRITE);
	uint64_t write_pfn = pfn_of(f.mem + z[1] * SRC_PAGE);
	if (!ok(r2 == 0 && write_pfn && write_pfn != zero &&
		    same_as_source(&f, z[1], f.mem + z[1] * SRC_PAGE),
		"%s_mode_anon_populate_for_write_allocates", mode_name(mode)))
		diag("pc_populate = %d, frame %#llx, zero page %#llx", r2,
		     (unsigned long long)write_pfn, (unsigned long long)zero);
	fixture_teardown(&f);
}

static void make_pipe(int p[2])
{
	if (pipe(p))
		bail_out("pipe: %s", strerror(errno));
}

static void close_pipe(int p[2])
{
	close(p[0]);
	close(p[1]);
}

static void fill_buf(char *buf, size_t len, unsigned char seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(seed + i * 13);
}

static void exit_mode(enum pc_backend backend)
{
	const char *b = backend_name(backend);
	char buf[3 * SRC_PAGE], in[SRC_PAGE];
	struct fixture f;
	uint64_t p, present;
	ssize_t n;
	int pfd[2], err, ret;

	setup(&f, backend, PC_MODE_EXIT, 11 + backend);

	/* write() from a missing page: EFAULT, nothing fetched. */
	p = data_page(&f);
	make_pipe(pfd);
	present = pc_region_present(f.r);
	n = write(pfd[1], f.mem + p * SRC_PAGE, SRC_PAGE);
	err = errno;
	if (!ok(n == -1 && err == EFAULT && fetched(&f, p) == 0 &&
		pc_region_present(f.r) == present,
		"exit_mode_%s_write_from_missing_page_fails_efault_fetches_nothing",
		b))
		diag("write = %zd (%s), page fetched %u times, present %" PRIu64
		     " -> %" PRIu64, n, n < 0 ? strerror(err) : "no error",
		     fetched(&f, p), present, pc_region_present(f.r));

	/* After pc_populate() the same write() works. */
	ret = pc_populate(f.mem + p * SRC_PAGE, SRC_PAGE, 0);
	n = write(pfd[1], f.mem + p * SRC_PAGE, SRC_PAGE);
	if (!ok(ret == 0 && n == (ssize_t)SRC_PAGE &&
		read(pfd[0], in, SRC_PAGE) == (ssize_t)SRC_PAGE &&
		same_as_source(&f, p, in) && fetched(&f, p) == 1,
		"exit_mode_%s_write_after_populate_sends_source_bytes", b))
		diag("pc_populate = %d, write = %zd, fetched %u", ret, n,
		     fetched(&f, p));
	close_pipe(pfd);

	/* read() into a missing page: EFAULT, nothing fetched. */
	p = data_page(&f);
	make_pipe(pfd);
	fill_buf(buf, SRC_PAGE, 0x5a);
	if (write(pfd[1], buf, SRC_PAGE) != (ssize_t)SRC_PAGE)
		bail_out("write to pipe");
	n = read(pfd[0], f.mem + p * SRC_PAGE, SRC_PAGE);
	err = errno;
	if (!ok(n == -1 && err == EFAULT && fetched(&f, p) == 0,
		"exit_mode_%s_read_into_missing_page_fails_efault_fetches_nothing",
		b))
		diag("read = %zd (%s), page fetched %u times", n,
		     n < 0 ? strerror(err) : "no error", fetched(&f, p));
	close_pipe(pfd);

	/* After pc_populate() the read() works and the bytes land. */
	make_pipe(pfd);
	if (write(pfd[1], buf, SRC_PAGE) != (ssize_t)SRC_PAGE)
		bail_out("write to pipe");
	ret = pc_populate(f.mem + p * SRC_PAGE, SRC_PAGE, PC_POPULATE_WRITE);
	n = read(pfd[0], f.mem + p * SRC_PAGE, SRC_PAGE);
	if (!ok(ret == 0 && n == (ssize_t)SRC_PAGE &&
		memcmp(f.mem + p * SRC_PAGE, buf, SRC_PAGE) == 0 &&
		fetched(&f, p) == 1,
		"exit_mode_%s_read_after_populate_lands_bytes", b))
		diag("pc_populate = %d, read = %zd, fetched %u", ret, n,
		     fetched(&f, p));
	close_pipe(pfd);

	/* An unaligned range populates every page it touches, and only those. */
	p = data_page(&f);
	present = pc_region_present(f.r);
	ret = pc_populate(f.mem + p * SRC_PAGE + 100, 2 * SRC_PAGE, 0);
	make_pipe(pfd);
	n = write(pfd[1], f.mem + p * SRC_PAGE + 100, 2 * SRC_PAGE);
	{
		bool counts = fetched(&f, p - 1) == 0 &&
			      fetched(&f, p + 3) == 0;

		for (uint64_t q = p; q < p + 3; q++)
			counts &= fetched(&f, q) ==
				  (pc_source_is_zero(f.ref, q) ? 0u : 1u);
		if (!ok(ret == 0 && n == (ssize_t)(2 * SRC_PAGE) && counts &&
			pc_region_present(f.r) == present + 3 &&
			read(pfd[0], buf, 2 * SRC_PAGE) == 2 * (ssize_t)SRC_PAGE &&
			memcmp(buf, f.mem + p * SRC_PAGE + 100, 2 * SRC_PAGE) == 0,
			"exit_mode_%s_populate_unaligned_range_covers_every_page_it_touches",
			b))
			diag("pc_populate = %d, write = %zd, present %" PRIu64
			     " -> %" PRIu64 " (want +3), fetched %u %u %u %u %u",
			     ret, n, present, pc_region_present(f.r),
			     fetched(&f, p - 1), fetched(&f, p),
			     fetched(&f, p + 1), fetched(&f, p + 2),
			     fetched(&f, p + 3));
	}
	close_pipe(pfd);

	if (backend == PC_BACKEND_SHMEM) {
		char *outside = malloc(2 * SRC_PAGE);

		ret = pc_populate(outside, SRC_PAGE, 0);
		if (!ok(ret == -EFAULT, "populate_outside_any_region_is_efault"))
			diag("pc_populate = %d", ret);
		free(outside);
		ret = pc_populate(f.mem + REGION_SIZE - SRC_PAGE, 2 * SRC_PAGE, 0);
		if (!ok(ret == -EFAULT,
			"populate_range_straddling_region_end_is_efault"))
			diag("pc_populate = %d", ret);
	}
	fixture_teardown(&f);
}

static void wait_mode(enum pc_backend backend)
{
	const char *b = backend_name(backend);
	char buf[SRC_PAGE], in[SRC_PAGE];
	struct fixture f;
	uint64_t p;
	ssize_t n;
	int pfd[2], ret;

	tap_watchdog(60);	/* a kernel access nobody serves hangs */
	setup(&f, backend, PC_MODE_WAIT, 21 + backend);

	p = data_page(&f);
	make_pipe(pfd);
	n = write(pfd[1], f.mem + p * SRC_PAGE, SRC_PAGE);
	if (!ok(n == (ssize_t)SRC_PAGE &&
		read(pfd[0], in, SRC_PAGE) == (ssize_t)SRC_PAGE &&
		same_as_source(&f, p, in) && fetched(&f, p) == 1,
		"wait_mode_%s_write_from_missing_page_just_works", b))
		diag("write = %zd (%s), fetched %u", n,
		     n < 0 ? strerror(errno) : "ok", fetched(&f, p));
	close_pipe(pfd);

	p = data_page(&f);
	make_pipe(pfd);
	fill_buf(buf, SRC_PAGE, 0x33);
	if (write(pfd[1], buf, SRC_PAGE) != (ssize_t)SRC_PAGE)
		bail_out("write to pipe");
	n = read(pfd[0], f.mem + p * SRC_PAGE, SRC_PAGE);
	if (!ok(n == (ssize_t)SRC_PAGE &&
		memcmp(f.mem + p * SRC_PAGE, buf, SRC_PAGE) == 0 &&
		fetched(&f, p) == 1,
		"wait_mode_%s_read_into_missing_page_just_works", b))
		diag("read = %zd (%s), fetched %u", n,
		     n < 0 ? strerror(errno) : "ok", fetched(&f, p));
	close_pipe(pfd);

	p = data_page(&f);
	ret = pc_populate(f.mem + p * SRC_PAGE, SRC_PAGE, 0);
	if (!ok(ret == 0 && fetched(&f, p) == 1 &&
		same_as_source(&f, p, f.mem + p * SRC_PAGE),
		"wait_mode_%s_populate_fetches_page_once", b))
		diag("pc_populate = %d, fetched %u", ret, fetched(&f, p));
	fixture_teardown(&f);
}

int main(void)
{
	plan(22);
	tap_watchdog(60);
	exit_mode(PC_BACKEND_SHMEM);
	exit_mode(PC_BACKEND_ANON);
	wait_mode(PC_BACKEND_SHMEM);
	wait_mode(PC_BACKEND_ANON);
	populate_direction(PC_MODE_EXIT);
	populate_direction(PC_MODE_WAIT);
	return done();
}
