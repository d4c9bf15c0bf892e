/* SPDX-License-Identifier: MIT */
/*
 * server_out.c - what the server sends on a connection: the output queue
 * (answers wait there until the socket takes them), frames sealed as they
 * are queued, refusals, and pages read back from the image and checked
 * against their digests before they go out.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server_int.h"
#include "wire.h"

uint8_t *srv_out_reserve(struct conn *c, size_t n)
{
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n)
			cap *= 2;
		uint8_t *p = realloc(c->out, cap);
		if (!p)
			return NULL;
		c->out = p;
		c->out_cap = cap;
	}
	uint8_t *at = c->out + c->out_len;
	c->out_len += n;
	return at;
}

/*
 * On a keyed connection, append the MAC tag to the frame that starts at
 * @off in the output queue (and count it in the frame's length).
 */
int srv_seal(struct conn *c, size_t off)
{
	uint8_t tag[PROTO_TAG_LEN];
	if (!wire_seal(&c->mac, DIR_TO_CLIENT, c->out + off,
		       c->out_len - off - PROTO_HDR_LEN, tag))
		return 0;
	uint8_t *t = srv_out_reserve(c, PROTO_TAG_LEN);
	if (!t)
		return -ENOMEM;
	memcpy(t, tag, PROTO_TAG_LEN);
	return 0;
}

int srv_queue_frame(struct conn *c, uint16_t type, uint32_t tag,
		    const uint8_t *payload, size_t len)
{
	uint8_t *p = srv_out_reserve(c, PROTO_HDR_LEN + len);
	if (!p)
		return -ENOMEM;
	proto_put_hdr(p, type, (uint32_t)len, tag);
	if (len)
		memcpy(p + PROTO_HDR_LEN, payload, len);
	return srv_seal(c, (size_t)(p - c->out));
}

int srv_queue_refuse(struct conn *c, uint32_t code, const char *reason)
{
	struct refuse m = { .code = code };
	uint8_t buf[4 + sizeof(m.reason)];
	snprintf(m.reason, sizeof(m.reason), "%s", reason);
	return srv_queue_frame(c, FRAME_REFUSE, 0, buf, proto_put_refuse(buf, &m));
}

void srv_refuse(struct pc_server *s, struct conn *c, uint32_t code,
		const char *reason)
{
	srv_queue_refuse(c, code, reason);
	c->state = CLOSING;
	c->refused = true;
	if (code == REFUSE_BAD_FRAME || code == REFUSE_RANGE)
		s->stats.bad_frames++;
	else
		s->stats.refused++;
}

/* Queue pages [first, first + n) as DATA and ZERO frames tagged @tag; on
 * failure nothing of it stays queued (no unwritten bytes go out).
 * -ESTALE when @check and a page read does not match its digest. */
int srv_queue_pages(struct pc_server *s, struct conn *c, uint64_t first,
		    uint32_t n, uint32_t tag, bool check)
{
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	size_t undo = c->out_len;
	for (uint64_t p = first; p < first + n;) {
		bool zero = bitmap_test(s->zero_bits, p);
		uint64_t q = p + 1;
		while (q < first + n && bitmap_test(s->zero_bits, q) == zero)
			q++;
		struct data_run run = { .first = p, .npages = (uint32_t)(q - p) };
		size_t bytes = zero ? 0 : (size_t)run.npages * PROTO_PAGE_SIZE;
		uint8_t *f = srv_out_reserve(c, PROTO_HDR_LEN + PROTO_DATA_FIXED + bytes);
		if (!f) {
			c->out_len = undo;
			return -ENOMEM;
		}
		uint8_t *data = f + PROTO_HDR_LEN + PROTO_DATA_FIXED;
		if (!zero) {
			ssize_t got = pread(s->image_fd, data, bytes,
					    (off_t)(p * PROTO_PAGE_SIZE));
			if (got != (ssize_t)bytes) {
				c->out_len = undo;
				return got < 0 ? -errno : -EIO;
			}
			for (uint64_t i = p; check && i < q; i++)
				if (proto_page_digest(data + (i - p) * PROTO_PAGE_SIZE, i) !=
				    s->digests[i]) {
					atomic_store(&s->stale, true);
					c->out_len = undo;
					return -ESTALE;
				}
		}
		run.checksum = proto_run_checksum_of(&s->image, p, s->digests + p,
						     run.npages);
		proto_put_hdr(f, zero ? FRAME_ZERO : FRAME_DATA,
			      PROTO_DATA_FIXED + (uint32_t)bytes, tag);
		proto_put_data_run(f + PROTO_HDR_LEN, &run);
		if (srv_seal(c, (size_t)(f - c->out)) < 0) {
			c->out_len = undo;
			return -ENOMEM;
		}
		p = q;
	}
	atomic_fetch_add_explicit(&s->bytes_sent, c->out_len - undo,
				  memory_order_relaxed);
	return 0;
}

int srv_queue_zeromap(struct pc_server *s, struct conn *c)
{
	uint64_t pages = s->image.page_count;
	for (uint64_t first = 0; first < pages; first += PROTO_ZEROMAP_MAX_PAGES) {
		uint32_t n = (uint32_t)(pages - first < PROTO_ZEROMAP_MAX_PAGES ?
					pages - first : PROTO_ZEROMAP_MAX_PAGES);
		size_t len = PROTO_ZEROMAP_FIXED + (n + 7) / 8;
		uint8_t *f = srv_out_reserve(c, PROTO_HDR_LEN + len);
		if (!f)
			return -ENOMEM;
		proto_put_hdr(f, FRAME_ZEROMAP, (uint32_t)len, 0);
		struct zeromap zm = { .first = first, .npages = n };
		uint8_t *bits = f + PROTO_HDR_LEN + PROTO_ZEROMAP_FIXED;
		memset(bits, 0, (n + 7) / 8);
		for (uint32_t i = 0; i < n; i++)
			if (bitmap_test(s->zero_bits, first + i))
				bits[i / 8] |= (uint8_t)(1u << (i % 8));
		zm.checksum = proto_zeromap_checksum(&s->image, first, bits, (n + 7) / 8);
		proto_put_zeromap(f + PROTO_HDR_LEN, &zm);
		if (srv_seal(c, (size_t)(f - c->out)) < 0)
			return -ENOMEM;
	}
	return 0;
}
