/* SPDX-License-Identifier: MIT */
/*
 * packed_format.h - the packed image format (docs/packed.md): what the
 * reader (packed.c) and `postcopy pack` share.  All integers are little
 * endian on disk; this code runs on little-endian hosts only (x86-64,
 * arm64) and says so where it reads them.
 *
 *   [header: 4096 bytes][index: nchunks entries of 32 bytes, padded to
 *    4096][chunk data, back to back]
 */
#ifndef PC_PACKED_FORMAT_H
#define PC_PACKED_FORMAT_H

#include <stdint.h>

#define PACK_MAGIC "PCPACK\r\n" /* 8 bytes; \r\n catches text-mode copies */
#define PACK_VERSION 1u
#define PACK_HEADER_SIZE 4096u
#define PACK_MIN_CHUNK (64u << 10)
#define PACK_MAX_CHUNK (16u << 20)
#define PACK_DEFAULT_CHUNK (1u << 20)
#define PACK_DIGEST_LEN 16u   /* per chunk: BLAKE2b-128 */
#define PACK_IDENTITY_LEN 32u /* BLAKE2b-256 */

enum pack_kind {
	PACK_ZERO = 0, /* every byte zero: nothing stored */
	PACK_ZSTD = 1, /* one zstd frame */
	PACK_RAW = 2,  /* stored as is (zstd would not make it smaller) */
};

struct pack_header {
	char magic[8];
	uint32_t version;
	uint32_t header_size;	/* PACK_HEADER_SIZE */
	uint64_t image_size;	/* bytes of the raw image, a multiple of 4096 */
	uint32_t chunk_size;	/* raw bytes per chunk (the last may be shorter) */
	uint32_t flags;		/* 0 */
	uint64_t nchunks;
	uint64_t index_offset;	/* PACK_HEADER_SIZE */
	uint64_t data_offset;	/* where chunk offsets count from */
	uint64_t data_size;	/* bytes of chunk data */
	/* BLAKE2b-256 of this header up to here (identity excluded) and of
	 * the whole index: the image's identity, which binds every chunk's
	 * digest, offset and size. */
	uint8_t identity[PACK_IDENTITY_LEN];
};

struct pack_entry {
	uint64_t offset; /* from data_offset */
	uint32_t csize;	 /* stored bytes (0 for PACK_ZERO) */
	uint32_t kind;	 /* enum pack_kind */
	/* BLAKE2b-128 of the chunk's raw contents, keyed with its number
	 * (8 bytes LE) and the image size (8 bytes LE). */
	uint8_t digest[PACK_DIGEST_LEN];
};

_Static_assert(sizeof(struct pack_header) == 96, "packed header layout");
_Static_assert(sizeof(struct pack_entry) == 32, "packed index entry layout");

#endif
