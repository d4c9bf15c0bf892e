/* SPDX-License-Identifier: MIT */
/*
 * server_push.c - the push: a thread per push connection streams every
 * page the session was not sent yet, following the guest's streams first.
 */
#include <errno.h>
#include <fcntl.h>
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
	srv_mark_sent(ss, p, k);
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
				ret = srv_queue_pages(s, c, first, n, 0);
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
	/* The thread sends blocking, with a deadline. */
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
	pu->s = s;
	pu->c = c;
	if (pthread_create(&pu->thread, NULL, push_main, pu)) {
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
