/* SPDX-License-Identifier: MIT */
/*
 * fc_regions.c - the Firecracker handshake's bytes (issue 11,
 * docs/firecracker.md): the JSON array of guest memory regions, taken in
 * as it arrives and checked.  Apart from cmd_fc_handler.c so that a
 * fuzzer (fuzz/fuzz_fc.c) links exactly what the handler runs on what a
 * peer sends.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

int fc_handshake_feed(struct json_tokener *tok, const char *buf, size_t n,
		      struct json_object **out, char *why, size_t wlen)
{
	*out = NULL;
	struct json_object *j = json_tokener_parse_ex(tok, buf, (int)n);
	enum json_tokener_error e = json_tokener_get_error(tok);
	if (e == json_tokener_continue)
		return 1;
	if (!j) {
		snprintf(why, wlen, "bad JSON: %s", json_tokener_error_desc(e));
		return -EINVAL;
	}
	/* Firecracker sends nothing after the array. */
	for (size_t i = json_tokener_get_parse_end(tok); i < n; i++)
		if (buf[i] != ' ' && buf[i] != '\n' && buf[i] != '\r' && buf[i] != '\t') {
			snprintf(why, wlen, "bytes after the JSON array");
			json_object_put(j);
			return -EINVAL;
		}
	*out = j;
	return 0;
}

/* A non-negative integer field: 1, 0 if absent, -EINVAL when not one. */
static int get_u64(struct json_object *o, const char *key, uint64_t *v)
{
	struct json_object *f;
	if (!json_object_object_get_ex(o, key, &f))
		return 0;
	if (!json_object_is_type(f, json_type_int) || json_object_get_int64(f) < 0)
		return -EINVAL;
	*v = json_object_get_uint64(f);
	return 1;
}

static int cmp_base(const void *a, const void *b)
{
	const struct pc_remote_range *x = *(const struct pc_remote_range *const *)a;
	const struct pc_remote_range *y = *(const struct pc_remote_range *const *)b;
	return x->base < y->base ? -1 : x->base > y->base;
}

/* Check the regions against each other and the memory file of @file_size. */
int fc_parse_regions(struct json_object *j, uint64_t file_size,
		     struct fc_handshake *h, char *why, size_t wlen)
{
	if (!json_object_is_type(j, json_type_array)) {
		snprintf(why, wlen, "the handshake is not a JSON array");
		return -EINVAL;
	}
	size_t n = json_object_array_length(j);
	if (n == 0 || n > FC_MAX_REGIONS) {
		snprintf(why, wlen, "%zu regions (1..%d expected)", n, FC_MAX_REGIONS);
		return -EINVAL;
	}
	h->n = (unsigned)n;
	h->total = 0;
	h->page_size = 0;
	h->shape = NULL;
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_array_get_idx(j, i), *f;
		uint64_t base = 0, size = 0, offset = 0, ps = 0, pskib = 0;
		if (!json_object_is_type(o, json_type_object)) {
			snprintf(why, wlen, "region %zu is not a JSON object", i);
			return -EINVAL;
		}
		int gb = get_u64(o, "base_host_virt_addr", &base);
		int gs = get_u64(o, "size", &size);
		int go = get_u64(o, "offset", &offset);
		int gp = get_u64(o, "page_size", &ps);
		int gk = get_u64(o, "page_size_kib", &pskib);
		if (gb != 1 || gs != 1 || go != 1 || gp < 0 || gk < 0) {
			snprintf(why, wlen, "region %zu: base_host_virt_addr, size and offset must be non-negative integers%s",
				 i, gp < 0 || gk < 0 ? ", page_size and page_size_kib too" : "");
			return -EINVAL;
		}
		if (json_object_object_get_ex(o, "is_guest_memfd", &f) && json_object_get_boolean(f)) {
			snprintf(why, wlen, "region %zu is guest_memfd (the secret-hiding branch): not supported", i);
			return -EINVAL;
		}
		/* page_size_kib holds bytes, despite its name (v1.7 on). */
		const char *shape = gp ? "v1.12" : gk ? "v1.7" : "v1.1";
		if (gp && gk && ps != pskib) {
			snprintf(why, wlen, "region %zu: page_size %llu and page_size_kib %llu disagree",
				 i, (unsigned long long)ps, (unsigned long long)pskib);
			return -EINVAL;
		}
		uint64_t page = gp ? ps : gk ? pskib : 4096;
		if (page != 4096 && page != FC_HUGE_2M) {
			snprintf(why, wlen, "region %zu: page size %llu bytes (4096 or 2097152 expected)",
				 i, (unsigned long long)page);
			return -EINVAL;
		}
		if (h->shape && (strcmp(shape, h->shape) || page != h->page_size)) {
			snprintf(why, wlen, "region %zu: its fields or page size differ from region 0's", i);
			return -EINVAL;
		}
		h->shape = shape;
		h->page_size = page;
		if (!size || size % page || base % page || base + size < base) {
			snprintf(why, wlen, "region %zu: base %#llx and size %llu must be non-zero multiples of the page size (%llu)",
				 i, (unsigned long long)base, (unsigned long long)size,
				 (unsigned long long)page);
			return -EINVAL;
		}
		if (offset != h->total) {
			snprintf(why, wlen, "region %zu: offset %llu, but the regions before it end at %llu (offsets must be cumulative from 0)",
				 i, (unsigned long long)offset, (unsigned long long)h->total);
			return -EINVAL;
		}
		if (offset + size > file_size) {
			snprintf(why, wlen, "region %zu: offset %llu + size %llu goes past the end of the memory file (%llu bytes)",
				 i, (unsigned long long)offset, (unsigned long long)size,
				 (unsigned long long)file_size);
			return -EINVAL;
		}
		h->r[i] = (struct pc_remote_range){ base, size };
		h->total += size;
	}
	if (h->total != file_size) {
		snprintf(why, wlen, "the regions cover %llu bytes, the memory file has %llu",
			 (unsigned long long)h->total, (unsigned long long)file_size);
		return -EINVAL;
	}
	const struct pc_remote_range *sorted[FC_MAX_REGIONS];
	for (unsigned i = 0; i < h->n; i++)
		sorted[i] = &h->r[i];
	qsort(sorted, h->n, sizeof(sorted[0]), cmp_base);
	for (unsigned i = 1; i < h->n; i++)
		if (sorted[i - 1]->base + sorted[i - 1]->size > sorted[i]->base) {
			snprintf(why, wlen, "regions at %#llx and %#llx overlap",
				 (unsigned long long)sorted[i - 1]->base,
				 (unsigned long long)sorted[i]->base);
			return -EINVAL;
		}
	return 0;
}
