/* SPDX-License-Identifier: MIT */
/*
 * ws_workload.c - `--workload ws`: a guest that touches a working set, the
 * way a booting or resuming VM does.
 *
 * One idea: every run is drawn around one base working set.  The base set
 * (seeded by ws_params.base) is a fraction of memory made of clusters:
 * spans of 4..64 pages with holes, visited cluster after cluster in a
 * random order, and inside a cluster in a random order whose next touch is
 * the next page with probability next_page.  A run (seeded by
 * ws_params.seed) drops a share x of the base pages and adds as many
 * pages near the base clusters, then jitters the order locally.  Two runs
 * that each swap x of S pages independently share about S(1 - x)^2, so
 * their Jaccard similarity is J = (1-x)^2 / (2 - (1-x)^2); x is solved
 * from the J asked for.  Clusters go to vCPUs round robin.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double unit(uint64_t *s)
{
	return (double)(splitmix(s) >> 11) / (double)(1ull << 53);
}

/* Square root of @v in [0, 1] (Newton), without libm. */
static double root(double v)
{
	double x = v > 0.25 ? v : 0.5;
	for (int i = 0; i < 40 && v > 0; i++)
		x = 0.5 * (x + v / x);
	return v > 0 ? x : 0;
}

/* A generator state for @seed: mixed, so that neighbouring seeds do not
 * give shifted copies of one sequence (splitmix steps by a constant). */
static uint64_t seeded(uint64_t seed, uint64_t salt)
{
	uint64_t s = seed ^ salt;
	return splitmix(&s);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
	return n ? splitmix(s) % n : 0;
}

struct touch {
	uint64_t page;
	uint32_t cluster;
};

struct seq {
	struct touch *t;
	uint64_t n, cap;
};

static int push(struct seq *q, uint64_t page, uint32_t cluster)
{
	if (q->n == q->cap) {
		uint64_t cap = q->cap ? q->cap * 2 : 1024;
		struct touch *t = realloc(q->t, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		q->t = t;
		q->cap = cap;
	}
	q->t[q->n++] = (struct touch){ page, cluster };
	return 0;
}

/* The pages of one cluster (sorted) in a random order whose next touch is
 * the next page with probability @next. */
static int order_cluster(uint64_t *pages, unsigned n, double next,
			 uint32_t cluster, uint64_t *rng, struct seq *out)
{
	bool used[64] = { false };
	unsigned at = (unsigned)below(rng, n), left = n;
	for (;;) {
		used[at] = true;
		if (push(out, pages[at], cluster) < 0)
			return -ENOMEM;
		if (--left == 0)
			return 0;
		if (at + 1 < n && !used[at + 1] && pages[at + 1] == pages[at] + 1 &&
		    unit(rng) < next) {
			at++;
			continue;
		}
		/* Any other unvisited page, avoiding the next one. */
		unsigned k = (unsigned)below(rng, left), pick = n;
		for (unsigned i = 0; i < n; i++) {
			if (used[i])
				continue;
			if (k-- == 0) {
				pick = i;
				break;
			}
		}
		if (left > 1 && pick == at + 1 && pages[pick] == pages[at] + 1)
			for (unsigned i = 0; i < n; i++)
				if (!used[i] && i != pick) {
					pick = i;
					break;
				}
		at = pick;
	}
}

/* Inside a cluster the next page is often a hole or visited already, and
 * the jitter breaks some pairs: the chance asked for is scaled by this
 * (measured: `restore --workload ws` prints the share it got). */
#define NEXT_GAIN 5.2

/* The base working set in its base order. */
static int base_set(const struct ws_params *p, uint64_t pages, uint8_t *in,
		    struct seq *out, uint32_t *nclusters)
{
	uint64_t rng = seeded(p->base, 0x2545f4914f6cdd1dull);
	uint64_t want = (uint64_t)(p->fraction * (double)pages);
	if (want < 1)
		want = 1;
	/* Clusters first (a page set), then their order. */
	struct cl {
		uint64_t pages[64];
		unsigned n;
	} *cls = NULL;
	uint64_t ncl = 0, cap = 0, have = 0;
	unsigned tries = 0;
	while (have < want && tries < 1000000) {
		tries++;
		unsigned span = 4 + (unsigned)below(&rng, 61);
		uint64_t start = below(&rng, pages);
		if (ncl == cap) {
			cap = cap ? cap * 2 : 256;
			struct cl *c = realloc(cls, cap * sizeof(*c));
			if (!c) {
				free(cls);
				return -ENOMEM;
			}
			cls = c;
		}
		struct cl *c = &cls[ncl];
		c->n = 0;
		for (unsigned i = 0; i < span && start + i < pages && have < want; i++) {
			uint64_t pg = start + i;
			if (in[pg] || unit(&rng) >= 0.75)
				continue; /* a hole in the cluster */
			in[pg] = 1;
			c->pages[c->n++] = pg;
			have++;
		}
		if (c->n)
			ncl++;
	}
	/* Visit the clusters in a random order. */
	uint32_t *perm = malloc((ncl ? ncl : 1) * sizeof(*perm));
	if (!perm) {
		free(cls);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < ncl; i++)
		perm[i] = (uint32_t)i;
	for (uint64_t i = ncl; i > 1; i--) {
		uint64_t j = below(&rng, i);
		uint32_t t = perm[i - 1];
		perm[i - 1] = perm[j];
		perm[j] = t;
	}
	int ret = 0;
	for (uint64_t i = 0; i < ncl && ret == 0; i++)
		ret = order_cluster(cls[perm[i]].pages, cls[perm[i]].n,
				    p->next_page * NEXT_GAIN, perm[i], &rng, out);
	*nclusters = (uint32_t)ncl;
	free(perm);
	free(cls);
	return ret;
}

/* This run: the base set with a share of its pages swapped for pages near
 * the base clusters, and its order jittered locally. */
static int run_set(const struct ws_params *p, uint64_t pages, uint8_t *in,
		   const struct seq *base, struct seq *out)
{
	uint64_t rng = seeded(p->seed, 0x5851f42d4c957f2dull);
	double j = p->similarity;
	double keep2 = 2 * j / (1 + j); /* (1 - x)^2 */
	double x = 1 - root(keep2);
	for (uint64_t i = 0; i < base->n; i++) {
		const struct touch *t = &base->t[i];
		if (unit(&rng) < x) {
			/* Dropped; a page near it comes instead, at its place. */
			for (unsigned k = 0; k < 16; k++) {
				int64_t d = (int64_t)below(&rng, 129) - 64;
				int64_t q = (int64_t)t->page + d;
				if (q < 0 || (uint64_t)q >= pages || in[q])
					continue;
				in[q] = 2; /* taken by this run */
				if (push(out, (uint64_t)q, t->cluster) < 0)
					return -ENOMEM;
				break;
			}
			continue;
		}
		if (push(out, t->page, t->cluster) < 0)
			return -ENOMEM;
	}
	/* Local jitter: a touch trades places with one a few steps on. */
	for (uint64_t i = 0; i + 1 < out->n; i++) {
		if (unit(&rng) >= 0.2)
			continue;
		uint64_t k = i + 1 + below(&rng, 8);
		if (k >= out->n)
			continue;
		struct touch t = out->t[i];
		out->t[i] = out->t[k];
		out->t[k] = t;
	}
	return 0;
}

int ws_orders(const struct ws_params *p, uint64_t pages, unsigned vcpus,
	      uint64_t **order, uint64_t *count, double *next_share)
{
	struct seq base = { 0 }, run = { 0 };
	uint8_t *in = calloc(pages ? pages : 1, 1);
	uint32_t ncl = 0;
	int ret = in ? base_set(p, pages, in, &base, &ncl) : -ENOMEM;
	if (ret == 0)
		ret = run_set(p, pages, in, &base, &run);
	for (unsigned v = 0; v < vcpus; v++) {
		order[v] = NULL;
		count[v] = 0;
	}
	for (unsigned v = 0; v < vcpus && ret == 0; v++) {
		order[v] = malloc((run.n ? run.n : 1) * sizeof(uint64_t));
		if (!order[v])
			ret = -ENOMEM;
	}
	uint64_t nexts = 0;
	for (uint64_t i = 0; i < run.n && ret == 0; i++) {
		unsigned v = run.t[i].cluster % vcpus;
		order[v][count[v]++] = run.t[i].page;
		if (i && run.t[i].page == run.t[i - 1].page + 1)
			nexts++;
	}
	if (next_share)
		*next_share = run.n > 1 ? (double)nexts / (double)(run.n - 1) : 0;
	if (ret < 0)
		for (unsigned v = 0; v < vcpus; v++) {
			free(order[v]);
			order[v] = NULL;
		}
	free(in);
	free(base.t);
	free(run.t);
	return ret;
}
