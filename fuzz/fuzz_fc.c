/* SPDX-License-Identifier: MIT */
/*
 * fuzz_fc.c - libFuzzer harness for the Firecracker handshake
 * (tools/fc_regions.c): the JSON array of regions a Firecracker process
 * sends to `postcopy fc-handler`, fed to the tokenizer in pieces as the
 * socket would deliver them, then checked as the handler checks it.
 *
 * Input: bytes 0..7 the memory file's size (LE u64), byte 8 how the rest
 * is cut into reads (0: one read, else pieces of that many bytes), the
 * rest the message.  Whatever fc_parse_regions() accepts must be what
 * the handler may build a region on: 1..FC_MAX_REGIONS regions of one
 * page size (4 KiB or 2 MiB), each a non-empty page multiple at an
 * aligned base with no wrap-around, none overlapping another, covering
 * exactly the file (summed without overflow).  A refusal says why.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const struct fc_handshake *h, uint64_t file_size)
{
	if (h->n < 1 || h->n > FC_MAX_REGIONS || !h->shape ||
	    (h->page_size != 4096 && h->page_size != FC_HUGE_2M))
		abort();
	uint64_t sum = 0;
	for (unsigned i = 0; i < h->n; i++) {
		const struct pc_remote_range *a = &h->r[i];
		uint64_t end;
		if (!a->size || a->size % h->page_size || a->base % h->page_size ||
		    __builtin_add_overflow(a->base, a->size, &end) ||
		    __builtin_add_overflow(sum, a->size, &sum))
			abort();
		for (unsigned k = 0; k < i; k++) {
			const struct pc_remote_range *b = &h->r[k];
			if (a->base < b->base + b->size && b->base < end)
				abort();
		}
	}
	if (sum != file_size || h->total != file_size)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 9)
		return 0;
	uint64_t file_size;
	memcpy(&file_size, data, 8); /* little-endian hosts, as the project */
	size_t piece = data[8] ? data[8] : size - 9;
	data += 9;
	size -= 9;

	struct json_tokener *tok = json_tokener_new();
	if (!tok)
		return 0;
	struct json_object *j = NULL;
	char why[512] = "";
	int ret = 1;
	/* Each read in a buffer of its own size: ASan sees a read past it. */
	for (size_t off = 0; ret > 0 && off < size; off += piece) {
		size_t n = size - off < piece ? size - off : piece;
		char *buf = malloc(n);
		if (!buf)
			break;
		memcpy(buf, data + off, n);
		ret = fc_handshake_feed(tok, buf, n, &j, why, sizeof(why));
		free(buf);
		if ((ret == 0) != (j != NULL) || (ret < 0 && !why[0]))
			abort();
	}
	json_tokener_free(tok);
	if (ret != 0)
		return 0;

	struct fc_handshake h = { .uffd = -1 };
	why[0] = '\0';
	ret = fc_parse_regions(j, file_size, &h, why, sizeof(why));
	if (ret == 0)
		check_accepted(&h, file_size);
	else if (ret != -EINVAL || !why[0] || !memchr(why, '\0', sizeof(why)))
		abort();
	json_object_put(j);
	return 0;
}
