/* SPDX-License-Identifier: MIT */
/*
 * mkcorpus.c - writes the seed corpus of fuzz_proto (fuzz/corpus/) with the
 * real encoders, so the seeds stay valid when the protocol changes:
 *
 *   build/fuzz/fuzz_mkcorpus fuzz/corpus
 *
 * Each file is an input in fuzz_proto.c's format: mode byte (0 = server
 * side, 1 = client side), page_count (LE u64), key length and key, then a
 * stream of frames.  Built by meson, never run by the tests; the files it
 * writes are committed.  Names: s-/c- for the side, then what it holds;
 * bad-* and trunc-* are the malformed ones.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define SERVER 0
#define CLIENT 1
#define PAGES 1024u

static const char *outdir;
static const uint8_t key[] = "postcopy fuzz key";
#define KEY_LEN (sizeof(key) - 1)

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void die(const char *what)
{
	fprintf(stderr, "mkcorpus: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void raw(struct buf *b, const void *src, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			die("realloc");
	}
	memcpy(b->p + b->n, src, n);
	b->n += n;
}

static void start(struct buf *b, int mode, uint64_t page_count,
		  const uint8_t *k, size_t klen)
{
	uint8_t pre[10];

	b->n = 0;
	pre[0] = (uint8_t)mode;
	for (int i = 0; i < 8; i++)
		pre[1 + i] = (uint8_t)(page_count >> (8 * i));
	pre[9] = (uint8_t)klen;
	raw(b, pre, sizeof(pre));
	raw(b, k, klen);
}

static void frame(struct buf *b, uint16_t type, const void *payload,
		  size_t len, uint32_t tag)
{
	uint8_t h[PROTO_HDR_LEN];

	proto_put_hdr(h, type, (uint32_t)len, tag);
	raw(b, h, sizeof(h));
	raw(b, payload, len);
}

static void save(struct buf *b, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(b->p, 1, b->n, f) != b->n || fclose(f))
		die(path);
}

/* ---- messages ------------------------------------------------------------ */

/* What the harness assumes before a HELLO / CHALLENGE of the stream. */
static struct hello default_hello(void)
{
	struct hello h = { .version = PROTO_VERSION };
	return h;
}

static struct challenge default_challenge(void)
{
	struct challenge c = { .version = PROTO_VERSION,
			       .page_size = PROTO_PAGE_SIZE };
	return c;
}

static struct hello mk_hello(uint32_t role)
{
	struct hello h = { .version = PROTO_VERSION, .role = role,
			   .session = 0x1122334455667788ull };
	for (unsigned i = 0; i < PROTO_NONCE_LEN; i++)
		h.nonce[i] = (uint8_t)(0xa0 + i);
	return h;
}

static struct challenge mk_challenge(uint64_t pages, const uint8_t *k,
				     size_t klen)
{
	struct challenge c = { .version = PROTO_VERSION,
			       .page_size = PROTO_PAGE_SIZE };
	struct hello h = default_hello();

	c.image.page_count = pages;
	c.image.size = pages * PROTO_PAGE_SIZE;
	for (unsigned i = 0; i < PROTO_ID_LEN; i++)
		c.image.digest[i] = (uint8_t)(0x01 + 0x11 * i);
	c.mac = k && klen ? MAC_POLY1305 : MAC_NONE;
	for (unsigned i = 0; i < PROTO_NONCE_LEN; i++)
		c.nonce[i] = (uint8_t)(0x50 + i);
	proto_server_proof(k, klen, &h, &c, c.proof);
	return c;
}

static size_t enc_hello(uint8_t *out, uint32_t role)
{
	struct hello h = mk_hello(role);
	return proto_put_hello(out, &h);
}

static size_t enc_challenge(uint8_t *out, uint64_t pages, const uint8_t *k,
			    size_t klen)
{
	struct challenge c = mk_challenge(pages, k, klen);
	return proto_put_challenge(out, &c);
}

static size_t enc_auth(uint8_t *out, const struct hello *h)
{
	struct challenge c = default_challenge();
	struct auth a;
	proto_client_proof(key, KEY_LEN, h, &c, a.proof);
	return proto_put_auth(out, &a);
}

static size_t enc_refuse(uint8_t *out, uint32_t code, const char *reason)
{
	struct refuse r = { .code = code };
	snprintf(r.reason, sizeof(r.reason), "%s", reason);
	return proto_put_refuse(out, &r);
}

static size_t enc_order(uint8_t *out, uint64_t first, uint32_t npages,
			unsigned n)
{
	struct order_run runs[PROTO_ORDER_FRAME_RUNS];
	for (unsigned i = 0; i < n; i++)
		runs[i] = (struct order_run){ .first = first + 3 * i, .npages = npages };
	return proto_put_order(out, runs, n);
}

static size_t enc_request(uint8_t *out, uint64_t first, uint32_t npages,
			  uint32_t prio)
{
	struct request r = { .first = first, .npages = npages,
			     .priority = prio };
	return proto_put_request(out, &r);
}

/* DATA payload: fixed part, @npages patterned pages, valid checksum. */
static size_t enc_data(uint8_t *out, uint64_t first, uint32_t npages)
{
	struct data_run d = { .first = first, .npages = npages };
	uint8_t *pages = out + PROTO_DATA_FIXED;
	size_t n = (size_t)npages * PROTO_PAGE_SIZE;

	for (size_t i = 0; i < n; i++)
		pages[i] = (uint8_t)(i * 7 + first);
	struct challenge c = default_challenge();
	d.checksum = proto_run_checksum(&c.image, first, pages, npages);
	proto_put_data_run(out, &d);
	return PROTO_DATA_FIXED + n;
}

static size_t enc_zero(uint8_t *out, uint64_t first, uint32_t npages)
{
	struct data_run d = { .first = first, .npages = npages };
	return proto_put_data_run(out, &d);
}

static size_t enc_zeromap(uint8_t *out, uint64_t first, uint32_t npages)
{
	struct zeromap z = { .first = first, .npages = npages };
	struct challenge c = default_challenge();
	size_t n = PROTO_ZEROMAP_FIXED, bits = (npages + 7) / 8;
	for (uint32_t i = 0; i < bits; i++)
		out[n++] = (uint8_t)(i & 1 ? 0xf0 : 0x0f);
	z.checksum = proto_zeromap_checksum(&c.image, first, out + PROTO_ZEROMAP_FIXED, bits);
	proto_put_zeromap(out, &z);
	return n;
}

static size_t enc_bye(uint8_t *out, uint64_t pages)
{
	struct bye m = { .pages_received = pages };
	return proto_put_bye(out, &m);
}

static void put32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64le(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

int main(int argc, char **argv)
{
	static uint8_t pl[PROTO_DATA_FIXED + 4 * PROTO_PAGE_SIZE];
	struct buf b = { 0 };
	uint8_t long_key[100], h[PROTO_HDR_LEN];
	size_t n;

	if (argc != 2) {
		fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	for (unsigned i = 0; i < sizeof(long_key); i++)
		long_key[i] = (uint8_t)(i * 13);

	/* ---- one valid frame of every type ---- */
	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_HELLO, pl, enc_hello(pl, ROLE_DEMAND), 0);
	save(&b, "s-hello-demand");

	start(&b, SERVER, PAGES, key, 0);
	frame(&b, FRAME_HELLO, pl, enc_hello(pl, ROLE_PUSH), 0);
	save(&b, "s-hello-push-nokey");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_CHALLENGE, pl, enc_challenge(pl, PAGES, key, KEY_LEN), 0);
	save(&b, "c-challenge");

	start(&b, CLIENT, PAGES, long_key, sizeof(long_key));
	frame(&b, FRAME_CHALLENGE, pl,
	      enc_challenge(pl, 1ull << 30, long_key, sizeof(long_key)), 0);
	save(&b, "c-challenge-longkey");

	{
		struct hello dh = default_hello();
		start(&b, SERVER, PAGES, key, KEY_LEN);
		frame(&b, FRAME_AUTH, pl, enc_auth(pl, &dh), 0);
		save(&b, "s-auth");
	}

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_READY, pl, 0, 0);
	save(&b, "c-ready");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_REFUSE, pl, enc_refuse(pl, REFUSE_AUTH, "bad proof"), 0);
	save(&b, "c-refuse");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_ZEROMAP, pl, enc_zeromap(pl, 0, 64), 0);
	save(&b, "c-zeromap");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, 7, 1, PRIO_DEMAND), 1);
	save(&b, "s-request-demand");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_REQUEST, pl,
	      enc_request(pl, PAGES - 8, 8, PRIO_PREFETCH), 2);
	save(&b, "s-request-prefetch-last");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_DATA, pl, enc_data(pl, 7, 1), 1);
	save(&b, "c-data-1page");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_DATA, pl, enc_data(pl, PAGES - 3, 3), 2);
	save(&b, "c-data-3pages-last");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_ZERO, pl, enc_zero(pl, 10, PROTO_MAX_RUN), 3);
	save(&b, "c-zero-maxrun");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_PUSH_DONE, pl, 0, 0);
	save(&b, "c-push-done");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_BYE, pl, enc_bye(pl, PAGES), 0);
	save(&b, "s-bye");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_PUSH_ORDER, pl, enc_order(pl, 7, 2, 3), 0);
	frame(&b, FRAME_PUSH_ORDER, pl, enc_order(pl, 0, 1, PROTO_ORDER_FRAME_RUNS), 0);
	save(&b, "s-push-order");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_PUSH_ORDER, pl, enc_order(pl, PAGES - 1, 2, 1), 0);
	save(&b, "bad-push-order-past-end");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_PUSH_ORDER, pl, enc_order(pl, 1, 1, 1) + 1, 0);
	save(&b, "bad-push-order-len");

	/* ---- whole sessions ---- */
	{
		struct hello hh = mk_hello(ROLE_DEMAND);
		start(&b, SERVER, PAGES, key, KEY_LEN);
		frame(&b, FRAME_HELLO, pl, proto_put_hello(pl, &hh), 0);
		frame(&b, FRAME_AUTH, pl, enc_auth(pl, &hh), 0);
		frame(&b, FRAME_REQUEST, pl, enc_request(pl, 0, 1, 0), 1);
		frame(&b, FRAME_REQUEST, pl, enc_request(pl, 100, 64, 1), 2);
		frame(&b, FRAME_REQUEST, pl, enc_request(pl, 512, 512, 1), 3);
		frame(&b, FRAME_BYE, pl, enc_bye(pl, 577), 0);
		save(&b, "s-session");
	}

	start(&b, CLIENT, 0, key, KEY_LEN);
	frame(&b, FRAME_CHALLENGE, pl, enc_challenge(pl, 256, key, KEY_LEN), 0);
	frame(&b, FRAME_READY, pl, 0, 0);
	frame(&b, FRAME_ZEROMAP, pl, enc_zeromap(pl, 0, 256), 0);
	frame(&b, FRAME_DATA, pl, enc_data(pl, 3, 2), 1);
	frame(&b, FRAME_ZERO, pl, enc_zero(pl, 5, 251), 2);
	frame(&b, FRAME_PUSH_DONE, pl, 0, 0);
	save(&b, "c-session");

	/* ---- framing errors ---- */
	start(&b, CLIENT, PAGES, key, KEY_LEN);
	proto_put_hdr(h, FRAME_READY, 0, 0);
	raw(&b, h, 10);
	save(&b, "trunc-header");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	proto_put_hdr(h, FRAME_HELLO, PROTO_HELLO_LEN, 0);
	raw(&b, h, sizeof(h));
	raw(&b, pl, enc_hello(pl, ROLE_DEMAND) - 28);
	save(&b, "trunc-payload");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	n = enc_request(pl, 0, 1, 0);
	memset(pl + n, 0, PROTO_MAX_CLIENT_PAYLOAD + 1 - n);
	frame(&b, FRAME_REQUEST, pl, PROTO_MAX_CLIENT_PAYLOAD + 1, 0);
	save(&b, "bad-len-server");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	proto_put_hdr(h, FRAME_DATA, PROTO_MAX_PAYLOAD + 1, 0);
	raw(&b, h, sizeof(h));
	raw(&b, pl, enc_data(pl, 0, 1));
	save(&b, "bad-len-client");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	proto_put_hdr(h, FRAME_BYE, 8, 0);
	h[0] ^= 0x20; /* "Ypcp" */
	raw(&b, h, sizeof(h));
	raw(&b, pl, enc_bye(pl, 1));
	save(&b, "bad-magic");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	proto_put_hdr(h, FRAME_BYE, 8, 0);
	h[6] = 1;
	raw(&b, h, sizeof(h));
	raw(&b, pl, enc_bye(pl, 1));
	save(&b, "bad-flags");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, 0, pl, enc_bye(pl, 1), 0);
	save(&b, "bad-type-0");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_PUSH_ORDER + 1, pl, enc_bye(pl, 1), 0);
	save(&b, "bad-type-13");

	/* ---- payloads the decoders must refuse ---- */
	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, PAGES - 4, 8, 0), 1);
	save(&b, "bad-request-past-end");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, 0, 0, 0), 1);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, 0, PROTO_MAX_RUN + 1, 0), 2);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, PAGES, 1, 0), 3);
	save(&b, "bad-request-npages");

	/* An image of 2^64 - 1 pages: first + npages would wrap. */
	start(&b, SERVER, UINT64_MAX, key, KEY_LEN);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, UINT64_MAX - 3, 8, 0), 1);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, UINT64_MAX - 8, 8, 0), 2);
	frame(&b, FRAME_ZERO, pl, enc_zero(pl, UINT64_MAX - 1, 2), 3);
	save(&b, "bad-request-wrap");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, 0, 1, 2), 1);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, 0, 1, 0), 2);
	pl[15] = 0;
	frame(&b, FRAME_REQUEST, pl, 15, 3);
	save(&b, "bad-request-prio-len");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	n = enc_data(pl, 0, 1);
	put32le(pl + 8, 2); /* says 2 pages, carries 1 */
	frame(&b, FRAME_DATA, pl, n, 1);
	frame(&b, FRAME_DATA, pl, PROTO_DATA_FIXED - 1, 2); /* no fixed part */
	save(&b, "bad-data-npages");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	n = enc_data(pl, 0, 1);
	put32le(pl + 12, 1);
	frame(&b, FRAME_DATA, pl, n, 1);
	save(&b, "bad-data-reserved");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_ZERO, pl, enc_data(pl, 0, 1), 1);
	save(&b, "bad-zero-with-pages");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_ZEROMAP, pl, enc_zeromap(pl, 4, 8), 0);	    /* unaligned */
	n = enc_zeromap(pl, 0, 64);
	frame(&b, FRAME_ZEROMAP, pl, n - 1, 0);			    /* short */
	frame(&b, FRAME_ZEROMAP, pl, enc_zeromap(pl, PAGES - 8, 16), 0); /* past end */
	frame(&b, FRAME_ZEROMAP, pl, enc_zeromap(pl, 0, 0), 0);	    /* empty */
	n = enc_zeromap(pl, 0, 8);
	pl[12] = 1;
	frame(&b, FRAME_ZEROMAP, pl, n, 0);			    /* reserved */
	frame(&b, FRAME_ZEROMAP, pl, PROTO_ZEROMAP_FIXED - 1, 0);    /* no room */
	n = enc_zeromap(pl, 0, 8);
	put32le(pl + 8, PROTO_ZEROMAP_MAX_PAGES + 1);
	frame(&b, FRAME_ZEROMAP, pl, n, 0);			    /* too many */
	save(&b, "bad-zeromap");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	n = enc_challenge(pl, 16, key, KEY_LEN);
	put32le(pl + 4, 8192); /* page size */
	frame(&b, FRAME_CHALLENGE, pl, n, 0);
	n = enc_challenge(pl, 16, key, KEY_LEN);
	put64le(pl + 8, 16 * 4096 + 1); /* size vs page_count */
	frame(&b, FRAME_CHALLENGE, pl, n, 0);
	n = enc_challenge(pl, 16, key, KEY_LEN);
	put64le(pl + 16, (UINT64_MAX / 4096) + 1); /* size would wrap */
	put64le(pl + 8, ((UINT64_MAX / 4096) + 1) * 4096);
	frame(&b, FRAME_CHALLENGE, pl, n, 0);
	n = enc_challenge(pl, 16, key, KEY_LEN);
	put64le(pl + 16, 0);
	put64le(pl + 8, 0);
	frame(&b, FRAME_CHALLENGE, pl, n, 0);
	n = enc_challenge(pl, 16, key, KEY_LEN);
	frame(&b, FRAME_CHALLENGE, pl, n - 1, 0); /* short */
	save(&b, "bad-challenge");

	start(&b, SERVER, PAGES, key, KEY_LEN);
	frame(&b, FRAME_HELLO, pl, enc_hello(pl, 2), 0);
	frame(&b, FRAME_HELLO, pl, enc_hello(pl, ROLE_DEMAND) - 1, 0);
	frame(&b, FRAME_AUTH, pl, PROTO_MAC_LEN + 1, 0);
	frame(&b, FRAME_BYE, pl, 7, 0);
	save(&b, "bad-hello-auth-bye");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_REFUSE, pl, 3, 0);
	memset(pl, 'x', 204);
	frame(&b, FRAME_REFUSE, pl, 204, 0); /* reason of 200 bytes */
	n = enc_refuse(pl, REFUSE_BAD_FRAME, "tab\there, esc\x1b[2J, del\x7f, ");
	pl[n++] = 0xff;
	pl[n++] = 0x00;
	pl[n++] = 'z';
	frame(&b, FRAME_REFUSE, pl, n, 0);
	memset(pl + 4, 'y', 199);
	frame(&b, FRAME_REFUSE, pl, 203, 0); /* longest valid reason */
	save(&b, "bad-refuse");

	/* ---- streams ---- */
	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_ZERO, pl, enc_zero(pl, 0, 4), 1);
	frame(&b, FRAME_DATA, pl, enc_data(pl, 4, 1), 2);
	proto_put_hdr(h, FRAME_ZERO, PROTO_DATA_FIXED, 3);
	h[3] = 0;
	raw(&b, h, sizeof(h));
	raw(&b, pl, enc_zero(pl, 5, 1));
	frame(&b, FRAME_ZERO, pl, enc_zero(pl, 6, 1), 4); /* never reached */
	save(&b, "c-stream-bad-header-mid");

	start(&b, CLIENT, 0, key, KEY_LEN);
	frame(&b, FRAME_REQUEST, pl, enc_request(pl, 0, 1, 0), 1);
	frame(&b, FRAME_ZERO, pl, enc_zero(pl, 0, 1), 2);
	frame(&b, FRAME_ZEROMAP, pl, enc_zeromap(pl, 0, 8), 0);
	save(&b, "c-stream-empty-image");

	start(&b, CLIENT, PAGES, key, KEY_LEN);
	frame(&b, FRAME_CHALLENGE, pl, enc_challenge(pl, 16, key, KEY_LEN), 0);
	frame(&b, FRAME_DATA, pl, enc_data(pl, 8, 4), 1); /* fine */
	frame(&b, FRAME_ZERO, pl, enc_zero(pl, 12, 8), 2); /* past 16 */
	frame(&b, FRAME_ZERO, pl, enc_zero(pl, 12, 4), 3); /* fine */
	frame(&b, FRAME_ZEROMAP, pl, enc_zeromap(pl, 8, 9), 0); /* past 16 */
	frame(&b, FRAME_ZEROMAP, pl, enc_zeromap(pl, 8, 8), 0); /* fine */
	save(&b, "c-stream-challenge-shrinks-image");

	free(b.p);
	return 0;
}
