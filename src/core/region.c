/* SPDX-License-Identifier: MIT */
/*
 * region.c - guest memory: the backends (shmem and hugetlb memfds mapped
 * twice, private anonymous memory), the page-state table, registration
 * with userfaultfd, completion and teardown.
 *
 * Shared backends are mapped twice.  The guest view is registered in MINOR
 * mode (plus MISSING, for holes), so touching a page whose contents are not
 * yet mapped faults even if the page cache has it; contents go into the
 * page cache through the memfd (pwrite) or the unregistered alias view, and
 * UFFDIO_CONTINUE maps them into the guest view.  Anonymous memory has no page cache: it
 * registers MISSING and installs with UFFDIO_COPY / UFFDIO_ZEROPAGE.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"


/* The first error wins, and only its thread writes the message: threads
 * failing together cannot mix code and text, and nobody reads the text
 * while it is written (the code is published after it). */
static bool claim_error(struct pc_region *r, int *err)
{
	if (!*err)
		*err = -EIO; /* a code of 0 would read as no error at all */
	bool none = false;
	return atomic_compare_exchange_strong(&r->error_claimed, &none, true);
}

void region_set_error(struct pc_region *r, int err, const char *fmt, ...)
{
	if (!claim_error(r, &err))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->errmsg, sizeof(r->errmsg), fmt, ap);
	va_end(ap);
	atomic_store_explicit(&r->error, err, memory_order_release);
}

/* The same with a ready message and no stdio: async-signal-safe, for the
 * SIGBUS handler. */
void region_set_error_str(struct pc_region *r, int err, const char *msg)
{
	if (!claim_error(r, &err))
		return;
	size_t i = 0;
	for (; msg[i] && i < sizeof(r->errmsg) - 1; i++)
		r->errmsg[i] = msg[i];
	r->errmsg[i] = '\0';
	atomic_store_explicit(&r->error, err, memory_order_release);
}

static int why(char *buf, size_t len, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int why(char *buf, size_t len, int err, const char *fmt, ...)
{
	if (buf && len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(buf, len, fmt, ap);
		va_end(ap);
	}
	return err;
}

static uint64_t features_for(const struct pc_region *r)
{
	uint64_t f = r->opts.mode == PC_MODE_EXIT ? UFFD_FEATURE_SIGBUS :
						     UFFD_FEATURE_THREAD_ID;
	if (r->opts.backend == PC_BACKEND_SHMEM)
		f |= UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM;
	else if (r->opts.backend == PC_BACKEND_HUGETLB)
		f |= UFFD_FEATURE_MINOR_HUGETLBFS |
		     UFFD_FEATURE_MISSING_HUGETLBFS;
	return f;
}

static const char *backend_name(enum pc_backend b)
{
	static const char *const names[] = { "shmem", "hugetlb", "anon", "adopted" };
	return b <= PC_BACKEND_ADOPTED ? names[b] : "unknown";
}

/* Is @fd a userfaultfd?  (/proc names its inode so.) */
static bool is_userfaultfd(int fd)
{
	char path[64], target[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

/* What only an adopted region may have, and what it must. */
static int check_adopted(struct pc_region_opts *o, char *buf, size_t len)
{
	if (o->backend != PC_BACKEND_ADOPTED) {
		if (o->uffd || o->remote || o->nremote || o->page_size)
			return why(buf, len, -EINVAL,
				   "uffd, remote ranges and page_size are for adopted regions only");
		return 0;
	}
	if (!o->page_size)
		o->page_size = PC_SOURCE_PAGE_SIZE;
	if (o->page_size != PC_SOURCE_PAGE_SIZE && o->page_size != PC_HUGE_PAGE_SIZE)
		return why(buf, len, -EINVAL,
			   "adopted page size %llu: 4096 or 2 MiB",
			   (unsigned long long)o->page_size);
	if (o->mode != PC_MODE_WAIT)
		return why(buf, len, -EINVAL,
			   "an adopted region runs in wait mode: its faulting threads are another process's");
	if (o->prealloc || o->uffds > 1)
		return why(buf, len, -EINVAL,
			   "an adopted region has one userfaultfd and nothing to preallocate");
	if (!o->remote || !o->nremote || o->nremote > 64)
		return why(buf, len, -EINVAL,
			   "an adopted region needs 1 to 64 remote ranges, not %u",
			   o->remote ? o->nremote : 0);
	uint64_t total = 0;
	for (unsigned i = 0; i < o->nremote; i++) {
		const struct pc_remote_range *g = &o->remote[i];
		if (!g->base || g->base % o->page_size || !g->size ||
		    g->size % o->page_size || g->base + g->size < g->base)
			return why(buf, len, -EINVAL,
				   "remote range %u (%#llx, %llu bytes) is not a nonzero multiple of the page size",
				   i, (unsigned long long)g->base,
				   (unsigned long long)g->size);
		for (unsigned j = 0; j < i; j++)
			if (g->base < o->remote[j].base + o->remote[j].size &&
			    o->remote[j].base < g->base + g->size)
				return why(buf, len, -EINVAL,
					   "remote ranges %u and %u overlap", j, i);
		total += g->size;
	}
	if (total != o->size)
		return why(buf, len, -EINVAL,
			   "the remote ranges add up to %llu bytes, the region is %llu",
			   (unsigned long long)total, (unsigned long long)o->size);
	if (o->uffd < 0 || !is_userfaultfd(o->uffd))
		return why(buf, len, -EINVAL, "adopted uffd %d is not a userfaultfd",
			   o->uffd);
	return 0;
}

static int check_opts(struct pc_region_opts *o, const pc_source *src,
		      uint64_t page_size, char *buf, size_t len)
{
	if (o->backend > PC_BACKEND_ADOPTED)
		return why(buf, len, -EINVAL, "unknown backend %d", o->backend);
	if (o->mode > PC_MODE_WAIT)
		return why(buf, len, -EINVAL, "unknown mode %d", o->mode);
	if (!o->size || o->size % page_size)
		return why(buf, len, -EINVAL,
			   "region size %llu is not a positive multiple of the %s page size (%llu bytes)",
			   (unsigned long long)o->size,
			   backend_name(o->backend),
			   (unsigned long long)page_size);
	if (o->size != src->size)
		return why(buf, len, -EINVAL,
			   "region size %llu does not match the source size %llu",
			   (unsigned long long)o->size,
			   (unsigned long long)src->size);
	uint64_t npages = o->size / page_size;
	if (!o->uffds)
		o->uffds = 1;
	if (o->uffds > npages || o->uffds > 4096)
		return why(buf, len, -EINVAL,
			   "%u userfaultfds for %llu pages: at most one per page and 4096",
			   o->uffds, (unsigned long long)npages);
	if (!o->readers)
		o->readers = 1;
	if (o->readers > 256)
		return why(buf, len, -EINVAL, "%u readers: at most 256",
			   o->readers);
	if (!o->window)
		o->window = 1;
	if (o->window == PC_WINDOW_AUTO && page_size >= PC_MAX_RUN_BYTES)
		o->window = 1; /* a huge page is window enough */
	if (o->window != PC_WINDOW_AUTO &&
	    o->window > PC_MAX_RUN_BYTES / PC_SOURCE_PAGE_SIZE)
		return why(buf, len, -EINVAL, "window %u: at most %lu pages",
			   o->window, PC_MAX_RUN_BYTES / PC_SOURCE_PAGE_SIZE);
	if (o->window != PC_WINDOW_AUTO && o->window * page_size > PC_MAX_RUN_BYTES)
		o->window = 1; /* a huge page is window enough */
	if (!o->fetch_retry_ms)
		o->fetch_retry_ms = PC_DEFAULT_FETCH_RETRY_MS;
	if (!o->fillers) /* more installs than CPUs only queue */
		o->fillers = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 2 : 1;
	if (o->fillers > PC_MAX_FILLERS)
		return why(buf, len, -EINVAL, "%u fillers: at most %u", o->fillers,
			   PC_MAX_FILLERS);
	if (!o->fetchers)
		o->fetchers = 1;
	if (o->fetchers > 64)
		return why(buf, len, -EINVAL, "%u fetchers: at most 64",
			   o->fetchers);
	for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
		if (o->reserved[i] || o->reserved32)
			return why(buf, len, -EINVAL,
				   "reserved option fields must be zero (built against a newer postcopy.h?)");
	if (!o->max_threads)
		o->max_threads = PC_DEFAULT_MAX_THREADS;
	if (o->max_threads > 65536)
		return why(buf, len, -EINVAL, "max_threads %u: at most 65536",
			   o->max_threads);
	return 0;
}

/* ---- can the machine hold it? ---- */

#define PC_HUGEPAGES_DIR "/sys/kernel/mm/hugepages/hugepages-2048kB/"

/* A "Key:   N kB" line of /proc/meminfo, in bytes; false if absent. */
static bool meminfo_bytes(const char *text, const char *key, uint64_t *out)
{
	size_t kl = strlen(key);
	for (const char *line = text; line && *line;) {
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			unsigned long long kb;
			if (sscanf(line + kl + 1, "%llu", &kb) != 1)
				return false;
			*out = (uint64_t)kb << 10;
			return true;
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return false;
}

static bool read_text(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	size_t n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = '\0';
	return n > 0;
}

static bool read_u64(const char *path, uint64_t *out)
{
	char buf[64];
	unsigned long long v;
	if (!read_text(path, buf, sizeof(buf)) || sscanf(buf, "%llu", &v) != 1)
		return false; /* also "max": no limit */
	*out = v;
	return true;
}

/*
 * What our memory cgroup still lets us charge (limit - usage), if it has
 * a limit we can read: cgroup v2 (memory.max) or v1 (limit_in_bytes).
 * shmem pages are charged to the cgroup that first touches them, which is
 * us.  False when there is no limit or it cannot be read.
 */
static bool cgroup_room(uint64_t *out)
{
	char text[4096], path[512];
	if (!read_text("/proc/self/cgroup", text, sizeof(text)))
		return false;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		uint64_t limit, usage;
		const char *cg;
		if (!strncmp(line, "0::", 3)) {
			cg = line + 3;
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
			if (!read_u64(path, &limit))
				continue;
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", cg);
		} else if ((cg = strstr(line, ":memory:"))) {
			cg += 8;
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", cg);
			if (!read_u64(path, &limit) || limit >= (1ull << 62))
				continue; /* v1 says "no limit" with a huge number */
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.usage_in_bytes", cg);
		} else {
			continue;
		}
		if (!read_u64(path, &usage))
			continue;
		*out = usage < limit ? limit - usage : 0;
		return true;
	}
	return false;
}

static double gib(uint64_t bytes)
{
	return (double)bytes / (double)(1ull << 30);
}

/*
 * Every page of a shared backend ends up allocated (the filler sees to
 * it), and nothing stops that allocation short of the OOM killer, so a
 * region the machine cannot hold is refused before anything is mapped.
 * shmem can be swapped: what it may use is MemAvailable (free memory plus
 * what reclaim can free without swapping) plus free swap, within what our
 * memory cgroup still allows.  hugetlb has its own pool: free huge pages
 * not reserved by others, plus the surplus the kernel may still create.
 * Anonymous memory is mapped MAP_NORESERVE and left to overcommit.
 */
static int check_memory(const struct pc_region *r, char *buf, size_t len)
{
	uint64_t size = r->opts.size;
	if (r->opts.no_memory_check || r->opts.backend == PC_BACKEND_ANON ||
	    r->mem.adopted)
		return 0; /* overcommitted, or another process's */
	if (r->opts.backend == PC_BACKEND_HUGETLB) {
		uint64_t free_pages, resv, over = 0, surplus = 0;
		if (!read_u64(PC_HUGEPAGES_DIR "free_hugepages", &free_pages) ||
		    !read_u64(PC_HUGEPAGES_DIR "resv_hugepages", &resv))
			return 0; /* cannot tell: mmap will say */
		read_u64(PC_HUGEPAGES_DIR "nr_overcommit_hugepages", &over);
		read_u64(PC_HUGEPAGES_DIR "surplus_hugepages", &surplus);
		uint64_t room = (free_pages > resv ? free_pages - resv : 0) +
				(over > surplus ? over - surplus : 0);
		uint64_t need = size / PC_HUGE_PAGE_SIZE;
		if (need <= room)
			return 0;
		return why(buf, len, -ENOMEM,
			   "%llu MiB of hugetlb memory needs %llu 2 MiB huge pages, and %llu are free (free %llu - reserved %llu + overcommit room %llu): reserve them with 'echo N > /proc/sys/vm/nr_hugepages' (as root)",
			   (unsigned long long)(size >> 20), (unsigned long long)need,
			   (unsigned long long)room,
			   (unsigned long long)free_pages,
			   (unsigned long long)resv,
			   (unsigned long long)(over > surplus ? over - surplus : 0));
	}
	char text[8192];
	uint64_t avail, swap = 0;
	if (!read_text("/proc/meminfo", text, sizeof(text)) ||
	    !meminfo_bytes(text, "MemAvailable", &avail))
		return 0; /* cannot tell: say nothing rather than guess */
	meminfo_bytes(text, "SwapFree", &swap);
	/* The page-state table comes on top of the memory itself. */
	uint64_t need = size + r->npages * sizeof(*r->state);
	uint64_t room = avail + swap, cg;
	bool limited = cgroup_room(&cg) && cg < room;
	if (need <= (limited ? cg : room))
		return 0;
	if (limited)
		return why(buf, len, -ENOMEM,
			   "%.1f GiB of shmem guest memory (with its page table) is more than this process's memory cgroup allows: %.1f GiB left under its limit (the machine has %.1f GiB: MemAvailable %.1f + SwapFree %.1f)",
			   gib(need), gib(cg), gib(room), gib(avail), gib(swap));
	return why(buf, len, -ENOMEM,
		   "%.1f GiB of shmem guest memory (with its page table) is more than this machine can hold: %.1f GiB available (MemAvailable %.1f GiB + SwapFree %.1f GiB)",
		   gib(need), gib(room), gib(avail), gib(swap));
}

/* Map the backend's memory: guest view, and alias for shared backends. */
static int map_memory(struct pc_region *r, char *buf, size_t len)
{
	uint64_t size = r->opts.size;

	if (r->mem.adopted) { /* mapped in its owner, never here */
		r->mem.ranges = calloc(r->opts.nremote, sizeof(*r->mem.ranges));
		if (!r->mem.ranges)
			return why(buf, len, -ENOMEM, "out of memory");
		uint64_t first = 0;
		for (unsigned i = 0; i < r->opts.nremote; i++) {
			r->mem.ranges[i] = (struct remote_range){
				r->opts.remote[i].base, first,
				r->opts.remote[i].size / r->page_size };
			first += r->mem.ranges[i].npages;
		}
		r->mem.nranges = r->opts.nremote;
		r->mem.removed = calloc((r->npages + 63) / 64, sizeof(*r->mem.removed));
		if (!r->mem.removed)
			return why(buf, len, -ENOMEM, "out of memory");
		/* Writers first: event reads must not wait behind a stream
		 * of installs. */
		pthread_rwlockattr_t a;
		pthread_rwlockattr_init(&a);
		pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&r->mem.remove_lock, &a);
		pthread_rwlockattr_destroy(&a);
		r->opts.remote = NULL; /* the caller's: not kept */
		r->mem.guest = (char *)(uintptr_t)r->mem.ranges[0].base;
		return 0;
	}
	if (!r->mem.shared) {
		void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			       -1, 0);
		if (p == MAP_FAILED)
			return why(buf, len, -errno,
				   "mmap of %llu bytes of anonymous memory: %s",
				   (unsigned long long)size, strerror(errno));
		/* THP would install 2 MiB at a time behind our back. */
		madvise(p, size, MADV_NOHUGEPAGE);
		r->mem.guest = p;
		return 0;
	}

	bool huge = r->opts.backend == PC_BACKEND_HUGETLB;
	unsigned flags = MFD_CLOEXEC | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
	r->mem.memfd = memfd_create("postcopy-guest", flags);
	if (r->mem.memfd < 0)
		return why(buf, len, -errno, "memfd_create(%s): %s",
			   backend_name(r->opts.backend), strerror(errno));
	if (ftruncate(r->mem.memfd, (off_t)size) < 0)
		return why(buf, len, -errno, "ftruncate of the guest memfd: %s",
			   strerror(errno));
	/* hugetlb reserves its pages at mmap time: this is where a shortage
	 * shows up, as ENOMEM. */
	void *guest = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
			   r->mem.memfd, 0);
	if (guest == MAP_FAILED) {
		int err = errno;
		if (huge && err == ENOMEM)
			return why(buf, len, -ENOMEM,
				   "not enough 2 MiB huge pages for %llu MiB: reserve them with 'echo N > /proc/sys/vm/nr_hugepages' (as root)",
				   (unsigned long long)(size >> 20));
		return why(buf, len, -err, "mmap of the guest view: %s",
			   strerror(err));
	}
	r->mem.guest = guest;
	void *alias = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
			   r->mem.memfd, 0);
	if (alias == MAP_FAILED)
		return why(buf, len, -errno, "mmap of the alias view: %s",
			   strerror(errno));
	r->mem.alias = alias;
	return 0;
}

/* Allocate every page-cache page and map the alias, outside any clock. */
static int preallocate(struct pc_region *r, char *buf, size_t len)
{
	if (fallocate(r->mem.memfd, 0, 0, (off_t)r->opts.size) < 0)
		return why(buf, len, -errno,
			   "fallocate of %llu bytes of guest memory: %s",
			   (unsigned long long)r->opts.size, strerror(errno));
	if (madvise(r->mem.alias, r->opts.size, MADV_POPULATE_WRITE) < 0)
		return why(buf, len, -errno, "populating the alias view: %s",
			   strerror(errno));
	return 0;
}

/*
 * Whatever was touched between create and start was mapped without us:
 * an anonymous page as the zero page, a shared one from a page cache that
 * then holds whatever was written.  Unmap the guest view and empty the
 * page cache, so that every first access from now on faults and gets the
 * source's contents, zero pages included (QEMU discards RAM at init for
 * the same reason).  Then, for prealloc, allocate the page cache anew.
 * Called once registered, so nothing can slip in between.
 */
static int discard_early_touches(struct pc_region *r)
{
	char why_buf[256];
	int err = 0;
	if (r->mem.adopted)
		return 0; /* the owner's memory, registered by the owner */
	if (madvise(r->mem.guest, r->opts.size, MADV_DONTNEED) < 0)
		err = -errno;
	else if (r->mem.shared && fallocate(r->mem.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					0, (off_t)r->opts.size) < 0)
		err = -errno;
	if (err < 0) {
		region_set_error(r, err, "discarding pages touched before start: %s",
				 strerror(-err));
		return err;
	}
	if (r->mem.shared && r->opts.prealloc &&
	    (err = preallocate(r, why_buf, sizeof(why_buf))) < 0)
		region_set_error(r, err, "%s", why_buf);
	return err;
}

/* Fail early, with a reason, where userfaultfd cannot do what we need. */
static int probe_userfaultfd(const struct pc_region *r, char *buf, size_t len)
{
	int fd;
	int ret = uffd_open(features_for(r), &fd);
	if (ret == -EOPNOTSUPP)
		return why(buf, len, ret,
			   "this kernel's userfaultfd lacks a feature for %s memory in %s mode",
			   backend_name(r->opts.backend),
			   r->opts.mode == PC_MODE_EXIT ? "exit" : "wait");
	if (ret < 0)
		return why(buf, len, ret,
			   "userfaultfd unavailable: %s (needs /dev/userfaultfd access or vm.unprivileged_userfaultfd=1)",
			   strerror(-ret));
	close(fd);
	return 0;
}

int pc_region_create(const struct pc_region_opts *opts, pc_source *src,
		     pc_region **out, char *buf, size_t len)
{
	int ret;

	if (buf && len)
		buf[0] = '\0';
	/* An adopted userfaultfd is ours from here on, also on failure; an
	 * fd that is not one stays the caller's. */
	int adopted_fd = opts && opts->backend == PC_BACKEND_ADOPTED &&
				 opts->uffd >= 0 && is_userfaultfd(opts->uffd) ?
			 opts->uffd : -1;
	struct pc_region *r = opts && src && out ? calloc(1, sizeof(*r)) : NULL;
	if (!r) {
		pc_source_destroy(src);
		if (adopted_fd >= 0)
			close(adopted_fd);
		return opts && src && out ? -ENOMEM :
			why(buf, len, -EINVAL, "missing argument");
	}
	/* Process wide, because a thread's binding may outlive its region
	 * and must not match a new region at the same address. */
	static _Atomic uint64_t generations;
	r->generation = atomic_fetch_add(&generations, 1) + 1;
	r->src = src;
	r->mem.memfd = -1;
	r->feed.stop_fd = -1;
	pthread_mutex_init(&r->feed.fill_lock, NULL);
	r->opts = *opts;
	r->mem.adopted = opts->backend == PC_BACKEND_ADOPTED;
	r->mem.adopted_fd = adopted_fd;
	ret = check_adopted(&r->opts, buf, len);
	if (ret < 0)
		goto err;
	r->page_size = opts->backend == PC_BACKEND_HUGETLB ? PC_HUGE_PAGE_SIZE :
		       r->mem.adopted ? r->opts.page_size : PC_SOURCE_PAGE_SIZE;
	ret = check_opts(&r->opts, src, r->page_size, buf, len);
	if (ret < 0)
		goto err;
	r->npages = r->opts.size / r->page_size;
	r->mem.shared = r->opts.backend == PC_BACKEND_SHMEM ||
		    r->opts.backend == PC_BACKEND_HUGETLB;
	/* Without the alias mapped, a page-by-page write into it would pay a
	 * page fault per page; pwrite() into the memfd does not.  hugetlbfs
	 * has no write(), and one fault per 2 MiB is cheap. */
	r->mem.write_direct = r->opts.backend == PC_BACKEND_HUGETLB ||
			  (r->mem.shared && r->opts.prealloc);

	ret = r->mem.adopted ? 0 : probe_userfaultfd(r, buf, len);
	if (ret < 0)
		goto err;
	ret = check_memory(r, buf, len);
	if (ret < 0)
		goto err;
	ret = map_memory(r, buf, len);
	if (ret < 0)
		goto err;

	size_t state_len = r->npages * sizeof(*r->state);
	void *state = mmap(NULL, state_len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (state == MAP_FAILED) {
		ret = why(buf, len, -ENOMEM, "no memory for the page table");
		goto err;
	}
	r->state = state;
	r->nchunks = (r->npages + PRESENT_CHUNK - 1) / PRESENT_CHUNK;
	r->chunk_present = aligned_alloc(64, r->nchunks * sizeof(*r->chunk_present));
	if (r->chunk_present)
		memset(r->chunk_present, 0, r->nchunks * sizeof(*r->chunk_present));
	r->present_bits = calloc((r->npages + 63) / 64, sizeof(*r->present_bits));
	if (!r->chunk_present || !r->present_bits) {
		ret = why(buf, len, -ENOMEM, "no memory for the page table");
		goto err;
	}
	r->nslots = r->opts.max_threads + 1;
	r->slots = aligned_alloc(64, r->nslots * sizeof(*r->slots));
	if (!r->slots) {
		ret = why(buf, len, -ENOMEM, "no memory for thread stats");
		goto err;
	}
	memset(r->slots, 0, r->nslots * sizeof(*r->slots));
	if (scratch_create(r) < 0) {
		ret = why(buf, len, -ENOMEM, "no address space for the bounce buffers");
		goto err;
	}
	r->feed.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->feed.stop_fd < 0) {
		ret = why(buf, len, -errno, "eventfd: %s", strerror(errno));
		goto err;
	}
	*out = r;
	return 0;
err:
	pc_region_destroy(r);
	return ret;
}

int pc_region_start(pc_region *r)
{
	/* Started already, or a start failed: its error stands (destroy and
	 * create anew), and nothing half-made is allocated twice. */
	if (r->mem.slices) {
		int err = atomic_load(&r->error);
		return err ? err : -EBUSY;
	}
	/* The SIGBUS handler must be in place before the first fault can
	 * come (unless the embedder's own calls pc_sigbus_handle()), and it
	 * finds regions through the registry. */
	bool install = r->opts.mode == PC_MODE_EXIT && !r->opts.sigbus_chained;
	int err = install ? pc_sigbus_install() : 0;
	if (err < 0) {
		region_set_error(r, err, "installing the SIGBUS handler: %s",
				 strerror(-err));
		return err;
	}
	err = fetchers_start(r);
	if (err < 0) {
		region_set_error(r, err, "starting the pager's threads: %s",
				 strerror(-err));
		return err;
	}
	unsigned n = r->opts.mode == PC_MODE_WAIT ? r->opts.uffds : 1;
	r->mem.slices = calloc(n, sizeof(*r->mem.slices));
	if (!r->mem.slices) {
		region_set_error(r, -ENOMEM, "out of memory for %u userfaultfds", n);
		return -ENOMEM;
	}
	uint64_t per = r->npages / n;
	for (unsigned i = 0; i < n; i++) {
		struct uffd_slice *s = &r->mem.slices[i];
		s->first = i * per;
		s->npages = i == n - 1 ? r->npages - s->first : per;
		if (r->mem.adopted) { /* registered already, by its owner */
			int fl = fcntl(r->mem.adopted_fd, F_GETFL);
			if (fl < 0 || fcntl(r->mem.adopted_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
				region_set_error(r, -errno, "the adopted userfaultfd: %s",
						 strerror(errno));
				return -errno;
			}
			s->fd = r->mem.adopted_fd;
			r->mem.adopted_fd = -1; /* the slice closes it now */
			r->mem.nslices = 1;
			continue;
		}
		int ret = uffd_open(features_for(r), &s->fd);
		if (ret < 0) {
			region_set_error(r, ret, "userfaultfd: %s",
					 strerror(-ret));
			return ret;
		}
		r->mem.nslices = i + 1;
		ret = uffd_register(s->fd, r->mem.guest + s->first * r->page_size,
				    s->npages * r->page_size, r->mem.shared);
		if (ret < 0) {
			region_set_error(r, ret, "UFFDIO_REGISTER: %s",
					 strerror(-ret));
			return ret;
		}
	}
	err = discard_early_touches(r);
	if (err < 0)
		return err;
	err = registry_add(r);
	if (err < 0) {
		region_set_error(r, err, "too many started regions (at most %d)",
				 PC_MAX_REGIONS);
		return err;
	}
	r->start_ns = now_ns();

	int ret = r->opts.mode == PC_MODE_WAIT ? wait_mode_start(r) : 0;
	if (ret < 0)
		region_set_error(r, ret, "starting fault delivery: %s",
				 strerror(-ret));
	return ret;
}

static void signal_stop(struct pc_region *r)
{
	uint64_t one = 1;
	/* write() on an eventfd is async-signal-safe. */
	if (write(r->feed.stop_fd, &one, sizeof(one)) < 0) {
		/* Only fails if the counter would overflow: already set. */
	}
}

void futex_wake_all(_Atomic uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Completion of an adopted region: an event of the owner's queued before
 * its range was unregistered (a REMOVE from its madvise()) holds the
 * owner inside that call until somebody reads it, and the handler threads
 * are about to stop: read what is queued (the fd is non-blocking; after
 * UFFDIO_UNREGISTER nothing more comes).  Faults among it were woken by
 * the unregister. */
static void drain_owner_events(struct pc_region *r)
{
	struct uffd_msg m[16];
	for (unsigned i = 0; i < r->mem.nslices; i++)
		while (read(r->mem.slices[i].fd, m, sizeof(m)) > 0)
			;
}

/* Runs on whichever thread published the last page, maybe in a signal
 * handler: ioctl, read, clock_gettime, futex and write only.  A fault
 * still in flight meanwhile sees every page present (region_all_present)
 * and treats an install that fails on the unregistered range as done. */
void region_complete(struct pc_region *r)
{
	for (unsigned i = 0; i < r->mem.nslices; i++)
		for (uint64_t p = r->mem.slices[i].first, n;
		     p < r->mem.slices[i].first + r->mem.slices[i].npages; p += n) {
			uintptr_t a = page_addr(r, p, r->mem.slices[i].first +
					       r->mem.slices[i].npages - p, &n);
			uffd_unregister(r->mem.slices[i].fd, (void *)a, n * r->page_size);
		}
	if (r->mem.adopted)
		drain_owner_events(r);
	atomic_store(&r->end_ns, now_ns());
	signal_stop(r);
	uint32_t running = 0;
	if (atomic_compare_exchange_strong(&r->done, &running, 1))
		futex_wake_all(&r->done);
}

void region_fail(struct pc_region *r, int err)
{
	if (region_all_present(r))
		return; /* a late error after completion changes nothing */
	if (claim_error(r, &err))
		atomic_store_explicit(&r->error, err, memory_order_release);
	/* Another thread claimed it: let it finish its message before the
	 * waiters are told (a few hundred bytes; async-signal-safe). */
	while (!atomic_load_explicit(&r->error, memory_order_acquire))
		sched_yield();
	uint32_t running = 0;
	if (atomic_compare_exchange_strong(&r->done, &running, 2))
		futex_wake_all(&r->done);
	/* Handler threads keep serving what can still be served; only
	 * completion and destroy stop them. */
}

int pc_region_wait(pc_region *r, int timeout_ms)
{
	uint64_t deadline = timeout_ms < 0 ? 0 :
			    now_ns() + (uint64_t)timeout_ms * 1000000ull;
	uint32_t d;
	while ((d = atomic_load(&r->done)) == 0) {
		struct timespec ts, *tsp = NULL;
		if (timeout_ms >= 0) {
			uint64_t now = now_ns();
			if (now >= deadline)
				return -ETIMEDOUT;
			uint64_t left = deadline - now;
			ts.tv_sec = (time_t)(left / 1000000000ull);
			ts.tv_nsec = (long)(left % 1000000000ull);
			tsp = &ts;
		}
		syscall(SYS_futex, &r->done, FUTEX_WAIT_PRIVATE, 0, tsp, NULL,
			0);
	}
	if (d != 1)
		return atomic_load(&r->error);
	/* The thread that installed the last page may still be counting
	 * it: wait for whoever was inside then, so the stats are final. */
	return region_quiesce(r, timeout_ms < 0 ? 0 : deadline);
}

bool pc_region_complete(const pc_region *r)
{
	return atomic_load(&r->done) == 1;
}

uint64_t pc_region_present(const pc_region *r)
{
	return region_present_count(r);
}

bool pc_region_page_present(const pc_region *r, uint64_t offset)
{
	if (offset >= r->opts.size)
		return false;
	return atomic_load_explicit(&r->state[offset / r->page_size],
				    memory_order_acquire) == PAGE_PRESENT;
}

void *pc_region_addr(const pc_region *r)
{
	return r->mem.guest;
}

uint64_t pc_region_size(const pc_region *r)
{
	return r->opts.size;
}

uint64_t pc_region_page_size(const pc_region *r)
{
	return r->page_size;
}

uintptr_t page_addr(const struct pc_region *r, uint64_t p, uint64_t n,
		    uint64_t *contiguous)
{
	if (!r->mem.ranges) {
		*contiguous = n;
		return (uintptr_t)r->mem.guest + p * r->page_size;
	}
	unsigned i = r->mem.nranges - 1;
	while (i && r->mem.ranges[i].first > p)
		i--;
	const struct remote_range *g = &r->mem.ranges[i];
	uint64_t left = g->first + g->npages - p;
	*contiguous = n < left ? n : left;
	return g->base + (p - g->first) * r->page_size;
}

uint64_t addr_page(const struct pc_region *r, uintptr_t addr)
{
	if (!r->mem.ranges)
		return addr >= (uintptr_t)r->mem.guest &&
			       addr - (uintptr_t)r->mem.guest < r->opts.size ?
		       (addr - (uintptr_t)r->mem.guest) / r->page_size :
		       r->npages;
	for (unsigned i = 0; i < r->mem.nranges; i++) {
		const struct remote_range *g = &r->mem.ranges[i];
		if (addr >= g->base && addr - g->base < g->npages * r->page_size)
			return g->first + (addr - g->base) / r->page_size;
	}
	return r->npages;
}

int pc_region_fd(const pc_region *r)
{
	return r->mem.memfd;
}

int pc_region_set_fault_hook(pc_region *r, pc_fault_hook *hook, void *arg)
{
	if (r->mem.slices)
		return -EBUSY; /* started: faults may read it right now */
	r->fault_hook = hook;
	r->fault_hook_arg = arg;
	return 0;
}

const char *pc_region_error(const pc_region *r)
{
	int err = atomic_load_explicit(&r->error, memory_order_acquire);
	if (!err)
		return ""; /* none, or its message is still being written */
	if (r->errmsg[0])
		return r->errmsg;
	return err ? strerror(-err) : "";
}

void pc_region_destroy(pc_region *r)
{
	if (!r)
		return;
	/* Background work of the source first: it installs into us. */
	pc_source_stop(r->src, r->nchunks && region_all_present(r));
	atomic_store(&r->stopping, true);
	if (r->feed.stop_fd >= 0)
		signal_stop(r);
	for (unsigned i = 0; i < r->feed.nfillers; i++)
		pthread_join(r->feed.fillers[i], NULL);
	replay_stop(r);
	wait_mode_stop(r);
	registry_remove(r); /* waits for the threads inside to leave */
	fetchers_stop(r);
	for (unsigned i = 0; i < r->mem.nslices; i++)
		close(r->mem.slices[i].fd); /* closing also unregisters */
	free(r->mem.slices);
	if (r->feed.stop_fd >= 0)
		close(r->feed.stop_fd);
	if (r->mem.adopted_fd >= 0)
		close(r->mem.adopted_fd); /* never started */
	if (r->mem.guest && !r->mem.adopted)
		munmap(r->mem.guest, r->opts.size);
	if (r->mem.alias)
		munmap(r->mem.alias, r->opts.size);
	if (r->mem.memfd >= 0)
		close(r->mem.memfd);
	if (r->state)
		munmap((void *)r->state, r->npages * sizeof(*r->state));
	scratch_free_all(r);
	free(r->mem.ranges);
	if (r->mem.removed)
		pthread_rwlock_destroy(&r->mem.remove_lock);
	free(r->mem.removed);
	pthread_mutex_destroy(&r->feed.fill_lock);
	free(r->chunk_present);
	free(r->present_bits);
	free(r->slots);
	pc_source_destroy(r->src);
	free(r);
}

bool page_is_zero(struct pc_region *r, uint64_t page)
{
	uint64_t per = r->page_size / PC_SOURCE_PAGE_SIZE;
	for (uint64_t i = 0; i < per; i++)
		if (!pc_source_is_zero(r->src, page * per + i))
			return false;
	return true;
}
