/* SPDX-License-Identifier: MIT */
/*
 * uffd.c - every userfaultfd ioctl goes through here, and so does the
 * policy for their errors: EAGAIN (the mm is changing) is retried from
 * where the kernel stopped.  EEXIST (the page is mapped already) is an
 * error when we install pages we hold in flight, since nobody else may map
 * them, and counts as done only where the page is present already (a
 * refault).  All of it is plain ioctl(), so it is
 * async-signal-safe and callable from the SIGBUS handler.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* Linux 6.1 headers lack the /dev/userfaultfd ioctl (6.1 has the device,
 * but the define moved around). */
#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif

int uffd_open(uint64_t features, int *fd_out)
{
	int flags = O_CLOEXEC | O_NONBLOCK;
	int fd = -1;

	/* /dev/userfaultfd needs no vm.unprivileged_userfaultfd for
	 * user-mode faults; fall back to the syscall where it is absent. */
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		close(dev);
	}
	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd < 0)
		return -errno;

	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	if ((api.features & features) != features) {
		close(fd);
		return -EOPNOTSUPP;
	}
	*fd_out = fd;
	return 0;
}

int uffd_register(int fd, void *addr, uint64_t len, bool minor)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		/* Shared memory needs MISSING too: MINOR only traps pages the
		 * page cache already holds, and a hole would otherwise be
		 * filled with zeroes by the kernel. */
		.mode = UFFDIO_REGISTER_MODE_MISSING |
			(minor ? UFFDIO_REGISTER_MODE_MINOR : 0),
	};
	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	uint64_t need = minor ? (1ull << _UFFDIO_CONTINUE) :
				(1ull << _UFFDIO_COPY) |
					(1ull << _UFFDIO_ZEROPAGE);
	if ((reg.ioctls & need) != need) {
		uffd_unregister(fd, addr, len);
		return -EOPNOTSUPP;
	}
	return 0;
}

int uffd_unregister(int fd, void *addr, uint64_t len)
{
	struct uffdio_range range = { .start = (uintptr_t)addr, .len = len };
	int ret = ioctl(fd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
	/* UFFDIO_UNREGISTER wakes the range's sleepers before it clears the
	 * VMA, and a fault taken under the per-VMA lock can queue itself in
	 * between and sleep for good (seen with Firecracker-style owners
	 * faulting as the last page arrived): wake the range again. */
	ioctl(fd, UFFDIO_WAKE, &range);
	return ret;
}

enum fill_op { OP_COPY, OP_ZEROPAGE, OP_CONTINUE };

/*
 * One install ioctl over [dst, dst+len).  Returns bytes the kernel handled
 * (> 0), 0 to retry (EAGAIN), or a negative errno; EEXIST on the first page
 * reports that page as handled and sets *existed.
 */
static int64_t fill_once(int fd, enum fill_op op, uint64_t dst,
			 const char *from, uint64_t len, uint64_t page_size,
			 bool wake, bool *existed)
{
	*existed = false;
	int ret;
	int64_t done;

	switch (op) {
	case OP_COPY: {
		struct uffdio_copy c = {
			.dst = dst, .src = (uintptr_t)from, .len = len,
			.mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE,
		};
		ret = ioctl(fd, UFFDIO_COPY, &c);
		done = c.copy;
		break;
	}
	case OP_ZEROPAGE: {
		struct uffdio_zeropage z = {
			.range = { .start = dst, .len = len },
			.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE,
		};
		ret = ioctl(fd, UFFDIO_ZEROPAGE, &z);
		done = z.zeropage;
		break;
	}
	default: {
		struct uffdio_continue c = {
			.range = { .start = dst, .len = len },
			.mode = wake ? 0 : UFFDIO_CONTINUE_MODE_DONTWAKE,
		};
		ret = ioctl(fd, UFFDIO_CONTINUE, &c);
		done = c.mapped;
		break;
	}
	}
	if (ret == 0)
		return (int64_t)len;
	int err = errno;
	if (done > 0) /* partial progress: the caller goes on from there */
		return done;
	if (err == EEXIST) {
		*existed = true;
		return (int64_t)page_size;
	}
	if (err == EAGAIN)
		return 0;
	return -err;
}

/* *@handled: bytes from @dst the kernel mapped (or found mapped), also
 * when it fails part way. */
static int fill_range(int fd, enum fill_op op, uint64_t dst,
		      const char *from, uint64_t len, uint64_t page_size,
		      bool wake, bool exist_ok, bool eagain_out,
		      uint64_t *handled)
{
	*handled = 0;
	while (len) {
		bool existed;
		int64_t done = fill_once(fd, op, dst, from, len, page_size,
					 wake, &existed);
		if (done < 0)
			return (int)done;
		if (done == 0) { /* EAGAIN: mm changing under us */
			/* Another process's memory: an event (a REMOVE) is
			 * queued, and until a reader reads it every copy
			 * fails; the caller must read it first. */
			if (eagain_out)
				return -EAGAIN;
			sched_yield();
			continue;
		}
		/* A page we hold in flight is mapped only by us: if the
		 * kernel has one there, something mapped it behind our back
		 * and what it holds is not the source's. */
		if (existed && !exist_ok)
			return -EEXIST;
		if (existed && wake) {
			/* EEXIST woke nobody: a sleeper on that page may have
			 * come in after the other install's wake. */
			struct uffdio_range one = { .start = dst,
						    .len = page_size };
			ioctl(fd, UFFDIO_WAKE, &one);
		}
		dst += (uint64_t)done;
		if (from)
			from += done;
		len -= (uint64_t)done;
		*handled += (uint64_t)done;
	}
	return 0;
}

/* Run @op over pages [first, first+n), one slice (userfaultfd) at a time;
 * *@mapped (if not NULL): the pages from @first that are mapped now, all
 * of them on success, those before the failure otherwise. */
static int region_fill(struct pc_region *r, enum fill_op op, uint64_t first,
		       uint64_t n, const char *from, bool wake, bool exist_ok,
		       uint64_t *mapped)
{
	/* Slice i starts at i * per pages; the last takes the remainder. */
	uint64_t per = r->mem.slices[0].npages, dummy;
	if (!mapped)
		mapped = &dummy;
	*mapped = 0;
	while (n) {
		uint64_t i = per ? first / per : r->mem.nslices - 1;
		const struct uffd_slice *s = &r->mem.slices[i < r->mem.nslices ? i : r->mem.nslices - 1];
		uint64_t here = s->first + s->npages - first;
		if (here > n)
			here = n;
		uint64_t dst = page_addr(r, first, here, &here), bytes;
		int ret = fill_range(s->fd, op, dst, from, here * r->page_size,
				     r->page_size, wake, exist_ok, r->mem.adopted, &bytes);
		*mapped += bytes / r->page_size;
		if (ret < 0)
			return ret;
		first += here;
		n -= here;
		if (from)
			from += here * r->page_size;
	}
	return 0;
}

int region_uffd_wake(struct pc_region *r, uint64_t p)
{
	uint64_t per = r->mem.slices[0].npages, one = 1;
	uint64_t i = per ? p / per : r->mem.nslices - 1;
	const struct uffd_slice *s = &r->mem.slices[i < r->mem.nslices ? i : r->mem.nslices - 1];
	struct uffdio_range range = { .start = page_addr(r, p, 1, &one),
				      .len = r->page_size };
	return ioctl(s->fd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

int region_uffd_copy(struct pc_region *r, uint64_t first, uint64_t n,
		     const void *from, bool wake, bool exist_ok, uint64_t *mapped)
{
	return region_fill(r, OP_COPY, first, n, from, wake, exist_ok, mapped);
}

int region_uffd_zeropage(struct pc_region *r, uint64_t first, uint64_t n,
			 bool wake, bool exist_ok, uint64_t *mapped)
{
	return region_fill(r, OP_ZEROPAGE, first, n, NULL, wake, exist_ok, mapped);
}

int region_uffd_continue(struct pc_region *r, uint64_t first, uint64_t n,
			 bool wake, bool exist_ok, uint64_t *mapped)
{
	return region_fill(r, OP_CONTINUE, first, n, NULL, wake, exist_ok, mapped);
}
