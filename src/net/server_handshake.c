/* SPDX-License-Identifier: MIT */
/*
 * server_handshake.c - a connection's states: HELLO, the challenge and
 * AUTH, then requests and BYE once READY.  Frames arrive here checked
 * (header and tag) by the loop.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_int.h"

static bool peer_allowed(struct pc_server *s, struct conn *c)
{
	if (!s->addr.unix_socket)
		return true;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	uid_t allowed = s->opts.allow_uid < 0 ? geteuid() :
						(uid_t)s->opts.allow_uid;
	return cred.uid == allowed;
}

static void on_hello(struct pc_server *s, struct conn *c, const uint8_t *p,
		     size_t len)
{
	int ret = proto_get_hello(p, len, &c->hello);
	if (ret == -EPROTONOSUPPORT) {
		char why[120];
		snprintf(why, sizeof(why),
			 "protocol version %u is not supported; this server speaks version %u",
			 c->hello.version, PROTO_VERSION);
		return srv_refuse(s, c, REFUSE_VERSION, why);
	}
	if (ret < 0)
		return srv_refuse(s, c, REFUSE_BAD_FRAME, "malformed HELLO");
	if (!peer_allowed(s, c))
		return srv_refuse(s, c, REFUSE_AUTH, "this user may not connect to this socket");
	c->chal = (struct challenge){ .version = PROTO_VERSION,
				      .page_size = PROTO_PAGE_SIZE,
				      .image = s->image,
				      .mac = s->key ? proto_mac_choose(c->hello.flags) :
						      MAC_NONE };
	randombytes_buf(c->chal.nonce, sizeof(c->chal.nonce));
	if (s->key)
		proto_server_proof(s->key, s->opts.key_len, &c->hello, &c->chal,
				   c->chal.proof);
	uint8_t buf[PROTO_CHALLENGE_LEN];
	srv_queue_frame(c, FRAME_CHALLENGE, 0, buf, proto_put_challenge(buf, &c->chal));
	c->state = WAIT_AUTH;
}

static void on_auth(struct pc_server *s, struct conn *c, const uint8_t *p,
		    size_t len)
{
	struct auth a;
	if (proto_get_auth(p, len, &a) < 0)
		return srv_refuse(s, c, REFUSE_BAD_FRAME, "malformed AUTH");
	if (s->key) {
		uint8_t want[PROTO_MAC_LEN];
		proto_client_proof(s->key, s->opts.key_len, &c->hello, &c->chal, want);
		if (!proto_proof_equal(want, a.proof))
			return srv_refuse(s, c, REFUSE_AUTH, "authentication failed: wrong key");
	}
	bool created;
	c->session = srv_session_get(s, c->hello.session, &created);
	if (!c->session)
		return srv_refuse(s, c, REFUSE_BUSY, "too many destinations at once");
	pthread_mutex_lock(&s->lock);
	c->session->conns++;
	pthread_mutex_unlock(&s->lock);
	c->state = READY;
	srv_queue_frame(c, FRAME_READY, 0, NULL, 0);
	/* From here on, with a key, every frame carries a tag. */
	if (s->key)
		proto_mac_init(&c->mac, s->key, s->opts.key_len, &c->hello,
			       &c->chal);
	/* The image changed under us: say so where it is authenticated. */
	if (atomic_load(&s->stale))
		return srv_refuse(s, c, REFUSE_STALE, STALE_REASON);
	/* The destination says whether it has the zero map: one that comes
	 * back after a restart of ours has it, whatever our new session
	 * thinks, and one whose first connection was cut does not. */
	if (c->hello.role == ROLE_DEMAND && !(c->hello.flags & HELLO_RESUME))
		srv_queue_zeromap(s, c);
}

void srv_on_frame(struct pc_server *s, struct conn *c,
		  const struct frame_hdr *h, const uint8_t *p)
{
	switch (c->state) {
	case WAIT_HELLO:
		if (h->type != FRAME_HELLO)
			return srv_refuse(s, c, REFUSE_BAD_FRAME, "expected HELLO");
		return on_hello(s, c, p, h->len);
	case WAIT_AUTH:
		if (h->type != FRAME_AUTH)
			return srv_refuse(s, c, REFUSE_BAD_FRAME, "expected AUTH");
		return on_auth(s, c, p, h->len);
	case READY:
		if (h->type == FRAME_REQUEST)
			return srv_on_request(s, c, h->tag, p, h->len);
		if (h->type == FRAME_PUSH_ORDER)
			return srv_on_order(s, c, p, h->len);
		if (h->type == FRAME_BYE) {
			struct bye b;
			if (proto_get_bye(p, h->len, &b) < 0)
				return srv_refuse(s, c, REFUSE_BAD_FRAME, "malformed BYE");
			if (!c->session->done)
				s->stats.sessions_done++;
			c->session->done = true;
			/* The acknowledgment: BYE back, then the close. */
			uint8_t buf[8];
			srv_queue_frame(c, FRAME_BYE, 0, buf, proto_put_bye(buf, &b));
			c->state = CLOSING;
			return;
		}
		return srv_refuse(s, c, REFUSE_BAD_FRAME, "unexpected frame type");
	case CLOSING:
		return;
	}
}
