/* SPDX-License-Identifier: MIT */
/*
 * test_memory_check - pc_region_create() refuses a shared-memory region
 * the machine cannot hold, before anything is allocated, and says why with
 * the numbers; opts.no_memory_check skips the check.
 *
 * Pins:
 *   - shmem larger than twice MemAvailable + SwapFree: -ENOMEM at create,
 *     the reason names GiB figures; nothing stays mapped or allocated;
 *   - the same with no_memory_check: created (a sparse memfd: no page is
 *     allocated by create), destroyed;
 *   - hugetlb needing one more 2 MiB page than are free and unreserved
 *     (plus overcommit room): -ENOMEM naming the huge page counts;
 *   - anon of the same huge size is not checked (MAP_NORESERVE).
 * The sources are pattern sources, which cost no memory.
 */
#include <stdint.h>

#include "postcopy.h"
#include "tap.h"

/* A "Key: N kB" line of @path, in bytes. */
static uint64_t kb_line(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	char line[256];
	unsigned long long kb = 0;
	size_t kl = strlen(key);

	if (!f)
		bail_out("%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			sscanf(line + kl + 1, "%llu", &kb);
	fclose(f);
	return (uint64_t)kb << 10;
}

static uint64_t meminfo(const char *key)
{
	return kb_line("/proc/meminfo", key);
}

/* This process's resident memory, shmem included: others' do not count. */
static uint64_t own_rss(void)
{
	return kb_line("/proc/self/status", "VmRSS");
}

static uint64_t huge_sysfs(const char *name)
{
	long v = hugepages_read(name);

	return v > 0 ? (uint64_t)v : 0;
}

static int create(uint64_t size, enum pc_backend b, bool skip_check,
		  char *why, size_t len, pc_region **r)
{
	struct pc_region_opts o = { .size = size, .backend = b,
				    .no_memory_check = skip_check };
	pc_source *src;

	if (pc_source_pattern(size, 1, &src))
		bail_out("pc_source_pattern(%llu) failed",
			 (unsigned long long)size);
	why[0] = '\0';
	return pc_region_create(&o, src, r, why, len);
}

int main(void)
{
	char why[512];
	pc_region *r = NULL;
	int ret;

	plan(4);
	tap_watchdog(60);

	/* Twice what the machine could hold, whole GiB. */
	uint64_t room = meminfo("MemAvailable") + meminfo("SwapFree");
	uint64_t big = (2 * room / (1ull << 30) + 1) << 30;
	diag("MemAvailable + SwapFree = %.1f GiB; asking for %llu GiB",
	     (double)room / (1ull << 30), (unsigned long long)(big >> 30));

	uint64_t rss0 = own_rss();
	ret = create(big, PC_BACKEND_SHMEM, false, why, sizeof(why), &r);
	if (!ok(ret == -ENOMEM && strstr(why, "GiB") &&
			strstr(why, "MemAvailable"),
		"shmem_larger_than_available_is_enomem_naming_the_numbers"))
		diag("pc_region_create = %d (%s)", ret, why);
	else
		diag("%s", why);
	if (ret == 0)
		pc_region_destroy(r);

	ret = create(big, PC_BACKEND_SHMEM, true, why, sizeof(why), &r);
	uint64_t rss = own_rss(), grew = rss > rss0 ? rss - rss0 : 0;
	if (!ok(ret == 0 && grew < (64ull << 20),
		"shmem_no_memory_check_creates_without_allocating"))
		diag("pc_region_create = %d (%s), RSS grew %llu bytes", ret,
		     why, (unsigned long long)grew);
	if (ret == 0)
		pc_region_destroy(r);

	uint64_t free_pages = huge_sysfs("free_hugepages");
	uint64_t resv = huge_sysfs("resv_hugepages");
	uint64_t over = huge_sysfs("nr_overcommit_hugepages");
	uint64_t surplus = huge_sysfs("surplus_hugepages");
	uint64_t hroom = (free_pages > resv ? free_pages - resv : 0) +
			 (over > surplus ? over - surplus : 0);
	ret = create((hroom + 1) * HUGE_PAGE, PC_BACKEND_HUGETLB, false, why,
		     sizeof(why), &r);
	if (!ok(ret == -ENOMEM && strstr(why, "huge pages") &&
			strstr(why, "are free"),
		"hugetlb_more_pages_than_free_is_enomem_naming_the_counts"))
		diag("pc_region_create = %d (%s)", ret, why);
	else
		diag("%s", why);
	if (ret == 0)
		pc_region_destroy(r);

	/* vm.overcommit_memory=2 refuses the mapping itself: nothing to pin. */
	FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
	int policy = 0;
	if (f) {
		if (fscanf(f, "%d", &policy) != 1)
			policy = 0;
		fclose(f);
	}
	if (policy == 2) {
		skip("vm.overcommit_memory is 2", "anon_is_left_to_overcommit_and_not_checked");
	} else {
		ret = create(big, PC_BACKEND_ANON, false, why, sizeof(why), &r);
		if (!ok(ret == 0, "anon_is_left_to_overcommit_and_not_checked"))
			diag("pc_region_create = %d (%s)", ret, why);
		if (ret == 0)
			pc_region_destroy(r);
	}
	return done();
}
