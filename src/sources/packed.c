/* SPDX-License-Identifier: MIT */
/*
 * packed.c - reading a packed image (docs/packed.md) through any byte
 * reader: a file (pc_source_file) or an HTTP object (pc_source_http)
 * whose first bytes are the packed magic.
 *
 * The one idea: a chunk's bytes are used only after its digest matched,
 * and the digests are trusted only because the index hashed to the
 * identity in the header.  A fault fetches and decompresses its whole
 * chunk and keeps it in a small cache, so the chunk's other pages cost a
 * copy, not another request.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "internal.h"
#include "packed_format.h"
#include "sources_int.h"

#define CACHE_SLOTS 8 /* decompressed chunks kept (8 MiB at 1 MiB chunks) */

struct cached {
	uint64_t chunk; /* UINT64_MAX: empty */
	uint64_t used;	/* tick of the last use, for LRU */
	char *data;
};

struct packed {
	struct blob_ops blob;
	void *blob_ctx;
	struct pack_header h;
	struct pack_entry *index;
	pthread_mutex_t lock; /* the cache */
	struct cached cache[CACHE_SLOTS];
	uint64_t tick;
};

bool packed_magic(const void *first, size_t len)
{
	return len >= 8 && !memcmp(first, PACK_MAGIC, 8);
}

static uint64_t chunk_len(const struct packed *pk, uint64_t c)
{
	uint64_t start = c * pk->h.chunk_size;
	uint64_t left = pk->h.image_size - start;
	return left < pk->h.chunk_size ? left : pk->h.chunk_size;
}

void pack_chunk_digest(uint64_t chunk, uint64_t image_size, const void *data,
		       size_t len, uint8_t out[PACK_DIGEST_LEN])
{
	uint8_t key[16];
	memcpy(key, &chunk, 8); /* little-endian hosts only (packed_format.h) */
	memcpy(key + 8, &image_size, 8);
	crypto_generichash(out, PACK_DIGEST_LEN, data, len, key, sizeof(key));
}

void pack_identity(const struct pack_header *h, const struct pack_entry *index,
		   uint8_t out[PACK_IDENTITY_LEN])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, PACK_IDENTITY_LEN);
	crypto_generichash_update(&st, (const void *)h,
				  offsetof(struct pack_header, identity));
	crypto_generichash_update(&st, (const void *)index,
				  h->nchunks * sizeof(*index));
	crypto_generichash_final(&st, out, PACK_IDENTITY_LEN);
}

/* Read, decompress and check chunk @c into @raw (chunk_len bytes). */
static int load_chunk(struct packed *pk, uint64_t c, char *raw)
{
	const struct pack_entry *e = &pk->index[c];
	uint64_t len = chunk_len(pk, c);
	uint64_t at = pk->h.data_offset + e->offset;
	int ret;

	if (e->kind == PACK_RAW) {
		ret = pk->blob.read(pk->blob_ctx, at, len, raw);
	} else {
		char *comp = malloc(e->csize);
		if (!comp)
			return -ENOMEM;
		ret = pk->blob.read(pk->blob_ctx, at, e->csize, comp);
		if (ret == 0) {
			size_t got = ZSTD_decompress(raw, len, comp, e->csize);
			/* A bad frame was checked at pack time, so it is
			 * damage (or a reader that returned other bytes). */
			if (ZSTD_isError(got) || got != len)
				ret = -EBADMSG;
		}
		free(comp);
	}
	if (ret < 0)
		return ret;
	uint8_t d[PACK_DIGEST_LEN];
	pack_chunk_digest(c, pk->h.image_size, raw, len, d);
	return sodium_memcmp(d, e->digest, sizeof(d)) ? -EBADMSG : 0;
}

/* Copy [@within, @within + @n) of chunk @c to @dst, through the cache. */
static int copy_from_chunk(struct packed *pk, uint64_t c, uint64_t within,
			   uint64_t n, char *dst)
{
	if (pk->index[c].kind == PACK_ZERO) {
		memset(dst, 0, n);
		return 0;
	}
	pthread_mutex_lock(&pk->lock);
	for (int i = 0; i < CACHE_SLOTS; i++)
		if (pk->cache[i].chunk == c) {
			pk->cache[i].used = ++pk->tick;
			memcpy(dst, pk->cache[i].data + within, n);
			pthread_mutex_unlock(&pk->lock);
			return 0;
		}
	pthread_mutex_unlock(&pk->lock);

	/* Not under the lock: other chunks go on meanwhile.  Two threads
	 * missing the same chunk both load it; the second copy is dropped. */
	char *raw = malloc(pk->h.chunk_size);
	if (!raw)
		return -ENOMEM;
	int ret = load_chunk(pk, c, raw);
	if (ret < 0) {
		free(raw);
		return ret;
	}
	memcpy(dst, raw + within, n);
	pthread_mutex_lock(&pk->lock);
	struct cached *victim = &pk->cache[0];
	for (int i = 0; i < CACHE_SLOTS; i++) {
		if (pk->cache[i].chunk == c) {
			victim = NULL;
			break;
		}
		if (pk->cache[i].used < victim->used)
			victim = &pk->cache[i];
	}
	if (victim) {
		free(victim->data);
		*victim = (struct cached){ .chunk = c, .used = ++pk->tick, .data = raw };
		raw = NULL;
	}
	pthread_mutex_unlock(&pk->lock);
	free(raw);
	return 0;
}

static int packed_fetch(void *ctx, uint64_t first, uint64_t npages, void *dst)
{
	struct packed *pk = ctx;
	uint64_t off = first * PC_SOURCE_PAGE_SIZE;
	uint64_t len = npages * PC_SOURCE_PAGE_SIZE;
	char *to = dst;
	while (len) {
		uint64_t c = off / pk->h.chunk_size, within = off % pk->h.chunk_size;
		uint64_t n = chunk_len(pk, c) - within;
		if (n > len)
			n = len;
		int ret = copy_from_chunk(pk, c, within, n, to);
		if (ret < 0)
			return ret;
		to += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* A lookup in the index: async-signal-safe. */
static bool packed_is_zero(void *ctx, uint64_t page)
{
	const struct packed *pk = ctx;
	uint64_t c = page * PC_SOURCE_PAGE_SIZE / pk->h.chunk_size;
	return pk->index[c].kind == PACK_ZERO;
}

static void packed_destroy(void *ctx)
{
	struct packed *pk = ctx;
	for (int i = 0; i < CACHE_SLOTS; i++)
		free(pk->cache[i].data);
	free(pk->index);
	if (pk->blob.destroy)
		pk->blob.destroy(pk->blob_ctx);
	pthread_mutex_destroy(&pk->lock);
	free(pk);
}

static const struct pc_source_ops packed_ops = {
	.fetch = packed_fetch,
	.is_zero = packed_is_zero,
	.destroy = packed_destroy,
	/* zstd and the cache allocate and lock; chunks are checked after
	 * they arrive: neither async-signal-safe nor DIRECT. */
	.flags = 0,
};

void *packed_blob_ctx(pc_source *src, int (*read)(void *, uint64_t, uint64_t, void *))
{
	if (!src || src->ops.fetch != packed_fetch)
		return NULL;
	struct packed *pk = src->ctx;
	return pk->blob.read == read ? pk->blob_ctx : NULL;
}

/* At open no pager retries for us: transient errors are tried again
 * here, for about 5 s. */
static int read_at_open(struct packed *pk, uint64_t off, uint64_t len, void *dst)
{
	uint64_t backoff = 10 * 1000000ull;
	for (int tries = 0;; tries++) {
		int ret = pk->blob.read(pk->blob_ctx, off, len, dst);
		if (ret == 0 || !fetch_error_transient(ret) || tries == 9)
			return ret;
		sleep_ns(backoff);
		if (backoff < 1000000000ull)
			backoff *= 2;
	}
}

static int check_header(const struct pack_header *h, uint64_t blob_size,
			char *why, size_t why_len)
{
	if (h->version != PACK_VERSION) {
		set_why(why, why_len, "packed image version %u (this postcopy reads %u)",
			h->version, PACK_VERSION);
		return -EPROTONOSUPPORT;
	}
	/* Not (size + chunk - 1) / chunk: that wraps for a size near 2^64,
	 * and an index of 0 entries would then describe 16 EiB. */
	uint64_t nchunks = h->chunk_size ? h->image_size / h->chunk_size +
						   (h->image_size % h->chunk_size != 0) :
					   0;
	if (h->header_size != PACK_HEADER_SIZE || h->flags ||
	    h->chunk_size < PACK_MIN_CHUNK || h->chunk_size > PACK_MAX_CHUNK ||
	    h->chunk_size % PC_SOURCE_PAGE_SIZE || !h->image_size ||
	    h->image_size % PC_SOURCE_PAGE_SIZE || h->nchunks != nchunks ||
	    h->index_offset != PACK_HEADER_SIZE ||
	    h->data_offset < h->index_offset + nchunks * sizeof(struct pack_entry) ||
	    h->data_offset > blob_size || h->data_size > blob_size - h->data_offset) {
		set_why(why, why_len, "packed image header is inconsistent (sizes, chunk size or offsets)");
		return -EBADMSG;
	}
	return 0;
}

int packed_open(const struct blob_ops *ops, void *ctx, uint64_t blob_size,
		pc_source **out, char *why, size_t why_len)
{
	int ret;
	struct packed *pk = calloc(1, sizeof(*pk));
	if (!pk || sodium_init() < 0) {
		free(pk);
		if (ops->destroy)
			ops->destroy(ctx);
		return -ENOMEM;
	}
	pk->blob = *ops;
	pk->blob_ctx = ctx;
	pthread_mutex_init(&pk->lock, NULL);
	for (int i = 0; i < CACHE_SLOTS; i++)
		pk->cache[i].chunk = UINT64_MAX;

	ret = blob_size < PACK_HEADER_SIZE ? -EBADMSG :
	      read_at_open(pk, 0, sizeof(pk->h), &pk->h);
	if (ret < 0) {
		set_why(why, why_len, "reading the packed header: %s", strerror(-ret));
		goto err;
	}
	if ((ret = check_header(&pk->h, blob_size, why, why_len)) < 0)
		goto err;
	size_t index_bytes = pk->h.nchunks * sizeof(struct pack_entry);
	pk->index = malloc(index_bytes);
	if (!pk->index) {
		ret = -ENOMEM;
		goto err;
	}
	ret = read_at_open(pk, pk->h.index_offset, index_bytes, pk->index);
	if (ret < 0) {
		set_why(why, why_len, "reading the packed index: %s", strerror(-ret));
		goto err;
	}
	uint8_t id[PACK_IDENTITY_LEN];
	pack_identity(&pk->h, pk->index, id);
	if (sodium_memcmp(id, pk->h.identity, sizeof(id))) {
		set_why(why, why_len, "packed image index does not match its identity (damaged or tampered with)");
		ret = -EBADMSG;
		goto err;
	}
	for (uint64_t c = 0; c < pk->h.nchunks; c++) {
		const struct pack_entry *e = &pk->index[c];
		uint64_t len = chunk_len(pk, c);
		bool ok = e->kind == PACK_ZERO ? e->csize == 0 :
			  e->kind == PACK_RAW  ? e->csize == len :
			  e->kind == PACK_ZSTD ? e->csize > 0 &&
						 e->csize <= ZSTD_compressBound(len) :
						 false;
		if (!ok || e->offset > pk->h.data_size ||
		    e->csize > pk->h.data_size - e->offset) {
			set_why(why, why_len, "packed index entry %" PRIu64 " is inconsistent", c);
			ret = -EBADMSG;
			goto err;
		}
	}
	ret = pc_source_custom(&packed_ops, pk, pk->h.image_size, out);
	if (ret == 0)
		return 0;
err:
	packed_destroy(pk);
	return ret;
}
