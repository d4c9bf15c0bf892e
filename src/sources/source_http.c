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
 * private buffer (the stream installs such bytes: they passed the same
 * checks, and only the rest is missing).
 *
 * Connections: a pool of curl easy handles, each keeping its connection
 * alive between requests; a fetch takes one (or makes one), so every
 * thread fetching at once has its own connection, and gives it back.  The
 * fill is a stream of the source's instead (http_stream.c): a thread with
 * several range requests in flight on connections of its own, so that
 * demand fetches never wait behind them, installing pages as they arrive;
 * the runs of a wait-mode batch or of a replay's batch go out several at
 * a time (http_batch.c).
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

#include "http_int.h"
#include "http_parse.h"
#include "sources_int.h"

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
	if (x->sink) {
		int ret = x->sink(x, data, n);
		if (ret < 0)
			return refuse(x, ret, "installing its pages: %s", strerror(-ret));
	} else {
		memcpy(x->dst + x->got, data, n);
	}
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
void http_range_start(struct http_source *hs, struct conn *owner,
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
int http_range_finish(struct http_source *hs, struct conn *owner,
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
	http_range_start(hs, owner, x, range);
	CURLcode c = curl_easy_perform(owner->h);
	return http_range_finish(hs, owner, x, c, range, msg, msg_len);
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

struct conn *http_conn_new(struct http_source *hs)
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

void http_conn_free(struct conn *c)
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

	if (!(c = http_conn_new(hs))) {
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
void http_note_error(struct http_source *hs, int err, const char *msg)
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

int http_request(struct http_source *hs, struct xfer *x, char *msg,
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
	int ret = http_request(hs, &x, msg, sizeof(msg));
	if (ret < 0)
		http_note_error(hs, ret, msg);
	return ret;
}

static int http_fetch_many(void *ctx, unsigned n, const uint64_t *first,
			   const uint64_t *npages, void *const *dst,
			   unsigned flags)
{
	struct http_source *hs = ctx;
	int ret = 0;
	struct batch_group *g = NULL;
	(void)flags;
	if (n > 1 && n <= PC_MAX_BATCH && (g = http_group_get(hs))) {
		/* Every run is tried, and one that failed for a while is
		 * asked again alone: failing the batch for it would have the
		 * pager retry all of them, and where one request in a few
		 * fails a batch of several would never get through whole. */
		int rets[PC_MAX_BATCH] = { 0 };
		ret = http_batch_fetch(hs, g, n, PC_SOURCE_PAGE_SIZE, first, npages, dst,
				       rets);
		http_group_put(hs, g);
		for (unsigned i = 0; i < n && ret < 0; i++)
			if (rets[i] < 0 && !fetch_error_transient(rets[i]))
				return rets[i];
		ret = 0;
		for (unsigned i = 0; i < n && ret == 0; i++)
			if (rets[i] < 0)
				ret = http_fetch(ctx, first[i], npages[i], dst[i]);
		return ret;
	}
	for (unsigned i = 0; i < n && ret == 0; i++)
		ret = http_fetch(ctx, first[i], npages[i], dst[i]);
	return ret;
}

static void http_destroy(void *ctx)
{
	struct http_source *hs = ctx;
	http_stream_stop(hs); /* first: its thread uses the rest */
	while (hs->groups) {
		struct batch_group *g = hs->groups;
		hs->groups = g->next;
		http_group_free(g);
	}
	while (hs->idle) {
		struct conn *c = hs->idle;
		hs->idle = c->next;
		http_conn_free(c);
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

/* The region's end: its stream installs into it, and stops first. */
static void http_stop(void *ctx, bool complete)
{
	(void)complete;
	http_stream_stop(ctx);
}

static const struct pc_source_ops http_ops = {
	.fetch = http_fetch,
	.fetch_many = http_fetch_many,
	.stop = http_stop,
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
	int ret = http_request(hs, &x, msg, sizeof(msg));
	if (ret < 0)
		http_note_error(hs, ret, msg);
	return ret;
}

/* A packed image's chunks: several range requests in flight, each
 * finished (blob_ops.read_many). */
static void http_blob_read_many(void *ctx, unsigned n, const uint64_t *off,
				const uint64_t *len, void *const *dst, int *rets)
{
	struct http_source *hs = ctx;
	struct batch_group *g = n > 1 ? http_group_get(hs) : NULL;
	if (g) {
		http_batch_fetch(hs, g, n, 1, off, len, dst, rets);
		http_group_put(hs, g);
		return;
	}
	for (unsigned i = 0; i < n; i++)
		if (rets[i] == 0)
			rets[i] = http_blob_read(ctx, off[i], len[i], dst[i]);
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
		ret = http_request(hs, &x, msg, sizeof(msg));
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
						      .read_many = http_blob_read_many,
						      .destroy = http_destroy };
		return packed_open(&blob, hs, hs->size, out, why, why_len);
	}
	if (ret == 0)
		ret = pc_source_custom(&http_ops, hs, hs->size, out);
	if (ret == 0) {
		(*out)->stream = http_stream_start;
		return 0;
	}
	if (ret < 0) {
		if (why && why_len && !why[0])
			set_why(why, why_len, "%s: %s", hs->url_shown ? hs->url_shown : o->url,
				strerror(-ret));
		http_destroy(hs);
	}
	return ret;
}
