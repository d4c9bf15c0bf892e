/* SPDX-License-Identifier: MIT */
/*
 * net_handshake.c - the destination's connections to the server: connect,
 * check who serves a Unix socket, the handshake (HELLO, CHALLENGE, AUTH,
 * READY) with its proofs, the zero map, refusals, and the backoff between
 * tries.  Runs in the SIGBUS handler when a lane reconnects.
 */
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_source_int.h"

/* The push connection's receive buffer.  Pushed pages waiting there are
 * on their way but not yet claimed, so a vCPU that reaches them asks for
 * them again: a small buffer keeps that window short, but not so small
 * that the stream stalls on it. */
#define PUSH_RCVBUF (1 << 20)

/* Copy a message without stdio (async-signal-safe). */
void ns_set_why(char *why, size_t len, const char *a, const char *b)
{
	if (!why || !len)
		return;
	size_t n = 0;
	for (const char *s = a; s && *s && n + 1 < len; s++)
		why[n++] = *s;
	for (const char *s = b; s && *s && n + 1 < len; s++)
		why[n++] = *s;
	why[n] = '\0';
}

void ns_say(const char *s)
{
	if (write(STDERR_FILENO, s, strlen(s)) < 0) {
		/* nowhere to say it */
	}
}

/* Fatal: no retry can fix these. */
bool ns_fatal(int err)
{
	return err == -EACCES || err == -ESTALE || err == -EPROTONOSUPPORT;
}

/* A fatal answer the server has not proven yet: final only where the
 * destination may believe it (@believe), else a broken connection. */
static int unproven(bool believe, int err)
{
	return believe || !ns_fatal(err) ? err : -ECONNREFUSED;
}

/* What a refusal means to a destination that may believe it. */
static int refusal_error(uint32_t code)
{
	return code == REFUSE_VERSION ? -EPROTONOSUPPORT :
	       code == REFUSE_AUTH    ? -EACCES :
	       code == REFUSE_STALE   ? -ESTALE :
	       code == REFUSE_BUSY    ? -EBUSY :
					-ECONNREFUSED;
}

/*
 * Send a handshake frame (its payload in @buf) and read the answer back
 * into @buf.  A REFUSE becomes an error with the server's reason; nothing
 * authenticates it yet (see handshake()).
 */
static int exchange(int fd, uint16_t type, uint8_t *buf, size_t len,
		    struct frame_hdr *h, uint64_t deadline, char *why,
		    size_t why_len)
{
	struct wire_in in;
	int ret = wire_send(fd, NULL, DIR_TO_SERVER, type, 0, buf, len, deadline);
	if (ret == 0)
		ret = wire_read_frame(&in, fd, NULL, DIR_TO_CLIENT, 0, HANDSHAKE_MAX,
				      buf, HANDSHAKE_MAX, deadline);
	if (ret == 0)
		*h = in.h;
	if (ret < 0 || h->type != FRAME_REFUSE)
		return ret;
	struct refuse rf;
	if (proto_get_refuse(buf, h->len, &rf) < 0)
		return -EPROTO;
	/* A server of another version cannot parse our HELLO at all. */
	if (type == FRAME_HELLO && rf.code == REFUSE_BAD_FRAME) {
		ns_set_why(why, why_len, "the server does not speak protocol version 2 (an older postcopy?); it said: ",
			rf.reason);
		return -EPROTONOSUPPORT;
	}
	ns_set_why(why, why_len, "the server refused: ", rf.reason);
	return refusal_error(rf.code);
}

/*
 * HELLO, CHALLENGE, AUTH, READY on a fresh connection.  @first learns the
 * image (and its zero map) instead of checking it.  Returns 0, -EACCES
 * (authentication), -ESTALE (a different image), -EPROTONOSUPPORT,
 * -EBUSY (too many destinations: try again), -ECONNREFUSED (refused for
 * another reason) or an I/O error.
 *
 * Before READY nothing the server says is authenticated but its proof.
 * So the proof is checked before the image is compared, and on a
 * reconnect with a key (the guest running on this source) every refusal
 * and every failed proof is only a broken connection, retried: someone
 * on the path must not be able to end a migration by saying "stale".  A
 * different image behind a valid proof is a fact, and final.
 */
static int handshake(struct net_source *ns, int fd, uint32_t role, bool first,
		     uint64_t deadline, struct frame_mac *mac, char *why,
		     size_t why_len)
{
	mac->on = false;
	struct hello hello = { .version = PROTO_VERSION, .role = role,
			       .session = ns->session,
			       .flags = (first ? 0 : HELLO_RESUME) |
					(ns->key ? proto_mac_offer() : 0) };
	uint8_t buf[HANDSHAKE_MAX];
	struct frame_hdr h;
	struct challenge chal;
	bool believe = first || !ns->key; /* unauthenticated words */

	/* getrandom(2), not libsodium's generator: this runs in the SIGBUS
	 * handler when a lane reconnects, and a raw system call is safe
	 * there. */
	if (getrandom(hello.nonce, sizeof(hello.nonce), 0) != sizeof(hello.nonce))
		return -EIO;
	int ret = exchange(fd, FRAME_HELLO, buf, proto_put_hello(buf, &hello),
			   &h, deadline, why, why_len);
	if (ret < 0)
		return unproven(believe, ret);
	if (h.type != FRAME_CHALLENGE || proto_get_challenge(buf, h.len, &chal) < 0)
		return -EPROTO;
	if (chal.version != PROTO_VERSION) {
		ns_set_why(why, why_len, "the server speaks another protocol version", NULL);
		return unproven(believe, -EPROTONOSUPPORT);
	}
	struct auth auth = { { 0 } };
	if (ns->key) {
		uint8_t want[PROTO_MAC_LEN];
		if (sodium_is_zero(chal.proof, PROTO_MAC_LEN)) {
			ns_set_why(why, why_len, "the server does not authenticate (start it with --key, or use --insecure on both sides)", NULL);
			return unproven(believe, -EACCES);
		}
		proto_server_proof(ns->key, ns->key_len, &hello, &chal, want);
		if (!proto_proof_equal(want, chal.proof)) {
			ns_set_why(why, why_len, "the server could not prove it has the key", NULL);
			return unproven(believe, -EACCES);
		}
		proto_client_proof(ns->key, ns->key_len, &hello, &chal, auth.proof);
	}
	/* Only now, with the challenge proven, does its image count. */
	if (first) {
		ns->image = chal.image;
	} else if (memcmp(&chal.image, &ns->image, sizeof(chal.image))) {
		ns_set_why(why, why_len, "the server now serves a different image", NULL);
		return -ESTALE;
	}
	ret = exchange(fd, FRAME_AUTH, buf, proto_put_auth(buf, &auth), &h,
		       deadline, why, why_len);
	if (ret < 0)
		return unproven(believe, ret);
	if (h.type != FRAME_READY || h.len)
		return -EPROTO;
	/* From here on, with a key, every frame carries a tag. */
	if (ns->key)
		proto_mac_init(mac, ns->key, ns->key_len, &hello, &chal);
	return 0;
}

/*
 * A REFUSE where pages were expected, after READY: on a keyed connection
 * its tag proves the server sent it.  The image having changed under the
 * server is final (-ESTALE); anything else breaks the connection.
 */
int ns_read_refusal(struct wire_in *in)
{
	uint8_t buf[HANDSHAKE_MAX];
	if (in->len > sizeof(buf))
		return -EPROTO;
	int ret = wire_read_part(in, buf, in->len);
	if (ret == 0)
		ret = wire_read_tag(in);
	struct refuse rf;
	if (ret == 0 && proto_get_refuse(buf, in->len, &rf) < 0)
		ret = -EPROTO;
	if (ret < 0)
		return ret;
	if (rf.code == REFUSE_STALE) {
		ns_say("postcopy: the migration source says: ");
		ns_say(rf.reason);
		ns_say("\n");
		return -ESTALE;
	}
	return -ECONNREFUSED;
}

/* The zero map follows READY on the session's first connection. */
static int recv_zeromap(struct net_source *ns, int fd, struct frame_mac *mac,
			uint64_t deadline)
{
	uint64_t pages = ns->image.page_count, covered = 0;
	size_t max = PROTO_ZEROMAP_FIXED + PROTO_ZEROMAP_MAX_PAGES / 8;
	uint8_t *buf = malloc(max);
	int ret = buf ? 0 : -ENOMEM;

	while (ret == 0 && covered < pages) {
		struct wire_in in;
		struct zeromap zm;
		ret = wire_read_frame(&in, fd, mac, DIR_TO_CLIENT, FRAME_ZEROMAP,
				      (uint32_t)max + PROTO_TAG_LEN, buf, max, deadline);
		if (ret < 0)
			break;
		size_t len = in.len;
		if (proto_get_zeromap(buf, len, pages, &zm) < 0 || zm.first != covered) {
			ret = -EPROTO;
			break;
		}
		const uint8_t *bits = buf + PROTO_ZEROMAP_FIXED;
		/* Also without a key: a flipped bit would install data as
		 * zeros. */
		if (proto_zeromap_checksum(&ns->image, zm.first, bits,
					   len - PROTO_ZEROMAP_FIXED) != zm.checksum) {
			count(&ns->checksum_failures, 1);
			ret = -EBADMSG;
			break;
		}
		for (uint32_t i = 0; i < zm.npages; i++)
			if (bits[i / 8] >> (i % 8) & 1)
				bitmap_set(ns->zero_bits, zm.first + i);
		covered += zm.npages;
	}
	free(buf);
	return ret;
}

/* A Unix socket's server must be us or root: anyone else could have bound
 * that path first and serve whatever pages they like. */
static int check_server_uid(const struct net_source *ns, int fd)
{
	if (!ns->addr.unix_socket)
		return 0;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	return cred.uid == geteuid() || cred.uid == 0 ? 0 : -EACCES;
}

int ns_open_conn(struct net_source *ns, uint32_t role, uint64_t deadline,
		 struct frame_mac *mac)
{
	int fd = net_connect(&ns->addr, role == ROLE_PUSH ? PUSH_RCVBUF : 0, deadline);
	if (fd < 0)
		return fd;
	int ret = check_server_uid(ns, fd);
	if (ret == 0)
		ret = handshake(ns, fd, role, false, deadline, mac, NULL, 0);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return fd;
}

/*
 * Wait before the next try: *@backoff, doubling up to half a second, but
 * never past @deadline.  False when the deadline has passed.
 */
bool ns_backoff_until(uint64_t *backoff, uint64_t deadline)
{
	uint64_t now = now_ns();
	if (now >= deadline)
		return false;
	sleep_ns(deadline - now < *backoff ? deadline - now : *backoff);
	*backoff = *backoff * 2 > 500000000ull ? 500000000ull : *backoff * 2;
	return true;
}

/* One try at lane 0: connect, handshake, zero map. */
int ns_first_connection(struct net_source *ns, uint64_t deadline, char *why,
			size_t why_len)
{
	struct lane *l = &ns->lanes[0];
	if (l->fd >= 0)
		close(l->fd);
	l->fd = net_connect(&ns->addr, 0, deadline);
	if (l->fd < 0) {
		ns_set_why(why, why_len, "cannot connect to ", ns->addr.text);
		return l->fd;
	}
	int ret = check_server_uid(ns, l->fd);
	if (ret < 0) {
		ns_set_why(why, why_len, ret == -EACCES ?
			"the socket's server runs as another user: " :
			"cannot check who serves the socket: ", ns->addr.text);
		return ret;
	}
	ret = handshake(ns, l->fd, ROLE_DEMAND, true, deadline, &l->mac, why,
			why_len);
	if (ret == 0 && !ns->zero_bits) {
		ns->zero_bits = calloc((ns->image.page_count + 63) / 64, 8);
		if (!ns->zero_bits)
			return -ENOMEM;
	}
	if (ret == 0) {
		memset(ns->zero_bits, 0, (ns->image.page_count + 63) / 64 * 8);
		ret = recv_zeromap(ns, l->fd, &l->mac, deadline);
	}
	if (ret < 0 && why && !why[0])
		ns_set_why(why, why_len, "handshake with the server failed: ",
			ret == -ETIMEDOUT ? "timed out" :
			ret == -EBADMSG ? "the zero map failed its checksum" :
					  "protocol error or connection lost");
	return ret;
}
