/* SPDX-License-Identifier: MIT */
/*
 * server_loop.c - `postcopy serve`'s epoll loop: accepting, reading frames
 * incrementally (checked by wire.c once whole), writing what is queued,
 * deadlines; and the server's setup and teardown.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "server_int.h"
#include "wire.h"

/* Connections still in their handshake, all peers together: past this the
 * oldest is closed for a new one, so idle strangers cannot keep real
 * lanes out.  A real destination finishes its handshake in a round trip
 * or two. */
#define MAX_PREAUTH 128u
#define OUT_QUEUE_MAX (8u << 20)

/* Answers queued for all connections together (pc_server_opts can lower
 * it): past this no connection's requests are read until they drain. */
#define SERVER_OUT_MAX (256ull << 20)

/* A connection must finish its handshake within this long. */
#define HANDSHAKE_NS (3ull * 1000000000ull)

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

void srv_slot_free(struct pc_server *s, unsigned i)
{
	s->conns[i] = NULL;
	while (s->conns_end && !s->conns[s->conns_end - 1])
		s->conns_end--;
}

void srv_conn_close(struct pc_server *s, unsigned i)
{
	struct conn *c = s->conns[i];
	/* A client that walked away mid-handshake (it did not like our
	 * proof, say) failed it as surely as one we refused. */
	if (!c->session && !c->refused)
		s->stats.refused++;
	srv_session_put(s, c->session);
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->out);
	free(c);
	srv_slot_free(s, i);
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
				srv_refuse(s, c, REFUSE_BAD_FRAME, "malformed frame header");
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
			srv_refuse(s, c, REFUSE_BAD_FRAME, "frame failed its authentication tag");
			return;
		}
		h.len = (uint32_t)len;
		srv_on_frame(s, c, &h, c->in + PROTO_HDR_LEN);
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
			srv_conn_close(s, i);
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
		srv_conn_close(s, oldest);
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
				srv_conn_close(s, i);
			else if (c->state == READY && c->hello.role == ROLE_PUSH)
				srv_start_pusher(s, i);
			else
				set_out_interest(s, c, i);
		}
		if (s->out_total > s->stats.queued_peak)
			s->stats.queued_peak = s->out_total;
		srv_reap_pushers(s, false);
		srv_reap_sessions(s);
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
	for (size_t i = 0; i < sizeof(opts->reserved) / sizeof(opts->reserved[0]); i++)
		if (opts->reserved[i]) {
			snprintf(why, len, "reserved option fields must be zero (built against a newer postcopy.h?)");
			return -EINVAL;
		}
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
	ret = srv_open_image(s, why, len);
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
	out->image_packed = s->unpacked;
	pthread_mutex_lock((pthread_mutex_t *)&s->lock);
	out->pages_pushed = s->pages_pushed;
	out->pages_ordered = s->pages_ordered;
	pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
}

void pc_server_destroy(pc_server *s)
{
	if (!s)
		return;
	srv_reap_pushers(s, true);
	for (unsigned i = 0; i < MAX_CONNS; i++)
		if (s->conns[i])
			srv_conn_close(s, i);
	while (s->sessions) {
		struct session *ss = s->sessions;
		s->sessions = ss->next;
		srv_session_free(ss);
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
