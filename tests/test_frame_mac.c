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

int main(void)
{
	const uint8_t key[32] = "a pre-shared key of 32 bytes....";
	const uint8_t other_key[32] = "another pre-shared key, 32 bytes";
	struct hello h, h2;
	struct challenge c, c2;
	struct frame_mac server, client, stranger, wrong_key;
	uint8_t hdr[PROTO_HDR_LEN], payload[PROTO_DATA_FIXED + PROTO_PAGE_SIZE];
	uint8_t tag[PROTO_TAG_LEN];

	plan(8);
	if (sodium_init() < 0)
		bail_out("libsodium");
	handshake_pair(&h, &c);
	handshake_pair(&h2, &c2);
	proto_mac_init(&server, key, sizeof(key), &h, &c);
	proto_mac_init(&client, key, sizeof(key), &h, &c);
	proto_mac_init(&stranger, key, sizeof(key), &h2, &c2);
	proto_mac_init(&wrong_key, other_key, sizeof(other_key), &h, &c);

	randombytes_buf(payload, sizeof(payload));
	proto_put_hdr(hdr, FRAME_DATA, sizeof(payload) + PROTO_TAG_LEN, 7);
	struct mac_part part = { payload, sizeof(payload) };
	proto_mac_tag(&server, DIR_TO_CLIENT, 3, hdr, &part, 1, tag);

	ok(proto_mac_check(&client, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	   "frame_mac_same_connection_accepts_the_frame");
	payload[PROTO_DATA_FIXED + 100] ^= 1;
	ok(!proto_mac_check(&client, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	   "frame_mac_one_flipped_page_bit_is_refused");
	payload[PROTO_DATA_FIXED + 100] ^= 1;
	hdr[12] ^= 1; /* the request tag */
	ok(!proto_mac_check(&client, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	   "frame_mac_altered_header_is_refused");
	hdr[12] ^= 1;
	ok(!proto_mac_check(&client, DIR_TO_CLIENT, 4, hdr, &part, 1, tag),
	   "frame_mac_replay_under_another_frame_number_is_refused");
	ok(!proto_mac_check(&client, DIR_TO_SERVER, 3, hdr, &part, 1, tag),
	   "frame_mac_frame_reflected_in_the_other_direction_is_refused");
	ok(!proto_mac_check(&stranger, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	   "frame_mac_frame_from_another_connection_is_refused");
	ok(!proto_mac_check(&wrong_key, DIR_TO_CLIENT, 3, hdr, &part, 1, tag),
	   "frame_mac_other_key_is_refused");
	/* The same frame split differently tags the same. */
	struct mac_part halves[2] = { { payload, 100 },
				      { payload + 100, sizeof(payload) - 100 } };
	ok(proto_mac_check(&client, DIR_TO_CLIENT, 3, hdr, halves, 2, tag),
	   "frame_mac_payload_in_parts_tags_like_one_piece");
	return done();
}
