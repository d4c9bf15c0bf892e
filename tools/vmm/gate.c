/* SPDX-License-Identifier: MIT */
/*
 * gate.c - the start line of a benchmark's vCPU threads (see gate.h).
 */
#include <errno.h>
#include <time.h>

#include "gate.h"

void gate_init(struct gate *g)
{
	*g = (struct gate){ 0 };
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
}

void gate_destroy(struct gate *g)
{
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
}

bool gate_arrive(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->ready++;
	pthread_cond_broadcast(&g->cond);
	while (g->go == 0)
		pthread_cond_wait(&g->cond, &g->lock);
	bool run = g->go > 0;
	pthread_mutex_unlock(&g->lock);
	return run;
}

void gate_leave(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->finished++;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

int gate_run(struct gate *g, unsigned n, bool run, pc_region *r,
	     uint64_t *start_ns)
{
	int ret = 0;
	pthread_mutex_lock(&g->lock);
	while (g->ready < n)
		pthread_cond_wait(&g->cond, &g->lock);
	*start_ns = gate_now_ns();
	g->go = run ? 1 : -1;
	pthread_cond_broadcast(&g->cond);
	while (g->finished < n && ret == 0) {
		/* Wake now and then to look at the region: its failure
		 * leaves sleepers that never report. */
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 20 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&g->cond, &g->lock, &until);
		if (r) {
			int err = pc_region_wait(r, 0);
			if (err < 0 && err != -ETIMEDOUT)
				ret = -EIO;
		}
	}
	pthread_mutex_unlock(&g->lock);
	return ret;
}
