/* SPDX-License-Identifier: MIT */
/*
 * test_before_start - pages touched between pc_region_create() and
 * pc_region_start() come back with the source's contents, never as the
 * zeros (anon) or the empty page cache (shmem) the kernel mapped them
 * with before the pager was there; in both modes, every byte compared.
 */
#include <sys/mman.h>

#include "postcopy.h"
#include "tap.h"

#define SIZE (4 * MIB)

static void one(enum pc_backend b, enum pc_mode m, bool prealloc, pc_source *ref)
{
	pc_source *src;
	pc_region *r;
	char why[256] = "";
	if (pc_source_pattern(SIZE, 5, &src))
		bail_out("pc_source_pattern");
	struct pc_region_opts o = { .size = SIZE, .backend = b, .mode = m,
				    .prealloc = prealloc };
	if (pc_region_create(&o, src, &r, why, sizeof(why)))
		bail_out("pc_region_create: %s", why);
	volatile char *mem = pc_region_addr(r);
	uint64_t pages = SIZE / SRC_PAGE, sum = 0;
	/* Touched early: read some pages, write others. */
	for (uint64_t p = 0; p < pages; p += 7)
		sum += (unsigned char)mem[p * SRC_PAGE + 11];
	for (uint64_t p = 3; p < pages; p += 13)
		mem[p * SRC_PAGE] = 0x42;
	(void)sum;
	int ret = pc_region_start(r);
	if (ret == 0)
		ret = pc_region_start_fill(r);
	if (ret == 0)
		ret = pc_region_wait(r, 30000);
	uint64_t bad = ret ? pages : verify_mem(pc_region_addr(r), SIZE, ref, NULL, NULL);
	if (!ok(ret == 0 && bad == 0, "%s%s_%s_pages_touched_before_start_get_the_source_contents",
		backend_name(b), prealloc ? "_prealloc" : "", mode_name(m)))
		diag("ret %d (%s), %llu pages differ", ret, pc_region_error(r),
		     (unsigned long long)bad);
	pc_region_destroy(r);
}

int main(void)
{
	pc_source *ref;
	struct hugepages hp;
	plan(8);
	if (pc_source_pattern(SIZE, 5, &ref))
		bail_out("pc_source_pattern");
	one(PC_BACKEND_ANON, PC_MODE_EXIT, false, ref);
	one(PC_BACKEND_ANON, PC_MODE_WAIT, false, ref);
	one(PC_BACKEND_SHMEM, PC_MODE_EXIT, false, ref);
	one(PC_BACKEND_SHMEM, PC_MODE_WAIT, false, ref);
	one(PC_BACKEND_SHMEM, PC_MODE_EXIT, true, ref);
	one(PC_BACKEND_SHMEM, PC_MODE_WAIT, true, ref);
	if (hugepages_reserve(&hp, SIZE / (2 * MIB))) {
		one(PC_BACKEND_HUGETLB, PC_MODE_EXIT, false, ref);
		one(PC_BACKEND_HUGETLB, PC_MODE_WAIT, false, ref);
		hugepages_restore(&hp);
	} else {
		skip("no 2 MiB huge pages could be reserved", "hugetlb_exit_pages_touched_before_start");
		skip("no 2 MiB huge pages could be reserved", "hugetlb_wait_pages_touched_before_start");
	}
	pc_source_destroy(ref);
	return done();
}
