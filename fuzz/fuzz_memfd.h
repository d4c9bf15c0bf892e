/* SPDX-License-Identifier: MIT */
/*
 * fuzz_memfd.h - the harnesses that open files (packed images, working
 * sets) give their input to the real open path as a memfd.
 */
#ifndef PC_FUZZ_MEMFD_H
#define PC_FUZZ_MEMFD_H

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* A memfd holding @len bytes of @p, and its /proc path in @path: the fd,
 * or -1 (nothing to close then). */
static inline int fuzz_memfd(const char *name, const void *p, size_t len,
			     char path[64])
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	for (size_t put = 0; put < len;) {
		ssize_t w = write(fd, (const char *)p + put, len - put);
		if (w <= 0) {
			close(fd);
			return -1;
		}
		put += (size_t)w;
	}
	snprintf(path, 64, "/proc/self/fd/%d", fd);
	return fd;
}

#endif
