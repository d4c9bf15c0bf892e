/* SPDX-License-Identifier: MIT */
/*
 * server.c - `postcopy serve`: one epoll loop serving a raw image.
 *
 * A destination opens several connections under one session id: demand
 * lanes (request/response) and one push connection, on which the server
 * streams every page nobody asked for.  The loop handles handshakes and
 * demand requests; once a push connection is ready it is handed to a push
 * thread of its own, which streams without pause.  A demand answer so never
 * waits for the push on the server: it goes out on its own connection from
 * a loop that does nothing else, as QEMU's postcopy-preempt channel does.
 * The push follows the guest: each demand request moves one of a few
 * stream positions (a vCPU walking memory keeps its own), and the push
 * takes turns among the recently moved streams before it sweeps the rest.
 * Every field a peer sends is checked before use; a malformed frame closes
 * that connection and nothing else; the image is only ever read at offsets
 * a validated request names.
 *
 * Threads: the loop owns connections and sessions; a push thread owns its
 * connection.  What both touch (a session's sent map, streams and
 * connection count, and the push counters) is under the server's lock,
 * held only to pick or mark pages, never across I/O.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"
#include "net.h"
#include "proto.h"
#include "wire.h"

/* Pages per push frame (256 KiB): what the destination claims at once
 * when the frame's header arrives, so a fault on one of them waits for at
 * most the rest of one frame. */
#define PUSH_CHUNK 64u
/* Push frames per send(): fewer system calls at the same frame size. */
#define PUSH_BATCH 4u
/* The push socket's send buffer.  Pages queued there are sent but not
 * yet seen by the destination, which would ask for them again on a fault:
 * a few frames, as many as keep the stream from stalling on the socket
 * (smaller ones cost more wakeups than they save). */
#define PUSH_SNDBUF (1 << 20)
/* Stream positions per session, and how long one stays worth following
 * after its last demand request. */
#define PUSH_STREAMS 8u
#define STREAM_NEAR 512u
#define STREAM_IDLE_NS 1000000000ull
#define MAX_CONNS 1024u
/* Connections still in their handshake, all peers together: past this the
 * oldest is closed for a new one, so idle strangers cannot keep real
 * lanes out.  A real destination finishes its handshake in a round trip
 * or two. */
#define MAX_PREAUTH 128u
#define OUT_QUEUE_MAX (8u << 20)
/* Answers queued for all connections together (pc_server_opts can lower
 * it): past this no connection's requests are read until they drain. */
#define SERVER_OUT_MAX (256ull << 20)
#define MAX_SESSIONS 64u
/* A connection must finish its handshake within this long. */
#define HANDSHAKE_NS (3ull * 1000000000ull)
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

/* ---- image ---- */

/*
 * Every page's digest, read once at start: the image's identity is made
 * from them, and every page read again to be sent is checked against its
 * own, so an image changed under the server (written in place, replaced
 * by one of the same size and time) is refused, never mixed into a
 * session.  Holes are zero pages and are not read.
 */
static int digest_image(struct pc_server *s, char *why, size_t len)
{
	enum { STEP = 512 }; /* pages per read */
	static const uint8_t zero[PROTO_PAGE_SIZE];
	uint64_t pages = s->image.page_count;
	uint8_t *buf = malloc((size_t)STEP * PROTO_PAGE_SIZE);
	s->digests = malloc(pages * sizeof(*s->digests));
	if (!buf || !s->digests) {
		free(buf);
		return -ENOMEM;
	}
	int ret = 0;
	for (uint64_t p = 0; p < pages && ret == 0; p += STEP) {
		uint64_t n = pages - p < STEP ? pages - p : STEP;
		size_t bytes = (size_t)n * PROTO_PAGE_SIZE;
		ssize_t got = pread(s->image_fd, buf, bytes, (off_t)(p * PROTO_PAGE_SIZE));
		if (got != (ssize_t)bytes) {
			snprintf(why, len, "%s: cannot read page %llu", s->image_name,
				 (unsigned long long)p);
			ret = got < 0 ? -errno : -EIO;
			break;
		}
		for (uint64_t i = 0; i < n; i++)
			s->digests[p + i] = proto_page_digest(
				bitmap_test(s->zero_bits, p + i) ?
					zero : buf + i * PROTO_PAGE_SIZE,
				p + i);
	}
	if (ret == 0)
		proto_image_digest(s->digests, pages, s->image.size, s->image.digest);
	free(buf);
	return ret;
}

static int open_image(struct pc_server *s, char *why, size_t len)
{
	struct stat st;
	/* O_NONBLOCK: a FIFO given as the image must not hang the open; it
	 * is refused below, and a regular file gets blocking reads back. */
	if (s->opts.image)
		s->image_fd = open(s->opts.image, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	else
		s->image_fd = fcntl(s->opts.image_fd, F_DUPFD_CLOEXEC, 0);
	if (s->image_fd < 0 || fstat(s->image_fd, &st) < 0) {
		int err = errno;
		snprintf(why, len, "%s: %s", s->image_name, strerror(err));
		return -err;
	}
	if (!S_ISREG(st.st_mode) || !st.st_size ||
	    st.st_size % PROTO_PAGE_SIZE) {
		snprintf(why, len, "%s: not a regular file whose size is a positive multiple of 4096",
			 s->image_name);
		return -EINVAL;
	}
	int flags = fcntl(s->image_fd, F_GETFL);
	if (flags < 0 || fcntl(s->image_fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		return -errno;
	s->image.size = (uint64_t)st.st_size;
	s->image.page_count = s->image.size / PROTO_PAGE_SIZE;
	/* Zero pages: the holes (SEEK_HOLE), sent to destinations up front. */
	s->zero_bits = calloc((s->image.page_count + 63) / 64, 8);
	if (!s->zero_bits)
		return -ENOMEM;
	s->zero_pages = find_holes(s->image_fd, s->image.size, s->zero_bits);
	return digest_image(s, why, len);
}

/* ---- output queue ---- */

static uint8_t *out_reserve(struct conn *c, size_t n)
{
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n)
			cap *= 2;
		uint8_t *p = realloc(c->out, cap);
		if (!p)
			return NULL;
		c->out = p;
		c->out_cap = cap;
	}
	uint8_t *at = c->out + c->out_len;
	c->out_len += n;
	return at;
}

/*
 * On a keyed connection, append the MAC tag to the frame that starts at
 * @off in the output queue (and count it in the frame's length).
 */
static int seal(struct conn *c, size_t off)
{
	uint8_t tag[PROTO_TAG_LEN];
	if (!wire_seal(&c->mac, DIR_TO_CLIENT, c->out + off,
		       c->out_len - off - PROTO_HDR_LEN, tag))
		return 0;
	uint8_t *t = out_reserve(c, PROTO_TAG_LEN);
	if (!t)
		return -ENOMEM;
	memcpy(t, tag, PROTO_TAG_LEN);
	return 0;
}

static int queue_frame(struct conn *c, uint16_t type, uint32_t tag,
		       const uint8_t *payload, size_t len)
{
	uint8_t *p = out_reserve(c, PROTO_HDR_LEN + len);
	if (!p)
		return -ENOMEM;
	proto_put_hdr(p, type, (uint32_t)len, tag);
	if (len)
		memcpy(p + PROTO_HDR_LEN, payload, len);
	return seal(c, (size_t)(p - c->out));
}

static bool pending(const struct conn *c)
{
	return c->out_off < c->out_len;
}

/* A peer that asks without reading gets no more than this queued, and
 * nobody is heard while all peers together have too much waiting. */
static bool queue_full(const struct pc_server *s, const struct conn *c)
{
	return c->out_len - c->out_off > OUT_QUEUE_MAX || s->out_total > s->out_max;
}

static int queue_refuse(struct conn *c, uint32_t code, const char *reason)
{
	struct refuse m = { .code = code };
	uint8_t buf[4 + sizeof(m.reason)];
	snprintf(m.reason, sizeof(m.reason), "%s", reason);
	return queue_frame(c, FRAME_REFUSE, 0, buf, proto_put_refuse(buf, &m));
}

static void refuse(struct pc_server *s, struct conn *c, uint32_t code,
		   const char *reason)
{
	queue_refuse(c, code, reason);
	c->state = CLOSING;
	c->refused = true;
	if (code == REFUSE_BAD_FRAME || code == REFUSE_RANGE)
		s->stats.bad_frames++;
	else
		s->stats.refused++;
}

/* ---- pages out ---- */

/* Queue pages [first, first + n) as DATA and ZERO frames tagged @tag; on
 * failure nothing of it stays queued (no unwritten bytes go out).
 * -ESTALE when a page read does not match its digest. */
static int queue_pages(struct pc_server *s, struct conn *c, uint64_t first,
		       uint32_t n, uint32_t tag)
{
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	size_t undo = c->out_len;
	for (uint64_t p = first; p < first + n;) {
		bool zero = bitmap_test(s->zero_bits, p);
		uint64_t q = p + 1;
		while (q < first + n && bitmap_test(s->zero_bits, q) == zero)
			q++;
		struct data_run run = { .first = p, .npages = (uint32_t)(q - p) };
		size_t bytes = zero ? 0 : (size_t)run.npages * PROTO_PAGE_SIZE;
		uint8_t *f = out_reserve(c, PROTO_HDR_LEN + PROTO_DATA_FIXED + bytes);
		if (!f) {
			c->out_len = undo;
			return -ENOMEM;
		}
		uint8_t *data = f + PROTO_HDR_LEN + PROTO_DATA_FIXED;
		if (!zero) {
			ssize_t got = pread(s->image_fd, data, bytes,
					    (off_t)(p * PROTO_PAGE_SIZE));
			if (got != (ssize_t)bytes) {
				c->out_len = undo;
				return got < 0 ? -errno : -EIO;
			}
			for (uint64_t i = p; i < q; i++)
				if (proto_page_digest(data + (i - p) * PROTO_PAGE_SIZE, i) !=
				    s->digests[i]) {
					atomic_store(&s->stale, true);
					c->out_len = undo;
					return -ESTALE;
				}
		}
		run.checksum = proto_run_checksum_of(&s->image, p, s->digests + p,
						     run.npages);
		proto_put_hdr(f, zero ? FRAME_ZERO : FRAME_DATA,
			      PROTO_DATA_FIXED + (uint32_t)bytes, tag);
		proto_put_data_run(f + PROTO_HDR_LEN, &run);
		if (seal(c, (size_t)(f - c->out)) < 0) {
			c->out_len = undo;
			return -ENOMEM;
		}
		p = q;
	}
	atomic_fetch_add_explicit(&s->bytes_sent, c->out_len - undo,
				  memory_order_relaxed);
	return 0;
}

/* Called with the lock held. */
static void mark_sent(struct session *ss, uint64_t first, uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++)
		if (!bitmap_test(ss->sent, p)) {
			bitmap_set(ss->sent, p);
			ss->unsent--;
		}
}

/*
 * Make room for a new session by forgetting the one that has been without
 * connections longest: a destination cut off and gone must not lock new
 * ones out for the whole session timeout.  (One that does come back
 * starts over, with a full push.)  False when every session is in use.
 */
static bool evict_idle_session(struct pc_server *s)
{
	pthread_mutex_lock(&s->lock);
	struct session **victim = NULL;
	for (struct session **pp = &s->sessions; *pp; pp = &(*pp)->next)
		if (!(*pp)->conns &&
		    (!victim || (*pp)->idle_since < (*victim)->idle_since))
			victim = pp;
	if (victim) {
		struct session *ss = *victim;
		*victim = ss->next;
		s->nsessions--;
		if (!ss->done)
			s->sessions_expired++;
		free(ss->sent);
		free(ss);
	}
	pthread_mutex_unlock(&s->lock);
	return victim != NULL;
}

static struct session *session_get(struct pc_server *s, uint64_t id,
				   bool *created)
{
	*created = false;
	for (struct session *ss = s->sessions; ss; ss = ss->next)
		if (ss->id == id && !ss->done)
			return ss;
	if (s->nsessions >= MAX_SESSIONS && !evict_idle_session(s))
		return NULL;
	struct session *ss = calloc(1, sizeof(*ss));
	if (!ss)
		return NULL;
	size_t words = (s->image.page_count + 63) / 64;
	ss->sent = malloc(words * 8);
	if (!ss->sent) {
		free(ss);
		return NULL;
	}
	ss->id = id;
	/* Zero pages travel in the zero map: never pushed. */
	memcpy(ss->sent, s->zero_bits, words * 8);
	ss->unsent = s->image.page_count - s->zero_pages;
	s->nsessions++;
	ss->next = s->sessions;
	s->sessions = ss;
	s->stats.sessions++;
	*created = true;
	return ss;
}

static int queue_zeromap(struct pc_server *s, struct conn *c)
{
	uint64_t pages = s->image.page_count;
	for (uint64_t first = 0; first < pages; first += PROTO_ZEROMAP_MAX_PAGES) {
		uint32_t n = (uint32_t)(pages - first < PROTO_ZEROMAP_MAX_PAGES ?
					pages - first : PROTO_ZEROMAP_MAX_PAGES);
		size_t len = PROTO_ZEROMAP_FIXED + (n + 7) / 8;
		uint8_t *f = out_reserve(c, PROTO_HDR_LEN + len);
		if (!f)
			return -ENOMEM;
		proto_put_hdr(f, FRAME_ZEROMAP, (uint32_t)len, 0);
		struct zeromap zm = { .first = first, .npages = n };
		uint8_t *bits = f + PROTO_HDR_LEN + PROTO_ZEROMAP_FIXED;
		memset(bits, 0, (n + 7) / 8);
		for (uint32_t i = 0; i < n; i++)
			if (bitmap_test(s->zero_bits, first + i))
				bits[i / 8] |= (uint8_t)(1u << (i % 8));
		zm.checksum = proto_zeromap_checksum(&s->image, first, bits, (n + 7) / 8);
		proto_put_zeromap(f + PROTO_HDR_LEN, &zm);
		if (seal(c, (size_t)(f - c->out)) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* ---- handshake and requests ---- */

static bool peer_allowed(struct pc_server *s, struct conn *c)
{
	if (!s->addr.unix_socket)
		return true;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	uid_t allowed = s->opts.allow_uid < 0 ? geteuid() :
						(uid_t)s->opts.allow_uid;
	return cred.uid == allowed;
}

static void on_hello(struct pc_server *s, struct conn *c, const uint8_t *p,
		     size_t len)
{
	int ret = proto_get_hello(p, len, &c->hello);
	if (ret == -EPROTONOSUPPORT) {
		char why[120];
		snprintf(why, sizeof(why),
			 "protocol version %u is not supported; this server speaks version %u",
			 c->hello.version, PROTO_VERSION);
		return refuse(s, c, REFUSE_VERSION, why);
	}
	if (ret < 0)
		return refuse(s, c, REFUSE_BAD_FRAME, "malformed HELLO");
	if (!peer_allowed(s, c))
		return refuse(s, c, REFUSE_AUTH, "this user may not connect to this socket");
	c->chal = (struct challenge){ .version = PROTO_VERSION,
				      .page_size = PROTO_PAGE_SIZE,
				      .image = s->image,
				      .mac = s->key ? proto_mac_choose(c->hello.flags) :
						      MAC_NONE };
	randombytes_buf(c->chal.nonce, sizeof(c->chal.nonce));
	if (s->key)
		proto_server_proof(s->key, s->opts.key_len, &c->hello, &c->chal,
				   c->chal.proof);
	uint8_t buf[PROTO_CHALLENGE_LEN];
	queue_frame(c, FRAME_CHALLENGE, 0, buf, proto_put_challenge(buf, &c->chal));
	c->state = WAIT_AUTH;
}

static void on_auth(struct pc_server *s, struct conn *c, const uint8_t *p,
		    size_t len)
{
	struct auth a;
	if (proto_get_auth(p, len, &a) < 0)
		return refuse(s, c, REFUSE_BAD_FRAME, "malformed AUTH");
	if (s->key) {
		uint8_t want[PROTO_MAC_LEN];
		proto_client_proof(s->key, s->opts.key_len, &c->hello, &c->chal, want);
		if (!proto_proof_equal(want, a.proof))
			return refuse(s, c, REFUSE_AUTH, "authentication failed: wrong key");
	}
	bool created;
	c->session = session_get(s, c->hello.session, &created);
	if (!c->session)
		return refuse(s, c, REFUSE_BUSY, "too many destinations at once");
	pthread_mutex_lock(&s->lock);
	c->session->conns++;
	pthread_mutex_unlock(&s->lock);
	c->state = READY;
	queue_frame(c, FRAME_READY, 0, NULL, 0);
	/* From here on, with a key, every frame carries a tag. */
	if (s->key)
		proto_mac_init(&c->mac, s->key, s->opts.key_len, &c->hello,
			       &c->chal);
	/* The image changed under us: say so where it is authenticated. */
	if (atomic_load(&s->stale))
		return refuse(s, c, REFUSE_STALE, STALE_REASON);
	/* The destination says whether it has the zero map: one that comes
	 * back after a restart of ours has it, whatever our new session
	 * thinks, and one whose first connection was cut does not. */
	if (c->hello.role == ROLE_DEMAND && !(c->hello.flags & HELLO_RESUME))
		queue_zeromap(s, c);
}

/*
 * A demand request that ends before @pos moves the stream it continues:
 * the one whose position is within STREAM_NEAR pages of it, or else the
 * one least recently moved.  Called with the lock held.
 */
static void follow(struct session *ss, uint64_t pos, uint64_t pages)
{
	struct stream *st = &ss->streams[0], *lru = st;
	for (unsigned i = 0; i < PUSH_STREAMS; i++, st++) {
		if (st->used && pos + STREAM_NEAR >= st->pos &&
		    pos <= st->pos + STREAM_NEAR)
			break;
		if (st->used < lru->used)
			lru = st;
	}
	if (st == ss->streams + PUSH_STREAMS)
		st = lru;
	st->pos = pos % pages;
	st->used = now_ns();
}

static void on_request(struct pc_server *s, struct conn *c, uint32_t tag,
		       const uint8_t *p, size_t len)
{
	struct request rq;
	int ret = proto_get_request(p, len, s->image.page_count, &rq);
	if (ret == -ERANGE)
		return refuse(s, c, REFUSE_RANGE, "request outside the image");
	if (ret < 0 || c->hello.role != ROLE_DEMAND)
		return refuse(s, c, REFUSE_BAD_FRAME, "malformed REQUEST");
	size_t queued = c->out_len - c->out_off;
	ret = queue_pages(s, c, rq.first, rq.npages, tag);
	if (ret == 0)
		s->out_total += c->out_len - c->out_off - queued;
	if (ret == -ENOMEM)
		return refuse(s, c, REFUSE_BUSY, "out of memory");
	if (ret < 0)
		return refuse(s, c, REFUSE_STALE, STALE_REASON);
	s->stats.requests++;
	s->stats.pages_demand += rq.npages;
	pthread_mutex_lock(&s->lock);
	mark_sent(c->session, rq.first, rq.npages);
	if (rq.priority == PRIO_DEMAND) /* the push follows the guest */
		follow(c->session, rq.first + rq.npages, s->image.page_count);
	pthread_mutex_unlock(&s->lock);
}

static void on_frame(struct pc_server *s, struct conn *c,
		     const struct frame_hdr *h, const uint8_t *p)
{
	switch (c->state) {
	case WAIT_HELLO:
		if (h->type != FRAME_HELLO)
			return refuse(s, c, REFUSE_BAD_FRAME, "expected HELLO");
		return on_hello(s, c, p, h->len);
	case WAIT_AUTH:
		if (h->type != FRAME_AUTH)
			return refuse(s, c, REFUSE_BAD_FRAME, "expected AUTH");
		return on_auth(s, c, p, h->len);
	case READY:
		if (h->type == FRAME_REQUEST)
			return on_request(s, c, h->tag, p, h->len);
		if (h->type == FRAME_BYE) {
			struct bye b;
			if (proto_get_bye(p, h->len, &b) < 0)
				return refuse(s, c, REFUSE_BAD_FRAME, "malformed BYE");
			if (!c->session->done)
				s->stats.sessions_done++;
			c->session->done = true;
			/* The acknowledgment: BYE back, then the close. */
			uint8_t buf[8];
			queue_frame(c, FRAME_BYE, 0, buf, proto_put_bye(buf, &b));
			c->state = CLOSING;
			return;
		}
		return refuse(s, c, REFUSE_BAD_FRAME, "unexpected frame type");
	case CLOSING:
		return;
	}
}

/* ---- the loop ---- */

static void slot_free(struct pc_server *s, unsigned i)
{
	s->conns[i] = NULL;
	while (s->conns_end && !s->conns[s->conns_end - 1])
		s->conns_end--;
}

/* A connection of @ss (or none) is gone. */
static void session_put(struct pc_server *s, struct session *ss)
{
	if (!ss)
		return;
	pthread_mutex_lock(&s->lock);
	if (--ss->conns == 0)
		ss->idle_since = now_ns();
	pthread_mutex_unlock(&s->lock);
}

static void conn_close(struct pc_server *s, unsigned i)
{
	struct conn *c = s->conns[i];
	/* A client that walked away mid-handshake (it did not like our
	 * proof, say) failed it as surely as one we refused. */
	if (!c->session && !c->refused)
		s->stats.refused++;
	session_put(s, c->session);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->out);
	free(c);
	slot_free(s, i);
}

static void set_out_interest(struct pc_server *s, struct conn *c, unsigned i)
{
	bool out = pending(c);
	bool in = c->state != CLOSING && !queue_full(s, c);
	if (out == c->want_out && in == c->want_in)
		return;
	struct epoll_event ev = { .events = (in ? EPOLLIN : 0) |
					    (out ? EPOLLOUT : 0),
				  .data.u32 = i };
	epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
	c->want_out = out;
	c->want_in = in;
}

/* Write what is queued; -1 when the connection is finished with. */
static int flush(struct conn *c)
{
	while (pending(c)) {
		ssize_t n = send(c->fd, c->out + c->out_off,
				 c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		c->out_off += (size_t)n;
	}
	return c->state == CLOSING ? -1 : 0;
}

static void on_readable(struct pc_server *s, struct conn *c)
{
	/* A refused connection reads nothing more; one whose answers pile
	 * up unread waits until they drain (its EPOLLIN is off meanwhile). */
	while (c->state != CLOSING && !queue_full(s, c)) {
		size_t want = PROTO_HDR_LEN;
		struct frame_hdr h = { 0 };
		if (c->in_have >= PROTO_HDR_LEN) {
			if (wire_hdr(c->in, PROTO_MAX_CLIENT_PAYLOAD, &h) < 0) {
				refuse(s, c, REFUSE_BAD_FRAME, "malformed frame header");
				return;
			}
			want += h.len;
		}
		if (c->in_have < want) {
			ssize_t n = recv(c->fd, c->in + c->in_have,
					 want - c->in_have, MSG_DONTWAIT);
			if (n > 0) {
				c->in_have += (size_t)n;
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			c->state = CLOSING; /* EOF or error */
			c->out_off = c->out_len;
			return;
		}
		size_t len;
		if (wire_open(&c->mac, DIR_TO_SERVER, c->in, &h, &len) < 0) {
			refuse(s, c, REFUSE_BAD_FRAME, "frame failed its authentication tag");
			return;
		}
		h.len = (uint32_t)len;
		on_frame(s, c, &h, c->in + PROTO_HDR_LEN);
		c->in_have = 0;
		if (c->state == CLOSING)
			return;
	}
}

static void pause_accepting(struct pc_server *s)
{
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->listen_fd, NULL);
	s->accept_paused_until = now_ns() + 100000000ull;
}

/* Close connections that never finished their handshake, and resume
 * accepting after a pause. */
static void reap_conns(struct pc_server *s)
{
	uint64_t now = now_ns();
	for (unsigned i = 0; i < s->conns_end; i++) {
		struct conn *c = s->conns[i];
		if (c && !c->session && now - c->since > HANDSHAKE_NS)
			conn_close(s, i);
	}
	if (s->accept_paused_until && now >= s->accept_paused_until) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = MAX_CONNS };
		epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &ev);
		s->accept_paused_until = 0;
	}
}

/*
 * A free connection slot for a new peer: the first free one, after closing
 * the oldest connection still in its handshake when there are too many of
 * those (or no free slot).  MAX_CONNS when every slot is authenticated.
 */
static unsigned make_room(struct pc_server *s)
{
	unsigned free_slot = MAX_CONNS, oldest = MAX_CONNS, preauth = 0;
	for (unsigned i = 0; i < MAX_CONNS; i++) {
		struct conn *c = s->conns[i];
		if (!c) {
			if (free_slot == MAX_CONNS)
				free_slot = i;
			continue;
		}
		if (c->session || c->state == CLOSING)
			continue;
		preauth++;
		if (oldest == MAX_CONNS || c->since < s->conns[oldest]->since)
			oldest = i;
	}
	if (oldest < MAX_CONNS && (preauth >= MAX_PREAUTH || free_slot == MAX_CONNS)) {
		s->stats.evicted++;
		conn_close(s, oldest);
		if (free_slot == MAX_CONNS)
			free_slot = oldest;
	}
	return free_slot;
}

static void accept_all(struct pc_server *s)
{
	for (;;) {
		int fd = accept4(s->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			/* Out of descriptors: stop accepting for a moment
			 * rather than spin on a listener that stays ready. */
			if (errno == EMFILE || errno == ENFILE)
				pause_accepting(s);
			return;
		}
		unsigned i = make_room(s);
		struct conn *c = i < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			close(fd);
			pause_accepting(s);
			return;
		}
		c->fd = fd;
		c->since = now_ns();
		c->want_in = true;
		if (!s->addr.unix_socket) {
			/* Answers are single writes; never hold them back. */
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
		epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
		s->conns[i] = c;
		if (i >= s->conns_end)
			s->conns_end = i + 1;
		s->stats.connections++;
	}
}

/* ---- the push ---- */

/* First page >= @from that was not sent, or @pages.  Lock held. */
static uint64_t next_unsent(const struct session *ss, uint64_t from,
			    uint64_t pages)
{
	for (uint64_t w = from / 64; w * 64 < pages; w++) {
		uint64_t free_bits = ~ss->sent[w];
		if (w == from / 64)
			free_bits &= ~0ull << (from % 64);
		if (free_bits) {
			uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(free_bits);
			return p < pages ? p : pages;
		}
	}
	return pages;
}

/*
 * Choose the next push frame's pages and mark them sent: after the next
 * recently moved stream in turn, else where the sweep is.  False when
 * every page was sent.  Lock held.
 */
static bool pick_push(struct pc_server *s, struct session *ss, uint64_t *first,
		      uint32_t *n)
{
	uint64_t pages = s->image.page_count, now = now_ns(), p = pages;
	uint64_t *pos = NULL;
	if (!ss->unsent)
		return false;
	for (unsigned k = 0; k < PUSH_STREAMS && p == pages; k++) {
		struct stream *st = &ss->streams[ss->next_stream++ % PUSH_STREAMS];
		if (!st->used || now - st->used > STREAM_IDLE_NS)
			continue;
		p = next_unsent(ss, st->pos, pages);
		if (p == pages)
			st->used = 0; /* nothing left after it */
		else
			pos = &st->pos;
	}
	if (p == pages) {
		p = next_unsent(ss, ss->cursor, pages);
		if (p == pages)
			p = next_unsent(ss, 0, pages);
		pos = &ss->cursor;
	}
	uint32_t k = 1;
	while (k < PUSH_CHUNK && p + k < pages && !bitmap_test(ss->sent, p + k))
		k++;
	mark_sent(ss, p, k);
	s->pages_pushed += k;
	*pos = (p + k) % pages;
	*first = p;
	*n = k;
	return true;
}

/* Write everything queued on a push connection, blocking. */
static int push_flush(struct pc_server *s, struct conn *c)
{
	uint64_t deadline = now_ns() + (uint64_t)s->opts.session_timeout_ms * 1000000ull;
	int ret = net_send_all(c->fd, c->out + c->out_off, c->out_len - c->out_off,
			       deadline);
	c->out_off = c->out_len = 0;
	return ret;
}

/*
 * A push thread: stream every page nobody has been sent yet, a few frames
 * per send, then PUSH_DONE.  It ends when that is done, when the
 * connection breaks, or when pc_server_destroy() shuts the socket down.
 */
static void *push_main(void *arg)
{
	struct pusher *pu = arg;
	struct pc_server *s = pu->s;
	struct conn *c = pu->c;
	struct session *ss = c->session;
	int ret = push_flush(s, c); /* READY */

	while (ret == 0) {
		unsigned frames = 0;
		bool more = true;
		while (ret == 0 && more && frames < PUSH_BATCH) {
			uint64_t first;
			uint32_t n;
			pthread_mutex_lock(&s->lock);
			more = pick_push(s, ss, &first, &n);
			pthread_mutex_unlock(&s->lock);
			if (more) {
				ret = queue_pages(s, c, first, n, 0);
				frames++;
			}
		}
		if (ret == 0 && !more)
			ret = queue_frame(c, FRAME_PUSH_DONE, 0, NULL, 0);
		if (ret == -ESTALE && queue_refuse(c, REFUSE_STALE, STALE_REASON) == 0)
			push_flush(s, c);
		if (ret == 0)
			ret = push_flush(s, c);
		if (!more)
			break;
	}
	/* Pages lost with a broken connection come by the destination's
	 * fill, as do all after a failed read. */
	session_put(s, ss);
	atomic_store(&pu->finished, true);
	return NULL;
}

/* Hand a push connection that became ready to a thread of its own. */
static void start_pusher(struct pc_server *s, unsigned i)
{
	struct conn *c = s->conns[i];
	struct pusher *pu = calloc(1, sizeof(*pu));
	if (!pu) {
		conn_close(s, i);
		return;
	}
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	slot_free(s, i);
	int buf = PUSH_SNDBUF;
	setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	/* The thread sends blocking, with a deadline. */
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
	pu->s = s;
	pu->c = c;
	if (pthread_create(&pu->thread, NULL, push_main, pu)) {
		session_put(s, c->session);
		close(c->fd);
		free(c->out);
		free(c);
		free(pu);
		return;
	}
	pu->next = s->pushers;
	s->pushers = pu;
}

/* Join push threads that ended (all of them with @all, after shutting
 * their sockets down). */
static void reap_pushers(struct pc_server *s, bool all)
{
	for (struct pusher **pp = &s->pushers; *pp;) {
		struct pusher *pu = *pp;
		if (all)
			shutdown(pu->c->fd, SHUT_RDWR);
		if (!all && !atomic_load(&pu->finished)) {
			pp = &pu->next;
			continue;
		}
		pthread_join(pu->thread, NULL);
		close(pu->c->fd);
		free(pu->c->out);
		free(pu->c);
		*pp = pu->next;
		free(pu);
	}
}

/* Forget sessions that finished, or whose destination never came back. */
static void reap_sessions(struct pc_server *s)
{
	uint64_t now = now_ns(), limit = (uint64_t)s->opts.session_timeout_ms * 1000000ull;
	pthread_mutex_lock(&s->lock);
	for (struct session **pp = &s->sessions; *pp;) {
		struct session *ss = *pp;
		if (!ss->conns && (ss->done || now - ss->idle_since > limit)) {
			*pp = ss->next;
			s->nsessions--;
			if (!ss->done)
				s->sessions_expired++;
			free(ss->sent);
			free(ss);
		} else {
			pp = &ss->next;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

static bool finished(struct pc_server *s)
{
	/* --once: one destination got every page, or gave up and its
	 * session expired. */
	if (!s->opts.once || !(s->stats.sessions_done || s->sessions_expired) ||
	    s->pushers)
		return false;
	for (unsigned i = 0; i < s->conns_end; i++)
		if (s->conns[i])
			return false;
	return true;
}

int pc_server_run(pc_server *s)
{
	struct epoll_event evs[64];
	int64_t timeout = -1; /* ns */

	while (!finished(s)) {
		struct timespec ts = { .tv_sec = timeout / 1000000000,
				       .tv_nsec = timeout % 1000000000 };
		int n = epoll_pwait2(s->epoll_fd, evs, 64,
				     timeout < 0 ? NULL : &ts, NULL);
		if (n < 0 && errno != EINTR)
			return -errno;
		for (int k = 0; k < n; k++) {
			uint32_t i = evs[k].data.u32;
			if (i == MAX_CONNS) {
				accept_all(s);
				continue;
			}
			if (i == MAX_CONNS + 1)
				return 0; /* pc_server_stop() */
			struct conn *c = s->conns[i];
			if (c && (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
				on_readable(s, c);
		}
		/* What flush() leaves queued decides whom we hear next. */
		s->out_total = 0;
		for (unsigned i = 0; i < s->conns_end; i++) {
			struct conn *c = s->conns[i];
			if (!c)
				continue;
			int ret = flush(c);
			s->out_total += c->out_len - c->out_off;
			if (ret < 0)
				conn_close(s, i);
			else if (c->state == READY && c->hello.role == ROLE_PUSH)
				start_pusher(s, i);
			else
				set_out_interest(s, c, i);
		}
		if (s->out_total > s->stats.queued_peak)
			s->stats.queued_peak = s->out_total;
		reap_pushers(s, false);
		reap_sessions(s);
		reap_conns(s);
		/* Come back at least every second for the deadlines. */
		timeout = (s->opts.once && s->stats.sessions_done ? 100 : 1000) *
			  1000000ll;
	}
	return 0;
}

void pc_server_stop(pc_server *s)
{
	uint64_t one = 1;
	if (write(s->stop_fd, &one, sizeof(one)) < 0) {
		/* already signalled */
	}
}

/* ---- setup ---- */

static int listen_and_name(struct pc_server *s, char *why, size_t len)
{
	s->listen_fd = net_listen(&s->addr);
	if (s->listen_fd < 0) {
		snprintf(why, len, "listen on %s: %s", s->addr.text, strerror(-s->listen_fd));
		return s->listen_fd;
	}
	fcntl(s->listen_fd, F_SETFL, O_NONBLOCK);
	if (s->addr.unix_socket) {
		snprintf(s->address, sizeof(s->address), "%s", s->addr.text);
		return 0;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(s->listen_fd, (struct sockaddr *)&ss, &sl);
	char host[64] = "";
	unsigned port;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(s->address, sizeof(s->address), "tcp://%s:%u", host, port);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(s->address, sizeof(s->address), "tcp://[%s]:%u", host, port);
	}
	return 0;
}

int pc_server_create(const struct pc_server_opts *opts, pc_server **out,
		     char *why, size_t len)
{
	if (why && len)
		why[0] = '\0';
	if (!opts || (!opts->image && opts->image_fd < 0) || !out)
		return -EINVAL;
	if (sodium_init() < 0) {
		snprintf(why, len, "libsodium failed to initialise");
		return -EIO;
	}
	struct pc_server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->opts = *opts;
	s->image_fd = s->listen_fd = s->epoll_fd = s->stop_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	if (opts->image)
		snprintf(s->image_name, sizeof(s->image_name), "%.63s", opts->image);
	else
		snprintf(s->image_name, sizeof(s->image_name), "descriptor %d",
			 opts->image_fd);
	if (!s->opts.listen)
		s->opts.listen = "tcp://127.0.0.1:7070";
	if (!s->opts.session_timeout_ms)
		s->opts.session_timeout_ms = 60000;
	s->out_max = s->opts.queue_max ? s->opts.queue_max : SERVER_OUT_MAX;
	int ret = net_parse(s->opts.listen, &s->addr, why, len);
	if (ret < 0)
		goto err;
	ret = net_check_auth(&s->addr, s->opts.key, s->opts.key_len,
			     s->opts.insecure, why, len);
	if (ret < 0)
		goto err;
	if (s->opts.key) {
		s->key = malloc(s->opts.key_len);
		if (!s->key) {
			ret = -ENOMEM;
			goto err;
		}
		memcpy(s->key, s->opts.key, s->opts.key_len);
		s->opts.key = s->key;
	}
	ret = open_image(s, why, len);
	if (ret < 0)
		goto err;
	ret = listen_and_name(s, why, len);
	if (ret < 0)
		goto err;
	s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->epoll_fd < 0 || s->stop_fd < 0) {
		ret = -errno;
		snprintf(why, len, "epoll/eventfd: %s", strerror(errno));
		goto err;
	}
	struct epoll_event lev = { .events = EPOLLIN, .data.u32 = MAX_CONNS };
	struct epoll_event sev = { .events = EPOLLIN, .data.u32 = MAX_CONNS + 1 };
	epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &lev);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->stop_fd, &sev);
	*out = s;
	return 0;
err:
	pc_server_destroy(s);
	return ret;
}

const char *pc_server_address(const pc_server *s)
{
	return s->address;
}

void pc_server_get_stats(const pc_server *s, struct pc_server_stats *out)
{
	*out = s->stats;
	out->bytes_sent = atomic_load(&s->bytes_sent);
	out->image_changed = atomic_load(&s->stale);
	pthread_mutex_lock((pthread_mutex_t *)&s->lock);
	out->pages_pushed = s->pages_pushed;
	pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
}

void pc_server_destroy(pc_server *s)
{
	if (!s)
		return;
	reap_pushers(s, true);
	for (unsigned i = 0; i < MAX_CONNS; i++)
		if (s->conns[i])
			conn_close(s, i);
	while (s->sessions) {
		struct session *ss = s->sessions;
		s->sessions = ss->next;
		free(ss->sent);
		free(ss);
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		if (s->addr.unix_socket)
			unlink(((struct sockaddr_un *)&s->addr.ss)->sun_path);
	}
	if (s->epoll_fd >= 0)
		close(s->epoll_fd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	if (s->image_fd >= 0)
		close(s->image_fd);
	if (s->key)
		sodium_memzero(s->key, s->opts.key_len);
	free(s->key);
	free(s->zero_bits);
	free(s->digests);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
