/* SPDX-License-Identifier: MIT */
/*
 * http_batch.c - the HTTP source's demand batches: the runs of a batch
 * of faults, several in flight at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

/* ---- a batch of demand runs ---------------------------------------------
 *
 * A wait-mode handler passes every run of a batch of faults at once: they
 * go out HTTP_BATCH_CONNS at a time with curl_multi, not one round trip
 * after the other.  A multi handle keeps its own connections (libcurl's
 * connection cache is the multi handle's), so a group of handles stays
 * with its multi handle, in a pool of groups of its own.
 */


void http_group_free(struct batch_group *g)
{
	if (!g)
		return;
	for (unsigned i = 0; i < HTTP_BATCH_CONNS; i++)
		http_conn_free(g->c[i]);
	curl_multi_cleanup(g->multi);
	free(g);
}

/* An idle group, or a new one; NULL when out of memory. */
struct batch_group *http_group_get(struct http_source *hs)
{
	pthread_mutex_lock(&hs->lock);
	struct batch_group *g = hs->groups;
	if (g)
		hs->groups = g->next;
	pthread_mutex_unlock(&hs->lock);
	if (g)
		return g;
	if (!(g = calloc(1, sizeof(*g))) || !(g->multi = curl_multi_init())) {
		free(g);
		return NULL;
	}
	for (unsigned i = 0; i < HTTP_BATCH_CONNS; i++)
		if (!(g->c[i] = http_conn_new(hs))) {
			http_group_free(g);
			return NULL;
		}
	curl_multi_setopt(g->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_BATCH_CONNS);
	return g;
}

void http_group_put(struct http_source *hs, struct batch_group *g)
{
	pthread_mutex_lock(&hs->lock);
	g->next = hs->groups;
	hs->groups = g;
	pthread_mutex_unlock(&hs->lock);
}

/* Ranges [0, @n) of @unit bytes each ([@at[i], @at[i] + @count[i]) units),
 * each a checked range request, several in flight: 0, or the first error.
 * Without @rets the others then stop; with it every range is tried (but
 * those whose @rets[i] is not 0 on entry) and @rets[i] gets its result. */
int http_batch_fetch(struct http_source *hs, struct batch_group *g,
		     unsigned n, uint64_t unit, const uint64_t *at,
		     const uint64_t *count, void *const *dst, int *rets)
{
	struct xfer x[HTTP_BATCH_CONNS];
	char range[HTTP_BATCH_CONNS][64], msg[HTTP_ERR_LEN];
	bool busy[HTTP_BATCH_CONNS] = { false };
	unsigned next = 0, running = 0, item[HTTP_BATCH_CONNS];
	int ret = 0;
	for (;;) {
		for (unsigned i = 0; i < HTTP_BATCH_CONNS && next < n && (!ret || rets); i++) {
			if (busy[i])
				continue;
			while (rets && next < n && rets[next])
				next++;
			if (next == n)
				break;
			x[i] = (struct xfer){ .hs = hs, .dst = dst[next],
					      .off = at[next] * unit,
					      .len = count[next] * unit };
			item[i] = next++;
			http_range_start(hs, g->c[i], &x[i], range[i]);
			if (curl_multi_add_handle(g->multi, g->c[i]->h) != CURLM_OK) {
				snprintf(msg, sizeof(msg), "GET %s bytes=%s: libcurl could not start it",
					 hs->url_shown, range[i]);
				ret = -ENOMEM;
				if (rets)
					rets[item[i]] = ret;
				break;
			}
			busy[i] = true;
			running++;
		}
		if (!running)
			break;
		int still = 0;
		curl_multi_perform(g->multi, &still);
		CURLMsg *m;
		int queued;
		while ((m = curl_multi_info_read(g->multi, &queued))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			for (unsigned i = 0; i < HTTP_BATCH_CONNS; i++) {
				if (!busy[i] || g->c[i]->h != m->easy_handle)
					continue;
				curl_multi_remove_handle(g->multi, g->c[i]->h);
				busy[i] = false;
				running--;
				char why[HTTP_ERR_LEN];
				int err = http_range_finish(hs, g->c[i], &x[i], m->data.result,
						       range[i], why, sizeof(why));
				if (rets)
					rets[item[i]] = err;
				if (err < 0 && !ret) {
					ret = err;
					snprintf(msg, sizeof(msg), "%s", why);
				}
				break;
			}
		}
		if (ret && !rets) { /* the batch fails: the rest need not arrive */
			for (unsigned i = 0; i < HTTP_BATCH_CONNS; i++)
				if (busy[i])
					curl_multi_remove_handle(g->multi, g->c[i]->h);
			break;
		}
		if (running)
			curl_multi_poll(g->multi, NULL, 0, 1000, NULL);
	}
	if (ret < 0)
		http_note_error(hs, ret, msg);
	return ret;
}
