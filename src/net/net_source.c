/* SPDX-License-Identifier: MIT */
/*
 * net_source.c - the network source itself: pc_source_net() (the first
 * connection learns the image), its operations, stats, and the BYE that
 * tells the server the session is complete.
 */
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net_source_int.h"

/* Say BYE on @fd and wait for the server's BYE back: it counted the
 * session complete.  (A close alone proves nothing: a cut lane closes
 * too.) */
static int bye_on(struct net_source *ns, int fd, struct frame_mac *mac)
{
	struct bye b = { .pages_received = atomic_load(&ns->pages_received) +
					   atomic_load(&ns->pages_pushed) };
	uint8_t buf[8];
	uint64_t deadline = now_ns() + 1000000000ull;
	struct wire_in in;
	int ret = wire_send(fd, mac, DIR_TO_SERVER, FRAME_BYE, 0, buf,
			    proto_put_bye(buf, &b), deadline);
	if (ret == 0)
		ret = wire_read_hdr(&in, fd, mac, DIR_TO_CLIENT,
				    sizeof(buf) + PROTO_TAG_LEN, deadline);
	if (ret == 0 && (in.h.type != FRAME_BYE || in.len != sizeof(buf)))
		ret = -EPROTO;
	if (ret == 0)
		ret = wire_read_part(&in, buf, sizeof(buf));
	if (ret == 0)
		ret = wire_read_tag(&in);
	return ret;
}

/*
 * Before the region goes: stop the push, and if every page arrived say
 * BYE, so that the server counts the session complete (and, with --once,
 * exits).  On lane 0 if it still works, else on a fresh connection: a
 * lane that was cut must not swallow it.
 */
static void net_stop(void *ctx, bool complete)
{
	struct net_source *ns = ctx;
	ns_push_stop(ns);
	if (!complete || ns->bye_sent)
		return;
	struct lane *l = &ns->lanes[0]; /* no fetch runs any more: ours */
	int ret = l->fd >= 0 ? bye_on(ns, l->fd, &l->mac) : -ENOTCONN;
	for (int tries = 0; ret < 0 && tries < 3; tries++) {
		if (l->fd >= 0)
			close(l->fd);
		l->fd = ns_open_conn(ns, ROLE_DEMAND, now_ns() + 1000000000ull, &l->mac);
		ret = l->fd >= 0 ? bye_on(ns, l->fd, &l->mac) : l->fd;
	}
	ns->bye_sent = true;
}

static void net_destroy(void *ctx)
{
	struct net_source *ns = ctx;
	ns_push_stop(ns);
	for (int i = 0; i < NET_LANES; i++)
		if (ns->lanes[i].fd >= 0)
			close(ns->lanes[i].fd);
	if (ns->key)
		sodium_memzero(ns->key, ns->key_len);
	free(ns->key);
	free(ns->zero_bits);
	pthread_mutex_destroy(&ns->push_lock);
	free(ns);
}

int pc_net_get_stats(pc_source *src, struct pc_net_stats *out)
{
	if (src->ops.fetch != net_fetch)
		return -EINVAL;
	struct net_source *ns = src->ctx;
	*out = (struct pc_net_stats){
		.requests = atomic_load(&ns->requests),
		.pages_received = atomic_load(&ns->pages_received),
		.pages_pushed = atomic_load(&ns->pages_pushed),
		.bytes_received = atomic_load(&ns->bytes_received),
		.reconnects = atomic_load(&ns->reconnects),
		.checksum_failures = atomic_load(&ns->checksum_failures),
		.push_done = atomic_load(&ns->push_done),
		.pages_ordered = atomic_load(&ns->pages_ordered),
	};
	return 0;
}

/* pc_source.identity: what the server proved in the handshake, and every
 * run's checksum is bound to. */
static int net_identity(void *ctx, struct pc_image_id *out)
{
	const struct net_source *ns = ctx;
	_Static_assert(PC_IMAGE_DIGEST_LEN == PROTO_ID_LEN, "one digest");
	out->size = ns->image.size;
	memcpy(out->digest, ns->image.digest, PROTO_ID_LEN);
	return 0;
}

static const struct pc_source_ops net_ops = {
	.fetch = net_fetch,
	.fetch_many = net_fetch_many,
	.is_zero = net_is_zero,
	.stop = net_stop,
	.destroy = net_destroy,
	/* Raw system calls only; but a run is checked after it arrived, so
	 * not DIRECT: the pager receives it into private memory. */
	.flags = PC_SOURCE_ASYNC_SIGNAL_SAFE,
};

int pc_source_net(const struct pc_net_opts *o, pc_source **out, char *why,
		  size_t why_len)
{
	if (why && why_len)
		why[0] = '\0';
	if (!o || !o->address || !out)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
		if (o->reserved[i]) {
			ns_set_why(why, why_len, "reserved option fields must be zero (built against a newer postcopy.h?)", NULL);
			return -EINVAL;
		}
	if (o->push_connections > PUSH_LANES_MAX) {
		ns_set_why(why, why_len, "push_connections: at most 4", NULL);
		return -EINVAL;
	}
	if (sodium_init() < 0) {
		ns_set_why(why, why_len, "libsodium failed to initialise", NULL);
		return -EIO;
	}
	struct net_source *ns = calloc(1, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	for (int i = 0; i < NET_LANES; i++)
		ns->lanes[i].fd = -1;
	for (int i = 0; i < PUSH_LANES_MAX; i++)
		ns->push[i].fd = -1;
	ns->push_want = o->push_connections ? o->push_connections : PUSH_LANES;
	pthread_mutex_init(&ns->push_lock, NULL);
	ns->timeout_ms = o->timeout_ms ? o->timeout_ms : 30000;
	int ret = net_parse(o->address, &ns->addr, why, why_len);
	if (ret < 0)
		goto err;
	ret = net_check_auth(&ns->addr, o->key, o->key_len, o->insecure, why, why_len);
	if (ret < 0)
		goto err;
	if (o->key) {
		ns->key = malloc(o->key_len);
		if (!ns->key) {
			ret = -ENOMEM;
			goto err;
		}
		memcpy(ns->key, o->key, o->key_len);
		ns->key_len = o->key_len;
	}
	randombytes_buf(&ns->session, sizeof(ns->session));

	/* The first connection learns the image; it becomes lane 0.  Like
	 * every later one it is retried within the timeout: a server still
	 * starting, or a connection cut early, is no reason to give up. */
	uint64_t deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
	uint64_t backoff = 10 * 1000000ull;
	for (;;) {
		if (why && why_len)
			why[0] = '\0';
		ret = ns_first_connection(ns, deadline, why, why_len);
		if (ret == 0 || ns_fatal(ret) || ret == -ENOMEM ||
		    !ns_backoff_until(&backoff, deadline))
			break;
	}
	if (ret < 0)
		goto err;
	ret = pc_source_custom(&net_ops, ns, ns->image.size, out);
	if (ret < 0)
		goto err;
	(*out)->follow = ns_push_order;
	(*out)->identity = net_identity;
	return 0;
err:
	net_destroy(ns);
	return ret;
}
