/* SPDX-License-Identifier: MIT */
/*
 * baseline.c - memory for the no-userfaultfd baselines of `bench` and
 * `kvm-bench`: the same kind of memory as the region under test, with its
 * contents already local.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tools.h"

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21 << 26)
#endif

static int zero_fetch(void *ctx, uint64_t first, uint64_t n, void *dst)
{
	(void)ctx;
	(void)first;
	memset(dst, 0, n * PC_SOURCE_PAGE_SIZE);
	return 0;
}

static int zero_source(uint64_t size, pc_source **out)
{
	static const struct pc_source_ops zero_ops = {
		.fetch = zero_fetch,
		.flags = PC_SOURCE_ASYNC_SIGNAL_SAFE | PC_SOURCE_DIRECT,
	};
	return pc_source_custom(&zero_ops, NULL, size, out);
}

/*
 * Shared backends: a memfd holding the contents, mapped fresh, so every
 * first touch is a minor fault on a page-cache page: what a guest touching
 * local memory pays.  Anonymous memory has no such state; its baseline is
 * a first-touch fault on fresh anonymous memory (allocate and zero).
 */
int baseline_map(enum pc_backend backend, uint64_t size, pc_source *ref,
		 struct baseline_mem *out)
{
	*out = (struct baseline_mem){ .mem = MAP_FAILED, .size = size, .fd = -1,
				      .expect = ref };
	if (backend == PC_BACKEND_ANON) {
		int ret = zero_source(size, &out->zero);
		if (ret < 0)
			return ret;
		out->expect = out->zero;
		out->mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (out->mem == MAP_FAILED) {
			ret = -errno;
			baseline_unmap(out);
			return ret;
		}
		madvise(out->mem, size, MADV_NOHUGEPAGE);
		return 0;
	}
	bool huge = backend == PC_BACKEND_HUGETLB;
	out->fd = memfd_create("postcopy-baseline",
			       MFD_CLOEXEC | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
	if (out->fd < 0 || ftruncate(out->fd, (off_t)size) < 0)
		goto err;
	/* Fill the page cache through a throwaway mapping (hugetlbfs has no
	 * write()), then map it afresh for the vCPUs. */
	char *fill = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, out->fd, 0);
	if (fill == MAP_FAILED)
		goto err;
	int ret = pc_source_read(ref, 0, size / PC_SOURCE_PAGE_SIZE, fill);
	munmap(fill, size);
	if (ret < 0) {
		errno = -ret;
		goto err;
	}
	out->mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, out->fd, 0);
	if (out->mem == MAP_FAILED)
		goto err;
	return 0;
err:
	ret = -errno;
	baseline_unmap(out);
	return ret;
}

void baseline_unmap(struct baseline_mem *m)
{
	if (m->mem != MAP_FAILED)
		munmap(m->mem, m->size);
	if (m->fd >= 0)
		close(m->fd);
	pc_source_destroy(m->zero);
	m->mem = MAP_FAILED;
	m->fd = -1;
	m->zero = NULL;
}
