/* SPDX-License-Identifier: MIT */
/*
 * server_session.c - sessions (a destination's connections together, the
 * pages it was sent) and the demand requests that move the push streams.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

#define MAX_SESSIONS 64u
/* A demand request this near a stream's position continues it. */
#define STREAM_NEAR 512u

/* Called with the lock held. */
void srv_mark_sent(struct session *ss, uint64_t first, uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++)
		if (!bitmap_test(ss->sent, p)) {
			bitmap_set(ss->sent, p);
			ss->unsent--;
		}
}

void srv_session_free(struct session *ss)
{
	free(ss->order);
	free(ss->listed);
	free(ss->sent);
	free(ss);
}

/*
 * Make room for a new session by forgetting the one that has been without
 * connections longest: a destination cut off and gone must not lock new
 * ones out for the whole session timeout.  (One that does come back
 * starts over, with a full push.)  False when every session is in use.
 */
static bool evict_idle_session(struct pc_server *s)
{
	pthread_mutex_lock(&s->lock);
	struct session **victim = NULL;
	for (struct session **pp = &s->sessions; *pp; pp = &(*pp)->next)
		if (!(*pp)->conns &&
		    (!victim || (*pp)->idle_since < (*victim)->idle_since))
			victim = pp;
	if (victim) {
		struct session *ss = *victim;
		*victim = ss->next;
		s->nsessions--;
		if (!ss->done)
			s->sessions_expired++;
		srv_session_free(ss);
	}
	pthread_mutex_unlock(&s->lock);
	return victim != NULL;
}

struct session *srv_session_get(struct pc_server *s, uint64_t id,
				bool *created)
{
	*created = false;
	for (struct session *ss = s->sessions; ss; ss = ss->next)
		if (ss->id == id && !ss->done)
			return ss;
	if (s->nsessions >= MAX_SESSIONS && !evict_idle_session(s))
		return NULL;
	struct session *ss = calloc(1, sizeof(*ss));
	if (!ss)
		return NULL;
	size_t words = (s->image.page_count + 63) / 64;
	ss->sent = malloc(words * 8);
	if (!ss->sent) {
		free(ss);
		return NULL;
	}
	ss->id = id;
	/* Zero pages travel in the zero map: never pushed. */
	memcpy(ss->sent, s->zero_bits, words * 8);
	ss->unsent = s->image.page_count - s->zero_pages;
	s->nsessions++;
	ss->next = s->sessions;
	s->sessions = ss;
	s->stats.sessions++;
	*created = true;
	return ss;
}

/* A connection of @ss (or none) is gone. */
void srv_session_put(struct pc_server *s, struct session *ss)
{
	if (!ss)
		return;
	pthread_mutex_lock(&s->lock);
	if (--ss->conns == 0)
		ss->idle_since = now_ns();
	pthread_mutex_unlock(&s->lock);
}

/*
 * A demand request that ends before @pos moves the stream it continues:
 * the one whose position is within STREAM_NEAR pages of it, or else the
 * one least recently moved.  Called with the lock held.
 */
static void follow(struct session *ss, uint64_t pos, uint64_t pages)
{
	struct stream *st = &ss->streams[0], *lru = st;
	for (unsigned i = 0; i < PUSH_STREAMS; i++, st++) {
		if (st->used && pos + STREAM_NEAR >= st->pos &&
		    pos <= st->pos + STREAM_NEAR)
			break;
		if (st->used < lru->used)
			lru = st;
	}
	if (st == ss->streams + PUSH_STREAMS)
		st = lru;
	st->pos = pos % pages;
	st->used = now_ns();
}

void srv_on_request(struct pc_server *s, struct conn *c, uint32_t tag,
		    const uint8_t *p, size_t len)
{
	struct request rq;
	int ret = proto_get_request(p, len, s->image.page_count, &rq);
	if (ret == -ERANGE)
		return srv_refuse(s, c, REFUSE_RANGE, "request outside the image");
	if (ret < 0 || c->hello.role != ROLE_DEMAND)
		return srv_refuse(s, c, REFUSE_BAD_FRAME, "malformed REQUEST");
	size_t queued = c->out_len - c->out_off;
	ret = srv_queue_pages(s, c, rq.first, rq.npages, tag, true);
	if (ret == 0)
		s->out_total += c->out_len - c->out_off - queued;
	if (ret == -ENOMEM)
		return srv_refuse(s, c, REFUSE_BUSY, "out of memory");
	if (ret < 0)
		return srv_refuse(s, c, REFUSE_STALE, STALE_REASON);
	s->stats.requests++;
	s->stats.pages_demand += rq.npages;
	pthread_mutex_lock(&s->lock);
	srv_mark_sent(c->session, rq.first, rq.npages);
	if (rq.priority == PRIO_DEMAND) /* the push follows the guest */
		follow(c->session, rq.first + rq.npages, s->image.page_count);
	pthread_mutex_unlock(&s->lock);
}

/* Forget sessions that finished, or whose destination never came back. */
void srv_reap_sessions(struct pc_server *s)
{
	uint64_t now = now_ns(), limit = (uint64_t)s->opts.session_timeout_ms * 1000000ull;
	pthread_mutex_lock(&s->lock);
	for (struct session **pp = &s->sessions; *pp;) {
		struct session *ss = *pp;
		if (!ss->conns && (ss->done || now - ss->idle_since > limit)) {
			*pp = ss->next;
			s->nsessions--;
			if (!ss->done)
				s->sessions_expired++;
			srv_session_free(ss);
		} else {
			pp = &ss->next;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

/* Append runs to @ss's order: 0, -E2BIG past PROTO_ORDER_MAX_RUNS, or
 * -ENOMEM.  Lock held. */
static int append_order(struct session *ss, uint64_t page_count,
			const struct order_run *runs, unsigned n)
{
	if (n > PROTO_ORDER_MAX_RUNS - ss->order_len)
		return -E2BIG;
	if (!ss->listed && !(ss->listed = calloc((page_count + 63) / 64, 8)))
		return -ENOMEM;
	if (ss->order_len + n > ss->order_cap) {
		uint32_t cap = ss->order_cap ? ss->order_cap : 256;
		while (cap < ss->order_len + n)
			cap *= 2;
		struct order_run *o = realloc(ss->order, (size_t)cap * sizeof(*o));
		if (!o)
			return -ENOMEM;
		ss->order = o;
		ss->order_cap = cap;
	}
	memcpy(ss->order + ss->order_len, runs, n * sizeof(*runs));
	ss->order_len += n;
	for (unsigned i = 0; i < n; i++)
		for (uint64_t p = runs[i].first; p < runs[i].first + runs[i].npages; p++)
			bitmap_set(ss->listed, p);
	return 0;
}

/* A PUSH_ORDER: the runs go to the end of the session's order (a
 * destination sends its whole order in several frames). */
void srv_on_order(struct pc_server *s, struct conn *c, const uint8_t *p,
		  size_t len)
{
	struct order_run runs[PROTO_ORDER_FRAME_RUNS];
	unsigned n;
	int ret = proto_get_order(p, len, s->image.page_count, runs, &n);
	if (ret == -ERANGE)
		return srv_refuse(s, c, REFUSE_RANGE, "push order outside the image");
	if (ret < 0 || c->hello.role != ROLE_DEMAND)
		return srv_refuse(s, c, REFUSE_BAD_FRAME, "malformed PUSH_ORDER");
	pthread_mutex_lock(&s->lock);
	ret = append_order(c->session, s->image.page_count, runs, n);
	pthread_mutex_unlock(&s->lock);
	_Static_assert(PROTO_ORDER_MAX_RUNS == 1u << 20, "the reason below");
	if (ret == -E2BIG)
		return srv_refuse(s, c, REFUSE_BAD_FRAME,
				  "push order longer than 1048576 runs");
	if (ret < 0)
		return srv_refuse(s, c, REFUSE_BUSY, "out of memory");
}
