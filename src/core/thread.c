/* SPDX-License-Identifier: MIT */
/*
 * thread.c - the threads that fault: each attached thread's stats slot and
 * bounce buffer, found from the thread itself (its binding) or from a
 * fault message's thread id, and the pool of bounce buffers that threads
 * nobody attached borrow.
 *
 * The SIGBUS handler must find the faulting thread's slot without a lock
 * or an allocation.  Initial-exec TLS is a fixed offset from the thread
 * pointer, safe to read in a signal handler: that is why the binding
 * lives in TLS.  A binding names its region by pointer and generation,
 * because a thread may outlive a region whose address a new one gets.
 * Bounce buffers are never on the signal stack, so a thread with a small
 * stack or an alternate signal stack can fault.  They are one mapping made
 * at create, a buffer per slot and the pool's, virtual memory touched only
 * as used: mapping memory while other threads sleep in the userfaultfd
 * lost one of their wake-ups now and then (6.18; test_same_page_race hung
 * in 1 run of 5 when each attach mapped its own).
 */
#include <errno.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define PC_BINDINGS 4

static __thread struct binding {
	struct pc_region *r;
	uint64_t generation;
	unsigned id;
} bindings[PC_BINDINGS] __attribute__((tls_model("initial-exec")));

static struct binding *find_binding(const struct pc_region *r)
{
	for (unsigned i = 0; i < PC_BINDINGS; i++)
		if (bindings[i].r == r && bindings[i].generation == r->generation)
			return &bindings[i];
	return NULL;
}

/* Bytes of the one mapping: a buffer per attachable slot and the pool. */
static size_t scratch_area_len(const struct pc_region *r)
{
	return (size_t)(r->nslots - 1 + PC_SCRATCH_POOL) * PC_SCRATCH_BYTES;
}

int pc_thread_attach(pc_region *r, unsigned id)
{
	if (id >= r->opts.max_threads)
		return -EINVAL;
	struct thread_slot *slot = &r->slots[id];
	struct binding *b = find_binding(r);
	for (unsigned i = 0; !b && i < PC_BINDINGS; i++)
		if (!bindings[i].r)
			b = &bindings[i];
	if (!b) { /* full: the oldest binding goes */
		for (unsigned i = 1; i < PC_BINDINGS; i++)
			bindings[i - 1] = bindings[i];
		b = &bindings[PC_BINDINGS - 1];
	}
	*b = (struct binding){ r, r->generation, id };
	atomic_store(&slot->tid, (int32_t)gettid());
	unsigned hw = atomic_load(&r->attached_hw);
	while (hw < id + 1 &&
	       !atomic_compare_exchange_weak(&r->attached_hw, &hw, id + 1))
		;
	return 0;
}

void pc_thread_detach(pc_region *r)
{
	struct binding *b = find_binding(r);
	if (!b)
		return;
	atomic_store(&r->slots[b->id].tid, 0);
	b->r = NULL;
}

struct thread_slot *region_current_slot(struct pc_region *r)
{
	const struct binding *b = find_binding(r);
	return b ? &r->slots[b->id] : &r->slots[r->nslots - 1];
}

struct thread_slot *region_slot_by_tid(struct pc_region *r, int32_t tid)
{
	unsigned hw = atomic_load_explicit(&r->attached_hw,
					   memory_order_relaxed);
	for (unsigned i = 0; i < hw; i++)
		if (atomic_load_explicit(&r->slots[i].tid,
					 memory_order_relaxed) == tid)
			return &r->slots[i];
	return &r->slots[r->nslots - 1];
}

int scratch_create(struct pc_region *r)
{
	void *p = mmap(NULL, scratch_area_len(r), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	r->scratch_area = p;
	for (unsigned i = 0; i + 1 < r->nslots; i++)
		atomic_store(&r->slots[i].scratch, r->scratch_area + (size_t)i * PC_SCRATCH_BYTES);
	for (unsigned i = 0; i < PC_SCRATCH_POOL; i++)
		r->pool[i].buf = r->scratch_area + (size_t)(r->nslots - 1 + i) * PC_SCRATCH_BYTES;
	return 0;
}

void scratch_free_all(struct pc_region *r)
{
	if (r->scratch_area)
		munmap(r->scratch_area, scratch_area_len(r));
}

char *scratch_claim(struct pc_region *r, struct thread_slot *slot,
		    _Atomic bool **busy)
{
	char *own = atomic_load_explicit(&slot->scratch, memory_order_relaxed);
	bool idle = false;
	/* The attached thread's own buffer, unless this is a nested fault
	 * (a signal handler of the embedder touching guest memory while the
	 * thread was resolving another). */
	if (own && atomic_compare_exchange_strong(&slot->scratch_busy, &idle, true)) {
		*busy = &slot->scratch_busy;
		return own;
	}
	for (;;) {
		for (unsigned i = 0; i < PC_SCRATCH_POOL; i++) {
			idle = false;
			if (atomic_compare_exchange_strong(&r->pool[i].busy, &idle, true)) {
				*busy = &r->pool[i].busy;
				return r->pool[i].buf;
			}
		}
		sched_yield(); /* every buffer in use: one comes back soon */
	}
}

void scratch_release(_Atomic bool *busy)
{
	atomic_store_explicit(busy, false, memory_order_release);
}
