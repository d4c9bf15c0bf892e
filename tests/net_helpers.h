/* SPDX-License-Identifier: MIT */
/*
 * net_helpers.h - what the network tests (test_net, test_net_proxy) share:
 * the image file they serve, a pc_server running on a thread of the test,
 * vCPU threads that touch pages in random order, and loopback addresses.
 *
 * Include after postcopy.h and tap.h.
 */
#ifndef POSTCOPY_TESTS_NET_HELPERS_H
#define POSTCOPY_TESTS_NET_HELPERS_H

#if !defined(POSTCOPY_H) || !defined(POSTCOPY_TESTS_TAP_H)
#error "include postcopy.h and tap.h before net_helpers.h"
#endif

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ------------------------------------------------------------------ */
/* the image                                                           */
/* ------------------------------------------------------------------ */

/*
 * The image: pattern pages, with the pattern's zero pages and every 8th
 * run of 32 pages left as holes (so the server's zero map has single
 * pages and runs).
 */
static inline void make_image(const char *path, uint64_t size, uint64_t seed)
{
	char buf[SRC_PAGE];
	pc_source *pat;
	int fd;

	if (pc_source_pattern(size, seed, &pat))
		bail_out("pc_source_pattern");
	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)size))
		bail_out("cannot create %s: %s", path, strerror(errno));
	for (uint64_t p = 0; p < size / SRC_PAGE; p++) {
		if (pc_source_is_zero(pat, p) || (p / 32) % 8 == 5)
			continue;
		if (pc_source_read(pat, p, 1, buf) ||
		    pwrite(fd, buf, SRC_PAGE, (off_t)(p * SRC_PAGE)) !=
			    (ssize_t)SRC_PAGE)
			bail_out("cannot write %s", path);
	}
	if (fsync(fd))
		bail_out("fsync %s: %s", path, strerror(errno));
	close(fd);
	pc_source_destroy(pat);
}

/*
 * The test's image: make the directory @dir (a mkdtemp() template), write
 * the image @dir/image (its name goes to @path) and open a file source over
 * it in *@ref: the truth every check compares with.  Returns the number of
 * holes (zero pages) of the image.
 */
static inline uint64_t image_setup(char *dir, char *path, size_t path_len,
				   uint64_t size, uint64_t seed,
				   pc_source **ref)
{
	uint64_t holes = 0;

	if (!mkdtemp(dir))
		bail_out("mkdtemp: %s", strerror(errno));
	snprintf(path, path_len, "%s/image", dir);
	make_image(path, size, seed);
	if (pc_source_file(path, ref))
		bail_out("pc_source_file(%s)", path);
	for (uint64_t p = 0; p < size / SRC_PAGE; p++)
		holes += pc_source_is_zero(*ref, p);
	return holes;
}

/* ------------------------------------------------------------------ */
/* the server on its own thread                                        */
/* ------------------------------------------------------------------ */

struct srv {
	pc_server *s;
	pthread_t t;
	int run_ret;
	bool running;
	struct pc_server_stats st; /* after srv_stop() */
	char addr[160];
};

static inline void *srv_main(void *arg)
{
	struct srv *v = arg;

	v->run_ret = pc_server_run(v->s);
	return NULL;
}

/*
 * Create a server with @o and run it (pc_server_run) on a new thread.
 * Returns 0 or a negative errno (pc_server_create's is described in @why).
 */
static inline int srv_start_opts(struct srv *v, const struct pc_server_opts *o,
				 char *why, size_t why_len)
{
	int ret;

	memset(v, 0, sizeof(*v));
	ret = pc_server_create(o, &v->s, why, why_len);
	if (ret)
		return ret;
	snprintf(v->addr, sizeof(v->addr), "%s", pc_server_address(v->s));
	ret = pthread_create(&v->t, NULL, srv_main, v);
	if (ret) {
		pc_server_destroy(v->s);
		v->s = NULL;
		return -ret;
	}
	v->running = true;
	return 0;
}

/* Stop, join, take the final stats, destroy. */
static inline void srv_stop(struct srv *v)
{
	if (!v->s)
		return;
	if (v->running) {
		pc_server_stop(v->s);
		pthread_join(v->t, NULL);
		v->running = false;
	}
	pc_server_get_stats(v->s, &v->st);
	pc_server_destroy(v->s);
	v->s = NULL;
}

/* ------------------------------------------------------------------ */
/* vCPU threads                                                        */
/* ------------------------------------------------------------------ */

/*
 * A vCPU attached to the region as slot @id: it touches @touch_pct % of its
 * share of the pages in random order (splitmix from @seed), reading one
 * byte of page p, at (p * @byte_mul) % 4 KiB.
 */
struct rand_vcpu {
	pthread_t tid;
	pc_region *r;
	unsigned id;
	const volatile uint8_t *mem;
	uint64_t first, npages;	/* its share of the region */
	unsigned touch_pct;	/* pages of its share it touches */
	uint64_t byte_mul;	/* which byte of a page it reads */
	uint64_t seed;
	uint64_t sum;
	int attach_ret;
};

static inline void *rand_vcpu_main(void *arg)
{
	struct rand_vcpu *v = arg;
	uint64_t *order = malloc(v->npages * sizeof(*order));
	uint64_t s = v->seed, n = v->npages * v->touch_pct / 100;

	if (!order)
		bail_out("out of memory");
	v->attach_ret = pc_thread_attach(v->r, v->id);
	for (uint64_t i = 0; i < v->npages; i++)
		order[i] = v->first + i;
	for (uint64_t i = v->npages; i > 1; i--) {
		uint64_t j = splitmix(&s) % i, t = order[i - 1];

		order[i - 1] = order[j];
		order[j] = t;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = order[i];

		v->sum += v->mem[p * SRC_PAGE + (p * v->byte_mul) % SRC_PAGE];
	}
	pc_thread_detach(v->r);
	free(order);
	return NULL;
}

/*
 * Run @n vCPUs on the @pages pages of @r and wait for them: vCPU i takes
 * the i-th of @n equal shares and seed @seed + i.
 */
static inline void rand_vcpus_run(struct rand_vcpu *vc, unsigned n,
				  pc_region *r, uint64_t pages,
				  unsigned touch_pct, uint64_t byte_mul,
				  uint64_t seed)
{
	for (unsigned i = 0; i < n; i++) {
		vc[i] = (struct rand_vcpu){
			.r = r,
			.id = i,
			.mem = pc_region_addr(r),
			.first = pages * i / n,
			.npages = pages * (i + 1) / n - pages * i / n,
			.touch_pct = touch_pct,
			.byte_mul = byte_mul,
			.seed = seed + i,
		};
		if (pthread_create(&vc[i].tid, NULL, rand_vcpu_main, &vc[i]))
			bail_out("pthread_create");
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(vc[i].tid, NULL);
}

/* ------------------------------------------------------------------ */
/* loopback addresses                                                  */
/* ------------------------------------------------------------------ */

/* The socket address of "tcp://127.0.0.1:PORT"; bails out on any other. */
static inline struct sockaddr_in loopback_sockaddr(const char *addr)
{
	const char *colon = strrchr(addr, ':');

	if (strncmp(addr, "tcp://127.0.0.1:", 16) || !colon)
		bail_out("unexpected address %s (want tcp://127.0.0.1:PORT)",
			 addr);
	return (struct sockaddr_in){
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)atoi(colon + 1)),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
}

#endif /* POSTCOPY_TESTS_NET_HELPERS_H */
