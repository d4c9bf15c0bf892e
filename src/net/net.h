/* SPDX-License-Identifier: MIT */
/*
 * net.h - addresses and socket I/O shared by the server and the network
 * source.  Addresses are resolved once, up front; everything after that
 * (connect, poll, send, recv) is a plain system call, so the network
 * source can reconnect and fetch from inside a SIGBUS handler.
 */
#ifndef PC_NET_H
#define PC_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct net_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	bool unix_socket;
	char text[160]; /* as given, for messages */
};

/*
 * Parse "tcp://HOST:PORT", "HOST:PORT", "[V6]:PORT" or "unix:PATH".
 * HOST may be a name (resolved now).  0, or -EINVAL with @why filled.
 */
int net_parse(const char *s, struct net_addr *a, char *why, size_t why_len);
/* True for loopback TCP addresses and every Unix socket. */
bool net_is_local(const struct net_addr *a);

/* A listening socket (SO_REUSEADDR; a stale Unix socket file is replaced). */
int net_listen(const struct net_addr *a);
/* Connect, giving up at @deadline_ns (CLOCK_MONOTONIC); fd or -errno.
 * Async-signal-safe. */
/* @rcvbuf: the receive buffer to ask for (SO_RCVBUF), 0 for the system's
 * default and autotuning. */
int net_connect(const struct net_addr *a, int rcvbuf, uint64_t deadline_ns);

/* Send or receive exactly @len bytes on a blocking or non-blocking socket,
 * waiting with poll() until @deadline_ns.  0, -ETIMEDOUT, -ECONNRESET on
 * EOF, or -errno.  Async-signal-safe. */
int net_send_all(int fd, const void *buf, size_t len, uint64_t deadline_ns);
/* The same with MSG_MORE when @more: more of the frame follows at once. */
int net_send_all_more(int fd, const void *buf, size_t len, bool more,
		      uint64_t deadline_ns);
/* Send @len bytes of @in_fd from @off with sendfile() (the page cache's
 * pages go into the socket, not copied).  The socket must be non-blocking;
 * a thread that calls it must block SIGPIPE, which sendfile() raises. */
int net_sendfile_all(int fd, int in_fd, uint64_t off, size_t len,
		     uint64_t deadline_ns);
int net_recv_all(int fd, void *buf, size_t len, uint64_t deadline_ns);
/*
 * The rules both ends share: TCP needs a key (at least 16 bytes) unless
 * @insecure, and @insecure is for loopback only.  0, or -EPERM / -EINVAL
 * with the reason in @why.
 */
int net_check_auth(const struct net_addr *a, bool has_key, size_t key_len,
		   bool insecure, char *why, size_t len);
/* Wait until @fd has something to read (or EOF): 0 or -ETIMEDOUT. */
int net_wait_readable(int fd, uint64_t deadline_ns);

#endif
