/* SPDX-License-Identifier: MIT */
/*
 * fc_client - behaves towards a page-fault handler exactly as Firecracker
 * does when it restores a snapshot with a Uffd memory backend, then checks
 * every byte of its memory against the memory file.  A helper of
 * tests/test_fc_handler.sh, not a test itself.
 *
 *   fc_client --sock PATH --image FILE [options]
 *
 * Guest memory: the memory file split into --regions N regions, each its
 * own MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE mapping (MAP_HUGETLB|
 * MAP_HUGE_2MB with --huge) with an unmapped hole between them.  The
 * userfaultfd comes from /dev/userfaultfd (USERFAULTFD_IOC_NEW,
 * O_CLOEXEC|O_NONBLOCK), or the userfaultfd(2) syscall when the device is
 * absent (or with --syscall); UFFDIO_API asks for UFFD_FEATURE_EVENT_REMOVE
 * (always for the v1.12 shape, else only with --balloon, as Firecracker
 * before v1.12 did); every region is registered MISSING.  Then ONE sendmsg
 * of compact JSON in the --shape chosen (v1.1: base_host_virt_addr, size,
 * offset; v1.7: + page_size_kib; v1.12: + page_size, page_size_kib; both in
 * bytes) with the userfaultfd as SCM_RIGHTS; the socket is kept open for
 * v1.12, closed before (as Firecracker does).  At once --threads N guest
 * threads fault: sequentially, scattered (a prime stride), and several on
 * the same hot pages; in one page of sixteen the first (and every) access
 * is a write.  With --balloon the middle of region 1 is given back
 * (madvise MADV_DONTNEED) while they run, after some of it was served.
 * Then every byte is compared: the memory file's contents, zeros in the
 * balloon's range, and the written words.
 *
 *   --pause-pages N --ready FILE --go FILE   touch N pages, create FILE
 *           --ready, wait until --go exists, then go on (for tests that
 *           kill the client or break the memory file mid-run)
 *   --bad KIND  send a malformed handshake and expect the handler to close
 *           the connection: nofd, json, overlap, offset (a region past the
 *           end of the file), pagesize (8192), truncated (half the JSON,
 *           then close), toolarge (2 MiB of JSON)
 *   --pad N     pad the (valid) JSON to at least N bytes with an unknown
 *           field, as newer Firecracker versions send longer messages
 *   --split     send the JSON in two writes 100 ms apart (the fd with the
 *           first)
 *   --bench seq|scatter  instead of the mixed walks above, thread i of N
 *           touches once each page of the i-th of N equal slices, in
 *           order or with a stride of 7919 pages; each first access is
 *           timed, and one JSON line on stdout gives the walk's time,
 *           the accesses that stalled (took over 2 us) and their
 *           latency p50/p99/max (for bench/fc-bench.sh)
 *
 * Exit status: 0 every byte right (or, with --bad, the handler closed the
 * connection), 2 bad command line, 3 set-up failed (mmap, userfaultfd,
 * connect, send), 4 memory differs from the file, 6 with --bad the
 * handler did not close the connection within 15 s.  A handler that
 * stops serving leaves it hanging (as it would Firecracker): run it under
 * a timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif

enum { OK = 0, USAGE = 2, SETUP = 3, MISMATCH = 4, NOT_CLOSED = 6 };

#define PG 4096ull
#define MAXR 64

static struct {
	const char *sock, *image, *shape, *bad, *ready, *go;
	unsigned nregions, threads;
	uint64_t pause_pages, pad;
	const char *bench;
	bool huge, balloon, syscall_only, split;
} opt = { .shape = "v1.12", .nregions = 3, .threads = 4 };

static uint64_t psize, fsize, npages; /* npages: 4 KiB pages */
static unsigned nr;
static char *base[MAXR];
static uint64_t rsize[MAXR], roff[MAXR];
static uint64_t bal_from, bal_to; /* file offsets given back */
static _Atomic uint64_t seq_progress;

static void die(int code, const char *fmt, const char *arg)
{
	fprintf(stderr, "fc_client: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "%s%s\n", errno ? ": " : "", errno ? strerror(errno) : "");
	exit(code);
}

static char *page_addr(uint64_t p)
{
	uint64_t off = p * PG;
	for (unsigned i = 0; i < nr; i++)
		if (off < roff[i] + rsize[i])
			return base[i] + (off - roff[i]);
	return NULL;
}

static bool in_balloon(uint64_t p)
{
	return opt.balloon && p * PG >= bal_from && p * PG < bal_to;
}

static bool is_written(uint64_t p)
{
	return p % 16 == 5 && !in_balloon(p);
}

static uint64_t wvalue(uint64_t p)
{
	return (p * 0x9e3779b97f4a7c15ull) ^ 0x66635f636c69656eull;
}

static void touch(uint64_t p)
{
	char *a = page_addr(p);
	if (is_written(p))
		__atomic_store_n((uint64_t *)(a + (p % 509) * 8), wvalue(p), __ATOMIC_RELAXED);
	else
		(void)*(volatile char *)(a + (p % 4093));
}

/* Set once the balloon's madvise returned. */
static _Atomic bool ballooned;

/*
 * With --balloon, the threads other than the sequential one stop half-way
 * through their walk until the balloon is done: otherwise, together, they
 * may fault in every page before the sequential thread reaches the
 * balloon's range, and the handler, complete, would see no REMOVE at all.
 * With 2 MiB pages half a walk covers every page (a scattered walk of
 * 1024 touches reaches all four): they wait before their first.
 */
static void touch_gated(uint64_t p, uint64_t *done, uint64_t total)
{
	if (opt.balloon && ++*done == (opt.huge ? 1 : total / 2))
		while (!atomic_load(&ballooned))
			usleep(100);
	touch(p);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* --bench: every first access's time, in the thread's slice order. */
static uint64_t *lat_ns;

static void *bench_guest(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;
	uint64_t from = npages * id / opt.threads, to = npages * (id + 1) / opt.threads;
	uint64_t len = to - from, stride = 1;
	if (!strcmp(opt.bench, "scatter") && len % 7919)
		stride = 7919;
	for (uint64_t i = 0, p = 0; i < len; i++, p = (p + stride) % len) {
		uint64_t t0 = now_ns();
		touch(from + p);
		lat_ns[from + i] = now_ns() - t0;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void bench_report(double seconds)
{
	qsort(lat_ns, npages, sizeof(*lat_ns), cmp_u64);
	uint64_t calm = 0;
	while (calm < npages && lat_ns[calm] <= 2000)
		calm++;
	uint64_t n = npages - calm, *st = lat_ns + calm;
	printf("{\"threads\":%u,\"pattern\":\"%s\",\"pages\":%llu,\"seconds\":%.6f,"
	       "\"stalls\":%llu,\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
	       opt.threads, opt.bench, (unsigned long long)npages, seconds,
	       (unsigned long long)n, n ? st[n / 2] / 1e3 : 0.0,
	       n ? st[n * 99 / 100] / 1e3 : 0.0, n ? st[n - 1] / 1e3 : 0.0);
}

static void *guest(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;
	uint64_t done = 0;
	switch (id % 3) {
	case 0: /* sequential */
		for (uint64_t p = 0; p < npages; p++) {
			if (id == 0)
				touch(p); /* it leads the balloon */
			else
				touch_gated(p, &done, npages);
			if (id == 0)
				atomic_store(&seq_progress, p + 1);
			/* Where the balloon goes off it waits for it: with 2 MiB
			 * pages it could fault in all the rest first, the region
			 * complete and no REMOVE ever sent (1 run in about 10). */
			if (id == 0 && opt.balloon && p + 1 == (bal_from + bal_to) / 2 / PG)
				while (!atomic_load(&ballooned))
					usleep(100);
		}
		break;
	case 1: /* scattered */
		for (uint64_t i = 0, p = id * 977 % npages; i < npages; i++, p = (p + 7919) % npages)
			touch_gated(p, &done, npages);
		break;
	default: { /* the same hot pages as the other threads of this kind, then backwards */
		uint64_t hot = npages < 256 ? npages : 256, total = 4 * hot + npages;
		for (int round = 0; round < 4; round++)
			for (uint64_t p = 0; p < hot; p++)
				touch_gated(p, &done, total);
		for (uint64_t p = npages; p-- > 0;)
			touch_gated(p, &done, total);
		break;
	}
	}
	return NULL;
}

static int make_uffd(void)
{
	int uffd = -1;
	if (!opt.syscall_only) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			uffd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			close(dev);
		}
	}
	if (uffd < 0)
		uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		die(SETUP, "%s", "userfaultfd");
	bool remove = !strcmp(opt.shape, "v1.12") || opt.balloon;
	struct uffdio_api api = { .api = UFFD_API,
				  .features = remove ? UFFD_FEATURE_EVENT_REMOVE : 0 };
	if (ioctl(uffd, UFFDIO_API, &api))
		die(SETUP, "%s", "UFFDIO_API");
	for (unsigned i = 0; i < nr; i++) {
		struct uffdio_register reg = {
			.range = { (uintptr_t)base[i], rsize[i] },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(uffd, UFFDIO_REGISTER, &reg))
			die(SETUP, "%s", "UFFDIO_REGISTER");
	}
	return uffd;
}

/* The handshake's JSON, as Firecracker's serde writes it. */
static char *handshake_json(size_t *len)
{
	size_t cap = 4096 + opt.pad + (uint64_t)nr * 200;
	char *s = malloc(cap);
	size_t n = 0;
	if (!s)
		die(SETUP, "%s", "malloc");
	if (opt.bad && !strcmp(opt.bad, "json")) {
		n = (size_t)snprintf(s, cap, "[{\"base_host_virt_addr\":%llu,\"size\":}]",
				     (unsigned long long)(uintptr_t)base[0]);
		*len = n;
		return s;
	}
	s[n++] = '[';
	for (unsigned i = 0; i < nr; i++) {
		uint64_t b = (uintptr_t)base[i], sz = rsize[i], off = roff[i], ps = psize;
		if (opt.bad && !strcmp(opt.bad, "overlap") && i == 1)
			b = (uintptr_t)base[0] + psize;
		if (opt.bad && !strcmp(opt.bad, "pagesize"))
			ps = 8192;
		n += (size_t)snprintf(s + n, cap - n, "%s{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu",
				      i ? "," : "", (unsigned long long)b, (unsigned long long)sz,
				      (unsigned long long)off);
		if (!strcmp(opt.shape, "v1.12"))
			n += (size_t)snprintf(s + n, cap - n, ",\"page_size\":%llu", (unsigned long long)ps);
		if (strcmp(opt.shape, "v1.1"))
			n += (size_t)snprintf(s + n, cap - n, ",\"page_size_kib\":%llu", (unsigned long long)ps);
		if (i == 0 && opt.pad > n) {
			uint64_t fill = opt.pad - n;
			n += (size_t)snprintf(s + n, cap - n, ",\"padding\":\"");
			memset(s + n, 'x', fill);
			n += fill;
			s[n++] = '"';
		}
		s[n++] = '}';
	}
	s[n++] = ']';
	s[n] = 0;
	*len = n;
	return s;
}

static void send_handshake(int sock, int uffd)
{
	size_t len;
	char *json = handshake_json(&len);
	bool nofd = opt.bad && !strcmp(opt.bad, "nofd");
	size_t first = opt.split ? len / 2 : len;
	if (opt.bad && !strcmp(opt.bad, "truncated"))
		first = len / 2;
	char ctl[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { json, first };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (!nofd) {
		m.msg_control = ctl;
		m.msg_controllen = sizeof(ctl);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &uffd, sizeof(int));
	}
	ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);
	if (opt.bad && !strcmp(opt.bad, "toolarge")) {
		free(json);
		return; /* the handler may refuse it before it is all read */
	}
	if (n != (ssize_t)first)
		die(SETUP, "%s", "sendmsg");
	if (opt.bad && !strcmp(opt.bad, "truncated"))
		shutdown(sock, SHUT_WR); /* half the JSON, then the end */
	else if (first < len) {
		usleep(100000);
		if (send(sock, json + first, len - first, MSG_NOSIGNAL) != (ssize_t)(len - first))
			die(SETUP, "%s", "send (second part)");
	}
	free(json);
}

static bool wait_for_file(const char *path, int seconds)
{
	for (int i = 0; i < seconds * 100; i++) {
		if (access(path, F_OK) == 0)
			return true;
		usleep(10000);
	}
	return false;
}

static int verify(int imgfd)
{
	char want[PG];
	uint64_t bad = 0;
	for (uint64_t p = 0; p < npages; p++) {
		if (in_balloon(p))
			memset(want, 0, PG);
		else if (pread(imgfd, want, PG, (off_t)(p * PG)) != (ssize_t)PG)
			die(SETUP, "%s", "reading the memory file");
		if (is_written(p)) {
			uint64_t v = wvalue(p);
			memcpy(want + (p % 509) * 8, &v, 8);
		}
		if (memcmp(page_addr(p), want, PG)) {
			if (bad++ < 5)
				fprintf(stderr, "fc_client: page %llu (file offset %#llx) differs%s\n",
					(unsigned long long)p, (unsigned long long)(p * PG),
					in_balloon(p) ? " (given back: should be zeros)" : "");
		}
	}
	if (bad)
		fprintf(stderr, "fc_client: %llu of %llu pages differ\n",
			(unsigned long long)bad, (unsigned long long)npages);
	return bad ? MISMATCH : OK;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "sock", 1, NULL, 's' }, { "image", 1, NULL, 'i' },
		{ "shape", 1, NULL, 'S' }, { "regions", 1, NULL, 'n' },
		{ "threads", 1, NULL, 't' }, { "huge", 0, NULL, 'H' },
		{ "balloon", 0, NULL, 'b' }, { "syscall", 0, NULL, 'y' },
		{ "pause-pages", 1, NULL, 'p' }, { "ready", 1, NULL, 'r' },
		{ "go", 1, NULL, 'g' }, { "bad", 1, NULL, 'B' },
		{ "pad", 1, NULL, 'P' }, { "split", 0, NULL, 'x' },
		{ "bench", 1, NULL, 'W' }, { 0 }
	};
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 's': opt.sock = optarg; break;
		case 'i': opt.image = optarg; break;
		case 'S': opt.shape = optarg; break;
		case 'n': opt.nregions = (unsigned)atoi(optarg); break;
		case 't': opt.threads = (unsigned)atoi(optarg); break;
		case 'H': opt.huge = true; break;
		case 'b': opt.balloon = true; break;
		case 'y': opt.syscall_only = true; break;
		case 'p': opt.pause_pages = strtoull(optarg, NULL, 0); break;
		case 'r': opt.ready = optarg; break;
		case 'g': opt.go = optarg; break;
		case 'B': opt.bad = optarg; break;
		case 'P': opt.pad = strtoull(optarg, NULL, 0); break;
		case 'x': opt.split = true; break;
		case 'W': opt.bench = optarg; break;
		default: return USAGE;
		}
	}
	if (!opt.sock || !opt.image || !opt.nregions || opt.nregions > MAXR ||
	    !opt.threads || opt.threads > 64 ||
	    (strcmp(opt.shape, "v1.1") && strcmp(opt.shape, "v1.7") && strcmp(opt.shape, "v1.12")) ||
	    (opt.pause_pages && (!opt.ready || !opt.go)) ||
	    (opt.bench && ((strcmp(opt.bench, "seq") && strcmp(opt.bench, "scatter")) ||
			   opt.balloon || opt.pause_pages))) {
		fprintf(stderr, "fc_client: bad command line (see the comment at the top of tests/fc_client.c)\n");
		return USAGE;
	}
	if (opt.bad && opt.huge && !strcmp(opt.bad, "pagesize"))
		opt.huge = false;
	psize = opt.huge ? 2ull << 20 : PG;
	int imgfd = open(opt.image, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (imgfd < 0 || fstat(imgfd, &st))
		die(SETUP, "%s", opt.image);
	fsize = (uint64_t)st.st_size;
	npages = fsize / PG;
	uint64_t units = fsize / psize;
	if (fsize % psize || units < opt.nregions)
		die(USAGE, "%s: too small for the regions asked for", opt.image);
	if (opt.bad && !strcmp(opt.bad, "toolarge"))
		opt.pad = 2u << 20;

	/* Regions with holes between them, as Firecracker maps them (each a
	 * mapping of its own; here inside one PROT_NONE reservation, so that
	 * the holes are there for sure). */
	nr = opt.nregions;
	uint64_t extra = opt.bad && !strcmp(opt.bad, "offset") ? psize : 0;
	uint64_t span = fsize + extra + (nr + 2) * psize;
	char *res = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		die(SETUP, "%s", "mmap (reservation)");
	char *at = (char *)(((uintptr_t)res + psize - 1) & ~(uintptr_t)(psize - 1));
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED |
		    (opt.huge ? MAP_HUGETLB | MAP_HUGE_2MB : 0);
	uint64_t off = 0;
	for (unsigned i = 0; i < nr; i++) {
		uint64_t u = i + 1 < nr ? units / nr : units - (uint64_t)(nr - 1) * (units / nr);
		rsize[i] = u * psize + (i + 1 == nr ? extra : 0);
		roff[i] = off;
		off += rsize[i];
		base[i] = mmap(at, rsize[i], PROT_READ | PROT_WRITE, flags, -1, 0);
		if (base[i] == MAP_FAILED)
			die(SETUP, "%s", opt.huge ? "mmap (hugetlb: are 2 MiB pages reserved?)" : "mmap");
		at += rsize[i] + psize; /* the hole */
	}
	if (opt.balloon) { /* the middle half of region 1 (0 if alone) */
		unsigned b = nr > 1 ? 1 : 0;
		uint64_t q = rsize[b] / 4 / psize * psize;
		bal_from = roff[b] + q;
		bal_to = roff[b] + rsize[b] - q;
		if (bal_to <= bal_from)
			bal_from = roff[b], bal_to = roff[b] + rsize[b];
	}

	int uffd = make_uffd();
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", opt.sock);
	if (sock < 0 || connect(sock, (struct sockaddr *)&un, sizeof(un)))
		die(SETUP, "connect %s", opt.sock);
	send_handshake(sock, uffd);

	if (opt.bad) { /* the handler must close the connection */
		struct pollfd p = { sock, POLLIN, 0 };
		char b;
		if (poll(&p, 1, 15000) == 1 && recv(sock, &b, 1, 0) <= 0) {
			printf("fc_client: the handler closed the connection (--bad %s)\n", opt.bad);
			return OK;
		}
		fprintf(stderr, "fc_client: --bad %s: the handler did not close the connection\n", opt.bad);
		return NOT_CLOSED;
	}
	if (strcmp(opt.shape, "v1.12"))
		close(sock); /* before v1.12 Firecracker closed it; since, it keeps it */

	if (opt.pause_pages) {
		for (uint64_t p = 0; p < opt.pause_pages && p < npages; p++)
			touch(p);
		int fd = open(opt.ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			die(SETUP, "%s", opt.ready);
		close(fd);
		if (!wait_for_file(opt.go, 120))
			die(SETUP, "%s never appeared", opt.go);
	}

	pthread_t th[64];
	if (opt.bench && !(lat_ns = calloc(npages, sizeof(*lat_ns))))
		die(SETUP, "%s", "calloc");
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < opt.threads; i++)
		if (pthread_create(&th[i], NULL, opt.bench ? bench_guest : guest,
				   (void *)(uintptr_t)i))
			die(SETUP, "%s", "pthread_create");
	if (opt.balloon) {
		/* Mid-run: once the sequential thread is past the middle of
		 * the range (so part of it was served, part not). */
		uint64_t mid = (bal_from + bal_to) / 2 / PG;
		while (atomic_load(&seq_progress) < mid)
			usleep(100);
		if (madvise(page_addr(bal_from / PG), bal_to - bal_from, MADV_DONTNEED))
			die(SETUP, "%s", "madvise(MADV_DONTNEED)");
		atomic_store(&ballooned, true);
	}
	for (unsigned i = 0; i < opt.threads; i++)
		pthread_join(th[i], NULL);
	double seconds = (double)(now_ns() - t0) / 1e9;
	int ret = verify(imgfd);
	if (ret == OK && opt.bench) {
		bench_report(seconds);
		return OK;
	}
	if (ret == OK)
		printf("fc_client: pid %d: %llu pages in %u regions (%s, %s pages%s), every byte right\n",
		       (int)getpid(), (unsigned long long)npages, nr, opt.shape,
		       opt.huge ? "2 MiB" : "4 KiB", opt.balloon ? ", balloon" : "");
	return ret;
}
