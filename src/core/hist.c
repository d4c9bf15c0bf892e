/* SPDX-License-Identifier: MIT */
/*
 * hist.c - log-scale latency histogram.  A value v >= 8 lands in bucket
 * (octave - 2) * 8 + (the three bits below its top bit); values below 8 get
 * a bucket each.  A percentile reports the middle of its bucket.
 */
#include "hist.h"
#include "postcopy.h"

static unsigned bucket_of(uint64_t v)
{
	if (v < (1u << HIST_SUB_BITS))
		return (unsigned)v;
	unsigned top = 63 - (unsigned)__builtin_clzll(v);
	unsigned sub = (unsigned)(v >> (top - HIST_SUB_BITS)) &
		       ((1u << HIST_SUB_BITS) - 1);
	return ((top - HIST_SUB_BITS + 1) << HIST_SUB_BITS) + sub;
}

static uint64_t bucket_low(unsigned b)
{
	if (b < (1u << HIST_SUB_BITS))
		return b;
	unsigned top = (b >> HIST_SUB_BITS) + HIST_SUB_BITS - 1;
	uint64_t sub = b & ((1u << HIST_SUB_BITS) - 1);
	return (1ull << top) | (sub << (top - HIST_SUB_BITS));
}

uint64_t hist_bucket_value(unsigned b)
{
	if (b < (1u << HIST_SUB_BITS))
		return b;
	unsigned top = (b >> HIST_SUB_BITS) + HIST_SUB_BITS - 1;
	return bucket_low(b) + (1ull << (top - HIST_SUB_BITS)) / 2;
}

void hist_record(struct hist *h, uint64_t ns)
{
	atomic_fetch_add_explicit(&h->bucket[bucket_of(ns)], 1,
				  memory_order_relaxed);
	uint64_t old = atomic_load_explicit(&h->max, memory_order_relaxed);
	while (ns > old &&
	       !atomic_compare_exchange_weak_explicit(&h->max, &old, ns,
						      memory_order_relaxed,
						      memory_order_relaxed))
		;
}

void hist_merge(struct hist *into, const struct hist *from)
{
	for (unsigned b = 0; b < HIST_BUCKETS; b++) {
		uint64_t n = atomic_load_explicit(&from->bucket[b],
						  memory_order_relaxed);
		if (n)
			atomic_fetch_add_explicit(&into->bucket[b], n,
						  memory_order_relaxed);
	}
	uint64_t m = hist_max(from);
	if (m > hist_max(into))
		atomic_store_explicit(&into->max, m, memory_order_relaxed);
}

uint64_t hist_count(const struct hist *h)
{
	uint64_t n = 0;
	for (unsigned b = 0; b < HIST_BUCKETS; b++)
		n += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
	return n;
}

uint64_t hist_max(const struct hist *h)
{
	return atomic_load_explicit(&h->max, memory_order_relaxed);
}

uint64_t hist_percentile(const struct hist *h, unsigned permille)
{
	uint64_t total = hist_count(h);
	if (!total)
		return 0;
	/* Rank of the sample we want, 1-based, rounded up. */
	uint64_t rank = (total * permille + 999) / 1000;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned b = 0; b < HIST_BUCKETS; b++) {
		seen += atomic_load_explicit(&h->bucket[b],
					     memory_order_relaxed);
		if (seen >= rank) {
			uint64_t v = hist_bucket_value(b);
			uint64_t m = hist_max(h);
			return v > m ? m : v;
		}
	}
	return hist_max(h);
}

void hist_summarize(const struct hist *h, struct pc_latency *out)
{
	out->count = hist_count(h);
	out->p50 = hist_percentile(h, 500);
	out->p90 = hist_percentile(h, 900);
	out->p99 = hist_percentile(h, 990);
	out->p999 = hist_percentile(h, 999);
	out->max = hist_max(h);
}
