/* SPDX-License-Identifier: MIT */
/*
 * memory.c - putting pages into a region's memory, by its kind: the one
 * place that knows how each kind takes contents (region_memory in
 * internal.h).
 *
 *   shared   own memfd (shmem, hugetlb) registered MINOR: the contents go
 *            into the page cache through the unregistered alias (pwrite,
 *            or memcpy where the alias is mapped), zero pages are made by
 *            fallocate, and nothing is mapped until memory_map()'s
 *            CONTINUE;
 *   anon     own anonymous memory registered MISSING: COPY and ZEROPAGE
 *            put and map at once;
 *   adopted  another process's memory, reached only through its
 *            userfaultfd: as anon (2 MiB pages get their zeros by COPY,
 *            which ZEROPAGE cannot do), with installs excluded while the
 *            owner's events are read (memory_installs_begin()).
 *
 * Every function reports in *mapped how many pages from @first are
 * mapped when it returns, also after a failure part way.  Async-signal-
 * safe: system calls and atomics only.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static int pwrite_all(int fd, const char *data, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t put = pwrite(fd, data, len, (off_t)off);
		if (put < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += put;
		off += (uint64_t)put;
		len -= (uint64_t)put;
	}
	return 0;
}

char *memory_direct(const struct pc_region *r, uint64_t first)
{
	if (!r->mem.shared || !r->mem.write_direct ||
	    !(r->src->flags & PC_SOURCE_DIRECT))
		return NULL;
	return r->mem.alias + first * r->page_size;
}

int memory_put_data(const struct install_ctx *ic, uint64_t first, uint64_t n,
		    const char *from, uint64_t *mapped)
{
	struct pc_region *r = ic->r;
	*mapped = 0;
	if (!r->mem.shared)
		return region_uffd_copy(r, first, n, from, ic->wake, ic->retry, mapped);
	if (r->mem.write_direct) { /* the alias is mapped, or cheap to fault */
		memcpy(r->mem.alias + first * r->page_size, from, n * r->page_size);
		return 0;
	}
	/* pwrite(): no page faults on the alias. */
	return pwrite_all(r->mem.memfd, from, n * r->page_size, first * r->page_size);
}

/* Zero pages mapped into anonymous memory: UFFDIO_ZEROPAGE, except for
 * 2 MiB pages (an adopted hugetlb region), which it does not support:
 * copied from a zero buffer instead (.bss, never written: no memory). */
static int zero_anon(const struct install_ctx *ic, uint64_t first, uint64_t n,
		     bool exist_ok, uint64_t *mapped)
{
	static char zeros[PC_HUGE_PAGE_SIZE] __attribute__((aligned(4096)));
	struct pc_region *r = ic->r;
	if (r->page_size != PC_HUGE_PAGE_SIZE)
		return region_uffd_zeropage(r, first, n, ic->wake, exist_ok, mapped);
	int ret = 0;
	*mapped = 0;
	for (uint64_t p = first; p < first + n && ret == 0; p++) {
		uint64_t m;
		ret = region_uffd_copy(r, p, 1, zeros, ic->wake, exist_ok, &m);
		*mapped += m;
	}
	return ret;
}

int memory_put_zeros(const struct install_ctx *ic, uint64_t first, uint64_t n,
		     bool exist_ok, uint64_t *mapped)
{
	struct pc_region *r = ic->r;
	*mapped = 0;
	if (!r->mem.shared)
		return zero_anon(ic, first, n, exist_ok, mapped);
	/* A page-cache page is needed for CONTINUE; fallocate makes a
	 * zeroed one.  prealloc made them all already, still zero: no
	 * syscall (and no inode lock) on the fault path then. */
	if (!r->opts.prealloc &&
	    fallocate(r->mem.memfd, FALLOC_FL_KEEP_SIZE,
		      (off_t)(first * r->page_size),
		      (off_t)(n * r->page_size)) < 0)
		return -errno;
	return 0;
}

int memory_map(const struct install_ctx *ic, uint64_t first, uint64_t n,
	       bool exist_ok, uint64_t *mapped)
{
	*mapped = 0;
	if (!ic->r->mem.shared)
		return 0; /* mapped as they were put */
	return region_uffd_continue(ic->r, first, n, ic->wake, exist_ok, mapped);
}

int memory_reinstate(const struct install_ctx *ic, uint64_t p)
{
	uint64_t mapped;
	if (ic->r->mem.shared) /* the page cache still holds it */
		return region_uffd_continue(ic->r, p, 1, ic->wake, true, &mapped);
	return zero_anon(ic, p, 1, true, &mapped);
}

void memory_installs_begin(struct pc_region *r)
{
	if (r->mem.adopted)
		pthread_rwlock_rdlock(&r->mem.remove_lock);
}

void memory_installs_end(struct pc_region *r)
{
	if (r->mem.adopted)
		pthread_rwlock_unlock(&r->mem.remove_lock);
}
