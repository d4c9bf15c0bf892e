/* SPDX-License-Identifier: MIT */
/* net.c - address parsing and deadline-bounded socket I/O. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "net.h"

int net_parse(const char *s, struct net_addr *a, char *why, size_t why_len)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->text, sizeof(a->text), "%s", s);
	if (!strncmp(s, "unix:", 5)) {
		struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
		const char *path = s + 5;
		if (!*path || strlen(path) >= sizeof(un->sun_path)) {
			snprintf(why, why_len, "'%s': a Unix socket path of 1..%zu bytes is needed",
				 s, sizeof(un->sun_path) - 1);
			return -EINVAL;
		}
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, path);
		a->len = sizeof(*un);
		a->unix_socket = true;
		return 0;
	}
	if (!strncmp(s, "tcp://", 6))
		s += 6;
	char host[128];
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || !colon[1]) {
		snprintf(why, why_len, "'%s': expected tcp://HOST:PORT or unix:PATH", a->text);
		return -EINVAL;
	}
	size_t hl = (size_t)(colon - s);
	if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') { /* [v6]:port */
		s++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		snprintf(why, why_len, "'%s': host name too long", a->text);
		return -EINVAL;
	}
	memcpy(host, s, hl);
	host[hl] = '\0';
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port > 65535) {
		snprintf(why, why_len, "'%s': bad port", a->text);
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	int err = getaddrinfo(host, colon + 1, &hints, &res);
	if (err) {
		snprintf(why, why_len, "'%s': %s", a->text, gai_strerror(err));
		return -EINVAL;
	}
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

bool net_is_local(const struct net_addr *a)
{
	if (a->unix_socket)
		return true;
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
	return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

static void tune(int fd, bool unix_socket)
{
	int one = 1;
	if (!unix_socket)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int net_listen(const struct net_addr *a)
{
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->unix_socket) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
		struct stat st;
		if (lstat(un->sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(un->sun_path);
	}
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
	    listen(fd, 64) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static int wait_for(int fd, short events, uint64_t deadline_ns)
{
	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		uint64_t left_ms = (deadline_ns - now + 999999) / 1000000;
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, left_ms > 60000 ? 60000 : (int)left_ms);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

int net_check_auth(const struct net_addr *a, bool has_key, size_t key_len,
		   bool insecure, char *why, size_t len)
{
	const char *fmt = NULL;
	int ret = -EPERM;
	if (insecure && !net_is_local(a))
		fmt = "--insecure is for loopback addresses only, not %s";
	else if (!a->unix_socket && !has_key && !insecure)
		fmt = "TCP needs a key (--key FILE); --insecure is for loopback tests only";
	else if (has_key && key_len < 16) {
		fmt = "the key must be at least 16 bytes";
		ret = -EINVAL;
	}
	if (!fmt)
		return 0;
	if (why && len)
		snprintf(why, len, fmt, a->text);
	return ret;
}

int net_wait_readable(int fd, uint64_t deadline_ns)
{
	return wait_for(fd, POLLIN, deadline_ns);
}

int net_connect(const struct net_addr *a, int rcvbuf, uint64_t deadline_ns)
{
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* Before connect, so that TCP sizes its window for it. */
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	int ret = 0;
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
		if (errno != EINPROGRESS && errno != EAGAIN) {
			ret = -errno;
			goto fail;
		}
		ret = wait_for(fd, POLLOUT, deadline_ns);
		if (ret < 0)
			goto fail;
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			ret = -err;
			goto fail;
		}
	}
	tune(fd, a->unix_socket);
	return fd;
fail:
	close(fd);
	return ret;
}

int net_send_all(int fd, const void *buf, size_t len, uint64_t deadline_ns)
{
	return net_send_all_more(fd, buf, len, false, deadline_ns);
}

int net_send_all_more(int fd, const void *buf, size_t len, bool more,
		      uint64_t deadline_ns)
{
	const char *p = buf;
	int flags = MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0);
	while (len) {
		ssize_t n = send(fd, p, len, flags);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return errno == EPIPE ? -ECONNRESET : -errno;
		int ret = wait_for(fd, POLLOUT, deadline_ns);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int net_sendfile_all(int fd, int in_fd, uint64_t off, size_t len,
		     uint64_t deadline_ns)
{
	off_t o = (off_t)off;
	while (len) {
		ssize_t n = sendfile(fd, in_fd, &o, len);
		if (n > 0) {
			len -= (size_t)n;
			continue;
		}
		if (n == 0)
			return -EIO; /* the file is shorter than it was */
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return errno == EPIPE ? -ECONNRESET : -errno;
		int ret = wait_for(fd, POLLOUT, deadline_ns);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int net_recv_all(int fd, void *buf, size_t len, uint64_t deadline_ns)
{
	char *p = buf;
	while (len) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		int ret = wait_for(fd, POLLIN, deadline_ns);
		if (ret < 0)
			return ret;
	}
	return 0;
}
