/* SPDX-License-Identifier: MIT */
/*
 * cmd_pack.c - `postcopy pack IMAGE OUT` and `postcopy unpack PACKED OUT`:
 * a raw image to the packed format (docs/packed.md: independently
 * compressed zstd chunks, zero chunks stored as nothing, a digest per
 * chunk, an index hashed into the image's identity); cmd_unpack.c goes
 * back.  Every source reads packed images as they are.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "sources_int.h"
#include "tools.h"

int pack_write_at(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	while (len) {
		ssize_t w = pwrite(fd, p, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		off += (uint64_t)w;
		len -= (size_t)w;
	}
	return 0;
}

int pack_read_at(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -ENODATA;
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

static bool all_zero(const char *p, size_t len)
{
	return len == 0 || (p[0] == 0 && !memcmp(p, p + 1, len - 1));
}

static void pack_usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy pack [--chunk SIZE] [--level N] IMAGE OUT\n"
		"\n"
		"Write raw IMAGE as a packed image (docs/packed.md): chunks of SIZE\n"
		"(64K..16M, a multiple of 4 KiB; default 1M) compressed independently\n"
		"with zstd, all-zero chunks stored as nothing, a digest per chunk, and\n"
		"an index bound to the image's identity.  restore, fc-handler and the\n"
		"library read packed images from files and HTTP/S3 objects as they are.\n"
		"OUT is replaced.\n"
		"\n"
		"  --chunk SIZE  raw bytes per chunk (default 1M)\n"
		"  --level N     zstd level, 1..19 (default 3)\n"
		"  -h, --help    this text\n"
		"\n"
		"Exit status: 0 written, 1 I/O error, 2 bad arguments.\n");
}

int cmd_pack(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "chunk", required_argument, NULL, 'c' },
		{ "level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	uint64_t chunk = PACK_DEFAULT_CHUNK;
	unsigned level = 3;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (parse_size(optarg, &chunk) < 0 || chunk < PACK_MIN_CHUNK ||
			    chunk > PACK_MAX_CHUNK || chunk % PC_SOURCE_PAGE_SIZE)
				return bad_arg("pack", "--chunk (64K..16M, a multiple of 4 KiB)", optarg);
			break;
		case 'l':
			if (parse_uint(optarg, 1, 19, &level) < 0)
				return bad_arg("pack", "--level (1..19)", optarg);
			break;
		case 'h':
			pack_usage(stdout);
			return EXIT_OK;
		default:
			pack_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		pack_usage(stderr);
		return EXIT_USAGE;
	}
	const char *in = argv[optind], *outp = argv[optind + 1];
	int st = check_input_file("pack", "IMAGE", in);
	if (st != EXIT_OK)
		return st;

	int ifd = open(in, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	char magic[8];
	if (ifd < 0 || fstat(ifd, &sb) < 0) {
		complain("pack", "%s: %s", in, strerror(errno));
		return EXIT_FAIL;
	}
	uint64_t size = (uint64_t)sb.st_size;
	if (size >= sizeof(magic) && pack_read_at(ifd, magic, sizeof(magic), 0) == 0 &&
	    packed_magic(magic, sizeof(magic))) {
		complain("pack", "%s is packed already", in);
		close(ifd);
		return EXIT_FAIL;
	}
	if (!size || size % PC_SOURCE_PAGE_SIZE) {
		complain("pack", "%s: size %llu is not a positive multiple of 4096", in,
			 (unsigned long long)size);
		close(ifd);
		return EXIT_FAIL;
	}

	struct pack_header h = {
		.version = PACK_VERSION,
		.header_size = PACK_HEADER_SIZE,
		.image_size = size,
		.chunk_size = (uint32_t)chunk,
		.nchunks = (size + chunk - 1) / chunk,
		.index_offset = PACK_HEADER_SIZE,
	};
	memcpy(h.magic, PACK_MAGIC, 8);
	uint64_t index_bytes = h.nchunks * sizeof(struct pack_entry);
	h.data_offset = PACK_HEADER_SIZE +
			(index_bytes + PC_SOURCE_PAGE_SIZE - 1) / PC_SOURCE_PAGE_SIZE *
				PC_SOURCE_PAGE_SIZE;

	char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp", outp) < 0)
		return EXIT_FAIL;
	int ofd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t bound = ZSTD_compressBound(chunk);
	char *raw = malloc(chunk), *comp = malloc(bound);
	struct pack_entry *index = calloc(h.nchunks, sizeof(*index));
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	int ret = ofd < 0 ? -errno : (!raw || !comp || !index || !cctx) ? -ENOMEM : 0;
	uint64_t zero_chunks = 0, raw_chunks = 0;
	double t0 = seconds_now();

	for (uint64_t i = 0; ret == 0 && i < h.nchunks; i++) {
		uint64_t len = size - i * chunk < chunk ? size - i * chunk : chunk;
		struct pack_entry *e = &index[i];
		ret = pack_read_at(ifd, raw, len, i * chunk);
		if (ret < 0)
			break;
		pack_chunk_digest(i, size, raw, len, e->digest);
		e->offset = h.data_size;
		if (all_zero(raw, len)) {
			e->kind = PACK_ZERO;
			zero_chunks++;
			continue;
		}
		size_t n = ZSTD_compressCCtx(cctx, comp, bound, raw, len, (int)level);
		const char *data = comp;
		if (ZSTD_isError(n) || n >= len) { /* not worth it: as is */
			e->kind = PACK_RAW;
			data = raw;
			n = len;
			raw_chunks++;
		} else {
			e->kind = PACK_ZSTD;
		}
		e->csize = (uint32_t)n;
		ret = pack_write_at(ofd, data, n, h.data_offset + h.data_size);
		h.data_size += n;
	}
	if (ret == 0) {
		pack_identity(&h, index, h.identity);
		char head[PACK_HEADER_SIZE] = { 0 };
		memcpy(head, &h, sizeof(h));
		ret = pack_write_at(ofd, index, index_bytes, h.index_offset);
		if (ret == 0)
			ret = pack_write_at(ofd, head, sizeof(head), 0);
		if (ret == 0 && fsync(ofd) < 0)
			ret = -errno;
	}
	if (ret == 0 && rename(tmp, outp) < 0)
		ret = -errno;
	if (ret < 0) {
		complain("pack", "%s: %s", ofd < 0 ? tmp : in, strerror(-ret));
		unlink(tmp);
	} else {
		uint64_t total = h.data_offset + h.data_size;
		printf("packed %s: %.1f MiB in %llu chunks of %llu KiB (%llu zero, %llu stored raw) -> %.1f MiB, ratio %.2f, %.2f s\n",
		       outp, (double)size / (1 << 20), (unsigned long long)h.nchunks,
		       (unsigned long long)(chunk >> 10), (unsigned long long)zero_chunks,
		       (unsigned long long)raw_chunks, (double)total / (1 << 20),
		       (double)size / (double)total, seconds_now() - t0);
	}
	ZSTD_freeCCtx(cctx);
	free(index);
	free(comp);
	free(raw);
	free(tmp);
	if (ofd >= 0)
		close(ofd);
	close(ifd);
	return ret < 0 ? EXIT_FAIL : EXIT_OK;
}
