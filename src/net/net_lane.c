/* SPDX-License-Identifier: MIT */
/*
 * net_lane.c - demand fetches, each thread on a lane (a connection) of its
 * own: requests pipelined, answers read and checked in order, a broken
 * lane reconnected.
 *
 * Global state: the per-thread lane binding, because a signal handler can
 * find its thread's connection in no other way without a lock.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "net_source_int.h"

/* Pages asked for in one request (256 KiB, a push frame's size): an answer
 * is read whole or asked for again, so this is what a break can cost, and
 * the largest answer a network that breaks often must carry in one go. */
#define LANE_REQUEST_PAGES 64u

static __thread struct {
	struct net_source *ns;
	int lane;
} my_lane __attribute__((tls_model("initial-exec")));

static struct lane *acquire_lane(struct net_source *ns)
{
	int zero = 0;
	if (my_lane.ns == ns) {
		struct lane *l = &ns->lanes[my_lane.lane];
		if (atomic_compare_exchange_strong(&l->busy, &zero, 1))
			return l;
	} else {
		for (int i = 1; i < NET_LANES; i++) {
			zero = 0;
			if (atomic_compare_exchange_strong(&ns->lanes[i].owned, &zero, 1)) {
				my_lane.ns = ns;
				my_lane.lane = i;
				zero = 0;
				if (atomic_compare_exchange_strong(&ns->lanes[i].busy, &zero, 1))
					return &ns->lanes[i];
				break;
			}
		}
	}
	/* More threads than lanes: borrow whichever is free. */
	for (;;) {
		for (int i = 0; i < NET_LANES; i++) {
			zero = 0;
			if (atomic_compare_exchange_strong(&ns->lanes[i].busy, &zero, 1))
				return &ns->lanes[i];
		}
		sleep_ns(50000);
	}
}

static void release_lane(struct lane *l)
{
	atomic_store(&l->busy, 0);
}

/* Read a data run's frames for request [first, first + n) into @dst. */
static int read_answer(struct net_source *ns, int fd, struct frame_mac *mac,
		       uint32_t tag, uint64_t first, uint64_t n, char *dst,
		       uint64_t deadline)
{
	uint64_t next = first;
	while (next < first + n) {
		uint8_t fixed[PROTO_DATA_FIXED];
		struct wire_in in;
		struct data_run run;
		int ret = wire_read_hdr(&in, fd, mac, DIR_TO_CLIENT, PROTO_MAX_PAYLOAD,
					deadline);
		if (ret < 0)
			return ret;
		if (in.h.type == FRAME_REFUSE)
			return ns_read_refusal(&in);
		if (in.h.tag != tag ||
		    (in.h.type != FRAME_DATA && in.h.type != FRAME_ZERO) ||
		    in.len < PROTO_DATA_FIXED)
			return -EPROTO;
		ret = wire_read_part(&in, fixed, sizeof(fixed));
		if (ret < 0)
			return ret;
		if (proto_get_data_run(fixed, in.len, in.h.type, ns->image.page_count, &run) < 0 ||
		    run.first != next || run.npages > first + n - next)
			return -EPROTO;
		char *to = dst + (run.first - first) * PROTO_PAGE_SIZE;
		size_t bytes = in.h.type == FRAME_ZERO ? 0 : (size_t)run.npages * PROTO_PAGE_SIZE;
		if (bytes && (ret = wire_read_part(&in, to, bytes)) < 0)
			return ret;
		/* Nothing of the run counts before its tag and checksum. */
		ret = wire_read_tag(&in);
		if (ret < 0)
			return ret;
		if (in.h.type == FRAME_ZERO)
			memset(to, 0, (size_t)run.npages * PROTO_PAGE_SIZE);
		if (proto_run_checksum(&ns->image, run.first, to, run.npages) !=
		    run.checksum) {
			count(&ns->checksum_failures, 1);
			return -EBADMSG;
		}
		count(&ns->bytes_received, PROTO_HDR_LEN + in.h.len);
		next += run.npages;
	}
	return 0;
}

/* Send every request of a batch (one or more), then read the answers in
 * order; *@done counts those that arrived whole and checked, even when a
 * later one failed. */
static int request_many_on(struct net_source *ns, struct lane *l, unsigned n,
			   const uint64_t *first, const uint64_t *npages,
			   void *const *dst, uint32_t priority, uint64_t deadline,
			   unsigned *done)
{
	uint8_t *buf = l->frames;
	uint32_t tag0 = l->tag + 1;
	size_t len = 0;
	if (!n)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		struct request rq = { .first = first[i], .npages = (uint32_t)npages[i],
				      .priority = priority };
		uint8_t payload[16];
		len += wire_put(buf + len, &l->mac, DIR_TO_SERVER, FRAME_REQUEST,
				++l->tag, payload, proto_put_request(payload, &rq));
	}
	int ret = net_send_all(l->fd, buf, len, deadline);
	*done = 0;
	for (unsigned i = 0; i < n && ret == 0; i++) {
		ret = read_answer(ns, l->fd, &l->mac, tag0 + i, first[i],
				  npages[i], dst[i], deadline);
		if (ret == 0) {
			count(&ns->requests, 1);
			count(&ns->pages_received, npages[i]);
			++*done;
		}
	}
	return ret;
}

/*
 * Run @n requests on lane @l (which the caller holds), reconnecting until
 * they succeed or the server has been gone for longer than the timeout.
 * After a break only the requests not yet answered are sent again: the
 * answers that arrived are whole and checked, and nothing is installed
 * before all have, so a network that breaks every few hundred KiB still
 * carries a batch of any size.
 */
static int with_reconnect(struct net_source *ns, struct lane *l, unsigned n,
			  const uint64_t *first, const uint64_t *npages,
			  void *const *dst, uint32_t priority)
{
	/* One deadline for the whole fetch, across answers and reconnects,
	 * so --net-timeout means what it says. */
	uint64_t deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
	uint64_t backoff = 10 * 1000000ull;
	bool lost = false; /* a connection broke here: the next one is a reconnect */
	int ret = 0;

	for (;;) {
		if (l->fd < 0) {
			uint64_t t = now_ns() + 1000000000ull;
			ret = ns_open_conn(ns, ROLE_DEMAND, t < deadline ? t : deadline, &l->mac);
			if (ret >= 0) {
				l->fd = ret;
				if (lost)
					count(&ns->reconnects, 1);
			}
		}
		if (l->fd >= 0) {
			unsigned done;
			ret = request_many_on(ns, l, n, first, npages, dst, priority,
					      deadline, &done);
			if (ret == 0)
				break;
			first += done;
			npages += done;
			dst += done;
			n -= done;
			close(l->fd);
			l->fd = -1;
			lost = true;
		}
		if (ns_fatal(ret)) {
			ns_say(ret == -ESTALE ? "postcopy: the migration source now serves a different image, or its image changed\n" :
					     "postcopy: the migration source refused to reconnect\n");
			break;
		}
		if (!ns_backoff_until(&backoff, deadline)) {
			ns_say("postcopy: the migration source has been unreachable for longer than the timeout\n");
			ret = -EHOSTDOWN; /* not ETIMEDOUT: that is pc_region_wait's own */
			break;
		}
	}
	return ret;
}

/*
 * Runs of any number and length, on this thread's lane: cut into requests
 * of at most LANE_REQUEST_PAGES, pipelined PC_MAX_BATCH at a time; when
 * the lane breaks, what was not answered yet is asked again.
 */
static int fetch_on_lane(struct net_source *ns, unsigned n, const uint64_t *first,
			 const uint64_t *npages, void *const *dst, uint32_t priority)
{
	struct lane *l = acquire_lane(ns);
	uint64_t *cfirst = l->cfirst, *cn = l->cn;
	void **cdst = l->cdst;
	unsigned k = 0;
	int ret = 0;
	for (unsigned i = 0; i < n && ret == 0; i++) {
		for (uint64_t off = 0; off < npages[i] && ret == 0; off += cn[k - 1]) {
			if (k == PC_MAX_BATCH) {
				ret = with_reconnect(ns, l, k, cfirst, cn, cdst, priority);
				k = 0;
				if (ret < 0)
					break;
			}
			uint64_t left = npages[i] - off;
			cfirst[k] = first[i] + off;
			cn[k] = left < LANE_REQUEST_PAGES ? left : LANE_REQUEST_PAGES;
			cdst[k] = (char *)dst[i] + off * PROTO_PAGE_SIZE;
			k++;
		}
	}
	if (ret == 0 && k)
		ret = with_reconnect(ns, l, k, cfirst, cn, cdst, priority);
	release_lane(l);
	return ret;
}

int net_fetch_many(void *ctx, unsigned n, const uint64_t *first,
		   const uint64_t *npages, void *const *dst,
		   unsigned flags)
{
	return fetch_on_lane(ctx, n, first, npages, dst,
			     flags & PC_FETCH_PREFETCH ? PRIO_PREFETCH : PRIO_DEMAND);
}

int net_fetch(void *ctx, uint64_t first, uint64_t npages, void *dst)
{
	return fetch_on_lane(ctx, 1, &first, &npages, &dst, PRIO_DEMAND);
}

bool net_is_zero(void *ctx, uint64_t page)
{
	struct net_source *ns = ctx;
	return bitmap_test(ns->zero_bits, page);
}
