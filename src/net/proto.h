/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the wire protocol between `postcopy serve` and the network
 * source (docs/protocol.md is the prose version).
 *
 * Every frame is a 16-byte header followed by `len` payload bytes, all
 * integers little-endian.  Decoding validates everything a peer controls
 * (type, length bound, fields against the image) before anything is used,
 * so a malformed frame is an error for that connection and nothing else.
 */
#ifndef PC_PROTO_H
#define PC_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#define PROTO_MAGIC 0x70637079u /* "pcpy" */
#define PROTO_VERSION 2
#define PROTO_PAGE_SIZE 4096u
#define PROTO_MAX_RUN 512u /* pages in one request or data frame */
#define PROTO_HDR_LEN 16u
#define PROTO_NONCE_LEN 32u
#define PROTO_MAC_LEN 32u
/* Largest payload: a data frame's fixed part and 2 MiB of pages, and a
 * tag. */
#define PROTO_MAX_PAYLOAD (24u + PROTO_MAX_RUN * PROTO_PAGE_SIZE + 16u)
/* Largest frame a destination may send (it never sends page data). */
#define PROTO_MAX_CLIENT_PAYLOAD 256u

enum frame_type {
	FRAME_HELLO = 1,     /* c->s: version, role, session, nonce */
	FRAME_CHALLENGE = 2, /* s->c: image identity, nonce, server proof */
	FRAME_AUTH = 3,	     /* c->s: client proof */
	FRAME_READY = 4,     /* s->c: accepted; zero-page map follows */
	FRAME_REFUSE = 5,    /* s->c: code and reason; then close */
	FRAME_ZEROMAP = 6,   /* s->c: bitmap of all-zero pages (chunk) */
	FRAME_REQUEST = 7,   /* c->s: a run of pages, with priority */
	FRAME_DATA = 8,	     /* s->c: a run of pages and its checksum */
	FRAME_ZERO = 9,	     /* s->c: a run of zero pages, no payload */
	FRAME_PUSH_DONE = 10, /* s->c: every page has been pushed once */
	FRAME_BYE = 11,	     /* c->s: every page arrived; totals follow */
	FRAME_PUSH_ORDER = 12, /* c->s: runs the push should send first, in order */
};

enum conn_role {
	ROLE_DEMAND = 0, /* request/response lane */
	ROLE_PUSH = 1,	 /* server streams pages nobody asked for */
};

enum priority {
	PRIO_DEMAND = 0,
	PRIO_PREFETCH = 1,
};

enum refuse_code {
	REFUSE_VERSION = 1,
	REFUSE_AUTH = 2,
	REFUSE_BAD_FRAME = 3,
	REFUSE_RANGE = 4,
	REFUSE_BUSY = 5,
	REFUSE_STALE = 6, /* the image is not the one the session started on */
};

struct frame_hdr {
	uint32_t magic;
	uint16_t type;
	uint16_t flags;
	uint32_t len; /* payload bytes */
	uint32_t tag; /* request id, echoed in its response */
};

/* HELLO flags. */
#define HELLO_RESUME 1u /* not the session's first connection: no zero map */
#define HELLO_GMAC 2u	/* the destination can check AES-256-GCM tags */
#define HELLO_FLAGS (HELLO_RESUME | HELLO_GMAC)

struct hello {
	uint32_t version;
	uint32_t role;
	uint64_t session;
	uint8_t nonce[PROTO_NONCE_LEN];
	uint32_t flags;
};
#define PROTO_HELLO_LEN 56u

/*
 * What the destination must match before it takes a single page: the
 * size and a digest of the whole content.  The digest is XXH3-128 over
 * the table of every page's digest (proto_page_digest), so two images
 * that differ in any page differ here, and every run's checksum is made
 * from the same table: a run is bound to the image it came from.
 */
#define PROTO_ID_LEN 16u
struct image_id {
	uint64_t size;	     /* bytes */
	uint64_t page_count; /* 4 KiB pages */
	uint8_t digest[PROTO_ID_LEN];
};

/* Frame authentication a keyed connection uses (CHALLENGE.mac). */
enum mac_alg {
	MAC_NONE = 0,	  /* insecure */
	MAC_POLY1305 = 1, /* Poly1305, one-time key per frame */
	MAC_GMAC = 2,	  /* AES-256-GCM, where both ends have AES-NI */
};

struct challenge {
	uint32_t version;
	uint32_t page_size;
	struct image_id image;
	uint32_t mac; /* enum mac_alg */
	uint32_t flags; /* 0 */
	uint8_t nonce[PROTO_NONCE_LEN];
	uint8_t proof[PROTO_MAC_LEN]; /* all zero when the server is insecure */
};
#define PROTO_CHALLENGE_LEN 112u

struct auth {
	uint8_t proof[PROTO_MAC_LEN];
};

struct refuse {
	uint32_t code;
	char reason[200];
};

struct request {
	uint64_t first;
	uint32_t npages;
	uint32_t priority;
};

/* DATA: fixed part then npages * 4 KiB; ZERO: fixed part only. */
struct data_run {
	uint64_t first;
	uint32_t npages;
	uint32_t reserved;
	uint64_t checksum; /* proto_run_checksum() */
};
#define PROTO_DATA_FIXED 24u

struct zeromap {
	uint64_t first;	   /* first page this chunk of bits describes */
	uint32_t npages;   /* bits in this chunk */
	uint64_t checksum; /* proto_zeromap_checksum() of the bits */
};
#define PROTO_ZEROMAP_FIXED 24u
#define PROTO_ZEROMAP_MAX_PAGES (PROTO_MAX_RUN * PROTO_PAGE_SIZE * 8u)

struct bye {
	uint64_t pages_received;
};

/* PUSH_ORDER: 1..PROTO_ORDER_FRAME_RUNS runs of 12 bytes (first u64, pages
 * u32), so that a frame and its tag fit the client's payload bound.  A
 * session keeps at most PROTO_ORDER_MAX_RUNS of them. */
struct order_run {
	uint64_t first;
	uint32_t npages;
};
#define PROTO_ORDER_RUN_LEN 12u
#define PROTO_ORDER_FRAME_RUNS 20u
#define PROTO_ORDER_MAX_RUNS (1u << 20)

/* Header: encode into 16 bytes; decode and check magic, type, length
 * (bounded by @max_payload).  Returns 0 or -EPROTO / -EMSGSIZE. */
void proto_put_hdr(uint8_t *out, uint16_t type, uint32_t len, uint32_t tag);
/* Add @extra to an encoded header's length (a MAC tag appended). */
void proto_hdr_grow(uint8_t *hdr, uint32_t extra);
int proto_get_hdr(const uint8_t *in, uint32_t max_payload,
		  struct frame_hdr *h);

/* Fixed-layout payloads: encode returns the byte count; decode checks the
 * exact length and every field a peer controls; 0 or -EPROTO. */
size_t proto_put_hello(uint8_t *out, const struct hello *m);
/* -EPROTONOSUPPORT (with m->version set) for another version's HELLO. */
int proto_get_hello(const uint8_t *in, size_t len, struct hello *m);
size_t proto_put_challenge(uint8_t *out, const struct challenge *m);
int proto_get_challenge(const uint8_t *in, size_t len, struct challenge *m);
size_t proto_put_auth(uint8_t *out, const struct auth *m);
int proto_get_auth(const uint8_t *in, size_t len, struct auth *m);
size_t proto_put_refuse(uint8_t *out, const struct refuse *m);
int proto_get_refuse(const uint8_t *in, size_t len, struct refuse *m);
size_t proto_put_request(uint8_t *out, const struct request *m);
/* Also checks the run against an image of @page_count pages. */
int proto_get_request(const uint8_t *in, size_t len, uint64_t page_count,
		      struct request *m);
size_t proto_put_data_run(uint8_t *out, const struct data_run *m);
/* @len is the whole payload; DATA needs npages pages after the fixed
 * part, ZERO nothing.  Checks the run against @page_count. */
int proto_get_data_run(const uint8_t *in, size_t len, uint16_t type,
		       uint64_t page_count, struct data_run *m);
size_t proto_put_zeromap(uint8_t *out, const struct zeromap *m);
int proto_get_zeromap(const uint8_t *in, size_t len, uint64_t page_count,
		      struct zeromap *m);
size_t proto_put_bye(uint8_t *out, const struct bye *m);
int proto_get_bye(const uint8_t *in, size_t len, struct bye *m);
size_t proto_put_order(uint8_t *out, const struct order_run *runs, unsigned n);
/* Decodes the runs into @runs (PROTO_ORDER_FRAME_RUNS of room), *@n set;
 * -EPROTO for a bad length, -ERANGE for a run outside the image. */
int proto_get_order(const uint8_t *in, size_t len, uint64_t page_count,
		    struct order_run *runs, unsigned *n);

/* Digest of 4 KiB page number @page: XXH3-64 seeded with its number, so
 * a page in the wrong place does not match. */
uint64_t proto_page_digest(const void *page, uint64_t page_nr);
/* The image identity over a table of @count page digests. */
void proto_image_digest(const uint64_t *digests, uint64_t count, uint64_t size,
			uint8_t out[PROTO_ID_LEN]);
/*
 * Checksum of run [first, first + n): XXH3-64 over its pages' digests,
 * seeded from the image identity, so a run checks only against the image
 * it came from.  @digests are the n page digests; proto_run_checksum
 * computes them from @pages (NULL: n zero pages).
 */
uint64_t proto_run_checksum_of(const struct image_id *id, uint64_t first,
			       const uint64_t *digests, uint32_t n);
uint64_t proto_run_checksum(const struct image_id *id, uint64_t first,
			    const void *pages, uint32_t n);
/* Checksum of a zero map chunk's bits, seeded from the identity. */
uint64_t proto_zeromap_checksum(const struct image_id *id, uint64_t first,
				const uint8_t *bits, size_t len);

/*
 * Proofs for the mutual challenge-response (HMAC-SHA256, libsodium).  The
 * server proves it knows the key over both nonces and the image identity,
 * the client over both nonces and its session.  Different labels keep one
 * side's proof from being replayed as the other's.
 */
void proto_server_proof(const uint8_t *key, size_t key_len,
			const struct hello *h, const struct challenge *c,
			uint8_t out[PROTO_MAC_LEN]);
void proto_client_proof(const uint8_t *key, size_t key_len,
			const struct hello *h, const struct challenge *c,
			uint8_t out[PROTO_MAC_LEN]);
/* Constant-time comparison of two proofs. */
bool proto_proof_equal(const uint8_t *a, const uint8_t *b);

/*
 * Frame authentication on keyed connections.  After READY every frame, in
 * both directions, ends with a 16-byte tag (counted in the header's
 * length) over the header and the payload, bound to the frame's direction
 * and number in that direction, under the connection's frame key:
 * HMAC-SHA256 of the pre-shared key over both handshake messages, so it
 * differs on every connection.  The tag is Poly1305 under a one-time key
 * derived from that, or, where both ends have AES-NI, AES-256-GCM (twice
 * as fast here) with the header and the first 24 payload bytes as the
 * message and the rest as associated data.  A forged, altered, replayed,
 * reordered or dropped frame fails its tag.
 */
#define PROTO_TAG_LEN 16u
#define PROTO_MAC_PREFIX 24u /* payload bytes GMAC takes as its message */
#define DIR_TO_CLIENT 's'
#define DIR_TO_SERVER 'c'

struct frame_mac {
	bool on;
	enum mac_alg alg;
	uint8_t key[32];
	uint64_t sent, received; /* frames so far, per direction */
	crypto_aead_aes256gcm_state gcm;
};

/* The algorithm a server picks for a destination that said @hello_flags. */
enum mac_alg proto_mac_choose(uint32_t hello_flags);
/* HELLO_GMAC where this machine can do AES-256-GCM. */
uint32_t proto_mac_offer(void);

void proto_mac_init(struct frame_mac *m, const uint8_t *key, size_t key_len,
		    const struct hello *h, const struct challenge *c);

/* Tag of one frame: the header, then the payload in parts.  For GMAC the
 * payload after its first PROTO_MAC_PREFIX bytes must lie in one part
 * (every frame's fixed part is 24 bytes or the whole payload). */
struct mac_part {
	const void *p;
	size_t len;
};
void proto_mac_tag(const struct frame_mac *m, char dir, uint64_t counter,
		   const uint8_t hdr[PROTO_HDR_LEN],
		   const struct mac_part *parts, unsigned nparts,
		   uint8_t tag[PROTO_TAG_LEN]);
/* Constant-time check of a received tag. */
bool proto_mac_check(const struct frame_mac *m, char dir, uint64_t counter,
		     const uint8_t hdr[PROTO_HDR_LEN],
		     const struct mac_part *parts, unsigned nparts,
		     const uint8_t tag[PROTO_TAG_LEN]);

#endif
