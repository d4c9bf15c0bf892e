/* SPDX-License-Identifier: MIT */
/*
 * fc_example_handler - the baseline of bench/fc-bench.sh: a page-fault
 * handler for Firecracker's Uffd memory backend written the way the
 * example handlers Firecracker ships are (and the way most platforms start
 * theirs): one thread, the memory file mmap'ed, one event read at a time,
 * one UFFDIO_COPY of one page per fault, a balloon's removed ranges served
 * with UFFDIO_ZEROPAGE, EAGAIN retried after reading the events queued.
 * No fill, no prefetch.  Not a handler to use: a yardstick.
 *
 *   fc_example_handler SOCK MEMFILE
 *
 * Serves one Firecracker process, then exits when its socket closes
 * (v1.12 keeps it open while the VM lives), printing on stdout one JSON
 * line: faults served and the time from the handshake to the last one.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAXR 64
#define MAXREMOVED 1024

struct region { uint64_t base, size, offset; };

struct handler {
	int uffd;
	const char *file;
	uint64_t page_size;
	struct region r[MAXR];
	unsigned n;
	struct { uint64_t start, end; } removed[MAXREMOVED];
	unsigned nremoved;
	uint64_t faults, t_first, t_last;
};

static void die(const char *what)
{
	fprintf(stderr, "fc_example_handler: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t field(struct json_object *o, const char *name)
{
	struct json_object *v;
	return json_object_object_get_ex(o, name, &v) ? (uint64_t)json_object_get_int64(v) : 0;
}

/* The one message: JSON and the userfaultfd. */
static void handshake(int conn, struct handler *h)
{
	static char buf[1 << 20];
	char ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	ssize_t got = recvmsg(conn, &m, MSG_CMSG_CLOEXEC);
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (got <= 0 || !c || c->cmsg_type != SCM_RIGHTS)
		die("handshake");
	memcpy(&h->uffd, CMSG_DATA(c), sizeof(int));
	buf[got] = 0;
	struct json_object *j = json_tokener_parse(buf);
	if (!j || !json_object_is_type(j, json_type_array))
		die("handshake JSON");
	h->n = (unsigned)json_object_array_length(j);
	if (!h->n || h->n > MAXR)
		die("region count");
	for (unsigned i = 0; i < h->n; i++) {
		struct json_object *o = json_object_array_get_idx(j, i);
		h->r[i] = (struct region){ field(o, "base_host_virt_addr"), field(o, "size"),
					   field(o, "offset") };
		h->page_size = field(o, "page_size_kib"); /* bytes, despite the name */
	}
	json_object_put(j);
	if (!h->page_size)
		h->page_size = 4096;
}

static bool removed(const struct handler *h, uint64_t addr)
{
	for (unsigned i = 0; i < h->nremoved; i++)
		if (addr >= h->removed[i].start && addr < h->removed[i].end)
			return true;
	return false;
}

static void handle(struct handler *h, const struct uffd_msg *msg, const char *mem);

/* Read and handle what is queued; false when the queue is empty. */
static bool read_one(struct handler *h, const char *mem)
{
	struct uffd_msg msg;
	ssize_t n = read(h->uffd, &msg, sizeof(msg));
	if (n != sizeof(msg)) {
		if (n < 0 && errno != EAGAIN)
			die("read (userfaultfd)");
		return false;
	}
	handle(h, &msg, mem);
	return true;
}

static void serve_fault(struct handler *h, uint64_t addr, const char *mem)
{
	addr &= ~(h->page_size - 1);
	for (;;) {
		int ret;
		if (removed(h, addr)) {
			struct uffdio_zeropage z = { .range = { addr, h->page_size } };
			ret = ioctl(h->uffd, UFFDIO_ZEROPAGE, &z);
		} else {
			const struct region *r = NULL;
			for (unsigned i = 0; i < h->n && !r; i++)
				if (addr >= h->r[i].base && addr < h->r[i].base + h->r[i].size)
					r = &h->r[i];
			if (!r)
				die("a fault outside every region");
			struct uffdio_copy cp = { .dst = addr,
						  .src = (uintptr_t)(mem + r->offset + (addr - r->base)),
						  .len = h->page_size };
			ret = ioctl(h->uffd, UFFDIO_COPY, &cp);
		}
		if (ret == 0 || errno == EEXIST)
			break;
		if (errno != EAGAIN)
			die("UFFDIO_COPY");
		while (read_one(h, mem)) /* a remove is queued: take it first */
			;
	}
	h->faults++;
	h->t_last = now_ns();
}

static void handle(struct handler *h, const struct uffd_msg *msg, const char *mem)
{
	if (msg->event == UFFD_EVENT_PAGEFAULT) {
		serve_fault(h, msg->arg.pagefault.address, mem);
	} else if (msg->event == UFFD_EVENT_REMOVE && h->nremoved < MAXREMOVED) {
		h->removed[h->nremoved].start = msg->arg.remove.start;
		h->removed[h->nremoved++].end = msg->arg.remove.end;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: fc_example_handler SOCK MEMFILE\n");
		return 2;
	}
	struct handler h = { .file = argv[2] };
	int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die(argv[2]);
	const char *mem = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", argv[1]);
	unlink(argv[1]);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&un, sizeof(un)) || listen(lfd, 1))
		die(argv[1]);
	int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (conn < 0)
		die("accept");
	handshake(conn, &h);
	h.t_first = h.t_last = now_ns();
	for (;;) {
		struct pollfd p[2] = { { h.uffd, POLLIN, 0 }, { conn, POLLIN, 0 } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			die("poll");
		if (p[0].revents & POLLIN)
			read_one(&h, mem);
		if (p[1].revents) /* the VM is gone */
			break;
	}
	printf("{\"faults\":%llu,\"seconds\":%.6f}\n", (unsigned long long)h.faults,
	       (double)(h.t_last - h.t_first) / 1e9);
	unlink(argv[1]);
	return 0;
}
