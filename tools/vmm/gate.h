/* SPDX-License-Identifier: MIT */
/*
 * gate.h - the start line of a benchmark's vCPU threads (tools/vmm/gate.c):
 * every thread reports ready, the clock starts when all are, and the
 * starter waits for them to finish, or for their region to fail (a
 * vCPU whose pager failed is parked for good, in either mode).
 * Internal: used by the KVM runner and the CLI's thread workload.
 */
#ifndef PC_GATE_H
#define PC_GATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "postcopy.h"

/* The benchmark VMM's clock: monotonic, in ns. */
static inline uint64_t gate_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned ready;
	unsigned finished;
	int go; /* 1 run, -1 give up (a thread could not be created) */
};

void gate_init(struct gate *g);
void gate_destroy(struct gate *g);

/* A vCPU thread: report ready and wait for the start.  False: give up. */
bool gate_arrive(struct gate *g);
/* A vCPU thread: report done (also after giving up). */
void gate_leave(struct gate *g);

/*
 * The starter: wait until @n threads arrived, then let them run (or give
 * up, when @run is false).  *start_ns is read just before the release:
 * once released, the threads may finish before the starter runs again.
 * Then wait until the @n threads left: 0, or -EIO as soon as @r (may be
 * NULL) failed, leaving its stuck threads behind.
 */
int gate_run(struct gate *g, unsigned n, bool run, pc_region *r,
	     uint64_t *start_ns);

#endif
