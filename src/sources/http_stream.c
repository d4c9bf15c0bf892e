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
 * callback installs whole pages from libcurl's buffer (a page split
 * between two calls waits in a 4 KiB carry), and only UFFDIO_COPY copies
 * them.
 *
 * A range's missing pages are claimed when it is asked for, as the filler
 * claims its step, so a vCPU that faults on one waits for it rather than
 * fetching it again.  An answer is checked before its first byte is used
 * (status, Content-Range, the pinned ETag: on_body()), so what is
 * installed is the pinned object's; an answer cut short leaves its first
 * part installed, bytes as good as those of one that came whole, and gives
 * the rest back.  The stream goes on after the guest's newest demand
 * fault, as the filler does, and ends when no page is missing; a range
 * that fails leaves its pages for a later one, until an answer that
 * cannot succeed or STREAM_RETRIES failures in a row: the filler's threads
 * (fill_rest()) then bring the rest, with their backoff and their errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

/* Ranges that may fail in a row, each with a transient error, before the
 * stream leaves the rest to the filler's threads (and their backoff). */
#define STREAM_RETRIES 4u
/* Pages of one range: at most OFFER_MAX, a bit each. */
#define STREAM_PAGES (HTTP_STREAM_CHUNK / PC_SOURCE_PAGE_SIZE)
_Static_assert(STREAM_PAGES <= OFFER_MAX && STREAM_PAGES % 64 == 0,
	       "a range's pages must fit an offer's bitmap");

/*
 * One range in flight.  Its missing pages are claimed when it is asked
 * for, as the filler claims a step: a vCPU that faults on one waits for
 * it to arrive instead of fetching it again.  Each claimed page is then
 * installed as it arrives, or given back when the answer ends without
 * it (@settled: the pages from @first done either way).
 */
struct stream_slot {
	struct http_stream *st;
	struct conn *c;
	struct xfer x;
	bool busy;
	uint64_t first, npages, settled;
	uint64_t claimed[STREAM_PAGES / 64];
	size_t carry_len; /* the start of a page whose rest is to come */
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
	unsigned failures;   /* ranges failed in a row, each transiently */
	int failed;	     /* why the stream ends early, or 0 */
	struct stream_slot slot[HTTP_STREAM_CONNS];
};

/* The range's pages @from..@to (from its first) that it claimed:
 * installed from @data, or given back (NULL).  Then settled. */
static int settle(struct stream_slot *s, uint64_t from, uint64_t to, const char *data)
{
	uint64_t sub[STREAM_PAGES / 64] = { 0 };
	for (uint64_t i = from; i < to; i++)
		if (bitmap_test(s->claimed, i))
			bitmap_set(sub, i - from);
	s->settled = to;
	if (!data) {
		offer_release(s->st->r, s->first + from, to - from, sub);
		return 0;
	}
	return offer_install(s->st->r, s->first + from, to - from, sub, data);
}

/* The write callback's pages: whole ones installed from @data as it lies
 * in libcurl's buffer, the last partial one kept for the next call. */
static int stream_take(struct xfer *x, const char *data, size_t n)
{
	struct stream_slot *s = x->sink_arg;
	uint64_t at = (x->got - s->carry_len) / PC_SOURCE_PAGE_SIZE; /* page of the range */
	if (s->carry_len) {
		size_t k = PC_SOURCE_PAGE_SIZE - s->carry_len;
		if (k > n)
			k = n;
		memcpy(s->carry + s->carry_len, data, k);
		s->carry_len += k;
		data += k;
		n -= k;
		if (s->carry_len < PC_SOURCE_PAGE_SIZE)
			return 0;
		s->carry_len = 0;
		int ret = settle(s, at, at + 1, s->carry);
		if (ret < 0)
			return ret;
		at++;
	}
	size_t whole = n / PC_SOURCE_PAGE_SIZE;
	if (whole) {
		int ret = settle(s, at, at + whole, data);
		if (ret < 0)
			return ret;
	}
	s->carry_len = n - whole * PC_SOURCE_PAGE_SIZE;
	memcpy(s->carry, data + whole * PC_SOURCE_PAGE_SIZE, s->carry_len);
	return 0;
}

/* The next range to ask for, from after the guest's newest fault if it
 * faulted since, else on from the last, its missing pages claimed.  False
 * when no page is missing. */
static bool stream_pick(struct http_stream *st, struct stream_slot *s)
{
	struct pc_region *r = st->r;
	uint64_t npages = pc_region_size(r) / PC_SOURCE_PAGE_SIZE;
	uint64_t latest = fill_latest_fault(r);
	if (latest != st->seen_fault) {
		st->seen_fault = latest;
		st->next = latest;
	}
	for (;;) { /* until a range with a page to claim, or none */
		uint64_t p = fill_next_missing(r, st->next);
		if (p >= npages)
			return false;
		uint64_t n = npages - p < STREAM_PAGES ? npages - p : STREAM_PAGES;
		st->next = p + n;
		if (offer_claim(r, p, n, s->claimed) < 0)
			return false;
		while (n && !bitmap_test(s->claimed, n - 1))
			n--; /* no bytes for what it need not bring */
		if (n) {
			s->first = p;
			s->npages = n;
			s->settled = 0;
			return true;
		}
	}
}

static void stream_start_range(struct http_stream *st, struct stream_slot *s)
{
	if (!stream_pick(st, s))
		return;
	s->x = (struct xfer){ .hs = st->hs, .off = s->first * PC_SOURCE_PAGE_SIZE,
			      .len = s->npages * PC_SOURCE_PAGE_SIZE, .sink = stream_take,
			      .sink_arg = s };
	s->carry_len = 0;
	char range[64];
	http_range_start(st->hs, s->c, &s->x, range);
	if (curl_multi_add_handle(st->multi, s->c->h) != CURLM_OK) {
		settle(s, 0, s->npages, NULL);
		st->failed = -ENOMEM;
		return;
	}
	s->busy = true;
}

/* A range's transfer ended (@c), or is abandoned (@abandon): what did not
 * arrive goes back to missing. */
static void stream_end_range(struct http_stream *st, struct stream_slot *s, CURLcode c,
			     bool abandon)
{
	curl_multi_remove_handle(st->multi, s->c->h);
	s->busy = false;
	settle(s, s->settled, s->npages, NULL);
	if (abandon)
		return;
	/* What arrived before a failure is installed and stays: it was
	 * checked.  The rest of the range is the filler's. */
	char range[64], msg[HTTP_ERR_LEN];
	snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, s->x.off,
		 s->x.off + s->x.len - 1);
	int ret = http_range_finish(st->hs, s->c, &s->x, c, range, msg, sizeof(msg));
	if (ret == 0) {
		st->failures = 0;
		return;
	}
	/* A reset or a 503 leaves the range's pages missing, for a later
	 * range (the stream comes round to them again); an answer that
	 * cannot succeed, or failures in a row, end it. */
	http_note_error(st->hs, ret, msg);
	if (!st->failed && (!fetch_error_transient(ret) || ++st->failures > STREAM_RETRIES))
		st->failed = ret;
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
		bool ended = false;
		while ((m = curl_multi_info_read(st->multi, &queued))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			for (unsigned i = 0; i < HTTP_STREAM_CONNS; i++)
				if (st->slot[i].busy && st->slot[i].c->h == m->easy_handle) {
					stream_end_range(st, &st->slot[i], m->data.result, false);
					ended = true;
					break;
				}
		}
		if (atomic_load(&st->stop)) { /* abandon what is in flight */
			for (unsigned i = 0; i < HTTP_STREAM_CONNS; i++)
				if (st->slot[i].busy)
					stream_end_range(st, &st->slot[i], CURLE_OK, true);
			break;
		}
		/* A range that ended frees its slot for the next at once. */
		if (!ended)
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
