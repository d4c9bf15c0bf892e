/* SPDX-License-Identifier: MIT */
/*
 * source.c - the page-source interface: a small ops table every source
 * (pattern, file, network) implements, plus the injected
 * per-request delay that stands in for network latency on a machine
 * without netem.
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

unsigned pc_version(void)
{
	return PC_VERSION;
}

int pc_source_custom(const struct pc_source_ops *ops, void *ctx,
		     uint64_t size, pc_source **out)
{
	if (!ops || !ops->fetch || !out || !size ||
	    size % PC_SOURCE_PAGE_SIZE ||
	    (ops->flags & ~(PC_SOURCE_ASYNC_SIGNAL_SAFE | PC_SOURCE_DIRECT)))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(ops->reserved) / sizeof(ops->reserved[0]); i++)
		if (ops->reserved[i])
			return -EINVAL;
	struct pc_source *src = calloc(1, sizeof(*src));
	if (!src)
		return -ENOMEM;
	src->ops = *ops;
	src->flags = ops->flags;
	src->ctx = ctx;
	src->size = size;
	*out = src;
	return 0;
}

unsigned pc_source_flags(const pc_source *src)
{
	return src->flags;
}

uint64_t pc_source_size(const pc_source *src)
{
	return src->size;
}

bool pc_source_is_zero(pc_source *src, uint64_t page)
{
	return src->ops.is_zero && src->ops.is_zero(src->ctx, page);
}

int pc_source_read(pc_source *src, uint64_t first, uint64_t npages,
		   void *dst)
{
	uint64_t pages = src->size / PC_SOURCE_PAGE_SIZE;
	if (first > pages || npages > pages - first)
		return -EINVAL;
	return src->ops.fetch(src->ctx, first, npages, dst);
}

void pc_source_set_delay(pc_source *src, unsigned usec,
			 enum pc_delay_kind kind)
{
	src->delay_us = usec;
	src->delay_kind = kind;
}

void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/* clock_gettime and nanosleep are both async-signal-safe. */
void source_delay(const struct pc_source *src)
{
	if (!src->delay_us)
		return;
	uint64_t ns = (uint64_t)src->delay_us * 1000;
	if (src->delay_kind == PC_DELAY_BUSY) {
		uint64_t until = now_ns() + ns;
		while (now_ns() < until)
			cpu_relax();
		return;
	}
	sleep_ns(ns);
}

void pc_source_stop(pc_source *src, bool complete)
{
	if (src && src->ops.stop)
		src->ops.stop(src->ctx, complete);
}

void pc_source_destroy(pc_source *src)
{
	if (!src)
		return;
	if (src->ops.destroy)
		src->ops.destroy(src->ctx);
	free(src);
}
