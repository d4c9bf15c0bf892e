/* SPDX-License-Identifier: MIT */
/*
 * raw_peer.h - a peer that speaks the wire protocol by hand, for the
 * network tests that play a client or a stranger the library would never
 * be (test_net, test_net_hostile): connect, send bytes and frames, read
 * them back within a time limit.
 *
 * Include after proto.h, tap.h and net_helpers.h.
 */
#ifndef POSTCOPY_TESTS_RAW_PEER_H
#define POSTCOPY_TESTS_RAW_PEER_H

#if !defined(POSTCOPY_TESTS_NET_HELPERS_H)
#error "include proto.h, tap.h and net_helpers.h before raw_peer.h"
#endif

#include <errno.h>
#include <poll.h>

/* How long a raw read waits for the server. */
#define RAW_WAIT_MS 5000

/* A TCP connection to @in; bails out if there is none. */
static inline int raw_connect_to(const struct sockaddr_in *in)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (const struct sockaddr *)in, sizeof(*in)))
		bail_out("connect: %s", strerror(errno));
	return fd;
}

/* A TCP connection to "tcp://127.0.0.1:PORT". */
static inline int raw_connect(const char *addr)
{
	struct sockaddr_in in = loopback_sockaddr(addr);
	return raw_connect_to(&in);
}

/* All of @len bytes; false once the peer is gone (it may have closed on
 * purpose: the caller decides). */
static inline bool raw_send(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static inline bool raw_send_frame(int fd, uint16_t type, uint32_t tag,
				  const void *payload, size_t len)
{
	uint8_t hdr[PROTO_HDR_LEN];
	proto_put_hdr(hdr, type, (uint32_t)len, tag);
	return raw_send(fd, hdr, sizeof(hdr)) && (!len || raw_send(fd, payload, len));
}

/* Exactly @len bytes into @buf (NULL: read and dropped) within
 * RAW_WAIT_MS each: 1, 0 on EOF or a reset, -1 on error or timeout. */
static inline int raw_recv(int fd, void *buf, size_t len)
{
	char *p = buf, sink[4096];
	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, RAW_WAIT_MS) <= 0)
			return -1;
		size_t want = p || len < sizeof(sink) ? len : sizeof(sink);
		ssize_t n = recv(fd, p ? p : sink, want, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			return 0;
		if (n < 0)
			return errno == ECONNRESET ? 0 : -1;
		if (p)
			p += n;
		len -= (size_t)n;
	}
	return 1;
}

/* One frame whose payload is at most @max bytes: 1, 0 on EOF, -1
 * otherwise (a longer frame too). */
static inline int raw_recv_frame(int fd, struct frame_hdr *h, uint8_t *payload,
				 size_t max)
{
	uint8_t hdr[PROTO_HDR_LEN];
	int ret = raw_recv(fd, hdr, sizeof(hdr));
	if (ret <= 0)
		return ret;
	if (proto_get_hdr(hdr, (uint32_t)max, h) < 0)
		return -1;
	return h->len ? raw_recv(fd, payload, h->len) : 1;
}

/* One frame of any length: the first @cap payload bytes kept in @p, the
 * rest read and dropped.  False on EOF, an error or a bad header. */
static inline bool raw_frame_head(int fd, struct frame_hdr *h, uint8_t *p, size_t cap)
{
	uint8_t hdr[PROTO_HDR_LEN];
	if (raw_recv(fd, hdr, sizeof(hdr)) != 1 ||
	    proto_get_hdr(hdr, PROTO_MAX_PAYLOAD, h) < 0)
		return false;
	size_t keep = h->len < cap ? h->len : cap;
	return raw_recv(fd, p, keep) == 1 &&
	       (h->len == keep || raw_recv(fd, NULL, h->len - keep) == 1);
}

#endif
