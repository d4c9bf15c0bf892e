/* SPDX-License-Identifier: MIT */
/*
 * cmd_netbench.c - `postcopy netbench`: post-copy over loopback, each
 * figure next to the raw baseline it should be judged against, all
 * measured in the same run:
 *
 *   1. the round trip of one 4 KiB request/response on a plain socket pair
 *      of the same kind, and the no-userfaultfd minor-fault cost;
 *   2. demand-fault latency through the pager (exit mode, random pages),
 *      without and with the background push running;
 *   3. whole-image transfer by the push against a plain sender/receiver
 *      pair moving the same bytes;
 *   4. exit against wait mode at 1..32 vCPUs with the network source
 *      (vCPUs touching the first 64 MiB, one round trip per page);
 *   5. whole migrations under load: V = 1, 2, 4, 8 vCPU threads keep
 *      reading and writing their slices (in order, at random, with a
 *      stride of 7919 pages) until every page is present, in both modes;
 *      each against the push alone (3) and the plain pair (3) of this run.
 *
 * The server runs in this process on its own thread, serving an image
 * written to a temporary file (every page data, no holes, so every byte
 * crosses the socket).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tools.h"

#define PAGE 4096u

struct nb_opts {
	uint64_t size;
	bool unix_socket;
	bool json;
	bool load_only; /* baselines and the migrations under load only */
	unsigned max_vcpus;
	unsigned load_vcpus;
	unsigned samples;
	unsigned window; /* the migrations under load's, as restore's -w */
	unsigned load_nice; /* their vCPU threads' nice value */
};

/* ---- a temporary image and an in-process server ---- */

static int write_image(const char *path, uint64_t size)
{
	pc_source *src;
	if (pc_source_pattern(size, 7, &src) < 0)
		return -ENOMEM;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	char *buf = malloc(1 << 20);
	int ret = fd < 0 || !buf ? -errno : 0;
	for (uint64_t off = 0; ret == 0 && off < size; off += 1 << 20) {
		size_t len = size - off < (1 << 20) ? size - off : (1 << 20);
		pc_source_read(src, off / PAGE, len / PAGE, buf);
		if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
			ret = -EIO;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	pc_source_destroy(src);
	return ret;
}

struct served {
	pc_server *s;
	pthread_t thread;
};

static void *serve_main(void *arg)
{
	pc_server_run(arg);
	return NULL;
}

static int serve_start(const char *image, const char *listen, struct served *sv)
{
	struct pc_server_opts so = { .image = image, .listen = listen,
				     .insecure = true, .allow_uid = -1 };
	char why[256];
	int ret = pc_server_create(&so, &sv->s, why, sizeof(why));
	if (ret < 0) {
		complain("netbench", "server: %s", why);
		return ret;
	}
	ret = -pthread_create(&sv->thread, NULL, serve_main, sv->s);
	if (ret < 0)
		pc_server_destroy(sv->s);
	return ret;
}

static void serve_stop(struct served *sv)
{
	pc_server_stop(sv->s);
	pthread_join(sv->thread, NULL);
	pc_server_destroy(sv->s);
}

/* The in-process server runs insecure, on loopback. */
static int net_source(const char *addr, pc_source **src)
{
	return open_net_source("netbench", addr, NULL, true, 0, 0, src, NULL, 0);
}

/* ---- 1. raw baselines ---- */

struct pair {
	int fd[2];
	uint64_t bytes;	  /* stream mode: how much to send */
	unsigned rounds;  /* echo mode: request/response rounds */
};

static int socket_pair(bool unix_socket, int fd[2])
{
	/* A real listening socket of the same kind, not socketpair(). */
	int lfd = socket(unix_socket ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	char path[64];
	if (unix_socket) {
		struct sockaddr_un *un = (struct sockaddr_un *)&ss;
		un->sun_family = AF_UNIX;
		snprintf(path, sizeof(path), "/tmp/postcopy-netbench-%d.sock", getpid());
		unlink(path);
		strcpy(un->sun_path, path);
		len = sizeof(*un);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(0x7f000001);
		len = sizeof(*in);
	}
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&ss, len) < 0 || listen(lfd, 1) < 0)
		return -errno;
	getsockname(lfd, (struct sockaddr *)&ss, &len);
	fd[0] = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (connect(fd[0], (struct sockaddr *)&ss, len) < 0)
		return -errno;
	fd[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	close(lfd);
	if (unix_socket)
		unlink(path);
	if (!unix_socket) {
		int one = 1;
		setsockopt(fd[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return fd[1] < 0 ? -errno : 0;
}

static int io_all(int fd, void *buf, size_t len, bool out)
{
	char *p = buf;
	while (len) {
		ssize_t n = out ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -EIO;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void *echo_server(void *arg)
{
	struct pair *pr = arg;
	char req[16], page[PAGE];
	memset(page, 0x5a, sizeof(page));
	for (unsigned i = 0; i < pr->rounds; i++)
		if (io_all(pr->fd[1], req, sizeof(req), false) < 0 ||
		    io_all(pr->fd[1], page, sizeof(page), true) < 0)
			break;
	return NULL;
}

/* p50/p99 of a 16-byte request answered by 4 KiB, on a plain socket. */
static int raw_round_trip(bool unix_socket, unsigned rounds, struct hist *h)
{
	struct pair pr = { .rounds = rounds };
	pthread_t t;
	if (socket_pair(unix_socket, pr.fd) < 0 ||
	    pthread_create(&t, NULL, echo_server, &pr))
		return -EIO;
	char req[16] = { 0 }, page[PAGE];
	for (unsigned i = 0; i < rounds; i++) {
		uint64_t t0 = ns_now();
		if (io_all(pr.fd[0], req, sizeof(req), true) < 0 ||
		    io_all(pr.fd[0], page, sizeof(page), false) < 0)
			break;
		hist_record(h, ns_now() - t0);
	}
	pthread_join(t, NULL);
	close(pr.fd[0]);
	close(pr.fd[1]);
	return 0;
}

struct streamer {
	int fd;
	int image_fd;
	uint64_t size;
};

static void *stream_sender(void *arg)
{
	struct streamer *st = arg;
	char *buf = malloc(1 << 20);
	for (uint64_t off = 0; buf && off < st->size; off += 1 << 20) {
		size_t len = st->size - off < (1 << 20) ? st->size - off : (1 << 20);
		if (pread(st->image_fd, buf, len, (off_t)off) != (ssize_t)len ||
		    io_all(st->fd, buf, len, true) < 0)
			break;
	}
	free(buf);
	return NULL;
}

/* Seconds for a plain sender (reading the image) and receiver (into a
 * memfd with pwrite, as the pager does) to move the image. */
static double raw_transfer(bool unix_socket, const char *image, uint64_t size)
{
	int fd[2];
	if (socket_pair(unix_socket, fd) < 0)
		return -1;
	struct streamer st = { .fd = fd[1], .size = size,
			       .image_fd = open(image, O_RDONLY | O_CLOEXEC) };
	int mfd = memfd_create("netbench-raw", MFD_CLOEXEC);
	char *buf = malloc(1 << 20);
	double secs = -1;
	pthread_t t;
	if (st.image_fd >= 0 && mfd >= 0 && buf && ftruncate(mfd, (off_t)size) == 0 &&
	    !pthread_create(&t, NULL, stream_sender, &st)) {
		double t0 = seconds_now();
		uint64_t got = 0;
		while (got < size) {
			ssize_t n = recv(fd[0], buf, 1 << 20, 0);
			if (n <= 0)
				break;
			if (pwrite(mfd, buf, (size_t)n, (off_t)got) != n)
				break;
			got += (uint64_t)n;
		}
		if (got == size)
			secs = seconds_now() - t0;
		pthread_join(t, NULL);
	}
	free(buf);
	if (mfd >= 0)
		close(mfd);
	if (st.image_fd >= 0)
		close(st.image_fd);
	close(fd[0]);
	close(fd[1]);
	return secs;
}

/* The no-userfaultfd cost of touching a page whose contents are local. */
static double minor_fault_us(unsigned pages)
{
	size_t len = (size_t)pages * PAGE;
	int fd = memfd_create("netbench-minor", MFD_CLOEXEC);
	if (fd < 0 || fallocate(fd, 0, 0, (off_t)len) < 0)
		return -1;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return -1;
	uint64_t t0 = ns_now();
	for (unsigned i = 0; i < pages; i++)
		((volatile char *)m)[(size_t)i * PAGE] = 1;
	double us = (double)(ns_now() - t0) / pages / 1e3;
	munmap(m, len);
	return us;
}

/* ---- 2. demand-fault latency through the pager ---- */

/*
 * Touch @samples random pages on one attached thread.  The latency is the
 * pager's own per-fault figure (exit mode: from the SIGBUS to the page in
 * place, network round trip included), so that accesses which found a
 * page the push had already brought do not count as fast faults.
 */
static int fault_latency(const char *addr, bool push, unsigned samples,
			 struct pc_latency *out)
{
	pc_source *src;
	int ret = net_source(addr, &src);
	if (ret < 0)
		return ret;
	struct pc_region_opts ro = { .size = pc_source_size(src), .max_threads = 1 };
	pc_region *r;
	if ((ret = start_region("netbench", &ro, src, &r)) < 0)
		return ret;
	if (push && (ret = pc_net_start_push(src, r)) < 0) {
		pc_region_destroy(r);
		return ret;
	}
	pc_thread_attach(r, 0);
	volatile char *m = pc_region_addr(r);
	uint64_t pages = ro.size / PAGE, seed = 0x9e3779b97f4a7c15ull;
	if (push) /* let the stream get going first */
		usleep(20000);
	for (unsigned i = 0; i < samples && !pc_region_complete(r); i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		(void)m[(seed % pages) * PAGE];
	}
	pc_thread_detach(r);
	struct pc_stats *st;
	ret = pc_region_stats(r, &st);
	if (ret == 0) {
		*out = st->latency;
		free(st);
	}
	pc_region_destroy(r);
	return ret;
}

/* ---- 3. whole-image transfer by the push ---- */

static double push_transfer(const char *addr)
{
	pc_source *src;
	if (net_source(addr, &src) < 0)
		return -1;
	struct pc_region_opts ro = { .size = pc_source_size(src) };
	pc_region *r;
	double t0 = seconds_now(), secs = -1;
	if (start_region("netbench", &ro, src, &r) < 0)
		return -1;
	if (pc_net_start_push(src, r) == 0 && pc_region_wait(r, 600000) == 0)
		secs = seconds_now() - t0;
	pc_region_destroy(r);
	return secs;
}

/* ---- 4. exit against wait with the network source ---- */

static double vcpu_rate(const char *addr, enum pc_mode mode, unsigned vcpus,
			uint64_t size)
{
	pc_source *src;
	if (net_source(addr, &src) < 0)
		return -1;
	struct pc_region_opts ro = { .size = pc_source_size(src), .mode = mode,
				     .uffds = mode == PC_MODE_WAIT ? vcpus : 1,
				     .max_threads = vcpus };
	pc_region *r;
	if (start_region("netbench", &ro, src, &r) < 0)
		return -1;
	double rate = -1;
	struct workload w = { .mem = pc_region_addr(r), .size = size,
			      .vcpus = vcpus, .region = r };
	struct workload_result res;
	int ret = workload_run(&w, &res);
	if (ret == -EIO) {
		/* Its vCPUs sleep in the kernel for good: destroying the
		 * region under them could let them read zeroes. */
		complain("netbench", "the pager failed: %s", pc_region_error(r));
		fflush(stdout);
		_exit(EXIT_FAIL);
	}
	if (ret == 0) {
		rate = (double)res.accesses / res.seconds;
		workload_result_free(&res);
	}
	pc_region_destroy(r);
	return rate;
}

/* ---- 5. a whole migration while the guest keeps running ---- */

struct load_point {
	enum pc_mode mode;
	unsigned vcpus;
	enum access_order order;
	double seconds;	     /* region start to every page present */
	double push_mibs;    /* pushed bytes over that time */
	uint64_t faults;     /* demand faults the pager took */
	uint64_t stalls;     /* accesses that found their page missing */
	struct pc_latency stall; /* their latency, vCPU side */
	double blocked;	     /* of the vCPUs' time, resolving or waiting */
	bool verified;
};

static const char *order_name(enum access_order o)
{
	return o == ORDER_SEQ ? "seq" : o == ORDER_RANDOM ? "random" : "stride";
}

static int migrate_under_load(const char *addr, pc_source *truth, unsigned window,
			      unsigned nice, struct load_point *lp)
{
	pc_source *src;
	int ret = net_source(addr, &src);
	if (ret < 0)
		return ret;
	struct pc_region_opts ro = { .size = pc_source_size(src), .mode = lp->mode,
				     .max_threads = lp->vcpus, .window = window };
	pc_region *r;
	if ((ret = start_region("netbench", &ro, src, &r)) < 0)
		return ret;
	if ((ret = pc_net_start_push(src, r)) < 0) {
		pc_region_destroy(r);
		return ret;
	}
	struct workload w = { .mem = pc_region_addr(r), .size = ro.size,
			      .vcpus = lp->vcpus, .write = true, .read_too = true,
			      .until_complete = true, .order = lp->order, .region = r,
			      .nice = (int)nice };
	struct workload_result res;
	ret = workload_run(&w, &res);
	if (ret == -EIO) {
		complain("netbench", "the pager failed: %s", pc_region_error(r));
		fflush(stdout);
		_exit(EXIT_FAIL); /* its vCPUs sleep in the kernel for good */
	}
	struct pc_stats *st = NULL;
	struct pc_net_stats ns;
	if (ret == 0)
		ret = pc_region_stats(r, &st);
	if (ret == 0 && (ret = pc_net_get_stats(src, &ns)) == 0) {
		lp->seconds = st->elapsed_ns / 1e9;
		lp->push_mibs = ns.pages_pushed * 4096.0 / (1 << 20) / lp->seconds;
		lp->faults = st->faults;
		hist_summarize(res.stalls, &lp->stall);
		lp->stalls = lp->stall.count;
		lp->blocked = st->blocked_ns / 1e9 / (lp->vcpus * res.seconds);
		uint64_t first_bad;
		lp->verified = verify_memory(pc_region_addr(r), ro.size, truth, NULL, &first_bad) == 0;
		if (!lp->verified)
			complain("netbench", "memory differs from the image (first at page %llu)",
				 (unsigned long long)first_bad);
	}
	free(st);
	if (ret == 0)
		workload_result_free(&res);
	pc_region_destroy(r);
	return ret < 0 ? ret : lp->verified ? 0 : -EIO;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy netbench [-s SIZE] [--unix] [-v MAX_VCPUS] [--load-vcpus N]\n"
		"                         [--load-only] [--load-nice N] [-w N|auto] [--json]\n"
		"\n"
		"Post-copy over loopback against raw baselines measured in the same run:\n"
		"the 4 KiB request/response round trip and the minor-fault cost,\n"
		"demand-fault latency with and without the push, whole-image transfer\n"
		"against a plain sender/receiver pair, and exit vs wait mode at\n"
		"1..MAX_VCPUS vCPUs; then whole migrations while 1, 2, 4 .. N vCPU\n"
		"threads keep reading and writing their memory (in order, at random,\n"
		"with a stride of 7919 pages) until every page is present, in both\n"
		"modes, each verified byte for byte.  The server runs in-process,\n"
		"insecure, on 127.0.0.1 (or a Unix socket with --unix).\n"
		"\n"
		"  -s SIZE       image size (default 1G)\n"
		"  --unix        Unix sockets instead of TCP\n"
		"  -v N          largest vCPU count for the mode comparison (default 32)\n"
		"  -n N          demand-latency samples (default 2000)\n"
		"  --load-vcpus N  most vCPUs of the migrations under load (default 8)\n"
		"  --load-only   only the baselines and the migrations under load\n"
		"  --load-nice N the vCPU threads of the migrations under load run at\n"
		"                nice N (0..19, default 0): a host where the guest's\n"
		"                vCPUs leave the pager its cores\n"
		"  -w N|auto     the migrations' fault window, as restore's -w\n"
		"                (default auto, as restore's)\n"
		"  --json        one JSON object\n"
		"  -h, --help    this text\n"
		"\n"
		"Exit status: 0 measured, 1 error, 2 bad arguments.\n");
}

static int parse(int argc, char **argv, struct nb_opts *o)
{
	static const struct option longopts[] = {
		{ "unix", no_argument, NULL, 'U' },
		{ "json", no_argument, NULL, 'j' },
		{ "load-only", no_argument, NULL, 'L' },
		{ "load-vcpus", required_argument, NULL, 'l' },
		{ "load-nice", required_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;
	*o = (struct nb_opts){ .size = 1ull << 30, .max_vcpus = 32, .load_vcpus = 8,
			       .samples = 2000, .window = PC_WINDOW_AUTO };
	while ((c = getopt_long(argc, argv, "s:v:n:w:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'w':
			if (parse_window(optarg, &o->window) < 0)
				return complain("netbench", "bad -w '%s' (1..512 or auto)", optarg),
				       EXIT_USAGE;
			break;
		case 's':
			if (parse_size(optarg, &o->size) < 0 || !o->size ||
			    o->size % (2u << 20)) {
				complain("netbench", "-s must be a positive multiple of 2 MiB");
				return EXIT_USAGE;
			}
			break;
		case 'v':
			if (parse_uint(optarg, 1, 1024, &o->max_vcpus) < 0)
				return complain("netbench", "bad -v '%s'", optarg), EXIT_USAGE;
			break;
		case 'n':
			if (parse_uint(optarg, 1, 10000000, &o->samples) < 0)
				return complain("netbench", "bad -n '%s'", optarg), EXIT_USAGE;
			break;
		case 'l':
			if (parse_uint(optarg, 1, 64, &o->load_vcpus) < 0)
				return complain("netbench", "bad --load-vcpus '%s'", optarg), EXIT_USAGE;
			break;
		case 'N':
			if (parse_uint(optarg, 0, 19, &o->load_nice) < 0)
				return complain("netbench", "bad --load-nice '%s' (0..19)", optarg), EXIT_USAGE;
			break;
		case 'L': o->load_only = true; break;
		case 'U': o->unix_socket = true; break;
		case 'j': o->json = true; break;
		case 'h': usage(stdout); return -1;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		complain("netbench", "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

int cmd_netbench(int argc, char **argv)
{
	struct nb_opts o;
	int ret = parse(argc, argv, &o);
	if (ret < 0)
		return EXIT_OK;
	if (ret)
		return ret;

	char image[64], listen[96];
	snprintf(image, sizeof(image), "/tmp/postcopy-netbench-%d.img", getpid());
	if (o.unix_socket)
		snprintf(listen, sizeof(listen), "unix:/tmp/postcopy-netbench-%d.srv", getpid());
	else
		snprintf(listen, sizeof(listen), "tcp://127.0.0.1:0");
	if (write_image(image, o.size) < 0) {
		complain("netbench", "cannot write %s", image);
		return EXIT_FAIL;
	}
	struct served sv;
	if (serve_start(image, listen, &sv) < 0) {
		unlink(image);
		return EXIT_FAIL;
	}
	const char *addr = pc_server_address(sv.s);
	struct hist *rtt = calloc(1, sizeof(*rtt));
	struct pc_latency cold = { 0 }, pushed = { 0 };
	int status = EXIT_FAIL;
	if (!rtt)
		goto out;

	/* A part that fails is reported as -1 and makes the exit status 1. */
	bool failed = raw_round_trip(o.unix_socket, o.samples, rtt) < 0;
	double minor = minor_fault_us(16384);
	if (!o.load_only) {
		failed |= fault_latency(addr, false, o.samples, &cold) < 0;
		failed |= fault_latency(addr, true, o.samples, &pushed) < 0;
	}
	double raw_s = raw_transfer(o.unix_socket, image, o.size);
	double push_s = push_transfer(addr);
	failed |= minor < 0 || raw_s < 0 || push_s < 0;

	/* Whole migrations under load, each verified. */
	pc_source *truth = NULL;
	struct load_point loads[2 * 7 * 3];
	unsigned nl = 0;
	if (pc_source_file(image, &truth) < 0)
		failed = true;
	for (int m = 0; truth && m < 2; m++)
		for (unsigned v = 1; v <= o.load_vcpus && v <= 64; v *= 2)
			for (int ord = ORDER_SEQ; ord <= ORDER_STRIDE; ord++) {
				struct load_point *lp = &loads[nl++];
				*lp = (struct load_point){ .mode = m ? PC_MODE_WAIT : PC_MODE_EXIT,
							   .vcpus = v, .order = ord,
							   .seconds = -1 };
				failed |= migrate_under_load(addr, truth, o.window, o.load_nice, lp) < 0;
			}
	pc_source_destroy(truth);

	/* Every touch is a round trip: 64 MiB of them is plenty. */
	uint64_t touched = o.size < (64u << 20) ? o.size : (64u << 20);
	unsigned counts[16], nc = 0;
	double exit_rate[16], wait_rate[16];
	for (unsigned v = 1; !o.load_only && v <= o.max_vcpus && nc < 16; v *= 2) {
		counts[nc] = v;
		exit_rate[nc] = vcpu_rate(addr, PC_MODE_EXIT, v, touched);
		wait_rate[nc] = vcpu_rate(addr, PC_MODE_WAIT, v, touched);
		failed |= exit_rate[nc] < 0 || wait_rate[nc] < 0;
		nc++;
	}

	double push_mibs = o.size / push_s / (1 << 20); /* the push alone */
	double rtt50 = hist_percentile(rtt, 500) / 1e3;
	double cold50 = cold.p50 / 1e3, cold99 = cold.p99 / 1e3;
	double push50 = pushed.p50 / 1e3, push99 = pushed.p99 / 1e3;
	if (o.json) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "transport", json_object_new_string(o.unix_socket ? "unix" : "tcp"));
		json_object_object_add(j, "bytes", json_object_new_int64((int64_t)o.size));
		json_object_object_add(j, "raw_rtt_4k_us", latency_json_us(rtt));
		json_object_object_add(j, "minor_fault_us", json_object_new_double(minor));
		json_object_object_add(j, "demand_latency_us", latency_json(&cold));
		json_object_object_add(j, "demand_latency_with_push_us", latency_json(&pushed));
		json_object_object_add(j, "demand_faults", json_object_new_int64((int64_t)cold.count));
		json_object_object_add(j, "demand_faults_with_push", json_object_new_int64((int64_t)pushed.count));
		json_object_object_add(j, "p50_vs_rtt_plus_fault", json_object_new_double(cold50 / (rtt50 + minor)));
		json_object_object_add(j, "p99_push_vs_p50", json_object_new_double(push99 / cold50));
		json_object_object_add(j, "raw_transfer_s", json_object_new_double(raw_s));
		json_object_object_add(j, "push_transfer_s", json_object_new_double(push_s));
		json_object_object_add(j, "transfer_ratio", json_object_new_double(raw_s / push_s));
		struct json_object *modes = json_object_new_array();
		for (unsigned i = 0; i < nc; i++) {
			struct json_object *m = json_object_new_object();
			json_object_object_add(m, "vcpus", json_object_new_int((int)counts[i]));
			json_object_object_add(m, "exit_pages_per_sec", json_object_new_double(exit_rate[i]));
			json_object_object_add(m, "wait_pages_per_sec", json_object_new_double(wait_rate[i]));
			json_object_array_add(modes, m);
		}
		json_object_object_add(j, "modes", modes);
		struct json_object *ul = json_object_new_array();
		for (unsigned i = 0; i < nl; i++) {
			struct load_point *lp = &loads[i];
			struct json_object *m = json_object_new_object();
			json_object_object_add(m, "mode", json_object_new_string(mode_str(lp->mode)));
			json_object_object_add(m, "vcpus", json_object_new_int((int)lp->vcpus));
			json_object_object_add(m, "pattern", json_object_new_string(order_name(lp->order)));
			json_object_object_add(m, "seconds_to_all_present", json_object_new_double(lp->seconds));
			json_object_object_add(m, "push_mib_per_s", json_object_new_double(lp->push_mibs));
			json_object_object_add(m, "push_vs_push_alone", json_object_new_double(lp->push_mibs / push_mibs));
			json_object_object_add(m, "vs_push_alone", json_object_new_double(lp->seconds / push_s));
			json_object_object_add(m, "demand_faults", json_object_new_int64((int64_t)lp->faults));
			json_object_object_add(m, "stalls", json_object_new_int64((int64_t)lp->stalls));
			json_object_object_add(m, "stall_latency_us", latency_json(&lp->stall));
			json_object_object_add(m, "blocked_fraction", json_object_new_double(lp->blocked));
			json_object_object_add(m, "verified", json_object_new_boolean(lp->verified));
			json_object_array_add(ul, m);
		}
		json_object_object_add(j, "under_load", ul);
		json_object_object_add(j, "under_load_nice", json_object_new_int((int)o.load_nice));
		json_object_object_add(j, "under_load_window",
				       o.window == PC_WINDOW_AUTO ? json_object_new_string("auto") :
								    json_object_new_int((int)o.window));
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
	} else {
		char win[16];
		printf("netbench: %s loopback, %.0f MiB image, server in-process, window %s under load\n",
		       o.unix_socket ? "Unix socket" : "TCP", (double)o.size / (1 << 20),
		       window_str(o.window, win, sizeof(win)));
		printf("raw        4 KiB round trip p50 %.1f us, p99 %.1f us; minor fault %.2f us\n",
		       rtt50, hist_percentile(rtt, 990) / 1e3, minor);
		if (!o.load_only) {
			printf("demand     fault p50 %.1f us, p99 %.1f us (%llu faults); p50 = %.2fx (round trip + minor fault)\n",
			       cold50, cold99, (unsigned long long)cold.count, cold50 / (rtt50 + minor));
			printf("with push  fault p50 %.1f us, p99 %.1f us (%llu faults); p99 = %.2fx the p50 without push\n",
			       push50, push99, (unsigned long long)pushed.count, push99 / cold50);
		}
		printf("transfer   push %.3f s, plain socket %.3f s: %.2fx the raw throughput (%.0f MiB/s vs %.0f MiB/s)\n",
		       push_s, raw_s, raw_s / push_s, push_mibs,
		       o.size / raw_s / (1 << 20));
		if (nc)
			printf("vCPUs      exit pages/s    wait pages/s   exit/wait\n");
		for (unsigned i = 0; i < nc; i++)
			printf("%5u %15.0f %15.0f %10.2f\n", counts[i], exit_rate[i],
			       wait_rate[i], exit_rate[i] / wait_rate[i]);
		if (nl && o.load_nice)
			printf("under load, vCPU threads at nice %u:\n", o.load_nice);
		if (nl)
			printf("under load (every page present; push MiB/s and time against the push alone):\n"
			       "mode vCPUs pattern    present   x alone   push MiB/s x alone   faults  stall p50/p99/max us   blocked\n");
		for (unsigned i = 0; i < nl; i++) {
			struct load_point *lp = &loads[i];
			printf("%-4s %5u %-7s %9.3f s %8.2f %12.0f %7.2f %8llu  %6.0f/%5.0f/%6.0f %8.0f%%%s\n",
			       mode_str(lp->mode), lp->vcpus, order_name(lp->order), lp->seconds,
			       lp->seconds / push_s, lp->push_mibs,
			       lp->push_mibs / push_mibs,
			       (unsigned long long)lp->faults, lp->stall.p50 / 1e3,
			       lp->stall.p99 / 1e3, lp->stall.max / 1e3, lp->blocked * 100,
			       lp->verified ? "" : "  NOT VERIFIED");
		}
	}
	if (failed)
		complain("netbench", "some measurements failed (shown as -1)");
	status = failed ? EXIT_FAIL : EXIT_OK;
out:
	free(rtt);
	serve_stop(&sv);
	unlink(image);
	return status;
}
