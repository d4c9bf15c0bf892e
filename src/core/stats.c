/* SPDX-License-Identifier: MIT */
/*
 * stats.c - counters and latency histograms, summed over the per-thread
 * slots at read time (the fault path only ever touches its own slot).
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

static uint64_t get(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

int pc_region_stats(const pc_region *r, struct pc_stats **out)
{
	unsigned n = r->nslots;
	struct pc_stats *s = calloc(1, sizeof(*s) + n * sizeof(s->thread[0]));
	struct hist *all = calloc(1, sizeof(*all));
	if (!s || !all) {
		free(s);
		free(all);
		return -ENOMEM;
	}
	s->pages = r->npages;
	s->page_size = r->page_size;
	s->present = region_present_count(r);
	s->nthreads = n;
	for (unsigned i = 0; i < n; i++) {
		const struct thread_slot *t = &r->slots[i];
		s->thread[i].faults = get(&t->faults);
		s->thread[i].blocked_ns = get(&t->blocked_ns);
		s->faults += s->thread[i].faults;
		s->blocked_ns += s->thread[i].blocked_ns;
		s->pages_demand += get(&t->pages[ORIGIN_DEMAND]);
		s->pages_prefetch += get(&t->pages[ORIGIN_PREFETCH]);
		s->pages_fill += get(&t->pages[ORIGIN_FILL]);
		s->pages_replay += get(&t->pages[ORIGIN_REPLAY]);
		s->zero_pages += get(&t->zero_pages);
		s->duplicate_fetches_avoided += get(&t->dups_avoided);
		s->refaults += get(&t->refaults);
		s->bytes_fetched += get(&t->bytes_fetched);
		s->fetches += get(&t->fetches);
		s->fetch_retries += get(&t->fetch_retries);
		s->pages_removed += get(&t->pages_removed);
		hist_merge(all, &t->latency);
	}
	hist_summarize(all, &s->latency);
	free(all);

	uint64_t end = atomic_load(&r->end_ns);
	if (r->start_ns)
		s->elapsed_ns = (end ? end : now_ns()) - r->start_ns;
	*out = s;
	return 0;
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

void pc_stats_print(const struct pc_stats *s, FILE *f)
{
	fprintf(f, "pages      %llu present of %llu (%llu KiB pages)\n",
		(unsigned long long)s->present, (unsigned long long)s->pages,
		(unsigned long long)(s->page_size >> 10));
	fprintf(f, "installed  %llu on demand, %llu prefetched, %llu by fill, ",
		(unsigned long long)s->pages_demand,
		(unsigned long long)s->pages_prefetch,
		(unsigned long long)s->pages_fill);
	if (s->pages_replay)
		fprintf(f, "%llu replayed, ", (unsigned long long)s->pages_replay);
	fprintf(f, "%llu zero pages\n", (unsigned long long)s->zero_pages);
	fprintf(f, "faults     %llu (%llu refaults, %llu waited on a fetch in flight instead of fetching again)\n",
		(unsigned long long)s->faults, (unsigned long long)s->refaults,
		(unsigned long long)s->duplicate_fetches_avoided);
	fprintf(f, "fetched    %.1f MiB in %llu requests",
		(double)s->bytes_fetched / (1 << 20),
		(unsigned long long)s->fetches);
	if (s->fetch_retries)
		fprintf(f, " (%llu asked again after a transient error)",
			(unsigned long long)s->fetch_retries);
	if (s->pages_removed)
		fprintf(f, "; %llu pages given back by their owner",
			(unsigned long long)s->pages_removed);
	fprintf(f, "\n");
	fprintf(f, "resolve    p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us (pager side)\n",
		us(s->latency.p50), us(s->latency.p90), us(s->latency.p99),
		us(s->latency.p999), us(s->latency.max));
	fprintf(f, "blocktime  %.3f ms total", (double)s->blocked_ns / 1e6);
	for (unsigned i = 0; i < s->nthreads; i++) {
		const struct pc_thread_stats *t = &s->thread[i];
		if (!t->faults)
			continue;
		if (i + 1 == s->nthreads)
			fprintf(f, "; other %llu faults %.3f ms",
				(unsigned long long)t->faults,
				(double)t->blocked_ns / 1e6);
		else
			fprintf(f, "; vcpu%u %llu faults %.3f ms", i,
				(unsigned long long)t->faults,
				(double)t->blocked_ns / 1e6);
	}
	fprintf(f, "\n");
	if (s->elapsed_ns)
		fprintf(f, "elapsed    %.3f s from start%s\n",
			(double)s->elapsed_ns / 1e9,
			s->present == s->pages ? " to completion" : "");
}
