/* SPDX-License-Identifier: MIT */
/*
 * net_source_int.h - what the files of the network source share (private).
 *
 * The destination side of post-copy over the network: a page source whose
 * fetch asks a `postcopy serve` for a run of pages.  Every thread that
 * fetches gets a connection of its own (a lane), so in exit mode each vCPU
 * talks to the server on its own socket from its own SIGBUS handler, with
 * no lock shared between vCPUs.  The fetch path uses only system calls
 * (poll, send, recv, connect, nanosleep, getrandom), xxHash and
 * libsodium's HMAC, which are plain computation, and atomics: it is
 * async-signal-safe.  A lane that breaks (reset, timeout, bad checksum)
 * reconnects with backoff, proves the image is the same one, and asks
 * again; a fetch fails only when the server has been gone for longer than
 * the timeout.  Nothing is installed before its checksum matched.
 *
 * Files: net_source.c (creating the source, its operations, BYE),
 * net_handshake.c (connecting, the handshake, the zero map),
 * net_lane.c (lanes and demand fetches), net_push.c (the push receiver);
 * frames are read, sealed and checked by wire.c.
 */
#ifndef PC_NET_SOURCE_INT_H
#define PC_NET_SOURCE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "net.h"
#include "proto.h"
#include "wire.h"

/* Lanes (connections) per source: threads beyond that borrow a free one. */
#define NET_LANES 64
/* Largest payload read during the handshake, or in a REFUSE. */
#define HANDSHAKE_MAX 512u
/* Push connections, each received by a thread of its own: the receive
 * (recv, checksum, copy into the page cache, CONTINUE) costs more CPU per
 * byte than the server's send, so one receiving thread bounds the push;
 * two let it use both cores of a small machine (the server's push threads
 * share one session's pages between them). */
#define PUSH_LANES 2
#define PUSH_LANES_MAX 4

struct lane {
	_Atomic int owned; /* claimed for good by one thread */
	_Atomic int busy;  /* in use right now */
	int fd;
	uint32_t tag;
	struct frame_mac mac;
	/* A batch's requests, cut and encoded: here, not on the stack of
	 * a SIGBUS handler that may run on a small signal stack. */
	uint64_t cfirst[PC_MAX_BATCH], cn[PC_MAX_BATCH];
	void *cdst[PC_MAX_BATCH];
	uint8_t frames[PC_MAX_BATCH * (PROTO_HDR_LEN + 16 + PROTO_TAG_LEN)];
};

struct net_source;

/* One push connection and its receiving thread. */
struct push_lane {
	struct net_source *ns;
	pthread_t thread;
	int fd;		/* under push_lock: ns_push_stop() shuts it down */
	bool done;	/* PUSH_DONE came on it */
};

struct net_source {
	struct net_addr addr;
	uint8_t *key;
	size_t key_len;
	unsigned timeout_ms;
	uint64_t session;
	struct image_id image;
	uint64_t *zero_bits;
	struct lane lanes[NET_LANES];

	pc_region *region; /* with a push running */
	struct push_lane push[PUSH_LANES_MAX];
	unsigned push_want;	      /* connections to open */
	unsigned push_lanes;	      /* threads started */
	_Atomic unsigned push_live;   /* of them, still receiving */
	_Atomic unsigned push_broken; /* of them, ended without PUSH_DONE */
	_Atomic bool stopping;
	pthread_mutex_t push_lock; /* guards push[].fd against ns_push_stop() */

	_Atomic uint64_t requests, pages_received, pages_pushed, pages_ordered;
	_Atomic uint64_t bytes_received, reconnects, checksum_failures;
	_Atomic bool push_done; /* every push connection ended with PUSH_DONE */
	bool bye_sent;
};

static inline void count(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* net_handshake.c: connections to the server. */
/* Copy a message without stdio (async-signal-safe). */
void ns_set_why(char *why, size_t len, const char *a, const char *b);
/* A line on stderr, async-signal-safe. */
void ns_say(const char *s);
/* Errors no retry can fix. */
bool ns_fatal(int err);
/* A REFUSE read where pages were expected, after READY (its header in
 * @in): -ESTALE when the image changed, else -ECONNREFUSED. */
int ns_read_refusal(struct wire_in *in);
/* Connect and handshake as a later connection of the session: fd or
 * -errno. */
int ns_open_conn(struct net_source *ns, uint32_t role, uint64_t deadline,
		 struct frame_mac *mac);
/* Sleep *@backoff (doubling) but never past @deadline: false once it
 * passed. */
bool ns_backoff_until(uint64_t *backoff, uint64_t deadline);
/* One try at lane 0: connect, handshake learning the image, zero map. */
int ns_first_connection(struct net_source *ns, uint64_t deadline, char *why,
			size_t why_len);

/* net_lane.c: the fetch path, on each thread's lane. */
int net_fetch(void *ctx, uint64_t first, uint64_t npages, void *dst);
int net_fetch_many(void *ctx, unsigned n, const uint64_t *first,
		   const uint64_t *npages, void *const *dst, unsigned flags);
bool net_is_zero(void *ctx, uint64_t page);

/* net_push.c: the push receiver's thread; stop it and wait for it. */
void ns_push_stop(struct net_source *ns);
/* pc_source.follow: send the server the order to push pages in. */
int ns_push_order(void *ctx, const uint64_t *pages, uint64_t n);

#endif
