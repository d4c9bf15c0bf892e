/* SPDX-License-Identifier: MIT */
/*
 * wire.c - one place where frames are sealed, checked and read, for the
 * server and the destination alike (see wire.h).
 */
#include <errno.h>
#include <string.h>

#include "net.h"
#include "wire.h"

static bool keyed(const struct frame_mac *mac)
{
	return mac && mac->on;
}

size_t wire_seal(struct frame_mac *mac, char dir, uint8_t *frame, size_t len,
		 uint8_t tag[PROTO_TAG_LEN])
{
	if (!keyed(mac))
		return 0;
	proto_hdr_grow(frame, PROTO_TAG_LEN);
	struct mac_part payload = { frame + PROTO_HDR_LEN, len };
	proto_mac_tag(mac, dir, mac->sent++, frame, &payload, 1, tag);
	return PROTO_TAG_LEN;
}

size_t wire_put(uint8_t *out, struct frame_mac *mac, char dir, uint16_t type,
		uint32_t tag, const uint8_t *payload, size_t len)
{
	proto_put_hdr(out, type, (uint32_t)len, tag);
	memcpy(out + PROTO_HDR_LEN, payload, len);
	return PROTO_HDR_LEN + len +
	       wire_seal(mac, dir, out, len, out + PROTO_HDR_LEN + len);
}

int wire_send(int fd, struct frame_mac *mac, char dir, uint16_t type,
	      uint32_t tag, const uint8_t *payload, size_t len,
	      uint64_t deadline)
{
	uint8_t buf[PROTO_HDR_LEN + PROTO_MAX_CLIENT_PAYLOAD + PROTO_TAG_LEN];
	if (len > PROTO_MAX_CLIENT_PAYLOAD)
		return -EMSGSIZE;
	return net_send_all(fd, buf, wire_put(buf, mac, dir, type, tag, payload, len),
			    deadline);
}

int wire_hdr(const uint8_t hdr[PROTO_HDR_LEN], uint32_t max,
	     struct frame_hdr *h)
{
	return proto_get_hdr(hdr, max, h) < 0 ? -EPROTO : 0;
}

int64_t wire_payload_len(const struct frame_mac *mac, const struct frame_hdr *h)
{
	if (!keyed(mac))
		return h->len;
	return h->len < PROTO_TAG_LEN ? -EPROTO : (int64_t)(h->len - PROTO_TAG_LEN);
}

int wire_check(struct frame_mac *mac, char dir, const uint8_t hdr[PROTO_HDR_LEN],
	       const struct mac_part *parts, unsigned nparts,
	       const uint8_t tag[PROTO_TAG_LEN])
{
	if (!keyed(mac))
		return 0;
	return proto_mac_check(mac, dir, mac->received++, hdr, parts, nparts, tag) ?
		       0 :
		       -EBADMSG;
}

int wire_open(struct frame_mac *mac, char dir, const uint8_t *frame,
	      const struct frame_hdr *h, size_t *len)
{
	int64_t n = wire_payload_len(mac, h);
	if (n < 0)
		return (int)n;
	struct mac_part payload = { frame + PROTO_HDR_LEN, (size_t)n };
	*len = (size_t)n;
	/* The tag comes last; checked before anything is used. */
	return wire_check(mac, dir, frame, &payload, 1,
			  frame + PROTO_HDR_LEN + (size_t)n);
}

int wire_read_hdr(struct wire_in *in, int fd, struct frame_mac *mac, char dir,
		  uint32_t max, uint64_t deadline)
{
	in->fd = fd;
	in->mac = mac;
	in->dir = dir;
	in->deadline = deadline;
	in->nparts = 0;
	int ret = net_recv_all(fd, in->hdr, sizeof(in->hdr), deadline);
	if (ret < 0)
		return ret;
	if (wire_hdr(in->hdr, max, &in->h) < 0)
		return -EPROTO;
	int64_t len = wire_payload_len(mac, &in->h);
	if (len < 0)
		return -EPROTO;
	in->len = (size_t)len;
	return 0;
}

int wire_read_part(struct wire_in *in, void *dst, size_t n)
{
	if (in->nparts == sizeof(in->parts) / sizeof(in->parts[0]))
		return -EINVAL;
	in->parts[in->nparts++] = (struct mac_part){ dst, n };
	return net_recv_all(in->fd, dst, n, in->deadline);
}

int wire_read_tag(struct wire_in *in)
{
	if (!keyed(in->mac))
		return 0;
	uint8_t tag[PROTO_TAG_LEN];
	int ret = net_recv_all(in->fd, tag, sizeof(tag), in->deadline);
	if (ret < 0)
		return ret;
	return wire_check(in->mac, in->dir, in->hdr, in->parts, in->nparts, tag);
}

int wire_read_frame(struct wire_in *in, int fd, struct frame_mac *mac, char dir,
		    uint16_t type, uint32_t max, uint8_t *buf, size_t buf_len,
		    uint64_t deadline)
{
	int ret = wire_read_hdr(in, fd, mac, dir, max, deadline);
	if (ret < 0)
		return ret;
	if ((type && in->h.type != type) || in->len > buf_len)
		return -EPROTO;
	ret = wire_read_part(in, buf, in->len);
	if (ret == 0)
		ret = wire_read_tag(in);
	return ret;
}
