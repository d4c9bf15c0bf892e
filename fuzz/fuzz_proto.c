/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proto.c - libFuzzer harness for the wire protocol (src/net/proto.c).
 *
 * The input is what one end of a connection receives, preceded by a few
 * bytes that say which end it is:
 *
 *   byte 0        mode: bit 0 clear = server side (receives client frames,
 *                 bounded by PROTO_MAX_CLIENT_PAYLOAD), set = client side
 *                 (receives server frames, bounded by PROTO_MAX_PAYLOAD)
 *   bytes 1..8    page_count of the image the receiver knows (LE u64); on
 *                 the client side a valid CHALLENGE replaces it, as the
 *                 client learns the image from it
 *   byte 9        key length K (0..255), then K key bytes (fewer if the
 *                 input ends) used for the HMAC proofs
 *   the rest      a byte stream of frames: 16-byte header + payload
 *
 * Frames are taken one after the other until the stream ends, a header is
 * rejected or a payload is truncated (a real receiver cannot resync after
 * either).  A payload its decoder rejects does not end the stream: the
 * framing is still intact, and going on lets one input reach many decoders.
 * Every header and every payload is copied into a buffer of exactly its
 * size first, so ASan sees any read past the end of either.
 *
 * Properties checked (abort() on violation, which is what libFuzzer and
 * the sanitizers report):
 *   - a header that decodes re-encodes to the same 16 bytes and fields;
 *   - every fixed-layout message that decodes re-encodes to the same bytes,
 *     and decoding that encoding gives the same struct (HELLO, CHALLENGE,
 *     AUTH, REQUEST, BYE, the fixed parts of DATA/ZERO and ZEROMAP); REFUSE
 *     round-trips after its reason was made printable;
 *   - what a decoder accepts respects what it promises to check: runs lie
 *     inside the image, lengths match, a DATA payload is never a ZERO one;
 *   - proofs are deterministic and the server's differs from the client's.
 *
 * No state outlives one call.  replay.c runs the same function over the
 * seed corpus in the normal (and the ASan+UBSan) meson build.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_proto: %s:%d: check failed: %s\n", \
				__FILE__, __LINE__, #cond);                \
			abort();                                           \
		}                                                          \
	} while (0)

/* What one call knows about its connection; lives on the stack. */
struct conn {
	bool client;	     /* receiving server frames */
	uint32_t max_payload;
	uint64_t page_count;
	const uint8_t *key;  /* never NULL, even when key_len is 0 */
	size_t key_len;
	struct hello hello;  /* last HELLO seen (or a default one) */
	struct challenge chal; /* last CHALLENGE seen (or a default one) */
};

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void check_hello_equal(const struct hello *a, const struct hello *b)
{
	CHECK(a->version == b->version);
	CHECK(a->role == b->role);
	CHECK(a->session == b->session);
	CHECK(memcmp(a->nonce, b->nonce, PROTO_NONCE_LEN) == 0);
	CHECK(a->flags == b->flags);
}

static void check_challenge_equal(const struct challenge *a,
				  const struct challenge *b)
{
	CHECK(a->version == b->version);
	CHECK(a->page_size == b->page_size);
	CHECK(a->image.size == b->image.size);
	CHECK(a->image.page_count == b->image.page_count);
	CHECK(memcmp(a->image.digest, b->image.digest, PROTO_ID_LEN) == 0);
	CHECK(a->mac == b->mac);
	CHECK(a->flags == b->flags);
	CHECK(memcmp(a->nonce, b->nonce, PROTO_NONCE_LEN) == 0);
	CHECK(memcmp(a->proof, b->proof, PROTO_MAC_LEN) == 0);
}

static bool run_ok(uint64_t first, uint32_t npages, uint64_t page_count)
{
	return npages >= 1 && npages <= PROTO_MAX_RUN && first < page_count &&
	       npages <= page_count - first;
}

/* Both proofs over the connection's hello and challenge: never crash,
 * same inputs give the same proof, the two labels give different ones. */
static void proofs(const struct conn *c, uint8_t server[PROTO_MAC_LEN],
		   uint8_t client[PROTO_MAC_LEN])
{
	uint8_t again[PROTO_MAC_LEN];

	proto_server_proof(c->key, c->key_len, &c->hello, &c->chal, server);
	proto_client_proof(c->key, c->key_len, &c->hello, &c->chal, client);
	CHECK(!proto_proof_equal(server, client));
	proto_server_proof(c->key, c->key_len, &c->hello, &c->chal, again);
	CHECK(proto_proof_equal(server, again));
	CHECK(memcmp(server, again, PROTO_MAC_LEN) == 0);
	proto_client_proof(c->key, c->key_len, &c->hello, &c->chal, again);
	CHECK(proto_proof_equal(client, again));
}

static void do_hello(struct conn *c, const uint8_t *p, size_t len)
{
	struct hello m, m2;
	uint8_t out[PROTO_HELLO_LEN];

	if (proto_get_hello(p, len, &m))
		return;
	CHECK(len == PROTO_HELLO_LEN);
	CHECK(m.role == ROLE_DEMAND || m.role == ROLE_PUSH);
	CHECK(!(m.flags & ~HELLO_FLAGS));
	CHECK(proto_put_hello(out, &m) == len);
	CHECK(memcmp(out, p, len) == 0);
	CHECK(proto_get_hello(out, sizeof(out), &m2) == 0);
	check_hello_equal(&m, &m2);
	c->hello = m;
}

static void do_challenge(struct conn *c, const uint8_t *p, size_t len)
{
	struct challenge m, m2;
	uint8_t out[PROTO_CHALLENGE_LEN], server[PROTO_MAC_LEN], client[PROTO_MAC_LEN];

	if (proto_get_challenge(p, len, &m))
		return;
	CHECK(len == PROTO_CHALLENGE_LEN);
	CHECK(m.mac <= MAC_GMAC);
	CHECK(m.page_size == PROTO_PAGE_SIZE);
	CHECK(m.image.page_count >= 1);
	CHECK(m.image.page_count <= UINT64_MAX / PROTO_PAGE_SIZE);
	CHECK(m.image.size == m.image.page_count * PROTO_PAGE_SIZE);
	CHECK(proto_put_challenge(out, &m) == len);
	CHECK(memcmp(out, p, len) == 0);
	CHECK(proto_get_challenge(out, sizeof(out), &m2) == 0);
	check_challenge_equal(&m, &m2);

	c->chal = m;
	if (c->client)
		c->page_count = m.image.page_count;
	/* What the client does with it: check the server's proof. */
	proofs(c, server, client);
	(void)proto_proof_equal(server, m.proof);
}

static void do_auth(struct conn *c, const uint8_t *p, size_t len)
{
	struct auth m, m2;
	uint8_t out[PROTO_MAC_LEN], server[PROTO_MAC_LEN],
		client[PROTO_MAC_LEN];

	if (proto_get_auth(p, len, &m))
		return;
	CHECK(len == PROTO_MAC_LEN);
	CHECK(proto_put_auth(out, &m) == len);
	CHECK(memcmp(out, p, len) == 0);
	CHECK(proto_get_auth(out, sizeof(out), &m2) == 0);
	CHECK(memcmp(m.proof, m2.proof, PROTO_MAC_LEN) == 0);
	/* What the server does with it: check the client's proof. */
	proofs(c, server, client);
	(void)proto_proof_equal(client, m.proof);
}

static bool printable(uint8_t ch)
{
	return ch >= 0x20 && ch <= 0x7e;
}

static void do_refuse(const uint8_t *p, size_t len)
{
	struct refuse m, m2;
	uint8_t out[4 + sizeof(m.reason)];

	if (proto_get_refuse(p, len, &m))
		return;
	CHECK(len >= 4 && len - 4 < sizeof(m.reason));
	CHECK(strlen(m.reason) == len - 4);
	/* The reason reaches a terminal: printable or replaced by '?'. */
	for (size_t i = 0; i < len - 4; i++) {
		uint8_t ch = (uint8_t)m.reason[i];
		CHECK(printable(ch));
		CHECK(ch == p[4 + i] || (ch == '?' && !printable(p[4 + i])));
	}
	size_t n = proto_put_refuse(out, &m);
	CHECK(n == len);
	CHECK(memcmp(out, p, 4) == 0);
	CHECK(memcmp(out + 4, m.reason, n - 4) == 0);
	CHECK(proto_get_refuse(out, n, &m2) == 0);
	CHECK(m.code == m2.code);
	CHECK(strcmp(m.reason, m2.reason) == 0);
}

static void do_request(const struct conn *c, const uint8_t *p, size_t len)
{
	struct request m, m2;
	uint8_t out[16];

	if (proto_get_request(p, len, c->page_count, &m))
		return;
	CHECK(len == 16);
	CHECK(m.priority == PRIO_DEMAND || m.priority == PRIO_PREFETCH);
	CHECK(run_ok(m.first, m.npages, c->page_count));
	CHECK(proto_put_request(out, &m) == len);
	CHECK(memcmp(out, p, len) == 0);
	CHECK(proto_get_request(out, sizeof(out), c->page_count, &m2) == 0);
	CHECK(m.first == m2.first && m.npages == m2.npages &&
	      m.priority == m2.priority);
}

static void do_data_run(const struct conn *c, uint16_t type, const uint8_t *p,
			size_t len)
{
	struct data_run m, m2, scratch;
	uint8_t out[PROTO_DATA_FIXED];
	uint16_t other = type == FRAME_DATA ? FRAME_ZERO : FRAME_DATA;

	if (proto_get_data_run(p, len, type, c->page_count, &m))
		return;
	CHECK(len >= PROTO_DATA_FIXED);
	CHECK(m.reserved == 0);
	CHECK(run_ok(m.first, m.npages, c->page_count));
	if (type == FRAME_DATA) {
		size_t pages = (size_t)m.npages * PROTO_PAGE_SIZE;
		CHECK(len == PROTO_DATA_FIXED + pages);
		/* What the client does before it installs the pages. */
		uint64_t sum = proto_run_checksum(&c->chal.image, m.first,
						  p + PROTO_DATA_FIXED, m.npages);
		CHECK(sum == proto_run_checksum(&c->chal.image, m.first,
						p + PROTO_DATA_FIXED, m.npages));
		(void)(sum == m.checksum);
	} else {
		CHECK(len == PROTO_DATA_FIXED);
	}
	/* A DATA payload is never a valid ZERO one and the other way round;
	 * no other type is a data run at all. */
	CHECK(proto_get_data_run(p, len, other, c->page_count, &scratch) != 0);
	CHECK(proto_get_data_run(p, len, FRAME_REQUEST, c->page_count,
				 &scratch) != 0);

	CHECK(proto_put_data_run(out, &m) == PROTO_DATA_FIXED);
	CHECK(memcmp(out, p, PROTO_DATA_FIXED) == 0);
	/* The fixed part alone is a complete ZERO payload. */
	CHECK(proto_get_data_run(out, sizeof(out), FRAME_ZERO, c->page_count,
				 &m2) == 0);
	CHECK(m.first == m2.first && m.npages == m2.npages &&
	      m2.reserved == 0 && m.checksum == m2.checksum);
}

static void do_zeromap(const struct conn *c, const uint8_t *p, size_t len)
{
	struct zeromap m;
	uint8_t out[PROTO_ZEROMAP_FIXED];

	if (proto_get_zeromap(p, len, c->page_count, &m))
		return;
	CHECK(m.npages >= 1 && m.npages <= PROTO_ZEROMAP_MAX_PAGES);
	CHECK(m.first % 8 == 0);
	CHECK(m.first < c->page_count && m.npages <= c->page_count - m.first);
	CHECK(len == PROTO_ZEROMAP_FIXED + ((size_t)m.npages + 7) / 8);
	CHECK(proto_put_zeromap(out, &m) == PROTO_ZEROMAP_FIXED);
	CHECK(memcmp(out, p, PROTO_ZEROMAP_FIXED) == 0);

	/* What the client does with it: walk the bits it was promised. */
	const uint8_t *bits = p + PROTO_ZEROMAP_FIXED;
	uint64_t zero = 0;
	for (uint32_t i = 0; i < m.npages; i++)
		zero += bits[i / 8] >> (i % 8) & 1;
	CHECK(zero <= m.npages);
}

static void do_bye(const uint8_t *p, size_t len)
{
	struct bye m, m2;
	uint8_t out[8];

	if (proto_get_bye(p, len, &m))
		return;
	CHECK(len == 8);
	CHECK(proto_put_bye(out, &m) == len);
	CHECK(memcmp(out, p, len) == 0);
	CHECK(proto_get_bye(out, sizeof(out), &m2) == 0);
	CHECK(m.pages_received == m2.pages_received);
}

static void do_order(const struct conn *c, const uint8_t *p, size_t len)
{
	struct order_run runs[PROTO_ORDER_FRAME_RUNS], runs2[PROTO_ORDER_FRAME_RUNS];
	uint8_t out[PROTO_ORDER_FRAME_RUNS * PROTO_ORDER_RUN_LEN];
	unsigned n, n2;

	if (proto_get_order(p, len, c->page_count, runs, &n))
		return;
	CHECK(n >= 1 && n <= PROTO_ORDER_FRAME_RUNS);
	CHECK(len == n * PROTO_ORDER_RUN_LEN);
	for (unsigned i = 0; i < n; i++)
		CHECK(runs[i].npages >= 1 && runs[i].npages <= PROTO_MAX_RUN &&
		      runs[i].first < c->page_count &&
		      runs[i].npages <= c->page_count - runs[i].first);
	CHECK(proto_put_order(out, runs, n) == len);
	CHECK(memcmp(out, p, len) == 0);
	CHECK(proto_get_order(out, len, c->page_count, runs2, &n2) == 0);
	CHECK(n2 == n);
	for (unsigned i = 0; i < n; i++)
		CHECK(runs2[i].first == runs[i].first &&
		      runs2[i].npages == runs[i].npages);
}

static void dispatch(struct conn *c, uint16_t type, const uint8_t *p,
		     size_t len)
{
	switch (type) {
	case FRAME_HELLO:
		do_hello(c, p, len);
		break;
	case FRAME_CHALLENGE:
		do_challenge(c, p, len);
		break;
	case FRAME_AUTH:
		do_auth(c, p, len);
		break;
	case FRAME_REFUSE:
		do_refuse(p, len);
		break;
	case FRAME_REQUEST:
		do_request(c, p, len);
		break;
	case FRAME_DATA:
	case FRAME_ZERO:
		do_data_run(c, type, p, len);
		break;
	case FRAME_ZEROMAP:
		do_zeromap(c, p, len);
		break;
	case FRAME_BYE:
		do_bye(p, len);
		break;
	case FRAME_PUSH_ORDER:
		do_order(c, p, len);
		break;
	default:
		/* READY, PUSH_DONE: no payload decoder in proto.c. */
		break;
	}
}

/* One header: 0 and @h filled, or the stream ends here. */
static int header(const struct conn *c, const uint8_t *in, struct frame_hdr *h)
{
	uint8_t hdr[PROTO_HDR_LEN], out[PROTO_HDR_LEN];
	struct frame_hdr h2;

	memcpy(hdr, in, sizeof(hdr));
	if (proto_get_hdr(hdr, c->max_payload, h))
		return -1;
	CHECK(h->magic == PROTO_MAGIC && h->flags == 0);
	CHECK(h->type >= FRAME_HELLO && h->type <= FRAME_PUSH_ORDER);
	CHECK(h->len <= c->max_payload);
	proto_put_hdr(out, h->type, h->len, h->tag);
	CHECK(memcmp(out, hdr, sizeof(out)) == 0);
	CHECK(proto_get_hdr(out, c->max_payload, &h2) == 0);
	CHECK(h2.type == h->type && h2.len == h->len && h2.tag == h->tag);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t no_key[1];
	struct conn c;

	if (size < 10)
		return 0;
	memset(&c, 0, sizeof(c));
	c.client = data[0] & 1;
	c.max_payload = c.client ? PROTO_MAX_PAYLOAD : PROTO_MAX_CLIENT_PAYLOAD;
	c.page_count = le64(data + 1);
	c.key_len = data[9];
	data += 10;
	size -= 10;
	if (c.key_len > size)
		c.key_len = size;
	c.key = c.key_len ? data : no_key;
	data += c.key_len;
	size -= c.key_len;
	/* Defaults for proofs computed before a HELLO or CHALLENGE arrived:
	 * what the client sent or what the server offers. */
	c.hello.version = PROTO_VERSION;
	c.chal.version = PROTO_VERSION;
	c.chal.page_size = PROTO_PAGE_SIZE;

	while (size >= PROTO_HDR_LEN) {
		struct frame_hdr h;

		if (header(&c, data, &h))
			break;
		data += PROTO_HDR_LEN;
		size -= PROTO_HDR_LEN;
		if (h.len > size)
			break; /* truncated: the peer went away mid-frame */

		/* Exactly the payload's size, so ASan catches overreads. */
		uint8_t *p = malloc(h.len ? h.len : 1);
		CHECK(p);
		memcpy(p, data, h.len);
		dispatch(&c, h.type, p, h.len);
		free(p);
		data += h.len;
		size -= h.len;
	}
	return 0;
}
