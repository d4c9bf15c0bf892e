/* SPDX-License-Identifier: MIT */
/*
 * test_net - post-copy over the network: pc_server_* and pc_source_net.
 *
 * The server runs in this process on its own thread (pc_server_run until
 * pc_server_stop); clients are the network source or hand-made frames on
 * raw sockets.  Every memory check compares EVERY byte of the region with
 * the image file, read back independently through a file source.
 *
 * Pins:
 *   - restore over TCP with a key (exit and wait mode, shmem and anon) with
 *     the push running and 2 vCPU threads touching pages in random order:
 *     complete, byte-exact, every data page accounted for by the network
 *     counters, no checksum failure, no page installed twice; the same over
 *     a Unix socket without a key; demand only (no push) fetches every
 *     page through requests;
 *   - a Unix socket refuses a peer whose uid is not allowed;
 *   - a wrong key, a keyless client of a keyed server and a keyed client of
 *     an insecure server fail with -EACCES and a reason; a client that
 *     gives a wrong proof gets REFUSE(AUTH); the server counts refusals
 *     (a wrong-key client walking away mid-handshake included) and goes
 *     on serving a correct client;
 *   - TCP without a key and without insecure is refused on both sides;
 *   - a protocol version 2 HELLO gets REFUSE(VERSION) naming the version;
 *   - malformed frames (bad magic, oversized length, REQUEST before the
 *     handshake) and requests outside the image close that connection with
 *     REFUSE and are counted in bad_frames; the last page is served
 *     exactly, one past it never; the server serves a normal client after;
 *   - server gone after the handshake: pc_source_read fails within the
 *     timeout; in both modes the region fails with an error while the
 *     faulting thread never runs on (no zeros) and the process lives (an
 *     exit-mode thread is parked in the SIGBUS handler).
 */
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "postcopy.h"
#include "proto.h"
#include "tap.h"
#include "net_helpers.h"
#include "raw_peer.h"

#define IMAGE_SIZE (16 * MIB)
#define IMAGE_SEED 777
#define VCPUS 2

static char dir[] = "/tmp/postcopy-test-net-XXXXXX";
static char image_path[256];
static pc_source *ref;		/* file source over the image: the truth */
static uint64_t img_pages, img_zero_pages;

static const uint8_t KEY[32] = "postcopy-test-key-0123456789abcd";
static const uint8_t WRONG_KEY[32] = "postcopy-wrong-key-0123456789abc";

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

/* A data page of the image (not a hole) at or after @from. */
static uint64_t data_page_from(uint64_t from)
{
	for (uint64_t p = from; p < img_pages; p++)
		if (!pc_source_is_zero(ref, p))
			return p;
	bail_out("no data page after %" PRIu64, from);
}

/* ---- the server on its own thread ---- */

static int srv_start(struct srv *v, const char *listen, const uint8_t *key,
		     bool insecure, int allow_uid, char *why, size_t why_len)
{
	struct pc_server_opts o = {
		.image = image_path,
		.listen = listen,
		.key = key,
		.key_len = key ? sizeof(KEY) : 0,
		.insecure = insecure,
		.allow_uid = allow_uid,
		.session_timeout_ms = 10000,
	};

	return srv_start_opts(v, &o, why, why_len);
}

static void srv_start_or_bail(struct srv *v, const char *listen,
			      const uint8_t *key, bool insecure)
{
	char why[256] = "";
	int ret = srv_start(v, listen, key, insecure, -1, why, sizeof(why));

	if (ret)
		bail_out("server on %s: %d (%s)", listen, ret, why);
}

static int net_open(const char *addr, const uint8_t *key, bool insecure,
		    unsigned timeout_ms, pc_source **out, char *why,
		    size_t why_len)
{
	struct pc_net_opts o = {
		.address = addr,
		.key = key,
		.key_len = key ? sizeof(KEY) : 0,
		.insecure = insecure,
		.timeout_ms = timeout_ms,
	};

	return pc_source_net(&o, out, why, why_len);
}

/*
 * Read the whole image through @src (runs of 512 pages) and compare with
 * the file.  Returns the number of differing pages, or -1 on a failed read
 * (described in @why).
 */
static int64_t compare_source(pc_source *src, char *why, size_t len)
{
	const uint64_t run = 512;
	char *have = malloc(run * SRC_PAGE), *want = malloc(run * SRC_PAGE);
	int64_t bad = 0;

	if (!have || !want)
		bail_out("out of memory");
	for (uint64_t p = 0; p < img_pages; p += run) {
		uint64_t n = img_pages - p < run ? img_pages - p : run;
		int ret = pc_source_read(src, p, n, have);

		if (ret || pc_source_read(ref, p, n, want)) {
			snprintf(why, len, "pc_source_read(%" PRIu64 ", %" PRIu64
				 ") = %d", p, n, ret);
			bad = -1;
			break;
		}
		for (uint64_t i = 0; i < n; i++)
			bad += memcmp(have + i * SRC_PAGE, want + i * SRC_PAGE,
				      SRC_PAGE) != 0;
	}
	free(have);
	free(want);
	return bad;
}

/* ------------------------------------------------------------------ */
/* restores                                                            */
/* ------------------------------------------------------------------ */

struct rcase {
	const char *name;
	const char *addr;
	const uint8_t *key;
	bool insecure;
	enum pc_mode mode;
	enum pc_backend backend;
	bool push;
	unsigned touch_pct;
	uint64_t seed;
};

/*
 * Three checks: complete and byte-exact; the network counters; every page
 * installed exactly once.
 */
static void run_restore(const struct rcase *c)
{
	struct pc_region_opts ro = {
		.backend = c->backend,
		.mode = c->mode,
		.max_threads = VCPUS,
	};
	struct verdict v = { "", "", "" };
	struct rand_vcpu vc[VCPUS];
	struct pc_net_stats ns;
	struct pc_stats *st = NULL;
	char why[256] = "";
	pc_source *src;
	pc_region *r;
	int ret;

	tap_watchdog(120);
	ret = net_open(c->addr, c->key, c->insecure, 20000, &src, why,
		       sizeof(why));
	if (ret) {
		char m[300];

		snprintf(m, sizeof(m), "pc_source_net = %d (%s)", ret, why);
		fail_all(&v, m);
		goto report;
	}
	ro.size = pc_source_size(src);
	if (ro.size != IMAGE_SIZE) {
		pc_source_destroy(src);
		fail_all(&v, "net source size differs from the image");
		goto report;
	}
	ret = pc_region_create(&ro, src, &r, why, sizeof(why));
	if (ret) {
		char m[300];

		snprintf(m, sizeof(m), "pc_region_create = %d (%s)", ret, why);
		fail_all(&v, m);
		goto report;
	}
	ret = pc_region_start(r);
	if (!ret && c->push)
		ret = pc_net_start_push(src, r);
	if (ret) {
		char m[300];

		snprintf(m, sizeof(m), "start = %d (%s)", ret,
			 pc_region_error(r));
		fail_all(&v, m);
		pc_region_destroy(r);
		goto report;
	}
	/* Touch c->touch_pct % of each share, one byte a page. */
	rand_vcpus_run(vc, VCPUS, r, img_pages, c->touch_pct, 131,
		       c->seed * 31);

	ret = pc_region_wait(r, 60000);
	pc_net_get_stats(src, &ns);
	pc_region_stats(r, &st);
	if (ret || !pc_region_complete(r)) {
		snprintf(v.data, sizeof(v.data),
			 "pc_region_wait = %d, complete %d (%s)", ret,
			 pc_region_complete(r), pc_region_error(r));
	} else if (vc[0].attach_ret || vc[1].attach_ret) {
		snprintf(v.data, sizeof(v.data), "pc_thread_attach failed");
	} else {
		uint64_t bad = verify_mem(pc_region_addr(r), IMAGE_SIZE, ref,
					  NULL, NULL);

		if (bad)
			snprintf(v.data, sizeof(v.data),
				 "%" PRIu64 " pages differ from the image", bad);
	}

	diag("%s: requests %" PRIu64 ", pages received %" PRIu64
	     ", pushed %" PRIu64 ", reconnects %" PRIu64
	     ", checksum failures %" PRIu64 ", push_done %d",
	     c->name, ns.requests, ns.pages_received, ns.pages_pushed,
	     ns.reconnects, ns.checksum_failures, ns.push_done);
	if (ns.pages_received + ns.pages_pushed < img_pages - img_zero_pages)
		snprintf(v.fetch, sizeof(v.fetch),
			 "received %" PRIu64 " + pushed %" PRIu64
			 " < %" PRIu64 " data pages",
			 ns.pages_received, ns.pages_pushed,
			 img_pages - img_zero_pages);
	else if (ns.checksum_failures)
		snprintf(v.fetch, sizeof(v.fetch), "%" PRIu64
			 " checksum failures on loopback",
			 ns.checksum_failures);
	else if (c->push && !ns.pages_pushed)
		snprintf(v.fetch, sizeof(v.fetch),
			 "the push delivered nothing");
	else if (!c->push && (ns.pages_pushed || !ns.requests))
		snprintf(v.fetch, sizeof(v.fetch),
			 "demand only: requests %" PRIu64 ", pushed %" PRIu64
			 " (want > 0 and 0)",
			 ns.requests, ns.pages_pushed);

	if (!st)
		snprintf(v.stats, sizeof(v.stats), "pc_region_stats failed");
	else if (st->present != img_pages ||
		 st->pages_demand + st->pages_prefetch + st->pages_fill !=
			 img_pages)
		snprintf(v.stats, sizeof(v.stats),
			 "present %" PRIu64 ", demand %" PRIu64
			 " + prefetch %" PRIu64 " + fill %" PRIu64
			 " != pages %" PRIu64,
			 st->present, st->pages_demand, st->pages_prefetch,
			 st->pages_fill, img_pages);
	else if (!c->push && st->faults == 0)
		snprintf(v.stats, sizeof(v.stats), "no demand faults");
	free(st);
	pc_region_destroy(r);
report:
	if (!ok(!v.data[0], "%s_completes_every_byte_matches_image", c->name))
		diag("%s", v.data);
	if (!ok(!v.fetch[0], "%s_net_stats_cover_every_data_page_no_bad_checksum",
		c->name))
		diag("%s", v.fetch);
	if (!ok(!v.stats[0], "%s_every_page_installed_exactly_once", c->name))
		diag("%s", v.stats);
}

static void test_restores(void)
{
	struct srv tcp, unx;
	char unix_listen[300];

	srv_start_or_bail(&tcp, "tcp://127.0.0.1:0", KEY, false);
	snprintf(unix_listen, sizeof(unix_listen), "unix:%s/serve.sock", dir);
	srv_start_or_bail(&unx, unix_listen, NULL, false);
	diag("servers on %s and %s", tcp.addr, unx.addr);

	const struct rcase cases[] = {
		{ "tcp_key_exit_shmem_push_2vcpus", tcp.addr, KEY, false,
		  PC_MODE_EXIT, PC_BACKEND_SHMEM, true, 50, 1 },
		{ "tcp_key_exit_anon_push_2vcpus", tcp.addr, KEY, false,
		  PC_MODE_EXIT, PC_BACKEND_ANON, true, 50, 2 },
		{ "tcp_key_wait_shmem_push_2vcpus", tcp.addr, KEY, false,
		  PC_MODE_WAIT, PC_BACKEND_SHMEM, true, 50, 3 },
		{ "tcp_key_wait_anon_push_2vcpus", tcp.addr, KEY, false,
		  PC_MODE_WAIT, PC_BACKEND_ANON, true, 50, 4 },
		{ "unix_nokey_exit_shmem_push_2vcpus", unx.addr, NULL, false,
		  PC_MODE_EXIT, PC_BACKEND_SHMEM, true, 50, 5 },
		{ "unix_nokey_wait_anon_push_2vcpus", unx.addr, NULL, false,
		  PC_MODE_WAIT, PC_BACKEND_ANON, true, 50, 6 },
		{ "tcp_key_exit_shmem_demand_only_every_page", tcp.addr, KEY,
		  false, PC_MODE_EXIT, PC_BACKEND_SHMEM, false, 100, 7 },
		{ "tcp_key_wait_anon_demand_only_every_page", tcp.addr, KEY,
		  false, PC_MODE_WAIT, PC_BACKEND_ANON, false, 100, 8 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_restore(&cases[i]);
	srv_stop(&tcp);
	srv_stop(&unx);
	ok(tcp.run_ret == 0 && unx.run_ret == 0 && tcp.st.sessions >= 6 &&
		   unx.st.sessions >= 2 && !tcp.st.bad_frames &&
		   !tcp.st.refused && !unx.st.refused,
	   "restores_server_counts_sessions_no_refusal_no_bad_frame");
	diag("tcp server: run %d, %" PRIu64 " connections, %" PRIu64
	     " sessions (%" PRIu64 " done), %" PRIu64 " requests, %" PRIu64
	     " pages demand, %" PRIu64 " pushed, %" PRIu64 " refused, %" PRIu64
	     " bad frames",
	     tcp.run_ret, tcp.st.connections, tcp.st.sessions,
	     tcp.st.sessions_done, tcp.st.requests, tcp.st.pages_demand,
	     tcp.st.pages_pushed, tcp.st.refused, tcp.st.bad_frames);
}
#define RESTORE_CHECKS (8 * 3 + 1)

/* A Unix socket only lets the allowed uid in. */
static void test_unix_uid(void)
{
	char listen[300], why[256] = "";
	struct srv v;
	pc_source *src = NULL;
	int ret;

	snprintf(listen, sizeof(listen), "unix:%s/uid.sock", dir);
	ret = srv_start(&v, listen, NULL, false, (int)getuid() + 4242, why,
			sizeof(why));
	if (ret)
		bail_out("server on %s: %d (%s)", listen, ret, why);
	ret = net_open(v.addr, NULL, false, 3000, &src, why, sizeof(why));
	if (!ret)
		pc_source_destroy(src);
	srv_stop(&v);
	if (!ok(ret == -EACCES && why[0] && v.st.refused == 1,
		"unix_socket_refuses_peer_uid_not_allowed_eacces_with_reason"))
		diag("pc_source_net = %d (%s), server refused %" PRIu64, ret,
		     why, v.st.refused);
	else
		diag("reason: %s", why);
}
#define UID_CHECKS 1

/* ------------------------------------------------------------------ */
/* raw sockets                                                         */
/* ------------------------------------------------------------------ */

/* The server closed the connection: EOF (or a reset) within 5 s. */
static bool closed_by_server(int fd)
{
	char c;

	return raw_recv(fd, &c, 1) == 0;
}

/*
 * Expect a REFUSE with @code, then the end of the connection.  Describes
 * what came instead in @why; the reason goes to @reason.
 */
static bool expect_refuse(int fd, uint32_t code, char *reason,
			  size_t reason_len, char *why, size_t why_len)
{
	static uint8_t buf[PROTO_MAX_PAYLOAD];
	struct frame_hdr h;
	struct refuse rf;
	int ret = raw_recv_frame(fd, &h, buf, sizeof(buf));

	if (ret <= 0) {
		snprintf(why, why_len, "%s instead of REFUSE",
			 ret ? "error/timeout" : "EOF");
		return false;
	}
	if (h.type != FRAME_REFUSE || proto_get_refuse(buf, h.len, &rf)) {
		snprintf(why, why_len, "frame type %u instead of REFUSE",
			 h.type);
		return false;
	}
	if (reason)
		snprintf(reason, reason_len, "%s", rf.reason);
	if (rf.code != code) {
		snprintf(why, why_len, "REFUSE code %u (%s), want %u", rf.code,
			 rf.reason, code);
		return false;
	}
	if (!closed_by_server(fd)) {
		snprintf(why, why_len, "connection still open after REFUSE");
		return false;
	}
	return true;
}

static struct hello make_hello(uint32_t version, uint32_t role)
{
	static uint64_t counter;
	struct hello h = { .version = version, .role = role };
	/* A new session each time: the zero map comes with its first
	 * demand connection only. */
	uint64_t s = (uint64_t)(now_s() * 1e9) ^ ((uint64_t)getpid() << 32) ^
		     ++counter * 0x9e3779b97f4a7c15ull;

	h.session = splitmix(&s);
	for (unsigned i = 0; i < PROTO_NONCE_LEN; i++)
		h.nonce[i] = (uint8_t)splitmix(&s);
	return h;
}

/*
 * HELLO and CHALLENGE (sent AUTH is the caller's).  Returns true with the
 * challenge in *c.
 */
static bool raw_hello(int fd, const struct hello *hl, struct challenge *c)
{
	uint8_t buf[256];
	struct frame_hdr h;

	raw_send_frame(fd, FRAME_HELLO, 0, buf, proto_put_hello(buf, hl));
	return raw_recv_frame(fd, &h, buf, sizeof(buf)) == 1 &&
	       h.type == FRAME_CHALLENGE && !proto_get_challenge(buf, h.len, c);
}

/*
 * A complete insecure handshake for a demand lane of a new session:
 * HELLO, CHALLENGE, AUTH (zero proof), READY and the zero map.
 */
static struct image_id raw_image; /* what the last raw handshake learned */

static bool raw_handshake_insecure(int fd, uint64_t *page_count)
{
	static uint8_t buf[PROTO_MAX_PAYLOAD];
	struct hello hl = make_hello(PROTO_VERSION, ROLE_DEMAND);
	struct auth a = { { 0 } };
	struct challenge c;
	struct frame_hdr h;
	uint64_t covered = 0;

	if (!raw_hello(fd, &hl, &c))
		return false;
	raw_send_frame(fd, FRAME_AUTH, 0, buf, proto_put_auth(buf, &a));
	if (raw_recv_frame(fd, &h, buf, sizeof(buf)) != 1 || h.type != FRAME_READY)
		return false;
	while (covered < c.image.page_count) {
		struct zeromap zm;

		if (raw_recv_frame(fd, &h, buf, sizeof(buf)) != 1 ||
		    h.type != FRAME_ZEROMAP ||
		    proto_get_zeromap(buf, h.len, c.image.page_count, &zm) ||
		    zm.first != covered)
			return false;
		covered += zm.npages;
	}
	*page_count = c.image.page_count;
	raw_image = c.image;
	return true;
}

static void send_request(int fd, uint64_t first, uint32_t npages,
			 uint32_t tag)
{
	struct request rq = { .first = first, .npages = npages,
			      .priority = PRIO_DEMAND };
	uint8_t buf[16];

	raw_send_frame(fd, FRAME_REQUEST, tag, buf, proto_put_request(buf, &rq));
}

/* ---- keys ---- */

static void test_keys(void)
{
	char why[256] = "", reason[256] = "", m[300] = "";
	struct srv v, w;
	pc_source *src = NULL;
	int ret;

	tap_watchdog(60);
	/* (a) the network source with the wrong key */
	srv_start_or_bail(&v, "tcp://127.0.0.1:0", KEY, false);
	ret = net_open(v.addr, WRONG_KEY, false, 3000, &src, why, sizeof(why));
	if (!ret)
		pc_source_destroy(src);
	if (!ok(ret == -EACCES && why[0],
		"wrong_key_pc_source_net_fails_eacces_with_reason"))
		diag("pc_source_net = %d (%s)", ret, why);
	else
		diag("reason: %s", why);

	/* ... and the right key still works, every byte. */
	why[0] = 0;
	ret = net_open(v.addr, KEY, false, 5000, &src, why, sizeof(why));
	if (ret) {
		snprintf(m, sizeof(m), "pc_source_net = %d (%s)", ret, why);
	} else {
		int64_t bad = compare_source(src, why, sizeof(why));

		if (bad)
			snprintf(m, sizeof(m), "%s: %" PRId64 " pages differ",
				 why, bad);
		pc_source_destroy(src);
	}
	srv_stop(&v);
	if (!ok(!m[0], "right_key_after_wrong_key_reads_whole_image_exactly"))
		diag("%s", m);
	/* A wrong-key attempt must show in the server's counters:
	 * "refused: failed the handshake". */
	if (!ok(v.st.refused >= 1,
		"server_counts_wrong_key_client_handshake_as_refused"))
		diag("server stats after one wrong-key and one right-key client: connections %" PRIu64
		     ", refused %" PRIu64 ", bad_frames %" PRIu64
		     ", sessions %" PRIu64,
		     v.st.connections, v.st.refused, v.st.bad_frames,
		     v.st.sessions);

	/* (b) a client whose proof is wrong gets REFUSE(AUTH) */
	srv_start_or_bail(&v, "tcp://127.0.0.1:0", KEY, false);
	{
		int fd = raw_connect(v.addr);
		struct hello hl = make_hello(PROTO_VERSION, ROLE_DEMAND);
		struct challenge c;
		struct auth a;
		uint8_t buf[64], want[PROTO_MAC_LEN];

		m[0] = 0;
		if (!raw_hello(fd, &hl, &c)) {
			snprintf(m, sizeof(m), "no CHALLENGE");
		} else {
			proto_server_proof(KEY, sizeof(KEY), &hl, &c, want);
			if (!proto_proof_equal(want, c.proof))
				snprintf(m, sizeof(m),
					 "the server's proof does not verify with the key");
			proto_client_proof(WRONG_KEY, sizeof(WRONG_KEY), &hl,
					   &c, a.proof);
			raw_send_frame(fd, FRAME_AUTH, 0, buf,
				   proto_put_auth(buf, &a));
			if (!m[0])
				expect_refuse(fd, REFUSE_AUTH, reason,
					      sizeof(reason), m, sizeof(m));
		}
		close(fd);
		if (!ok(!m[0], "wrong_client_proof_gets_refuse_auth_and_close"))
			diag("%s", m);
		else
			diag("reason: %s", reason);
	}
	/* (c) a keyless (insecure) client of a keyed server */
	why[0] = 0;
	ret = net_open(v.addr, NULL, true, 3000, &src, why, sizeof(why));
	if (!ret)
		pc_source_destroy(src);
	if (!ok(ret == -EACCES && why[0],
		"insecure_client_of_keyed_server_fails_eacces_with_reason"))
		diag("pc_source_net = %d (%s)", ret, why);
	srv_stop(&v);
	if (!ok(v.st.refused == 2 && v.st.bad_frames == 0 &&
			v.st.sessions == 0,
		"keyed_server_counts_two_auth_refusals_no_session"))
		diag("refused %" PRIu64 ", bad_frames %" PRIu64
		     ", sessions %" PRIu64,
		     v.st.refused, v.st.bad_frames, v.st.sessions);

	/* (d) a keyed client of an insecure server: the server cannot prove
	 * it has the key, so the client refuses it. */
	srv_start_or_bail(&w, "tcp://127.0.0.1:0", NULL, true);
	why[0] = 0;
	ret = net_open(w.addr, KEY, false, 3000, &src, why, sizeof(why));
	if (!ret)
		pc_source_destroy(src);
	srv_stop(&w);
	if (!ok(ret == -EACCES && why[0],
		"keyed_client_of_insecure_server_fails_eacces_with_reason"))
		diag("pc_source_net = %d (%s)", ret, why);
}
#define KEY_CHECKS 7

/* TCP with neither a key nor insecure: refused on both sides. */
static void test_no_key_tcp(void)
{
	struct pc_server_opts so = { .image = image_path,
				     .listen = "tcp://127.0.0.1:0",
				     .allow_uid = -1 };
	struct pc_net_opts no = { .address = "tcp://127.0.0.1:1" };
	pc_server *s = (pc_server *)&s;
	pc_source *src = (pc_source *)&src;
	char why[256] = "";
	int ret;

	ret = pc_server_create(&so, &s, why, sizeof(why));
	if (!ret)
		pc_server_destroy(s);
	if (!ok(ret == -EPERM && strstr(why, "key"),
		"server_tcp_without_key_or_insecure_is_eperm_with_message"))
		diag("pc_server_create = %d (%s)", ret, why);

	why[0] = 0;
	ret = pc_source_net(&no, &src, why, sizeof(why));
	if (!ret)
		pc_source_destroy(src);
	if (!ok(ret == -EPERM && strstr(why, "key"),
		"source_tcp_without_key_or_insecure_is_eperm_with_message"))
		diag("pc_source_net = %d (%s)", ret, why);
}
#define NOKEY_CHECKS 2

/* Options built against a newer header, which gave a reserved field a
 * meaning this library does not know: refused, each field, before anything
 * is opened. */
static void test_reserved_options(void)
{
	enum { N = sizeof(((struct pc_server_opts *)0)->reserved) / sizeof(uint64_t),
	       M = sizeof(((struct pc_net_opts *)0)->reserved) / sizeof(uint64_t) };
	char why[256] = "";
	int ret = 0;
	unsigned i;

	for (i = 0; i < N; i++) {
		struct pc_server_opts so = { .image = image_path,
					     .listen = "tcp://127.0.0.1:0",
					     .insecure = true, .allow_uid = -1 };
		pc_server *s;
		so.reserved[i] = 1;
		why[0] = 0;
		ret = pc_server_create(&so, &s, why, sizeof(why));
		if (!ret)
			pc_server_destroy(s);
		if (ret != -EINVAL || !strstr(why, "reserved"))
			break;
	}
	if (!ok(i == N, "server_nonzero_reserved_option_is_einval"))
		diag("reserved[%u] = 1: pc_server_create = %d (%s)", i, ret, why);

	for (i = 0; i < M; i++) {
		struct pc_net_opts no = { .address = "tcp://127.0.0.1:1",
					  .insecure = true, .timeout_ms = 1 };
		pc_source *src;
		no.reserved[i] = 1;
		why[0] = 0;
		ret = pc_source_net(&no, &src, why, sizeof(why));
		if (!ret)
			pc_source_destroy(src);
		if (ret != -EINVAL || !strstr(why, "reserved"))
			break;
	}
	if (!ok(i == M, "source_net_nonzero_reserved_option_is_einval"))
		diag("reserved[%u] = 1: pc_source_net = %d (%s)", i, ret, why);
}

static bool all_zero(const uint64_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (w[i])
			return false;
	return true;
}

/* The counters' reserved fields, where later versions put new counters,
 * are zero however the caller's struct was filled. */
static void test_stats_reserved_zero(void)
{
	struct srv v;
	struct pc_net_stats ns;
	struct pc_stats *st = NULL;
	pc_source *src;
	pc_region *r;
	char why[256] = "";

	srv_start_or_bail(&v, "tcp://127.0.0.1:0", NULL, true);
	if (net_open(v.addr, NULL, true, 10000, &src, why, sizeof(why)))
		bail_out("pc_source_net: %s", why);
	memset(&ns, 0xa5, sizeof(ns));
	int nret = pc_net_get_stats(src, &ns);
	struct pc_region_opts ro = { .size = pc_source_size(src) };
	if (pc_region_create(&ro, src, &r, why, sizeof(why)) ||
	    pc_region_start(r))
		bail_out("region: %s", why);
	(void)*(volatile char *)pc_region_addr(r);
	int sret = pc_region_stats(r, &st);
	pc_region_destroy(r);
	memset(&v.st, 0xa5, sizeof(v.st));
	srv_stop(&v);
	bool net0 = !nret && all_zero(ns.reserved, sizeof(ns.reserved) / 8);
	bool srv0 = all_zero(v.st.reserved, sizeof(v.st.reserved) / 8);
	bool reg0 = !sret && all_zero(st->reserved, sizeof(st->reserved) / 8);
	if (!ok(net0 && srv0 && reg0, "stats_reserved_fields_are_zero"))
		diag("zero: pc_net_stats %d (ret %d), pc_server_stats %d, "
		     "pc_stats %d (ret %d)", net0, nret, srv0, reg0, sret);
	free(st);
}
#define RESERVED_CHECKS 3

/* ---- protocol abuse on an insecure server ---- */

static void test_protocol_abuse(void)
{
	static uint8_t buf[PROTO_MAX_PAYLOAD];
	char why[256], reason[256];
	struct srv v;
	pc_source *src;
	uint64_t pages = 0;
	int fd, ret;

	tap_watchdog(60);
	srv_start_or_bail(&v, "tcp://127.0.0.1:0", NULL, true);

	/* another version */
	fd = raw_connect(v.addr);
	{
		struct hello hl = make_hello(PROTO_VERSION + 1, ROLE_DEMAND);

		raw_send_frame(fd, FRAME_HELLO, 0, buf, proto_put_hello(buf, &hl));
	}
	why[0] = reason[0] = 0;
	ret = expect_refuse(fd, REFUSE_VERSION, reason, sizeof(reason), why,
			    sizeof(why));
	close(fd);
	if (!ok(ret && strstr(reason, "version") && strstr(reason, "3"),
		"protocol_version_3_hello_gets_refuse_version_naming_it"))
		diag("%s; reason '%s'", why, reason);
	else
		diag("reason: %s", reason);

	/* bad magic */
	fd = raw_connect(v.addr);
	{
		struct hello hl = make_hello(PROTO_VERSION, ROLE_DEMAND);
		size_t n = proto_put_hello(buf + PROTO_HDR_LEN, &hl);

		proto_put_hdr(buf, FRAME_HELLO, (uint32_t)n, 0);
		buf[0] ^= 0x5a;
		raw_send(fd, buf, PROTO_HDR_LEN + n);
	}
	why[0] = 0;
	ret = expect_refuse(fd, REFUSE_BAD_FRAME, NULL, 0, why, sizeof(why));
	close(fd);
	if (!ok(ret, "bad_magic_gets_refuse_bad_frame_and_close"))
		diag("%s", why);

	/* a length far beyond what a destination may send */
	fd = raw_connect(v.addr);
	proto_put_hdr(buf, FRAME_HELLO, 1u << 30, 0);
	raw_send(fd, buf, PROTO_HDR_LEN);
	why[0] = 0;
	ret = expect_refuse(fd, REFUSE_BAD_FRAME, NULL, 0, why, sizeof(why));
	close(fd);
	if (!ok(ret, "oversized_frame_length_gets_refuse_bad_frame_and_close"))
		diag("%s", why);

	/* REQUEST before the handshake */
	fd = raw_connect(v.addr);
	send_request(fd, 0, 1, 1);
	why[0] = 0;
	ret = expect_refuse(fd, REFUSE_BAD_FRAME, NULL, 0, why, sizeof(why));
	close(fd);
	if (!ok(ret, "request_before_handshake_gets_refuse_bad_frame_and_close"))
		diag("%s", why);

	/* After a correct handshake: the last page exactly, nothing beyond. */
	fd = raw_connect(v.addr);
	why[0] = 0;
	if (!raw_handshake_insecure(fd, &pages) || pages != img_pages) {
		snprintf(why, sizeof(why), "handshake failed (pages %" PRIu64 ")",
			 pages);
	} else {
		struct frame_hdr h;
		struct data_run run;
		char want[SRC_PAGE];
		uint64_t last = img_pages - 1;

		pc_source_read(ref, last, 1, want);
		send_request(fd, last, 1, 77);
		if (raw_recv_frame(fd, &h, buf, sizeof(buf)) != 1 || h.tag != 77 ||
		    proto_get_data_run(buf, h.len, h.type, img_pages, &run) ||
		    run.first != last || run.npages != 1)
			snprintf(why, sizeof(why), "no DATA/ZERO answer for the last page");
		else if (h.type == FRAME_DATA &&
			 (memcmp(buf + PROTO_DATA_FIXED, want, SRC_PAGE) ||
			  proto_run_checksum(&raw_image, last, buf + PROTO_DATA_FIXED,
					     1) != run.checksum))
			snprintf(why, sizeof(why), "last page data or checksum wrong");
		else if (h.type == FRAME_ZERO && !pc_source_is_zero(ref, last))
			snprintf(why, sizeof(why), "last page sent as ZERO but has data");
	}
	if (!ok(!why[0], "last_page_request_answered_exactly"))
		diag("%s", why);

	/* first == page count, on the same connection */
	why[0] = 0;
	if (pages == img_pages) {
		send_request(fd, img_pages, 1, 78);
		expect_refuse(fd, REFUSE_RANGE, NULL, 0, why, sizeof(why));
	} else {
		snprintf(why, sizeof(why), "no handshake");
	}
	close(fd);
	if (!ok(!why[0], "request_one_past_the_end_gets_refuse_range_and_close"))
		diag("%s", why);

	/* a run that straddles the end, and one whose end overflows */
	static const struct {
		int64_t back;	/* first = pages - back (or huge) */
		uint32_t npages;
		const char *name;
	} beyond[] = {
		{ 1, 2, "request_straddling_the_end_gets_refuse_range_and_close" },
		{ -1, PROTO_MAX_RUN,
		  "request_with_overflowing_first_gets_refuse_range_and_close" },
	};
	for (size_t i = 0; i < 2; i++) {
		uint64_t first = beyond[i].back < 0 ? UINT64_MAX - 10 :
						      img_pages - (uint64_t)beyond[i].back;

		fd = raw_connect(v.addr);
		why[0] = 0;
		if (!raw_handshake_insecure(fd, &pages)) {
			snprintf(why, sizeof(why), "handshake failed");
		} else {
			send_request(fd, first, beyond[i].npages, 79);
			expect_refuse(fd, REFUSE_RANGE, NULL, 0, why,
				      sizeof(why));
		}
		close(fd);
		if (!ok(!why[0], "%s", beyond[i].name))
			diag("%s", why);
	}

	/* The server survived all that: a normal client reads every byte. */
	why[0] = 0;
	ret = net_open(v.addr, NULL, true, 5000, &src, why, sizeof(why));
	if (ret) {
		if (!ok(false, "server_serves_normal_client_after_malformed_frames"))
			diag("pc_source_net = %d (%s)", ret, why);
	} else {
		int64_t bad = compare_source(src, why, sizeof(why));

		if (!ok(bad == 0,
			"server_serves_normal_client_after_malformed_frames"))
			diag("%s: %" PRId64 " pages differ", why, bad);
		pc_source_destroy(src);
	}
	srv_stop(&v);
	/* bad magic, oversized, early REQUEST, three out of range */
	if (!ok(v.run_ret == 0 && v.st.bad_frames == 6 && v.st.refused == 1,
		"server_counts_six_bad_frames_and_one_version_refusal"))
		diag("run %d, bad_frames %" PRIu64 " (want 6), refused %" PRIu64
		     " (want 1)", v.run_ret, v.st.bad_frames, v.st.refused);
}
#define ABUSE_CHECKS 10

/* ------------------------------------------------------------------ */
/* the server goes away after the handshake                            */
/* ------------------------------------------------------------------ */

#define GONE_TIMEOUT_MS 1500

/* In-process: a plain fetch fails once the timeout has passed. */
static void test_server_gone_read(void)
{
	char why[256] = "", buf[SRC_PAGE];
	struct srv v;
	pc_source *src;
	double t0, dt = 0;
	int ret, first = -1;

	tap_watchdog(60);
	srv_start_or_bail(&v, "tcp://127.0.0.1:0", KEY, false);
	ret = net_open(v.addr, KEY, false, GONE_TIMEOUT_MS, &src, why,
		       sizeof(why));
	if (ret) {
		srv_stop(&v);
		ok(false, "server_gone_pc_source_read_fails_after_timeout");
		diag("pc_source_net = %d (%s)", ret, why);
		return;
	}
	/* One fetch while the server is there: this thread has a lane. */
	first = pc_source_read(src, data_page_from(1), 1, buf);
	srv_stop(&v);
	memset(buf, 0xa5, sizeof(buf));
	t0 = now_s();
	ret = pc_source_read(src, data_page_from(img_pages / 2), 1, buf);
	dt = now_s() - t0;
	pc_source_destroy(src);
	if (!ok(first == 0 && ret < 0 && dt >= GONE_TIMEOUT_MS / 1000.0 * 0.8 &&
			dt < GONE_TIMEOUT_MS / 1000.0 + 4,
		"server_gone_pc_source_read_fails_after_timeout"))
		diag("first read %d; after stop: %d (%s) after %.2f s, timeout %.1f s",
		     first, ret, strerror(-ret), dt, GONE_TIMEOUT_MS / 1000.0);
	else
		diag("failed with %d (%s) after %.2f s", ret, strerror(-ret), dt);
}

/* Child exit codes when it did not behave. */
enum {
	CHILD_OK = 0,
	CHILD_SETUP = 2,
	CHILD_SURVIVED = 3,	/* exit mode: read the page and ran on */
	CHILD_ZEROS = 4,	/* ... and the page was zeros */
	CHILD_WAIT_RESULT = 5,	/* wait mode: region did not fail */
	CHILD_TOUCH_RETURNED = 6, /* wait mode: the faulting thread ran on */
	CHILD_NO_REASON = 7,
	CHILD_TOO_SLOW = 8,
};

static const char *child_code(int code)
{
	switch (code) {
	case CHILD_OK: return "ok";
	case CHILD_SETUP: return "setup failed";
	case CHILD_SURVIVED: return "the faulting thread ran on";
	case CHILD_ZEROS: return "the faulting thread ran on and read zeros";
	case CHILD_WAIT_RESULT: return "pc_region_wait did not report the error";
	case CHILD_TOUCH_RETURNED: return "the faulting thread ran on";
	case CHILD_NO_REASON: return "pc_region_error is empty";
	case CHILD_TOO_SLOW: return "the failure took too long";
	}
	return "?";
}

struct toucher {
	const volatile uint8_t *page;
	_Atomic bool returned;
	_Atomic bool zeros;
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	bool zeros = true;

	for (uint64_t i = 0; i < SRC_PAGE; i++)
		zeros &= t->page[i] == 0;
	atomic_store(&t->zeros, zeros);
	atomic_store(&t->returned, true);
	return NULL;
}

static void child_server_gone(enum pc_mode mode)
{
	struct rlimit no_core = { 0, 0 };
	struct pc_region_opts ro = { .size = IMAGE_SIZE, .mode = mode };
	char why[256] = "";
	struct srv v;
	pc_source *src;
	pc_region *r;
	uint64_t p;

	setrlimit(RLIMIT_CORE, &no_core);
	alarm(30);
	if (srv_start(&v, "tcp://127.0.0.1:0", KEY, false, -1, why,
		      sizeof(why)) ||
	    net_open(v.addr, KEY, false, GONE_TIMEOUT_MS, &src, why,
		     sizeof(why)) ||
	    pc_region_create(&ro, src, &r, why, sizeof(why)) ||
	    pc_region_start(r)) {
		diag("child setup: %s", why);
		_exit(CHILD_SETUP);
	}
	p = data_page_from(img_pages / 3);
	srv_stop(&v);

	const volatile uint8_t *page = (uint8_t *)pc_region_addr(r) + p * SRC_PAGE;
	struct toucher t = { .page = page };
	pthread_t tid;
	double t0 = now_s(), dt;
	int ret;

	if (pthread_create(&tid, NULL, toucher_main, &t))
		_exit(CHILD_SETUP);
	ret = pc_region_wait(r, 10000);
	dt = now_s() - t0;
	diag("child: pc_region_wait = %d after %.2f s: %s", ret, dt,
	     pc_region_error(r));
	/* The source's own error is -ETIMEDOUT too; what tells it from the
	 * wait timing out is the time and the region's error. */
	if (ret == 0 || (ret == -ETIMEDOUT && dt >= 9.5))
		_exit(CHILD_WAIT_RESULT);
	if (!pc_region_error(r)[0])
		_exit(CHILD_NO_REASON);
	if (dt > GONE_TIMEOUT_MS / 1000.0 + 4)
		_exit(CHILD_TOO_SLOW);
	usleep(300 * 1000);	/* it must stay asleep, not read zeros */
	if (atomic_load(&t.returned))
		_exit(atomic_load(&t.zeros) ? CHILD_ZEROS : CHILD_TOUCH_RETURNED);
	/* The toucher sleeps in the kernel for good: leave it. */
	_exit(CHILD_OK);
}

static int run_child(enum pc_mode mode)
{
	pid_t pid = fork_or_bail();

	if (pid == 0)
		child_server_gone(mode);
	return wait_child(pid);
}

static void test_server_gone_children(void)
{
	double t0 = now_s(), dt;
	int status;

	tap_watchdog(90);
	status = run_child(PC_MODE_EXIT);
	dt = now_s() - t0;
	if (!ok(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK && dt < 15,
		"server_gone_exit_mode_region_fails_faulting_thread_parked"))
		diag("child %s %d (%s) after %.1f s",
		     WIFSIGNALED(status) ? "killed by signal" : "exited",
		     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
		     WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) :
					   child_code(WEXITSTATUS(status)),
		     dt);

	status = run_child(PC_MODE_WAIT);
	if (!ok(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK,
		"server_gone_wait_mode_region_fails_faulting_thread_never_runs_on"))
		diag("child %s %d (%s)",
		     WIFSIGNALED(status) ? "killed by signal" : "exited",
		     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
		     WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) :
					   child_code(WEXITSTATUS(status)));
}
#define GONE_CHECKS 3

/* ------------------------------------------------------------------ */
/* a small signal stack                                                */
/* ------------------------------------------------------------------ */

/* The header promises the SIGBUS handler a few KiB of stack: a network
 * fetch (lane, frames, tag and checksum) must fit the 8 KiB of the
 * classic SIGSTKSZ.  Sanitizers' frames are larger: they get 64 KiB. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SMALL_STACK (64u << 10)
#else
#define SMALL_STACK (8u << 10)
#endif

struct stack_toucher {
	const char *mem;
	uint64_t bad; /* pages that differ from the image */
};

static void *small_stack_main(void *arg)
{
	struct stack_toucher *t = arg;
	char want[SRC_PAGE];
	/* A guard page below the stack: an overflow is a SIGSEGV, not a
	 * write into something else. */
	char *m = mmap(NULL, SMALL_STACK + 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || mprotect(m, 4096, PROT_NONE))
		bail_out("small stack");
	stack_t ss = { .ss_sp = m + 4096, .ss_size = SMALL_STACK };
	if (sigaltstack(&ss, NULL))
		bail_out("sigaltstack");
	for (uint64_t p = 0; p < img_pages; p++)
		if (pc_source_read(ref, p, 1, want) ||
		    memcmp(t->mem + p * SRC_PAGE, want, SRC_PAGE))
			t->bad++;
	ss.ss_flags = SS_DISABLE;
	sigaltstack(&ss, NULL);
	munmap(m, SMALL_STACK + 4096);
	return NULL;
}

static void test_small_signal_stack(void)
{
	struct srv v;
	char why[256] = "";
	pc_source *src;
	pc_region *r;
	srv_start_or_bail(&v, "tcp://127.0.0.1:0", KEY, false);
	if (net_open(v.addr, KEY, false, 10000, &src, why, sizeof(why)))
		bail_out("net source: %s", why);
	/* A window, so that runs have zero pages inside (sub-runs). */
	struct pc_region_opts ro = { .size = IMAGE_SIZE, .mode = PC_MODE_EXIT,
				     .window = 64 };
	if (pc_region_create(&ro, src, &r, why, sizeof(why)) || pc_region_start(r))
		bail_out("region: %s", why);
	struct stack_toucher t = { .mem = pc_region_addr(r) };
	pthread_t tid;
	if (pthread_create(&tid, NULL, small_stack_main, &t))
		bail_out("pthread_create");
	pthread_join(tid, NULL);
	int ret = pc_region_wait(r, 10000);
	if (!ok(ret == 0 && t.bad == 0,
		"exit_mode_keyed_network_faults_fit_a_%u_kib_signal_stack",
		SMALL_STACK >> 10))
		diag("wait %d, %" PRIu64 " pages differ", ret, t.bad);
	pc_region_destroy(r);
	srv_stop(&v);
}
#define SMALL_STACK_CHECKS 1

/* A network source's identity is its server's, read from nothing: the
 * same as the file's, and no page is fetched for it. */
static void test_identity(void)
{
	struct srv v;
	char why[256] = "";
	pc_source *src;
	struct pc_image_id a, b;
	struct pc_net_stats ns;
	srv_start_or_bail(&v, "tcp://127.0.0.1:0", KEY, false);
	if (net_open(v.addr, KEY, false, 10000, &src, why, sizeof(why)))
		bail_out("net source: %s", why);
	int ra = pc_image_id_of(src, &a), rb = pc_image_id_of(ref, &b);
	pc_net_get_stats(src, &ns);
	if (!ok(ra == 0 && rb == 0 && a.size == b.size &&
		memcmp(a.digest, b.digest, sizeof(a.digest)) == 0 && ns.requests == 0,
		"network_source_identity_is_the_files_without_a_fetch"))
		diag("%d %d, sizes %" PRIu64 " %" PRIu64 ", %" PRIu64 " requests",
		     ra, rb, a.size, b.size, ns.requests);
	pc_source_destroy(src);
	srv_stop(&v);
}
#define IDENTITY_CHECKS 1

int main(void)
{
	char sock[300];

	plan(NOKEY_CHECKS + RESERVED_CHECKS + GONE_CHECKS + RESTORE_CHECKS + UID_CHECKS +
	     KEY_CHECKS + ABUSE_CHECKS + SMALL_STACK_CHECKS + IDENTITY_CHECKS);
	img_pages = IMAGE_SIZE / SRC_PAGE;
	img_zero_pages = image_setup(dir, image_path, sizeof(image_path),
				     IMAGE_SIZE, IMAGE_SEED, &ref);
	diag("image %s: %" PRIu64 " pages, %" PRIu64 " holes", image_path,
	     img_pages, img_zero_pages);

	test_no_key_tcp();
	test_reserved_options();
	test_stats_reserved_zero();
	test_server_gone_children();
	test_restores();
	test_unix_uid();
	test_keys();
	test_protocol_abuse();
	test_server_gone_read();
	test_small_signal_stack();
	test_identity();

	pc_source_destroy(ref);
	unlink(image_path);
	snprintf(sock, sizeof(sock), "%s/serve.sock", dir);
	unlink(sock);
	snprintf(sock, sizeof(sock), "%s/uid.sock", dir);
	unlink(sock);
	if (rmdir(dir))
		diag("rmdir %s: %s", dir, strerror(errno));
	return done();
}
