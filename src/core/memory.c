/* SPDX-License-Identifier: MIT */
/*
 * memory.c - putting pages into a region's memory, by its kind: the one
 * place that knows how each kind takes contents (region_memory in
 * internal.h).
 *
 *   shared   own memfd (shmem, hugetlb) registered MISSING and MINOR:
 *            shmem takes its contents and zeros as anon does, by COPY and
 *            ZEROPAGE, which allocate the page-cache page, fill and map
 *            it in one call under no inode lock (pwrite into the memfd
 *            holds the inode's lock: two installing threads ran no faster
 *            than one); where the page cache is already allocated (hugetlb,
 *            prealloc) the contents go into it through the unregistered
 *            alias by memcpy, and memory_map()'s CONTINUE maps them;
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

char *memory_direct(const struct pc_region *r, uint64_t first)
{
	if (!r->mem.shared || !r->mem.write_direct ||
	    !(r->src->flags & PC_SOURCE_DIRECT))
		return NULL;
	return r->mem.alias + first * r->page_size;
}

/* Whether putting contents maps them (anon and adopted memory, and shmem
 * whose page cache is allocated as it is put), or memory_map() does. */
static bool maps_as_put(const struct pc_region *r)
{
	return !r->mem.write_direct;
}

bool memory_takes_views(const struct pc_region *r)
{
	return maps_as_put(r);
}

int memory_put_data(const struct install_ctx *ic, uint64_t first, uint64_t n,
		    const char *from, uint64_t *mapped)
{
	struct pc_region *r = ic->r;
	*mapped = 0;
	if (maps_as_put(r))
		return region_uffd_copy(r, first, n, from, ic->wake, ic->retry, mapped);
	memcpy(r->mem.alias + first * r->page_size, from, n * r->page_size);
	return 0;
}

/* Zero pages put and mapped at once: UFFDIO_ZEROPAGE, except for
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
	if (maps_as_put(r))
		return zero_anon(ic, first, n, exist_ok, mapped);
	/* A page-cache page is needed for CONTINUE; fallocate makes a
	 * zeroed one (hugetlb).  prealloc made them all already, still
	 * zero: no syscall (and no inode lock) on the fault path then. */
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
	if (maps_as_put(ic->r))
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
