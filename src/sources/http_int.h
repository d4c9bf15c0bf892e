/* SPDX-License-Identifier: MIT */
/*
 * http_int.h - what the files of the HTTP source share (private):
 * source_http.c (answers, the pool of connections, the operations,
 * opening), http_stream.c (the fill: the image streamed into the region)
 * and http_batch.c (a wait-mode batch of demand runs, several in flight).
 */
#ifndef PC_HTTP_INT_H
#define PC_HTTP_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "internal.h"

#define HTTP_DEFAULT_TIMEOUT_MS 10000u
#define HTTP_DEFAULT_CONNECT_MS 5000u
#define HTTP_DEFAULT_CONNS 64u
#define HTTP_MAX_CONNS 256u
#define HTTP_ERR_LEN 512
#define HTTP_BODY_KEEP 512 /* bytes of an error answer kept for its reason */
/* The fill's stream (http_stream.c): this many range requests of this
 * size in flight at once, each on a connection of its own. */
#define HTTP_STREAM_CONNS 4u
#define HTTP_STREAM_CHUNK (1u << 20)
/* libcurl's receive buffer for those (its default is 16 KiB): fewer,
 * larger reads from the socket, and more whole pages per write call. */
#define HTTP_STREAM_RECV_BUF (256L << 10)
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
struct http_stream;
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
	/* Where the body goes instead of @dst, once checked: 0 or a
	 * negative errno (the transfer ends with it). */
	int (*sink)(struct xfer *x, const char *data, size_t n);
	void *sink_arg;
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
	struct http_stream *stream; /* the region's fill, until it ends */

	_Atomic uint64_t requests, bytes_received, connections;
	_Atomic uint64_t transient_errors, fatal_errors;
};

struct batch_group {
	struct batch_group *next;
	CURLM *multi;
	struct conn *c[HTTP_BATCH_CONNS];
};

/* source_http.c: one checked range request, started on @owner's handle
 * (@range names it for messages) and finished from libcurl's result: 0 or
 * a negative errno with the reason in @msg. */
void http_range_start(struct http_source *hs, struct conn *owner, struct xfer *x,
		 char range[64]);
int http_range_finish(struct http_source *hs, struct conn *owner, struct xfer *x,
		 CURLcode c, const char *range, char *msg, size_t msg_len);
/* One request on a pooled connection. */
int http_request(struct http_source *hs, struct xfer *x, char *msg, size_t msg_len);
/* A connection of the source's settings, and its end. */
struct conn *http_conn_new(struct http_source *hs);
void http_conn_free(struct conn *c);
/* Keep @msg as the source's latest failure. */
void http_note_error(struct http_source *hs, int err, const char *msg);

/* http_stream.c: pc_source.stream, the image streamed into @r, and its
 * end (at the region's destroy, through pc_source_stop()). */
int http_stream_start(void *ctx, struct pc_region *r);
void http_stream_stop(struct http_source *hs);

/* http_batch.c: a group of connections on a multi handle, from the
 * source's pool of groups (NULL when none can be made), and @n ranges
 * (demand runs, a packed image's chunks) on it, HTTP_BATCH_CONNS in
 * flight. */
struct batch_group *http_group_get(struct http_source *hs);
void http_group_put(struct http_source *hs, struct batch_group *g);
void http_group_free(struct batch_group *g);
int http_batch_fetch(struct http_source *hs, struct batch_group *g, unsigned n,
		     uint64_t unit, const uint64_t *at, const uint64_t *count,
		     void *const *dst, int *rets);

#endif
