/* SPDX-License-Identifier: MIT */
/*
 * registry.c - how a thread that only has an address (the SIGBUS handler,
 * pc_resolve, pc_populate) finds its region, and how destroy knows that
 * nobody is still inside it.
 *
 * A slot keeps its region's bounds beside the pointer, so a lookup never
 * reads another region's struct.  A thread entering a region counts itself
 * in the slot's "inside" counters before it trusts the pointer, and checks
 * the slot again afterwards; registry_remove() clears the pointer, then
 * waits for the counters to drain.  Both sides use sequentially consistent
 * operations, so either the entering thread sees the cleared slot or the
 * remover sees its count (the store-load pattern of Dekker's algorithm).
 * The counters are sharded by thread so that vCPUs of one region do not
 * bounce one cache line between them on every fault.
 *
 * pc_region_wait() needs less than destroy: not that nobody is inside
 * (threads may go on calling pc_resolve() on present pages for ever) but
 * that everybody who was inside when the last page arrived has left.  So
 * the counters come in two sets, and an entering thread counts itself in
 * the set of the slot's current epoch: region_quiesce() moves the epoch
 * on and waits only for the old set to drain, as RCU waits for a grace
 * period.
 *
 * Global state: the table is process wide because the SIGBUS handler is,
 * and it lives in static storage so that it outlives every region.
 */
#include <errno.h>
#include <sched.h>
#include <unistd.h>

#include "internal.h"

#define REGISTRY_SHARDS 16

static struct registry_slot {
	_Atomic(struct pc_region *) region;
	_Atomic uintptr_t base;
	_Atomic uint64_t size;
	_Atomic(struct pc_region *) claim; /* owner while added */
	_Atomic unsigned epoch; /* which set entering threads count in */
	struct {
		_Atomic int64_t n;
	} __attribute__((aligned(64))) inside[2][REGISTRY_SHARDS];
} registry[PC_MAX_REGIONS];

/* This thread's shard: spread by thread id, fixed for the thread. */
static unsigned my_shard(void)
{
	static __thread unsigned shard __attribute__((tls_model("initial-exec")));
	if (!shard)
		shard = (unsigned)gettid() % REGISTRY_SHARDS + 1;
	return shard - 1;
}

int registry_add(struct pc_region *r)
{
	for (unsigned i = 0; i < PC_MAX_REGIONS; i++) {
		struct pc_region *empty = NULL;
		if (!atomic_compare_exchange_strong(&registry[i].claim, &empty, r))
			continue;
		/* An adopted region's addresses are another process's: no
		 * address of ours may find it (size 0 matches nothing). */
		atomic_store(&registry[i].base, (uintptr_t)r->mem.guest);
		atomic_store(&registry[i].size, r->mem.adopted ? 0 : r->opts.size);
		atomic_store(&registry[i].region, r);
		r->registry_index = i;
		r->registered = true;
		return 0;
	}
	return -ENOSPC;
}

static bool slot_holds(struct registry_slot *s, struct pc_region *r,
		       uintptr_t a, size_t len)
{
	if (atomic_load(&s->region) != r)
		return false;
	uintptr_t base = atomic_load(&s->base);
	uint64_t size = atomic_load(&s->size);
	return a >= base && a - base < size && len <= size - (a - base);
}

struct pc_region *region_enter(const void *addr, size_t len,
			       struct region_entry *e)
{
	uintptr_t a = (uintptr_t)addr;
	unsigned k = my_shard();
	for (unsigned i = 0; i < PC_MAX_REGIONS; i++) {
		struct registry_slot *s = &registry[i];
		struct pc_region *r = atomic_load_explicit(&s->region,
							   memory_order_acquire);
		if (!r || !slot_holds(s, r, a, len))
			continue;
		unsigned set = atomic_load(&s->epoch) & 1;
		atomic_fetch_add(&s->inside[set][k].n, 1);
		/* Whatever region this slot holds now, if it is @r with the
		 * same bounds it is alive until we leave. */
		if (slot_holds(s, r, a, len)) {
			*e = (struct region_entry){ i, set, k };
			return r;
		}
		atomic_fetch_sub(&s->inside[set][k].n, 1);
	}
	return NULL;
}

int region_enter_direct(struct pc_region *r, struct region_entry *e)
{
	if (!r->registered)
		return -EINVAL; /* not started */
	struct registry_slot *s = &registry[r->registry_index];
	unsigned k = my_shard(), set = atomic_load(&s->epoch) & 1;
	atomic_fetch_add(&s->inside[set][k].n, 1);
	if (atomic_load(&s->region) != r) {
		atomic_fetch_sub(&s->inside[set][k].n, 1);
		return -EINVAL; /* being destroyed */
	}
	*e = (struct region_entry){ r->registry_index, set, k };
	return 0;
}

void region_leave(const struct region_entry *e)
{
	atomic_fetch_sub_explicit(&registry[e->index].inside[e->set][e->shard].n,
				  1, memory_order_release);
}

/* Threads counted in set @set of slot @i (acquire: what they did before
 * leaving is seen).  Counts may include threads that entered the slot
 * for nothing and are backing out: that only delays the answer. */
static int64_t inside_count(unsigned i, unsigned set)
{
	int64_t n = 0;
	for (unsigned k = 0; k < REGISTRY_SHARDS; k++)
		n += atomic_load(&registry[i].inside[set][k].n);
	return n;
}

int region_quiesce(struct pc_region *r, uint64_t deadline_ns)
{
	if (!r->registered || atomic_load(&r->quiesced))
		return 0;
	unsigned i = r->registry_index;
	/* The first waiter moves the epoch on and says which set was the
	 * old one; then any waiter may see it empty, each within its own
	 * deadline. */
	bool no = false;
	if (atomic_compare_exchange_strong(&r->quiescing, &no, true))
		atomic_store(&r->quiesce_set,
			     (atomic_fetch_add(&registry[i].epoch, 1) & 1) + 1);
	unsigned set;
	while (!(set = atomic_load(&r->quiesce_set)))
		sched_yield(); /* the first waiter is about to say */
	/* Nobody enters the old set any more; whoever is in it came before
	 * the epoch moved, which was after the last page arrived. */
	while (!atomic_load(&r->quiesced)) {
		if (inside_count(i, set - 1) == 0) {
			atomic_store(&r->quiesced, true);
			break;
		}
		if (deadline_ns && now_ns() >= deadline_ns)
			return -ETIMEDOUT;
		sched_yield();
	}
	return 0;
}

void registry_remove(struct pc_region *r)
{
	if (!r->registered)
		return;
	unsigned i = r->registry_index;
	atomic_store(&registry[i].region, NULL);
	while (inside_count(i, 0) + inside_count(i, 1) != 0)
		sched_yield();
	atomic_store(&registry[i].claim, NULL);
	r->registered = false;
}
