/* SPDX-License-Identifier: MIT */
/*
 * source_net.c - the destination side of post-copy over the network: a
 * page source whose fetch asks a `postcopy serve` for a run of pages.
 *
 * Every thread that fetches gets a connection of its own (a lane), so in
 * exit mode each vCPU talks to the server on its own socket from its own
 * SIGBUS handler, with no lock shared between vCPUs.  The fetch path uses
 * only system calls (poll, send, recv, connect, nanosleep, getrandom),
 * xxHash and libsodium's HMAC, which are plain computation, and atomics:
 * it is async-signal-safe.  A lane that breaks (reset, timeout, bad
 * checksum) reconnects with backoff, proves the image is the same one, and
 * asks again; a fetch fails only when the server has been gone for longer
 * than the timeout.  Nothing is installed before its checksum matched.
 *
 * Global state: the per-thread lane binding, because a signal handler can
 * find its thread's connection in no other way without a lock.
 */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "net.h"
#include "proto.h"
#include "wire.h"

#define NET_LANES 64
/* The push connection's receive buffer.  Pushed pages waiting there are
 * on their way but not yet claimed, so a vCPU that reaches them asks for
 * them again: a small buffer keeps that window short, but not so small
 * that the stream stalls on it. */
#define PUSH_RCVBUF (1 << 20)
#define HANDSHAKE_MAX 512u

struct lane {
	_Atomic int owned; /* claimed for good by one thread */
	_Atomic int busy;  /* in use right now */
	int fd;
	uint32_t tag;
	struct frame_mac mac;
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
	pthread_t push_thread;
	bool push_started;
	_Atomic bool stopping;
	pthread_mutex_t push_lock; /* guards push_fd against push_stop() */
	int push_fd;

	_Atomic uint64_t requests, pages_received, pages_pushed;
	_Atomic uint64_t bytes_received, reconnects, checksum_failures;
	_Atomic bool push_done;
	bool bye_sent;
};

static __thread struct {
	struct net_source *ns;
	int lane;
} my_lane __attribute__((tls_model("initial-exec")));

static void count(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Copy a message without stdio (async-signal-safe). */
static void set_why(char *why, size_t len, const char *a, const char *b)
{
	if (!why || !len)
		return;
	size_t n = 0;
	for (const char *s = a; s && *s && n + 1 < len; s++)
		why[n++] = *s;
	for (const char *s = b; s && *s && n + 1 < len; s++)
		why[n++] = *s;
	why[n] = '\0';
}

static void say(const char *s)
{
	if (write(STDERR_FILENO, s, strlen(s)) < 0) {
		/* nowhere to say it */
	}
}

/* Fatal: no retry can fix these. */
static bool fatal(int err)
{
	return err == -EACCES || err == -ESTALE || err == -EPROTONOSUPPORT;
}

/* A fatal answer the server has not proven yet: final only where the
 * destination may believe it (@believe), else a broken connection. */
static int unproven(bool believe, int err)
{
	return believe || !fatal(err) ? err : -ECONNREFUSED;
}

/* What a refusal means to a destination that may believe it. */
static int refusal_error(uint32_t code)
{
	return code == REFUSE_VERSION ? -EPROTONOSUPPORT :
	       code == REFUSE_AUTH    ? -EACCES :
	       code == REFUSE_STALE   ? -ESTALE :
	       code == REFUSE_BUSY    ? -EBUSY :
					-ECONNREFUSED;
}

/*
 * Send a handshake frame (its payload in @buf) and read the answer back
 * into @buf.  A REFUSE becomes an error with the server's reason; nothing
 * authenticates it yet (see handshake()).
 */
static int exchange(int fd, uint16_t type, uint8_t *buf, size_t len,
		    struct frame_hdr *h, uint64_t deadline, char *why,
		    size_t why_len)
{
	struct wire_in in;
	int ret = wire_send(fd, NULL, DIR_TO_SERVER, type, 0, buf, len, deadline);
	if (ret == 0)
		ret = wire_read_frame(&in, fd, NULL, DIR_TO_CLIENT, 0, HANDSHAKE_MAX,
				      buf, HANDSHAKE_MAX, deadline);
	if (ret == 0)
		*h = in.h;
	if (ret < 0 || h->type != FRAME_REFUSE)
		return ret;
	struct refuse rf;
	if (proto_get_refuse(buf, h->len, &rf) < 0)
		return -EPROTO;
	/* A server of another version cannot parse our HELLO at all. */
	if (type == FRAME_HELLO && rf.code == REFUSE_BAD_FRAME) {
		set_why(why, why_len, "the server does not speak protocol version 2 (an older postcopy?); it said: ",
			rf.reason);
		return -EPROTONOSUPPORT;
	}
	set_why(why, why_len, "the server refused: ", rf.reason);
	return refusal_error(rf.code);
}

/*
 * HELLO, CHALLENGE, AUTH, READY on a fresh connection.  @first learns the
 * image (and its zero map) instead of checking it.  Returns 0, -EACCES
 * (authentication), -ESTALE (a different image), -EPROTONOSUPPORT,
 * -EBUSY (too many destinations: try again), -ECONNREFUSED (refused for
 * another reason) or an I/O error.
 *
 * Before READY nothing the server says is authenticated but its proof.
 * So the proof is checked before the image is compared, and on a
 * reconnect with a key (the guest running on this source) every refusal
 * and every failed proof is only a broken connection, retried: someone
 * on the path must not be able to end a migration by saying "stale".  A
 * different image behind a valid proof is a fact, and final.
 */
static int handshake(struct net_source *ns, int fd, uint32_t role, bool first,
		     uint64_t deadline, struct frame_mac *mac, char *why,
		     size_t why_len)
{
	mac->on = false;
	struct hello hello = { .version = PROTO_VERSION, .role = role,
			       .session = ns->session,
			       .flags = (first ? 0 : HELLO_RESUME) |
					(ns->key ? proto_mac_offer() : 0) };
	uint8_t buf[HANDSHAKE_MAX];
	struct frame_hdr h;
	struct challenge chal;
	bool believe = first || !ns->key; /* unauthenticated words */

	/* getrandom(2), not libsodium's generator: this runs in the SIGBUS
	 * handler when a lane reconnects, and a raw system call is safe
	 * there. */
	if (getrandom(hello.nonce, sizeof(hello.nonce), 0) != sizeof(hello.nonce))
		return -EIO;
	int ret = exchange(fd, FRAME_HELLO, buf, proto_put_hello(buf, &hello),
			   &h, deadline, why, why_len);
	if (ret < 0)
		return unproven(believe, ret);
	if (h.type != FRAME_CHALLENGE || proto_get_challenge(buf, h.len, &chal) < 0)
		return -EPROTO;
	if (chal.version != PROTO_VERSION) {
		set_why(why, why_len, "the server speaks another protocol version", NULL);
		return unproven(believe, -EPROTONOSUPPORT);
	}
	struct auth auth = { { 0 } };
	if (ns->key) {
		uint8_t want[PROTO_MAC_LEN];
		if (sodium_is_zero(chal.proof, PROTO_MAC_LEN)) {
			set_why(why, why_len, "the server does not authenticate (start it with --key, or use --insecure on both sides)", NULL);
			return unproven(believe, -EACCES);
		}
		proto_server_proof(ns->key, ns->key_len, &hello, &chal, want);
		if (!proto_proof_equal(want, chal.proof)) {
			set_why(why, why_len, "the server could not prove it has the key", NULL);
			return unproven(believe, -EACCES);
		}
		proto_client_proof(ns->key, ns->key_len, &hello, &chal, auth.proof);
	}
	/* Only now, with the challenge proven, does its image count. */
	if (first) {
		ns->image = chal.image;
	} else if (memcmp(&chal.image, &ns->image, sizeof(chal.image))) {
		set_why(why, why_len, "the server now serves a different image", NULL);
		return -ESTALE;
	}
	ret = exchange(fd, FRAME_AUTH, buf, proto_put_auth(buf, &auth), &h,
		       deadline, why, why_len);
	if (ret < 0)
		return unproven(believe, ret);
	if (h.type != FRAME_READY || h.len)
		return -EPROTO;
	/* From here on, with a key, every frame carries a tag. */
	if (ns->key)
		proto_mac_init(mac, ns->key, ns->key_len, &hello, &chal);
	return 0;
}

/*
 * A REFUSE where pages were expected, after READY: on a keyed connection
 * its tag proves the server sent it.  The image having changed under the
 * server is final (-ESTALE); anything else breaks the connection.
 */
static int read_refusal(struct wire_in *in)
{
	uint8_t buf[HANDSHAKE_MAX];
	if (in->len > sizeof(buf))
		return -EPROTO;
	int ret = wire_read_part(in, buf, in->len);
	if (ret == 0)
		ret = wire_read_tag(in);
	struct refuse rf;
	if (ret == 0 && proto_get_refuse(buf, in->len, &rf) < 0)
		ret = -EPROTO;
	if (ret < 0)
		return ret;
	if (rf.code == REFUSE_STALE) {
		say("postcopy: the migration source says: ");
		say(rf.reason);
		say("\n");
		return -ESTALE;
	}
	return -ECONNREFUSED;
}

/* The zero map follows READY on the session's first connection. */
static int recv_zeromap(struct net_source *ns, int fd, struct frame_mac *mac,
			uint64_t deadline)
{
	uint64_t pages = ns->image.page_count, covered = 0;
	size_t max = PROTO_ZEROMAP_FIXED + PROTO_ZEROMAP_MAX_PAGES / 8;
	uint8_t *buf = malloc(max);
	int ret = buf ? 0 : -ENOMEM;

	while (ret == 0 && covered < pages) {
		struct wire_in in;
		struct zeromap zm;
		ret = wire_read_frame(&in, fd, mac, DIR_TO_CLIENT, FRAME_ZEROMAP,
				      (uint32_t)max + PROTO_TAG_LEN, buf, max, deadline);
		if (ret < 0)
			break;
		size_t len = in.len;
		if (proto_get_zeromap(buf, len, pages, &zm) < 0 || zm.first != covered) {
			ret = -EPROTO;
			break;
		}
		const uint8_t *bits = buf + PROTO_ZEROMAP_FIXED;
		/* Also without a key: a flipped bit would install data as
		 * zeros. */
		if (proto_zeromap_checksum(&ns->image, zm.first, bits,
					   len - PROTO_ZEROMAP_FIXED) != zm.checksum) {
			count(&ns->checksum_failures, 1);
			ret = -EBADMSG;
			break;
		}
		for (uint32_t i = 0; i < zm.npages; i++)
			if (bits[i / 8] >> (i % 8) & 1)
				bitmap_set(ns->zero_bits, zm.first + i);
		covered += zm.npages;
	}
	free(buf);
	return ret;
}

/* A Unix socket's server must be us or root: anyone else could have bound
 * that path first and serve whatever pages they like. */
static int check_server_uid(const struct net_source *ns, int fd)
{
	if (!ns->addr.unix_socket)
		return 0;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	return cred.uid == geteuid() || cred.uid == 0 ? 0 : -EACCES;
}

static int open_conn(struct net_source *ns, uint32_t role, uint64_t deadline,
		     struct frame_mac *mac)
{
	int fd = net_connect(&ns->addr, role == ROLE_PUSH ? PUSH_RCVBUF : 0, deadline);
	if (fd < 0)
		return fd;
	int ret = check_server_uid(ns, fd);
	if (ret == 0)
		ret = handshake(ns, fd, role, false, deadline, mac, NULL, 0);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return fd;
}

/*
 * Wait before the next try: *@backoff, doubling up to half a second, but
 * never past @deadline.  False when the deadline has passed.
 */
static bool backoff_until(uint64_t *backoff, uint64_t deadline)
{
	uint64_t now = now_ns();
	if (now >= deadline)
		return false;
	sleep_ns(deadline - now < *backoff ? deadline - now : *backoff);
	*backoff = *backoff * 2 > 500000000ull ? 500000000ull : *backoff * 2;
	return true;
}

static struct lane *acquire_lane(struct net_source *ns)
{
	int zero = 0;
	if (my_lane.ns == ns) {
		struct lane *l = &ns->lanes[my_lane.lane];
		if (atomic_compare_exchange_strong(&l->busy, &zero, 1))
			return l;
	} else {
		for (int i = 1; i < NET_LANES; i++) {
			zero = 0;
			if (atomic_compare_exchange_strong(&ns->lanes[i].owned, &zero, 1)) {
				my_lane.ns = ns;
				my_lane.lane = i;
				zero = 0;
				if (atomic_compare_exchange_strong(&ns->lanes[i].busy, &zero, 1))
					return &ns->lanes[i];
				break;
			}
		}
	}
	/* More threads than lanes: borrow whichever is free. */
	for (;;) {
		for (int i = 0; i < NET_LANES; i++) {
			zero = 0;
			if (atomic_compare_exchange_strong(&ns->lanes[i].busy, &zero, 1))
				return &ns->lanes[i];
		}
		sleep_ns(50000);
	}
}

static void release_lane(struct lane *l)
{
	atomic_store(&l->busy, 0);
}

/* Read a data run's frames for request [first, first + n) into @dst. */
static int read_answer(struct net_source *ns, int fd, struct frame_mac *mac,
		       uint32_t tag, uint64_t first, uint64_t n, char *dst,
		       uint64_t deadline)
{
	uint64_t next = first;
	while (next < first + n) {
		uint8_t fixed[PROTO_DATA_FIXED];
		struct wire_in in;
		struct data_run run;
		int ret = wire_read_hdr(&in, fd, mac, DIR_TO_CLIENT, PROTO_MAX_PAYLOAD,
					deadline);
		if (ret < 0)
			return ret;
		if (in.h.type == FRAME_REFUSE)
			return read_refusal(&in);
		if (in.h.tag != tag ||
		    (in.h.type != FRAME_DATA && in.h.type != FRAME_ZERO) ||
		    in.len < PROTO_DATA_FIXED)
			return -EPROTO;
		ret = wire_read_part(&in, fixed, sizeof(fixed));
		if (ret < 0)
			return ret;
		if (proto_get_data_run(fixed, in.len, in.h.type, ns->image.page_count, &run) < 0 ||
		    run.first != next || run.npages > first + n - next)
			return -EPROTO;
		char *to = dst + (run.first - first) * PROTO_PAGE_SIZE;
		size_t bytes = in.h.type == FRAME_ZERO ? 0 : (size_t)run.npages * PROTO_PAGE_SIZE;
		if (bytes && (ret = wire_read_part(&in, to, bytes)) < 0)
			return ret;
		/* Nothing of the run counts before its tag and checksum. */
		ret = wire_read_tag(&in);
		if (ret < 0)
			return ret;
		if (in.h.type == FRAME_ZERO)
			memset(to, 0, (size_t)run.npages * PROTO_PAGE_SIZE);
		if (proto_run_checksum(&ns->image, run.first, to, run.npages) !=
		    run.checksum) {
			count(&ns->checksum_failures, 1);
			return -EBADMSG;
		}
		count(&ns->bytes_received, PROTO_HDR_LEN + in.h.len);
		next += run.npages;
	}
	return 0;
}

static int request_many_on(struct net_source *ns, struct lane *l, unsigned n,
			   const uint64_t *first, const uint64_t *npages,
			   void *const *dst, uint32_t priority, uint64_t deadline);

/*
 * Run @n requests on lane @l (which the caller holds), reconnecting until
 * they succeed or the server has been gone for longer than the timeout.
 */
static int with_reconnect(struct net_source *ns, struct lane *l, unsigned n,
			  const uint64_t *first, const uint64_t *npages,
			  void *const *dst, uint32_t priority)
{
	/* One deadline for the whole fetch, across answers and reconnects,
	 * so --net-timeout means what it says. */
	uint64_t deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
	uint64_t backoff = 10 * 1000000ull;
	bool lost = false; /* a connection broke here: the next one is a reconnect */
	int ret = 0;

	for (;;) {
		if (l->fd < 0) {
			uint64_t t = now_ns() + 1000000000ull;
			ret = open_conn(ns, ROLE_DEMAND, t < deadline ? t : deadline, &l->mac);
			if (ret >= 0) {
				l->fd = ret;
				if (lost)
					count(&ns->reconnects, 1);
			}
		}
		if (l->fd >= 0) {
			ret = request_many_on(ns, l, n, first, npages, dst, priority,
					      deadline);
			if (ret == 0)
				break;
			close(l->fd);
			l->fd = -1;
			lost = true;
		}
		if (fatal(ret)) {
			say(ret == -ESTALE ? "postcopy: the migration source now serves a different image, or its image changed\n" :
					     "postcopy: the migration source refused to reconnect\n");
			break;
		}
		if (!backoff_until(&backoff, deadline)) {
			say("postcopy: the migration source has been unreachable for longer than the timeout\n");
			ret = -EHOSTDOWN; /* not ETIMEDOUT: that is pc_region_wait's own */
			break;
		}
	}
	return ret;
}

/* Send every request of a batch (one or more), then read the answers in
 * order. */
static int request_many_on(struct net_source *ns, struct lane *l, unsigned n,
			   const uint64_t *first, const uint64_t *npages,
			   void *const *dst, uint32_t priority, uint64_t deadline)
{
	uint8_t buf[PC_MAX_BATCH * (PROTO_HDR_LEN + 16 + PROTO_TAG_LEN)];
	uint32_t tag0 = l->tag + 1;
	size_t len = 0;
	if (!n)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		struct request rq = { .first = first[i], .npages = (uint32_t)npages[i],
				      .priority = priority };
		uint8_t payload[16];
		len += wire_put(buf + len, &l->mac, DIR_TO_SERVER, FRAME_REQUEST,
				++l->tag, payload, proto_put_request(payload, &rq));
	}
	int ret = net_send_all(l->fd, buf, len, deadline);
	for (unsigned i = 0; i < n && ret == 0; i++)
		ret = read_answer(ns, l->fd, &l->mac, tag0 + i, first[i],
				  npages[i], dst[i], deadline);
	if (ret == 0) {
		count(&ns->requests, n);
		for (unsigned i = 0; i < n; i++)
			count(&ns->pages_received, npages[i]);
	}
	return ret;
}

/*
 * Runs of any number and length, on this thread's lane: cut into requests
 * of at most PROTO_MAX_RUN pages, pipelined PC_MAX_BATCH at a time, each
 * batch retried as a whole when the lane breaks (nothing was installed
 * from a partial one).  The library's batches already fit in one.
 */
static int fetch_on_lane(struct net_source *ns, unsigned n, const uint64_t *first,
			 const uint64_t *npages, void *const *dst, uint32_t priority)
{
	uint64_t cfirst[PC_MAX_BATCH], cn[PC_MAX_BATCH];
	void *cdst[PC_MAX_BATCH];
	unsigned k = 0;
	int ret = 0;
	struct lane *l = acquire_lane(ns);
	for (unsigned i = 0; i < n && ret == 0; i++) {
		for (uint64_t off = 0; off < npages[i] && ret == 0; off += cn[k - 1]) {
			if (k == PC_MAX_BATCH) {
				ret = with_reconnect(ns, l, k, cfirst, cn, cdst, priority);
				k = 0;
				if (ret < 0)
					break;
			}
			uint64_t left = npages[i] - off;
			cfirst[k] = first[i] + off;
			cn[k] = left < PROTO_MAX_RUN ? left : PROTO_MAX_RUN;
			cdst[k] = (char *)dst[i] + off * PROTO_PAGE_SIZE;
			k++;
		}
	}
	if (ret == 0 && k)
		ret = with_reconnect(ns, l, k, cfirst, cn, cdst, priority);
	release_lane(l);
	return ret;
}

static int net_fetch_many(void *ctx, unsigned n, const uint64_t *first,
			  const uint64_t *npages, void *const *dst,
			  unsigned flags)
{
	return fetch_on_lane(ctx, n, first, npages, dst,
			     flags & PC_FETCH_PREFETCH ? PRIO_PREFETCH : PRIO_DEMAND);
}

static int net_fetch(void *ctx, uint64_t first, uint64_t npages, void *dst)
{
	return fetch_on_lane(ctx, 1, &first, &npages, &dst, PRIO_DEMAND);
}

static bool net_is_zero(void *ctx, uint64_t page)
{
	struct net_source *ns = ctx;
	return bitmap_test(ns->zero_bits, page);
}

static void push_stop(struct net_source *ns)
{
	if (!ns->push_started)
		return;
	atomic_store(&ns->stopping, true);
	/* Wake a receive in progress.  Under the lock, so that the push
	 * thread cannot close the socket (and its number be reused) between
	 * our look and our shutdown. */
	pthread_mutex_lock(&ns->push_lock);
	if (ns->push_fd >= 0)
		shutdown(ns->push_fd, SHUT_RDWR);
	pthread_mutex_unlock(&ns->push_lock);
	pthread_join(ns->push_thread, NULL);
	ns->push_started = false;
}

/* Say BYE on @fd and wait for the server's BYE back: it counted the
 * session complete.  (A close alone proves nothing: a cut lane closes
 * too.) */
static int bye_on(struct net_source *ns, int fd, struct frame_mac *mac)
{
	struct bye b = { .pages_received = atomic_load(&ns->pages_received) +
					   atomic_load(&ns->pages_pushed) };
	uint8_t buf[8];
	uint64_t deadline = now_ns() + 1000000000ull;
	struct wire_in in;
	int ret = wire_send(fd, mac, DIR_TO_SERVER, FRAME_BYE, 0, buf,
			    proto_put_bye(buf, &b), deadline);
	if (ret == 0)
		ret = wire_read_hdr(&in, fd, mac, DIR_TO_CLIENT,
				    sizeof(buf) + PROTO_TAG_LEN, deadline);
	if (ret == 0 && (in.h.type != FRAME_BYE || in.len != sizeof(buf)))
		ret = -EPROTO;
	if (ret == 0)
		ret = wire_read_part(&in, buf, sizeof(buf));
	if (ret == 0)
		ret = wire_read_tag(&in);
	return ret;
}

/*
 * Before the region goes: stop the push, and if every page arrived say
 * BYE, so that the server counts the session complete (and, with --once,
 * exits).  On lane 0 if it still works, else on a fresh connection: a
 * lane that was cut must not swallow it.
 */
static void net_stop(void *ctx, bool complete)
{
	struct net_source *ns = ctx;
	push_stop(ns);
	if (!complete || ns->bye_sent)
		return;
	struct lane *l = &ns->lanes[0]; /* no fetch runs any more: ours */
	int ret = l->fd >= 0 ? bye_on(ns, l->fd, &l->mac) : -ENOTCONN;
	for (int tries = 0; ret < 0 && tries < 3; tries++) {
		if (l->fd >= 0)
			close(l->fd);
		l->fd = open_conn(ns, ROLE_DEMAND, now_ns() + 1000000000ull, &l->mac);
		ret = l->fd >= 0 ? bye_on(ns, l->fd, &l->mac) : l->fd;
	}
	ns->bye_sent = true;
}

static void net_destroy(void *ctx)
{
	struct net_source *ns = ctx;
	push_stop(ns);
	for (int i = 0; i < NET_LANES; i++)
		if (ns->lanes[i].fd >= 0)
			close(ns->lanes[i].fd);
	if (ns->key)
		sodium_memzero(ns->key, ns->key_len);
	free(ns->key);
	free(ns->zero_bits);
	pthread_mutex_destroy(&ns->push_lock);
	free(ns);
}

/* ---- the background push ---- */


static void set_push_fd(struct net_source *ns, int fd)
{
	pthread_mutex_lock(&ns->push_lock);
	ns->push_fd = fd;
	pthread_mutex_unlock(&ns->push_lock);
}

static void close_push_fd(struct net_source *ns, int fd)
{
	pthread_mutex_lock(&ns->push_lock);
	ns->push_fd = -1;
	close(fd);
	pthread_mutex_unlock(&ns->push_lock);
}

/*
 * One pushed frame after its header: a data run is claimed as soon as its
 * fixed part says which pages it carries, so a vCPU that faults on one of
 * them meanwhile waits for this frame rather than asking for the page
 * again; the pages are installed once tag and checksum match, and given
 * back otherwise.  1 at PUSH_DONE, else 0 or a negative errno.
 */
static int push_frame(struct net_source *ns, struct wire_in *in, uint8_t *buf)
{
	const struct frame_hdr *h = &in->h;
	if (h->tag)
		return -EPROTO;
	if (h->type == FRAME_PUSH_DONE && !in->len) {
		int ret = wire_read_tag(in);
		return ret < 0 ? ret : 1;
	}
	if (h->type == FRAME_REFUSE)
		return read_refusal(in);
	struct data_run run;
	int ret = in->len >= PROTO_DATA_FIXED ?
			  wire_read_part(in, buf, PROTO_DATA_FIXED) :
			  -EPROTO;
	if (ret < 0)
		return ret;
	if ((h->type != FRAME_DATA && h->type != FRAME_ZERO) ||
	    proto_get_data_run(buf, in->len, h->type, ns->image.page_count,
			       &run) < 0)
		return -EPROTO;
	uint64_t claimed[OFFER_MAX / 64];
	ret = offer_claim(ns->region, run.first, run.npages, claimed);
	if (ret < 0)
		return ret;
	uint8_t *pages = buf + PROTO_DATA_FIXED;
	size_t bytes = (size_t)run.npages * PROTO_PAGE_SIZE;
	if (h->type == FRAME_DATA)
		ret = wire_read_part(in, pages, bytes);
	if (ret == 0)
		ret = wire_read_tag(in);
	if (ret == 0 && h->type == FRAME_ZERO)
		memset(pages, 0, bytes);
	if (ret == 0 && proto_run_checksum(&ns->image, run.first, pages, run.npages) !=
			       run.checksum) {
		count(&ns->checksum_failures, 1);
		ret = -EBADMSG; /* those pages come again, or by fill */
	}
	if (ret < 0) {
		offer_release(ns->region, run.first, run.npages, claimed);
		return ret;
	}
	count(&ns->bytes_received, PROTO_HDR_LEN + h->len);
	count(&ns->pages_pushed, run.npages);
	return offer_install(ns->region, run.first, run.npages, claimed, pages);
}

/* Receive pushed runs until PUSH_DONE. */
static int push_receive(struct net_source *ns, int fd, struct frame_mac *mac,
			uint8_t *buf)
{
	for (;;) {
		if (atomic_load(&ns->stopping) || pc_region_complete(ns->region))
			return 0;
		struct wire_in in;
		/* A quiet push (everything sent) is fine: wait in slices so
		 * completion and stop are noticed.  Once a frame starts, all
		 * of it is read under the full deadline: a header cut by a
		 * slice would leave the stream mid-frame. */
		int ret = net_wait_readable(fd, now_ns() + 200000000ull);
		if (ret == -ETIMEDOUT)
			continue;
		if (ret < 0)
			return ret;
		uint64_t deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
		ret = wire_read_hdr(&in, fd, mac, DIR_TO_CLIENT, PROTO_MAX_PAYLOAD,
				    deadline);
		if (ret == 0)
			ret = push_frame(ns, &in, buf);
		if (ret == 1) {
			atomic_store(&ns->push_done, true);
			return 0;
		}
		if (ret < 0)
			return ret;
	}
}

/*
 * The push connection: receive until the server has pushed everything,
 * reconnecting with backoff when it breaks.  Pages lost with a broken
 * connection are not pushed again; the filler, started when the push ends
 * either way, fetches whatever is still missing.
 */
static void *push_main(void *arg)
{
	struct net_source *ns = arg;
	uint8_t *buf = malloc(PROTO_MAX_PAYLOAD);
	uint64_t deadline = 0, backoff = 10 * 1000000ull;
	bool connected_once = false;

	/* No lower priority: the pages it claimed are ones a vCPU may be
	 * waiting for, and the migration is done only when it is. */
	struct frame_mac mac = { 0 };
	int fd = -1;

	while (buf && !atomic_load(&ns->stopping) && !atomic_load(&ns->push_done) &&
	       !pc_region_complete(ns->region)) {
		fd = open_conn(ns, ROLE_PUSH, now_ns() + 1000000000ull, &mac);
		int ret = fd;
		if (fd >= 0) {
			if (connected_once)
				count(&ns->reconnects, 1);
			connected_once = true;
			deadline = 0;
			backoff = 10 * 1000000ull;
			set_push_fd(ns, fd);
			ret = push_receive(ns, fd, &mac, buf);
			if (ret == 0)
				break;
			close_push_fd(ns, fd);
			fd = -1;
		}
		if (!deadline)
			deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
		if (fatal(ret) || !backoff_until(&backoff, deadline))
			break;
	}
	free(buf);
	/* Whatever did not come by push comes by fill. */
	if (!atomic_load(&ns->stopping) && !pc_region_complete(ns->region))
		pc_region_start_fill(ns->region);
	if (fd >= 0)
		close_push_fd(ns, fd);
	return NULL;
}

int pc_net_start_push(pc_source *src, pc_region *r)
{
	if (src->ops.fetch != net_fetch)
		return -EINVAL;
	struct net_source *ns = src->ctx;
	if (ns->push_started)
		return -EBUSY;
	if (pc_region_page_size(r) != PROTO_PAGE_SIZE)
		return pc_region_start_fill(r); /* huge pages: fill pulls them */
	ns->region = r;
	int ret = pthread_create(&ns->push_thread, NULL, push_main, ns);
	if (ret)
		return -ret;
	ns->push_started = true;
	return 0;
}

int pc_net_get_stats(pc_source *src, struct pc_net_stats *out)
{
	if (src->ops.fetch != net_fetch)
		return -EINVAL;
	struct net_source *ns = src->ctx;
	*out = (struct pc_net_stats){
		.requests = atomic_load(&ns->requests),
		.pages_received = atomic_load(&ns->pages_received),
		.pages_pushed = atomic_load(&ns->pages_pushed),
		.bytes_received = atomic_load(&ns->bytes_received),
		.reconnects = atomic_load(&ns->reconnects),
		.checksum_failures = atomic_load(&ns->checksum_failures),
		.push_done = atomic_load(&ns->push_done),
	};
	return 0;
}

static const struct pc_source_ops net_ops = {
	.fetch = net_fetch,
	.fetch_many = net_fetch_many,
	.is_zero = net_is_zero,
	.stop = net_stop,
	.destroy = net_destroy,
	/* Raw system calls only; but a run is checked after it arrived, so
	 * not DIRECT: the pager receives it into private memory. */
	.flags = PC_SOURCE_ASYNC_SIGNAL_SAFE,
};

/* One try at lane 0: connect, handshake, zero map. */
static int first_connection(struct net_source *ns, uint64_t deadline, char *why,
			    size_t why_len)
{
	struct lane *l = &ns->lanes[0];
	if (l->fd >= 0)
		close(l->fd);
	l->fd = net_connect(&ns->addr, 0, deadline);
	if (l->fd < 0) {
		set_why(why, why_len, "cannot connect to ", ns->addr.text);
		return l->fd;
	}
	int ret = check_server_uid(ns, l->fd);
	if (ret < 0) {
		set_why(why, why_len, ret == -EACCES ?
			"the socket's server runs as another user: " :
			"cannot check who serves the socket: ", ns->addr.text);
		return ret;
	}
	ret = handshake(ns, l->fd, ROLE_DEMAND, true, deadline, &l->mac, why,
			why_len);
	if (ret == 0 && !ns->zero_bits) {
		ns->zero_bits = calloc((ns->image.page_count + 63) / 64, 8);
		if (!ns->zero_bits)
			return -ENOMEM;
	}
	if (ret == 0) {
		memset(ns->zero_bits, 0, (ns->image.page_count + 63) / 64 * 8);
		ret = recv_zeromap(ns, l->fd, &l->mac, deadline);
	}
	if (ret < 0 && why && !why[0])
		set_why(why, why_len, "handshake with the server failed: ",
			ret == -ETIMEDOUT ? "timed out" :
			ret == -EBADMSG ? "the zero map failed its checksum" :
					  "protocol error or connection lost");
	return ret;
}

int pc_source_net(const struct pc_net_opts *o, pc_source **out, char *why,
		  size_t why_len)
{
	if (why && why_len)
		why[0] = '\0';
	if (!o || !o->address || !out)
		return -EINVAL;
	if (sodium_init() < 0) {
		set_why(why, why_len, "libsodium failed to initialise", NULL);
		return -EIO;
	}
	struct net_source *ns = calloc(1, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	for (int i = 0; i < NET_LANES; i++)
		ns->lanes[i].fd = -1;
	ns->push_fd = -1;
	pthread_mutex_init(&ns->push_lock, NULL);
	ns->timeout_ms = o->timeout_ms ? o->timeout_ms : 30000;
	int ret = net_parse(o->address, &ns->addr, why, why_len);
	if (ret < 0)
		goto err;
	ret = net_check_auth(&ns->addr, o->key, o->key_len, o->insecure, why, why_len);
	if (ret < 0)
		goto err;
	if (o->key) {
		ns->key = malloc(o->key_len);
		if (!ns->key) {
			ret = -ENOMEM;
			goto err;
		}
		memcpy(ns->key, o->key, o->key_len);
		ns->key_len = o->key_len;
	}
	randombytes_buf(&ns->session, sizeof(ns->session));

	/* The first connection learns the image; it becomes lane 0.  Like
	 * every later one it is retried within the timeout: a server still
	 * starting, or a connection cut early, is no reason to give up. */
	uint64_t deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
	uint64_t backoff = 10 * 1000000ull;
	for (;;) {
		if (why && why_len)
			why[0] = '\0';
		ret = first_connection(ns, deadline, why, why_len);
		if (ret == 0 || fatal(ret) || ret == -ENOMEM ||
		    !backoff_until(&backoff, deadline))
			break;
	}
	if (ret < 0)
		goto err;
	ret = pc_source_custom(&net_ops, ns, ns->image.size, out);
	if (ret < 0)
		goto err;
	return 0;
err:
	net_destroy(ns);
	return ret;
}
