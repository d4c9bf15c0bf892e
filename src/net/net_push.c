/* SPDX-License-Identifier: MIT */
/*
 * net_push.c - the push receiver: a thread that takes the pages the server
 * streams on the push connection, claims each run as its header arrives,
 * installs it once tag and checksum match, and reconnects when it breaks;
 * and the order a working-set replay asks the push to follow.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_source_int.h"

void ns_push_stop(struct net_source *ns)
{
	if (!ns->push_lanes)
		return;
	atomic_store(&ns->stopping, true);
	/* Wake the receives in progress.  Under the lock, so that a push
	 * thread cannot close its socket (and its number be reused) between
	 * our look and our shutdown. */
	pthread_mutex_lock(&ns->push_lock);
	for (unsigned i = 0; i < ns->push_lanes; i++)
		if (ns->push[i].fd >= 0)
			shutdown(ns->push[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&ns->push_lock);
	for (unsigned i = 0; i < ns->push_lanes; i++)
		pthread_join(ns->push[i].thread, NULL);
	ns->push_lanes = 0;
}

static void set_push_fd(struct push_lane *pl, int fd)
{
	pthread_mutex_lock(&pl->ns->push_lock);
	pl->fd = fd;
	pthread_mutex_unlock(&pl->ns->push_lock);
}

static void close_push_fd(struct push_lane *pl)
{
	pthread_mutex_lock(&pl->ns->push_lock);
	close(pl->fd);
	pl->fd = -1;
	pthread_mutex_unlock(&pl->ns->push_lock);
}

/*
 * One pushed frame after its header: a data run is claimed as soon as its
 * fixed part says which pages it carries, so a vCPU that faults on one of
 * them meanwhile waits for this frame rather than asking for the page
 * again; the pages are installed once tag and checksum match, and given
 * back otherwise.  1 at PUSH_DONE, else 0 or a negative errno.
 */
static int push_frame(struct net_source *ns, struct wire_in *in, uint8_t *buf)
{
	const struct frame_hdr *h = &in->h;
	if (h->tag)
		return -EPROTO;
	if (h->type == FRAME_PUSH_DONE && !in->len) {
		int ret = wire_read_tag(in);
		return ret < 0 ? ret : 1;
	}
	if (h->type == FRAME_REFUSE)
		return ns_read_refusal(in);
	struct data_run run;
	int ret = in->len >= PROTO_DATA_FIXED ?
			  wire_read_part(in, buf, PROTO_DATA_FIXED) :
			  -EPROTO;
	if (ret < 0)
		return ret;
	if ((h->type != FRAME_DATA && h->type != FRAME_ZERO) ||
	    proto_get_data_run(buf, in->len, h->type, ns->image.page_count,
			       &run) < 0)
		return -EPROTO;
	uint64_t claimed[OFFER_MAX / 64];
	ret = offer_claim(ns->region, run.first, run.npages, claimed);
	if (ret < 0)
		return ret;
	uint8_t *pages = buf + PROTO_DATA_FIXED;
	size_t bytes = (size_t)run.npages * PROTO_PAGE_SIZE;
	if (h->type == FRAME_DATA)
		ret = wire_read_part(in, pages, bytes);
	if (ret == 0)
		ret = wire_read_tag(in);
	if (ret == 0 && h->type == FRAME_ZERO)
		memset(pages, 0, bytes);
	if (ret == 0 && proto_run_checksum(&ns->image, run.first, pages, run.npages) !=
			       run.checksum) {
		count(&ns->checksum_failures, 1);
		ret = -EBADMSG; /* those pages come again, or by fill */
	}
	if (ret < 0) {
		offer_release(ns->region, run.first, run.npages, claimed);
		return ret;
	}
	count(&ns->bytes_received, PROTO_HDR_LEN + h->len);
	count(&ns->pages_pushed, run.npages);
	return offer_install(ns->region, run.first, run.npages, claimed, pages);
}

/* Receive pushed runs: 1 at PUSH_DONE, 0 when stopped or complete, or a
 * negative errno. */
static int push_receive(struct net_source *ns, int fd, struct frame_mac *mac,
			uint8_t *buf)
{
	for (;;) {
		if (atomic_load(&ns->stopping) || pc_region_complete(ns->region))
			return 0;
		struct wire_in in;
		/* A quiet push (everything sent) is fine: wait in slices so
		 * completion and stop are noticed.  Once a frame starts, all
		 * of it is read under the full deadline: a header cut by a
		 * slice would leave the stream mid-frame. */
		int ret = net_wait_readable(fd, now_ns() + 200000000ull);
		if (ret == -ETIMEDOUT)
			continue;
		if (ret < 0)
			return ret;
		uint64_t deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
		ret = wire_read_hdr(&in, fd, mac, DIR_TO_CLIENT, PROTO_MAX_PAYLOAD,
				    deadline);
		if (ret == 0)
			ret = push_frame(ns, &in, buf);
		if (ret != 0)
			return ret; /* 1: PUSH_DONE */
	}
}

/*
 * A push connection: receive until the server has pushed everything,
 * reconnecting with backoff when it breaks.  Pages lost with a broken
 * connection are not pushed again; the filler, started when the last
 * push connection ends either way, fetches whatever is still missing.
 */
static void *push_main(void *arg)
{
	struct push_lane *pl = arg;
	struct net_source *ns = pl->ns;
	uint8_t *buf = malloc(PROTO_MAX_PAYLOAD);
	uint64_t deadline = 0, backoff = 10 * 1000000ull;
	bool connected_once = false;

	/* No lower priority: the pages it claimed are ones a vCPU may be
	 * waiting for, and the migration is done only when it is. */
	struct frame_mac mac = { 0 };

	while (buf && !atomic_load(&ns->stopping) && !pl->done &&
	       !pc_region_complete(ns->region)) {
		int fd = ns_open_conn(ns, ROLE_PUSH, now_ns() + 1000000000ull, &mac);
		int ret = fd;
		if (fd >= 0) {
			if (connected_once)
				count(&ns->reconnects, 1);
			connected_once = true;
			deadline = 0;
			backoff = 10 * 1000000ull;
			set_push_fd(pl, fd);
			ret = push_receive(ns, fd, &mac, buf);
			close_push_fd(pl);
			if (ret == 1)
				pl->done = true;
			if (ret >= 0)
				break;
		}
		if (!deadline)
			deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
		if (ns_fatal(ret) || !ns_backoff_until(&backoff, deadline))
			break;
	}
	free(buf);
	if (!pl->done)
		atomic_fetch_add(&ns->push_broken, 1);
	if (atomic_fetch_sub(&ns->push_live, 1) != 1)
		return NULL;
	/* The last one out.  PUSH_DONE on one connection says the server
	 * sent everything; on all of them, that all of it arrived. */
	if (!atomic_load(&ns->push_broken))
		atomic_store(&ns->push_done, true);
	/* Whatever did not come by push comes by fill. */
	if (!atomic_load(&ns->stopping) && !pc_region_complete(ns->region))
		pc_region_start_fill(ns->region);
	return NULL;
}

int pc_net_start_push(pc_source *src, pc_region *r)
{
	if (src->ops.fetch != net_fetch)
		return -EINVAL;
	struct net_source *ns = src->ctx;
	if (ns->push_lanes)
		return -EBUSY;
	if (pc_region_page_size(r) != PROTO_PAGE_SIZE)
		return pc_region_start_fill(r); /* huge pages: fill pulls them */
	ns->region = r;
	/* Counted live before any starts, so that the first to end cannot
	 * take itself for the last. */
	atomic_store(&ns->push_live, ns->push_want);
	for (unsigned i = 0; i < ns->push_want; i++) {
		ns->push[i] = (struct push_lane){ .ns = ns, .fd = -1 };
		int ret = pthread_create(&ns->push[i].thread, NULL, push_main,
					 &ns->push[i]);
		if (ret) {
			/* Those running go on; the rest never will.  If the
			 * running ones ended already, the fill is ours to
			 * start. */
			unsigned never = ns->push_want - i;
			if (!i)
				return -ret;
			if (atomic_fetch_sub(&ns->push_live, never) == never)
				pc_region_start_fill(r);
			break;
		}
		ns->push_lanes++;
	}
	fed_in_background(r);
	return 0;
}

/* Frames of a PUSH_ORDER sent per send(). */
#define ORDER_BATCH 64u

/*
 * The pages a replay will want, in its order, as PUSH_ORDER frames on a
 * connection of their own (the session's, so the server's push threads
 * see them): consecutive pages go as one run, and runs past what a
 * session keeps are left out.  Nothing answers it; it is a hint, and a
 * failure only leaves the push in address order.
 */
int ns_push_order(void *ctx, const uint64_t *pages, uint64_t n)
{
	struct net_source *ns = ctx;
	enum { FRAME_MAX = PROTO_HDR_LEN + PROTO_ORDER_FRAME_RUNS * PROTO_ORDER_RUN_LEN +
			   PROTO_TAG_LEN };
	uint8_t payload[PROTO_ORDER_FRAME_RUNS * PROTO_ORDER_RUN_LEN];
	struct order_run *runs = malloc((n ? n : 1) * sizeof(*runs));
	uint8_t *buf = malloc(ORDER_BATCH * FRAME_MAX);
	uint64_t nruns = 0, listed = 0;
	int ret = -ENOMEM;
	if (!runs || !buf)
		goto out;
	for (uint64_t i = 0; i < n && nruns <= PROTO_ORDER_MAX_RUNS; i++) {
		struct order_run *last = nruns ? &runs[nruns - 1] : NULL;
		if (pages[i] >= ns->image.page_count)
			continue;
		if (last && pages[i] == last->first + last->npages &&
		    last->npages < PROTO_MAX_RUN)
			last->npages++;
		else
			runs[nruns++] = (struct order_run){ .first = pages[i], .npages = 1 };
		listed++;
	}
	if (nruns > PROTO_ORDER_MAX_RUNS) /* the run that went past */
		listed -= runs[--nruns].npages;
	uint64_t deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
	struct frame_mac mac;
	int fd = ns_open_conn(ns, ROLE_DEMAND, deadline, &mac);
	if (fd < 0) {
		ret = fd;
		goto out;
	}
	ret = 0;
	for (uint64_t at = 0; at < nruns && ret == 0;) {
		size_t len = 0;
		for (unsigned f = 0; f < ORDER_BATCH && at < nruns; f++) {
			unsigned k = nruns - at < PROTO_ORDER_FRAME_RUNS ?
					     (unsigned)(nruns - at) : PROTO_ORDER_FRAME_RUNS;
			len += wire_put(buf + len, &mac, DIR_TO_SERVER, FRAME_PUSH_ORDER, 0,
					payload, proto_put_order(payload, runs + at, k));
			at += k;
		}
		ret = net_send_all(fd, buf, len, deadline);
	}
	close(fd);
	if (ret == 0)
		count(&ns->pages_ordered, listed);
out:
	free(runs);
	free(buf);
	return ret;
}
