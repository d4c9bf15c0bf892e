/* SPDX-License-Identifier: MIT */
/*
 * http_stream.c - the HTTP source's stream: the image's ranges requested
 * a few at a time, each page installed into the region straight from
 * libcurl's receive buffer as it arrives.
 *
 * A filler reading ahead of itself on a thread of the source's (the
 * first version) moved every byte three times after the socket: libcurl's
 * buffer into a read-ahead slot, the slot into the filler's buffer, and
 * that into the page by UFFDIO_COPY, with a wakeup between the threads
 * for every range.  On two cores, where nginx needs one of them, those
 * copies and wakeups were what the restore waited for.  Here the write
 * callback offers whole pages from libcurl's buffer to the region (a
 * partial page waits in a 4 KiB carry), and only UFFDIO_COPY copies them.
 *
 * An answer is checked before its first byte is used (status, Content-
 * Range, the pinned ETag: on_body()), so what is installed is the pinned
 * object's; an answer cut short leaves its first part installed, bytes as
 * good as those of an answer that came whole.  The stream goes on after the guest's newest demand fault, as
 * the filler does, skips what is present or in flight, and ends when no
 * page is missing, or at its first failed range: then the filler's threads
 * (fill_rest()) bring the rest, with their retries and their errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

/* One range in flight, and the start of a page whose rest is to come. */
struct stream_slot {
	struct http_stream *st;
	struct conn *c;
	struct xfer x;
	bool busy;
	size_t carry_len;
	char carry[PC_SOURCE_PAGE_SIZE];
};

struct http_stream {
	struct http_source *hs;
	struct pc_region *r;
	CURLM *multi;
	pthread_t thread;
	_Atomic bool stop;
	uint64_t next;	     /* page where the next range starts */
	uint64_t seen_fault; /* the newest demand fault followed */
	int failed;	     /* the first range that failed: the stream ends */
	struct stream_slot slot[HTTP_STREAM_CONNS];
};

/* The write callback's pages: whole ones offered from @data as it lies in
 * libcurl's buffer, the last partial one kept for the next call. */
static int stream_take(struct xfer *x, const char *data, size_t n)
{
	struct stream_slot *s = x->sink_arg;
	struct pc_region *r = s->st->r;
	uint64_t pos = x->off + x->got;
	if (s->carry_len) {
		size_t k = PC_SOURCE_PAGE_SIZE - s->carry_len;
		if (k > n)
			k = n;
		memcpy(s->carry + s->carry_len, data, k);
		s->carry_len += k;
		data += k;
		n -= k;
		pos += k;
		if (s->carry_len < PC_SOURCE_PAGE_SIZE)
			return 0;
		s->carry_len = 0;
		int ret = pc_region_offer(r, pos / PC_SOURCE_PAGE_SIZE - 1, 1, s->carry);
		if (ret < 0)
			return ret;
	}
	size_t whole = n / PC_SOURCE_PAGE_SIZE;
	if (whole) {
		int ret = pc_region_offer(r, pos / PC_SOURCE_PAGE_SIZE, whole, data);
		if (ret < 0)
			return ret;
	}
	s->carry_len = n - whole * PC_SOURCE_PAGE_SIZE;
	memcpy(s->carry, data + whole * PC_SOURCE_PAGE_SIZE, s->carry_len);
	return 0;
}

/* Whether page @p lies in a range in flight. */
static const struct stream_slot *in_flight(const struct http_stream *st, uint64_t p)
{
	uint64_t at = p * PC_SOURCE_PAGE_SIZE;
	for (unsigned i = 0; i < HTTP_STREAM_CONNS; i++) {
		const struct stream_slot *s = &st->slot[i];
		if (s->busy && s->x.off <= at && at < s->x.off + s->x.len)
			return s;
	}
	return NULL;
}

/* The next range to ask for: from after the guest's newest fault if it
 * faulted since, else on from the last; past ranges in flight.  False when
 * no page is missing outside them. */
static bool stream_pick(struct http_stream *st, uint64_t *first, uint64_t *n)
{
	struct pc_region *r = st->r;
	uint64_t npages = pc_region_size(r) / PC_SOURCE_PAGE_SIZE;
	uint64_t latest = fill_latest_fault(r);
	if (latest != st->seen_fault) {
		st->seen_fault = latest;
		st->next = latest;
	}
	uint64_t p = fill_next_missing(r, st->next);
	/* At most one pass over the ranges in flight, each skipped once. */
	for (unsigned k = 0; p < npages && k <= HTTP_STREAM_CONNS; k++) {
		const struct stream_slot *s = in_flight(st, p);
		if (!s)
			break;
		p = fill_next_missing(r, (s->x.off + s->x.len) / PC_SOURCE_PAGE_SIZE);
	}
	if (p >= npages || in_flight(st, p))
		return false;
	uint64_t chunk = HTTP_STREAM_CHUNK / PC_SOURCE_PAGE_SIZE;
	*first = p;
	*n = npages - p < chunk ? npages - p : chunk;
	st->next = p + *n;
	return true;
}

static bool stream_start_range(struct http_stream *st, struct stream_slot *s)
{
	uint64_t first, n;
	if (!stream_pick(st, &first, &n))
		return false;
	s->x = (struct xfer){ .hs = st->hs, .off = first * PC_SOURCE_PAGE_SIZE,
			      .len = n * PC_SOURCE_PAGE_SIZE, .sink = stream_take,
			      .sink_arg = s };
	s->carry_len = 0;
	char range[64];
	http_range_start(st->hs, s->c, &s->x, range);
	if (curl_multi_add_handle(st->multi, s->c->h) != CURLM_OK) {
		st->failed = -ENOMEM;
		return false;
	}
	s->busy = true;
	return true;
}

static void stream_answered(struct http_stream *st, struct stream_slot *s, CURLcode c)
{
	char range[64], msg[HTTP_ERR_LEN];
	snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, s->x.off,
		 s->x.off + s->x.len - 1);
	curl_multi_remove_handle(st->multi, s->c->h);
	s->busy = false;
	/* What arrived before a failure is installed and stays: it was
	 * checked.  The rest of the range is the filler's. */
	int ret = http_range_finish(st->hs, s->c, &s->x, c, range, msg, sizeof(msg));
	if (ret < 0) {
		http_note_error(st->hs, ret, msg);
		if (!st->failed)
			st->failed = ret;
	}
}

static void *stream_main(void *arg)
{
	struct http_stream *st = arg;
	for (;;) {
		bool stopping = atomic_load(&st->stop) || st->failed ||
				pc_region_complete(st->r);
		/* A working-set replay goes first, as with the filler. */
		bool wait = atomic_load_explicit(&st->r->feed.replaying,
						 memory_order_acquire);
		unsigned busy = 0;
		for (unsigned i = 0; i < HTTP_STREAM_CONNS; i++) {
			struct stream_slot *s = &st->slot[i];
			if (!s->busy && !stopping && !wait)
				stream_start_range(st, s);
			busy += s->busy;
		}
		if (!busy && (stopping || !wait))
			break; /* done, failed, or nothing missing */
		int running = 0;
		curl_multi_perform(st->multi, &running);
		CURLMsg *m;
		int queued;
		while ((m = curl_multi_info_read(st->multi, &queued))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			for (unsigned i = 0; i < HTTP_STREAM_CONNS; i++)
				if (st->slot[i].busy && st->slot[i].c->h == m->easy_handle) {
					stream_answered(st, &st->slot[i], m->data.result);
					break;
				}
		}
		if (atomic_load(&st->stop)) { /* abandon what is in flight */
			for (unsigned i = 0; i < HTTP_STREAM_CONNS; i++)
				if (st->slot[i].busy) {
					curl_multi_remove_handle(st->multi, st->slot[i].c->h);
					st->slot[i].busy = false;
				}
			break;
		}
		curl_multi_poll(st->multi, NULL, 0, wait && !busy ? 1 : 100, NULL);
	}
	if (!atomic_load(&st->stop))
		fill_rest(st->r);
	return NULL;
}

static void stream_free(struct http_stream *st)
{
	for (unsigned i = 0; i < HTTP_STREAM_CONNS; i++)
		http_conn_free(st->slot[i].c);
	if (st->multi)
		curl_multi_cleanup(st->multi);
	free(st);
}

int http_stream_start(void *ctx, struct pc_region *r)
{
	struct http_source *hs = ctx;
	if (hs->stream)
		return -EBUSY;
	struct http_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->hs = hs;
	st->r = r;
	st->multi = curl_multi_init();
	bool ok = st->multi != NULL;
	for (unsigned i = 0; i < HTTP_STREAM_CONNS && ok; i++) {
		struct stream_slot *s = &st->slot[i];
		s->st = st;
		s->c = http_conn_new(hs);
		ok = s->c != NULL;
		if (ok)
			curl_easy_setopt(s->c->h, CURLOPT_BUFFERSIZE, HTTP_STREAM_RECV_BUF);
	}
	if (ok)
		curl_multi_setopt(st->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_STREAM_CONNS);
	if (!ok || pthread_create(&st->thread, NULL, stream_main, st)) {
		stream_free(st);
		return -ENOMEM;
	}
	hs->stream = st;
	return 0;
}

void http_stream_stop(struct http_source *hs)
{
	struct http_stream *st = hs->stream;
	if (!st)
		return;
	atomic_store(&st->stop, true);
	curl_multi_wakeup(st->multi);
	pthread_join(st->thread, NULL);
	hs->stream = NULL;
	stream_free(st);
}
