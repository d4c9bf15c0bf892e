/* SPDX-License-Identifier: MIT */
/*
 * test_frame_mac.c - frames after a keyed handshake carry a tag that
 * fails for any change: a flipped payload or header byte, a frame replayed
 * under another number, a frame sent in the other direction, a frame from
 * another connection (other nonces), or another key.  This is what stops
 * someone in the middle of a TCP connection from rewriting pages together
 * with their (unkeyed) xxHash.
 */
#include <sodium.h>
#include <string.h>

#include "postcopy.h"
#include "proto.h"
#include "tap.h"

static void handshake_pair(struct hello *h, struct challenge *c)
{
	memset(h, 0, sizeof(*h));
	memset(c, 0, sizeof(*c));
	h->version = c->version = PROTO_VERSION;
	h->session = 42;
	c->page_size = PROTO_PAGE_SIZE;
	c->image.page_count = 16;
	c->image.size = 16 * PROTO_PAGE_SIZE;
	randombytes_buf(h->nonce, sizeof(h->nonce));
	randombytes_buf(c->nonce, sizeof(c->nonce));
}

/* The same checks under each algorithm (GMAC only where AES-NI is). */
static void checks(enum mac_alg alg, const char *name)
{
	const uint8_t key[32] = "a pre-shared key of 32 bytes....";
	const uint8_t other_key[32] = "another pre-shared key, 32 bytes";
	struct hello h, h2;
	struct challenge c, c2;
	struct frame_mac server, client, stranger, wrong_key;
	uint8_t hdr[PROTO_HDR_LEN], payload[PROTO_DATA_FIXED + PROTO_PAGE_SIZE];
	uint8_t tag[PROTO_TAG_LEN];
	char t[128];

	if (alg == MAC_GMAC && !crypto_aead_aes256gcm_is_available()) {
		for (int i = 0; i < 9; i++)
			skip("this CPU has no AES-NI: GMAC is not offered here",
			     "%s_check_%d", name, i);
		return;
	}
	handshake_pair(&h, &c);
	handshake_pair(&h2, &c2);
	c.mac = c2.mac = alg;
	proto_mac_init(&server, key, sizeof(key), &h, &c);
	proto_mac_init(&client, key, sizeof(key), &h, &c);
	proto_mac_init(&stranger, key, sizeof(key), &h2, &c2);
	proto_mac_init(&wrong_key, other_key, sizeof(other_key), &h, &c);

	randombytes_buf(payload, sizeof(payload));
	proto_put_hdr(hdr, FRAME_DATA, sizeof(payload) + PROTO_TAG_LEN, 7);
	struct mac_part part = { payload, sizeof(payload) };
	proto_mac_tag(&server, DIR_TO_CLIENT, 3, hdr, &part, 1, tag);

#define CHECK(cond, what) (snprintf(t, sizeof(t), "%s_%s", name, what), ok(cond, "%s", t))
	CHECK(server.alg == alg, "frame_mac_uses_the_algorithm_the_challenge_names");
	CHECK(proto_mac_check(&client, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	      "frame_mac_same_connection_accepts_the_frame");
	payload[PROTO_DATA_FIXED + 100] ^= 1;
	CHECK(!proto_mac_check(&client, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	      "frame_mac_one_flipped_page_bit_is_refused");
	payload[PROTO_DATA_FIXED + 100] ^= 1;
	payload[3] ^= 1; /* the run's first page */
	hdr[12] ^= 1;	 /* the request tag */
	CHECK(!proto_mac_check(&client, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	      "frame_mac_altered_header_and_fixed_part_are_refused");
	payload[3] ^= 1;
	hdr[12] ^= 1;
	CHECK(!proto_mac_check(&client, DIR_TO_CLIENT, 4, hdr, &part, 1, tag),
	      "frame_mac_replay_under_another_frame_number_is_refused");
	CHECK(!proto_mac_check(&client, DIR_TO_SERVER, 3, hdr, &part, 1, tag),
	      "frame_mac_frame_reflected_in_the_other_direction_is_refused");
	CHECK(!proto_mac_check(&stranger, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	      "frame_mac_frame_from_another_connection_is_refused");
	CHECK(!proto_mac_check(&wrong_key, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	      "frame_mac_other_key_is_refused");
	/* The fixed part and the pages apart (as a destination reads them)
	 * tag the same as one piece (as a server writes them). */
	struct mac_part halves[2] = {
		{ payload, PROTO_DATA_FIXED },
		{ payload + PROTO_DATA_FIXED, sizeof(payload) - PROTO_DATA_FIXED }
	};
	CHECK(proto_mac_check(&client, DIR_TO_CLIENT, 3, hdr, halves, 2, tag),
	      "frame_mac_fixed_part_and_pages_apart_tag_like_one_piece");
#undef CHECK
}

int main(void)
{
	plan(18);
	if (sodium_init() < 0)
		bail_out("libsodium");
	checks(MAC_POLY1305, "poly1305");
	checks(MAC_GMAC, "gmac");
	return done();
}
