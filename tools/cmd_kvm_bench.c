/* SPDX-License-Identifier: MIT */
/*
 * cmd_kvm_bench.c - `postcopy kvm-bench`: the demand_paging_test with real
 * KVM vCPUs (tools/vmm/kvm.c) on postcopy memory.
 *
 * The same run measures the no-userfaultfd baseline (plain memory with the
 * contents already local) and then the chosen path, and reports the path
 * as a ratio to it.  Which path: -p auto takes the KVM userfault bitmap
 * where the kernel has it (patches/linux-6.12), else probes the kernel
 * with a one-page VM and takes the exit path where KVM reports the
 * faulting guest address, else the wait path, and says which and why.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvm.h"
#include "tools.h"

enum path_choice { CHOOSE_AUTO, CHOOSE_WAIT, CHOOSE_EXIT, CHOOSE_BITMAP };

struct kvm_bench_opts {
	struct memstress_opts m; /* m.uffds: once the path is known */
	enum path_choice choice;
	bool baseline;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy kvm-bench [options]\n"
		"\n"
		"Demand paging with real KVM vCPUs: a minimal VMM whose guest memory is\n"
		"a postcopy region.  Each vCPU runs a tiny guest that writes one word to\n"
		"every 4 KiB page of its slice and reads another, like the KVM selftest's\n"
		"memstress guest, then reports on an I/O port.  Each run measures the\n"
		"no-userfaultfd baseline first and reports the path as a ratio to it;\n"
		"every byte, and what the guest read, is verified against the source.\n"
		"Needs /dev/kvm.\n"
		"\n"
		"  -v N          vCPUs (default 1)\n"
		"  -b SIZE       memory per vCPU (default 16M; K, M, G suffixes)\n"
		"  -s BACKEND    shmem | hugetlb | anon (default shmem)\n"
		"  -p PATH       how faults are resolved:\n"
		"                wait: vCPUs sleep in KVM_RUN while handler threads\n"
		"                      resolve (works on every kernel)\n"
		"                exit: KVM_RUN returns KVM_EXIT_MEMORY_FAULT and the vCPU\n"
		"                      thread resolves the guest address itself (needs a\n"
		"                      kernel that reports it; probed first)\n"
		"                bitmap: the KVM userfault bitmap (KVM_CAP_USERFAULT, from\n"
		"                      patches/linux-6.12): vCPUs exit on pages whose bit\n"
		"                      is set and resolve them; KVM's own accesses wait\n"
		"                auto: bitmap, else exit, else wait: the best this\n"
		"                      kernel has (default)\n"
		"  -r N          wait path: reader threads per userfaultfd (default 1)\n"
		"  -a            wait path: one userfaultfd for all memory (default: one\n"
		"                per vCPU slice, like the selftest)\n"
		"  -d US         injected latency per fetch, microseconds (default 0)\n"
		"  --cold        put page-cache allocation in the timed path (shared\n"
		"                backends; by default it happens before the clock)\n"
		"  --no-baseline skip the baseline run\n"
		"  --seed N      source pattern seed (default 1)\n"
		"  --json        one JSON object\n"
		"  -h, --help    this text\n"
		"\n"
		"Exit status: 0 measured and verified, 1 error (no /dev/kvm, a kernel\n"
		"without the exit path when -p exit asked for it) or verification\n"
		"failure, 2 bad arguments (also -r/-a with -p exit, --cold with anon).\n");
}

static int parse(int argc, char **argv, struct kvm_bench_opts *o)
{
	static const struct option longopts[] = {
		{ "cold", no_argument, NULL, 'C' },
		{ "no-baseline", no_argument, NULL, 'B' },
		{ "seed", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;

	*o = (struct kvm_bench_opts){ .baseline = true };
	memstress_defaults(&o->m, 16 << 20);
	bool seen[128] = { false }; /* options given, by their getopt code */
	while ((c = getopt_long(argc, argv, "v:b:s:p:r:ad:h", longopts, NULL)) != -1) {
		if (c > 0 && c < 128)
			seen[c] = true;
		int taken = memstress_opt("kvm-bench", c, optarg, 256, &o->m);
		if (taken >= 0) {
			if (taken)
				return taken;
			continue;
		}
		switch (c) {
		case 'p':
			if (!strcmp(optarg, "auto"))
				o->choice = CHOOSE_AUTO;
			else if (!strcmp(optarg, "wait"))
				o->choice = CHOOSE_WAIT;
			else if (!strcmp(optarg, "exit"))
				o->choice = CHOOSE_EXIT;
			else if (!strcmp(optarg, "bitmap"))
				o->choice = CHOOSE_BITMAP;
			else
				return bad_arg("kvm-bench", "path (auto, wait, exit or bitmap)", optarg);
			break;
		case 'B':
			o->baseline = false;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		complain("kvm-bench", "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	/* Flags that would be ignored are refused, not dropped silently. */
	if (o->choice == CHOOSE_EXIT && (seen['r'] || seen['a'])) {
		complain("kvm-bench", "-r and -a are for the wait and bitmap paths: -p exit has no handler threads");
		return EXIT_USAGE;
	}
	if (seen['C'] && o->m.backend == PC_BACKEND_ANON) {
		complain("kvm-bench", "--cold is for shmem and hugetlb: anonymous memory has no page cache");
		return EXIT_USAGE;
	}
	if (!page_multiple_ok("kvm-bench", o->m.backend, o->m.per_vcpu))
		return EXIT_USAGE;
	if (o->m.per_vcpu > KVM_GUEST_MEM_MAX / o->m.vcpus) {
		complain("kvm-bench", "-b %llu x %u vCPUs is more than the guest's "
			 "%llu MiB", (unsigned long long)o->m.per_vcpu, o->m.vcpus,
			 (unsigned long long)(KVM_GUEST_MEM_MAX >> 20));
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/* The outcome of one run of the guest. */
struct outcome {
	double seconds, rate;
	bool verified;
	struct kvm_exit_counts exits;
};

/* Did every vCPU read what the source holds, and is every byte right? */
static bool check_guest(const char *mem, uint64_t size, unsigned vcpus,
			const struct kvm_guest_result *res, pc_source *expect)
{
	uint64_t slice = size / vcpus / PC_SOURCE_PAGE_SIZE;
	bool ok = true;
	for (unsigned i = 0; i < vcpus; i++) {
		uint32_t want;
		if (kvm_expected_sum(expect, i * slice, slice, &want) < 0 ||
		    want != res->sums[i]) {
			complain("kvm-bench", "vCPU %u read a sum of %#x, the source "
				 "holds %#x", i, res->sums[i], want);
			ok = false;
		}
	}
	uint64_t first_bad = 0, nbad = kvm_verify(mem, size, expect, &first_bad);
	if (nbad) {
		complain("kvm-bench", "%llu pages differ from the source (first: "
			 "page %llu)", (unsigned long long)nbad,
			 (unsigned long long)first_bad);
		ok = false;
	}
	return ok;
}

static int run_guest(const struct kvm_guest_opts *go, pc_source *expect,
		     struct outcome *out)
{
	struct kvm_guest_result res;
	int ret = kvm_run_guest(go, &res);
	if (ret < 0) {
		complain("kvm-bench", "%s", res.error);
	} else {
		out->seconds = res.seconds;
		out->rate = (double)res.pages / res.seconds;
		out->exits = res.exits;
		out->verified = check_guest(go->mem, go->size, go->vcpus, &res, expect);
	}
	kvm_guest_result_free(&res);
	return ret;
}

static int run_baseline(const struct kvm_bench_opts *o, uint64_t size,
			pc_source *ref, struct outcome *out)
{
	struct baseline_mem bm;
	int ret = baseline_map(o->m.backend, size, ref, &bm);
	if (ret < 0) {
		complain("kvm-bench", "baseline memory: %s%s", strerror(-ret),
			 o->m.backend == PC_BACKEND_HUGETLB && ret == -ENOMEM ?
			 " (reserve huge pages: echo N > /proc/sys/vm/nr_hugepages)" : "");
		return ret;
	}
	struct kvm_guest_opts go = { .mem = bm.mem, .size = size,
				     .vcpus = o->m.vcpus, .path = KVM_PATH_NONE };
	ret = run_guest(&go, bm.expect, out);
	baseline_unmap(&bm);
	return ret;
}

static int run_path(const struct kvm_bench_opts *o, enum kvm_path path,
		    uint64_t size, pc_source *ref, struct outcome *out,
		    struct pc_stats **stats, uint64_t *dups)
{
	pc_source *pattern, *src;
	struct counting *counter;
	int ret = pc_source_pattern(size, o->m.seed, &pattern);
	if (ret == 0)
		ret = counting_source(pattern, &counter, &src);
	if (ret < 0)
		return ret;
	pc_source_set_delay(src, o->m.delay_us, PC_DELAY_SLEEP);
	/* The bitmap path keeps the userfaultfd in wait mode for KVM's own
	 * accesses. */
	struct pc_region_opts ro = {
		.size = size,
		.backend = o->m.backend,
		.mode = path == KVM_PATH_EXIT ? PC_MODE_EXIT : PC_MODE_WAIT,
		.uffds = o->m.uffds,
		.readers = o->m.readers,
		.max_threads = o->m.vcpus,
		.prealloc = !o->m.cold,
	};
	pc_region *r;
	ret = start_region("kvm-bench", &ro, src, &r);
	if (ret < 0)
		return ret;
	struct kvm_guest_opts go = { .mem = pc_region_addr(r), .size = size,
				     .vcpus = o->m.vcpus, .path = path, .region = r };
	ret = run_guest(&go, ref, out);
	if (ret == -EIO && pc_region_error(r)[0]) {
		/* Its vCPUs sleep in KVM_RUN for good; tearing the region down
		 * under them could let them read zeroes.  Leave. */
		fflush(stdout);
		_exit(EXIT_FAIL);
	}
	if (ret == 0) {
		/* Every page was touched, so the region completes itself. */
		ret = pc_region_wait(r, 60000);
		if (ret < 0)
			complain("kvm-bench", "region did not complete: %s",
				 ret == -ETIMEDOUT ? "timed out" : pc_region_error(r));
		*dups = counting_duplicates(counter);
		pc_region_stats(r, stats);
	}
	pc_region_destroy(r);
	return ret;
}

static const char *path_desc(const struct kvm_bench_opts *o, enum kvm_path path,
			     char *buf, size_t len)
{
	if (path == KVM_PATH_EXIT)
		snprintf(buf, len, "exit (KVM_EXIT_MEMORY_FAULT, resolved on the vCPU thread)");
	else if (path == KVM_PATH_BITMAP)
		snprintf(buf, len, "bitmap (KVM userfault exits, resolved on the vCPU thread)");
	else
		wait_desc(buf, len, o->m.uffds, o->m.readers);
	return buf;
}

static struct json_object *exits_json(const struct kvm_exit_counts *e)
{
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "io", json_object_new_int64((int64_t)e->io));
	json_object_object_add(j, "memory_fault", json_object_new_int64((int64_t)e->memory_fault));
	json_object_object_add(j, "userfault", json_object_new_int64((int64_t)e->userfault));
	json_object_object_add(j, "intr", json_object_new_int64((int64_t)e->intr));
	json_object_object_add(j, "other", json_object_new_int64((int64_t)e->other));
	return j;
}

static void print_json(const struct kvm_bench_opts *o, enum kvm_path path,
		       const char *path_why, uint64_t size,
		       const struct outcome *base, const struct outcome *m,
		       const struct pc_stats *st, uint64_t dups)
{
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "path", json_object_new_string(kvm_path_str(path)));
	json_object_object_add(j, "path_reason", json_object_new_string(path_why));
	json_object_object_add(j, "backend", json_object_new_string(backend_str(o->m.backend)));
	json_object_object_add(j, "vcpus", json_object_new_int((int)o->m.vcpus));
	bool wait = path == KVM_PATH_WAIT;
	json_object_object_add(j, "uffds", json_object_new_int((int)o->m.uffds));
	json_object_object_add(j, "readers", json_object_new_int(wait ? (int)o->m.readers : 0));
	json_object_object_add(j, "bytes", json_object_new_int64((int64_t)size));
	json_object_object_add(j, "pages", json_object_new_int64((int64_t)(size / PC_SOURCE_PAGE_SIZE)));
	json_object_object_add(j, "delay_us", json_object_new_int((int)o->m.delay_us));
	json_object_object_add(j, "seconds", json_object_new_double(m->seconds));
	json_object_object_add(j, "pages_per_sec", json_object_new_double(m->rate));
	if (o->baseline) {
		json_object_object_add(j, "baseline_pages_per_sec", json_object_new_double(base->rate));
		json_object_object_add(j, "ratio_to_baseline", json_object_new_double(m->rate / base->rate));
	}
	json_object_object_add(j, "kvm_exits", exits_json(&m->exits));
	json_object_object_add(j, "duplicate_fetches", json_object_new_int64((int64_t)dups));
	json_object_object_add(j, "verified", json_object_new_boolean(m->verified && (!o->baseline || base->verified)));
	json_object_object_add(j, "stats", stats_json(st));
	printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
	json_object_put(j);
}

static void print_text(const struct kvm_bench_opts *o, enum kvm_path path,
		       const char *path_why, uint64_t size,
		       const struct outcome *base, const struct outcome *m,
		       const struct pc_stats *st, uint64_t dups)
{
	char how[96];
	printf("kvm-bench: %u vCPUs x %llu KiB %s, delay %u us\n", o->m.vcpus,
	       (unsigned long long)(o->m.per_vcpu >> 10), backend_str(o->m.backend),
	       o->m.delay_us);
	printf("path       %s\n           because: %s\n",
	       path_desc(o, path, how, sizeof(how)), path_why);
	if (o->baseline)
		printf("baseline   %.3f s, %.0f pages/s total (no userfaultfd)\n",
		       base->seconds, base->rate);
	printf("%-10s %.3f s, %.0f pages/s total, %.0f pages/s per vCPU",
	       kvm_path_str(path), m->seconds, m->rate, m->rate / o->m.vcpus);
	if (o->baseline)
		printf(", %.2fx baseline", m->rate / base->rate);
	printf("\nKVM exits  io %llu, memory_fault %llu (userfault %llu), intr %llu, other %llu\n",
	       (unsigned long long)m->exits.io,
	       (unsigned long long)m->exits.memory_fault,
	       (unsigned long long)m->exits.userfault,
	       (unsigned long long)m->exits.intr,
	       (unsigned long long)m->exits.other);
	pc_stats_print(st, stdout);
	printf("duplicates %llu pages fetched more than once\n",
	       (unsigned long long)dups);
	printf("verified   %s (%llu bytes; what each vCPU read)\n",
	       m->verified && (!o->baseline || base->verified) ?
		       "every byte matches the source" : "NO",
	       (unsigned long long)size);
}

/* Pick the path; 0 or EXIT_FAIL with a message. */
static int choose_path(const struct kvm_bench_opts *o, enum kvm_path *path,
		       char *why, size_t why_len)
{
	if (o->choice == CHOOSE_WAIT) {
		*path = KVM_PATH_WAIT;
		snprintf(why, why_len, "asked for with -p wait");
		return 0;
	}
	bool bitmap = kvm_has_userfault_bitmap();
	if (o->choice == CHOOSE_BITMAP || (o->choice == CHOOSE_AUTO && bitmap)) {
		if (!bitmap) {
			complain("kvm-bench", "the bitmap path needs a kernel with "
				 "KVM_CAP_USERFAULT (patches/linux-6.12), and this one "
				 "does not have it; use -p exit or -p wait");
			return EXIT_FAIL;
		}
		*path = KVM_PATH_BITMAP;
		snprintf(why, why_len, "%s", o->choice == CHOOSE_BITMAP ?
			 "asked for with -p bitmap" :
			 "the kernel has the KVM userfault bitmap (KVM_CAP_USERFAULT)");
		return 0;
	}
	char probe[200];
	int ret = kvm_probe_exit_path(probe, sizeof(probe));
	if (ret < 0) {
		complain("kvm-bench", "probing the exit path: %s", probe);
		return EXIT_FAIL;
	}
	if (ret == 1) {
		*path = KVM_PATH_EXIT;
		snprintf(why, why_len, "the kernel reports the faulting guest "
			 "address (probe: %s)", probe);
		return 0;
	}
	if (o->choice == CHOOSE_EXIT) {
		complain("kvm-bench", "the exit path needs a kernel that reports "
			 "the faulting guest address, and this one does not (probe: "
			 "%s); use -p wait", probe);
		return EXIT_FAIL;
	}
	*path = KVM_PATH_WAIT;
	snprintf(why, why_len, "the exit path is unavailable on this kernel "
		 "(probe: %s)", probe);
	return 0;
}

int cmd_kvm_bench(int argc, char **argv)
{
	struct kvm_bench_opts o;
	int ret = parse(argc, argv, &o);
	if (ret < 0)
		return EXIT_OK; /* --help */
	if (ret != EXIT_OK)
		return ret;

	char why[256];
	if (kvm_available(why, sizeof(why)) < 0) {
		complain("kvm-bench", "%s", why);
		return EXIT_FAIL;
	}
	enum kvm_path path;
	if (choose_path(&o, &path, why, sizeof(why)))
		return EXIT_FAIL;
	o.m.uffds = path == KVM_PATH_WAIT && !o.m.one_uffd ? o.m.vcpus : 1;

	uint64_t size = o.m.per_vcpu * o.m.vcpus;
	pc_source *ref;
	if (pc_source_pattern(size, o.m.seed, &ref) < 0)
		return EXIT_FAIL;
	struct outcome base = { 0 }, m = { 0 };
	struct pc_stats *st = NULL;
	uint64_t dups = 0;
	int status = EXIT_FAIL;
	if (o.baseline && run_baseline(&o, size, ref, &base) < 0)
		goto out;
	if (run_path(&o, path, size, ref, &m, &st, &dups) < 0 || !st)
		goto out;
	if (o.m.json)
		print_json(&o, path, why, size, &base, &m, st, dups);
	else
		print_text(&o, path, why, size, &base, &m, st, dups);
	status = m.verified && (!o.baseline || base.verified) && dups == 0 ?
		 EXIT_OK : EXIT_FAIL;
out:
	free(st);
	pc_source_destroy(ref);
	return status;
}
