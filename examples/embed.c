/* SPDX-License-Identifier: MIT */
/*
 * embed.c - the smallest useful embedding of libpostcopy: lazily restore
 * 16 MiB of guest memory from a source while this thread uses it, then
 * check every byte against the source.
 * Usage: embed-example [IMAGE]  (without IMAGE, a generated pattern)
 * Build: cc embed.c $(pkg-config --cflags --libs libpostcopy)
 * Exit status: 0 restored and verified, 1 otherwise.
 */
#include <postcopy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	pc_source *src;
	int ret = argc > 1 ? pc_source_file(argv[1], &src) :
			     pc_source_pattern(16 << 20, 1, &src);
	if (ret < 0) {
		fprintf(stderr, "source: %s\n", strerror(-ret));
		return 1;
	}

	/* Exit mode: this thread's faults are resolved on this thread. */
	struct pc_region_opts opts = { .size = pc_source_size(src) };
	pc_region *guest;
	char why[256];
	ret = pc_region_create(&opts, src, &guest, why, sizeof(why));
	if (ret < 0) {
		fprintf(stderr, "region: %s\n", why);
		return 1;
	}
	if (pc_region_start(guest) < 0 || pc_region_start_fill(guest) < 0) {
		fprintf(stderr, "start: %s\n", pc_region_error(guest));
		pc_region_destroy(guest);
		return 1;
	}

	/* Use the memory right away; missing pages arrive as touched. */
	const unsigned char *mem = pc_region_addr(guest);
	unsigned long sum = 0;
	for (size_t off = 0; off < opts.size; off += 4096)
		sum += mem[off];

	ret = pc_region_wait(guest, 30000);
	if (ret < 0) {
		fprintf(stderr, "wait: %s\n", strerror(-ret));
		pc_region_destroy(guest);
		return 1;
	}
	struct pc_stats *stats;
	if (pc_region_stats(guest, &stats) == 0) {
		pc_stats_print(stats, stdout);
		free(stats);
	}
	printf("checksum of first bytes: %lu\n", sum);

	/* Every page must hold what the source says (the region still owns
	 * @src until it is destroyed). */
	static unsigned char expect[PC_SOURCE_PAGE_SIZE];
	uint64_t bad = 0, pages = opts.size / PC_SOURCE_PAGE_SIZE;
	for (uint64_t p = 0; p < pages; p++) {
		if (pc_source_read(src, p, 1, expect) < 0 ||
		    memcmp(mem + p * PC_SOURCE_PAGE_SIZE, expect, sizeof(expect)))
			bad++;
	}
	if (bad)
		fprintf(stderr, "verify: %llu of %llu pages differ\n",
			(unsigned long long)bad, (unsigned long long)pages);
	else
		printf("verified: %llu bytes\n", (unsigned long long)opts.size);
	pc_region_destroy(guest);
	return bad != 0;
}
