/* SPDX-License-Identifier: MIT */
/*
 * server_int.h - what the files of `postcopy serve` share (private).
 *
 * One epoll loop serves a raw image.  A destination opens several
 * connections under one session id: demand lanes (request/response) and
 * one push connection, on which the server streams every page nobody
 * asked for.  The loop handles handshakes and demand requests; once a push
 * connection is ready it is handed to a push thread of its own, which
 * streams without pause.  A demand answer so never waits for the push on
 * the server: it goes out on its own connection from a loop that does
 * nothing else, as QEMU's postcopy-preempt channel does.  The push follows
 * the guest: each demand request moves one of a few stream positions (a
 * vCPU walking memory keeps its own), and the push takes turns among the
 * recently moved streams before it sweeps the rest.  Every field a peer
 * sends is checked before use; a malformed frame closes that connection
 * and nothing else; the image is only ever read at offsets a validated
 * request names.
 *
 * Threads: the loop owns connections and sessions; a push thread owns its
 * connection.  What both touch (a session's sent map, streams and
 * connection count, and the push counters) is under the server's lock,
 * held only to pick or mark pages, never across I/O.
 *
 * Files: server_loop.c (the epoll loop, connections, setup),
 * server_handshake.c (HELLO, AUTH, frames by state), server_session.c
 * (sessions and demand requests), server_out.c (output queue, pages out),
 * server_image.c (the image and its digests), server_push.c (the push
 * threads); frames are sealed and checked by wire.c.
 */
#ifndef PC_SERVER_INT_H
#define PC_SERVER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "net.h"
#include "proto.h"

/* Stream positions per session (server_push.c follows them). */
#define PUSH_STREAMS 8u

/* Connection slots; the loop's epoll ids MAX_CONNS and MAX_CONNS + 1 are
 * the listener and the stop event. */
#define MAX_CONNS 1024u

#define STALE_REASON "the image changed on disk while it was being served (or cannot be read)"

enum conn_state { WAIT_HELLO, WAIT_AUTH, READY, CLOSING };

/* Where a walk through memory (a vCPU's, as seen in its requests) is. */
struct stream {
	uint64_t pos;  /* first page after its latest request */
	uint64_t used; /* ns of that request; 0 never */
};

/* Fields marked (L) are under pc_server.lock: push threads use them too. */
struct session {
	uint64_t id;
	uint64_t cursor;      /* (L) where the sweep goes on */
	uint64_t *sent;	      /* (L) pages sent once (push skips them) */
	uint64_t unsent;      /* (L) pages not yet sent */
	struct stream streams[PUSH_STREAMS]; /* (L) */
	unsigned next_stream; /* (L) round robin */
	unsigned conns;	      /* (L) connections, push threads' included */
	bool done;	      /* BYE received */
	uint64_t idle_since;  /* (L) ns; when its last connection closed */
	/* (L) The destination's PUSH_ORDER runs (a working set it replays),
	 * pushed before the sweep; order_at is the first with unsent pages. */
	struct order_run *order;
	uint32_t order_len, order_cap, order_at;
	uint64_t *listed; /* (L) a bit per page of the order; NULL before it */
	/* (L) pages pushed by the order minus those pushed otherwise since
	 * it came; it goes first while not ahead. */
	int64_t order_lead;
	struct session *next;
};

struct conn {
	int fd;
	enum conn_state state;
	struct hello hello; /* its role, once READY */
	struct challenge chal;
	struct session *session; /* set when authenticated (READY) */
	uint8_t in[PROTO_HDR_LEN + PROTO_MAX_CLIENT_PAYLOAD];
	size_t in_have;
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	bool want_out; /* EPOLLOUT registered */
	bool want_in;  /* EPOLLIN registered */
	uint64_t since; /* accepted at, ns */
	struct frame_mac mac; /* keyed connections, after READY */
	bool refused;	    /* counted already */
};

struct pc_server {
	struct pc_server_opts opts;
	uint8_t *key;
	int image_fd;
	bool unpacked; /* image_fd is a memfd of a packed image, decoded */
	struct image_id image;
	uint64_t *digests; /* every page's, as read at start */
	uint64_t *zero_bits;
	uint64_t zero_pages;
	char image_name[64]; /* for messages */
	/* A page read back did not match its digest: the image changed on
	 * disk, and nothing more is served from it. */
	_Atomic bool stale;
	struct net_addr addr;
	char address[160];
	int listen_fd, epoll_fd, stop_fd;
	struct conn *conns[MAX_CONNS];
	unsigned conns_end; /* slots at and past it are free: scans stop there */
	struct session *sessions;
	struct pc_server_stats stats; /* the loop's; push counters below */
	uint64_t accept_paused_until; /* ns; 0 when accepting */
	unsigned nsessions;
	uint64_t sessions_expired; /* gave up waiting for its destination */
	uint64_t out_total;	   /* answers queued, all connections */
	uint64_t out_max;

	pthread_mutex_t lock;
	struct pusher *pushers; /* the loop's list */
	uint64_t pages_pushed;	/* (L) */
	uint64_t pages_ordered; /* (L) of them, pushed as a PUSH_ORDER asked */
	_Atomic uint64_t bytes_sent;
};

/* A push thread and the connection it owns. */
struct pusher {
	struct pc_server *s;
	struct conn *c;
	pthread_t thread;
	_Atomic bool finished; /* the loop may join it */
	struct pusher *next;
};

/* server_image.c: open the image, find its holes, digest every page. */
int srv_open_image(struct pc_server *s, char *why, size_t len);

/* server_out.c: a connection's output queue.  Frames are queued whole and
 * sealed (MAC tag appended) as they are queued. */
uint8_t *srv_out_reserve(struct conn *c, size_t n);
/* Seal the frame that starts at @off in the output queue. */
int srv_seal(struct conn *c, size_t off);
int srv_queue_frame(struct conn *c, uint16_t type, uint32_t tag,
		    const uint8_t *payload, size_t len);
int srv_queue_refuse(struct conn *c, uint32_t code, const char *reason);
/* Queue a REFUSE, count it and close the connection once it is sent. */
void srv_refuse(struct pc_server *s, struct conn *c, uint32_t code,
		const char *reason);
/* Pages [first, first + n) as DATA and ZERO frames, each page checked
 * against its digest if @check: 0, -ENOMEM, -EIO or -ESTALE, nothing
 * queued then. */
int srv_queue_pages(struct pc_server *s, struct conn *c, uint64_t first,
		    uint32_t n, uint32_t tag, bool check);
int srv_queue_zeromap(struct pc_server *s, struct conn *c);

/* server_session.c: sessions, demand requests and the streams they move. */
void srv_mark_sent(struct session *ss, uint64_t first, uint64_t n);
struct session *srv_session_get(struct pc_server *s, uint64_t id,
				bool *created);
void srv_session_put(struct pc_server *s, struct session *ss);
void srv_on_request(struct pc_server *s, struct conn *c, uint32_t tag,
		    const uint8_t *p, size_t len);
void srv_on_order(struct pc_server *s, struct conn *c, const uint8_t *p,
		  size_t len);
void srv_session_free(struct session *ss);
void srv_reap_sessions(struct pc_server *s);

/* server_handshake.c: a checked frame, by the connection's state. */
void srv_on_frame(struct pc_server *s, struct conn *c,
		  const struct frame_hdr *h, const uint8_t *p);

/* server_loop.c: connection slots. */
void srv_slot_free(struct pc_server *s, unsigned i);
void srv_conn_close(struct pc_server *s, unsigned i);

/* server_push.c: push threads. */
void srv_start_pusher(struct pc_server *s, unsigned i);
void srv_reap_pushers(struct pc_server *s, bool all);

#endif
