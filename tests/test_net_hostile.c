/* SPDX-License-Identifier: MIT */
/*
 * test_net_hostile - what a hostile network, a careless operator and a
 * crowd of strangers do to a restore, and that none of it ends in wrong
 * memory or a lock-out (issue #9's findings, one check each), and that
 * a run refused for its checksum never shows in the memfd (issue #10).
 *
 * A tampering TCP proxy runs on a thread of this program.  For the k-th
 * connection it accepts it follows plan[k]: forward; cut after some bytes
 * from the server; flip one bit of the server's stream; answer the HELLO
 * itself with a forged REFUSE or a forged CHALLENGE; or swallow everything
 * and answer nothing.  Every restore that is said to have succeeded is
 * compared byte for byte with the image.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "postcopy.h"
#include "proto.h"
#include "tap.h"
#include "net_helpers.h"
#include "raw_peer.h"

#define IMAGE_SIZE (16 * MIB)
#define IMAGE_SEED 97

static char dir[] = "/tmp/postcopy-test-net-hostile-XXXXXX";
static char image_path[256];
static pc_source *ref;
static uint64_t img_pages;
static const uint8_t KEY[32] = "hostile-test-key-0123456789abcde";

/* ------------------------------------------------------------------ */
/* the tampering proxy                                                 */
/* ------------------------------------------------------------------ */

enum act {
	FWD,
	CUT_AT,		 /* close once @at bytes came from the server */
	CUT_CLIENT_AT,	 /* close when the client sends past byte @at */
	FLIP_AT,	 /* flip the low bit of the server's byte @at */
	FORGE_REFUSE,	 /* answer the HELLO with REFUSE "stale" */
	FORGE_CHALLENGE, /* answer it with another image, unproven */
	BLACKHOLE,	 /* read everything, answer nothing */
};
struct step {
	enum act act;
	uint64_t at; /* byte of the server's stream */
};
#define MAX_PAIRS 32
#define MAX_PLAN 8

struct pair {
	int c, s; /* client side, server side (-1: none) */
	struct step step;
	uint64_t s2c;	/* bytes forwarded from the server */
	uint64_t c2s;	/* and from the client */
	size_t hello;	/* forged answers: bytes of HELLO read so far */
};

struct proxy {
	int lfd;
	char addr[64];
	struct sockaddr_in server;
	struct step plan[MAX_PLAN];
	unsigned accepted;
	struct pair pairs[MAX_PAIRS];
	pthread_t t;
	_Atomic bool stop;
};

static void pair_close(struct pair *pr)
{
	if (pr->c >= 0)
		close(pr->c);
	if (pr->s >= 0)
		close(pr->s);
	pr->c = pr->s = -1;
}

/* What a stranger on the path says instead of the server. */
static void forge_answer(struct pair *pr)
{
	uint8_t f[PROTO_HDR_LEN + PROTO_CHALLENGE_LEN];
	size_t n;
	if (pr->step.act == FORGE_REFUSE) {
		struct refuse rf = { .code = REFUSE_STALE };
		snprintf(rf.reason, sizeof(rf.reason), "forged: the image changed");
		n = proto_put_refuse(f + PROTO_HDR_LEN, &rf);
		proto_put_hdr(f, FRAME_REFUSE, (uint32_t)n, 0);
	} else { /* another image, and a proof made without the key */
		struct challenge c = { .version = PROTO_VERSION,
				       .page_size = PROTO_PAGE_SIZE,
				       .mac = MAC_POLY1305 };
		c.image.page_count = img_pages;
		c.image.size = img_pages * PROTO_PAGE_SIZE;
		memset(c.image.digest, 0x66, sizeof(c.image.digest));
		memset(c.proof, 0x77, sizeof(c.proof));
		n = proto_put_challenge(f + PROTO_HDR_LEN, &c);
		proto_put_hdr(f, FRAME_CHALLENGE, (uint32_t)n, 0);
	}
	raw_send(pr->c, f, PROTO_HDR_LEN + n);
}

static void proxy_accept(struct proxy *px)
{
	int fd = accept4(px->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct pair *pr = NULL;
	for (unsigned i = 0; i < MAX_PAIRS && !pr; i++)
		if (px->pairs[i].c < 0)
			pr = &px->pairs[i];
	if (!pr) {
		close(fd);
		return;
	}
	unsigned k = px->accepted++;
	*pr = (struct pair){ .c = fd, .s = -1,
			     .step = k < MAX_PLAN ? px->plan[k] : (struct step){ FWD, 0 } };
	if (pr->step.act <= FLIP_AT) { /* those that talk to the server */
		pr->s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (pr->s < 0 || connect(pr->s, (struct sockaddr *)&px->server,
					 sizeof(px->server)) < 0)
			pair_close(pr);
	}
}

/* Bytes from the client: to the server, or to the forger. */
static void from_client(struct pair *pr)
{
	uint8_t buf[64 << 10];
	ssize_t n = recv(pr->c, buf, sizeof(buf), 0);
	if (n <= 0)
		return pair_close(pr);
	if (pr->s >= 0) {
		pr->c2s += (uint64_t)n;
		if ((pr->step.act == CUT_CLIENT_AT && pr->c2s > pr->step.at) ||
		    !raw_send(pr->s, buf, (size_t)n))
			pair_close(pr);
		return;
	}
	if (pr->step.act == BLACKHOLE)
		return;
	pr->hello += (size_t)n;
	if (pr->hello >= PROTO_HDR_LEN + PROTO_HELLO_LEN) {
		forge_answer(pr);
		pair_close(pr);
	}
}

static void from_server(struct pair *pr)
{
	uint8_t buf[64 << 10];
	ssize_t n = recv(pr->s, buf, sizeof(buf), 0);
	if (n <= 0)
		return pair_close(pr);
	uint64_t at = pr->step.at;
	if (pr->step.act == FLIP_AT && at >= pr->s2c && at < pr->s2c + (uint64_t)n)
		buf[at - pr->s2c] ^= 0x01;
	if (pr->step.act == CUT_AT && pr->s2c + (uint64_t)n >= at) {
		raw_send(pr->c, buf, at - pr->s2c);
		return pair_close(pr);
	}
	pr->s2c += (uint64_t)n;
	if (!raw_send(pr->c, buf, (size_t)n))
		pair_close(pr);
}

static void *proxy_main(void *arg)
{
	struct proxy *px = arg;
	while (!atomic_load(&px->stop)) {
		struct pollfd pf[1 + 2 * MAX_PAIRS];
		struct pair *who[1 + 2 * MAX_PAIRS];
		bool server_side[1 + 2 * MAX_PAIRS];
		unsigned n = 0;
		pf[n++] = (struct pollfd){ .fd = px->lfd, .events = POLLIN };
		for (unsigned i = 0; i < MAX_PAIRS; i++) {
			struct pair *pr = &px->pairs[i];
			if (pr->c < 0)
				continue;
			who[n] = pr, server_side[n] = false;
			pf[n++] = (struct pollfd){ .fd = pr->c, .events = POLLIN };
			if (pr->s >= 0) {
				who[n] = pr, server_side[n] = true;
				pf[n++] = (struct pollfd){ .fd = pr->s, .events = POLLIN };
			}
		}
		if (poll(pf, n, 100) <= 0)
			continue;
		if (pf[0].revents)
			proxy_accept(px);
		for (unsigned i = 1; i < n; i++) {
			if (!pf[i].revents || who[i]->c < 0)
				continue;
			if (server_side[i] && who[i]->s >= 0)
				from_server(who[i]);
			else if (!server_side[i])
				from_client(who[i]);
		}
	}
	return NULL;
}

static void proxy_start(struct proxy *px, const char *server_addr,
			const struct step *plan, unsigned nplan)
{
	memset(px, 0, sizeof(*px));
	for (unsigned i = 0; i < MAX_PAIRS; i++)
		px->pairs[i].c = px->pairs[i].s = -1;
	for (unsigned i = 0; i < nplan && i < MAX_PLAN; i++)
		px->plan[i] = plan[i];
	px->server = loopback_sockaddr(server_addr);
	struct sockaddr_in in = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(in);
	px->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (px->lfd < 0 || bind(px->lfd, (struct sockaddr *)&in, len) ||
	    listen(px->lfd, 64) || getsockname(px->lfd, (struct sockaddr *)&in, &len))
		bail_out("proxy: %s", strerror(errno));
	snprintf(px->addr, sizeof(px->addr), "tcp://127.0.0.1:%u", ntohs(in.sin_port));
	if (pthread_create(&px->t, NULL, proxy_main, px))
		bail_out("pthread_create");
}

static void proxy_stop(struct proxy *px)
{
	atomic_store(&px->stop, true);
	pthread_join(px->t, NULL);
	for (unsigned i = 0; i < MAX_PAIRS; i++)
		pair_close(&px->pairs[i]);
	close(px->lfd);
}

/* ------------------------------------------------------------------ */
/* servers, sources, restores                                          */
/* ------------------------------------------------------------------ */

static int srv_start_at(struct srv *v, const char *image, const char *listen,
			bool keyed, bool once, unsigned session_ms,
			uint64_t queue_max)
{
	struct pc_server_opts o = {
		.image = image, .listen = listen, .allow_uid = -1,
		.key = keyed ? KEY : NULL, .key_len = keyed ? sizeof(KEY) : 0,
		.insecure = !keyed, .once = once,
		.session_timeout_ms = session_ms, .queue_max = queue_max,
	};
	char why[256] = "";
	int ret = srv_start_opts(v, &o, why, sizeof(why));
	if (ret)
		diag("server: %d (%s)", ret, why);
	return ret;
}

static int open_src(const char *addr, bool keyed, unsigned timeout_ms,
		    pc_source **src, char *why, size_t why_len)
{
	struct pc_net_opts o = { .address = addr, .timeout_ms = timeout_ms,
				 .key = keyed ? KEY : NULL,
				 .key_len = keyed ? sizeof(KEY) : 0,
				 .insecure = !keyed };
	return pc_source_net(&o, src, why, why_len);
}

/*
 * A whole restore from @src with the push, compared byte for byte with
 * the image.  Returns the number of pages that differ, or img_pages when
 * it did not complete; the source's stats in *st.
 */
static uint64_t restore_all(pc_source *src, enum pc_mode mode,
			    struct pc_net_stats *st)
{
	struct pc_region_opts ro = { .size = IMAGE_SIZE, .mode = mode };
	pc_region *r;
	char why[256] = "";
	if (pc_region_create(&ro, src, &r, why, sizeof(why)) || pc_region_start(r)) {
		diag("region: %s", why);
		return img_pages;
	}
	uint64_t bad = img_pages;
	if (pc_net_start_push(src, r) == 0 && pc_region_wait(r, 30000) == 0)
		bad = verify_mem(pc_region_addr(r), IMAGE_SIZE, ref, NULL, NULL);
	else
		diag("restore did not complete: %s", pc_region_error(r));
	pc_net_get_stats(src, st);
	pc_region_destroy(r);
	return bad;
}

/* ------------------------------------------------------------------ */
/* the checks                                                          */
/* ------------------------------------------------------------------ */

/* #8: a first connection cut early is retried like any other. */
static void test_first_connection_cut(void)
{
	static const uint64_t cuts[] = { 60, 130, 3000 };
	for (unsigned i = 0; i < 3; i++) {
		struct srv v;
		struct proxy px;
		pc_source *src;
		char why[256] = "";
		struct pc_net_stats st = { 0 };
		uint64_t bad = img_pages;
		if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", true, false, 0, 0))
			bail_out("server");
		struct step plan[] = { { CUT_AT, cuts[i] } };
		proxy_start(&px, v.addr, plan, 1);
		int ret = open_src(px.addr, true, 10000, &src, why, sizeof(why));
		if (ret == 0)
			bad = restore_all(src, PC_MODE_EXIT, &st);
		proxy_stop(&px);
		srv_stop(&v);
		if (!ok(ret == 0 && bad == 0,
			"first_connection_cut_after_%" PRIu64 "_bytes_is_retried_and_the_restore_is_byte_exact",
			cuts[i]))
			diag("pc_source_net = %d (%s), %" PRIu64 " pages differ", ret, why, bad);
	}
}

/* #8: a destination started before its server waits for it. */
struct late {
	char listen[128];
	struct srv v;
	int ret;
};

static void *start_late(void *arg)
{
	struct late *l = arg;
	sleep_ms(1500);
	l->ret = srv_start_at(&l->v, image_path, l->listen, false, false, 0, 0);
	return NULL;
}

static void test_source_before_server(void)
{
	struct late l = { .ret = -1 };
	pthread_t t;
	pc_source *src;
	char why[256] = "", addr[160];
	struct pc_net_stats st;
	uint64_t bad = img_pages;
	snprintf(l.listen, sizeof(l.listen), "unix:%s/late.sock", dir);
	snprintf(addr, sizeof(addr), "unix:%s/late.sock", dir);
	if (pthread_create(&t, NULL, start_late, &l))
		bail_out("pthread_create");
	double t0 = now_s();
	int ret = open_src(addr, false, 10000, &src, why, sizeof(why));
	double dt = now_s() - t0;
	pthread_join(t, NULL);
	if (ret == 0)
		bad = restore_all(src, PC_MODE_WAIT, &st);
	if (l.ret == 0)
		srv_stop(&l.v);
	if (!ok(ret == 0 && bad == 0 && dt >= 1.0,
		"destination_started_before_its_server_connects_when_it_comes_and_is_byte_exact"))
		diag("pc_source_net = %d (%s) after %.2f s, %" PRIu64 " pages differ", ret,
		     why, dt, bad);
}

/* #3: one flipped bit of the zero map, without a key, is caught. */
static void test_zeromap_flip(void)
{
	struct srv v;
	struct proxy px;
	pc_source *src;
	char why[256] = "";
	struct pc_net_stats st = { 0 };
	uint64_t bad = img_pages;
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", false, false, 0, 0))
		bail_out("server");
	/* CHALLENGE, READY, the ZEROMAP's header and fixed part: then bits. */
	uint64_t bits = PROTO_HDR_LEN + PROTO_CHALLENGE_LEN + PROTO_HDR_LEN +
			PROTO_HDR_LEN + PROTO_ZEROMAP_FIXED;
	struct step plan[] = { { FLIP_AT, bits + 21 } };
	proxy_start(&px, v.addr, plan, 1);
	int ret = open_src(px.addr, false, 10000, &src, why, sizeof(why));
	if (ret == 0)
		bad = restore_all(src, PC_MODE_EXIT, &st);
	proxy_stop(&px);
	srv_stop(&v);
	if (!ok(ret == 0 && bad == 0 && st.checksum_failures >= 1,
		"insecure_zero_map_with_a_flipped_bit_is_refused_by_its_checksum_and_fetched_again"))
		diag("pc_source_net = %d (%s), %" PRIu64 " pages differ, %" PRIu64
		     " checksum failures", ret, why, bad, st.checksum_failures);
}

/* #4: a stranger's REFUSE or CHALLENGE on a reconnect is a broken
 * connection, not the end of the migration. */
static void test_forged_refusals(void)
{
	struct srv v;
	struct proxy px;
	pc_source *src = NULL;
	char why[256] = "", *buf = malloc(64 * SRC_PAGE), *want = malloc(64 * SRC_PAGE);
	if (!buf || !want)
		bail_out("out of memory");
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", true, false, 0, 0))
		bail_out("server");
	/* lane 0; this thread's lane, cut in its first answer; then its
	 * reconnects meet a forged REFUSE and a forged CHALLENGE. */
	struct step plan[] = { { FWD, 0 }, { CUT_AT, 5000 }, { FORGE_REFUSE, 0 },
			       { FORGE_CHALLENGE, 0 } };
	proxy_start(&px, v.addr, plan, 4);
	int ret = open_src(px.addr, true, 10000, &src, why, sizeof(why));
	uint64_t bad = 0;
	for (uint64_t p = 0; ret == 0 && p < img_pages; p += 64) {
		ret = pc_source_read(src, p, 64, buf);
		if (ret == 0 && (pc_source_read(ref, p, 64, want) || memcmp(buf, want, 64 * SRC_PAGE)))
			bad++;
	}
	struct pc_net_stats st = { 0 };
	if (src) {
		pc_net_get_stats(src, &st);
		pc_source_destroy(src);
	}
	proxy_stop(&px);
	srv_stop(&v);
	if (!ok(ret == 0 && bad == 0 && st.reconnects >= 1 && px.accepted >= 5,
		"forged_refuse_and_challenge_on_a_keyed_reconnect_are_retried_and_every_page_matches"))
		diag("ret %d (%s), %" PRIu64 " chunks differ, %" PRIu64 " reconnects, %u connections",
		     ret, why, bad, st.reconnects, px.accepted);
	free(buf);
	free(want);
}

/* #10: a server that answers nothing fails a fetch after the timeout,
 * not after twice the timeout. */
static void test_blackhole_timeout(void)
{
	struct srv v;
	struct proxy px;
	pc_source *src;
	char why[256] = "", buf[SRC_PAGE];
	const unsigned timeout_ms = 2000;
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", true, false, 0, 0))
		bail_out("server");
	struct step plan[] = { { FWD, 0 }, { BLACKHOLE, 0 }, { BLACKHOLE, 0 },
			       { BLACKHOLE, 0 }, { BLACKHOLE, 0 }, { BLACKHOLE, 0 },
			       { BLACKHOLE, 0 }, { BLACKHOLE, 0 } };
	proxy_start(&px, v.addr, plan, 8);
	int ret = open_src(px.addr, true, timeout_ms, &src, why, sizeof(why));
	double dt = -1;
	if (ret == 0) {
		double t0 = now_s();
		ret = pc_source_read(src, 1, 1, buf);
		dt = now_s() - t0;
		pc_source_destroy(src);
	}
	proxy_stop(&px);
	srv_stop(&v);
	if (!ok(ret == -EHOSTDOWN && dt >= timeout_ms / 1e3 * 0.9 && dt < timeout_ms / 1e3 * 1.3,
		"a_server_that_answers_nothing_fails_a_fetch_after_the_timeout_not_twice_it"))
		diag("ret %d after %.2f s (timeout %.1f s)", ret, dt, timeout_ms / 1e3);
}

/* #1: the image written in place during a restore is refused, and no
 * page of the new content is ever installed, keyed and without a key:
 * the server pushes pages unchecked (without a key unread too), the
 * destination's checks refuse the changed ones, and the server's check of
 * the demand answer that asks for them again says the image changed. */
static void test_written_in_place(bool keyed)
{
	char copy[300], cmd[1024];
	struct srv v;
	pc_source *src;
	char why[256] = "";
	snprintf(copy, sizeof(copy), "%s/inplace.img", dir);
	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", image_path, copy);
	if (system(cmd))
		bail_out("cp");
	if (srv_start_at(&v, copy, "tcp://127.0.0.1:0", keyed, false, 0, 0))
		bail_out("server");
	int ret = open_src(v.addr, keyed, 5000, &src, why, sizeof(why));
	struct pc_region_opts ro = { .size = IMAGE_SIZE, .mode = PC_MODE_WAIT };
	pc_region *r = NULL;
	uint64_t wrong = 0, present = 0;
	int wait_ret = 0;
	if (ret == 0)
		ret = pc_region_create(&ro, src, &r, why, sizeof(why));
	if (ret == 0)
		ret = pc_region_start(r);
	if (ret == 0) {
		/* Some pages arrive first, then 200 of the rest change. */
		volatile char *m = pc_region_addr(r);
		for (uint64_t p = 0; p < 64; p++)
			(void)m[p * SRC_PAGE];
		int fd = open(copy, O_WRONLY | O_CLOEXEC);
		char junk[SRC_PAGE];
		memset(junk, 0x5c, sizeof(junk));
		for (uint64_t p = img_pages / 2; fd >= 0 && p < img_pages / 2 + 200; p++)
			if (pwrite(fd, junk, sizeof(junk), (off_t)(p * SRC_PAGE)) != (ssize_t)sizeof(junk))
				bail_out("pwrite");
		if (fd >= 0)
			close(fd);
		pc_net_start_push(src, r);
		wait_ret = pc_region_wait(r, 30000);
		/* Whatever arrived is the old image's. */
		char *want = malloc(SRC_PAGE);
		for (uint64_t p = 0; want && p < img_pages; p++) {
			if (!pc_region_page_present(r, p * SRC_PAGE))
				continue;
			present++;
			if (pc_source_read(ref, p, 1, want) ||
			    memcmp((const char *)pc_region_addr(r) + p * SRC_PAGE, want, SRC_PAGE))
				wrong++;
		}
		free(want);
		snprintf(why, sizeof(why), "%s", pc_region_error(r));
	}
	struct pc_server_stats sst;
	struct pc_net_stats nst = { 0 };
	pc_server_get_stats(v.s, &sst);
	if (r)
		pc_net_get_stats(src, &nst);
	if (r)
		pc_region_destroy(r);
	srv_stop(&v);
	/* The changed pages were pushed and refused here. */
	if (!ok(ret == 0 && wait_ret == -ESTALE && wrong == 0 && present >= 64 &&
			present < img_pages && sst.image_changed && nst.checksum_failures > 0,
		"%s_image_written_in_place_during_a_restore_is_refused_and_no_page_of_it_installed",
		keyed ? "keyed" : "insecure"))
		diag("ret %d, wait %d (%s), %" PRIu64 " present, %" PRIu64 " wrong, server says changed: %d, checksum failures %" PRIu64,
		     ret, wait_ret, why, present, wrong, sst.image_changed,
		     (uint64_t)nst.checksum_failures);
}

/* #2 and #11: a server restarted on another image with the same size,
 * time and first and last MiB is refused at once; one restarted on the
 * same image is taken back with a single reconnect and no zero map. */
static void test_restart(void)
{
	char other[300], cmd[2048], addr[300], buf[SRC_PAGE];
	struct srv v;
	pc_source *src = NULL;
	char why[256] = "";
	snprintf(other, sizeof(other), "%s/other.img", dir);
	snprintf(addr, sizeof(addr), "unix:%s/restart.sock", dir);
	uint64_t mid = img_pages / 2;
	snprintf(cmd, sizeof(cmd),
		 "cp --sparse=always '%s' '%s' && printf x | dd of='%s' bs=1 seek=%" PRIu64
		 " conv=notrunc status=none && touch -r '%s' '%s'",
		 image_path, other, other, mid * SRC_PAGE + 100, image_path, other);
	if (system(cmd))
		bail_out("making the other image");

	if (srv_start_at(&v, image_path, addr, false, false, 0, 0))
		bail_out("server");
	int ret = open_src(addr, false, 5000, &src, why, sizeof(why));
	int first = ret ? ret : pc_source_read(src, 3, 1, buf);
	srv_stop(&v);
	if (srv_start_at(&v, image_path, addr, false, false, 0, 0))
		bail_out("server");
	int again = src ? pc_source_read(src, 5, 1, buf) : -1;
	struct pc_net_stats st = { 0 };
	if (src)
		pc_net_get_stats(src, &st);
	char want[SRC_PAGE];
	bool same = again == 0 && pc_source_read(ref, 5, 1, want) == 0 &&
		    !memcmp(buf, want, SRC_PAGE);
	srv_stop(&v);
	if (!ok(first == 0 && same && st.reconnects == 1 && st.checksum_failures == 0,
		"server_restarted_on_the_same_image_is_taken_back_with_one_reconnect_and_no_zero_map"))
		diag("first %d, again %d, same %d, %" PRIu64 " reconnects, %" PRIu64 " bad checksums",
		     first, again, same, st.reconnects, st.checksum_failures);

	if (srv_start_at(&v, other, addr, false, false, 0, 0))
		bail_out("server");
	double t0 = now_s();
	int stale = src ? pc_source_read(src, mid, 1, buf) : -1;
	double dt = now_s() - t0;
	srv_stop(&v);
	if (src)
		pc_source_destroy(src);
	if (!ok(stale == -ESTALE && dt < 2,
		"server_restarted_on_another_image_of_the_same_size_and_time_is_refused_at_once"))
		diag("read %d after %.2f s", stale, dt);
}

/* #5: a thousand strangers that connect and say nothing do not keep a
 * real destination out. */
static void test_idle_crowd(void)
{
	enum { CROWD = 1100 };
	struct rlimit rl = { 4096, 4096 };
	if (setrlimit(RLIMIT_NOFILE, &rl)) {
		skip("cannot raise the descriptor limit", "idle_crowd");
		return;
	}
	struct srv v;
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", true, false, 0, 0))
		bail_out("server");
	struct sockaddr_in in = loopback_sockaddr(v.addr);
	static int crowd[CROWD];
	for (unsigned i = 0; i < CROWD; i++) {
		crowd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (crowd[i] >= 0 && connect(crowd[i], (struct sockaddr *)&in, sizeof(in)))
			close(crowd[i]), crowd[i] = -1;
	}
	sleep_ms(200);
	pc_source *src;
	char why[256] = "";
	struct pc_net_stats st;
	double t0 = now_s();
	uint64_t bad = img_pages;
	int ret = open_src(v.addr, true, 10000, &src, why, sizeof(why));
	if (ret == 0)
		bad = restore_all(src, PC_MODE_EXIT, &st);
	double dt = now_s() - t0;
	for (unsigned i = 0; i < CROWD; i++)
		if (crowd[i] >= 0)
			close(crowd[i]);
	srv_stop(&v);
	if (!ok(ret == 0 && bad == 0 && dt < 3 && v.st.evicted > 0,
		"a_crowd_of_1100_idle_connections_does_not_keep_a_real_restore_out"))
		diag("ret %d (%s), %" PRIu64 " pages differ, %.2f s, %" PRIu64 " evicted", ret,
		     why, bad, dt, v.st.evicted);
}

/* #6: sessions left behind by destinations that went away make room for
 * a new one. */
static void test_abandoned_sessions(void)
{
	struct srv v;
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", false, false, 60000, 0))
		bail_out("server");
	int made = 0;
	for (int i = 0; i < 70; i++) {
		pc_source *s;
		if (open_src(v.addr, false, 5000, &s, NULL, 0) == 0) {
			made++;
			pc_source_destroy(s); /* no BYE: its session stays */
		}
	}
	pc_source *src;
	char why[256] = "";
	struct pc_net_stats st;
	uint64_t bad = img_pages;
	double t0 = now_s();
	int ret = open_src(v.addr, false, 5000, &src, why, sizeof(why));
	if (ret == 0)
		bad = restore_all(src, PC_MODE_WAIT, &st);
	double dt = now_s() - t0;
	srv_stop(&v);
	if (!ok(made == 70 && ret == 0 && bad == 0 && dt < 3,
		"seventy_abandoned_sessions_do_not_lock_a_new_destination_out"))
		diag("%d made, ret %d (%s), %" PRIu64 " pages differ, %.2f s", made, ret, why,
		     bad, dt);
}

/* #7: peers that ask and never read are held to the server-wide cap. */
static void test_queue_cap(void)
{
	enum { PEERS = 12, ASKS = 8 };
	const uint64_t cap = 24 * MIB;
	struct srv v;
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", false, false, 0, cap))
		bail_out("server");
	struct sockaddr_in in = loopback_sockaddr(v.addr);
	int fds[PEERS];
	for (int i = 0; i < PEERS; i++) {
		uint8_t f[512];
		struct hello h = { .version = PROTO_VERSION, .role = ROLE_DEMAND,
				   .session = 1000 + (uint64_t)i };
		struct auth a = { { 0 } };
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int small = 64 << 10;
		setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		if (connect(fds[i], (struct sockaddr *)&in, sizeof(in)))
			bail_out("connect");
		size_t n = proto_put_hello(f + PROTO_HDR_LEN, &h);
		proto_put_hdr(f, FRAME_HELLO, (uint32_t)n, 0);
		raw_send(fds[i], f, PROTO_HDR_LEN + n);
		n = proto_put_auth(f + PROTO_HDR_LEN, &a);
		proto_put_hdr(f, FRAME_AUTH, (uint32_t)n, 0);
		raw_send(fds[i], f, PROTO_HDR_LEN + n);
		for (int k = 0; k < ASKS; k++) {
			struct request rq = { .first = (uint64_t)k * PROTO_MAX_RUN % img_pages,
					      .npages = PROTO_MAX_RUN };
			n = proto_put_request(f + PROTO_HDR_LEN, &rq);
			proto_put_hdr(f, FRAME_REQUEST, (uint32_t)n, (uint32_t)k + 1);
			raw_send(fds[i], f, PROTO_HDR_LEN + n);
		}
	}
	sleep_ms(1000);
	struct pc_server_stats st;
	srv_stop(&v);
	st = v.st;
	for (int i = 0; i < PEERS; i++)
		close(fds[i]);
	/* Without the cap: PEERS * ASKS * 2 MiB = 192 MiB queued. */
	if (!ok(st.queued_peak > 0 && st.queued_peak <= cap + 4 * MIB,
		"peers_that_ask_and_never_read_are_held_to_the_server_wide_queue_cap"))
		diag("peak %" PRIu64 " MiB queued, cap %" PRIu64 " MiB",
		     (uint64_t)(st.queued_peak / MIB), (uint64_t)(cap / MIB));
}

/* A raw insecure peer of session @session in @role: HELLO and AUTH sent
 * blind (the server ignores an insecure proof); CHALLENGE and READY are
 * the caller's to read.  Returns the socket. */
static int raw_peer(const struct sockaddr_in *in, uint32_t role, uint64_t session,
		    uint32_t flags)
{
	uint8_t f[512];
	struct hello h = { .version = PROTO_VERSION, .role = role,
			   .session = session, .flags = flags };
	struct auth a = { { 0 } };
	int fd = raw_connect_to(in);
	raw_send_frame(fd, FRAME_HELLO, 0, f, proto_put_hello(f, &h));
	raw_send_frame(fd, FRAME_AUTH, 0, f, proto_put_auth(f, &a));
	return fd;
}

static void send_order(int fd, const struct order_run *runs, unsigned n,
		       size_t len_override)
{
	uint8_t f[PROTO_HDR_LEN + PROTO_ORDER_FRAME_RUNS * PROTO_ORDER_RUN_LEN + 1];
	size_t len = proto_put_order(f + PROTO_HDR_LEN, runs, n);
	if (len_override)
		len = len_override;
	proto_put_hdr(f, FRAME_PUSH_ORDER, (uint32_t)len, 0);
	raw_send(fd, f, PROTO_HDR_LEN + len);
}

/* Page count of a non-zero run of @n pages at or after @from. */
static uint64_t data_run_at(uint64_t from, uint32_t n)
{
	for (uint64_t p = from; p + n <= img_pages; p++) {
		uint32_t k = 0;
		while (k < n && !pc_source_is_zero(ref, p + k))
			k++;
		if (k == n)
			return p;
		p += k;
	}
	bail_out("no data run of %u pages after %" PRIu64, n, from);
}

/*
 * A destination's PUSH_ORDER: the push sends those runs before its sweep,
 * in that order, each frame ending on a listed page; an order outside the
 * image or malformed is refused.
 */
static void test_push_order(void)
{
	struct srv v;
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", false, false, 0, 0))
		bail_out("server");
	struct sockaddr_in in = loopback_sockaddr(v.addr);
	uint64_t a = data_run_at(img_pages / 2, 1), b = data_run_at(img_pages / 4, 4),
		 c = data_run_at(img_pages - 200, 1);
	struct order_run want[] = { { a, 1 }, { b, 4 }, { c, 1 } };
	uint8_t p[PROTO_DATA_FIXED + 64];
	struct frame_hdr h;
	bool good = true;

	int dfd = raw_peer(&in, ROLE_DEMAND, 77, 0);
	send_order(dfd, want, 3, 0);
	/* A request answered means the order before it was taken. */
	struct request rq = { .first = data_run_at(8, 1), .npages = 1,
			      .priority = PRIO_PREFETCH };
	uint8_t f[64];
	size_t n = proto_put_request(f + PROTO_HDR_LEN, &rq);
	proto_put_hdr(f, FRAME_REQUEST, (uint32_t)n, 9);
	raw_send(dfd, f, PROTO_HDR_LEN + n);
	while ((good = raw_frame_head(dfd, &h, p, sizeof(p))) && h.tag != 9)
		;
	int pfd = raw_peer(&in, ROLE_PUSH, 77, HELLO_RESUME);
	unsigned seen = 0;
	while (good && seen < 3 && raw_frame_head(pfd, &h, p, sizeof(p))) {
		struct data_run run;
		if (h.type == FRAME_CHALLENGE || h.type == FRAME_READY)
			continue;
		good = (h.type == FRAME_DATA || h.type == FRAME_ZERO) &&
		       proto_get_data_run(p, h.len, h.type, img_pages, &run) == 0 &&
		       run.first == want[seen].first && run.npages == want[seen].npages;
		if (!good)
			diag("push frame %u: type %u, pages %" PRIu64 "+%u, wanted %" PRIu64 "+%u",
			     seen, h.type, run.first, run.npages, want[seen].first,
			     want[seen].npages);
		seen++;
	}
	close(pfd);
	close(dfd);

	/* Outside the image, and a length that is no number of runs. */
	struct order_run outside = { img_pages - 1, 2 };
	uint32_t codes[2] = { 0, 0 };
	for (int i = 0; i < 2; i++) {
		int fd = raw_peer(&in, ROLE_DEMAND, 78 + (uint64_t)i, 0);
		send_order(fd, &outside, 1, i ? PROTO_ORDER_RUN_LEN + 1 : 0);
		while (raw_frame_head(fd, &h, p, sizeof(p)))
			if (h.type == FRAME_REFUSE && h.len >= 4) {
				codes[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8;
				break;
			}
		close(fd);
	}
	srv_stop(&v);
	if (!ok(good && seen == 3 && v.st.pages_ordered == 6,
		"push_sends_a_replay_order_first_in_order"))
		diag("%u frames checked, %" PRIu64 " pages pushed as ordered",
		     seen, v.st.pages_ordered);
	if (!ok(codes[0] == REFUSE_RANGE && codes[1] == REFUSE_BAD_FRAME,
		"push_order_outside_the_image_or_malformed_is_refused"))
		diag("refusal codes %u, %u", codes[0], codes[1]);
}

/* #9: --once ends after a complete session whose lane 0 was cut, and
 * after a session that expired. */
static void test_once(void)
{
	struct srv v;
	struct proxy px;
	pc_source *src;
	char why[256] = "";
	struct pc_net_stats st;
	uint64_t bad = img_pages;
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", true, true, 0, 0))
		bail_out("server");
	/* Lane 0 is cut when it says more than HELLO and AUTH: its BYE. */
	struct step plan[] = { { CUT_CLIENT_AT, 2 * PROTO_HDR_LEN + PROTO_HELLO_LEN + PROTO_MAC_LEN } };
	proxy_start(&px, v.addr, plan, 1);
	int ret = open_src(px.addr, true, 10000, &src, why, sizeof(why));
	if (ret == 0)
		bad = restore_all(src, PC_MODE_EXIT, &st); /* the region owns src */
	/* pc_server_run() returns by itself when --once is satisfied. */
	double t0 = now_s();
	bool ended = false;
	while (!ended && now_s() - t0 < 5) {
		sleep_ms(50);
		ended = pthread_tryjoin_np(v.t, NULL) == 0;
	}
	if (ended)
		v.running = false;
	proxy_stop(&px);
	srv_stop(&v);
	if (!ok(ret == 0 && bad == 0 && ended && v.st.sessions_done == 1,
		"serve_once_ends_after_a_restore_whose_first_lane_was_cut"))
		diag("ret %d (%s), %" PRIu64 " differ, ended %d, %" PRIu64 " done", ret, why, bad,
		     ended, v.st.sessions_done);

	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", true, true, 1000, 0))
		bail_out("server");
	ret = open_src(v.addr, true, 10000, &src, why, sizeof(why));
	if (ret == 0)
		pc_source_destroy(src); /* gone without a word */
	t0 = now_s();
	ended = false;
	while (!ended && now_s() - t0 < 6) {
		sleep_ms(50);
		ended = pthread_tryjoin_np(v.t, NULL) == 0;
	}
	if (ended)
		v.running = false;
	srv_stop(&v);
	if (!ok(ret == 0 && ended, "serve_once_ends_when_its_session_expires"))
		diag("ret %d (%s), ended %d", ret, why, ended);
}

/*
 * Issue #10, 4: bytes that did not pass their checksum never reach the
 * page cache, where every process mapping the memfd would see them, also
 * where installs write straight into it (shmem with prealloc, hugetlb).
 * A watcher reads the whole memfd again and again (pc_region_fd(), as a
 * vhost-user backend would): every byte must be a hole's zero or the
 * image's.  The proxy flips a bit 1 MiB into the second connection (one
 * of the two push connections; on hugetlb, where pc_net_start_push()
 * starts the filler instead, the filler's lane), and blackholes the third
 * for a second (the other push connection, or the filler lane's
 * reconnect): the refused run's pages stay missing at least that long
 * (they come by fill once the whole push has ended), so bytes of it
 * written anyway would sit in the memfd, in the watcher's sight, until
 * fetched again.  (A flipped 0x01 reads as a hole's 0: one byte in 256 of
 * the pattern; the flip is deterministic, and caught here.)
 */
struct watch {
	int fd;
	const unsigned char *want; /* the image */
	_Atomic bool stop;
	uint64_t scans, bad_bytes, first_bad;
	int err;
};

static void *watch_main(void *arg)
{
	struct watch *w = arg;
	unsigned char *buf = malloc(IMAGE_SIZE);
	if (!buf)
		w->err = -ENOMEM;
	while (buf && !atomic_load(&w->stop)) {
		ssize_t n = pread(w->fd, buf, IMAGE_SIZE, 0);
		if (n != IMAGE_SIZE) {
			w->err = n < 0 ? -errno : -EIO;
			break;
		}
		static const unsigned char hole[SRC_PAGE];
		for (size_t p = 0; p < IMAGE_SIZE; p += SRC_PAGE) {
			if (!memcmp(buf + p, w->want + p, SRC_PAGE) ||
			    !memcmp(buf + p, hole, SRC_PAGE))
				continue; /* (a byte at a time only for the rest) */
			for (size_t i = p; i < p + SRC_PAGE; i++)
				if (buf[i] && buf[i] != w->want[i] && !w->bad_bytes++)
					w->first_bad = i;
		}
		w->scans++;
	}
	free(buf);
	return NULL;
}

static void test_flip_never_in_page_cache(enum pc_backend b)
{
	bool huge = b == PC_BACKEND_HUGETLB;
	const char *name = huge ?
		"hugetlb_push_is_a_fill_and_a_flipped_answer_never_reaches_the_page_cache" :
		"shmem_prealloc_a_flipped_pushed_data_frame_never_reaches_the_page_cache";
	struct hugepages hp = { 0 };
	if (huge && !hugepages_reserve(&hp, IMAGE_SIZE / (2 * MIB))) {
		skip(hp.why, "%s", name);
		hugepages_restore(&hp);
		return;
	}
	unsigned char *want = malloc(IMAGE_SIZE), *final = malloc(IMAGE_SIZE);
	if (!want || !final || pc_source_read(ref, 0, img_pages, want))
		bail_out("reading the image");
	struct srv v;
	struct proxy px;
	pc_source *src;
	pc_region *r = NULL;
	char why[256] = "";
	if (srv_start_at(&v, image_path, "tcp://127.0.0.1:0", false, false, 0, 0))
		bail_out("server");
	struct step plan[] = { { FWD, 0 }, { FLIP_AT, MIB }, { BLACKHOLE, 0 } };
	proxy_start(&px, v.addr, plan, 3);
	int ret = open_src(px.addr, false, 10000, &src, why, sizeof(why));
	struct pc_region_opts ro = { .size = IMAGE_SIZE, .backend = b,
				     .prealloc = !huge };
	if (ret == 0)
		ret = pc_region_create(&ro, src, &r, why, sizeof(why));
	if (ret == 0 && (ret = pc_region_start(r)))
		snprintf(why, sizeof(why), "%s", pc_region_error(r));
	struct watch w = { .fd = r ? pc_region_fd(r) : -1, .want = want };
	pthread_t t;
	int wait_ret = -1;
	uint64_t bad = img_pages, final_bad = img_pages;
	struct pc_net_stats st = { 0 };
	if (ret == 0) {
		if (pthread_create(&t, NULL, watch_main, &w))
			bail_out("pthread_create");
		ret = pc_net_start_push(src, r);
		wait_ret = ret ? ret : pc_region_wait(r, 30000);
		atomic_store(&w.stop, true);
		pthread_join(t, NULL);
		if (wait_ret)
			snprintf(why, sizeof(why), "%s", pc_region_error(r));
		bad = verify_mem(pc_region_addr(r), IMAGE_SIZE, ref, NULL, NULL);
		final_bad = pread(w.fd, final, IMAGE_SIZE, 0) == IMAGE_SIZE ?
				    (uint64_t)(memcmp(final, want, IMAGE_SIZE) != 0) : 1;
		pc_net_get_stats(src, &st);
	}
	if (r)
		pc_region_destroy(r);
	proxy_stop(&px);
	srv_stop(&v);
	hugepages_restore(&hp);
	bool pushed = huge ? st.pages_pushed == 0 : st.pages_pushed > 0;
	if (!ok(ret == 0 && wait_ret == 0 && !w.err && w.scans >= 2 && !w.bad_bytes &&
			bad == 0 && final_bad == 0 && st.checksum_failures >= 1 && pushed,
		"%s", name))
		diag("ret %d, wait %d (%s); watcher: %" PRIu64 " scans, error %d, %" PRIu64
		     " bytes neither zero nor the image's (first at %" PRIu64 "); %" PRIu64
		     " pages differ, memfd at the end %s; %" PRIu64 " checksum failures, %"
		     PRIu64 " pages pushed", ret, wait_ret, why, w.scans, w.err, w.bad_bytes,
		     w.first_bad, bad, final_bad ? "differs" : "matches",
		     st.checksum_failures, st.pages_pushed);
	else
		diag("%s: %" PRIu64 " scans of the memfd, %" PRIu64 " checksum failures, %"
		     PRIu64 " pages pushed, %" PRIu64 " reconnects", name, w.scans,
		     st.checksum_failures, st.pages_pushed, st.reconnects);
	free(want);
	free(final);
}

/* #13: a FIFO given as the image is refused, not waited on. */
static void test_fifo_image(void)
{
	char fifo[300], why[256] = "";
	snprintf(fifo, sizeof(fifo), "%s/fifo.img", dir);
	if (mkfifo(fifo, 0600))
		bail_out("mkfifo: %s", strerror(errno));
	struct pc_server_opts o = { .image = fifo, .listen = "tcp://127.0.0.1:0",
				    .insecure = true, .allow_uid = -1 };
	pc_server *s = NULL;
	double t0 = now_s();
	int ret = pc_server_create(&o, &s, why, sizeof(why));
	if (ret == 0)
		pc_server_destroy(s);
	if (!ok(ret == -EINVAL && now_s() - t0 < 2 && strstr(why, "regular file"),
		"server_given_a_fifo_as_its_image_refuses_it_at_once"))
		diag("pc_server_create = %d (%s)", ret, why);
}

int main(void)
{
	plan(21);
	tap_watchdog(240);
	signal(SIGPIPE, SIG_IGN);
	image_setup(dir, image_path, sizeof(image_path), IMAGE_SIZE, IMAGE_SEED, &ref);
	img_pages = IMAGE_SIZE / SRC_PAGE;

	test_first_connection_cut();
	test_source_before_server();
	test_zeromap_flip();
	test_forged_refusals();
	test_blackhole_timeout();
	test_written_in_place(true);
	test_written_in_place(false);
	test_restart();
	test_idle_crowd();
	test_abandoned_sessions();
	test_queue_cap();
	test_push_order();
	test_once();
	test_fifo_image();
	test_flip_never_in_page_cache(PC_BACKEND_SHMEM);
	test_flip_never_in_page_cache(PC_BACKEND_HUGETLB);

	pc_source_destroy(ref);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd)) {
		/* a leftover temporary directory */
	}
	return done();
}
