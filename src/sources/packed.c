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
 * copy, not another request; the chunks a fetch of several runs needs are
 * read together (several requests in flight where the reader can).
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

#define CACHE_SLOTS 16 /* decompressed chunks kept (16 MiB at 1 MiB chunks) */

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

/* Chunks loaded together by one call, and their raw bytes at most: a
 * batch of runs that spans more goes in rounds. */
#define LOAD_MAX 16
#define LOAD_MAX_BYTES (16u << 20)
/* Chunks a prefetch (the filler's) loads beyond its runs: its next steps
 * find them cached, and the reads of several steps overlap. */
#define READ_AHEAD 3

/* Chunks one fetch call loaded, kept until its copies are done. */
struct loaded {
	unsigned n;
	uint64_t chunk[LOAD_MAX];
	char *raw[LOAD_MAX];
};

/* Read chunks @chunk[0..@k) together (the blob's read_many: several
 * requests in flight), then decompress and check each into @raw[i]
 * (chunk_len bytes); @rets[i]: chunk i's result.  Every read is finished,
 * also after one failed, so that a retry needs only the ones that did:
 * a batch that failed as a whole would fail again as a whole wherever one
 * request in a few fails.  0, or the first error. */
static int load_chunks(struct packed *pk, unsigned k, const uint64_t *chunk,
		       char *const *raw, int *rets)
{
	uint64_t off[LOAD_MAX], len[LOAD_MAX];
	void *to[LOAD_MAX];
	char *comp[LOAD_MAX] = { NULL };
	int ret = 0;
	for (unsigned i = 0; i < k; i++) {
		const struct pack_entry *e = &pk->index[chunk[i]];
		off[i] = pk->h.data_offset + e->offset;
		len[i] = e->kind == PACK_RAW ? chunk_len(pk, chunk[i]) : e->csize;
		to[i] = e->kind == PACK_RAW ? raw[i] : (comp[i] = malloc(e->csize));
		rets[i] = to[i] ? 0 : -ENOMEM;
	}
	if (pk->blob.read_many && k > 1) {
		pk->blob.read_many(pk->blob_ctx, k, off, len, to, rets);
	} else {
		for (unsigned i = 0; i < k; i++)
			if (rets[i] == 0)
				rets[i] = pk->blob.read(pk->blob_ctx, off[i], len[i], to[i]);
	}
	for (unsigned i = 0; i < k; i++) {
		uint64_t c = chunk[i], n = chunk_len(pk, c);
		if (rets[i] == 0 && comp[i]) {
			size_t got = ZSTD_decompress(raw[i], n, comp[i], len[i]);
			/* A bad frame was checked at pack time, so it is
			 * damage (or a reader that returned other bytes). */
			if (ZSTD_isError(got) || got != n)
				rets[i] = -EBADMSG;
		}
		uint8_t d[PACK_DIGEST_LEN];
		if (rets[i] == 0) {
			pack_chunk_digest(c, pk->h.image_size, raw[i], n, d);
			if (sodium_memcmp(d, pk->index[c].digest, sizeof(d)))
				rets[i] = -EBADMSG;
		}
		if (!ret)
			ret = rets[i];
		free(comp[i]);
	}
	return ret;
}

/* Copy [@within, @within + @n) of chunk @c to @dst from what this call
 * loaded or the cache: false when neither has it. */
static bool copy_held(struct packed *pk, const struct loaded *ld, uint64_t c,
		      uint64_t within, uint64_t n, char *dst)
{
	for (unsigned i = 0; i < ld->n; i++)
		if (ld->chunk[i] == c) {
			memcpy(dst, ld->raw[i] + within, n);
			return true;
		}
	bool hit = false;
	pthread_mutex_lock(&pk->lock);
	for (int i = 0; i < CACHE_SLOTS && !hit; i++)
		if (pk->cache[i].chunk == c) {
			pk->cache[i].used = ++pk->tick;
			memcpy(dst, pk->cache[i].data + within, n);
			hit = true;
		}
	pthread_mutex_unlock(&pk->lock);
	return hit;
}

/* This call's chunks into the cache (least recently used out), or freed.
 * Two threads that loaded the same chunk: the second copy is dropped. */
static void keep_loaded(struct packed *pk, struct loaded *ld)
{
	pthread_mutex_lock(&pk->lock);
	for (unsigned j = 0; j < ld->n; j++) {
		struct cached *victim = &pk->cache[0];
		for (int i = 0; i < CACHE_SLOTS && victim; i++) {
			if (pk->cache[i].chunk == ld->chunk[j])
				victim = NULL;
			else if (pk->cache[i].used < victim->used)
				victim = &pk->cache[i];
		}
		if (victim) {
			free(victim->data);
			*victim = (struct cached){ .chunk = ld->chunk[j],
						   .used = ++pk->tick,
						   .data = ld->raw[j] };
			ld->raw[j] = NULL;
		}
	}
	pthread_mutex_unlock(&pk->lock);
	for (unsigned j = 0; j < ld->n; j++)
		free(ld->raw[j]);
	ld->n = 0;
}

/* Whether the cache holds chunk @c. */
static bool cached(struct packed *pk, uint64_t c)
{
	bool hit = false;
	pthread_mutex_lock(&pk->lock);
	for (int i = 0; i < CACHE_SLOTS && !hit; i++)
		hit = pk->cache[i].chunk == c;
	pthread_mutex_unlock(&pk->lock);
	return hit;
}

/* The pieces of runs [@run, @n) from byte @at of run @run, in order: the
 * chunks they need that nobody holds (the first piece's in any case: it
 * is not zero), loaded together into @ld (empty on entry), up to LOAD_MAX
 * of them or LOAD_MAX_BYTES of raw bytes.  After a failure @ld holds the
 * chunks that did load. */
static int load_ahead(struct packed *pk, struct loaded *ld, unsigned run,
		      uint64_t at, unsigned n, const uint64_t *first,
		      const uint64_t *npages, bool prefetch)
{
	uint64_t bytes = 0;
	unsigned need = 0; /* chunks of the runs; the rest read ahead */
	int ret = -ENOMEM;
	/* After the runs, a prefetch's read-ahead: one more "run". */
	for (unsigned r = run; r < n + prefetch && ld->n < LOAD_MAX; r++, at = 0) {
		uint64_t off, end;
		if (r < n) {
			off = first[r] * PC_SOURCE_PAGE_SIZE + at;
			end = (first[r] + npages[r]) * PC_SOURCE_PAGE_SIZE;
		} else {
			uint64_t next = (first[n - 1] + npages[n - 1]) * PC_SOURCE_PAGE_SIZE;
			off = (next + pk->h.chunk_size - 1) / pk->h.chunk_size * pk->h.chunk_size;
			end = off + READ_AHEAD * pk->h.chunk_size;
			if (end > pk->h.image_size)
				end = pk->h.image_size;
		}
		for (; off < end && ld->n < LOAD_MAX;
		     off = (off / pk->h.chunk_size + 1) * pk->h.chunk_size) {
			uint64_t c = off / pk->h.chunk_size;
			/* The first is loaded even if the cache got it since:
			 * it may be gone again when the copy looks. */
			bool have = pk->index[c].kind == PACK_ZERO ||
				    (ld->n && cached(pk, c));
			for (unsigned i = 0; i < ld->n && !have; i++)
				have = ld->chunk[i] == c;
			if (have)
				continue;
			if (ld->n && bytes + chunk_len(pk, c) > LOAD_MAX_BYTES)
				goto full;
			if (!(ld->raw[ld->n] = malloc(pk->h.chunk_size)))
				goto drop;
			ld->chunk[ld->n++] = c;
			bytes += chunk_len(pk, c);
			need += r < n;
		}
	}
full:
	if (!ld->n)
		return 0;
	int rets[LOAD_MAX];
	if (load_chunks(pk, ld->n, ld->chunk, ld->raw, rets) == 0)
		return 0;
	/* Only the good ones stay, for the caller to keep; a chunk read
	 * ahead that failed fails nothing. */
	unsigned kept = 0;
	ret = 0;
	for (unsigned i = 0; i < ld->n; i++) {
		if (rets[i]) {
			if (i < need && !ret)
				ret = rets[i];
			free(ld->raw[i]);
			continue;
		}
		ld->chunk[kept] = ld->chunk[i];
		ld->raw[kept++] = ld->raw[i];
	}
	ld->n = kept;
	return ret;
drop: /* nothing of them is loaded */
	for (unsigned i = 0; i < ld->n; i++)
		free(ld->raw[i]);
	ld->n = 0;
	return ret;
}

/* Runs [0, @n): each chunk they need fetched once, several at a time. */
static int packed_fetch_many(void *ctx, unsigned n, const uint64_t *first,
			     const uint64_t *npages, void *const *dst,
			     unsigned flags)
{
	struct packed *pk = ctx;
	struct loaded ld = { 0 };
	for (unsigned r = 0; r < n; r++) {
		uint64_t off = first[r] * PC_SOURCE_PAGE_SIZE;
		uint64_t len = npages[r] * PC_SOURCE_PAGE_SIZE;
		char *to = dst[r];
		while (len) {
			uint64_t c = off / pk->h.chunk_size, within = off % pk->h.chunk_size;
			uint64_t k = chunk_len(pk, c) - within;
			if (k > len)
				k = len;
			if (pk->index[c].kind == PACK_ZERO) {
				memset(to, 0, k);
			} else if (!copy_held(pk, &ld, c, within, k, to)) {
				/* The next chunks nobody holds, this one first. */
				keep_loaded(pk, &ld);
				int ret = load_ahead(pk, &ld, r, off - first[r] * PC_SOURCE_PAGE_SIZE,
						     n, first, npages,
						     flags & PC_FETCH_PREFETCH);
				if (ret < 0) {
					keep_loaded(pk, &ld); /* a retry needs fewer */
					return ret;
				}
				continue; /* this piece again: now held */
			}
			to += k;
			off += k;
			len -= k;
		}
	}
	keep_loaded(pk, &ld);
	return 0;
}

static int packed_fetch(void *ctx, uint64_t first, uint64_t npages, void *dst)
{
	return packed_fetch_many(ctx, 1, &first, &npages, &dst, 0);
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
	.fetch_many = packed_fetch_many,
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
