/* SPDX-License-Identifier: MIT */
/*
 * source_file.c - a raw snapshot image.  Validated when opened (a short or
 * unreadable file is an error before any region is registered).  Holes
 * found with SEEK_DATA/SEEK_HOLE at open are zero pages, so a sparse image
 * restores its zero pages without reading them.  The file is also mapped:
 * where the install copies with the kernel (COPY), it reads the pages
 * there (pc_source.view), once, instead of pread() into a bounce buffer
 * and a second copy out of it.  A file that starts with
 * the packed magic is a packed image (packed.c), read through the same
 * pread().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "sources_int.h"

struct image_file {
	int fd;
	const char *map; /* the whole file, read-only, or NULL */
	uint64_t npages;
	uint64_t *zero_bits; /* one bit per page: inside a hole */
};

static bool file_is_zero(void *ctx, uint64_t page)
{
	const struct image_file *img = ctx;
	return bitmap_test(img->zero_bits, page);
}

/* The pages where the file is mapped: an install copies from there with
 * the kernel, which reads the page cache once (pread, then the install's
 * copy, read it twice). */
static const void *file_view(void *ctx, uint64_t first, uint64_t npages)
{
	const struct image_file *img = ctx;
	if (!img->map || first > img->npages || npages > img->npages - first)
		return NULL;
	return img->map + first * PC_SOURCE_PAGE_SIZE;
}

/* pread is async-signal-safe. */
static int file_fetch(void *ctx, uint64_t first, uint64_t npages, void *dst)
{
	const struct image_file *img = ctx;
	char *to = dst;
	uint64_t len = npages * PC_SOURCE_PAGE_SIZE;
	off_t off = (off_t)(first * PC_SOURCE_PAGE_SIZE);

	while (len) {
		ssize_t got = pread(img->fd, to, len, off);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (got == 0) /* the file shrank under us: for good */
			return -ENODATA;
		to += got;
		off += got;
		len -= (uint64_t)got;
	}
	return 0;
}

/* The packed reader's bytes: the whole range, or an error. */
static int file_blob_read(void *ctx, uint64_t off, uint64_t len, void *dst)
{
	const int *fd = ctx;
	char *to = dst;
	while (len) {
		ssize_t got = pread(*fd, to, len, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -ENODATA;
		to += got;
		off += (uint64_t)got;
		len -= (uint64_t)got;
	}
	return 0;
}

static void file_blob_destroy(void *ctx)
{
	int *fd = ctx;
	close(*fd);
	free(fd);
}

static int open_packed(int fd, uint64_t size, pc_source **out)
{
	static const struct blob_ops ops = { .read = file_blob_read,
					     .destroy = file_blob_destroy };
	int *ctx = malloc(sizeof(*ctx));
	if (!ctx) {
		close(fd);
		return -ENOMEM;
	}
	*ctx = fd;
	return packed_open(&ops, ctx, size, out, NULL, 0);
}

static void file_destroy(void *ctx)
{
	struct image_file *img = ctx;
	if (img->map)
		munmap((void *)img->map, img->npages * PC_SOURCE_PAGE_SIZE);
	close(img->fd);
	free(img->zero_bits);
	free(img);
}

uint64_t find_holes(int fd, uint64_t size, uint64_t *zero_bits)
{
	uint64_t count = 0;
	off_t pos = 0;
	while ((uint64_t)pos < size) {
		off_t hole = lseek(fd, pos, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole >= size)
			break;
		off_t data = lseek(fd, hole, SEEK_DATA);
		if (data < 0)
			data = (off_t)size; /* ENXIO: hole runs to the end */
		uint64_t first = ((uint64_t)hole + PC_SOURCE_PAGE_SIZE - 1) /
				 PC_SOURCE_PAGE_SIZE;
		uint64_t end = (uint64_t)data / PC_SOURCE_PAGE_SIZE;
		for (uint64_t p = first; p < end; p++, count++)
			bitmap_set(zero_bits, p);
		pos = data;
	}
	return count;
}

int pc_source_file(const char *path, pc_source **out)
{
	static const struct pc_source_ops ops = {
		.fetch = file_fetch,
		.is_zero = file_is_zero,
		.destroy = file_destroy,
		/* pread() is async-signal-safe and writes only file bytes. */
		.flags = PC_SOURCE_ASYNC_SIGNAL_SAFE | PC_SOURCE_DIRECT,
	};
	struct stat st;
	int ret;

	/* O_NONBLOCK: open() of a FIFO would wait for a writer, for ever if
	 * none comes.  Cleared once the file is known to be regular. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto err_close;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto err_close;
	}
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		ret = -errno;
		goto err_close;
	}
	uint64_t size = (uint64_t)st.st_size;
	char magic[8];
	if (size >= PACK_HEADER_SIZE && pread(fd, magic, sizeof(magic), 0) == sizeof(magic) &&
	    packed_magic(magic, sizeof(magic)))
		return open_packed(fd, size, out);
	if (size == 0 || size % PC_SOURCE_PAGE_SIZE) {
		ret = -EINVAL;
		goto err_close;
	}
	/* Prove it is readable now rather than at the first fault. */
	char probe;
	ssize_t got = pread(fd, &probe, 1, (off_t)size - 1);
	if (got != 1) {
		ret = got < 0 ? -errno : -EIO;
		goto err_close;
	}

	struct image_file *img = calloc(1, sizeof(*img));
	if (!img) {
		ret = -ENOMEM;
		goto err_close;
	}
	img->fd = fd;
	img->npages = size / PC_SOURCE_PAGE_SIZE;
	img->zero_bits = calloc((img->npages + 63) / 64, sizeof(uint64_t));
	if (!img->zero_bits) {
		free(img);
		ret = -ENOMEM;
		goto err_close;
	}
	find_holes(img->fd, size, img->zero_bits);
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	/* Without a mapping (a file system that cannot), pread() alone. */
	void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	img->map = map == MAP_FAILED ? NULL : map;

	ret = pc_source_custom(&ops, img, size, out);
	if (ret < 0) {
		file_destroy(img);
		return ret;
	}
	(*out)->view = file_view;
	return 0;

err_close:
	close(fd);
	return ret;
}
