/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the library's files share and nobody else sees.
 *
 * The one idea: a region has exactly one page-state table.  Every path that
 * installs memory (a SIGBUS on a vCPU, a wait-mode handler thread, the
 * filler, pc_populate) claims pages in that table before fetching them and
 * publishes them after installing, so each page is fetched once no matter
 * who asks for it or how many ask at once.
 */
#ifndef PC_INTERNAL_H
#define PC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "hist.h"
#include "postcopy.h"

/* Newer than some installed headers. */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21 << 26)
#endif

#define PC_HUGE_PAGE_SIZE (2ul << 20)
#define PC_DEFAULT_MAX_THREADS 64
#define PC_DEFAULT_FETCH_RETRY_MS 10000
#define PC_MAX_REGIONS 64
/* Largest run one fault or fill step installs: 2 MiB of 4 KiB pages. */
#define PC_MAX_RUN_BYTES (2ul << 20)
/* The background filler's short step (fill.c), the longest a demand fault
 * waits behind it; while pages come in the background, also the least an
 * adaptive window brings (install.c). */
#define PC_FILL_STEP_BYTES (64u << 10)
/* The most one run brings while demand faults come and pages come in the
 * background too: the filler's step then, and the most an adaptive window
 * grows to (install.c); a server's push frame is as large.  The longest a
 * fault that lands on such pages in flight waits behind them. */
#define PC_BUSY_RUN_BYTES (256u << 10)
/* Threads the filler may run (opts.fillers). */
#define PC_MAX_FILLERS 8u
/* Bounce buffers (thread.c): one per thread slot and a pool for
 * unattached threads, all mapped at create; virtual memory, touched only
 * as used. */
#define PC_SCRATCH_BYTES PC_MAX_RUN_BYTES
#define PC_SCRATCH_POOL 4
/* Runs one fetch_many call may carry. */
#define PC_MAX_BATCH 64

/* ---- sources (source.c) ---- */

struct pc_source {
	struct pc_source_ops ops;
	unsigned flags; /* PC_SOURCE_* */
	void *ctx;
	uint64_t size;
	unsigned delay_us;
	enum pc_delay_kind delay_kind;
	/* A source that streams pages nobody asked for (the network push)
	 * takes an order to stream @n 4 KiB pages in, first; NULL for the
	 * others.  0 or a negative errno; a hint, nothing depends on it. */
	int (*follow)(void *ctx, const uint64_t *pages, uint64_t n);
	/* A source that knows its contents' identity without reading them
	 * (the network source: its server proved it) says it here; NULL
	 * for the others, which pc_image_id_of() reads whole. */
	int (*identity)(void *ctx, struct pc_image_id *out);
	/* A source whose pages lie in memory as they are (a mapped image
	 * file) gives their address here, for an install that copies them
	 * in with the kernel (memory_takes_views()): no bounce buffer, one
	 * copy instead of two.  NULL for the others.  Async-signal-safe. */
	const void *(*view)(void *ctx, uint64_t first, uint64_t npages);
	/* A source that streams the whole image into a region by itself,
	 * installing pages as they arrive (the HTTP source: ranges in
	 * flight, each page installed from the transfer's own buffer),
	 * starts that here in place of the filler's threads, and calls
	 * fill_rest() as it ends.  0, or a negative errno (the filler's
	 * threads then start instead).  NULL for the others. */
	int (*stream)(void *ctx, struct pc_region *r);
};

/* One request's worth of injected latency.  Async-signal-safe. */
void source_delay(const struct pc_source *src);
/* Spin-wait hint for the CPU (pause, yield), or nothing. */
void cpu_relax(void);

/* Wake every thread sleeping on @word (futex).  Async-signal-safe. */
void futex_wake_all(_Atomic uint32_t *word);

/* Monotonic clock in ns.  Async-signal-safe (vDSO clock_gettime). */
uint64_t now_ns(void);
/* Sleep @ns, through signals.  Async-signal-safe (nanosleep). */
void sleep_ns(uint64_t ns);

/* ---- page bitmaps (zero pages, pages sent) ---- */
static inline bool bitmap_test(const uint64_t *bits, uint64_t i)
{
	return (bits[i / 64] >> (i % 64)) & 1;
}

static inline void bitmap_set(uint64_t *bits, uint64_t i)
{
	bits[i / 64] |= 1ull << (i % 64);
}

/*
 * Set the bits of the 4 KiB pages of file @fd (@size bytes) that lie
 * wholly in holes (SEEK_HOLE) in @zero_bits; returns how many.  A
 * filesystem without SEEK_HOLE reports one data extent: correct, just not
 * sparse.  (source_file.c)
 */
uint64_t find_holes(int fd, uint64_t size, uint64_t *zero_bits);

/* ---- page state ---- */

enum page_state {
	PAGE_MISSING = 0,
	PAGE_INFLIGHT = 1, /* claimed: one thread is fetching/installing */
	PAGE_PRESENT = 2,
	PAGE_WAITERS = 4,  /* flag on INFLIGHT: someone sleeps on the futex */
};

/* Where an installed page came from, for the stats. */
enum origin {
	ORIGIN_DEMAND,
	ORIGIN_PREFETCH,
	ORIGIN_FILL,
	ORIGIN_REPLAY,
};

/*
 * Per-thread counters.  Only the owning thread writes its slot (except the
 * shared "other" slot), so the relaxed atomic adds never contend; they are
 * atomic only so that a concurrent pc_region_stats() reads whole values.
 * Cache-line aligned so neighbouring vCPUs do not share a line.
 */
#define RA_STREAMS 8 /* sequential streams followed per thread slot */

struct thread_slot {
	_Atomic int32_t tid; /* wait mode: maps a fault's ptid to this slot */
	_Atomic uint64_t faults;
	_Atomic uint64_t blocked_ns;
	_Atomic uint64_t pages[4]; /* by enum origin */
	_Atomic uint64_t zero_pages;
	_Atomic uint64_t dups_avoided;
	_Atomic uint64_t refaults;
	_Atomic uint64_t bytes_fetched;
	_Atomic uint64_t fetches;
	_Atomic uint64_t fetch_retries;
	_Atomic uint64_t pages_removed;
	/* The thread's latest demand fault, for the filler to follow: page
	 * + 1 and when (each thread its own, so no line is shared). */
	_Atomic uint64_t last_fault, last_fault_ns;
	/* PC_WINDOW_AUTO: sequential streams seen on this slot, each the
	 * page after its last window + 1 (0: none) and that window's size;
	 * several, since "other" serves every unattached thread (a VMM's
	 * vCPUs behind an adopted userfaultfd, which tells no thread apart),
	 * and a vCPU may walk more than one area.  ra_victim picks the one a
	 * new stream replaces. */
	_Atomic uint64_t ra_next[RA_STREAMS];
	_Atomic uint32_t ra_window[RA_STREAMS];
	_Atomic uint32_t ra_victim;
	_Atomic(char *) scratch;    /* attached threads: bounce buffer */
	_Atomic bool scratch_busy;
	struct hist latency;
} __attribute__((aligned(64)));

struct uffd_slice {
	int fd;
	uint64_t first; /* first page covered */
	uint64_t npages;
};

/*
 * The memory a region installs into (region.c sets it up, uffd.c installs
 * into it): its own memfd (shmem or hugetlb), registered MINOR, filled
 * through an unregistered alias and mapped with CONTINUE; its own
 * anonymous memory, registered MISSING, filled with COPY and ZEROPAGE; or
 * another process's memory, reached only through the userfaultfd it
 * handed over (adopted: MISSING, COPY/ZEROPAGE, 4 KiB or 2 MiB pages).
 */
struct region_memory {
	bool shared;	   /* shmem or hugetlb: MINOR + CONTINUE */
	bool adopted;	   /* another process's memory (PC_BACKEND_ADOPTED) */
	int adopted_fd;	   /* its userfaultfd until a slice owns it */
	/* Where the pages are: the guest view from page 0 on, or for an
	 * adopted region the owner's ranges, end to end (range_of()). */
	struct remote_range {
		uint64_t base, first, npages;
	} *ranges;
	unsigned nranges;
	/* Adopted: pages the owner gave back (UFFD_EVENT_REMOVE), which
	 * read as zeros from then on; a bit per page.  The owner zaps them
	 * as soon as the event is read, so reading events (write-locked,
	 * bits set before unlocking) excludes installing (read-locked from
	 * the bit check to the copy): a copy that saw no bit either ran
	 * before the read, and the zap empties it, or fails with EAGAIN
	 * because the event is still queued. */
	_Atomic uint64_t *removed;
	pthread_rwlock_t remove_lock;
	bool write_direct; /* contents go straight into the alias mapping */

	int memfd;	/* shared backends */
	char *guest;	/* the view the guest uses, registered */
	char *alias;	/* shared backends: unregistered second view */

	/* The userfaultfds, each over a slice of the pages. */
	unsigned nslices;
	struct uffd_slice *slices;
};

/*
 * What installs pages besides the faulting threads themselves: wait
 * mode's handler threads (fault_wait.c), the background filler (fill.c)
 * and a working-set replay (src/ws/ws_replay.c).  The network push is the
 * network source's own (src/net/net_push.c) and installs through
 * pc_region_offer()'s two steps.
 */
struct region_feeders {
	pthread_t *handlers;
	unsigned nhandlers;
	int stop_fd; /* eventfd: tells handler threads and filler to quit */
	/* The filler's threads (opts.fillers), and where they are: the
	 * pace is theirs to share under @fill_lock, which each holds from
	 * choosing its next step until that step's data is fetched, so the
	 * source is read in the filler's order, one read at a time, while
	 * the installs overlap. */
	pthread_t fillers[PC_MAX_FILLERS];
	unsigned nfillers;
	bool filler_started;
	pthread_mutex_t fill_lock;
	struct fill_pace {
		uint64_t cursor, seen_fault, step, faults, waits;
		uint64_t small, big, busy; /* step sizes (pace_init()) */
	} pace;
	/* Set once pages come in the background (fed_in_background()). */
	_Atomic bool background;
	/* The filler waits while @replaying. */
	struct ws_replay *replay;
	_Atomic bool replaying;
};

/* A source's stream (pc_source.stream) ended: the filler's threads
 * bring whatever it did not, unless the region is done or stopping. */
void fill_rest(struct pc_region *r);
/* The first missing page at or after @from (wrapping), npages if none;
 * and the page + 1 of the guest's newest demand fault (0: none yet):
 * where a source's stream goes next. */
uint64_t fill_next_missing(struct pc_region *r, uint64_t from);
uint64_t fill_latest_fault(struct pc_region *r);

/* From now on every page comes in the background, by the filler or a
 * source's push: a fault's adaptive window starts at PC_FILL_STEP_BYTES
 * and grows to PC_BUSY_RUN_BYTES (claim_readahead()). */
void fed_in_background(struct pc_region *r);

/* Sources that are not async-signal-safe: an exit-mode faulting thread
 * hands its fetch to these threads and installs the page itself
 * (fetch.c). */
struct fetch_handoff {
	_Atomic(struct fetch_job *) jobs;
	_Atomic uint32_t jobs_seq; /* futex word: bumped on every job */
	_Atomic bool fetchers_stop;
	pthread_t *fetchers;
	unsigned nfetchers;
};

/*
 * A region: the pager (the page-state table, present counts, per-thread
 * slots, completion and errors; install.c), the memory it installs into,
 * its source, and what feeds it besides demand faults.
 */
struct pc_region {
	struct pc_region_opts opts;
	struct pc_source *src;
	uint64_t page_size;
	uint64_t npages;
	struct region_memory mem;
	struct region_feeders feed;
	struct fetch_handoff handoff;
	_Atomic bool stopping; /* destroy has begun: background threads quit */

	_Atomic uint32_t *state; /* enum page_state per page */
	/*
	 * Pages published PRESENT, counted per chunk of PRESENT_CHUNK pages
	 * (vCPUs installing in different parts of memory touch different
	 * counters), and the chunks that are full: the thread that fills
	 * the last chunk knows the region is complete without a scan.
	 */
	struct {
		_Atomic uint32_t n;
	} __attribute__((aligned(64))) *chunk_present; /* a line each */
	uint64_t nchunks;
	_Atomic uint64_t chunks_full;
	/* The same pages, a bit each (set with the count): the filler finds
	 * the next page not present a word of 64 pages at a time. */
	_Atomic uint64_t *present_bits;

	/* Completion: futex word, 0 while running, 1 complete, 2 failed. */
	_Atomic uint32_t done;
	/* The first error: claimed, then its message written, then the code
	 * published (release), so whoever sees the code reads a whole
	 * message.  region_set_error*() and region_fail() keep that order. */
	_Atomic bool error_claimed;
	_Atomic int error;
	char errmsg[256];

	uint64_t start_ns;
	_Atomic uint64_t end_ns;

	/* Registry slot while started (registry.c). */
	unsigned registry_index;
	bool registered;
	_Atomic bool quiescing, quiesced; /* region_quiesce() */
	_Atomic unsigned quiesce_set;	  /* the set it drains, + 1; 0 before */
	/* Unique among the process's regions: a thread's binding names a
	 * region by pointer and generation, since a new region may get the
	 * address of a destroyed one. */
	uint64_t generation;

	unsigned nslots; /* max_threads + 1: the last one is "other" */
	struct thread_slot *slots;
	_Atomic unsigned attached_hw; /* highest attached slot id + 1 */
	struct {
		char *buf;
		_Atomic bool busy;
	} pool[PC_SCRATCH_POOL]; /* bounce buffers for unattached threads */
	char *scratch_area;	 /* one mapping: the slots' buffers, the pool's */

	/* Demand-fault hook (pc_region_set_fault_hook). */
	pc_fault_hook *fault_hook;
	void *fault_hook_arg;
};

/* ---- thread.c: bindings, stats slots, bounce buffers ---- */
struct thread_slot *region_current_slot(struct pc_region *r);
struct thread_slot *region_slot_by_tid(struct pc_region *r, int32_t tid);
/* Map every bounce buffer, at create (never while threads fault). */
int scratch_create(struct pc_region *r);
void scratch_free_all(struct pc_region *r);
/* A bounce buffer of PC_SCRATCH_BYTES for the calling thread: its own if
 * attached, else one of the pool's (waiting for one).  Async-signal-safe. */
char *scratch_claim(struct pc_region *r, struct thread_slot *slot,
		    _Atomic bool **busy);
void scratch_release(_Atomic bool *busy);

/* ---- region.c ---- */
/* True once every page is present (completion may still be unregistering). */
static inline bool region_all_present(struct pc_region *r)
{
	return atomic_load_explicit(&r->chunks_full, memory_order_acquire) ==
	       r->nchunks;
}
#define PRESENT_CHUNK 512u
/* Count @n pages from @first published; true when that completed the
 * region.  (install.c) */
bool count_present(struct pc_region *r, uint64_t first, uint64_t n);
/* Pages present, summed over the chunks: a snapshot. */
uint64_t region_present_count(const struct pc_region *r);
/*
 * Background threads (handlers, filler) are done at destroy, or once every
 * page is present: also when an error came first and the pages arrived
 * anyway, where done stays "failed" but stop_fd stays readable.
 */
static inline bool region_finished(struct pc_region *r)
{
	return atomic_load(&r->stopping) || region_all_present(r);
}
void region_set_error(struct pc_region *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void region_set_error_str(struct pc_region *r, int err, const char *msg);
bool page_is_zero(struct pc_region *r, uint64_t page);
/* True when page @page must be installed as zeros: the source says it is
 * zero, or its owner removed it. */
static inline bool page_gets_zeros(struct pc_region *r, uint64_t page)
{
	return (r->mem.removed &&
		(atomic_load_explicit(&r->mem.removed[page / 64], memory_order_acquire) >>
		 (page % 64)) & 1) ||
	       page_is_zero(r, page);
}

/* Address of page @p, and how many pages from @p on are contiguous there
 * (at most @n).  (region.c) */
uintptr_t page_addr(const struct pc_region *r, uint64_t p, uint64_t n,
		    uint64_t *contiguous);
/* Page at address @addr of the region (its guest view, or for an adopted
 * region an address of the owner's); r->npages when none. */
uint64_t addr_page(const struct pc_region *r, uintptr_t addr);

/* ---- uffd.c: every userfaultfd ioctl goes through here ---- */
int uffd_open(uint64_t features, int *fd_out);
int uffd_register(int fd, void *addr, uint64_t len, bool minor);
int uffd_unregister(int fd, void *addr, uint64_t len);
/* Install helpers over a page range of a region: split per slice, retry
 * EAGAIN.  @wake false = DONTWAKE.  A page the kernel has mapped already
 * (EEXIST) counts as done with @exist_ok (a refault on a present page);
 * without it (an install of pages we hold in flight) it is -EEXIST: a
 * mapping we did not make.  *@mapped (NULL: not wanted) is how many
 * pages from @first are mapped when it returns, also after a failure part
 * way: the caller must not give those back as missing. */
int region_uffd_copy(struct pc_region *r, uint64_t first, uint64_t n,
		     const void *from, bool wake, bool exist_ok, uint64_t *mapped);
int region_uffd_zeropage(struct pc_region *r, uint64_t first, uint64_t n,
			 bool wake, bool exist_ok, uint64_t *mapped);
int region_uffd_continue(struct pc_region *r, uint64_t first, uint64_t n,
			 bool wake, bool exist_ok, uint64_t *mapped);
/* Wake whoever sleeps on page @p's fault (UFFDIO_WAKE of that page). */
int region_uffd_wake(struct pc_region *r, uint64_t p);

/* ---- memory.c: putting pages into the region's memory, by its kind ----
 * Each reports in *@mapped the pages from @first mapped when it returns,
 * also after a failure part way. */
struct install_ctx;
/* Where a PC_SOURCE_DIRECT source may fetch pages from @first on
 * straight into the memory, or NULL (a bounce buffer is needed). */
char *memory_direct(const struct pc_region *r, uint64_t first);
/* Whether memory_put_data() copies with the kernel (COPY), so that it may
 * read a source's view (pc_source.view): a file truncated under it then
 * fails the copy with EFAULT instead of faulting this process. */
bool memory_takes_views(const struct pc_region *r);
/* Put the contents of @n pages from @from (mapped at once unless shared). */
int memory_put_data(const struct install_ctx *ic, uint64_t first, uint64_t n,
		    const char *from, uint64_t *mapped);
/* Put @n zero pages, fetching nothing. */
int memory_put_zeros(const struct install_ctx *ic, uint64_t first, uint64_t n,
		     bool exist_ok, uint64_t *mapped);
/* Map pages whose contents are in place (shared: CONTINUE; else nothing). */
int memory_map(const struct install_ctx *ic, uint64_t first, uint64_t n,
	       bool exist_ok, uint64_t *mapped);
/* Map present page @p again after its mapping went (a refault): from the
 * page cache, or for anonymous memory a zero page, as the kernel would. */
int memory_reinstate(const struct install_ctx *ic, uint64_t p);
/* Around an install: an adopted region's installs exclude reading its
 * owner's events (remove_lock); nothing for the others. */
void memory_installs_begin(struct pc_region *r);
void memory_installs_end(struct pc_region *r);

/* ---- install.c: claim, fetch, install, publish ---- */
struct install_ctx {
	struct pc_region *r;
	struct thread_slot *slot;
	bool wake;	    /* wait mode: wake sleepers on install */
	bool handler;	    /* a wait-mode handler thread: it may leave a page
			     * in flight to its owner instead of waiting */
	bool prefetch;	    /* nobody waits for these pages (the filler) */
	bool signal_safe;   /* may run in a signal handler: a source that is
			     * not async-signal-safe is reached through a
			     * fetcher thread */
	void *scratch;	    /* bounce buffer of PC_SCRATCH_BYTES, or NULL */
	bool retry;	    /* install_run again after -EAGAIN: pages it put
			     * in place the first time are there (EEXIST) */
	bool charged;	    /* the request's injected latency is paid
			     * (fetch_batch()): install_run() pays none */
};

/* ---- fetch.c: every call into a source ---- */
struct fetch_job;
/*
 * Fetch @k runs of source pages (first[i], n[i] into dst[i]) as one
 * request: retrying transient errors with backoff for the region's retry
 * budget, and through a fetcher thread when ic->signal_safe and the source
 * is not async-signal-safe.  Counted in ic->slot.
 */
int source_fetch(const struct install_ctx *ic, unsigned k,
		 const uint64_t *first, const uint64_t *n, void *const *dst);
/* Count @fetches source requests of @pages source pages in ic->slot. */
void source_count(const struct install_ctx *ic, unsigned fetches, uint64_t pages);
/* True when a fetch error may go away if asked again. */
bool fetch_error_transient(int err);
int fetchers_start(struct pc_region *r);
void fetchers_stop(struct pc_region *r);

/* Try to claim page @p (MISSING -> INFLIGHT). */
bool page_try_claim(struct pc_region *r, uint64_t p);
/* Give claimed pages back (MISSING), waking whoever waits on them. */
void release_pages(struct pc_region *r, uint64_t first, uint64_t n);
/* Sleep until page @p is no longer INFLIGHT; returns its state. */
uint32_t page_wait(struct pc_region *r, uint64_t p);
/*
 * Claim the longest run of missing pages in [lo, hi) that contains @p,
 * which the caller has already claimed.  Returns the run in *first, *n.
 */
void claim_around(struct pc_region *r, uint64_t p, uint64_t lo, uint64_t hi,
		  uint64_t *first, uint64_t *n);
/*
 * Fetch the data pages of @count claimed runs (first[i], n[i] region
 * pages) into @dst, laid out run after run, as one pipelined request;
 * zero pages are skipped and left unwritten.
 */
int fetch_runs(const struct install_ctx *ic, unsigned count,
	       const uint64_t *first, const uint64_t *n, char *dst);
/*
 * Install claimed pages [first, first+n) and publish them.  Data comes
 * from @prefetched (n pages, already fetched) or, when NULL, from the
 * source's view of them (install_views()) or one source request, into
 * ic->scratch where a bounce is needed.  On failure the pages go back to
 * MISSING, except for -EAGAIN in an adopted region (an event of the
 * owner's is queued): then they stay claimed, and the caller must call
 * again with ic->retry once the event is read (install_again()).
 */
int install_run(const struct install_ctx *ic, uint64_t first, uint64_t n,
		const void *prefetched, enum origin origin);
/* Whether install_run() without @prefetched copies the pages in straight
 * from where the source keeps them (a mapped image into memory that
 * takes views). */
bool install_views(const struct pc_region *r);
/*
 * Before runs [0, count) are installed one after another: their data into
 * @buf with one pipelined request (fetch_runs()), *@data = @buf; or, where
 * install_run() copies from views, nothing fetched, *@data = NULL, and the
 * one request's injected latency paid here once (ic->charged).
 */
int fetch_batch(struct install_ctx *ic, unsigned count, const uint64_t *first,
		const uint64_t *n, char *buf, char **data);
/* install_run() after it returned -EAGAIN, until it does not: @wait_event
 * lets the event be read in between. */
int install_again(const struct install_ctx *ic, uint64_t first, uint64_t n,
		  const void *prefetched, enum origin origin,
		  void (*wait_event)(struct pc_region *r));
/*
 * Resolve a demand fault on page @p: claim it and its window, fetch,
 * install; or wait for the thread fetching it; or handle a fault on a page
 * that is already present.  Returns 0 when it installed or waited,
 * RESOLVE_SKIPPED when a handler thread (ic->handler) leaves the page to
 * the thread fetching it, whose install wakes the sleeper, or a negative
 * errno.
 */
#define RESOLVE_SKIPPED 1
#define RESOLVE_CLAIMED 2
/* The first half of resolve_page(): returns RESOLVE_CLAIMED with the run
 * [*first, *first + *n) claimed for the caller to install, or what
 * resolve_page() would have returned. */
int claim_fault(const struct install_ctx *ic, uint64_t p, uint64_t *first,
		uint64_t *n);
int resolve_page(const struct install_ctx *ic, uint64_t p);
/*
 * pc_region_offer() in two steps, for a receiver that learns which pages
 * come before their contents (a push frame's header): claim the missing
 * pages of the run (at most OFFER_MAX; a bit per page in @claimed), so a
 * fault on one of them waits for the frame instead of asking again; then
 * install the claimed ones from @data, or release them if the frame
 * failed.  On an install error the rest are released too.  (fill.c)
 */
#define OFFER_MAX 512u
int offer_claim(struct pc_region *r, uint64_t first, uint64_t npages,
		uint64_t *claimed);
int offer_install(struct pc_region *r, uint64_t first, uint64_t npages,
		  const uint64_t *claimed, const void *data);
void offer_release(struct pc_region *r, uint64_t first, uint64_t npages,
		   const uint64_t *claimed);
/* Called when the last page is published: unregister and signal. */
void region_complete(struct pc_region *r);
void region_fail(struct pc_region *r, int err);

/* ---- ws_replay.c: stop and free a replay (destroy, after the filler) ---- */
void replay_stop(struct pc_region *r);

/* ---- fault_exit.c / fault_wait.c ---- */
int wait_mode_start(struct pc_region *r);
void wait_mode_stop(struct pc_region *r);
/* Adopted regions: an install got -EAGAIN because an event is queued on
 * the userfaultfd; read what is queued (a handler thread serves the
 * faults it read later), else give way.  Then try again. */
void wait_mode_read_events(struct pc_region *r);

/* ---- registry.c: the regions a bare address can reach ---- */
struct region_entry {
	unsigned index, set, shard;
};
int registry_add(struct pc_region *r);
/* Clear @r's slot and wait until no thread is inside it. */
void registry_remove(struct pc_region *r);
/*
 * Find the started region whose guest view holds [addr, addr+len) and
 * count the calling thread inside it: the region is not freed before
 * region_leave().  NULL if none.  Async-signal-safe.
 */
struct pc_region *region_enter(const void *addr, size_t len,
			       struct region_entry *e);
/* The same for a caller that holds the region (pc_region_offer):
 * -EINVAL when it is not started or is being destroyed. */
int region_enter_direct(struct pc_region *r, struct region_entry *e);
void region_leave(const struct region_entry *e);
/*
 * Wait until every thread that was inside @r when this is called has left
 * (pc_region_wait's last step once complete); threads entering meanwhile
 * are not waited for.  -ETIMEDOUT past @deadline_ns (0: none) while
 * another thread does the waiting.
 */
int region_quiesce(struct pc_region *r, uint64_t deadline_ns);

#endif
