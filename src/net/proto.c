/* SPDX-License-Identifier: MIT */
/*
 * proto.c - encoding and validation of the wire protocol's frames.  No
 * I/O here: bytes in, structs out, and nothing a peer sends is trusted
 * before it was checked.  Checksums are xxHash (libxxhash), proofs are
 * HMAC-SHA256 (libsodium): nothing home-made.
 */
#include <errno.h>
#include <sodium.h>
#include <string.h>
/* XXH3_state_t on the stack: the checksums allocate nothing. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "le.h"
#include "proto.h"

void proto_put_hdr(uint8_t *out, uint16_t type, uint32_t len, uint32_t tag)
{
	put32(out, PROTO_MAGIC);
	put16(out + 4, type);
	put16(out + 6, 0);
	put32(out + 8, len);
	put32(out + 12, tag);
}

void proto_hdr_grow(uint8_t *hdr, uint32_t extra)
{
	put32(hdr + 8, get32(hdr + 8) + extra);
}

int proto_get_hdr(const uint8_t *in, uint32_t max_payload,
		  struct frame_hdr *h)
{
	h->magic = get32(in);
	h->type = get16(in + 4);
	h->flags = get16(in + 6);
	h->len = get32(in + 8);
	h->tag = get32(in + 12);
	if (h->magic != PROTO_MAGIC || h->flags != 0 ||
	    h->type < FRAME_HELLO || h->type > FRAME_PUSH_ORDER)
		return -EPROTO;
	if (h->len > max_payload)
		return -EMSGSIZE;
	return 0;
}

/* HELLO: version 4, role 4, session 8, nonce 32, flags 4, 0 4 = 56 */
size_t proto_put_hello(uint8_t *out, const struct hello *m)
{
	put32(out, m->version);
	put32(out + 4, m->role);
	put64(out + 8, m->session);
	memcpy(out + 16, m->nonce, PROTO_NONCE_LEN);
	put32(out + 48, m->flags);
	put32(out + 52, 0);
	return PROTO_HELLO_LEN;
}

int proto_get_hello(const uint8_t *in, size_t len, struct hello *m)
{
	/* The version comes first in every version's HELLO, so that a
	 * mismatch can be named whatever the rest looks like. */
	if (len < 4)
		return -EPROTO;
	m->version = get32(in);
	if (m->version != PROTO_VERSION)
		return -EPROTONOSUPPORT;
	if (len != PROTO_HELLO_LEN)
		return -EPROTO;
	m->role = get32(in + 4);
	m->session = get64(in + 8);
	memcpy(m->nonce, in + 16, PROTO_NONCE_LEN);
	m->flags = get32(in + 48);
	if ((m->role != ROLE_DEMAND && m->role != ROLE_PUSH) ||
	    (m->flags & ~HELLO_FLAGS) || get32(in + 52))
		return -EPROTO;
	return 0;
}

/* CHALLENGE: version 4, page size 4, size 8, pages 8, digest 16, mac 4,
 * flags 4, nonce 32, proof 32 = 112 */
#define CHAL_PROOF_AT 80u
size_t proto_put_challenge(uint8_t *out, const struct challenge *m)
{
	put32(out, m->version);
	put32(out + 4, m->page_size);
	put64(out + 8, m->image.size);
	put64(out + 16, m->image.page_count);
	memcpy(out + 24, m->image.digest, PROTO_ID_LEN);
	put32(out + 40, m->mac);
	put32(out + 44, m->flags);
	memcpy(out + 48, m->nonce, PROTO_NONCE_LEN);
	memcpy(out + CHAL_PROOF_AT, m->proof, PROTO_MAC_LEN);
	return PROTO_CHALLENGE_LEN;
}

int proto_get_challenge(const uint8_t *in, size_t len, struct challenge *m)
{
	if (len != PROTO_CHALLENGE_LEN)
		return -EPROTO;
	m->version = get32(in);
	m->page_size = get32(in + 4);
	m->image.size = get64(in + 8);
	m->image.page_count = get64(in + 16);
	memcpy(m->image.digest, in + 24, PROTO_ID_LEN);
	m->mac = get32(in + 40);
	m->flags = get32(in + 44);
	memcpy(m->nonce, in + 48, PROTO_NONCE_LEN);
	memcpy(m->proof, in + CHAL_PROOF_AT, PROTO_MAC_LEN);
	if (m->page_size != PROTO_PAGE_SIZE || !m->image.page_count ||
	    m->image.page_count > (UINT64_MAX / PROTO_PAGE_SIZE) ||
	    m->image.size != m->image.page_count * PROTO_PAGE_SIZE ||
	    m->mac > MAC_GMAC || m->flags)
		return -EPROTO;
	return 0;
}

size_t proto_put_auth(uint8_t *out, const struct auth *m)
{
	memcpy(out, m->proof, PROTO_MAC_LEN);
	return PROTO_MAC_LEN;
}

int proto_get_auth(const uint8_t *in, size_t len, struct auth *m)
{
	if (len != PROTO_MAC_LEN)
		return -EPROTO;
	memcpy(m->proof, in, PROTO_MAC_LEN);
	return 0;
}

/* REFUSE: code 4, then reason bytes (not terminated on the wire). */
size_t proto_put_refuse(uint8_t *out, const struct refuse *m)
{
	size_t n = strnlen(m->reason, sizeof(m->reason) - 1);
	put32(out, m->code);
	memcpy(out + 4, m->reason, n);
	return 4 + n;
}

int proto_get_refuse(const uint8_t *in, size_t len, struct refuse *m)
{
	if (len < 4 || len - 4 > sizeof(m->reason) - 1)
		return -EPROTO;
	m->code = get32(in);
	memcpy(m->reason, in + 4, len - 4);
	m->reason[len - 4] = '\0';
	/* Only printable text reaches a terminal. */
	for (size_t i = 0; i < len - 4; i++)
		if ((unsigned char)m->reason[i] < 0x20 ||
		    (unsigned char)m->reason[i] > 0x7e)
			m->reason[i] = '?';
	return 0;
}

static bool run_inside(uint64_t first, uint32_t npages, uint64_t page_count)
{
	return npages >= 1 && npages <= PROTO_MAX_RUN && first < page_count &&
	       npages <= page_count - first;
}

/* REQUEST: first 8, npages 4, priority 4 = 16 */
size_t proto_put_request(uint8_t *out, const struct request *m)
{
	put64(out, m->first);
	put32(out + 8, m->npages);
	put32(out + 12, m->priority);
	return 16;
}

int proto_get_request(const uint8_t *in, size_t len, uint64_t page_count,
		      struct request *m)
{
	if (len != 16)
		return -EPROTO;
	m->first = get64(in);
	m->npages = get32(in + 8);
	m->priority = get32(in + 12);
	if (m->priority > PRIO_PREFETCH)
		return -EPROTO;
	if (!run_inside(m->first, m->npages, page_count))
		return -ERANGE;
	return 0;
}

/* DATA / ZERO fixed part: first 8, npages 4, reserved 4, checksum 8 */
size_t proto_put_data_run(uint8_t *out, const struct data_run *m)
{
	put64(out, m->first);
	put32(out + 8, m->npages);
	put32(out + 12, 0);
	put64(out + 16, m->checksum);
	return PROTO_DATA_FIXED;
}

int proto_get_data_run(const uint8_t *in, size_t len, uint16_t type,
		       uint64_t page_count, struct data_run *m)
{
	if (len < PROTO_DATA_FIXED)
		return -EPROTO;
	m->first = get64(in);
	m->npages = get32(in + 8);
	m->reserved = get32(in + 12);
	m->checksum = get64(in + 16);
	if (m->reserved || !run_inside(m->first, m->npages, page_count))
		return -EPROTO;
	size_t want = type == FRAME_DATA ?
			      PROTO_DATA_FIXED +
				      (size_t)m->npages * PROTO_PAGE_SIZE :
			      PROTO_DATA_FIXED;
	if ((type != FRAME_DATA && type != FRAME_ZERO) || len != want)
		return -EPROTO;
	return 0;
}

/* ZEROMAP: first 8, npages 4, reserved 4, checksum 8, then
 * ceil(npages / 8) bytes */
size_t proto_put_zeromap(uint8_t *out, const struct zeromap *m)
{
	put64(out, m->first);
	put32(out + 8, m->npages);
	put32(out + 12, 0);
	put64(out + 16, m->checksum);
	return PROTO_ZEROMAP_FIXED;
}

int proto_get_zeromap(const uint8_t *in, size_t len, uint64_t page_count,
		      struct zeromap *m)
{
	if (len < PROTO_ZEROMAP_FIXED)
		return -EPROTO;
	m->first = get64(in);
	m->npages = get32(in + 8);
	m->checksum = get64(in + 16);
	if (get32(in + 12) || !m->npages ||
	    m->npages > PROTO_ZEROMAP_MAX_PAGES || m->first % 8 ||
	    m->first >= page_count || m->npages > page_count - m->first ||
	    len != PROTO_ZEROMAP_FIXED + (m->npages + 7) / 8)
		return -EPROTO;
	return 0;
}

size_t proto_put_bye(uint8_t *out, const struct bye *m)
{
	put64(out, m->pages_received);
	return 8;
}

int proto_get_bye(const uint8_t *in, size_t len, struct bye *m)
{
	if (len != 8)
		return -EPROTO;
	m->pages_received = get64(in);
	return 0;
}

/* PUSH_ORDER: n * (first 8, npages 4) */
size_t proto_put_order(uint8_t *out, const struct order_run *runs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		put64(out + i * PROTO_ORDER_RUN_LEN, runs[i].first);
		put32(out + i * PROTO_ORDER_RUN_LEN + 8, runs[i].npages);
	}
	return (size_t)n * PROTO_ORDER_RUN_LEN;
}

int proto_get_order(const uint8_t *in, size_t len, uint64_t page_count,
		    struct order_run *runs, unsigned *n)
{
	if (!len || len % PROTO_ORDER_RUN_LEN ||
	    len > PROTO_ORDER_FRAME_RUNS * PROTO_ORDER_RUN_LEN)
		return -EPROTO;
	*n = (unsigned)(len / PROTO_ORDER_RUN_LEN);
	for (unsigned i = 0; i < *n; i++) {
		runs[i].first = get64(in + i * PROTO_ORDER_RUN_LEN);
		runs[i].npages = get32(in + i * PROTO_ORDER_RUN_LEN + 8);
		if (!run_inside(runs[i].first, runs[i].npages, page_count))
			return -ERANGE;
	}
	return 0;
}

uint64_t proto_page_digest(const void *page, uint64_t page_nr)
{
	return XXH3_64bits_withSeed(page, PROTO_PAGE_SIZE, page_nr);
}

/* Digests travel into hashes as little-endian words on every host. */
static void digests_le(uint8_t *out, const uint64_t *d, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		put64(out + 8 * i, d[i]);
}

void proto_image_digest(const uint64_t *digests, uint64_t count, uint64_t size,
			uint8_t out[PROTO_ID_LEN])
{
	XXH3_state_t *st = XXH3_createState();
	uint8_t buf[8 * 512];
	XXH3_128bits_reset_withSeed(st, size);
	for (uint64_t i = 0; i < count; i += 512) {
		uint32_t n = count - i < 512 ? (uint32_t)(count - i) : 512;
		digests_le(buf, digests + i, n);
		XXH3_128bits_update(st, buf, 8 * (size_t)n);
	}
	XXH128_canonicalFromHash((XXH128_canonical_t *)out, XXH3_128bits_digest(st));
	XXH3_freeState(st);
}

static uint64_t id_seed(const struct image_id *id, uint64_t first)
{
	return get64(id->digest) ^ first;
}

/* Digests a run's checksum takes at a time: the destination computes it
 * inside a SIGBUS handler, which may run on a small signal stack, so
 * nothing of a run's size goes on the stack. */
#define CHECKSUM_STEP 32u

uint64_t proto_run_checksum_of(const struct image_id *id, uint64_t first,
			       const uint64_t *digests, uint32_t n)
{
	uint8_t buf[8 * CHECKSUM_STEP];
	XXH3_state_t st;
	if (n > PROTO_MAX_RUN)
		return 0; /* no such run: matches nothing the peer computed */
	XXH3_64bits_reset_withSeed(&st, id_seed(id, first));
	for (uint32_t i = 0; i < n; i += CHECKSUM_STEP) {
		uint32_t k = n - i < CHECKSUM_STEP ? n - i : CHECKSUM_STEP;
		digests_le(buf, digests + i, k);
		XXH3_64bits_update(&st, buf, 8 * (size_t)k);
	}
	return XXH3_64bits_digest(&st);
}

uint64_t proto_run_checksum(const struct image_id *id, uint64_t first,
			    const void *pages, uint32_t n)
{
	static const uint8_t zero[PROTO_PAGE_SIZE];
	uint64_t d[CHECKSUM_STEP];
	uint8_t buf[8 * CHECKSUM_STEP];
	XXH3_state_t st;
	if (n > PROTO_MAX_RUN)
		return 0;
	XXH3_64bits_reset_withSeed(&st, id_seed(id, first));
	for (uint32_t i = 0; i < n; i += CHECKSUM_STEP) {
		uint32_t k = n - i < CHECKSUM_STEP ? n - i : CHECKSUM_STEP;
		for (uint32_t j = 0; j < k; j++)
			d[j] = proto_page_digest(pages ? (const uint8_t *)pages +
								 (size_t)(i + j) * PROTO_PAGE_SIZE :
							 zero,
						 first + i + j);
		digests_le(buf, d, k);
		XXH3_64bits_update(&st, buf, 8 * (size_t)k);
	}
	return XXH3_64bits_digest(&st);
}

uint64_t proto_zeromap_checksum(const struct image_id *id, uint64_t first,
				const uint8_t *bits, size_t len)
{
	return XXH3_64bits_withSeed(bits, len, id_seed(id, first) ^ 0x7a65726fu);
}

static void proof(const char *label, const uint8_t *key, size_t key_len,
		  const struct hello *h, const struct challenge *c,
		  uint8_t out[PROTO_MAC_LEN])
{
	crypto_auth_hmacsha256_state st;
	uint8_t hello_bytes[PROTO_HELLO_LEN], chal_bytes[PROTO_CHALLENGE_LEN];

	proto_put_hello(hello_bytes, h);
	proto_put_challenge(chal_bytes, c);
	/* The server's proof field is not part of what either side signs. */
	memset(chal_bytes + CHAL_PROOF_AT, 0, PROTO_MAC_LEN);
	crypto_auth_hmacsha256_init(&st, key, key_len);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label,
				      strlen(label));
	crypto_auth_hmacsha256_update(&st, hello_bytes, sizeof(hello_bytes));
	crypto_auth_hmacsha256_update(&st, chal_bytes, sizeof(chal_bytes));
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

void proto_server_proof(const uint8_t *key, size_t key_len,
			const struct hello *h, const struct challenge *c,
			uint8_t out[PROTO_MAC_LEN])
{
	proof("postcopy v2 server", key, key_len, h, c, out);
}

void proto_client_proof(const uint8_t *key, size_t key_len,
			const struct hello *h, const struct challenge *c,
			uint8_t out[PROTO_MAC_LEN])
{
	proof("postcopy v2 client", key, key_len, h, c, out);
}

bool proto_proof_equal(const uint8_t *a, const uint8_t *b)
{
	return sodium_memcmp(a, b, PROTO_MAC_LEN) == 0;
}

enum mac_alg proto_mac_choose(uint32_t hello_flags)
{
	return (hello_flags & HELLO_GMAC) && proto_mac_offer() ? MAC_GMAC :
								MAC_POLY1305;
}

uint32_t proto_mac_offer(void)
{
	return crypto_aead_aes256gcm_is_available() ? HELLO_GMAC : 0;
}

void proto_mac_init(struct frame_mac *m, const uint8_t *key, size_t key_len,
		    const struct hello *h, const struct challenge *c)
{
	proof("postcopy v2 frames", key, key_len, h, c, m->key);
	m->alg = c->mac == MAC_GMAC ? MAC_GMAC : MAC_POLY1305;
	if (m->alg == MAC_GMAC)
		crypto_aead_aes256gcm_beforenm(&m->gcm, m->key);
	m->on = true;
	m->sent = m->received = 0;
}

/* GMAC: the header and the first PROTO_MAC_PREFIX payload bytes are the
 * message (encrypted only to make the tag; nobody sends the ciphertext),
 * the rest of the payload the associated data. */
static void gmac_tag(const struct frame_mac *m, const uint8_t nonce[9],
		     const uint8_t hdr[PROTO_HDR_LEN],
		     const struct mac_part *parts, unsigned nparts,
		     uint8_t tag[PROTO_TAG_LEN])
{
	uint8_t msg[PROTO_HDR_LEN + PROTO_MAC_PREFIX], ct[sizeof(msg)];
	uint8_t npub[crypto_aead_aes256gcm_NPUBBYTES] = { 0 };
	size_t mlen = PROTO_HDR_LEN;
	const uint8_t *ad = NULL;
	size_t adlen = 0;
	bool ok = true;
	memcpy(msg, hdr, PROTO_HDR_LEN);
	memcpy(npub, nonce, 9);
	for (unsigned i = 0; i < nparts; i++) {
		const uint8_t *p = parts[i].p;
		size_t len = parts[i].len, take = sizeof(msg) - mlen;
		if (take > len)
			take = len;
		memcpy(msg + mlen, p, take);
		mlen += take;
		if (len == take)
			continue;
		ok &= !ad; /* the rest must be one part */
		ad = p + take;
		adlen = len - take;
	}
	unsigned long long maclen;
	if (!ok) { /* a caller broke the rule: a tag that matches nothing */
		randombytes_buf(tag, PROTO_TAG_LEN);
		return;
	}
	crypto_aead_aes256gcm_encrypt_detached_afternm(ct, tag, &maclen, msg, mlen,
						       ad, adlen, NULL, npub,
						       &m->gcm);
}

void proto_mac_tag(const struct frame_mac *m, char dir, uint64_t counter,
		   const uint8_t hdr[PROTO_HDR_LEN],
		   const struct mac_part *parts, unsigned nparts,
		   uint8_t tag[PROTO_TAG_LEN])
{
	uint8_t nonce[9], otk[crypto_onetimeauth_KEYBYTES];
	crypto_onetimeauth_state st;
	nonce[0] = (uint8_t)dir;
	for (int i = 0; i < 8; i++)
		nonce[1 + i] = (uint8_t)(counter >> (8 * i));
	if (m->alg == MAC_GMAC)
		return gmac_tag(m, nonce, hdr, parts, nparts, tag);
	/* Poly1305 needs a key of its own for every message. */
	crypto_generichash(otk, sizeof(otk), nonce, sizeof(nonce), m->key,
			   sizeof(m->key));
	crypto_onetimeauth_init(&st, otk);
	crypto_onetimeauth_update(&st, hdr, PROTO_HDR_LEN);
	for (unsigned i = 0; i < nparts; i++)
		crypto_onetimeauth_update(&st, parts[i].p, parts[i].len);
	crypto_onetimeauth_final(&st, tag);
	sodium_memzero(otk, sizeof(otk));
}

bool proto_mac_check(const struct frame_mac *m, char dir, uint64_t counter,
		     const uint8_t hdr[PROTO_HDR_LEN],
		     const struct mac_part *parts, unsigned nparts,
		     const uint8_t tag[PROTO_TAG_LEN])
{
	uint8_t want[PROTO_TAG_LEN];
	proto_mac_tag(m, dir, counter, hdr, parts, nparts, want);
	return crypto_verify_16(want, tag) == 0;
}
