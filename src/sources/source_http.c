/* SPDX-License-Identifier: MIT */
/*
 * source_http.c - an object on an HTTP(S) server or in an S3-compatible
 * store, read with HTTP/1.1 range requests through libcurl.
 *
 * The one idea: no byte of an answer is used unless the answer proves it
 * is the range asked for, of the version pinned at open.  The write
 * callback refuses to copy before it has seen status 206, a Content-Range
 * equal to the request and the pinned ETag, and never writes past the
 * request; the fetch then checks the length.  The source is not DIRECT,
 * so even the bytes of an answer that fails half-way stay in the pager's
 * private buffer.
 *
 * Connections: a pool of curl easy handles, each keeping its connection
 * alive between requests; a fetch takes one (or makes one), so every
 * thread fetching at once has its own connection, and gives it back.  The
 * filler's reads (PC_FETCH_PREFETCH) go through the fill lane instead: a
 * thread with several range requests in flight ahead of the filler, on
 * connections of its own, so that demand fetches never wait behind them.
 * An object that starts with the packed magic is a packed image, read by
 * packed.c through the same checked range requests.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "http_parse.h"
#include "internal.h"
#include "sources_int.h"

#define HTTP_DEFAULT_TIMEOUT_MS 10000u
#define HTTP_DEFAULT_CONNECT_MS 5000u
#define HTTP_DEFAULT_CONNS 64u
#define HTTP_MAX_CONNS 256u
#define HTTP_ERR_LEN 512
#define HTTP_BODY_KEEP 512 /* bytes of an error answer kept for its reason */
/* The filler's read-ahead (see "the fill lane" below): this many range
 * requests of this size in flight at once, each on a connection of its
 * own; a slot's buffer also holds the largest run the filler asks for. */
#define HTTP_FILL_CONNS 4u
#define HTTP_FILL_CHUNK (1u << 20)
#define HTTP_FILL_SLOT_BYTES PC_MAX_RUN_BYTES
/* libcurl's receive buffer for those (its default is 16 KiB): fewer,
 * larger reads from the socket. */
#define HTTP_FILL_RECV_BUF (256L << 10)
/* A run the filler waits for lies in the slot that holds its start and at
 * most HTTP_FILL_SLOT_BYTES / HTTP_FILL_CHUNK after it: the lane must be
 * able to hold them all at once, or the reader waits for ever. */
_Static_assert((HTTP_FILL_CONNS - 1) * (uint64_t)HTTP_FILL_CHUNK >= HTTP_FILL_SLOT_BYTES,
	       "a run the filler waits for must fit the lane's slots");
_Static_assert(HTTP_FILL_CHUNK <= HTTP_FILL_SLOT_BYTES, "a range must fit a slot");
/* A batch of demand runs (a wait-mode handler's) goes out this many at a
 * time. */
#define HTTP_BATCH_CONNS 4u

struct conn {
	struct conn *next;
	CURL *h;
	/* libcurl's own account of a failure (a certificate that does not
	 * verify, and why), more than curl_easy_strerror() says. */
	char err[CURL_ERROR_SIZE];
};

struct http_source;
struct batch_group;

/* One request and what its answer has shown so far. */
struct xfer {
	const struct http_source *hs;
	bool probe;	   /* the open's request: learns size and ETag */
	char *dst;
	uint64_t off, len, got;
	long status;
	char reason[64];
	bool have_range;
	uint64_t cr_first, cr_last, cr_total;
	char etag[256];
	char last_modified[64];
	char body[HTTP_BODY_KEEP];
	size_t body_len;
	int bad;	   /* why the write callback refused, or 0 */
	char bad_msg[160];
};

/* One range of the read-ahead.  FREE -> BUSY (the lane thread requests
 * it) -> READY or FAILED (its answer, checked) -> FREE (the reader is
 * done with it).  A BUSY slot nobody wants any more is marked stale: the
 * lane thread aborts it. */
enum slot_state { SLOT_FREE, SLOT_BUSY, SLOT_READY, SLOT_FAILED };

struct fill_slot {
	struct conn *c;
	char *buf;		/* HTTP_FILL_SLOT_BYTES */
	uint64_t off, len;
	enum slot_state state;
	bool stale;
	bool added;		/* in the multi handle: the lane thread's */
	struct xfer x;
	int err;
	char msg[HTTP_ERR_LEN];
};

struct fill_lane {
	pthread_mutex_t use;	/* one reader at a time */
	pthread_mutex_t lock;	/* everything below but the multi handle */
	pthread_cond_t done;	/* a slot was answered */
	CURLM *multi;		/* the lane thread's */
	pthread_t thread;
	bool started, failed, stop;
	struct fill_slot slot[HTTP_FILL_CONNS];
	bool valid;		/* a stream runs, from the reader's last miss */
	uint64_t next;		/* where its next range starts */
	uint64_t want_end;	/* the reader waits for bytes up to here */
	unsigned depth;		/* ranges to keep requested ahead */
};

struct http_source {
	char *url;
	char *url_shown; /* without the query: a presigned URL's is a secret */
	char *userpwd;	 /* S3: "KEY:SECRET" */
	char *sigv4;	 /* S3: "aws:amz:REGION:s3" */
	char *ca_file;	 /* https: the CAs to trust, NULL for the system's */
	struct curl_slist *headers; /* If-Match, x-amz-security-token */
	unsigned timeout_ms, connect_timeout_ms, max_conns;
	uint64_t size;
	bool packed;	 /* the object is a packed image */
	char etag[256];	 /* pinned; "" when the server gave no strong one */
	char last_modified[64];

	pthread_mutex_t lock; /* the pool and the error below */
	pthread_cond_t freed;
	struct conn *idle;
	unsigned nconns;
	char err[HTTP_ERR_LEN];
	bool err_fatal;

	struct batch_group *groups; /* idle, under lock: for demand batches */
	struct fill_lane lane; /* the filler's read-ahead */

	_Atomic uint64_t requests, bytes_received, connections;
	_Atomic uint64_t transient_errors, fatal_errors;
};

/* ---- reading an answer ------------------------------------------------ */

static size_t on_header(char *line, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;
	char val[256];

	if (http_status_line(line, n, &x->status, x->reason, sizeof(x->reason))) {
		/* A new answer (after a 100 Continue, say): forget the last. */
		x->have_range = false;
		x->etag[0] = x->last_modified[0] = '\0';
	} else if (http_header_value(line, n, "Content-Range", val, sizeof(val))) {
		x->have_range = http_content_range(val, &x->cr_first,
						   &x->cr_last, &x->cr_total);
	} else if (http_header_value(line, n, "ETag", x->etag, sizeof(x->etag))) {
	} else if (http_header_value(line, n, "Last-Modified", x->last_modified,
				     sizeof(x->last_modified))) {
	}
	return n;
}

static size_t refuse(struct xfer *x, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static size_t refuse(struct xfer *x, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->bad_msg, sizeof(x->bad_msg), fmt, ap);
	va_end(ap);
	x->bad = err;
	return 0; /* libcurl aborts the transfer: CURLE_WRITE_ERROR */
}

/* Is this answer the range asked for, of the pinned object?  0 or why not. */
static size_t check_answer(struct xfer *x)
{
	const struct http_source *hs = x->hs;
	if (x->status == 200) {
		/* A server that ignores Range sends the whole object: fine
		 * only when that is what was asked for. */
		if (x->probe || x->off != 0 || x->len != hs->size)
			return refuse(x, -EPROTO, "the server ignored the Range header (200, not 206)");
	} else if (!x->have_range) {
		return refuse(x, -EIO, "206 without a valid Content-Range");
	} else if (x->probe) {
		if (x->cr_first != 0)
			return refuse(x, -EIO, "Content-Range starts at %" PRIu64 ", not 0",
				      x->cr_first);
	} else if (x->cr_first != x->off || x->cr_last != x->off + x->len - 1 ||
		   x->cr_total != hs->size) {
		return refuse(x, -EIO, "Content-Range bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64
			      " answers bytes=%" PRIu64 "-%" PRIu64 " of %" PRIu64,
			      x->cr_first, x->cr_last, x->cr_total, x->off,
			      x->off + x->len - 1, hs->size);
	}
	if (!x->probe && hs->etag[0] && x->etag[0] && strcmp(x->etag, hs->etag))
		return refuse(x, -ESTALE, "the object changed: ETag %s, pinned %s",
			      x->etag, hs->etag);
	return 1;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;

	if (x->status != 200 && x->status != 206) {
		/* An error's explanation: keep the start of it. */
		size_t room = sizeof(x->body) - 1 - x->body_len;
		size_t m = n < room ? n : room;
		memcpy(x->body + x->body_len, data, m);
		x->body_len += m;
		x->body[x->body_len] = '\0';
		return n;
	}
	if (x->got == 0 && !check_answer(x))
		return 0;
	if (n > x->len - x->got)
		return refuse(x, -EIO, "more than the %" PRIu64 " bytes asked for", x->len);
	memcpy(x->dst + x->got, data, n);
	x->got += n;
	return n;
}

static int status_errno(long status)
{
	switch (status) {
	case 403: return -EACCES;
	case 404: return -ENOENT;
	case 408: return -ETIMEDOUT;
	case 412: return -ESTALE;
	case 416: return -ERANGE;
	case 429: return -EAGAIN;
	}
	if (status >= 500 && status <= 599)
		return -EAGAIN;
	return -EPROTO;
}

static int curl_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
		return -ECONNRESET;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_PEER_FAILED_VERIFICATION:
		return -EACCES;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EINVAL;
	default:
		return -EPROTO;
	}
}

/* Set @owner's handle up for @x's range (@range gets "A-B"). */
static void range_start(struct http_source *hs, struct conn *owner,
			struct xfer *x, char range[64])
{
	CURL *h = owner->h;
	snprintf(range, 64, "%" PRIu64 "-%" PRIu64, x->off, x->off + x->len - 1);
	curl_easy_setopt(h, CURLOPT_RANGE, range);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs->headers); /* no If-Match yet for the probe */
	atomic_fetch_add_explicit(&hs->requests, 1, memory_order_relaxed);
	owner->err[0] = '\0';
}

/*
 * The verdict on @x's answer, the transfer having ended with @c: 0, or a
 * negative errno with the reason in @msg.  The same for a request alone
 * and for one of several in flight.
 */
static int range_finish(struct http_source *hs, struct conn *owner,
			struct xfer *x, CURLcode c, const char *range,
			char *msg, size_t msg_len)
{
	int err = 0;
	char reason[HTTP_ERR_LEN / 2] = "";
	if (c == CURLE_WRITE_ERROR && x->bad) {
		err = x->bad;
		snprintf(reason, sizeof(reason), ": %s", x->bad_msg);
	} else if (c != CURLE_OK) {
		err = curl_errno(c);
		bool more = owner->err[0];
		snprintf(reason, sizeof(reason), ": %.64s%s%.120s%s%s%s", curl_easy_strerror(c),
			 more ? " (" : "", more ? owner->err : "", more ? ")" : "",
			 c == CURLE_PARTIAL_FILE ? " (short body)" : "",
			 x->got ? " after part of the body" : "");
	} else if (x->status == 412) {
		err = -ESTALE;
		snprintf(reason, sizeof(reason), ": the object changed since it was opened (If-%s %.64s failed)",
			 hs->etag[0] ? "Match" : "Unmodified-Since",
			 hs->etag[0] ? hs->etag : hs->last_modified);
	} else if (x->status != 200 && x->status != 206) {
		err = status_errno(x->status);
		http_body_reason(x->body, x->body_len, reason, sizeof(reason));
	} else if (x->got != (x->probe ? x->cr_last + 1 : x->len) || x->got == 0) {
		err = -EIO;
		snprintf(reason, sizeof(reason), ": %" PRIu64 " bytes of %" PRIu64,
			 x->got, x->len);
	}
	if (!err) {
		atomic_fetch_add_explicit(&hs->bytes_received, x->got,
					  memory_order_relaxed);
		return 0;
	}
	if (x->status && (c == CURLE_OK || x->status >= 300))
		snprintf(msg, msg_len, "GET %s bytes=%s: %ld %s%s", hs->url_shown,
			 range, x->status, x->reason, reason);
	else
		snprintf(msg, msg_len, "GET %s bytes=%s%s", hs->url_shown, range,
			 reason);
	return err;
}

/*
 * One range request on @owner's handle: [@off, @off + @len) into @dst.
 * 0, or a negative errno with the reason in @msg.
 */
static int range_get(struct http_source *hs, struct conn *owner, struct xfer *x,
		     char *msg, size_t msg_len)
{
	char range[64];
	range_start(hs, owner, x, range);
	CURLcode c = curl_easy_perform(owner->h);
	return range_finish(hs, owner, x, c, range, msg, msg_len);
}

/* ---- the pool --------------------------------------------------------- */

static CURL *handle_new(struct http_source *hs)
{
	CURL *h = curl_easy_init();
	if (!h)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, hs->url);
	/* Threads: libcurl must not use signals (its alarm() timeouts). */
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)hs->timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)hs->connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	/* Identity only: a compressed body has other lengths and offsets. */
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, NULL);
	if (hs->ca_file) { /* those CAs only, not the system's directory too */
		curl_easy_setopt(h, CURLOPT_CAINFO, hs->ca_file);
		curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
	}
	if (hs->sigv4) {
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, hs->sigv4);
		curl_easy_setopt(h, CURLOPT_USERPWD, hs->userpwd);
	}
	return h;
}

static struct conn *conn_new(struct http_source *hs)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (c && !(c->h = handle_new(hs))) {
		free(c);
		return NULL;
	}
	if (c) {
		curl_easy_setopt(c->h, CURLOPT_ERRORBUFFER, c->err);
		atomic_fetch_add_explicit(&hs->connections, 1, memory_order_relaxed);
	}
	return c;
}

static void conn_free(struct conn *c)
{
	if (c) {
		curl_easy_cleanup(c->h);
		free(c);
	}
}

/* A handle of our own until conn_put(); NULL when out of memory. */
static struct conn *conn_get(struct http_source *hs)
{
	pthread_mutex_lock(&hs->lock);
	while (!hs->idle && hs->nconns >= hs->max_conns)
		pthread_cond_wait(&hs->freed, &hs->lock);
	struct conn *c = hs->idle;
	if (c) {
		hs->idle = c->next;
		pthread_mutex_unlock(&hs->lock);
		return c;
	}
	hs->nconns++;
	pthread_mutex_unlock(&hs->lock);

	if (!(c = conn_new(hs))) {
		pthread_mutex_lock(&hs->lock);
		hs->nconns--;
		pthread_cond_signal(&hs->freed);
		pthread_mutex_unlock(&hs->lock);
	}
	return c;
}

static void conn_put(struct http_source *hs, struct conn *c)
{
	pthread_mutex_lock(&hs->lock);
	c->next = hs->idle;
	hs->idle = c;
	pthread_cond_signal(&hs->freed);
	pthread_mutex_unlock(&hs->lock);
}

/* Remember why a request failed: the latest, or the first fatal one. */
static void note_error(struct http_source *hs, int err, const char *msg)
{
	bool transient = fetch_error_transient(err);
	atomic_fetch_add_explicit(transient ? &hs->transient_errors :
					      &hs->fatal_errors,
				  1, memory_order_relaxed);
	pthread_mutex_lock(&hs->lock);
	if (!hs->err_fatal) {
		snprintf(hs->err, sizeof(hs->err), "%s", msg);
		hs->err_fatal = !transient;
	}
	pthread_mutex_unlock(&hs->lock);
}

/* ---- the source's operations ------------------------------------------- */

static int request(struct http_source *hs, struct xfer *x, char *msg,
		   size_t msg_len)
{
	struct conn *c = conn_get(hs);
	if (!c) {
		snprintf(msg, msg_len, "out of memory for a libcurl handle");
		return -ENOMEM;
	}
	int ret = range_get(hs, c, x, msg, msg_len);
	conn_put(hs, c);
	return ret;
}

static int http_fetch(void *ctx, uint64_t first, uint64_t npages, void *dst)
{
	struct http_source *hs = ctx;
	struct xfer x = { .hs = hs, .dst = dst,
			  .off = first * PC_SOURCE_PAGE_SIZE,
			  .len = npages * PC_SOURCE_PAGE_SIZE };
	char msg[HTTP_ERR_LEN];
	int ret = request(hs, &x, msg, sizeof(msg));
	if (ret < 0)
		note_error(hs, ret, msg);
	return ret;
}

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
 * same way (range_finish()); a failed one is the error of the read that
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
	int ret = range_finish(hs, s->c, &s->x, c, range, msg, sizeof(msg));
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
			range_start(hs, s->c, &s->x, range);
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
		s->c = conn_new(hs);
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
		conn_free(l->slot[i].c);
		free(l->slot[i].buf);
		l->slot[i].c = NULL;
		l->slot[i].buf = NULL;
	}
	curl_multi_cleanup(l->multi);
	l->multi = NULL;
	l->failed = true; /* read without it from now on */
	return -ENOMEM;
}

static void lane_destroy(struct http_source *hs)
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
			conn_free(s->c);
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
static int prefetch_run(struct http_source *hs, uint64_t off, uint64_t len,
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
		ret = request(hs, &x, msg, sizeof(msg));
	}
	pthread_mutex_unlock(&l->use);
	if (ret < 0)
		note_error(hs, ret, msg);
	return ret;
}

/* ---- a batch of demand runs ---------------------------------------------
 *
 * A wait-mode handler passes every run of a batch of faults at once: they
 * go out HTTP_BATCH_CONNS at a time with curl_multi, not one round trip
 * after the other.  A multi handle keeps its own connections (libcurl's
 * connection cache is the multi handle's), so a group of handles stays
 * with its multi handle, in a pool of groups of its own.
 */

struct batch_group {
	struct batch_group *next;
	CURLM *multi;
	struct conn *c[HTTP_BATCH_CONNS];
};

static void group_free(struct batch_group *g)
{
	if (!g)
		return;
	for (unsigned i = 0; i < HTTP_BATCH_CONNS; i++)
		conn_free(g->c[i]);
	curl_multi_cleanup(g->multi);
	free(g);
}

/* An idle group, or a new one; NULL when out of memory. */
static struct batch_group *group_get(struct http_source *hs)
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
		if (!(g->c[i] = conn_new(hs))) {
			group_free(g);
			return NULL;
		}
	curl_multi_setopt(g->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_BATCH_CONNS);
	return g;
}

static void group_put(struct http_source *hs, struct batch_group *g)
{
	pthread_mutex_lock(&hs->lock);
	g->next = hs->groups;
	hs->groups = g;
	pthread_mutex_unlock(&hs->lock);
}

/* Runs [0, @n), each a checked range request, several in flight: 0, or
 * the first error (the others then stop). */
static int batch_fetch(struct http_source *hs, struct batch_group *g,
		       unsigned n, const uint64_t *first,
		       const uint64_t *npages, void *const *dst)
{
	struct xfer x[HTTP_BATCH_CONNS];
	char range[HTTP_BATCH_CONNS][64], msg[HTTP_ERR_LEN];
	bool busy[HTTP_BATCH_CONNS] = { false };
	unsigned next = 0, running = 0;
	int ret = 0;
	for (;;) {
		for (unsigned i = 0; i < HTTP_BATCH_CONNS && next < n && !ret; i++) {
			if (busy[i])
				continue;
			x[i] = (struct xfer){ .hs = hs, .dst = dst[next],
					      .off = first[next] * PC_SOURCE_PAGE_SIZE,
					      .len = npages[next] * PC_SOURCE_PAGE_SIZE };
			next++;
			range_start(hs, g->c[i], &x[i], range[i]);
			if (curl_multi_add_handle(g->multi, g->c[i]->h) != CURLM_OK) {
				snprintf(msg, sizeof(msg), "GET %s bytes=%s: libcurl could not start it",
					 hs->url_shown, range[i]);
				ret = -ENOMEM;
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
				int err = range_finish(hs, g->c[i], &x[i], m->data.result,
						       range[i], why, sizeof(why));
				if (err < 0 && !ret) {
					ret = err;
					snprintf(msg, sizeof(msg), "%s", why);
				}
				break;
			}
		}
		if (ret) { /* the batch fails: the rest need not arrive */
			for (unsigned i = 0; i < HTTP_BATCH_CONNS; i++)
				if (busy[i])
					curl_multi_remove_handle(g->multi, g->c[i]->h);
			break;
		}
		if (running)
			curl_multi_poll(g->multi, NULL, 0, 1000, NULL);
	}
	if (ret < 0)
		note_error(hs, ret, msg);
	return ret;
}

static int http_fetch_many(void *ctx, unsigned n, const uint64_t *first,
			   const uint64_t *npages, void *const *dst,
			   unsigned flags)
{
	struct http_source *hs = ctx;
	int ret = 0;
	struct batch_group *g = NULL;
	/* The fill lane reads ahead in address order: it serves prefetches
	 * within one slot's span (a filler step and its sub-runs).  Runs
	 * spread wider (a working-set replay's batch, sorted) go out as a
	 * batch, as demand runs do, so the replay's lanes keep several
	 * requests in flight instead of meeting in the one fill lane. */
	bool lane = false;
	if ((flags & PC_FETCH_PREFETCH) && n) {
		uint64_t lo = first[0], hi = first[0] + npages[0];
		for (unsigned i = 1; i < n; i++) {
			lo = first[i] < lo ? first[i] : lo;
			hi = first[i] + npages[i] > hi ? first[i] + npages[i] : hi;
		}
		lane = (hi - lo) * PC_SOURCE_PAGE_SIZE <= HTTP_FILL_SLOT_BYTES;
	}
	if (!lane && n > 1 && (g = group_get(hs))) {
		ret = batch_fetch(hs, g, n, first, npages, dst);
		group_put(hs, g);
		return ret;
	}
	for (unsigned i = 0; i < n && ret == 0; i++) {
		if (lane)
			ret = prefetch_run(hs, first[i] * PC_SOURCE_PAGE_SIZE,
					   npages[i] * PC_SOURCE_PAGE_SIZE, dst[i]);
		else
			ret = http_fetch(ctx, first[i], npages[i], dst[i]);
	}
	return ret;
}

static void http_destroy(void *ctx)
{
	struct http_source *hs = ctx;
	lane_destroy(hs); /* first: its thread uses the rest */
	while (hs->groups) {
		struct batch_group *g = hs->groups;
		hs->groups = g->next;
		group_free(g);
	}
	while (hs->idle) {
		struct conn *c = hs->idle;
		hs->idle = c->next;
		conn_free(c);
	}
	curl_slist_free_all(hs->headers);
	free(hs->url);
	free(hs->url_shown);
	if (hs->userpwd) {
		memset(hs->userpwd, 0, strlen(hs->userpwd));
		free(hs->userpwd);
	}
	free(hs->sigv4);
	free(hs->ca_file);
	pthread_cond_destroy(&hs->freed);
	pthread_mutex_destroy(&hs->lock);
	free(hs);
	curl_global_cleanup();
}

static const struct pc_source_ops http_ops = {
	.fetch = http_fetch,
	.fetch_many = http_fetch_many,
	.destroy = http_destroy,
	/* libcurl allocates and locks; an answer is checked as it arrives,
	 * so neither async-signal-safe nor DIRECT. */
	.flags = 0,
};

/* The packed reader's bytes: any range of the object, checked alike. */
static int http_blob_read(void *ctx, uint64_t off, uint64_t len, void *dst)
{
	struct http_source *hs = ctx;
	struct xfer x = { .hs = hs, .dst = dst, .off = off, .len = len };
	char msg[HTTP_ERR_LEN];
	int ret = request(hs, &x, msg, sizeof(msg));
	if (ret < 0)
		note_error(hs, ret, msg);
	return ret;
}

/* The HTTP source under @src (raw or packed), or NULL. */
static struct http_source *http_of(pc_source *src)
{
	if (!src)
		return NULL;
	if (src->ops.fetch == http_fetch)
		return src->ctx;
	return packed_blob_ctx(src, http_blob_read);
}

int pc_http_get_stats(pc_source *src, struct pc_http_stats *out)
{
	struct http_source *hs = http_of(src);
	if (!hs || !out)
		return -EINVAL;
	*out = (struct pc_http_stats){
		.requests = atomic_load(&hs->requests),
		.bytes_received = atomic_load(&hs->bytes_received),
		.connections = atomic_load(&hs->connections),
		.transient_errors = atomic_load(&hs->transient_errors),
		.fatal_errors = atomic_load(&hs->fatal_errors),
	};
	return 0;
}

int pc_http_last_error(pc_source *src, char *buf, size_t len)
{
	struct http_source *hs = http_of(src);
	if (!hs || !buf || !len)
		return -EINVAL;
	pthread_mutex_lock(&hs->lock);
	snprintf(buf, len, "%s", hs->err);
	pthread_mutex_unlock(&hs->lock);
	return 0;
}

/* ---- opening ------------------------------------------------------------ */

static int add_header(struct http_source *hs, const char *name, const char *val)
{
	char line[512];
	if (snprintf(line, sizeof(line), "%s: %s", name, val) >= (int)sizeof(line))
		return -EINVAL;
	struct curl_slist *l = curl_slist_append(hs->headers, line);
	if (!l)
		return -ENOMEM;
	hs->headers = l;
	return 0;
}

/* Learn the object's size and version; transient failures (a server
 * still starting, a request slower than a short timeout) are tried again
 * for 10 s, or the request timeout if longer. */
static int pin_object(struct http_source *hs, char *why, size_t why_len)
{
	unsigned budget_ms = hs->timeout_ms > HTTP_DEFAULT_TIMEOUT_MS ?
				     hs->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	uint64_t deadline = now_ns() + (uint64_t)budget_ms * 1000000ull;
	uint64_t backoff = 10 * 1000000ull;
	char probe[PC_SOURCE_PAGE_SIZE], msg[HTTP_ERR_LEN];
	struct xfer x;
	int ret;
	for (;;) {
		/* One page, not one byte: s3rver 3.7 answers bytes=0-0 with
		 * the whole object.  A smaller object answers less. */
		x = (struct xfer){ .hs = hs, .probe = true, .dst = probe,
				   .off = 0, .len = sizeof(probe) };
		ret = request(hs, &x, msg, sizeof(msg));
		if (ret == 0 || !fetch_error_transient(ret) ||
		    now_ns() + backoff >= deadline)
			break;
		sleep_ns(backoff);
		backoff *= 2;
	}
	if (ret < 0) {
		set_why(why, why_len, "%s", msg);
		return ret;
	}
	hs->size = x.status == 200 ? 0 : x.cr_total;
	hs->packed = packed_magic(probe, x.got);
	if (!hs->size || (!hs->packed && hs->size % PC_SOURCE_PAGE_SIZE)) {
		set_why(why, why_len, "%s: size %" PRIu64 " is not a positive multiple of 4096 bytes",
			hs->url_shown, hs->size);
		return -EINVAL;
	}
	/* A weak ETag (W/"...") never matches If-Match: use the date then. */
	if (x.etag[0] == '"') {
		snprintf(hs->etag, sizeof(hs->etag), "%s", x.etag);
		return add_header(hs, "If-Match", hs->etag);
	}
	if (x.last_modified[0]) {
		snprintf(hs->last_modified, sizeof(hs->last_modified), "%s",
			 x.last_modified);
		return add_header(hs, "If-Unmodified-Since", hs->last_modified);
	}
	set_why(why, why_len, "%s: the server gives neither a strong ETag nor a Last-Modified date, so a replaced object could not be told apart",
		hs->url_shown);
	return -EPROTO;
}

int pc_source_http(const struct pc_http_opts *o, pc_source **out, char *why,
		   size_t why_len)
{
	set_why(why, why_len, "%s", "");
	if (!o || !o->url || !out) {
		set_why(why, why_len, "no URL");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
		if (o->reserved[i])
			return -EINVAL;
	if (strncasecmp(o->url, "http://", 7) && strncasecmp(o->url, "https://", 8)) {
		set_why(why, why_len, "%s: not an http:// or https:// URL", o->url);
		return -EINVAL;
	}
	if (o->s3_region && (!o->access_key || !o->secret_key || !*o->s3_region)) {
		set_why(why, why_len, "S3 signing needs a region, an access key and a secret key");
		return -EINVAL;
	}
	if (o->max_connections > HTTP_MAX_CONNS) {
		set_why(why, why_len, "at most %u connections", HTTP_MAX_CONNS);
		return -EINVAL;
	}
	/* Reference-counted and thread-safe in libcurl >= 7.84; the source
	 * holds one reference until it is destroyed. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		set_why(why, why_len, "libcurl failed to initialise");
		return -EIO;
	}
	struct http_source *hs = calloc(1, sizeof(*hs));
	if (!hs) {
		curl_global_cleanup();
		return -ENOMEM;
	}
	pthread_mutex_init(&hs->lock, NULL);
	pthread_mutex_init(&hs->lane.use, NULL);
	pthread_mutex_init(&hs->lane.lock, NULL);
	pthread_cond_init(&hs->lane.done, NULL);
	pthread_cond_init(&hs->freed, NULL);
	hs->timeout_ms = o->timeout_ms ? o->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	hs->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms :
							 HTTP_DEFAULT_CONNECT_MS;
	hs->max_conns = o->max_connections ? o->max_connections : HTTP_DEFAULT_CONNS;
	hs->url = strdup(o->url);
	hs->url_shown = strndup(o->url, strcspn(o->url, "?#"));
	int ret = hs->url && hs->url_shown ? 0 : -ENOMEM;
	if (ret == 0 && o->ca_file && !(hs->ca_file = strdup(o->ca_file)))
		ret = -ENOMEM;
	if (ret == 0 && o->s3_region) {
		if (asprintf(&hs->sigv4, "aws:amz:%s:s3", o->s3_region) < 0 ||
		    asprintf(&hs->userpwd, "%s:%s", o->access_key, o->secret_key) < 0) {
			hs->sigv4 = hs->userpwd = NULL;
			ret = -ENOMEM;
		}
		/* S3 wants the payload's hash with SigV4; libcurl 7.88 does not
		 * add it.  A GET's payload is empty: SHA-256 of "". */
		if (ret == 0)
			ret = add_header(hs, "x-amz-content-sha256",
					 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
		if (ret == 0 && o->session_token && *o->session_token)
			ret = add_header(hs, "x-amz-security-token", o->session_token);
	}
	if (ret == 0)
		ret = pin_object(hs, why, why_len);
	if (ret == 0 && hs->packed) {
		static const struct blob_ops blob = { .read = http_blob_read,
						      .destroy = http_destroy };
		return packed_open(&blob, hs, hs->size, out, why, why_len);
	}
	if (ret == 0)
		ret = pc_source_custom(&http_ops, hs, hs->size, out);
	if (ret < 0) {
		if (why && why_len && !why[0])
			set_why(why, why_len, "%s: %s", hs->url_shown ? hs->url_shown : o->url,
				strerror(-ret));
		http_destroy(hs);
	}
	return ret;
}
