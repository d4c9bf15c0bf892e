/* SPDX-License-Identifier: MIT */
/*
 * sources_int.h - what the sources share: a byte reader under the packed
 * image reader, so that a packed image is read the same way from a file
 * and from an HTTP object (docs/packed.md).
 */
#ifndef PC_SOURCES_INT_H
#define PC_SOURCES_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "packed_format.h"
#include "postcopy.h"

/* Bytes [@off, @off + @len) of a file or object: all of them, or a
 * negative errno (transient ones as for pc_source_ops.fetch). */
struct blob_ops {
	int (*read)(void *ctx, uint64_t off, uint64_t len, void *dst);
	/* Optional: @n reads at once, several in flight, each finished
	 * also after another failed; @rets[i] (0 on entry: to do) gets
	 * read i's result. */
	void (*read_many)(void *ctx, unsigned n, const uint64_t *off,
			  const uint64_t *len, void *const *dst, int *rets);
	void (*destroy)(void *ctx);
};

/* Say why into @why (if any), as snprintf() does. */
static inline void set_why(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline void set_why(char *why, size_t len, const char *fmt, ...)
{
	if (!why || !len)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

/* The first @len bytes start with the packed magic. */
bool packed_magic(const void *first, size_t len);

/*
 * A source over the packed image in the @blob_size bytes @ops reads.  Owns
 * @ctx from here on, also on failure.  -EBADMSG for a damaged or
 * inconsistent header or index (the reason in @why), -EPROTONOSUPPORT
 * for another version.
 */
int packed_open(const struct blob_ops *ops, void *ctx, uint64_t blob_size,
		pc_source **out, char *why, size_t why_len);

/* The blob context under @src when it is a packed source read by @read. */
void *packed_blob_ctx(pc_source *src,
		      int (*read)(void *, uint64_t, uint64_t, void *));

/* The format's digests (what `postcopy pack` writes). */
void pack_chunk_digest(uint64_t chunk, uint64_t image_size, const void *data,
		       size_t len, uint8_t out[PACK_DIGEST_LEN]);
void pack_identity(const struct pack_header *h, const struct pack_entry *index,
		   uint8_t out[PACK_IDENTITY_LEN]);

#endif
