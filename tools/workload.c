/* SPDX-License-Identifier: MIT */
/*
 * workload.c - vCPU threads, after the KVM selftest's memstress guest:
 * each thread touches one word of every 4 KiB page of its slice (or of all
 * memory with overlap), in order or in a random permutation.  The clock
 * starts when every thread is ready and stops at the last join.  Each
 * access is timed, so the latency a vCPU sees (trap, delivery, fetch,
 * install, retry) is measured the same way in every mode and the baseline.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gate.h"
#include "tools.h"

#define PAGE 4096ull

struct vcpu {
	const struct workload *w;
	unsigned id;
	uint64_t first, npages;
	uint64_t *order;
	struct gate *gate;
	double seconds;
	uint64_t passes;
	struct hist *latency, *stalls;
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int make_order(struct vcpu *v)
{
	v->order = malloc(v->npages * sizeof(*v->order));
	if (!v->order)
		return -ENOMEM;
	for (uint64_t i = 0; i < v->npages; i++)
		v->order[i] = v->first + (v->w->order == ORDER_STRIDE ?
						  i * STRIDE_PAGES % v->npages : i);
	if (v->w->order == ORDER_STRIDE && v->npages % STRIDE_PAGES == 0)
		for (uint64_t i = 0; i < v->npages; i++) /* not coprime: plain */
			v->order[i] = v->first + i;
	if (v->w->order == ORDER_RANDOM && v->npages > 1) {
		uint64_t seed = 0x9e3779b97f4a7c15ull * (v->id + 1);
		for (uint64_t i = v->npages - 1; i > 0; i--) {
			uint64_t j = xorshift(&seed) % (i + 1);
			uint64_t t = v->order[i];
			v->order[i] = v->order[j];
			v->order[j] = t;
		}
	}
	return 0;
}

static void *vcpu_main(void *arg)
{
	struct vcpu *v = arg;
	const struct workload *w = v->w;
	if (w->region)
		pc_thread_attach(w->region, v->id);
	/* Per thread: on Linux a nice value belongs to the thread.  Raising
	 * one's own cannot be refused. */
	if (w->nice)
		(void)setpriority(PRIO_PROCESS, (id_t)gettid(), w->nice);
	if (!gate_arrive(v->gate)) {
		gate_leave(v->gate);
		return NULL;
	}

	uint64_t t0 = ns_now(), prev = t0;
	bool last_pass = !w->until_complete;
	for (;;) {
		for (uint64_t i = 0; i < v->npages; i++) {
			uint64_t p = v->order[i];
			char *page = w->mem + p * PAGE;
			bool missing = w->region && w->until_complete &&
				       !pc_region_page_present(w->region, p * PAGE);
			volatile uint64_t *word =
				(volatile uint64_t *)(page + written_offset(p));
			if (w->read_too)
				(void)*(volatile uint64_t *)(page + (written_offset(p) + 8) % PAGE);
			if (w->write)
				*word = written_value(p);
			else
				(void)*word; /* a volatile read: the access is the point */
			uint64_t t = ns_now();
			hist_record(v->latency, t - prev);
			if (missing)
				hist_record(v->stalls, t - prev);
			prev = t;
		}
		v->passes++;
		if (last_pass)
			break;
		last_pass = pc_region_complete(w->region);
	}	v->seconds = (double)(prev - t0) / 1e9;
	if (w->region)
		pc_thread_detach(w->region);
	gate_leave(v->gate);
	return NULL;
}

int workload_run(const struct workload *w, struct workload_result *res)
{
	uint64_t pages = w->size / PAGE;
	struct vcpu *v = calloc(w->vcpus, sizeof(*v));
	pthread_t *tids = calloc(w->vcpus, sizeof(*tids));
	/* On the heap: when the region fails, stuck vCPUs are left behind
	 * still pointing at it. */
	struct gate *gate = malloc(sizeof(*gate));
	int ret = 0;
	unsigned started = 0;

	memset(res, 0, sizeof(*res));
	res->vcpu_rate = calloc(w->vcpus, sizeof(double));
	res->latency = calloc(1, sizeof(*res->latency));
	/* Stalls are told apart under load only (cmd_bench takes the rest of
	 * the result over and frees it itself). */
	res->stalls = w->until_complete ? calloc(1, sizeof(*res->stalls)) : NULL;
	if (!v || !tids || !gate || !res->vcpu_rate || !res->latency ||
	    (w->until_complete && !res->stalls)) {
		ret = -ENOMEM;
		goto out;
	}
	gate_init(gate);
	uint64_t **ws_order = NULL, *ws_count = NULL;
	if (w->order == ORDER_WS) {
		ws_order = calloc(w->vcpus, sizeof(*ws_order));
		ws_count = calloc(w->vcpus, sizeof(*ws_count));
		if (!ws_order || !ws_count ||
		    ws_orders(w->ws, pages, w->vcpus, ws_order, ws_count,
			      &res->ws_next_share) < 0) {
			free(ws_order);
			free(ws_count);
			ret = -ENOMEM;
			goto out;
		}
		/* The working set's pages, not a slice; freed with v[]. */
		res->touched = calloc((pages + 63) / 64, sizeof(uint64_t));
		for (unsigned i = 0; i < w->vcpus; i++) {
			v[i].order = ws_order[i];
			v[i].npages = ws_count[i];
			for (uint64_t k = 0; res->touched && k < ws_count[i]; k++)
				res->touched[ws_order[i][k] / 64] |= 1ull << (ws_order[i][k] % 64);
		}
		free(ws_order);
		free(ws_count);
		if (!res->touched) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (unsigned i = 0; i < w->vcpus; i++) {
		v[i].w = w;
		v[i].id = i;
		v[i].first = w->overlap ? 0 : pages * i / w->vcpus;
		if (w->order != ORDER_WS)
			v[i].npages = w->overlap ? pages :
					pages * (i + 1) / w->vcpus - v[i].first;
		v[i].gate = gate;
		v[i].latency = calloc(1, sizeof(struct hist));
		v[i].stalls = w->until_complete ? calloc(1, sizeof(struct hist)) : NULL;
		if (!v[i].latency || (w->until_complete && !v[i].stalls) ||
		    (w->order != ORDER_WS && make_order(&v[i]) < 0)) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (; started < w->vcpus; started++) {
		int err = pthread_create(&tids[started], NULL, vcpu_main,
					 &v[started]);
		if (err) {
			ret = -err;
			break;
		}
	}
	uint64_t t0;
	if (gate_run(gate, started, ret == 0, w->region, &t0) < 0) {
		/* vCPUs of a failed region are parked for good (asleep in
		 * the kernel in wait mode, in the SIGBUS handler in exit
		 * mode): leave them, and their memory, to the process's end. */
		return -EIO;
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	gate_destroy(gate);
	res->seconds = (double)(ns_now() - t0) / 1e9;
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < w->vcpus; i++) {
		res->accesses += v[i].npages * v[i].passes;
		res->vcpu_rate[i] = v[i].seconds > 0 ?
					    (double)(v[i].npages * v[i].passes) / v[i].seconds :
					    0;
		hist_merge(res->latency, v[i].latency);
		if (res->stalls)
			hist_merge(res->stalls, v[i].stalls);
	}
out:
	free(gate);
	if (v)
		for (unsigned i = 0; i < w->vcpus; i++) {
			free(v[i].order);
			free(v[i].latency);
			free(v[i].stalls);
		}
	free(v);
	free(tids);
	if (ret < 0)
		workload_result_free(res);
	return ret;
}

void workload_result_free(struct workload_result *res)
{
	free(res->vcpu_rate);
	free(res->latency);
	free(res->stalls);
	free(res->touched);
	res->touched = NULL;
	res->vcpu_rate = NULL;
	res->latency = res->stalls = NULL;
}

uint64_t verify_memory(const char *mem, uint64_t size, pc_source *src,
		       const uint64_t *touched, uint64_t *first_bad)
{
	enum { CHUNK = 256 };
	char *expect = malloc(CHUNK * PAGE);
	uint64_t bad = 0, pages = size / PAGE;

	if (!expect) {
		*first_bad = 0;
		return pages; /* cannot say it matched */
	}
	for (uint64_t p = 0; p < pages; p += CHUNK) {
		uint64_t n = pages - p < CHUNK ? pages - p : CHUNK;
		if (pc_source_read(src, p, n, expect) < 0) {
			if (!bad)
				*first_bad = p;
			bad += n;
			continue;
		}
		for (uint64_t i = 0; i < n; i++) {
			if (touched && !((touched[(p + i) / 64] >> ((p + i) % 64)) & 1))
				continue; /* never written: the source's bytes */
			uint64_t v = written_value(p + i);
			memcpy(expect + i * PAGE + written_offset(p + i), &v,
			       sizeof(v));
		}
		if (!memcmp(expect, mem + p * PAGE, n * PAGE))
			continue;
		for (uint64_t i = 0; i < n; i++)
			if (memcmp(expect + i * PAGE, mem + (p + i) * PAGE,
				   PAGE)) {
				if (!bad)
					*first_bad = p + i;
				bad++;
			}
	}
	free(expect);
	return bad;
}
