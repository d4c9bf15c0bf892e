/* SPDX-License-Identifier: MIT */
/*
 * server_image.c - the image `postcopy serve` serves: opened once (a
 * packed one decoded), its holes found, every page's digest taken, from
 * which its identity is made.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server_int.h"
#include "sources_int.h"

/*
 * Every page's digest, read once at start: the image's identity is made
 * from them, and every page read again to be sent is checked against its
 * own (pages pushed without a key are not read: the destination checks
 * them against the same digests), so an image changed under the server
 * (written in place, replaced by one of the same size and time) is
 * refused, never mixed into a session.  Holes are zero pages and are not
 * read.
 */
static int digest_image(struct pc_server *s, char *why, size_t len)
{
	enum { STEP = 512 }; /* pages per read */
	static const uint8_t zero[PROTO_PAGE_SIZE];
	uint64_t pages = s->image.page_count;
	uint8_t *buf = malloc((size_t)STEP * PROTO_PAGE_SIZE);
	s->digests = malloc(pages * sizeof(*s->digests));
	if (!buf || !s->digests) {
		free(buf);
		return -ENOMEM;
	}
	int ret = 0;
	for (uint64_t p = 0; p < pages && ret == 0; p += STEP) {
		uint64_t n = pages - p < STEP ? pages - p : STEP;
		size_t bytes = (size_t)n * PROTO_PAGE_SIZE;
		ssize_t got = pread(s->image_fd, buf, bytes, (off_t)(p * PROTO_PAGE_SIZE));
		if (got != (ssize_t)bytes) {
			snprintf(why, len, "%s: cannot read page %llu", s->image_name,
				 (unsigned long long)p);
			ret = got < 0 ? -errno : -EIO;
			break;
		}
		for (uint64_t i = 0; i < n; i++)
			s->digests[p + i] = proto_page_digest(
				bitmap_test(s->zero_bits, p + i) ?
					zero : buf + i * PROTO_PAGE_SIZE,
				p + i);
	}
	if (ret == 0)
		proto_image_digest(s->digests, pages, s->image.size, s->image.digest);
	free(buf);
	return ret;
}

/*
 * A packed image (postcopy pack) is served as the raw image it holds:
 * decoded once, through the file source that checks every chunk against
 * its digest, into a memfd that then stands for the file (sendfile()
 * reads it like one).  Its zero pages stay holes, so the zero map finds
 * them.  It costs the raw size in memory; what is served is what was
 * decoded here, whatever happens to the packed file afterwards.
 */
static int unpack_image(struct pc_server *s, char *why, size_t len)
{
	/* The file already open, not its name again: the same inode. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", s->image_fd);
	pc_source *src;
	int ret = pc_source_file(path, &src);
	if (ret < 0) {
		snprintf(why, len, "%s: a packed image that cannot be read: %s",
			 s->image_name, strerror(-ret));
		return ret;
	}
	enum { STEP = 1024 }; /* source pages per read */
	uint64_t size = pc_source_size(src), pages = size / PC_SOURCE_PAGE_SIZE;
	int fd = memfd_create("postcopy-serve-unpacked", MFD_CLOEXEC);
	char *buf = malloc((size_t)STEP * PC_SOURCE_PAGE_SIZE);
	if (fd < 0 || !buf || ftruncate(fd, (off_t)size) < 0) {
		ret = fd < 0 || buf ? -errno : -ENOMEM;
		snprintf(why, len, "%s: no memory to decode the packed image into (%llu MiB): %s",
			 s->image_name, (unsigned long long)(size >> 20), strerror(-ret));
	}
	for (uint64_t p = 0; ret == 0 && p < pages;) {
		if (pc_source_is_zero(src, p)) {
			p++;
			continue;
		}
		uint64_t n = 1;
		while (n < STEP && p + n < pages && !pc_source_is_zero(src, p + n))
			n++;
		ret = pc_source_read(src, p, n, buf);
		if (ret == 0) {
			ssize_t put = pwrite(fd, buf, n * PC_SOURCE_PAGE_SIZE,
					     (off_t)(p * PC_SOURCE_PAGE_SIZE));
			ret = put < 0 ? -errno : put != (ssize_t)(n * PC_SOURCE_PAGE_SIZE) ? -EIO : 0;
		}
		if (ret < 0)
			snprintf(why, len, "%s: decoding page %llu of the packed image: %s",
				 s->image_name, (unsigned long long)p,
				 ret == -EBADMSG ? "its chunk does not match its digest (damaged)" :
						   strerror(-ret));
		p += n;
	}
	free(buf);
	pc_source_destroy(src);
	if (ret < 0) {
		if (fd >= 0)
			close(fd);
		return ret;
	}
	close(s->image_fd);
	s->image_fd = fd;
	s->unpacked = true;
	return 0;
}

int srv_open_image(struct pc_server *s, char *why, size_t len)
{
	struct stat st;
	/* O_NONBLOCK: a FIFO given as the image must not hang the open; it
	 * is refused below, and a regular file gets blocking reads back. */
	if (s->opts.image)
		s->image_fd = open(s->opts.image, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	else
		s->image_fd = fcntl(s->opts.image_fd, F_DUPFD_CLOEXEC, 0);
	if (s->image_fd < 0 || fstat(s->image_fd, &st) < 0) {
		int err = errno;
		snprintf(why, len, "%s: %s", s->image_name, strerror(err));
		return -err;
	}
	char magic[8];
	if (S_ISREG(st.st_mode) &&
	    pread(s->image_fd, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
	    packed_magic(magic, sizeof(magic))) {
		int ret = unpack_image(s, why, len);
		if (ret < 0)
			return ret;
		if (fstat(s->image_fd, &st) < 0)
			return -errno;
	}
	if (!S_ISREG(st.st_mode) || !st.st_size ||
	    st.st_size % PROTO_PAGE_SIZE) {
		snprintf(why, len, "%s: not a regular file whose size is a positive multiple of 4096",
			 s->image_name);
		return -EINVAL;
	}
	int flags = fcntl(s->image_fd, F_GETFL);
	if (flags < 0 || fcntl(s->image_fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		return -errno;
	s->image.size = (uint64_t)st.st_size;
	s->image.page_count = s->image.size / PROTO_PAGE_SIZE;
	/* Zero pages: the holes (SEEK_HOLE), sent to destinations up front. */
	s->zero_bits = calloc((s->image.page_count + 63) / 64, 8);
	if (!s->zero_bits)
		return -ENOMEM;
	s->zero_pages = find_holes(s->image_fd, s->image.size, s->zero_bits);
	return digest_image(s, why, len);
}
