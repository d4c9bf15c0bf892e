/* SPDX-License-Identifier: MIT */
/*
 * wire.h - frames on a connection, for both ends: sealing a frame (its
 * MAC tag appended, counted in its length), checking a received one's
 * header and tag, and reading frames with a deadline.
 *
 * proto.c knows what the bytes of a frame mean; this layer knows how a
 * frame travels on a connection with its frame MAC (struct frame_mac),
 * so that every reader and writer on either side checks frames with the
 * same code.  The destination reads blocking with a deadline, a frame in
 * stages where it must decide (or claim pages) before the rest arrives;
 * the server's epoll loop reads incrementally and checks the whole frame
 * once it is in.  Async-signal-safe: system calls and plain computation.
 */
#ifndef PC_WIRE_H
#define PC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/*
 * Seal the frame at @frame (header encoded, @len payload bytes after it)
 * on a keyed connection: grow the header's length by the tag and make the
 * tag (the next frame number going @dir) into @tag, which may be the
 * bytes right after the payload.  Returns the tag's length, 0 when @mac
 * is NULL or off (then nothing changes).
 */
size_t wire_seal(struct frame_mac *mac, char dir, uint8_t *frame, size_t len,
		 uint8_t tag[PROTO_TAG_LEN]);
/* Encode a frame (header, @len bytes of @payload, tag) at @out; its
 * length. */
size_t wire_put(uint8_t *out, struct frame_mac *mac, char dir, uint16_t type,
		uint32_t tag, const uint8_t *payload, size_t len);
/* Encode a small frame (at most PROTO_MAX_CLIENT_PAYLOAD) and send it. */
int wire_send(int fd, struct frame_mac *mac, char dir, uint16_t type,
	      uint32_t tag, const uint8_t *payload, size_t len,
	      uint64_t deadline);

/* Decode and check a header (payload bounded by @max): 0 or -EPROTO. */
int wire_hdr(const uint8_t hdr[PROTO_HDR_LEN], uint32_t max,
	     struct frame_hdr *h);
/* A received frame's payload length, the tag not counted: -EPROTO when
 * too short for one. */
int64_t wire_payload_len(const struct frame_mac *mac, const struct frame_hdr *h);
/* Check a received frame's @tag (the next frame number coming @dir) over
 * its header and payload parts: 0, or -EBADMSG.  0 without a MAC. */
int wire_check(struct frame_mac *mac, char dir, const uint8_t hdr[PROTO_HDR_LEN],
	       const struct mac_part *parts, unsigned nparts,
	       const uint8_t tag[PROTO_TAG_LEN]);
/* Check a whole frame received in one buffer (@frame: header, payload,
 * tag) and set *@len to its payload length: 0, -EPROTO or -EBADMSG. */
int wire_open(struct frame_mac *mac, char dir, const uint8_t *frame,
	      const struct frame_hdr *h, size_t *len);

/*
 * Reading a frame blocking, until @deadline: wire_read_hdr(), then its
 * payload in one or more wire_read_part()s (each part where the caller
 * wants it), then wire_read_tag(), which checks the tag over the header
 * and every part.  Errors: those of net_recv_all(), -EPROTO (header, or a
 * payload too short for its tag), -EBADMSG (tag).
 */
struct wire_in {
	int fd;
	struct frame_mac *mac; /* NULL or off: no tags */
	char dir;	       /* the direction frames come in */
	uint64_t deadline;
	uint8_t hdr[PROTO_HDR_LEN];
	struct frame_hdr h;
	size_t len; /* payload bytes, the tag not counted */
	struct mac_part parts[2];
	unsigned nparts;
};
int wire_read_hdr(struct wire_in *in, int fd, struct frame_mac *mac, char dir,
		  uint32_t max, uint64_t deadline);
int wire_read_part(struct wire_in *in, void *dst, size_t n);
int wire_read_tag(struct wire_in *in);
/* The whole frame, its payload into @buf: -EPROTO when it is not of
 * @type (0: any) or its payload is longer than @buf_len, before any of
 * the payload is read. */
int wire_read_frame(struct wire_in *in, int fd, struct frame_mac *mac, char dir,
		    uint16_t type, uint32_t max, uint8_t *buf, size_t buf_len,
		    uint64_t deadline);

#endif
