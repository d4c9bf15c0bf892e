/* SPDX-License-Identifier: MIT */
/*
 * http_proxy.c - a fault-injecting HTTP/1.1 proxy for tests/test_http.sh.
 *
 *   http_proxy UPSTREAM_PORT MODE [EVERY [MAX [STALL_MS]]]
 *   http_proxy UPSTREAM_PORT replace AFTER FROM TO
 *
 * Listens on a free loopback port, prints it on stdout, and forwards each
 * client connection's requests to 127.0.0.1:UPSTREAM_PORT over a
 * connection of its own.  Requests are numbered from 1 across all
 * connections; every EVERY-th one (default 5), at most MAX times (default
 * unlimited), meets MODE:
 *   pass      nothing (a plain proxy)
 *   reset     the client connection is reset (RST) before any answer
 *   503, 429  that status, empty body, the connection kept
 *   stall     no answer for STALL_MS (default 3000), then the close
 *   delay     the request goes on after STALL_MS (a network's latency)
 *   truncate  the upstream's headers and half its body, then the close
 *   badrange  the Range asked of the upstream is shifted by one page, so
 *             the answer (honest about what it holds) is not what the
 *             client asked for
 *   replace   after request AFTER, FROM is renamed onto TO (the object
 *             is replaced between two requests)
 * Each time more requests than ever before are in flight at once (read
 * and not yet answered), a line "peak N" goes to stderr.  Runs until
 * killed.  Requests are GETs without bodies, answers carry a
 * Content-Length (nginx's do): that is all this proxy understands.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX 16384

enum mode { PASS, RESET, S503, S429, STALL, TRUNCATE, BADRANGE, REPLACE, DELAY };

struct proxy {
	int upstream_port;
	enum mode mode;
	unsigned every, max, stall_ms, after;
	const char *from, *to;
	_Atomic unsigned requests, faults, in_flight, peak;
};

struct conn {
	struct proxy *p;
	int client, up;
};

static int write_all(int fd, const char *b, size_t n)
{
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read up to the end of a head ("\r\n\r\n"): its length, or -1 at EOF.
 * Bytes after it (a body's start) are left in @buf after the head; *have
 * counts all that was read. */
static ssize_t read_head(int fd, char *buf, size_t cap, size_t *have)
{
	for (;;) {
		buf[*have] = '\0';
		char *end = strstr(buf, "\r\n\r\n");
		if (end)
			return end + 4 - buf;
		if (*have >= cap - 1)
			return -1;
		ssize_t r = recv(fd, buf + *have, cap - 1 - *have, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		*have += (size_t)r;
	}
}

static void reset_close(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

static int connect_up(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Shift "Range: bytes=A-B" by a page, down when it can, else up. */
static void shift_range(char *head, size_t *len)
{
	char *r = strcasestr(head, "\r\nRange: bytes=");
	if (!r)
		return;
	char *v = r + 15, *eol = strstr(v, "\r\n");
	unsigned long long a, b;
	if (!eol || sscanf(v, "%llu-%llu", &a, &b) != 2)
		return;
	long long d = a >= 4096 ? -4096 : 4096;
	char repl[64], rest[HEAD_MAX];
	snprintf(repl, sizeof(repl), "%llu-%llu", a + d, b + d);
	snprintf(rest, sizeof(rest), "%s", eol);
	snprintf(v, HEAD_MAX - (size_t)(v - head), "%s%s", repl, rest);
	*len = strlen(head);
}

static unsigned long long content_length(const char *head)
{
	const char *c = strcasestr(head, "\r\nContent-Length:");
	return c ? strtoull(c + 17, NULL, 10) : 0;
}

/* Forward one answer from the upstream; @half: only half its body. */
static int forward_answer(struct conn *c, bool half)
{
	char buf[65536];
	size_t have = 0;
	ssize_t hl = read_head(c->up, buf, HEAD_MAX, &have);
	if (hl < 0)
		return -1;
	char saved = buf[hl];
	buf[hl] = '\0';
	unsigned long long body = content_length(buf);
	buf[hl] = saved;
	unsigned long long send_body = half ? body / 2 : body;
	size_t extra = have - (size_t)hl; /* body bytes read with the head */
	if (extra > body) /* a pipelined answer: not ours */
		return -1;
	size_t first = extra < send_body ? extra : (size_t)send_body;
	if (write_all(c->client, buf, (size_t)hl + first) < 0)
		return -1;
	unsigned long long left = send_body - first;
	while (left) {
		ssize_t r = recv(c->up, buf, left < sizeof(buf) ? left : sizeof(buf), 0);
		if (r <= 0)
			return -1;
		if (write_all(c->client, buf, (size_t)r) < 0)
			return -1;
		left -= (unsigned long long)r;
	}
	return half ? -1 : 0; /* a close after half the body truncates it */
}

static bool fault_now(struct proxy *p, unsigned k)
{
	if (p->mode == PASS || p->mode == REPLACE || k % p->every)
		return false;
	unsigned f = atomic_fetch_add(&p->faults, 1);
	return !p->max || f < p->max;
}

/* Request @k (its head in @head, @len bytes): faulted or forwarded; -1
 * ends the connection. */
static int forward(struct conn *c, char *head, size_t len, unsigned k)
{
	struct proxy *p = c->p;
	if (p->mode == REPLACE && k == p->after + 1 && rename(p->from, p->to) < 0)
		perror("http_proxy: rename");
	bool fault = fault_now(p, k);
	if (fault && p->mode == RESET) {
		reset_close(c->client);
		c->client = -1;
		return -1;
	}
	if (fault && (p->mode == S503 || p->mode == S429)) {
		const char *a = p->mode == S503 ?
			"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 0\r\n\r\n" :
			"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nRetry-After: 0\r\n\r\n";
		return write_all(c->client, a, strlen(a));
	}
	if (fault && (p->mode == STALL || p->mode == DELAY))
		usleep(p->stall_ms * 1000u);
	if (fault && p->mode == STALL)
		return -1;
	if (fault && p->mode == BADRANGE)
		shift_range(head, &len);
	if (c->up < 0 && (c->up = connect_up(p->upstream_port)) < 0)
		return -1;
	if (write_all(c->up, head, len) < 0 ||
	    forward_answer(c, fault && p->mode == TRUNCATE) < 0)
		return -1;
	return 0;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct proxy *p = c->p;
	char head[HEAD_MAX];
	size_t have = 0;

	for (;;) {
		ssize_t hl = read_head(c->client, head, sizeof(head), &have);
		if (hl < 0)
			break;
		size_t len = (size_t)hl;
		head[len] = '\0';
		unsigned k = atomic_fetch_add(&p->requests, 1) + 1;
		unsigned now = atomic_fetch_add(&p->in_flight, 1) + 1;
		for (unsigned was = atomic_load(&p->peak); now > was;)
			if (atomic_compare_exchange_weak(&p->peak, &was, now)) {
				fprintf(stderr, "peak %u\n", now);
				break;
			}
		int ret = forward(c, head, len, k);
		atomic_fetch_sub(&p->in_flight, 1);
		if (ret < 0)
			break;
		have = 0; /* GETs have no bodies, and nothing is pipelined */
	}
	if (c->client >= 0)
		close(c->client);
	if (c->up >= 0)
		close(c->up);
	free(c);
	return NULL;
}

static int parse_mode(const char *s, enum mode *m)
{
	static const char *names[] = { "pass", "reset", "503", "429", "stall",
				       "truncate", "badrange", "replace", "delay" };
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(s, names[i])) {
			*m = (enum mode)i;
			return 0;
		}
	return -1;
}

int main(int argc, char **argv)
{
	struct proxy p = { .every = 5, .stall_ms = 3000 };
	if (argc < 3 || parse_mode(argv[2], &p.mode) < 0 ||
	    (p.mode == REPLACE && argc != 6)) {
		fprintf(stderr, "usage: %s UPSTREAM_PORT pass|reset|503|429|stall|delay|truncate|badrange [EVERY [MAX [STALL_MS]]]\n"
			"       %s UPSTREAM_PORT replace AFTER FROM TO\n", argv[0], argv[0]);
		return 2;
	}
	p.upstream_port = atoi(argv[1]);
	if (p.mode == REPLACE) {
		p.after = (unsigned)atoi(argv[3]);
		p.from = argv[4];
		p.to = argv[5];
	} else {
		if (argc > 3)
			p.every = (unsigned)atoi(argv[3]);
		if (argc > 4)
			p.max = (unsigned)atoi(argv[4]);
		if (argc > 5)
			p.stall_ms = (unsigned)atoi(argv[5]);
		if (!p.every)
			p.every = 1;
	}
	signal(SIGPIPE, SIG_IGN);
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(ls, 128) < 0 || getsockname(ls, (struct sockaddr *)&a, &al) < 0) {
		perror("http_proxy: listen");
		return 1;
	}
	printf("%d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("http_proxy: accept");
			return 1;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct conn *c = malloc(sizeof(*c));
		pthread_t t;
		if (!c) {
			close(fd);
			continue;
		}
		*c = (struct conn){ .p = &p, .client = fd, .up = -1 };
		if (pthread_create(&t, NULL, conn_main, c)) {
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(t);
	}
}
