/* SPDX-License-Identifier: MIT */
/*
 * fuzz_packed.c - libFuzzer harness for the packed image reader
 * (src/sources/packed.c, docs/packed.md): the bytes become a file (a
 * memfd) opened with pc_source_file(), as `--image` would open it, and
 * some of its pages are read.
 *
 * Input: byte 0 says what the harness repairs before it writes the file,
 * so that mutations get past the hashes (an attacker can compute them
 * too: they are not keyed): bit 0 each chunk's digest, where the chunk's
 * stored bytes decode; bit 1 the header's identity over the index.  The
 * rest is the file; its first 8 bytes are always made the packed magic.
 *
 * Checks: open and every read give 0 or a negative errno; an image that
 * opened has a non-empty page-multiple size; a page that is_zero() calls
 * zero reads as zeros; a page read twice (the second time from the chunk
 * cache) reads the same.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "fuzz_memfd.h"
#include "packed_format.h"
#include "postcopy.h"
#include "sources_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PAGE PC_SOURCE_PAGE_SIZE
#define MAX_FIXED_CHUNKS 64 /* digests repaired at most: keeps inputs fast */

/* Where index entry @c's stored bytes are in @img, if they are there. */
static const uint8_t *stored(const uint8_t *img, size_t len,
			     const struct pack_header *h, const struct pack_entry *e)
{
	uint64_t at;
	if (__builtin_add_overflow(h->data_offset, e->offset, &at) || at > len ||
	    e->csize > len - at)
		return NULL;
	return img + at;
}

static void fix_digests(uint8_t *img, size_t len, const struct pack_header *h,
			struct pack_entry *index, uint64_t n)
{
	if (!h->chunk_size || h->chunk_size > PACK_MAX_CHUNK)
		return;
	char *raw = NULL;
	for (uint64_t c = 0; c < n && c < MAX_FIXED_CHUNKS; c++) {
		struct pack_entry *e = &index[c];
		uint64_t start;
		if (__builtin_mul_overflow(c, (uint64_t)h->chunk_size, &start) ||
		    start >= h->image_size)
			break;
		uint64_t clen = h->image_size - start < h->chunk_size ?
					h->image_size - start : h->chunk_size;
		const uint8_t *p = stored(img, len, h, e);
		if (!p)
			continue;
		if (e->kind == PACK_RAW && e->csize == clen) {
			pack_chunk_digest(c, h->image_size, p, clen, e->digest);
		} else if (e->kind == PACK_ZSTD) {
			if (!raw && !(raw = malloc(PACK_MAX_CHUNK)))
				break;
			size_t got = ZSTD_decompress(raw, clen, p, e->csize);
			if (!ZSTD_isError(got) && got == clen)
				pack_chunk_digest(c, h->image_size, raw, clen, e->digest);
		}
	}
	free(raw);
}

/* Read page @p twice; what is_zero() says must hold. */
static void read_page(pc_source *src, uint64_t p, char *a, char *b)
{
	static const char zero[PAGE];
	int r1 = pc_source_read(src, p, 1, a);
	int r2 = pc_source_read(src, p, 1, b);
	if (r1 > 0 || r2 > 0 || (r1 == 0 && r2 == 0 && memcmp(a, b, PAGE)))
		abort();
	if (r1 == 0 && pc_source_is_zero(src, p) && memcmp(a, zero, PAGE))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned flags = data[0];
	size_t len = size - 1;
	uint8_t *img = malloc(len ? len : 1);
	if (!img)
		return 0;
	memcpy(img, data + 1, len);
	if (len >= 8)
		memcpy(img, PACK_MAGIC, 8);
	if (len >= PACK_HEADER_SIZE) {
		struct pack_header h;
		memcpy(&h, img, sizeof(h));
		/* Only an index that is all in the file is repaired. */
		uint64_t room = (len - PACK_HEADER_SIZE) / sizeof(struct pack_entry);
		uint64_t n = h.nchunks;
		if (n <= room) {
			struct pack_entry *index = (struct pack_entry *)(img + PACK_HEADER_SIZE);
			if (flags & 1)
				fix_digests(img, len, &h, index, n);
			if (flags & 2) {
				pack_identity(&h, index, h.identity);
				memcpy(img, &h, sizeof(h));
			}
		}
	}

	char path[64];
	int fd = fuzz_memfd("fuzz_packed", img, len, path);
	free(img);
	if (fd < 0)
		return 0;
	pc_source *src = NULL;
	int ret = pc_source_file(path, &src);
	close(fd);
	if (ret > 0)
		abort();
	if (ret < 0)
		return 0;

	uint64_t bytes = pc_source_size(src), pages = bytes / PAGE;
	if (!bytes || bytes % PAGE)
		abort();
	char *a = malloc(2 * PAGE), *b = malloc(2 * PAGE);
	if (a && b) {
		struct pack_header h;
		memcpy(&h, data + 1, sizeof(h));
		uint64_t per_chunk = h.chunk_size / PAGE;
		/* The first pages, the last one, and the first two of the
		 * first chunks (reads that cross into the next chunk). */
		for (uint64_t p = 0; p < pages && p < 4; p++)
			read_page(src, p, a, b);
		read_page(src, pages - 1, a, b);
		for (uint64_t c = 1; per_chunk && c < 16 && c * per_chunk < pages; c++) {
			read_page(src, c * per_chunk, a, b);
			int r = pc_source_read(src, c * per_chunk - 1, 2, a);
			if (r > 0)
				abort();
		}
		if (pc_source_read(src, pages, 1, a) != -EINVAL)
			abort();
	}
	free(a);
	free(b);
	pc_source_destroy(src);
	return 0;
}
