/* SPDX-License-Identifier: MIT */
/*
 * postcopy.h - demand-page guest memory from a source with userfaultfd.
 *
 * A region is guest memory whose contents live somewhere else (a snapshot
 * file, a migration source).  Every page starts missing; the first access
 * to a missing page is caught with userfaultfd, the page is fetched from the
 * region's source, installed, and the access is retried.  A background
 * filler brings over what nobody asked for; when every page is present the
 * region unregisters from userfaultfd and runs at native speed.
 *
 * Two fault delivery modes exist side by side:
 *
 *   PC_MODE_WAIT  classic: the faulting thread sleeps on the userfaultfd
 *                 while handler threads read the fault, fetch, install and
 *                 wake it (QEMU, Firecracker, the KVM selftest).
 *   PC_MODE_EXIT  the faulting thread resolves its own fault: the
 *                 userfaultfd uses UFFD_FEATURE_SIGBUS, the SIGBUS handler
 *                 (or the VMM calling pc_resolve() after KVM_RUN returned
 *                 KVM_EXIT_MEMORY_FAULT) fetches and installs the page and
 *                 returns to retry the access.  No handler thread, no shared
 *                 queue, no lock shared between faulting threads.
 *
 * Conventions: every function that can fail returns 0 or a negative errno.
 * Handles are opaque.  Units are named where they are not bytes: "region
 * pages" are the backend's pages (4 KiB, or 2 MiB for hugetlb), "source
 * pages" are always 4 KiB (PC_SOURCE_PAGE_SIZE); sizes and offsets are in
 * bytes and must be multiples of the region's page size.  Option structs
 * end in reserved fields that must be zero: zero-initialise them, and a
 * program built against this header keeps working when later versions
 * give those fields a meaning.  Output structs: the counters
 * (pc_stats, pc_server_stats, pc_net_stats, pc_http_stats) end in
 * reserved fields the library sets to zero (in pc_stats before thread[]),
 * where later versions put new counters, so neither a struct's size nor
 * any field's offset changes and an older caller's struct still fits.
 * The others (pc_latency, pc_thread_stats, pc_image_id, pc_ws_entry,
 * pc_ws_info) have no room to grow: changing one breaks the ABI (a new
 * soname, libpostcopy.so.1).
 *
 * Threads: a region's fault paths (the SIGBUS handler, pc_resolve(),
 * pc_populate(), pc_region_offer()) and its read-only calls
 * (pc_region_present(), pc_region_page_present(), pc_region_complete(),
 * pc_region_stats(), pc_region_error(), pc_region_wait()) may be called
 * from any thread at any time between pc_region_start() and
 * pc_region_destroy().  Set-up calls (create, start, start_fill,
 * set_fault_hook) and destroy are for one thread, not concurrently with
 * each other.  pc_thread_attach()/detach() bind the calling thread.
 *
 * THE KERNEL-ACCESS RULE (exit mode).  A system call that reads or writes a
 * missing page of an exit-mode region (read() into it, write()/send() from
 * it, O_DIRECT I/O, ...) does not raise SIGBUS: it fails with EFAULT, and
 * nothing is fetched.  A thread that hands guest memory to the kernel must
 * first call pc_populate() on that range.  Wait-mode regions have no such
 * rule: the kernel access sleeps until a handler thread serves it.
 */
#ifndef POSTCOPY_H
#define POSTCOPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* siginfo_t (pc_sigbus_handle()) is POSIX: a strict -std=c11 build needs
 * _POSIX_C_SOURCE >= 199309L (or -std=gnu11) before any include. */
#include <signal.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility: what is declared from here
 * to the matching pop is its whole exported interface. */
#pragma GCC visibility push(default)

/* The version of this header; pc_version() says that of the library. */
#define PC_VERSION_MAJOR 0
#define PC_VERSION_MINOR 2
#define PC_VERSION_PATCH 0
#define PC_VERSION ((PC_VERSION_MAJOR << 16) | (PC_VERSION_MINOR << 8) | PC_VERSION_PATCH)
/* The library's PC_VERSION, for a program linked to a shared build. */
unsigned pc_version(void);

typedef struct pc_source pc_source;
typedef struct pc_region pc_region;

/* ------------------------------------------------------------------ */
/* Sources: where page contents come from.                             */
/* ------------------------------------------------------------------ */

/*
 * Threads: a source is used by several threads at once (a region's
 * faulting threads, handlers, fetchers and filler all fetch), so
 * pc_source_read(), pc_source_is_zero(), pc_source_size(),
 * pc_source_flags(), pc_image_id_of(), pc_http_get_stats(),
 * pc_net_get_stats() and pc_http_last_error() may be called from any
 * thread, also while a region uses the source.  pc_source_is_zero() is
 * async-signal-safe, and pc_source_read() is for a
 * PC_SOURCE_ASYNC_SIGNAL_SAFE source; pc_http_last_error() takes a lock.
 * The constructors may run on any thread.  pc_source_set_delay() is for
 * before the source is used; pc_source_stop() and pc_source_destroy() for
 * when no other thread uses it (a region's source is the region's to
 * stop and destroy).
 */

/*
 * Operations of a page source.  Pages are numbered from 0 in units of the
 * source's page granularity (4 KiB); a region with larger pages asks for
 * the matching runs.
 *
 * fetch     write @npages source pages starting at @first into @dst.
 *           Returns 0 or a negative errno.  An error that may go away if
 *           asked again (-EIO, -EAGAIN, -EINTR, -EBUSY, -ETIMEDOUT, a
 *           reset, refused or unreachable connection, -ENOBUFS) is
 *           retried by the pager with backoff for
 *           pc_region_opts.fetch_retry_ms; any other error loses the page
 *           at once (see WHEN A PAGE CANNOT BE HAD).  It must not touch
 *           memory of an exit-mode region.  With PC_SOURCE_ASYNC_SIGNAL_SAFE
 *           in @flags it may be called inside a SIGBUS handler on a
 *           faulting thread, so it must then be async-signal-safe (raw
 *           system calls such as pread() are; malloc, stdio and locks are
 *           not); without it, exit-mode faults hand their fetches to
 *           fetcher threads (pc_region_opts.fetchers), and the source may
 *           do anything a normal thread may.  Several threads may call it
 *           at once.
 * is_zero   optional: true when page @page is known to be all zeroes, so it
 *           is installed as a zero page without a fetch.  Always called on
 *           the faulting thread: it must be async-signal-safe and must not
 *           block (a lookup in a table the source built beforehand).
 * fetch_many optional: fetch @n runs at once (first[i], npages[i] into
 *           dst[i]).  Wait-mode handler threads pass every run of a batch of
 *           faults, so a source with latency can pipeline the requests:
 *           send them all, then collect the answers.  @flags has
 *           PC_FETCH_PREFETCH when nobody waits for these pages (the
 *           filler), so a source may give them lower priority.  Same rules
 *           as fetch.
 * flags     what the source promises:
 *           PC_SOURCE_ASYNC_SIGNAL_SAFE  fetch and fetch_many are
 *               async-signal-safe (see fetch);
 *           PC_SOURCE_DIRECT  every byte fetch writes into @dst is the
 *               page's true contents, also when it then fails (it checks
 *               nothing after receiving, as a source with checksums or
 *               tags must).  Shared backends with direct writes then fetch
 *               straight into the page cache, which other processes mapping
 *               the memory may see; without it the pager fetches into
 *               private memory and copies only what a successful fetch
 *               returned.
 * stop      optional: stop background work that uses the region (a push
 *           receiver); pc_region_destroy() calls it before tearing down,
 *           with @complete true when every page had arrived (a source with
 *           a peer may say goodbye).  Not called in a signal handler.
 * destroy   optional: release @ctx.
 */
struct pc_source_ops {
	int (*fetch)(void *ctx, uint64_t first, uint64_t npages, void *dst);
	int (*fetch_many)(void *ctx, unsigned n, const uint64_t *first,
			  const uint64_t *npages, void *const *dst,
			  unsigned flags);
	bool (*is_zero)(void *ctx, uint64_t page);
	void (*stop)(void *ctx, bool complete);
	void (*destroy)(void *ctx);
	unsigned flags;
	uint64_t reserved[4]; /* zero */
};

/* pc_source_ops.flags */
#define PC_SOURCE_ASYNC_SIGNAL_SAFE 1u
#define PC_SOURCE_DIRECT 2u

/* fetch_many() flags. */
#define PC_FETCH_PREFETCH 1u

/* Granularity in which sources count pages. */
#define PC_SOURCE_PAGE_SIZE 4096u

/*
 * A source of @size bytes (a positive multiple of 4 KiB) with
 * caller-provided operations.  On success *out owns @ctx (ops->destroy is
 * called by pc_source_destroy()); on failure @ctx stays the caller's.
 * -EINVAL for a missing fetch, a bad size, unknown flags or non-zero
 * reserved fields.
 */
int pc_source_custom(const struct pc_source_ops *ops, void *ctx,
		     uint64_t size, pc_source **out);

/*
 * An in-memory source that generates a verifiable pattern: every page's
 * contents are a function of (@seed, page number), and about one page in
 * sixteen is all zeroes (reported by is_zero).  Costs no memory.
 */
int pc_source_pattern(uint64_t size, uint64_t seed, pc_source **out);

/*
 * A raw snapshot image file.  The file must exist, be readable and its size
 * must be a multiple of 4 KiB; holes (SEEK_HOLE) are reported as zero
 * pages.  A fetch past the end of a file that shrank fails with -ENODATA
 * (not retried); a read error is -EIO (retried, see pc_source_ops.fetch).  Errors: -ENOENT, -EACCES, -EISDIR, -EINVAL (not a regular file,
 * or a size that is zero or not a page multiple), -EIO (its last byte
 * cannot be read), or another negative errno from open/fstat.
 */
int pc_source_file(const char *path, pc_source **out);

/*
 * An object on an HTTP(S) server or in an S3-compatible object store,
 * read with HTTP/1.1 range requests (libcurl).  Opening it pins it: one
 * range request learns its size (Content-Range) and its ETag, and every
 * later request carries If-Match with that ETag (If-Unmodified-Since with
 * its Last-Modified when the server gives no strong ETag), and its answer
 * must carry the same ETag: an object replaced during a restore fails the
 * fetch with -ESTALE, never mixing pages of two versions.
 *
 * Each thread that fetches at once gets its own keep-alive connection (a
 * pool of libcurl handles, at most @max_connections).  The filler's reads
 * (PC_FETCH_PREFETCH) are read ahead by a thread of the source's with up
 * to 4 range requests of 1 MiB in flight, on 4 connections of its own
 * besides the pool, made at the first such read; a wait-mode handler's
 * batch of several runs goes out 4 at a time, on 4 connections per
 * handler thread, also besides the pool.  Every answer is
 * checked before its bytes are used: status 206, a Content-Range that is
 * the one asked for, exactly that many bytes.  Errors of a fetch, which
 * the pager retries or not (see pc_source_ops.fetch):
 *   transient  5xx and 429 (-EAGAIN), 408 and timeouts (-ETIMEDOUT),
 *              resets, refused connections and short bodies
 *              (-ECONNRESET, -ECONNREFUSED), a wrong Content-Range or
 *              body length (-EIO);
 *   fatal      the object changed (-ESTALE: 412, or another ETag), 403
 *              (-EACCES), 404 (-ENOENT), 416 (-ERANGE), any other 4xx or
 *              an answer that is no HTTP (-EPROTO).
 * pc_http_last_error() says what the server said.  Not async-signal-safe:
 * exit-mode regions fetch through their fetcher threads
 * (pc_region_opts.fetchers; give it the number of faulting threads).
 *
 * url              http://HOST[:PORT]/PATH or https://...; a presigned
 *                  S3 URL is a plain https URL
 * s3_region        non-NULL: sign every request with AWS Signature V4
 *                  for service s3 in this region (e.g. "us-east-1"),
 *                  with @access_key, @secret_key and, for temporary
 *                  credentials, @session_token (x-amz-security-token)
 * timeout_ms       one request's limit (default 10000; a stalled
 *                  answer is a -ETIMEDOUT after it); opening retries
 *                  transient failures for 10 s or this, the longer
 * connect_timeout_ms  (default 5000)
 * max_connections  handles in the pool (default 64, at most 256); a
 *                  thread finding none free waits for one
 *
 * Errors (and @why, as for pc_source_net()): -EINVAL for bad options, a
 * URL that is neither http nor https, or an object whose size is not a
 * positive multiple of 4 KiB; -EOPNOTSUPP in builds without libcurl; the
 * fetch errors above (the server's reason in @why).
 */
struct pc_http_opts {
	const char *url;
	const char *s3_region;
	const char *access_key;
	const char *secret_key;
	const char *session_token;
	unsigned timeout_ms;
	unsigned connect_timeout_ms;
	unsigned max_connections;
	/* PEM file of the certificate authorities an https:// server's
	 * certificate must chain to (a private store's own CA); NULL: the
	 * system's.  The certificate and its name are always verified. */
	const char *ca_file;
	uint64_t reserved[3]; /* zero */
};

struct pc_http_stats {
	uint64_t requests;	  /* range requests sent (also failed ones) */
	uint64_t bytes_received;  /* body bytes accepted */
	uint64_t connections;	  /* libcurl handles made (each keeps one alive) */
	uint64_t transient_errors; /* requests failed with a transient error */
	uint64_t fatal_errors;	  /* requests failed for good */
	uint64_t reserved[4];	  /* zero (see "Output structs" at the top) */
};

int pc_source_http(const struct pc_http_opts *opts, pc_source **out,
		   char *why, size_t why_len);
int pc_http_get_stats(pc_source *src, struct pc_http_stats *out);
/*
 * The reason of the latest failed request of HTTP source @src (status,
 * the server's message, what did not match), "" if none, into @buf.
 * The first fatal one is kept once there is one.  -EINVAL when @src is
 * not an HTTP source.
 */
int pc_http_last_error(pc_source *src, char *buf, size_t len);

/* True when page @page of @src is known to be all zeroes. */
bool pc_source_is_zero(pc_source *src, uint64_t page);

/* Size of the source in bytes. */
uint64_t pc_source_size(const pc_source *src);
/* Its PC_SOURCE_* flags: for a source that wraps another. */
unsigned pc_source_flags(const pc_source *src);

/*
 * Write the expected contents of source pages [@first, @first + @npages)
 * (4 KiB each, whatever the region's page size: @dst gets @npages * 4096
 * bytes) into @dst: a plain fetch, without the injected delay and without
 * the pager's retries, what tests and `restore` compare guest memory with.
 * -EINVAL for pages past the end, else the fetch's error.
 */
int pc_source_read(pc_source *src, uint64_t first, uint64_t npages,
		   void *dst);

enum pc_delay_kind {
	PC_DELAY_SLEEP = 0, /* nanosleep: the thread gives up its CPU */
	PC_DELAY_BUSY = 1,  /* spin on the clock: the CPU stays busy */
};

/*
 * Add @usec microseconds to every request for data (one per fault, per
 * window or per fill step, however many fetch calls it takes; runs of
 * zero pages need no request), to emulate network latency on a machine
 * without netem.  0 disables.  Set it before the source is used.
 */
void pc_source_set_delay(pc_source *src, unsigned usec,
			 enum pc_delay_kind kind);

/*
 * Call @src's stop operation, if it has one: for a source that wraps
 * another, to pass on what pc_region_destroy() told it.
 */
void pc_source_stop(pc_source *src, bool complete);

/* Destroy a source that is not attached to a region.  NULL is a no-op. */
void pc_source_destroy(pc_source *src);

/* ------------------------------------------------------------------ */
/* Regions: guest memory demand-paged from a source.                   */
/* ------------------------------------------------------------------ */

enum pc_backend {
	PC_BACKEND_SHMEM = 0,	/* memfd, 4 KiB pages (default) */
	PC_BACKEND_HUGETLB = 1, /* memfd with 2 MiB huge pages */
	PC_BACKEND_ANON = 2,	/* private anonymous memory */
	/* Memory of another process (a VMM that hands its userfaultfd to a
	 * page-fault handler, as Firecracker does), reached only through
	 * that userfaultfd (opts.uffd), which the owner registered in
	 * MISSING mode over the ranges opts.remote[] of its own address
	 * space.  Wait mode only: the faulting threads are the owner's.
	 * Pages are installed with UFFDIO_COPY / UFFDIO_ZEROPAGE (zero pages
	 * of 2 MiB with UFFDIO_COPY), opts.page_size at a time.  Nothing is
	 * mapped here: pc_region_addr() is the owner's address, not ours. */
	PC_BACKEND_ADOPTED = 3,
};

enum pc_mode {
	PC_MODE_EXIT = 0, /* faulting thread resolves its fault (default) */
	PC_MODE_WAIT = 1, /* handler threads resolve, faulting thread sleeps */
};

/*
 * WHEN A PAGE CANNOT BE HAD (both modes).  A fetch that fails with a
 * transient error (see pc_source_ops.fetch) is asked again, with a backoff
 * from 1 ms to 100 ms, for up to pc_region_opts.fetch_retry_ms (the faulting
 * thread waits meanwhile); sources also retry what they can themselves
 * (the network source reconnects for up to its timeout_ms and then fails
 * with -EHOSTDOWN, which is not transient).  A fetch that still fails, or
 * fails with any other error, means the page will not come.  The pager then
 *   - marks the region failed: pc_region_wait() returns the error and
 *     pc_region_error() says which page and why (the first error wins);
 *   - never lets the faulting thread run on: it is never given zeros or
 *     stale memory, and it never returns from the access.  In wait mode it
 *     sleeps in the kernel on the userfaultfd; in exit mode it is parked
 *     inside the SIGBUS handler (blocked on a futex nobody wakes), so the
 *     process survives and its other threads go on;
 *   - keeps serving other faults whose pages can still be fetched.
 * So the thread that started the region (or any other that is not parked)
 * learns of the failure from pc_region_wait(), reports it and ends the
 * process (or the VM) itself: a failed region is terminal, its parked
 * threads stay parked until the process ends, and a parked thread keeps
 * any lock it held.  Exit mode: a parked thread never touches the region
 * again, but do not pc_region_destroy() a failed wait-mode region while
 * threads sleep on it (closing its userfaultfd would let them run on over
 * memory that is going away): exit instead.  pc_resolve() and
 * pc_populate() do not park; they return the error to their caller (and
 * fail the region the same way).  An embedder that prefers the process to
 * die at once sets pc_region_opts.sigbus_on_failure (exit mode only).
 *
 * THE SIGBUS CONTRACT (exit mode).  The pager resolves exit-mode faults in
 * a SIGBUS handler.  By default pc_region_start() installs the library's
 * (pc_sigbus_install()), which handles the faults of started regions and
 * hands every other SIGBUS to the handler that was installed before it
 * (with that handler's mask and flags), or to the default action.  A VMM
 * that wants a SIGBUS handler of its own (QEMU has one for machine
 * checks) either installs it before pc_region_start(), or sets
 * pc_region_opts.sigbus_chained and calls pc_sigbus_handle() first thing
 * in its own handler: a handler installed later replaces the library's
 * and its faults would go unhandled.  The handler is installed with
 * SA_ONSTACK and needs only a few KiB of stack: bounce buffers (one per
 * pc_thread_attach() slot, and a pool for other threads) are mapped at
 * pc_region_create(), never on the signal stack, so threads with small
 * stacks or alternate signal stacks may fault.  8 KiB (the classic
 * SIGSTKSZ) is enough with the library's sources, the network source
 * with a key included; a custom async-signal-safe source's fetch runs
 * on that stack too and must bring its own bound.
 */

/* A range of another process's memory (PC_BACKEND_ADOPTED). */
struct pc_remote_range {
	uint64_t base; /* address in the owner's process */
	uint64_t size; /* bytes */
};

/*
 * Region options.  Zero-initialise and set what you need; zero means the
 * default given.
 *
 * size        bytes of guest memory; must equal the source's size and be a
 *             multiple of the backend's page size (required).
 * uffds       wait mode: number of userfaultfds the region is split into,
 *             each covering an equal slice (default 1).
 * readers     wait mode: handler threads per userfaultfd (default 1).
 * window      pages resolved per fault, aligned around the faulting page
 *             (default 1: one page per fault; at most 512, and at most
 *             2 MiB of memory: hugetlb resolves one huge page).  Or
 *             PC_WINDOW_AUTO, as readahead does: per faulting thread, a
 *             fault on the page right after its previous fault's window
 *             doubles the window (1, 2, 4, ... up to 512 pages or 2 MiB),
 *             any other fault takes one page.  Once pages come in the
 *             background (pc_region_start_fill(), pc_net_start_push()),
 *             every page comes anyway and a fault's wakeups and round
 *             trip cost more than the copy: any other fault then takes
 *             64 KiB, and the window grows to 256 KiB only.  The window
 *             runs forward from the faulting page.
 * max_threads threads that may be attached with pc_thread_attach()
 *             (default 64).
 * prealloc    shared backends: allocate every page-cache page and map the
 *             alias in pc_region_start(), before the first fault, so the
 *             fault path only copies contents and installs (the KVM
 *             selftest's MINOR setup).
 * sigbus_on_failure  exit mode: when a fault's page cannot be fetched,
 *             print one line on stderr and terminate the process with
 *             SIGBUS (as an unhandled fault would) instead of parking the
 *             faulting thread (see WHEN A PAGE CANNOT BE HAD).
 * no_memory_check  skip the check that the machine can hold the region
 *             (see pc_region_create()).
 * sigbus_chained  exit mode: install no SIGBUS handler; the embedder's
 *             own calls pc_sigbus_handle() (see THE SIGBUS CONTRACT).
 * fetch_retry_ms  how long a fetch that fails with a transient error is
 *             retried (default 10000).
 * no_fetch_retry  fail on the first error, transient or not.
 * fetchers    threads that fetch for exit-mode faults when the source is
 *             not async-signal-safe (default 1, at most 64).
 * fillers     threads of pc_region_start_fill() (default 2 where the
 *             machine has two CPUs or more, else 1; at most 8): one
 *             fetches the next step from the source while another installs
 *             the step before, so the source is read in order, one request
 *             at a time, and installs run side by side.
 * uffd, remote, nremote, page_size  PC_BACKEND_ADOPTED only (zero
 *             otherwise): the userfaultfd (the region owns it from
 *             pc_region_create() on, also on failure, and closes it; it is
 *             made non-blocking); the ranges of the owner's address space
 *             it covers (at most 64, copied), laid end to end in the region
 *             and so in the source (range i starts at the sum of the sizes
 *             before it, as Firecracker lays out its memory file); and the
 *             page size: 4096 (default) or 2 MiB for hugetlb memory.  The
 *             sizes must add up to opts.size.
 *             What an adopted region may not do: exit mode, prealloc,
 *             more than one userfaultfd, pc_populate(), pc_resolve().
 *             When every page is present it unregisters the range, so the
 *             owner's later faults (a balloon giving pages back) are the
 *             kernel's ordinary zero-fill.  Before that, if the owner
 *             enabled UFFD_FEATURE_EVENT_REMOVE, pages it gives back
 *             (UFFD_EVENT_REMOVE, a balloon's MADV_DONTNEED) read as zeros
 *             from then on, never as the source's data, and the filler
 *             leaves them alone; an install that meets a pending event
 *             (EAGAIN) reads the event first and tries again.
 *             (pc_region_offer() too waits for a reader to read it.)
 */
#define PC_WINDOW_AUTO (~0u)
struct pc_region_opts {
	uint64_t size;
	enum pc_backend backend;
	enum pc_mode mode;
	unsigned uffds;
	unsigned readers;
	unsigned window;
	unsigned max_threads;
	bool prealloc;
	bool sigbus_on_failure;
	bool no_memory_check;
	bool sigbus_chained;
	bool no_fetch_retry;
	unsigned fetch_retry_ms;
	unsigned fetchers;
	int uffd;
	const struct pc_remote_range *remote;
	unsigned nremote;
	uint64_t page_size;
	unsigned fillers;
	unsigned reserved32; /* zero */
	uint64_t reserved[7]; /* zero */
};

/*
 * Create a region over @src (the region takes ownership of @src, also on
 * failure).  Maps the memory and checks the configuration; nothing is
 * registered with userfaultfd yet.  Errors: -EINVAL (bad size or size
 * mismatch with the source), -ENOMEM when the machine cannot hold the
 * region: shmem larger than MemAvailable plus SwapFree (/proc/meminfo) or
 * than what the process's memory cgroup has left, hugetlb needing more 2 MiB
 * pages than are free and unreserved (see /proc/sys/vm/nr_hugepages); every
 * page of a shared backend ends up allocated, and past that point only the
 * OOM killer would stop it (opts.no_memory_check skips this check; anon
 * memory is left to overcommit and not checked), -ENOSYS or
 * -EPERM when userfaultfd is unavailable, other negative errnos from the
 * kernel.  When @why is not NULL, a one-line human-readable reason is
 * written there on failure (truncated to @why_len).
 */
int pc_region_create(const struct pc_region_opts *opts, pc_source *src,
		     pc_region **out, char *why, size_t why_len);

/* The guest view: where the guest's memory lives (adopted regions: the
 * owner's address of the first range, not mapped in this process). */
void *pc_region_addr(const pc_region *r);
uint64_t pc_region_size(const pc_region *r);
/* Page size of the backend: 4096 or 2 MiB. */
uint64_t pc_region_page_size(const pc_region *r);
/*
 * The memfd behind a shared backend (-1 for anonymous memory), for a VMM
 * that shares guest memory with another process (a vhost-user backend).
 * Still the region's: do not close it.  What another process sees
 * through it is a page's final contents or a hole, never bytes a fetch
 * later rejected; but it bypasses the pager, so it may read a missing
 * page as zeros.
 */
int pc_region_fd(const pc_region *r);

/*
 * Register the guest view with userfaultfd and start delivering faults
 * (handler threads in wait mode; the process-wide SIGBUS handler in exit
 * mode, installed on first use).  From now on every page is missing until
 * fetched: whatever was read or written in the guest view before this
 * call is discarded, so no page keeps the zeros or the writes the kernel
 * gave it while nobody paged it.  On failure pc_region_error() says why.
 */
int pc_region_start(pc_region *r);

/*
 * Start the background filler: opts.fillers threads that install pages
 * nobody asked for, continuing sequentially after the most recent demand fault, then
 * the rest.  It claims pages like a fault does (no page is fetched twice)
 * in steps of 64 KiB while demand faults find pages in flight (one huge
 * page for hugetlb), so such a fault that lands on a page the filler holds
 * waits for at most one step; every step during which none did doubles the
 * next, up to 256 KiB while faults come elsewhere and up to 2 MiB when none
 * comes, so a quiet region fills in few large requests.  While a
 * working-set replay runs (pc_region_replay()) the filler waits.
 */
int pc_region_start_fill(pc_region *r);

/*
 * Wait until every page is present (or an error stopped the pager).
 * @timeout_ms < 0 waits forever.  Returns 0 when complete, -ETIMEDOUT,
 * or the negative errno of the error that stopped the pager: then the
 * region is failed for good, threads that faulted on the lost pages are
 * parked, and pc_region_error() says why (see WHEN A PAGE CANNOT BE HAD).
 */
int pc_region_wait(pc_region *r, int timeout_ms);

/* True once every page is present and the region is unregistered. */
bool pc_region_complete(const pc_region *r);

/* Region pages present so far (of pc_region_size() / pc_region_page_size();
 * an adopted region's pages its owner gave back count as present). */
uint64_t pc_region_present(const pc_region *r);

/*
 * True when the page holding byte @offset of the region is present (false
 * past the end).  A snapshot: a missing page may arrive right after.  For
 * a VMM that sets up a KVM userfault bitmap over memory that is partly
 * there already.
 */
bool pc_region_page_present(const pc_region *r, uint64_t offset);

/*
 * Stop delivery (handler threads, filler), unregister, unmap and free,
 * including the source.  Threads must no longer touch the memory.  Waits
 * for threads still inside the pager for this region (a fault being
 * counted, a pc_region_offer() returning) to leave it.
 */
void pc_region_destroy(pc_region *r);

/*
 * Bind the calling thread to per-thread slot @id (< max_threads) of region
 * @r, so its faults are counted per vCPU.  Unattached threads are counted
 * together as "other".  Returns -EINVAL for a bad id.
 */
int pc_thread_attach(pc_region *r, unsigned id);
void pc_thread_detach(pc_region *r);

/*
 * Call @hook for every demand fault that fetches (the faulting page, not
 * its window nor pages other threads were fetching), with the page's byte
 * offset in the region and the attached slot of the faulting thread
 * (PC_THREAD_OTHER for unattached threads and handler threads serving
 * them): what a working-set recorder needs.  It runs on the faulting
 * thread, in exit mode inside the SIGBUS handler: it must be
 * async-signal-safe and quick.  Set it before pc_region_start(); NULL
 * removes it.
 */
#define PC_THREAD_OTHER (~0u)
typedef void pc_fault_hook(void *arg, uint64_t offset, unsigned thread);
int pc_region_set_fault_hook(pc_region *r, pc_fault_hook *hook, void *arg);

/*
 * Resolve the fault at @addr on the calling thread: fetch and install the
 * page (and its window) if it is missing, wait for it if another thread
 * is fetching it, and if it is already present populate it
 * (MADV_POPULATE_WRITE) for faults the pager did not cause (swap, COW,
 * KSM), reinstalling it if the page tables lost it.  This is what a VMM
 * calls when KVM_RUN returns KVM_EXIT_MEMORY_FAULT for a guest address it
 * translated to @addr; the SIGBUS handler calls the same code.  In a
 * wait-mode region (the KVM userfault bitmap keeps the userfaultfd in wait
 * mode) the install also wakes threads sleeping on the page.
 * Async-signal-safe.  Errors: -EFAULT when @addr is in no region, the
 * source's error otherwise.
 */
int pc_resolve(void *addr);

/*
 * For an embedder's own SIGBUS handler (THE SIGBUS CONTRACT): if @si is a
 * fault on a missing page of a started exit-mode region, resolve it and
 * return true (return from the handler: the access is retried).  False
 * when the signal is not the pager's (do what you would have done
 * without it), or, with sigbus_on_failure, when its page cannot be had
 * (the region is failed; treat it as a fatal fault).  Without
 * sigbus_on_failure a fault whose page cannot be had never returns (the
 * thread is parked).  Async-signal-safe; errno is preserved.
 */
bool pc_sigbus_handle(int sig, siginfo_t *si, void *ucontext);

/*
 * Install the library's SIGBUS handler, chaining whatever handler is
 * installed now; a no-op while it is installed.  pc_region_start() calls
 * it for exit-mode regions unless opts.sigbus_chained.  Call it again
 * after installing a handler of your own to put the pager's in front.
 */
int pc_sigbus_install(void);

/*
 * Make [@addr, @addr + @len) present, for threads about to hand that guest
 * memory to a system call (see THE KERNEL-ACCESS RULE above): with
 * PC_POPULATE_WRITE in @flags for a call that writes into it (read(),
 * recv()), without for one that only reads it (write(), send()), which
 * leaves zero pages unallocated.  Works in both modes.  Errors: -EFAULT
 * when the range is not inside one region, -EINVAL for unknown flags.
 */
#define PC_POPULATE_WRITE 1u
int pc_populate(void *addr, size_t len, unsigned flags);

/*
 * Offer pages that arrived without being asked for (a push stream, a
 * precopy pass): pages [@first, @first + @npages) of the region, contents
 * at @data (npages region pages).  Pages still missing are installed and
 * counted as filled; pages present or being fetched are left alone, so
 * nothing is installed twice.  Returns 0 or a negative errno.
 */
int pc_region_offer(pc_region *r, uint64_t first, uint64_t npages,
		    const void *data);

/* ------------------------------------------------------------------ */
/* Working sets: record the pages a restore touches, replay them first */
/* on the next restore of the same image (docs/working-set.md).        */
/* ------------------------------------------------------------------ */

/*
 * What a recording belongs to: the image's size and digest, defined as the
 * network protocol defines it (docs/protocol.md, "Image identity"): XXH3-128
 * over every 4 KiB page's XXH3-64 digest, so a recording of the same image
 * matches whether it was served from a file or over the network.
 */
#define PC_IMAGE_DIGEST_LEN 16
struct pc_image_id {
	uint64_t size; /* bytes */
	uint8_t digest[PC_IMAGE_DIGEST_LEN];
};

/*
 * The identity of @src's contents.  Reads every page once with
 * pc_source_read() (no injected delay): about as long as reading the image
 * from the page cache (~0.2 s per GiB here), so take it before the region
 * starts.  A network source reads nothing: its identity is the one its
 * server proved at connect, which every run it sends is checked against.
 */
int pc_image_id_of(pc_source *src, struct pc_image_id *out);

typedef struct pc_ws pc_ws;

/*
 * Threads (working sets): pc_ws_record() and pc_region_replay() are set-up
 * calls of their region (one thread, like pc_region_start_fill());
 * a recorder is written by the faulting threads without a lock, and
 * pc_ws_save() of it may run on another thread meanwhile (it takes what
 * is complete so far).  A loaded or merged working set is never changed:
 * any number of threads may pass it to pc_ws_info(), pc_ws_entry(),
 * pc_ws_check_image(), pc_ws_save(), pc_ws_merge() and pc_region_replay()
 * at once.  Two pc_ws_save() calls to the same path must not overlap (they
 * share a temporary name).  pc_ws_destroy() once nothing uses @ws (a
 * recorder: after pc_region_destroy()).  pc_ws_load(), pc_ws_merge() and
 * pc_image_id_of() may run on any thread.
 */

/* One page of a working set, in first-touch order. */
struct pc_ws_entry {
	uint64_t offset;  /* byte offset in the region (4 KiB granularity) */
	uint64_t time_ns; /* first touch after pc_region_start() (a merge:
			   * the median over the runs that hold the page;
			   * stored in microseconds) */
	unsigned thread;  /* the attached slot that faulted, or PC_THREAD_OTHER */
	unsigned runs;	  /* recordings holding this page (1 unless merged) */
};

struct pc_ws_info {
	struct pc_image_id image;
	uint64_t pages;	      /* entries */
	unsigned runs;	      /* recordings merged into it (1: a recording) */
	uint64_t duration_ns; /* first touch of the last entry */
};

/*
 * Record @r's working set: every demand fault that fetches (the faulting
 * page, not its window, not pages of the filler or a replay), with the
 * slot of the faulting thread and the time since pc_region_start().  The
 * fault path writes into a per-thread buffer (one atomic add on the
 * thread's own cache line, a clock read): no lock, no system call.  Call
 * before pc_region_start(); it takes the region's fault hook
 * (pc_region_set_fault_hook(), -EBUSY when one is set).  @image names the
 * image (pc_image_id_of()).  A region that replays records only what the
 * replay did not bring in time.  Pages the filler or a fault's window
 * brings before the guest touches them take no fault: start the filler
 * late (after the guest has booted) and use a window of 1 to record the
 * whole working set.  The recorder belongs to the
 * caller: pc_ws_save() it while the region lives (typically once the
 * guest is up, or after pc_region_wait()), pc_ws_destroy() it after
 * pc_region_destroy().
 */
int pc_ws_record(pc_region *r, const struct pc_image_id *image, pc_ws **out);

/*
 * Write @ws (a recorder: what it holds so far, in first-touch order) to
 * @path, replacing it (written to a temporary file and renamed).
 */
int pc_ws_save(const pc_ws *ws, const char *path);

/*
 * Read a working-set file.  Everything is checked before it is used
 * (magic, version, sizes, checksum, every page inside the image, no page
 * twice, first touches in order): a truncated or corrupt file is -EBADMSG,
 * a version this library does not read -ENOTSUP, with the reason in @why.
 */
int pc_ws_load(const char *path, pc_ws **out, char *why, size_t why_len);

/*
 * Does @ws belong to @image?  0, or -ESTALE with the reason in @why (a
 * recording of another image, or of another size).
 */
int pc_ws_check_image(const pc_ws *ws, const struct pc_image_id *image,
		      char *why, size_t why_len);

/* Summary and entries of a loaded or merged working set (-EINVAL for a
 * recorder: save and load it). */
int pc_ws_info(const pc_ws *ws, struct pc_ws_info *out);
int pc_ws_entry(const pc_ws *ws, uint64_t i, struct pc_ws_entry *out);

/*
 * Combine @n loaded working sets of one image: the pages that at least
 * @k of them hold (1 <= k <= n), ordered by their median first touch.
 * -ESTALE when they name different images.
 */
int pc_ws_merge(const pc_ws *const *in, unsigned n, unsigned k, pc_ws **out,
		char *why, size_t why_len);

void pc_ws_destroy(pc_ws *ws);

/*
 * Replay @ws on started region @r: threads install its pages in their
 * recorded order from now on, a batch at a time (up to 128 pages or
 * 2 MiB, sorted and merged into runs, fetched as one pipelined request
 * with PC_FETCH_PREFETCH; four lanes take consecutive batches, so a
 * source with latency answers them in parallel).  Demand faults come first: a fault never
 * waits for more than the batch in flight, and when a fault shows that
 * the guest has passed the replay's position in the list, the replay
 * skips ahead to it (and brings what it skipped at the end).  The background filler waits while the replay runs.
 * On a network source (4 KiB pages) the order also goes to the server,
 * whose push then sends those pages ahead of the rest
 * (pc_net_stats.pages_ordered); the lanes and the push meet in the
 * page-state table, so a page is installed once (sent twice at most, when
 * both take it at the same moment).
 * Pages present or in flight are skipped, so nothing is fetched twice.
 * @ws is checked against @image first (-ESTALE, see pc_ws_check_image())
 * and may be destroyed once this returns.  -EINVAL when @r is not started
 * or @ws is a recorder, -EBUSY when a replay was started already.
 */
int pc_region_replay(pc_region *r, const pc_ws *ws,
		     const struct pc_image_id *image, char *why, size_t why_len);

/* ------------------------------------------------------------------ */
/* Post-copy over the network (docs/protocol.md).                      */
/* ------------------------------------------------------------------ */

typedef struct pc_server pc_server;

/*
 * Threads (server): pc_server_run() runs on one thread at a time, which
 * serves every connection itself (but each push connection, which a
 * thread of the server's own feeds); pc_server_stop() may be called from any
 * thread or a signal handler, pc_server_address() from any thread;
 * pc_server_get_stats() as said below; pc_server_destroy() once
 * pc_server_run() has returned (or never ran).  Servers are independent of
 * each other.  The destination's source (pc_source_net()) follows the
 * rules of sources; pc_net_start_push() is a set-up call, once per source.
 */

/*
 * Server side: serves one raw image to destinations.  TCP requires a
 * pre-shared key (mutual HMAC-SHA256 challenge-response) unless @insecure;
 * a Unix socket checks the peer's uid (SO_PEERCRED) instead.
 *
 * image            image file (raw, or packed by `postcopy pack`: then
 *                  decoded into memory at create, every chunk checked,
 *                  and the raw image it holds is served); or NULL to
 *                  serve @image_fd
 * image_fd         with @image NULL: a descriptor to serve (duplicated),
 *                  e.g. the memfd of the VMM that owns the memory
 * listen           "tcp://HOST:PORT" or "unix:PATH" (default
 *                  tcp://127.0.0.1:7070); port 0 picks a free port
 * key, key_len     pre-shared key, at least 16 bytes
 * insecure         TCP without authentication (loopback tests only)
 * allow_uid        Unix sockets: the uid allowed to connect; -1 for the
 *                  server's own (0 is root, not a default)
 * once             return from pc_server_run() after one destination
 *                  said it has every page
 * session_timeout_ms  how long a session whose connections all dropped
 *                  waits for the destination to come back (default 60 s);
 *                  with @once, an expired session also ends the run
 * queue_max        bytes of answers queued for all connections together
 *                  before the server stops reading requests until they
 *                  drain (default 256 MiB); each connection is held to
 *                  8 MiB besides
 *
 * -EINVAL (with the reason in @why) for non-zero reserved fields.
 */
struct pc_server_opts {
	const char *image;
	int image_fd;
	const char *listen;
	const uint8_t *key;
	size_t key_len;
	bool insecure;
	int allow_uid;
	bool once;
	unsigned session_timeout_ms;
	uint64_t queue_max;
	uint64_t reserved[4]; /* zero */
};

struct pc_server_stats {
	uint64_t connections;	   /* accepted */
	uint64_t refused;	   /* failed or abandoned the handshake */
	uint64_t sessions;	   /* destinations seen */
	uint64_t sessions_done;	   /* destinations that got every page */
	uint64_t requests;	   /* demand and prefetch requests */
	uint64_t pages_demand;	   /* 4 KiB pages sent in answer to requests */
	uint64_t pages_pushed;	   /* 4 KiB pages sent by the background push */
	uint64_t bytes_sent;	   /* bytes of page frames (DATA, ZERO) queued */
	uint64_t bad_frames;	   /* connections closed for a malformed frame */
	uint64_t evicted;	   /* handshakes closed to make room for new peers */
	uint64_t queued_peak;	   /* most answer bytes queued at once, all peers */
	bool image_changed;	   /* a page read back did not match: refusing */
	bool image_packed;	   /* packed: served as decoded into memory at create */
	uint64_t pages_ordered;	   /* of pages_pushed, those a destination's
				    * replay order asked for first */
	uint64_t reserved[3];	   /* zero (see "Output structs" at the top) */
};

int pc_server_create(const struct pc_server_opts *opts, pc_server **out,
		     char *why, size_t why_len);
/* The address actually listened on (with the port chosen for port 0). */
const char *pc_server_address(const pc_server *s);
/* Serve until pc_server_stop() or, with @once, one completed session. */
int pc_server_run(pc_server *s);
/* Make pc_server_run() return; async-signal-safe. */
void pc_server_stop(pc_server *s);
/* Totals; call it from the thread running pc_server_run(), or after it
 * returned (the loop updates them without locks). */
void pc_server_get_stats(const pc_server *s, struct pc_server_stats *out);
void pc_server_destroy(pc_server *s);

/*
 * Destination side: a source that fetches pages from a postcopy server.
 * Connects and authenticates now (so a wrong key, a wrong address or a
 * refused version is an error here, before any region is registered) and
 * learns the image's size, identity and zero pages.  Each thread that
 * fetches gets its own connection (a lane), opened on first use; a lane
 * that breaks reconnects with backoff and asks again, and only when the
 * server has been unreachable for @timeout_ms does a fetch fail
 * (-EHOSTDOWN; pc_region_wait() then returns it).  Every
 * run's checksum is checked before its pages are used; a mismatch is
 * treated as a broken connection and the run is asked for again.
 *
 * address, key, key_len, insecure   as for the server
 * timeout_ms   give up after this long without the server (default 30 s)
 *
 * -EINVAL (with the reason in @why) for non-zero reserved fields.
 */
struct pc_net_opts {
	const char *address;
	const uint8_t *key;
	size_t key_len;
	bool insecure;
	unsigned timeout_ms;
	/* Push connections, each received by a thread of its own (0: 2, at
	 * most 4).  Two let the receive use a second core, which is faster
	 * where one is free; where every core is busy (a 2-core machine with
	 * its vCPUs faulting) they also lengthen demand faults' tails: 1 then
	 * keeps a fault's p99 lowest (see BENCHMARKS.md). */
	unsigned push_connections;
	uint64_t reserved[4]; /* zero */
};

struct pc_net_stats {
	uint64_t requests;	     /* demand requests sent */
	uint64_t pages_received;     /* 4 KiB pages received in answers */
	uint64_t pages_pushed;	     /* 4 KiB pages received from the push stream */
	uint64_t bytes_received;     /* frame bytes read */
	uint64_t reconnects;	     /* connections re-established */
	uint64_t checksum_failures;  /* runs refused for a bad checksum */
	bool push_done;		     /* every page pushed once and received */
	uint64_t pages_ordered;	     /* 4 KiB pages of a working-set replay's order
				      * sent to the server, for the push to follow */
	uint64_t reserved[3];	     /* zero (see "Output structs" at the top) */
};

int pc_source_net(const struct pc_net_opts *opts, pc_source **out,
		  char *why, size_t why_len);
/*
 * Start the background push for region @r built on network source @src:
 * connections (pc_net_opts.push_connections, 2 by default), each received
 * by a thread of its own, on which the
 * server streams the pages nobody asked for, continuing after the latest
 * demand requests; they are installed as pc_region_offer() does.  When
 * the server has pushed every page (or the push connections cannot be
 * kept), the region's filler fetches whatever is still missing.  @src
 * must be the source @r owns.  The push carries 4 KiB pages only: on a
 * region of 2 MiB pages (hugetlb) there is none, and this starts the
 * region's filler instead (pc_region_start_fill()).  Pushed pages are
 * checked (checksum, and the tag with a key) before anything of them is
 * installed, so no process mapping the memfd ever sees their bytes
 * unchecked.
 */
int pc_net_start_push(pc_source *src, pc_region *r);
int pc_net_get_stats(pc_source *src, struct pc_net_stats *out);

/* ------------------------------------------------------------------ */
/* Statistics.                                                         */
/* ------------------------------------------------------------------ */

/* Latency percentiles of a histogram, in nanoseconds. */
struct pc_latency {
	uint64_t count;
	uint64_t p50, p90, p99, p999, max;
};

struct pc_thread_stats {
	uint64_t faults;     /* demand faults taken by this thread (or served
			      * for it by a handler thread) */
	uint64_t blocked_ns; /* time spent resolving or waiting on them */
};

/*
 * A region's counters.  Units: "pages" here are region pages (page_size
 * bytes: 4 KiB, or 2 MiB for hugetlb and adopted 2 MiB regions), faults
 * are counted one per fault however many pages it installs, bytes and
 * nanoseconds are named.  The four pages_ origins add up to the pages the
 * pager installed; zero_pages is the part of them installed as zeros.
 */
struct pc_stats {
	uint64_t pages;		   /* region pages in the region */
	uint64_t page_size;	   /* bytes of a region page */
	uint64_t present;	   /* region pages present */
	uint64_t faults;	   /* demand faults, all threads */
	uint64_t pages_demand;	   /* region pages installed on demand (faulting page) */
	uint64_t pages_prefetch;   /* region pages installed as part of a fault's window */
	uint64_t pages_fill;	   /* region pages installed by the filler or pc_region_offer() */
	uint64_t pages_replay;	   /* region pages installed by a working-set replay */
	uint64_t zero_pages;	   /* of those, region pages installed as zeros, no fetch */
	uint64_t duplicate_fetches_avoided; /* faults that waited for a fetch in flight */
	uint64_t refaults;	   /* faults on pages already present */
	uint64_t bytes_fetched;	   /* bytes the source returned (successful fetches) */
	uint64_t fetches;	   /* runs the source returned (a fetch call, or one run
				    * of a fetch_many call) */
	uint64_t fetch_retries;	   /* fetches asked again after a transient error */
	uint64_t pages_removed;	   /* adopted: region pages the owner gave back (zeros now) */
	uint64_t blocked_ns;	   /* all threads */
	uint64_t elapsed_ns;	   /* from start to completion (or now) */
	/* Per-fault resolution time as the pager measures it: in exit mode
	 * from handler entry to return on the faulting thread, in wait mode
	 * from reading the message to the page installed (the sleeper's wait
	 * in the queue before that is not included; a fault a handler left
	 * to the thread that had its page in flight has none, and counts in
	 * duplicate_fetches_avoided).  Final once pc_region_wait() returned
	 * 0: every fault counted by then is in it. */
	struct pc_latency latency;
	uint64_t reserved[8];	   /* zero (see "Output structs" at the top) */
	unsigned nthreads;	   /* entries in thread[] */
	struct pc_thread_stats thread[]; /* per attached slot; last is "other" */
};

/*
 * Snapshot the statistics.  *out is malloc'ed, free() it.  Counters are
 * read without stopping the faulting threads, so a snapshot taken while
 * they run is approximate.
 */
int pc_region_stats(const pc_region *r, struct pc_stats **out);

/* Print stats as text. */
void pc_stats_print(const struct pc_stats *s, FILE *f);

/*
 * A human-readable reason for the error that stopped the region (a failed
 * pc_region_start(), a source that failed during a fetch), or "" if none.
 */
const char *pc_region_error(const pc_region *r);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif /* POSTCOPY_H */
