/* SPDX-License-Identifier: MIT */
/*
 * test_source_file - the snapshot-file source.
 *
 * Opening errors come back as the documented negative errnos (a FIFO is
 * refused at once, without waiting for a writer); a region
 * whose size differs from the file's fails with -EINVAL and leaves nothing
 * behind (no mapping, no userfaultfd, no open file); holes of a sparse
 * file are reported as zero pages, data pages never are; and a restore
 * from the file, in either mode, is byte-exact against the file.
 */
#include <dirent.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "postcopy.h"
#include "tap.h"

#define FILE_PAGES 1024		/* 4 MiB */
#define SEED 4242

static char dir[] = "/tmp/postcopy-test-source-file-XXXXXX";

static void path_of(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

static void make_file(const char *name, off_t size)
{
	char path[256];
	int fd;

	path_of(path, sizeof(path), name);
	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	if (fd < 0 || ftruncate(fd, size))
		bail_out("cannot create %s: %s", path, strerror(errno));
	if (size) {
		char c = 'x';

		if (pwrite(fd, &c, 1, 0) != 1)
			bail_out("write %s: %s", path, strerror(errno));
	}
	close(fd);
}

/* Data page of the sparse file?  Pattern zero pages and every 4th run of
 * 64 pages are left as holes. */
static bool is_data(pc_source *pattern, uint64_t p)
{
	return !pc_source_is_zero(pattern, p) && (p / 64) % 4 != 3;
}

static void make_sparse(const char *path, pc_source *pattern)
{
	char buf[SRC_PAGE];
	int fd;

	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	if (fd < 0 || ftruncate(fd, FILE_PAGES * SRC_PAGE))
		bail_out("cannot create %s: %s", path, strerror(errno));
	for (uint64_t p = 0; p < FILE_PAGES; p++) {
		if (!is_data(pattern, p))
			continue;
		if (pc_source_read(pattern, p, 1, buf) ||
		    pwrite(fd, buf, SRC_PAGE, p * SRC_PAGE) != (ssize_t)SRC_PAGE)
			bail_out("cannot write %s", path);
	}
	if (fsync(fd))
		bail_out("fsync %s: %s", path, strerror(errno));
	close(fd);
}

/* Does this file system report holes at all? */
static bool fs_reports_holes(const char *path, pc_source *pattern)
{
	int fd = open(path, O_RDONLY);
	uint64_t hole = 0;
	off_t off;

	while (hole < FILE_PAGES && is_data(pattern, hole))
		hole++;
	if (fd < 0)
		return false;
	off = lseek(fd, hole * SRC_PAGE, SEEK_HOLE);
	close(fd);
	return off == (off_t)(hole * SRC_PAGE);
}

static unsigned count_fds(unsigned *uffds)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	*uffds = 0;
	if (!d)
		bail_out("opendir /proc/self/fd");
	while ((e = readdir(d))) {
		char target[256];
		ssize_t len;

		if (e->d_name[0] == '.')
			continue;
		n++;
		len = readlinkat(dirfd(d), e->d_name, target,
				 sizeof(target) - 1);
		if (len > 0) {
			target[len] = 0;
			*uffds += strstr(target, "userfaultfd") != NULL;
		}
	}
	closedir(d);
	return n - 1;	/* the DIR's own descriptor */
}

/* Mappings of memfds (the shmem backend's guest memory and alias). */
static unsigned count_memfd_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned n = 0;

	if (!f)
		bail_out("fopen /proc/self/maps");
	while (fgets(line, sizeof(line), f))
		n += strstr(line, "memfd:") != NULL;
	fclose(f);
	return n;
}

static void test_open_errors(void)
{
	char path[256];
	pc_source *s = (pc_source *)&s;	/* must stay untouched on error */
	int ret;

	path_of(path, sizeof(path), "does-not-exist");
	ret = pc_source_file(path, &s);
	if (!ok(ret == -ENOENT && s == (pc_source *)&s,
		"file_source_missing_file_is_enoent"))
		diag("pc_source_file = %d, want %d", ret, -ENOENT);

	make_file("empty", 0);
	path_of(path, sizeof(path), "empty");
	ret = pc_source_file(path, &s);
	if (!ok(ret == -EINVAL, "file_source_empty_file_is_einval"))
		diag("pc_source_file = %d, want %d", ret, -EINVAL);

	make_file("odd", 4097);
	path_of(path, sizeof(path), "odd");
	ret = pc_source_file(path, &s);
	if (!ok(ret == -EINVAL, "file_source_size_not_page_multiple_is_einval"))
		diag("pc_source_file = %d, want %d", ret, -EINVAL);

	ret = pc_source_file(dir, &s);
	if (!ok(ret == -EISDIR && s == (pc_source *)&s,
		"file_source_directory_is_eisdir"))
		diag("pc_source_file(directory) = %d, want %d", ret, -EISDIR);
	if (ret == 0)
		pc_source_destroy(s);

	/* A FIFO: refused at once, not an open() that waits for a writer. */
	path_of(path, sizeof(path), "fifo");
	if (mkfifo(path, 0600))
		bail_out("mkfifo %s: %s", path, strerror(errno));
	tap_watchdog(10);
	ret = pc_source_file(path, &s);
	tap_watchdog(0);
	if (!ok(ret == -EINVAL && s == (pc_source *)&s,
		"file_source_fifo_is_einval_without_blocking"))
		diag("pc_source_file(FIFO) = %d, want %d", ret, -EINVAL);

	if (geteuid() == 0) {
		skip("root is not stopped by file permissions",
		     "file_source_unreadable_file_is_eacces");
	} else {
		make_file("secret", 8192);
		path_of(path, sizeof(path), "secret");
		chmod(path, 0);
		ret = pc_source_file(path, &s);
		if (!ok(ret == -EACCES, "file_source_unreadable_file_is_eacces"))
			diag("pc_source_file = %d, want %d", ret, -EACCES);
	}
}

static void test_size_mismatch(const char *sparse)
{
	struct pc_region_opts opts = { .size = (FILE_PAGES / 2) * SRC_PAGE };
	unsigned fds, uffds, fds2, uffds2, maps, maps2;
	pc_region *r = NULL;
	pc_source *s;
	char why[200] = "";
	int ret;

	fds = count_fds(&uffds);
	maps = count_memfd_maps();
	ret = pc_source_file(sparse, &s);
	if (ret)
		bail_out("pc_source_file(%s) = %d", sparse, ret);
	ret = pc_region_create(&opts, s, &r, why, sizeof(why));
	fds2 = count_fds(&uffds2);
	maps2 = count_memfd_maps();
	if (!ok(ret == -EINVAL && why[0] && fds == fds2 && uffds2 == 0 &&
		maps == maps2,
		"region_size_mismatch_with_file_is_einval_and_leaves_nothing")) {
		diag("pc_region_create = %d (%s); fds %u -> %u (userfaultfds %u), memfd maps %u -> %u",
		     ret, why, fds, fds2, uffds2, maps, maps2);
		if (ret == 0)
			pc_region_destroy(r);
	}
}

static void test_holes(const char *sparse, pc_source *pattern)
{
	uint64_t wrong_hole = UINT64_MAX, wrong_data = UINT64_MAX;
	char buf[SRC_PAGE], want[SRC_PAGE];
	uint64_t bad_read = UINT64_MAX;
	pc_source *s;
	int fd, ret;

	ret = pc_source_file(sparse, &s);
	if (ret)
		bail_out("pc_source_file(%s) = %d", sparse, ret);
	ok(pc_source_size(s) == FILE_PAGES * SRC_PAGE,
	   "file_source_size_is_file_size");
	for (uint64_t p = 0; p < FILE_PAGES; p++) {
		bool zero = pc_source_is_zero(s, p);

		if (is_data(pattern, p) && zero && wrong_data == UINT64_MAX)
			wrong_data = p;
		if (!is_data(pattern, p) && !zero && wrong_hole == UINT64_MAX)
			wrong_hole = p;
	}
	if (fs_reports_holes(sparse, pattern)) {
		if (!ok(wrong_hole == UINT64_MAX,
			"sparse_file_holes_reported_zero"))
			diag("hole page %" PRIu64 " not reported zero",
			     wrong_hole);
	} else {
		skip("this file system reports no holes",
		     "sparse_file_holes_reported_zero");
	}
	if (!ok(wrong_data == UINT64_MAX,
		"sparse_file_data_pages_never_reported_zero"))
		diag("data page %" PRIu64 " reported zero", wrong_data);

	fd = open(sparse, O_RDONLY);
	for (uint64_t p = 0; p < FILE_PAGES && bad_read == UINT64_MAX; p++) {
		if (pread(fd, want, SRC_PAGE, p * SRC_PAGE) != (ssize_t)SRC_PAGE ||
		    pc_source_read(s, p, 1, buf) || memcmp(buf, want, SRC_PAGE))
			bad_read = p;
	}
	close(fd);
	if (!ok(bad_read == UINT64_MAX, "file_source_read_matches_file"))
		diag("page %" PRIu64 " differs", bad_read);
	pc_source_destroy(s);
}

/* Restore a region from the file and compare every byte with the file. */
static void test_restore(const char *sparse, enum pc_backend backend,
			 enum pc_mode mode)
{
	struct pc_region_opts opts = {
		.size = FILE_PAGES * SRC_PAGE, .backend = backend, .mode = mode,
	};
	char why[256] = "", cwhy[200] = "", want[SRC_PAGE];
	pc_region *r;
	pc_source *s;
	int fd, ret;

	tap_watchdog(60);
	ret = pc_source_file(sparse, &s);
	if (ret)
		bail_out("pc_source_file(%s) = %d", sparse, ret);
	ret = pc_region_create(&opts, s, &r, cwhy, sizeof(cwhy));
	if (ret) {
		snprintf(why, sizeof(why), "pc_region_create = %d (%s)", ret,
			 cwhy);
		goto report;
	}
	ret = pc_region_start(r);
	/* Wait mode: let the filler bring it all; exit: fault it all in. */
	if (!ret && mode == PC_MODE_WAIT)
		ret = pc_region_start_fill(r);
	if (ret) {
		snprintf(why, sizeof(why), "start = %d (%s)", ret,
			 pc_region_error(r));
		goto destroy;
	}
	fd = open(sparse, O_RDONLY);
	for (uint64_t p = 0; p < FILE_PAGES; p++) {
		const char *have = (char *)pc_region_addr(r) + p * SRC_PAGE;

		if (pread(fd, want, SRC_PAGE, p * SRC_PAGE) != (ssize_t)SRC_PAGE)
			bail_out("pread %s", sparse);
		if (memcmp(have, want, SRC_PAGE)) {
			snprintf(why, sizeof(why),
				 "page %" PRIu64 " differs from the file", p);
			break;
		}
	}
	close(fd);
	ret = pc_region_wait(r, 10000);
	if (!why[0] && ret)
		snprintf(why, sizeof(why), "pc_region_wait = %d (%s)", ret,
			 pc_region_error(r));
destroy:
	pc_region_destroy(r);
report:
	if (!ok(!why[0], "%s_mode_%s_restore_from_sparse_file_byte_exact",
		mode_name(mode), backend_name(backend)))
		diag("%s", why);
}

int main(void)
{
	char sparse[256];
	pc_source *pattern;

	if (!mkdtemp(dir))
		bail_out("mkdtemp: %s", strerror(errno));
	plan(15);
	test_open_errors();

	if (pc_source_pattern(FILE_PAGES * SRC_PAGE, SEED, &pattern))
		bail_out("pc_source_pattern failed");
	path_of(sparse, sizeof(sparse), "sparse.img");
	make_sparse(sparse, pattern);

	test_size_mismatch(sparse);
	test_holes(sparse, pattern);
	test_restore(sparse, PC_BACKEND_SHMEM, PC_MODE_EXIT);
	test_restore(sparse, PC_BACKEND_ANON, PC_MODE_EXIT);
	test_restore(sparse, PC_BACKEND_SHMEM, PC_MODE_WAIT);
	test_restore(sparse, PC_BACKEND_ANON, PC_MODE_WAIT);
	pc_source_destroy(pattern);

	{
		static const char *const names[] = {
			"empty", "odd", "secret", "sparse.img", "fifo",
		};
		char path[256];

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			path_of(path, sizeof(path), names[i]);
			unlink(path);
		}
		rmdir(dir);
	}
	return done();
}
