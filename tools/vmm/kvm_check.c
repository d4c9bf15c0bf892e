/* SPDX-License-Identifier: MIT */
/*
 * kvm_check.c - what the benchmark VMM's guest is expected to have read
 * and written, checked against a source: plain C, for every architecture
 * (kvm.c, the runner itself, is x86-64 only).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvm.h"

const char *kvm_path_str(enum kvm_path p)
{
	switch (p) {
	case KVM_PATH_NONE:
		return "none";
	case KVM_PATH_WAIT:
		return "wait";
	case KVM_PATH_EXIT:
		return "exit";
	case KVM_PATH_BITMAP:
		return "bitmap";
	}
	return "?";
}

void kvm_guest_result_free(struct kvm_guest_result *res)
{
	free(res->sums);
	res->sums = NULL;
}

int kvm_expected_sum(pc_source *src, uint64_t first, uint64_t n, uint32_t *sum)
{
	enum { CHUNK = 256 };
	char *buf = malloc((size_t)CHUNK * PC_SOURCE_PAGE_SIZE);
	if (!buf)
		return -ENOMEM;
	uint32_t s = 0;
	int ret = 0;
	for (uint64_t done = 0; done < n && ret == 0; done += CHUNK) {
		uint64_t k = n - done < CHUNK ? n - done : CHUNK;
		ret = pc_source_read(src, first + done, k, buf);
		for (uint64_t i = 0; i < k && ret == 0; i++) {
			uint32_t word;
			memcpy(&word, buf + i * PC_SOURCE_PAGE_SIZE + 8, 4);
			s += word;
		}
	}
	free(buf);
	*sum = s;
	return ret;
}

uint64_t kvm_verify(const char *mem, uint64_t size, pc_source *src,
		    uint64_t *first_bad)
{
	char page[PC_SOURCE_PAGE_SIZE];
	uint64_t bad = 0;
	for (uint64_t p = 0; p < size / PC_SOURCE_PAGE_SIZE; p++) {
		const char *got = mem + p * PC_SOURCE_PAGE_SIZE;
		uint32_t gpa = (uint32_t)(KVM_GUEST_MEM_GPA + p * PC_SOURCE_PAGE_SIZE);
		if (pc_source_read(src, p, 1, page) < 0 ||
		    memcmp(got, &gpa, 4) || memcmp(got + 4, page + 4, sizeof(page) - 4)) {
			if (bad++ == 0 && first_bad)
				*first_bad = p;
		}
	}
	return bad;
}
