/* SPDX-License-Identifier: MIT */
/*
 * memfd_fill - how fast pages go into a fresh memfd, by the two ways a
 * pager can put them there: pwrite() into the memfd (the page cache,
 * under the inode's lock), or UFFDIO_COPY into a mapping of it registered
 * with userfaultfd (allocate, fill and map in one call, no inode lock).
 * The numbers behind memory.c's choice (BENCHMARKS.md, "shmem pages by
 * UFFDIO_COPY").  Two more modes stand for a push receiver's frame, the
 * memcpy for recv()'s copy out of the socket: bounce, a copy into a
 * per-thread buffer and UFFDIO_COPY from it (what the receiver does);
 * alias, MADV_POPULATE_WRITE of an unregistered second mapping of the
 * memfd, the copy straight into it and UFFDIO_CONTINUE (the mapping
 * registered MINOR too), i.e. receiving into the page.
 *
 *   memfd_fill pwrite|copy|bounce|alias THREADS [MIB]
 *
 * THREADS threads (1..16) fill MIB MiB (default 1024) in 256 KiB calls,
 * interleaved; prints one line with the seconds from the first call to
 * the last.  Every page is then compared with what was written.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define STEP (256u << 10)

enum mode { PWRITE, COPY, BOUNCE, ALIAS };

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

struct fill {
	int memfd, uffd;
	char *map, *alias;
	const char *src;
	uint64_t size;
	unsigned threads;
	enum mode mode;
};

struct worker {
	struct fill *f;
	unsigned id;
	int err;
};

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct fill *f = w->f;
	char *bounce = f->mode == BOUNCE ? aligned_alloc(4096, STEP) : NULL;
	if (f->mode == BOUNCE && !bounce)
		w->err = ENOMEM;
	for (uint64_t off = (uint64_t)w->id * STEP; off < f->size && !w->err;
	     off += (uint64_t)STEP * f->threads) {
		if (f->mode == COPY || f->mode == BOUNCE) {
			if (bounce)
				memcpy(bounce, f->src, STEP);
			struct uffdio_copy c = { .dst = (uintptr_t)f->map + off,
						 .src = (uintptr_t)(bounce ? bounce : f->src),
						 .len = STEP };
			if (ioctl(f->uffd, UFFDIO_COPY, &c) < 0)
				w->err = errno;
		} else if (f->mode == ALIAS) {
			struct uffdio_continue c = {
				.range = { .start = (uintptr_t)f->map + off, .len = STEP } };
			if (madvise(f->alias + off, STEP, MADV_POPULATE_WRITE) < 0) {
				w->err = errno;
				break;
			}
			memcpy(f->alias + off, f->src, STEP);
			if (ioctl(f->uffd, UFFDIO_CONTINUE, &c) < 0)
				w->err = errno;
		} else if (pwrite(f->memfd, f->src, STEP, (off_t)off) != (ssize_t)STEP) {
			w->err = errno ? errno : EIO;
		}
	}
	free(bounce);
	return NULL;
}

static int setup(struct fill *f)
{
	f->memfd = memfd_create("memfd_fill", MFD_CLOEXEC);
	if (f->memfd < 0 || ftruncate(f->memfd, (off_t)f->size) < 0)
		return -errno;
	f->map = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
	if (f->map == MAP_FAILED)
		return -errno;
	if (f->mode == PWRITE)
		return 0;
	if (f->mode == ALIAS) {
		f->alias = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
		if (f->alias == MAP_FAILED)
			return -errno;
	}
	f->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	struct uffdio_api api = { .api = UFFD_API,
				  .features = f->mode == ALIAS ? UFFD_FEATURE_MINOR_SHMEM : 0 };
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)f->map, .len = f->size },
		.mode = f->mode == ALIAS ? UFFDIO_REGISTER_MODE_MINOR : UFFDIO_REGISTER_MODE_MISSING,
	};
	if (f->uffd < 0 || ioctl(f->uffd, UFFDIO_API, &api) < 0 ||
	    ioctl(f->uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	return 0;
}

int main(int argc, char **argv)
{
	struct fill f = { .size = 1024ull << 20 };
	static const char *const modes[] = { "pwrite", "copy", "bounce", "alias" };
	int m = -1;
	for (int i = 0; argc >= 2 && i < 4; i++)
		if (!strcmp(argv[1], modes[i]))
			m = i;
	if (argc < 3 || argc > 4 || m < 0) {
		fprintf(stderr, "usage: %s pwrite|copy|bounce|alias THREADS [MIB]\n", argv[0]);
		return 2;
	}
	f.mode = (enum mode)m;
	f.threads = (unsigned)atoi(argv[2]);
	if (argc == 4)
		f.size = strtoull(argv[3], NULL, 10) << 20;
	if (f.threads < 1 || f.threads > 16 || !f.size || f.size % STEP) {
		fprintf(stderr, "%s: THREADS 1..16, MIB a multiple of 1/4\n", argv[0]);
		return 2;
	}
	char *src = aligned_alloc(4096, STEP);
	if (!src)
		return 1;
	for (unsigned i = 0; i < STEP; i++)
		src[i] = (char)(i * 131 + 7);
	f.src = src;
	int ret = setup(&f);
	if (ret < 0) {
		fprintf(stderr, "%s: setting up: %s\n", argv[0], strerror(-ret));
		return 1;
	}

	struct worker w[16];
	pthread_t t[16];
	double t0 = now();
	for (unsigned i = 0; i < f.threads; i++) {
		w[i] = (struct worker){ .f = &f, .id = i };
		pthread_create(&t[i], NULL, worker_main, &w[i]);
	}
	for (unsigned i = 0; i < f.threads; i++) {
		pthread_join(t[i], NULL);
		if (w[i].err) {
			fprintf(stderr, "%s: %s\n", argv[0], strerror(w[i].err));
			return 1;
		}
	}
	double dt = now() - t0;
	for (uint64_t off = 0; off < f.size; off += STEP)
		if (memcmp(f.map + off, src, STEP)) {
			fprintf(stderr, "%s: wrong bytes at %llu\n", argv[0],
				(unsigned long long)off);
			return 1;
		}
	printf("%s, %u thread%s, %llu MiB: %.3f s, %.2f GB/s\n", argv[1], f.threads,
	       f.threads == 1 ? "" : "s", (unsigned long long)(f.size >> 20), dt,
	       (double)f.size / dt / 1e9);
	return 0;
}
