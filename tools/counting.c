/* SPDX-License-Identifier: MIT */
/*
 * counting.c - a source wrapper that counts fetches per 4 KiB page, so a
 * benchmark can prove that no page was fetched twice.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "tools.h"

struct counting {
	pc_source *inner;
	_Atomic uint32_t *fetched; /* per 4 KiB page */
	uint64_t npages;
};

/* Atomics and the pattern source only: async-signal-safe. */
static int counting_fetch(void *ctx, uint64_t first, uint64_t n, void *dst)
{
	struct counting *c = ctx;
	for (uint64_t p = first; p < first + n; p++)
		atomic_fetch_add_explicit(&c->fetched[p], 1, memory_order_relaxed);
	return pc_source_read(c->inner, first, n, dst);
}

static bool counting_is_zero(void *ctx, uint64_t page)
{
	struct counting *c = ctx;
	return pc_source_is_zero(c->inner, page);
}

static void counting_stop(void *ctx, bool complete)
{
	struct counting *c = ctx;
	pc_source_stop(c->inner, complete);
}

static void counting_destroy(void *ctx)
{
	struct counting *c = ctx;
	pc_source_destroy(c->inner);
	munmap((void *)c->fetched, c->npages * sizeof(*c->fetched));
	free(c);
}

uint64_t counting_duplicates(const struct counting *c)
{
	uint64_t dup = 0;
	for (uint64_t p = 0; p < c->npages; p++) {
		uint32_t n = atomic_load(&c->fetched[p]);
		if (n > 1)
			dup += n - 1;
	}
	return dup;
}

int counting_source(pc_source *inner, struct counting **cp,
			   pc_source **out)
{
	uint64_t size = pc_source_size(inner);
	/* Promises what the wrapped source promises. */
	const struct pc_source_ops ops = {
		.fetch = counting_fetch,
		.is_zero = counting_is_zero,
		.stop = counting_stop,
		.destroy = counting_destroy,
		.flags = pc_source_flags(inner),
	};
	struct counting *c = calloc(1, sizeof(*c));
	if (!c) {
		pc_source_destroy(inner);
		return -ENOMEM;
	}
	c->inner = inner;
	c->npages = size / PC_SOURCE_PAGE_SIZE;
	void *m = mmap(NULL, c->npages * sizeof(*c->fetched),
		       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		pc_source_destroy(inner);
		free(c);
		return -ENOMEM;
	}
	c->fetched = m;
	int ret;
	ret = pc_source_custom(&ops, c, size, out);
	if (ret < 0) {
		counting_destroy(c);
		return ret;
	}
	*cp = c;
	return 0;
}
