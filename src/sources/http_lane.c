/* SPDX-License-Identifier: MIT */
/*
 * http_lane.c - the HTTP source's fill lane: the filler's reads, served
 * ahead of it by a thread with several range requests in flight.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

/* ---- the fill lane ------------------------------------------------------ *
 *
 * The filler asks for one run at a time (64 KiB to 2 MiB) and installs it
 * before it asks for the next; measured, that one thread was busy all the
 * time, receiving then installing, and the connection idle while it
 * installed.  So its reads go ahead of it: a thread of the source's own
 * keeps up to HTTP_FILL_CONNS range requests of HTTP_FILL_CHUNK in flight
 * with curl_multi, on connections of their own (demand fetches never wait
 * behind them, in the pool or on a connection), while the filler copies
 * what has arrived.  Each range is a request like any other, checked the
 * same way (http_range_finish()); a failed one is the error of the read that
 * needs it, and is asked again only when read again.
 *
 * The stream starts where a read misses it, with just that run (a filler
 * that jumps after a guest at random wastes nothing), and the number of
 * ranges kept ahead doubles with every read that continues it.
 */

static uint64_t slot_end(const struct fill_slot *s)
{
	return s->off + s->len;
}

/* Lane lock held: slot @s is of no use any more. */
static void slot_drop(struct fill_slot *s)
{
	if (s->state == SLOT_BUSY)
		s->stale = true;
	else
		s->state = SLOT_FREE;
}

/* Lane lock held: the next range to ask for into a free slot, if any. */
static struct fill_slot *lane_pick(struct http_source *hs)
{
	struct fill_lane *l = &hs->lane;
	unsigned ahead = 0;
	struct fill_slot *free_slot = NULL;
	if (!l->valid || l->stop || l->next >= hs->size)
		return NULL;
	for (unsigned i = 0; i < HTTP_FILL_CONNS; i++) {
		struct fill_slot *s = &l->slot[i];
		if (s->state == SLOT_FREE)
			free_slot = free_slot ? free_slot : s;
		else if (!s->stale)
			ahead++;
	}
	if (!free_slot || (l->next >= l->want_end && ahead >= l->depth))
		return NULL;
	uint64_t len = HTTP_FILL_CHUNK;
	if (l->depth == 1 && l->next < l->want_end) /* just the run asked for */
		len = l->want_end - l->next;
	if (len > hs->size - l->next)
		len = hs->size - l->next;
	free_slot->off = l->next;
	free_slot->len = len;
	free_slot->state = SLOT_BUSY;
	free_slot->stale = false;
	l->next += len;
	return free_slot;
}

/* The lane thread: a slot's answer is in. */
static void lane_answered(struct http_source *hs, struct fill_slot *s,
			  CURLcode c)
{
	struct fill_lane *l = &hs->lane;
	char range[64], msg[HTTP_ERR_LEN] = "";
	snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, s->off,
		 slot_end(s) - 1);
	curl_multi_remove_handle(l->multi, s->c->h);
	s->added = false;
	int ret = http_range_finish(hs, s->c, &s->x, c, range, msg, sizeof(msg));
	pthread_mutex_lock(&l->lock);
	if (s->stale) {
		s->state = SLOT_FREE;
	} else {
		s->state = ret < 0 ? SLOT_FAILED : SLOT_READY;
		s->err = ret;
		snprintf(s->msg, sizeof(s->msg), "%s", msg);
	}
	pthread_cond_broadcast(&l->done);
	pthread_mutex_unlock(&l->lock);
}

static void *lane_main(void *arg)
{
	struct http_source *hs = arg;
	struct fill_lane *l = &hs->lane;
	for (;;) {
		pthread_mutex_lock(&l->lock);
		if (l->stop) {
			pthread_mutex_unlock(&l->lock);
			break;
		}
		/* Abort what nobody wants, then ask for what is wanted. */
		for (unsigned i = 0; i < HTTP_FILL_CONNS; i++) {
			struct fill_slot *s = &l->slot[i];
			if (s->added && s->stale) {
				curl_multi_remove_handle(l->multi, s->c->h);
				s->added = false;
				s->state = SLOT_FREE;
			}
		}
		struct fill_slot *s;
		while ((s = lane_pick(hs))) {
			s->x = (struct xfer){ .hs = hs, .dst = s->buf, .off = s->off,
					      .len = s->len };
			char range[64];
			http_range_start(hs, s->c, &s->x, range);
			if (curl_multi_add_handle(l->multi, s->c->h) != CURLM_OK) {
				s->state = SLOT_FAILED;
				s->err = -ENOMEM;
				snprintf(s->msg, sizeof(s->msg), "GET %s bytes=%s: libcurl could not start it",
					 hs->url_shown, range);
				pthread_cond_broadcast(&l->done);
				continue;
			}
			s->added = true;
		}
		pthread_mutex_unlock(&l->lock);

		int running = 0;
		curl_multi_perform(l->multi, &running);
		CURLMsg *m;
		int queued;
		while ((m = curl_multi_info_read(l->multi, &queued))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			for (unsigned i = 0; i < HTTP_FILL_CONNS; i++)
				if (l->slot[i].added && l->slot[i].c->h == m->easy_handle) {
					lane_answered(hs, &l->slot[i], m->data.result);
					break;
				}
		}
		/* Until a socket is ready or a reader wakes us. */
		curl_multi_poll(l->multi, NULL, 0, 1000, NULL);
	}
	return NULL;
}

/* Under the use lock: the lane's connections, buffers and thread. */
static int lane_start(struct http_source *hs)
{
	struct fill_lane *l = &hs->lane;
	if (l->started)
		return 0;
	if (l->failed)
		return -ENOMEM;
	l->multi = curl_multi_init();
	bool ok = l->multi != NULL;
	for (unsigned i = 0; i < HTTP_FILL_CONNS && ok; i++) {
		struct fill_slot *s = &l->slot[i];
		s->c = http_conn_new(hs);
		s->buf = malloc(HTTP_FILL_SLOT_BYTES);
		ok = s->c && s->buf;
		if (ok)
			curl_easy_setopt(s->c->h, CURLOPT_BUFFERSIZE, HTTP_FILL_RECV_BUF);
	}
	if (ok)
		curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_FILL_CONNS);
	if (ok && pthread_create(&l->thread, NULL, lane_main, hs) == 0) {
		l->started = true;
		return 0;
	}
	for (unsigned i = 0; i < HTTP_FILL_CONNS; i++) {
		http_conn_free(l->slot[i].c);
		free(l->slot[i].buf);
		l->slot[i].c = NULL;
		l->slot[i].buf = NULL;
	}
	curl_multi_cleanup(l->multi);
	l->multi = NULL;
	l->failed = true; /* read without it from now on */
	return -ENOMEM;
}

void http_lane_destroy(struct http_source *hs)
{
	struct fill_lane *l = &hs->lane;
	if (l->started) {
		pthread_mutex_lock(&l->lock);
		l->stop = true;
		pthread_mutex_unlock(&l->lock);
		curl_multi_wakeup(l->multi);
		pthread_join(l->thread, NULL);
		for (unsigned i = 0; i < HTTP_FILL_CONNS; i++) {
			struct fill_slot *s = &l->slot[i];
			if (s->added)
				curl_multi_remove_handle(l->multi, s->c->h);
			http_conn_free(s->c);
			free(s->buf);
		}
		curl_multi_cleanup(l->multi);
	}
	pthread_cond_destroy(&l->done);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->use);
}

/* Lane lock held: the live slot holding byte @pos, or NULL. */
static struct fill_slot *slot_at(struct fill_lane *l, uint64_t pos)
{
	for (unsigned i = 0; i < HTTP_FILL_CONNS; i++) {
		struct fill_slot *s = &l->slot[i];
		if (s->state != SLOT_FREE && !s->stale && s->off <= pos &&
		    pos < slot_end(s))
			return s;
	}
	return NULL;
}

/*
 * Lane lock held: wait until [@off, @end) has arrived, every byte in a
 * READY slot; 0, or the error of the first range that failed.
 */
static int lane_wait(struct http_source *hs, uint64_t off, uint64_t end,
		     char *msg, size_t msg_len)
{
	struct fill_lane *l = &hs->lane;
	for (;;) {
		uint64_t pos = off;
		struct fill_slot *s = NULL;
		while (pos < end && (s = slot_at(l, pos)) && s->state == SLOT_READY)
			pos = slot_end(s);
		if (pos >= end)
			return 0;
		if (s && s->state == SLOT_FAILED) {
			snprintf(msg, msg_len, "%s", s->msg);
			return s->err;
		}
		if (!s && pos < l->next) { /* cannot be: no range holds it */
			snprintf(msg, msg_len, "GET %s: the read-ahead lost byte %" PRIu64,
				 hs->url_shown, pos);
			return -EIO;
		}
		pthread_cond_wait(&l->done, &l->lock);
	}
}

/*
 * A prefetch run through the lane: [@off, @off + @len) into @dst.  What
 * it copies out came in checked answers of the pinned version, like any
 * other fetch.  -EAGAIN-like errors are the pager's to retry.
 */
static int lane_read(struct http_source *hs, uint64_t off, uint64_t len,
		     char *dst, char *msg, size_t msg_len)
{
	struct fill_lane *l = &hs->lane;
	uint64_t end = off + len;
	pthread_mutex_lock(&l->lock);
	if (l->valid && (off == l->next || slot_at(l, off))) {
		if (l->depth < HTTP_FILL_CONNS)
			l->depth *= 2; /* it goes on: read further ahead */
	} else { /* a miss: the stream starts again here */
		for (unsigned i = 0; i < HTTP_FILL_CONNS; i++)
			slot_drop(&l->slot[i]);
		l->valid = true;
		l->next = off;
		l->depth = 1;
	}
	/* What lies behind the run is not read again. */
	for (unsigned i = 0; i < HTTP_FILL_CONNS; i++)
		if (l->slot[i].state != SLOT_FREE && slot_end(&l->slot[i]) <= off)
			slot_drop(&l->slot[i]);
	l->want_end = end;
	curl_multi_wakeup(l->multi);
	int ret = lane_wait(hs, off, end, msg, msg_len);
	if (ret < 0) {
		/* Read it again from scratch when it is asked again. */
		for (unsigned i = 0; i < HTTP_FILL_CONNS; i++)
			slot_drop(&l->slot[i]);
		l->valid = false;
		pthread_mutex_unlock(&l->lock);
		return ret;
	}
	pthread_mutex_unlock(&l->lock);

	/* READY slots are the reader's: the lane thread leaves them be. */
	for (uint64_t pos = off; pos < end;) {
		pthread_mutex_lock(&l->lock);
		struct fill_slot *s = slot_at(l, pos);
		pthread_mutex_unlock(&l->lock);
		uint64_t upto = slot_end(s) < end ? slot_end(s) : end;
		memcpy(dst + (pos - off), s->buf + (pos - s->off), upto - pos);
		pos = upto;
	}

	pthread_mutex_lock(&l->lock);
	for (unsigned i = 0; i < HTTP_FILL_CONNS; i++) /* used up: free */
		if (l->slot[i].state == SLOT_READY && slot_end(&l->slot[i]) <= end)
			l->slot[i].state = SLOT_FREE;
	pthread_mutex_unlock(&l->lock);
	curl_multi_wakeup(l->multi);
	return 0;
}

/* A prefetch run: through the lane, or alone when the lane cannot be had
 * or the run does not fit a slot. */
int http_prefetch_run(struct http_source *hs, uint64_t off, uint64_t len,
			char *dst)
{
	struct fill_lane *l = &hs->lane;
	char msg[HTTP_ERR_LEN];
	int ret;
	pthread_mutex_lock(&l->use);
	if (len <= HTTP_FILL_SLOT_BYTES && lane_start(hs) == 0) {
		ret = lane_read(hs, off, len, dst, msg, sizeof(msg));
	} else {
		struct xfer x = { .hs = hs, .dst = dst, .off = off, .len = len };
		ret = http_request(hs, &x, msg, sizeof(msg));
	}
	pthread_mutex_unlock(&l->use);
	if (ret < 0)
		http_note_error(hs, ret, msg);
	return ret;
}
