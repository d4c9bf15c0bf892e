/* SPDX-License-Identifier: MIT */
/*
 * ws_file.c - working-set files (docs/working-set.md): write, read and
 * check them, and the image identity they are bound to.
 *
 * The one idea: a file is trusted only after all of it was checked (its
 * length against its header, a checksum over every byte, every page inside
 * the image and present once, first touches in order), so a replay never
 * acts on half a file.  Replay only changes the order in which pages come
 * from the source; it never supplies contents, so even a wrong list cannot
 * install a wrong byte, but it is refused all the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "le.h"
#include "proto.h"
#include "ws_int.h"

#define WS_MAGIC "PCWSET\r\n" /* \r\n: a file mangled as text fails here */
#define WS_VERSION 1u
#define WS_HEADER 64u
#define WS_ENTRY 16u
#define WS_TRAILER 8u

int ws_alloc(const struct pc_image_id *image, uint64_t count, pc_ws **out)
{
	pc_ws *ws = calloc(1, sizeof(*ws));
	if (!ws)
		return -ENOMEM;
	ws->e = calloc(count ? count : 1, sizeof(*ws->e));
	if (!ws->e) {
		free(ws);
		return -ENOMEM;
	}
	ws->image = *image;
	ws->count = count;
	ws->runs = 1;
	*out = ws;
	return 0;
}

int pc_image_id_of(pc_source *src, struct pc_image_id *out)
{
	enum { STEP = 256 };
	if (src->identity)
		return src->identity(src->ctx, out);
	uint64_t size = pc_source_size(src), pages = size / PC_SOURCE_PAGE_SIZE;
	uint64_t *digests = malloc(pages * sizeof(*digests));
	char *buf = malloc((size_t)STEP * PC_SOURCE_PAGE_SIZE);
	int ret = digests && buf ? 0 : -ENOMEM;
	for (uint64_t p = 0; p < pages && ret == 0; p += STEP) {
		uint64_t n = pages - p < STEP ? pages - p : STEP;
		ret = pc_source_read(src, p, n, buf);
		for (uint64_t i = 0; i < n && ret == 0; i++)
			digests[p + i] = proto_page_digest(buf + i * PC_SOURCE_PAGE_SIZE, p + i);
	}
	if (ret == 0) {
		out->size = size;
		proto_image_digest(digests, pages, size, out->digest);
	}
	free(buf);
	free(digests);
	return ret;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t put = write(fd, p, len);
		if (put < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += put;
		len -= (size_t)put;
	}
	return 0;
}

/* The file's bytes for @count entries @e. */
static uint8_t *encode(const pc_ws *ws, const struct ws_entry *e,
		       uint64_t count, size_t *len)
{
	*len = WS_HEADER + count * WS_ENTRY + WS_TRAILER;
	uint8_t *b = calloc(1, *len);
	if (!b)
		return NULL;
	memcpy(b, WS_MAGIC, 8);
	put32(b + 8, WS_VERSION);
	put32(b + 12, WS_HEADER);
	put64(b + 16, ws->image.size);
	memcpy(b + 24, ws->image.digest, PC_IMAGE_DIGEST_LEN);
	put64(b + 40, count);
	put32(b + 48, ws->r ? 1 : ws->runs);
	put32(b + 52, WS_ENTRY);
	put64(b + 56, count ? (uint64_t)e[count - 1].time_us * 1000 : 0);
	for (uint64_t i = 0; i < count; i++) {
		uint8_t *q = b + WS_HEADER + i * WS_ENTRY;
		put64(q, e[i].page);
		put32(q + 8, e[i].time_us);
		put16(q + 12, e[i].thread);
		put16(q + 14, e[i].runs);
	}
	put64(b + *len - WS_TRAILER, XXH3_64bits(b, *len - WS_TRAILER));
	return b;
}

int pc_ws_save(const pc_ws *ws, const char *path)
{
	struct ws_entry *e = ws->e;
	uint64_t count = ws->count;
	if (ws->r) {
		int ret = ws_collect(ws, &e, &count);
		if (ret < 0)
			return ret;
	}
	size_t len;
	uint8_t *b = encode(ws, e, count, &len);
	if (e != ws->e)
		free(e);
	if (!b)
		return -ENOMEM;
	/* A temporary name and rename(): a reader never sees half a file. */
	size_t plen = strlen(path) + 16;
	char *tmp = malloc(plen);
	int ret = tmp ? 0 : -ENOMEM;
	int fd = -1;
	if (ret == 0) {
		snprintf(tmp, plen, "%s.tmp%d", path, (int)getpid());
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			ret = -errno;
	}
	if (ret == 0)
		ret = write_all(fd, b, len);
	if (fd >= 0 && close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0 && fd >= 0)
		unlink(tmp);
	free(tmp);
	free(b);
	return ret;
}

struct page_at {
	uint64_t page, i;
};

static int by_page_then_index(const void *a, const void *b)
{
	const struct page_at *x = a, *y = b;
	if (x->page != y->page)
		return x->page < y->page ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

/*
 * The first of the @count entries at @q whose page (< @pages) an earlier
 * entry already has; UINT64_MAX if none, UINT64_MAX - 1 out of memory.
 * A bitmap of the image's pages while it is no bigger than the file (plus
 * 1 MiB), else a sort: the image size is the file's word, and a 100-byte
 * file may claim 16 EiB.
 */
static uint64_t first_repeat(const uint8_t *q, uint64_t count, uint64_t pages,
			     size_t len)
{
	uint64_t first = UINT64_MAX;
	if ((pages + 63) / 64 * 8 <= len + (1u << 20)) {
		uint64_t *seen = calloc((pages + 63) / 64, sizeof(*seen));
		if (!seen)
			return UINT64_MAX - 1;
		for (uint64_t i = 0; i < count; i++) {
			uint64_t page = get64(q + i * WS_ENTRY);
			if (page >= pages)
				continue;
			if (bitmap_test(seen, page)) {
				first = i;
				break;
			}
			bitmap_set(seen, page);
		}
		free(seen);
		return first;
	}
	struct page_at *p = malloc((count ? count : 1) * sizeof(*p));
	if (!p)
		return UINT64_MAX - 1;
	for (uint64_t i = 0; i < count; i++)
		p[i] = (struct page_at){ get64(q + i * WS_ENTRY), i };
	qsort(p, count, sizeof(*p), by_page_then_index);
	for (uint64_t i = 1; i < count; i++)
		if (p[i].page == p[i - 1].page && p[i].page < pages && p[i].i < first)
			first = p[i].i;
	free(p);
	return first;
}

/* Check every byte of the file image @b (@len bytes) before trusting any. */
static int decode(const uint8_t *b, size_t len, pc_ws **out, char *why,
		  size_t why_len)
{
#define BAD(...) (snprintf(why, why_len, __VA_ARGS__), -EBADMSG)
	if (len < WS_HEADER + WS_TRAILER || memcmp(b, WS_MAGIC, 8))
		return len >= 8 && !memcmp(b, WS_MAGIC, 8) ?
			       BAD("truncated: %zu bytes, shorter than a header", len) :
			       BAD("not a working-set file (bad magic)");
	uint32_t version = get32(b + 8);
	if (version != WS_VERSION) {
		snprintf(why, why_len, "format version %u; this library reads version %u",
			 version, WS_VERSION);
		return -ENOTSUP;
	}
	if (get32(b + 12) != WS_HEADER || get32(b + 52) != WS_ENTRY)
		return BAD("bad header or entry size");
	uint64_t count = get64(b + 40);
	if (count > (len - WS_HEADER - WS_TRAILER) / WS_ENTRY ||
	    len != WS_HEADER + count * WS_ENTRY + WS_TRAILER)
		return BAD("%s: %zu bytes, the header says %llu entries (%llu bytes)",
			   count > (len - WS_HEADER - WS_TRAILER) / WS_ENTRY ? "truncated" :
									    "trailing bytes",
			   len, (unsigned long long)count,
			   (unsigned long long)(WS_HEADER + count * WS_ENTRY + WS_TRAILER));
	if (get64(b + len - WS_TRAILER) != XXH3_64bits(b, len - WS_TRAILER))
		return BAD("checksum mismatch: the file is corrupt");
	struct pc_image_id image = { .size = get64(b + 16) };
	memcpy(image.digest, b + 24, PC_IMAGE_DIGEST_LEN);
	uint32_t runs = get32(b + 48);
	uint64_t pages = image.size / PC_SOURCE_PAGE_SIZE;
	if (!image.size || image.size % PC_SOURCE_PAGE_SIZE || !runs || runs > 0xffff)
		return BAD("bad image size or run count");
	uint64_t dup = first_repeat(b + WS_HEADER, count, pages, len);
	pc_ws *ws = NULL;
	int ret = dup == UINT64_MAX - 1 ? -ENOMEM : ws_alloc(&image, count, &ws);
	if (ret == -ENOMEM)
		snprintf(why, why_len, "out of memory");
	for (uint64_t i = 0; i < count && ret == 0; i++) {
		const uint8_t *q = b + WS_HEADER + i * WS_ENTRY;
		struct ws_entry *e = &ws->e[i];
		*e = (struct ws_entry){ get64(q), get32(q + 8), get16(q + 12),
					get16(q + 14) };
		if (e->page >= pages)
			ret = BAD("entry %llu: page %llu is outside the image (%llu pages)",
				  (unsigned long long)i, (unsigned long long)e->page,
				  (unsigned long long)pages);
		else if (i == dup)
			ret = BAD("entry %llu: page %llu appears twice",
				  (unsigned long long)i, (unsigned long long)e->page);
		else if (i && e->time_us < ws->e[i - 1].time_us)
			ret = BAD("entry %llu: first touches out of order",
				  (unsigned long long)i);
		else if (!e->runs || e->runs > runs)
			ret = BAD("entry %llu: held by %u of %u runs",
				  (unsigned long long)i, e->runs, runs);
	}
	if (ret < 0) {
		pc_ws_destroy(ws);
		return ret;
	}
	ws->runs = runs;
	*out = ws;
	return 0;
#undef BAD
}

int pc_ws_load(const char *path, pc_ws **out, char *why, size_t why_len)
{
	char dummy[1];
	if (!why) {
		why = dummy;
		why_len = sizeof(dummy);
	}
	why[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int err = -errno;
		snprintf(why, why_len, "%s", strerror(errno));
		return err;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (1ll << 40)) {
		close(fd);
		snprintf(why, why_len, "not a regular file");
		return -EINVAL;
	}
	size_t len = (size_t)st.st_size;
	uint8_t *b = malloc(len ? len : 1);
	size_t got = 0;
	while (b && got < len) {
		ssize_t n = pread(fd, b + got, len - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	int ret;
	if (!b) {
		ret = -ENOMEM;
		snprintf(why, why_len, "out of memory");
	} else {
		ret = decode(b, got, out, why, why_len);
	}
	free(b);
	return ret;
}

int pc_ws_check_image(const pc_ws *ws, const struct pc_image_id *image,
		      char *why, size_t why_len)
{
	char dummy[1];
	if (!why) {
		why = dummy;
		why_len = sizeof(dummy);
	}
	if (ws->image.size != image->size) {
		snprintf(why, why_len, "the working set is of an image of %llu bytes, this one has %llu",
			 (unsigned long long)ws->image.size,
			 (unsigned long long)image->size);
		return -ESTALE;
	}
	if (memcmp(ws->image.digest, image->digest, PC_IMAGE_DIGEST_LEN)) {
		snprintf(why, why_len, "the working set was recorded on another image (its digest differs)");
		return -ESTALE;
	}
	return 0;
}

int pc_ws_info(const pc_ws *ws, struct pc_ws_info *out)
{
	if (ws->r)
		return -EINVAL;
	*out = (struct pc_ws_info){
		.image = ws->image,
		.pages = ws->count,
		.runs = ws->runs,
		.duration_ns = ws->count ? (uint64_t)ws->e[ws->count - 1].time_us * 1000 : 0,
	};
	return 0;
}

int pc_ws_entry(const pc_ws *ws, uint64_t i, struct pc_ws_entry *out)
{
	if (ws->r || i >= ws->count)
		return -EINVAL;
	const struct ws_entry *e = &ws->e[i];
	*out = (struct pc_ws_entry){
		.offset = e->page * PC_SOURCE_PAGE_SIZE,
		.time_ns = (uint64_t)e->time_us * 1000,
		.thread = e->thread == WS_THREAD_OTHER ? PC_THREAD_OTHER : e->thread,
		.runs = e->runs,
	};
	return 0;
}

void pc_ws_destroy(pc_ws *ws)
{
	if (!ws)
		return;
	if (ws->area)
		munmap(ws->area, ws->area_len);
	free(ws->slots);
	free(ws->e);
	free(ws);
}
