/* SPDX-License-Identifier: MIT */
/*
 * net_push.c - the push receiver: a thread that takes the pages the server
 * streams on the push connection, claims each run as its header arrives,
 * installs it once tag and checksum match, and reconnects when it breaks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_source_int.h"

void ns_push_stop(struct net_source *ns)
{
	if (!ns->push_started)
		return;
	atomic_store(&ns->stopping, true);
	/* Wake a receive in progress.  Under the lock, so that the push
	 * thread cannot close the socket (and its number be reused) between
	 * our look and our shutdown. */
	pthread_mutex_lock(&ns->push_lock);
	if (ns->push_fd >= 0)
		shutdown(ns->push_fd, SHUT_RDWR);
	pthread_mutex_unlock(&ns->push_lock);
	pthread_join(ns->push_thread, NULL);
	ns->push_started = false;
}

static void set_push_fd(struct net_source *ns, int fd)
{
	pthread_mutex_lock(&ns->push_lock);
	ns->push_fd = fd;
	pthread_mutex_unlock(&ns->push_lock);
}

static void close_push_fd(struct net_source *ns, int fd)
{
	pthread_mutex_lock(&ns->push_lock);
	ns->push_fd = -1;
	close(fd);
	pthread_mutex_unlock(&ns->push_lock);
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

/* Receive pushed runs until PUSH_DONE. */
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
		if (ret == 1) {
			atomic_store(&ns->push_done, true);
			return 0;
		}
		if (ret < 0)
			return ret;
	}
}

/*
 * The push connection: receive until the server has pushed everything,
 * reconnecting with backoff when it breaks.  Pages lost with a broken
 * connection are not pushed again; the filler, started when the push ends
 * either way, fetches whatever is still missing.
 */
static void *push_main(void *arg)
{
	struct net_source *ns = arg;
	uint8_t *buf = malloc(PROTO_MAX_PAYLOAD);
	uint64_t deadline = 0, backoff = 10 * 1000000ull;
	bool connected_once = false;

	/* No lower priority: the pages it claimed are ones a vCPU may be
	 * waiting for, and the migration is done only when it is. */
	struct frame_mac mac = { 0 };
	int fd = -1;

	while (buf && !atomic_load(&ns->stopping) && !atomic_load(&ns->push_done) &&
	       !pc_region_complete(ns->region)) {
		fd = ns_open_conn(ns, ROLE_PUSH, now_ns() + 1000000000ull, &mac);
		int ret = fd;
		if (fd >= 0) {
			if (connected_once)
				count(&ns->reconnects, 1);
			connected_once = true;
			deadline = 0;
			backoff = 10 * 1000000ull;
			set_push_fd(ns, fd);
			ret = push_receive(ns, fd, &mac, buf);
			if (ret == 0)
				break;
			close_push_fd(ns, fd);
			fd = -1;
		}
		if (!deadline)
			deadline = now_ns() + (uint64_t)ns->timeout_ms * 1000000ull;
		if (ns_fatal(ret) || !ns_backoff_until(&backoff, deadline))
			break;
	}
	free(buf);
	/* Whatever did not come by push comes by fill. */
	if (!atomic_load(&ns->stopping) && !pc_region_complete(ns->region))
		pc_region_start_fill(ns->region);
	if (fd >= 0)
		close_push_fd(ns, fd);
	return NULL;
}

int pc_net_start_push(pc_source *src, pc_region *r)
{
	if (src->ops.fetch != net_fetch)
		return -EINVAL;
	struct net_source *ns = src->ctx;
	if (ns->push_started)
		return -EBUSY;
	if (pc_region_page_size(r) != PROTO_PAGE_SIZE)
		return pc_region_start_fill(r); /* huge pages: fill pulls them */
	ns->region = r;
	int ret = pthread_create(&ns->push_thread, NULL, push_main, ns);
	if (ret)
		return -ret;
	ns->push_started = true;
	return 0;
}
