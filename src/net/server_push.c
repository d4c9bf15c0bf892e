/* SPDX-License-Identifier: MIT */
/*
 * server_push.c - the push: a thread per push connection streams every
 * page the session was not sent yet, following the guest's streams first.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_int.h"

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
/* Pages not in the order an ordered frame carries between two that are. */
#define ORDER_GAP 8u
/* How long a stream stays worth following after its last demand request. */
#define STREAM_IDLE_NS 1000000000ull

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

/* First unsent page of the destination's order; @pages when the order is
 * done.  Lock held. */
static uint64_t next_ordered(struct session *ss, uint64_t pages)
{
	for (; ss->order_at < ss->order_len; ss->order_at++) {
		const struct order_run *o = &ss->order[ss->order_at];
		uint64_t e = o->first + o->npages;
		uint64_t p = next_unsent(ss, o->first, e);
		if (p < e)
			return p;
	}
	return pages;
}

/*
 * Choose the next push frame's pages and mark them sent: after the next
 * recently moved stream in turn, else the destination's order, else where
 * the sweep is.  The guest's streams come first because they are where it
 * is now; the order is where it is expected to go.  False when every page
 * was sent.  Lock held.
 */
static bool pick_push(struct pc_server *s, struct session *ss, uint64_t *first,
		      uint32_t *n)
{
	uint64_t pages = s->image.page_count, now = now_ns(), p = pages;
	uint64_t *pos = NULL; /* the position this frame moves */
	if (!ss->unsent)
		return false;
	/* The order and the rest share the push by pages: a guest's streams
	 * move on as long as it faults and would starve the order, whose
	 * runs are short. */
	bool order_first = ss->order_lead <= 0;
	if (order_first)
		p = next_ordered(ss, pages);
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
	if (p == pages && !order_first)
		p = next_ordered(ss, pages);
	if (p == pages) {
		p = next_unsent(ss, ss->cursor, pages);
		if (p == pages)
			p = next_unsent(ss, 0, pages);
		pos = &ss->cursor;
	}
	/* An ordered frame takes the unsent pages after its first up to the
	 * last the order lists, across gaps of at most ORDER_GAP: a working
	 * set comes in clusters, visited in no order inside, and every page
	 * is pushed once in the end anyway. */
	bool ordered = !pos;
	uint32_t k = 1, last = 0;
	while (k < PUSH_CHUNK && p + k < pages && !bitmap_test(ss->sent, p + k)) {
		if (ordered && bitmap_test(ss->listed, p + k))
			last = k;
		else if (ordered && k - last > ORDER_GAP)
			break;
		k++;
	}
	if (ordered)
		k = last + 1;
	srv_mark_sent(ss, p, k);
	s->pages_pushed += k;
	if (!ordered) {
		*pos = (p + k) % pages;
		ss->order_lead -= k;
	} else {
		s->pages_ordered += k;
		ss->order_lead += k;
	}
	if (ss->order_at == ss->order_len)
		ss->order_lead = 0;
	*first = p;
	*n = k;
	return true;
}

static uint64_t push_deadline(const struct pc_server *s)
{
	return now_ns() + (uint64_t)s->opts.session_timeout_ms * 1000000ull;
}

/* Write everything queued on a push connection, blocking (with MSG_MORE
 * when @more: the rest of a frame follows). */
static int push_flush_more(struct pc_server *s, struct conn *c, bool more)
{
	int ret = net_send_all_more(c->fd, c->out + c->out_off,
				    c->out_len - c->out_off, more, push_deadline(s));
	c->out_off = c->out_len = 0;
	return ret;
}

static int push_flush(struct pc_server *s, struct conn *c)
{
	return push_flush_more(s, c, false);
}

/*
 * One data run of a push frame on a connection without a key, its pages
 * handed to the socket from the page cache by sendfile(), never read or
 * copied here: both copies of srv_queue_pages() (pread, send) and its
 * digest check are gone, which on a machine whose cores the destination
 * and its vCPUs share is time given to them (the server's CPU time per
 * GiB fell by about 60%).  The destination checks every page against the
 * run's checksum as ever (made from the digests taken at start): a page
 * changed on disk since is refused there, comes again by its fill, and
 * the demand path's check here then says the image is stale.  A keyed
 * connection's tag covers the pages, which must be read for it anyway:
 * those frames keep the copying path.
 */
static int push_run_uncopied(struct pc_server *s, struct conn *c, uint64_t first,
			     uint32_t n)
{
	size_t bytes = (size_t)n * PROTO_PAGE_SIZE;
	struct data_run run = {
		.first = first, .npages = n,
		.checksum = proto_run_checksum_of(&s->image, first, s->digests + first, n),
	};
	uint8_t *f = srv_out_reserve(c, PROTO_HDR_LEN + PROTO_DATA_FIXED);
	if (!f)
		return -ENOMEM;
	proto_put_hdr(f, FRAME_DATA, PROTO_DATA_FIXED + (uint32_t)bytes, 0);
	proto_put_data_run(f + PROTO_HDR_LEN, &run);
	int ret = push_flush_more(s, c, true);
	if (ret == 0)
		ret = net_sendfile_all(c->fd, s->image_fd, first * PROTO_PAGE_SIZE,
				       bytes, push_deadline(s));
	atomic_fetch_add_explicit(&s->bytes_sent, PROTO_HDR_LEN + PROTO_DATA_FIXED + bytes,
				  memory_order_relaxed);
	return ret;
}

/* A push frame's pages @first..+@n: without a key, zero runs queued (they
 * carry no pages) and data runs sent uncopied; with one, all queued (read
 * and authenticated).  Neither checks the pages' digests here, the
 * destination does (above), as a demand answer's check does here. */
static int push_pages(struct pc_server *s, struct conn *c, uint64_t first,
		      uint32_t n)
{
	if (c->mac.on)
		return srv_queue_pages(s, c, first, n, 0, false);
	for (uint64_t p = first; p < first + n;) {
		bool zero = bitmap_test(s->zero_bits, p);
		uint64_t q = p + 1;
		while (q < first + n && bitmap_test(s->zero_bits, q) == zero)
			q++;
		int ret = zero ? srv_queue_pages(s, c, p, (uint32_t)(q - p), 0, false) :
				 push_run_uncopied(s, c, p, (uint32_t)(q - p));
		if (ret < 0)
			return ret;
		p = q;
	}
	return 0;
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
				ret = push_pages(s, c, first, n);
				frames++;
			}
		}
		if (ret == 0 && !more)
			ret = srv_queue_frame(c, FRAME_PUSH_DONE, 0, NULL, 0);
		if (ret == -ESTALE && srv_queue_refuse(c, REFUSE_STALE, STALE_REASON) == 0)
			push_flush(s, c);
		if (ret == 0)
			ret = push_flush(s, c);
		if (!more)
			break;
	}
	/* Pages lost with a broken connection come by the destination's
	 * fill, as do all after a failed read. */
	srv_session_put(s, ss);
	atomic_store(&pu->finished, true);
	return NULL;
}

/* Hand a push connection that became ready to a thread of its own. */
void srv_start_pusher(struct pc_server *s, unsigned i)
{
	struct conn *c = s->conns[i];
	struct pusher *pu = calloc(1, sizeof(*pu));
	if (!pu) {
		srv_conn_close(s, i);
		return;
	}
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	srv_slot_free(s, i);
	int buf = PUSH_SNDBUF;
	setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	/* The thread sends with a deadline on the non-blocking socket.
	 * sendfile() on a connection the destination broke raises SIGPIPE:
	 * the thread is started with it blocked, so that it gets EPIPE
	 * instead and the process is not killed (the signal stays pending
	 * on the thread, which is all it does). */
	pu->s = s;
	pu->c = c;
	sigset_t pipe, old;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, &old);
	int err = pthread_create(&pu->thread, NULL, push_main, pu);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		srv_session_put(s, c->session);
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
void srv_reap_pushers(struct pc_server *s, bool all)
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
