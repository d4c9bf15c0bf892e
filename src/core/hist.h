/* SPDX-License-Identifier: MIT */
/*
 * hist.h - log-scale latency histogram (internal).
 *
 * Eight sub-buckets per power of two: about 12% resolution at any scale,
 * 4 KiB per histogram, lock-free recording with relaxed atomics so the
 * owning thread can record from a signal handler and a reader can snapshot
 * at any time.
 */
#ifndef PC_HIST_H
#define PC_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define HIST_SUB_BITS 3
#define HIST_BUCKETS (64 << HIST_SUB_BITS)

struct hist {
	_Atomic uint64_t bucket[HIST_BUCKETS];
	_Atomic uint64_t max;
};

/* Record one sample (nanoseconds).  Async-signal-safe. */
void hist_record(struct hist *h, uint64_t ns);

/* Add every sample of @from into @into (not atomic as a whole). */
void hist_merge(struct hist *into, const struct hist *from);

uint64_t hist_count(const struct hist *h);

/* The value below which @permille/1000 of the samples fall. */
uint64_t hist_percentile(const struct hist *h, unsigned permille);

uint64_t hist_max(const struct hist *h);

/* Count, p50, p90, p99, p99.9 and max in one go. */
struct pc_latency;
void hist_summarize(const struct hist *h, struct pc_latency *out);

/* The value a sample in bucket @b is reported as (for CDF output). */
uint64_t hist_bucket_value(unsigned b);

#endif
