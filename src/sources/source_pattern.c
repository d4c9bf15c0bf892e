/* SPDX-License-Identifier: MIT */
/*
 * source_pattern.c - an in-memory source that generates its contents: each
 * 8-byte word is a hash of (seed, page, word index), so any page can be
 * produced or checked anywhere without storing the image.  About one page
 * in sixteen is all zeroes, to exercise the zero-page install path.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WORDS_PER_PAGE (PC_SOURCE_PAGE_SIZE / sizeof(uint64_t))

struct pattern {
	uint64_t seed;
	/* Word i of every page is mix(seed + page) ^ spread[i]: one XOR per
	 * word, which the compiler vectorises, so generating a page costs
	 * about what copying one does. */
	uint64_t spread[WORDS_PER_PAGE];
};

/* splitmix64 finaliser: cheap, well mixed. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static bool pattern_is_zero(void *ctx, uint64_t page)
{
	const struct pattern *pat = ctx;
	return (mix(pat->seed ^ (page * 0x2545f4914f6cdd1dull)) & 15) == 0;
}

/* Pure computation: async-signal-safe. */
static int pattern_fetch(void *ctx, uint64_t first, uint64_t npages,
			 void *dst)
{
	const struct pattern *pat = ctx;
	uint64_t *word = dst;

	for (uint64_t p = first; p < first + npages; p++) {
		if (pattern_is_zero(ctx, p)) {
			memset(word, 0, PC_SOURCE_PAGE_SIZE);
		} else {
			uint64_t base = mix(pat->seed + p);
			for (unsigned i = 0; i < WORDS_PER_PAGE; i++)
				word[i] = base ^ pat->spread[i];
		}
		word += WORDS_PER_PAGE;
	}
	return 0;
}

static void pattern_destroy(void *ctx)
{
	free(ctx);
}

int pc_source_pattern(uint64_t size, uint64_t seed, pc_source **out)
{
	static const struct pc_source_ops ops = {
		.fetch = pattern_fetch,
		.is_zero = pattern_is_zero,
		.destroy = pattern_destroy,
		.flags = PC_SOURCE_ASYNC_SIGNAL_SAFE | PC_SOURCE_DIRECT,
	};
	struct pattern *pat = malloc(sizeof(*pat));
	if (!pat)
		return -ENOMEM;
	pat->seed = seed;
	for (unsigned i = 0; i < WORDS_PER_PAGE; i++)
		pat->spread[i] = i * 0x9e3779b97f4a7c15ull;
	int ret = pc_source_custom(&ops, pat, size, out);
	if (ret < 0)
		free(pat);
	return ret;
}
