/* SPDX-License-Identifier: MIT */
/*
 * test_net_proxy - a restore over a network that keeps breaking.
 *
 * A fault-injecting TCP proxy runs in this program on loopback: one thread
 * with a poll() loop accepts every connection of the destination, opens a
 * new connection to the server for it and forwards bytes both ways, and
 * cuts the pair (closes both sockets, at random with a reset or a FIN)
 * once it has forwarded a byte budget drawn from a seeded PRNG, uniform in
 * [1, 300 KiB].  Cuts land anywhere: in handshakes, in frame headers, in
 * the middle of page data, on demand lanes (in exit mode inside the vCPUs'
 * SIGBUS handlers), on the push connection and on the filler's lane.  The
 * session's first connection (pc_source_net's handshake, which does not
 * retry) gets at least 64 KiB so that the restore can start at all; it is
 * idle afterwards.
 *
 * Pins, for a 64 MiB restore in exit mode and in wait mode (separately;
 * one page per fault, and the adaptive window whose 64 KiB demand runs
 * while the push runs a cut can break half way), with the push running and
 * 2 vCPU threads touching pages in random order:
 * the region completes and EVERY byte matches the image; at least 100
 * connections were cut during it; the source reconnected and saw no
 * checksum failure; no page was installed twice (demand + prefetch + fill
 * == present, and present == pages); the server saw no malformed frame
 * (a cut frame is a closed connection).  A restore that stops making progress for 8 s
 * fails the first check instead of hanging.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

#include "postcopy.h"
#include "tap.h"
#include "net_helpers.h"

#define IMAGE_SIZE (64 * MIB)
#define IMAGE_SEED 4711
#define VCPUS 2
#define TOUCH_PCT 50		/* of each vCPU's half, random order */
#define CUT_MAX (300 * KIB)	/* budgets are uniform in [1, CUT_MAX] */
#define FIRST_CONN_MIN (64 * KIB)
#define MIN_CUTS 100
#define NET_TIMEOUT_MS 20000
#define SESSION_TIMEOUT_MS 20000

static char dir[] = "/tmp/postcopy-test-net-proxy-XXXXXX";
static char image_path[256];
static pc_source *ref;
static uint64_t img_pages, img_zero_pages;

static const uint8_t KEY[32] = "proxy-test-key-0123456789abcdefg";

/* ------------------------------------------------------------------ */
/* the server                                                          */
/* ------------------------------------------------------------------ */

static void srv_start(struct srv *v, bool keyed)
{
	struct pc_server_opts o = {
		.image = image_path,
		.listen = "tcp://127.0.0.1:0",
		.key = keyed ? KEY : NULL,
		.key_len = keyed ? sizeof(KEY) : 0,
		.insecure = !keyed,
		.allow_uid = -1,
		.session_timeout_ms = SESSION_TIMEOUT_MS,
	};
	char why[256] = "";
	int ret = srv_start_opts(v, &o, why, sizeof(why));

	if (ret)
		bail_out("server: %d (%s)", ret, why);
}

/* ------------------------------------------------------------------ */
/* the proxy                                                           */
/* ------------------------------------------------------------------ */

#define MAX_PAIRS 64
#define PAIR_BUF (64 * 1024)

/* Direction 0: client -> server (fd[0] -> fd[1]); 1: server -> client. */
struct pair {
	int fd[2];
	char buf[2][PAIR_BUF];
	size_t len[2], off[2];
	bool eof[2];	 /* the source of this direction said EOF */
	bool shut[2];	 /* and its destination was shut down for writing */
	uint64_t budget; /* bytes to forward before the cut */
	uint64_t forwarded;
};

struct proxy {
	int listen_fd;
	int stop_pipe[2];
	struct sockaddr_in server;
	uint64_t rng;
	char addr[64];
	pthread_t t;
	struct pair *pairs[MAX_PAIRS];
	/* Written by the proxy thread, read after the join. */
	uint64_t accepted, cuts, cuts_reset, closed_clean, bytes;
	uint64_t refused_connects;
};

static void pair_close(struct proxy *px, unsigned i, bool cut)
{
	struct pair *pr = px->pairs[i];

	if (cut) {
		/* Half the cuts reset (RST), the others close (FIN). */
		if (splitmix(&px->rng) & 1) {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };

			setsockopt(pr->fd[0], SOL_SOCKET, SO_LINGER, &lg,
				   sizeof(lg));
			setsockopt(pr->fd[1], SOL_SOCKET, SO_LINGER, &lg,
				   sizeof(lg));
			px->cuts_reset++;
		}
		px->cuts++;
	} else {
		px->closed_clean++;
	}
	close(pr->fd[0]);
	close(pr->fd[1]);
	free(pr);
	px->pairs[i] = NULL;
}

static void proxy_accept(struct proxy *px)
{
	for (;;) {
		int cfd = accept4(px->listen_fd, NULL, NULL,
				  SOCK_NONBLOCK | SOCK_CLOEXEC);
		unsigned i = 0;
		int sfd;

		if (cfd < 0)
			return;
		while (i < MAX_PAIRS && px->pairs[i])
			i++;
		sfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (i == MAX_PAIRS || sfd < 0 ||
		    connect(sfd, (struct sockaddr *)&px->server,
			    sizeof(px->server)) < 0) {
			px->refused_connects++;
			if (sfd >= 0)
				close(sfd);
			close(cfd);
			continue;
		}
		fcntl(sfd, F_SETFL, O_NONBLOCK);
		struct pair *pr = calloc(1, sizeof(*pr));

		if (!pr)
			bail_out("out of memory");
		pr->fd[0] = cfd;
		pr->fd[1] = sfd;
		pr->budget = 1 + splitmix(&px->rng) % CUT_MAX;
		if (px->accepted == 0 && pr->budget < FIRST_CONN_MIN)
			pr->budget = FIRST_CONN_MIN;
		px->accepted++;
		px->pairs[i] = pr;
	}
}

/* Bytes this pair may still read without overrunning its budget. */
static size_t room(const struct pair *pr, int d)
{
	uint64_t used = pr->forwarded + pr->len[0] - pr->off[0] +
			pr->len[1] - pr->off[1];
	uint64_t left = pr->budget > used ? pr->budget - used : 0;
	size_t space = pr->len[d] ? 0 : PAIR_BUF;

	return left < space ? (size_t)left : space;
}

/* Move data of pair @i; false when the pair was closed. */
static bool pair_io(struct proxy *px, unsigned i, const short rev[2])
{
	struct pair *pr = px->pairs[i];

	/* An error, or a hang-up on a socket we are not reading from (a
	 * reset, or both directions finished): nothing more can pass. */
	for (int s = 0; s < 2; s++)
		if ((rev[s] & POLLERR) ||
		    ((rev[s] & POLLHUP) && (pr->eof[s] || !room(pr, s)))) {
			pair_close(px, i, false);
			return false;
		}
	for (int d = 0; d < 2; d++) {
		int src = pr->fd[d], dst = pr->fd[1 - d];

		/* read into an empty buffer */
		if ((rev[d] & (POLLIN | POLLHUP | POLLERR)) && !pr->eof[d] &&
		    room(pr, d)) {
			ssize_t n = recv(src, pr->buf[d], room(pr, d),
					 MSG_DONTWAIT);

			if (n > 0) {
				pr->len[d] = (size_t)n;
				pr->off[d] = 0;
			} else if (n == 0) {
				pr->eof[d] = true;
			} else if (errno != EAGAIN && errno != EINTR) {
				pair_close(px, i, false);
				return false;
			}
		}
		/* write what is buffered */
		if (pr->off[d] < pr->len[d]) {
			ssize_t n = send(dst, pr->buf[d] + pr->off[d],
					 pr->len[d] - pr->off[d],
					 MSG_DONTWAIT | MSG_NOSIGNAL);

			if (n > 0) {
				pr->off[d] += (size_t)n;
				pr->forwarded += (uint64_t)n;
				px->bytes += (uint64_t)n;
				if (pr->off[d] == pr->len[d])
					pr->len[d] = pr->off[d] = 0;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				pair_close(px, i, false);
				return false;
			}
		}
		if (pr->forwarded >= pr->budget) {
			pair_close(px, i, true);
			return false;
		}
		if (pr->eof[d] && !pr->len[d] && !pr->shut[d]) {
			shutdown(dst, SHUT_WR);
			pr->shut[d] = true;
		}
	}
	if (pr->shut[0] && pr->shut[1]) {
		pair_close(px, i, false);
		return false;
	}
	return true;
}

static void *proxy_main(void *arg)
{
	struct proxy *px = arg;
	struct pollfd pfd[2 + 2 * MAX_PAIRS];
	unsigned idx[MAX_PAIRS];

	for (;;) {
		unsigned n = 2, np = 0;

		pfd[0] = (struct pollfd){ .fd = px->listen_fd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = px->stop_pipe[0], .events = POLLIN };
		for (unsigned i = 0; i < MAX_PAIRS; i++) {
			struct pair *pr = px->pairs[i];

			if (!pr)
				continue;
			for (int s = 0; s < 2; s++) {
				/* fd[s] is the source of direction s and the
				 * destination of direction 1 - s. */
				short ev = 0;

				if (!pr->eof[s] && room(pr, s))
					ev |= POLLIN;
				if (pr->off[1 - s] < pr->len[1 - s])
					ev |= POLLOUT;
				pfd[n + s] = (struct pollfd){ .fd = pr->fd[s],
							      .events = ev };
			}
			idx[np++] = i;
			n += 2;
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			bail_out("proxy poll: %s", strerror(errno));
		}
		if (pfd[1].revents)
			break;
		for (unsigned k = 0; k < np; k++) {
			short rev[2] = { pfd[2 + 2 * k].revents,
					 pfd[3 + 2 * k].revents };

			if (rev[0] || rev[1])
				pair_io(px, idx[k], rev);
		}
		if (pfd[0].revents & POLLIN)
			proxy_accept(px);
	}
	for (unsigned i = 0; i < MAX_PAIRS; i++)
		if (px->pairs[i])
			pair_close(px, i, false);
	return NULL;
}

static void proxy_start(struct proxy *px, const char *server_addr,
			uint64_t seed)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);

	memset(px, 0, sizeof(*px));
	px->rng = seed;
	px->server = loopback_sockaddr(server_addr);
	px->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC |
					     SOCK_NONBLOCK, 0);
	if (px->listen_fd < 0 ||
	    bind(px->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) ||
	    listen(px->listen_fd, 64) ||
	    getsockname(px->listen_fd, (struct sockaddr *)&sin, &len) ||
	    pipe2(px->stop_pipe, O_CLOEXEC))
		bail_out("proxy socket: %s", strerror(errno));
	snprintf(px->addr, sizeof(px->addr), "tcp://127.0.0.1:%u",
		 ntohs(sin.sin_port));
	if (pthread_create(&px->t, NULL, proxy_main, px))
		bail_out("pthread_create");
}

static void proxy_stop(struct proxy *px)
{
	char c = 1;

	if (write(px->stop_pipe[1], &c, 1) != 1)
		bail_out("proxy stop: %s", strerror(errno));
	pthread_join(px->t, NULL);
	close(px->listen_fd);
	close(px->stop_pipe[0]);
	close(px->stop_pipe[1]);
}

/* ------------------------------------------------------------------ */
/* the restore                                                         */
/* ------------------------------------------------------------------ */

/*
 * Wait for completion while pages keep arriving: fails (-ETIMEDOUT) when
 * nothing arrived for @stall_s seconds, or after @cap_s in all.
 */
static int wait_progress(pc_region *r, double stall_s, double cap_s,
			 double *stalled_for)
{
	double start = now_s(), last = start;
	uint64_t seen = pc_region_present(r);

	*stalled_for = 0;
	for (;;) {
		int ret = pc_region_wait(r, 500);
		uint64_t have;
		double t = now_s();

		if (ret != -ETIMEDOUT || pc_region_error(r)[0])
			return ret;
		have = pc_region_present(r);
		if (have != seen) {
			seen = have;
			last = t;
		}
		if (t - last > stall_s || t - start > cap_s) {
			*stalled_for = t - last;
			return -ETIMEDOUT;
		}
	}
}

static void run(const char *server_addr, bool keyed, enum pc_mode mode,
		enum pc_backend backend, unsigned window, uint64_t seed)
{
	struct pc_region_opts ro = { .backend = backend, .mode = mode,
				     .max_threads = VCPUS, .window = window };
	struct pc_net_opts no = { .key = keyed ? KEY : NULL,
				  .key_len = keyed ? sizeof(KEY) : 0,
				  .insecure = !keyed, .timeout_ms = NET_TIMEOUT_MS };
	char name[64], data[300] = "", cuts[300] = "", net[300] = "",
	     once[300] = "", why[256] = "";
	struct pc_net_stats ns = { 0 };
	struct pc_stats *st = NULL;
	struct rand_vcpu vc[VCPUS];
	struct proxy px;
	pc_source *src;
	pc_region *r = NULL;
	double t0 = now_s(), t_vcpus = 0, stalled = 0;
	int ret;

	tap_watchdog(240);
	snprintf(name, sizeof(name), "%s%s_mode_%s%s", keyed ? "" : "insecure_",
		 mode_name(mode), backend_name(backend),
		 window == PC_WINDOW_AUTO ? "_auto_window" : "");
	proxy_start(&px, server_addr, seed);
	no.address = px.addr;
	ret = pc_source_net(&no, &src, why, sizeof(why));
	if (ret) {
		snprintf(data, sizeof(data), "pc_source_net via proxy = %d (%s)",
			 ret, why);
		goto stop;
	}
	ro.size = pc_source_size(src);
	ret = pc_region_create(&ro, src, &r, why, sizeof(why));
	if (ret) {
		snprintf(data, sizeof(data), "pc_region_create = %d (%s)", ret,
			 why);
		r = NULL;
		goto stop;
	}
	ret = pc_region_start(r);
	if (!ret)
		ret = pc_net_start_push(src, r);
	if (ret) {
		snprintf(data, sizeof(data), "start = %d (%s)", ret,
			 pc_region_error(r));
		goto stop;
	}
	rand_vcpus_run(vc, VCPUS, r, img_pages, TOUCH_PCT, 7919, seed * 131);
	t_vcpus = now_s() - t0;
	ret = wait_progress(r, 8, 90, &stalled);
	pc_net_get_stats(src, &ns);
	pc_region_stats(r, &st);
	if (ret || !pc_region_complete(r)) {
		snprintf(data, sizeof(data),
			 "not complete: pc_region_wait = %d (%s); %" PRIu64
			 " of %" PRIu64 " pages present, none arrived for %.1f s",
			 ret, pc_region_error(r), pc_region_present(r),
			 img_pages, stalled);
	} else if (vc[0].attach_ret || vc[1].attach_ret) {
		snprintf(data, sizeof(data), "pc_thread_attach failed");
	} else {
		uint64_t bad = verify_mem(pc_region_addr(r), IMAGE_SIZE, ref,
					  NULL, NULL);

		if (bad)
			snprintf(data, sizeof(data),
				 "%" PRIu64 " pages differ from the image", bad);
	}
stop:
	/* The region first (its lanes close through the proxy), then the
	 * proxy: the cuts counted are those of the restore. */
	if (r)
		pc_region_destroy(r);
	proxy_stop(&px);
	diag("%s: %.1f s (vCPUs done after %.1f s), proxy: %" PRIu64 " connections, %" PRIu64
	     " cut (%" PRIu64 " by reset), %" PRIu64 " closed cleanly, %.1f MiB forwarded, %" PRIu64
	     " server connects failed",
	     name, now_s() - t0, t_vcpus, px.accepted, px.cuts, px.cuts_reset,
	     px.closed_clean, (double)px.bytes / MIB, px.refused_connects);
	diag("%s: net: %" PRIu64 " requests, %" PRIu64 " pages received, %" PRIu64
	     " pushed, %" PRIu64 " reconnects, %" PRIu64
	     " checksum failures, push_done %d",
	     name, ns.requests, ns.pages_received, ns.pages_pushed,
	     ns.reconnects, ns.checksum_failures, ns.push_done);
	if (st)
		diag("%s: region: %" PRIu64 " faults, demand %" PRIu64
		     ", prefetch %" PRIu64 ", fill %" PRIu64 ", zero %" PRIu64,
		     name, st->faults, st->pages_demand, st->pages_prefetch,
		     st->pages_fill, st->zero_pages);

	if (px.cuts < MIN_CUTS)
		snprintf(cuts, sizeof(cuts), "only %" PRIu64 " cuts, want >= %d",
			 px.cuts, MIN_CUTS);
	if (data[0] && !st)
		snprintf(net, sizeof(net), "not checked: %.200s", data);
	else if (!ns.reconnects || ns.checksum_failures)
		snprintf(net, sizeof(net),
			 "reconnects %" PRIu64 " (want > 0), checksum failures %" PRIu64
			 " (want 0)", ns.reconnects, ns.checksum_failures);
	else if (st && st->present == img_pages &&
		 ns.pages_received + ns.pages_pushed < img_pages - img_zero_pages)
		snprintf(net, sizeof(net),
			 "complete, but received %" PRIu64 " + pushed %" PRIu64
			 " < %" PRIu64 " data pages", ns.pages_received,
			 ns.pages_pushed, img_pages - img_zero_pages);
	/* Installed once: every present page was counted by exactly one
	 * install (complete or not; completion is the first check's). */
	if (!st)
		snprintf(once, sizeof(once), "no stats: %.200s", data);
	else if (st->pages_demand + st->pages_prefetch + st->pages_fill !=
		 st->present)
		snprintf(once, sizeof(once),
			 "demand %" PRIu64 " + prefetch %" PRIu64 " + fill %" PRIu64
			 " != present %" PRIu64 " (pages %" PRIu64 ")",
			 st->pages_demand, st->pages_prefetch, st->pages_fill,
			 st->present, img_pages);
	free(st);

	if (!ok(!data[0], "%s_restore_through_cutting_proxy_every_byte_matches_image",
		name))
		diag("%s", data);
	if (!ok(!cuts[0], "%s_proxy_cut_at_least_%d_connections_during_restore",
		name, MIN_CUTS))
		diag("%s", cuts);
	else
		diag("%s: %" PRIu64 " cuts", name, px.cuts);
	if (!ok(!net[0], "%s_source_reconnected_no_checksum_failure", name))
		diag("%s", net);
	if (!ok(!once[0], "%s_no_page_installed_twice", name))
		diag("%s", once);
}

int main(void)
{
	struct srv v;

	plan(3 * 4 + 2);
	img_pages = IMAGE_SIZE / SRC_PAGE;
	img_zero_pages = image_setup(dir, image_path, sizeof(image_path),
				     IMAGE_SIZE, IMAGE_SEED, &ref);
	diag("image: %" PRIu64 " pages, %" PRIu64 " holes", img_pages,
	     img_zero_pages);

	srv_start(&v, true);
	/* One page per fault, and the adaptive window restore uses by
	 * default: while the push runs, 64 KiB demand runs that a cut can
	 * break half way. */
	run(pc_server_address(v.s), true, PC_MODE_EXIT, PC_BACKEND_SHMEM, 1, 1001);
	run(pc_server_address(v.s), true, PC_MODE_WAIT, PC_BACKEND_ANON, PC_WINDOW_AUTO, 2002);
	srv_stop(&v);
	/* A cut frame is a closed connection, not a malformed frame.  (A cut
	 * in a handshake counts as refused: "abandoned the handshake".) */
	if (!ok(v.run_ret == 0 && v.st.bad_frames == 0,
		"server_saw_no_malformed_frame_despite_cuts"))
		diag("run %d, bad_frames %" PRIu64, v.run_ret, v.st.bad_frames);
	/* Without a key the push sends pages with sendfile(): cuts in the
	 * middle of one must give the server EPIPE or a reset, never a
	 * SIGPIPE that ends this process (which does not ignore it). */
	srv_start(&v, false);
	run(pc_server_address(v.s), false, PC_MODE_EXIT, PC_BACKEND_SHMEM, PC_WINDOW_AUTO, 3003);
	srv_stop(&v);
	if (!ok(v.run_ret == 0 && v.st.bad_frames == 0,
		"insecure_server_saw_no_malformed_frame_despite_cuts"))
		diag("run %d, bad_frames %" PRIu64, v.run_ret, v.st.bad_frames);
	diag("server: %" PRIu64 " handshakes refused or abandoned",
	     v.st.refused);
	diag("server: %" PRIu64 " connections, %" PRIu64 " sessions (%" PRIu64
	     " done), %" PRIu64 " requests, %" PRIu64 " pages demand, %" PRIu64
	     " pushed, %.1f MiB sent",
	     v.st.connections, v.st.sessions, v.st.sessions_done,
	     v.st.requests, v.st.pages_demand, v.st.pages_pushed,
	     (double)v.st.bytes_sent / MIB);

	pc_source_destroy(ref);
	unlink(image_path);
	if (rmdir(dir))
		diag("rmdir %s: %s", dir, strerror(errno));
	return done();
}
