/* SPDX-License-Identifier: MIT */
/*
 * cmd_bench.c - `postcopy bench`: the KVM demand_paging_test, for threads.
 *
 * V vCPU threads each write one word to every 4 KiB page of their slice
 * (or of all memory with -o); the clock starts when all are ready.  The
 * same run first measures the no-userfaultfd baseline on the same kind of
 * memory, then the chosen mode, and reports the mode as a ratio to it.
 * Every byte is verified afterwards, and a counting wrapper around the
 * source proves that no page was fetched twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tools.h"

struct bench_opts {
	struct memstress_opts m;
	enum pc_mode mode;
	bool overlap;
	enum pc_delay_kind delay_kind;
	enum access_order order;
	struct ws_params ws;
	unsigned window;
	bool csv;
	const char *cdf_path;
	const char *source; /* a postcopy server instead of the pattern */
	const char *key_path;
	bool insecure;
	unsigned net_timeout_s; /* 0: not given */
	bool no_memory_check;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy bench [options]\n"
		"\n"
		"Demand-paging benchmark after the KVM selftest demand_paging_test: vCPU\n"
		"threads write one word to every 4 KiB page of their slice; the clock\n"
		"starts when all are ready.  Each run measures the no-userfaultfd\n"
		"baseline first and reports the mode as a ratio to it; every byte is\n"
		"verified against the source afterwards.\n"
		"\n"
		"  -v N          vCPU threads (default 1)\n"
		"  -b SIZE       memory per vCPU (default 64M; K, M, G suffixes)\n"
		"  -s BACKEND    shmem | hugetlb | anon (default shmem)\n"
		"  -m MODE       exit: the faulting thread resolves its fault (SIGBUS);\n"
		"                wait: it sleeps while handler threads resolve (default exit)\n"
		"  -r N          wait mode: reader threads per userfaultfd (default 1)\n"
		"  -a            wait mode: one userfaultfd for all memory (default: one\n"
		"                per vCPU slice, like the selftest)\n"
		"  -o            overlap: every vCPU touches all memory\n"
		"  -d US         injected latency per fetch, microseconds (default 0)\n"
		"  --delay-kind sleep|busy   how the -d delay waits (default sleep)\n"
		"  -w N|auto     pages resolved per fault, aligned window (default 1;\n"
		"                not hugetlb); auto: per vCPU, doubling up to 2 MiB\n"
		"                while it faults sequentially, one page otherwise\n"
		"  --pattern, --workload seq|random|ws   access order within a slice\n"
		"                (default seq); ws: a working set like a booting\n"
		"                guest's, 10%% of memory, clustered, mostly not sequential\n"
		"                (docs/working-set.md); the filler completes the rest\n"
		"                after the vCPUs\n"
		"  --ws-seed N   ws: which run (runs differ around one base set; default 1)\n"
		"  --cold        put page-cache allocation in the timed path (shared\n"
		"                backends; by default it happens before the clock)\n"
		"  --seed N      source pattern seed (default 1)\n"
		"  --json        one JSON object per run\n"
		"  --csv         one CSV header and row\n"
		"  --cdf FILE    write the per-access latency CDF (us, fraction) to FILE\n"
		"  --source ADDR fetch from `postcopy serve` at tcp://HOST:PORT or\n"
		"                unix:PATH instead of the in-memory pattern; the image\n"
		"                must be `postcopy mkimage` output with the same --seed,\n"
		"                and its size divided by -v is the memory per vCPU\n"
		"                (no -b)\n"
		"  --key FILE, --insecure   authentication for --source over TCP\n"
		"  --net-timeout S  with --source: give up when the server is gone S\n"
		"                seconds (default 30)\n"
		"  --no-memory-check  start even if the memory is more than shmem or\n"
		"                hugetlb can hold here (MemAvailable + SwapFree, the\n"
		"                cgroup's limit, free huge pages)\n"
		"  -h, --help    this text\n"
		"\n"
		"Exit status: 0 measured and verified, 1 error or verification failure\n"
		"(also a source lost mid-run, in either mode), 2 bad arguments: unknown,\n"
		"conflicting or unused flags (-r/-a in exit mode, -w with hugetlb,\n"
		"--delay-kind without -d, --cold with anon, -b or --net-timeout where\n"
		"they do not apply), a bad address, TCP without a key, --insecure off\n"
		"loopback, or an unusable key file.\n");
}

static int parse(int argc, char **argv, struct bench_opts *o)
{
	static const struct option longopts[] = {
		{ "delay-kind", required_argument, NULL, 'K' },
		{ "pattern", required_argument, NULL, 'P' },
		{ "workload", required_argument, NULL, 'P' },
		{ "ws-seed", required_argument, NULL, 'W' },
		{ "cold", no_argument, NULL, 'C' },
		{ "seed", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "csv", no_argument, NULL, 'c' },
		{ "cdf", required_argument, NULL, 'F' },
		{ "source", required_argument, NULL, 'N' },
		{ "key", required_argument, NULL, 'k' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "net-timeout", required_argument, NULL, 'T' },
		{ "no-memory-check", no_argument, NULL, 'M' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;

	*o = (struct bench_opts){ .window = 1, .ws = WS_PARAMS_DEFAULT };
	memstress_defaults(&o->m, 64 << 20);
	bool seen[128] = { false }; /* options given, by their getopt code */
	while ((c = getopt_long(argc, argv, "v:b:s:m:r:aod:w:h", longopts,
				NULL)) != -1) {
		if (c > 0 && c < 128)
			seen[c] = true;
		int taken = memstress_opt("bench", c, optarg, 4096, &o->m);
		if (taken >= 0) {
			if (taken)
				return taken;
			continue;
		}
		switch (c) {
		case 'm':
			if (parse_mode(optarg, &o->mode) < 0)
				return bad_arg("bench", "mode", optarg);
			break;
		case 'o':
			o->overlap = true;
			break;
		case 'K':
			if (!strcmp(optarg, "sleep"))
				o->delay_kind = PC_DELAY_SLEEP;
			else if (!strcmp(optarg, "busy"))
				o->delay_kind = PC_DELAY_BUSY;
			else
				return bad_arg("bench", "delay kind", optarg);
			break;
		case 'w':
			if (parse_window(optarg, &o->window) < 0)
				return bad_arg("bench", "window (1..512 or auto)", optarg);
			break;
		case 'P':
			if (!strcmp(optarg, "seq"))
				o->order = ORDER_SEQ;
			else if (!strcmp(optarg, "random"))
				o->order = ORDER_RANDOM;
			else if (!strcmp(optarg, "ws"))
				o->order = ORDER_WS;
			else
				return bad_arg("bench", "pattern", optarg);
			break;
		case 'W':
			if (parse_seed(optarg, &o->ws.seed) < 0)
				return bad_arg("bench", "--ws-seed", optarg);
			break;
		case 'c':
			o->csv = true;
			break;
		case 'F':
			o->cdf_path = optarg;
			break;
		case 'N':
			o->source = optarg;
			break;
		case 'k':
			o->key_path = optarg;
			break;
		case 'I':
			o->insecure = true;
			break;
		case 'T':
			if (parse_uint(optarg, 1, 86400, &o->net_timeout_s) < 0)
				return bad_arg("bench", "--net-timeout (seconds)", optarg);
			break;
		case 'M':
			o->no_memory_check = true;
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
		complain("bench", "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	if (o->m.per_vcpu > (UINT64_MAX >> 1) / o->m.vcpus) {
		complain("bench", "-b %llu x %u vCPUs is too much memory",
			 (unsigned long long)o->m.per_vcpu, o->m.vcpus);
		return EXIT_USAGE;
	}
	/* Flags that would be ignored are refused, not dropped silently. */
	if (o->m.backend == PC_BACKEND_HUGETLB && o->window > 1) {
		complain("bench", "hugetlb resolves one 2 MiB page per fault: -w does not apply");
		return EXIT_USAGE;
	}
	if (o->mode == PC_MODE_EXIT && (seen['r'] || seen['a'])) {
		complain("bench", "-r and -a are for wait mode (-m wait): exit mode has no handler threads");
		return EXIT_USAGE;
	}
	if (seen['W'] && o->order != ORDER_WS) {
		complain("bench", "--ws-seed goes with --pattern ws");
		return EXIT_USAGE;
	}
	if (o->order == ORDER_WS && o->overlap) {
		complain("bench", "-o does not apply to the ws workload: its vCPUs share one working set");
		return EXIT_USAGE;
	}
	if (seen['K'] && !o->m.delay_us) {
		complain("bench", "--delay-kind goes with -d US");
		return EXIT_USAGE;
	}
	if (seen['C'] && o->m.backend == PC_BACKEND_ANON) {
		complain("bench", "--cold is for shmem and hugetlb: anonymous memory has no page cache");
		return EXIT_USAGE;
	}
	if (o->source && seen['b']) {
		complain("bench", "-b does not apply with --source: the memory per vCPU is the image's size divided by -v");
		return EXIT_USAGE;
	}
	if (o->net_timeout_s && !o->source) {
		complain("bench", "--net-timeout goes with --source");
		return EXIT_USAGE;
	}
	if (!page_multiple_ok("bench", o->m.backend, o->m.per_vcpu))
		return EXIT_USAGE;
	o->m.uffds = o->mode == PC_MODE_WAIT && !o->m.one_uffd ? o->m.vcpus : 1;
	if (o->m.json && o->csv) {
		complain("bench", "--json and --csv are exclusive");
		return EXIT_USAGE;
	}
	if (!auth_flags_ok("bench", o->source != NULL, o->key_path, o->insecure))
		return EXIT_USAGE;
	if (o->source && !address_ok("bench", "--source", o->source,
				     o->key_path != NULL, o->insecure))
		return EXIT_USAGE;
	if (o->key_path && !key_file_ok("bench", o->key_path))
		return EXIT_USAGE;
	return EXIT_OK;
}

/*
 * Would a region of @size bytes fit (pc_region_create()'s memory check)?
 * A trial region over a pattern source maps memory but allocates none.
 * Says why not.
 */
static bool memory_fits(const struct bench_opts *o, uint64_t size)
{
	pc_source *src;
	if (pc_source_pattern(size, o->m.seed, &src) < 0)
		return true; /* the real run will say what is wrong */
	struct pc_region_opts ro = { .size = size, .backend = o->m.backend,
				     .mode = o->mode };
	pc_region *r;
	char why[256];
	int ret = pc_region_create(&ro, src, &r, why, sizeof(why));
	if (ret == 0) {
		pc_region_destroy(r);
		return true;
	}
	if (ret != -ENOMEM)
		return true;
	complain("bench", "%s%s", why, o->m.backend == PC_BACKEND_SHMEM ?
		 "; --no-memory-check starts anyway" : "");
	return false;
}

/* ---- the baseline: same memory, contents already local ---- */

struct run_result {
	double seconds;
	double rate;
	double *vcpu_rate;
	struct hist *latency;
	bool verified;
};

static int run_baseline(const struct bench_opts *o, uint64_t size,
			pc_source *ref, struct run_result *out)
{
	struct baseline_mem bm;
	int ret = baseline_map(o->m.backend, size, ref, &bm);
	if (ret < 0) {
		if (o->m.backend == PC_BACKEND_HUGETLB && ret == -ENOMEM)
			complain("bench", "not enough 2 MiB huge pages for the baseline: reserve them with 'echo N > /proc/sys/vm/nr_hugepages'");
		return ret;
	}
	struct workload w = {
		.mem = bm.mem, .size = size, .vcpus = o->m.vcpus,
		.overlap = o->overlap, .write = true, .order = o->order,
		.ws = &o->ws,
	};
	struct workload_result res;
	ret = workload_run(&w, &res);
	if (ret == 0) {
		uint64_t first_bad = 0;
		uint64_t nbad = verify_memory(bm.mem, size, bm.expect, res.touched, &first_bad);
		free(res.touched);
		out->seconds = res.seconds;
		out->rate = (double)res.accesses / res.seconds;
		out->vcpu_rate = res.vcpu_rate;
		out->latency = res.latency;
		out->verified = nbad == 0;
	}
	baseline_unmap(&bm);
	return ret;
}

/*
 * A run that failed: say why on stderr and, with --json, print the run's
 * description and the region's figures with "verified": false and the
 * reason, so a script sees the same object shape fail as succeed.
 */
static void fail_report(const struct bench_opts *o, uint64_t size,
			const char *what, pc_region *r)
{
	const char *reason = pc_region_error(r);
	char error[320];
	snprintf(error, sizeof(error), "%s%s%s", what, reason[0] ? ": " : "",
		 reason);
	complain("bench", "%s", error);
	if (!o->m.json)
		return;
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "mode", json_object_new_string(mode_str(o->mode)));
	json_object_object_add(j, "backend", json_object_new_string(backend_str(o->m.backend)));
	json_object_object_add(j, "vcpus", json_object_new_int((int)o->m.vcpus));
	json_object_object_add(j, "bytes", json_object_new_int64((int64_t)size));
	json_object_object_add(j, "pages", json_object_new_int64((int64_t)(size / PC_SOURCE_PAGE_SIZE)));
	json_object_object_add(j, "verified", json_object_new_boolean(false));
	json_object_object_add(j, "error", json_object_new_string(error));
	struct pc_stats *st = NULL;
	if (pc_region_stats(r, &st) == 0) {
		json_object_object_add(j, "stats", stats_json(st));
		free(st);
	}
	printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
	json_object_put(j);
}

static int run_mode(const struct bench_opts *o, uint64_t size, pc_source *ref,
		    pc_source *remote, struct run_result *out,
		    struct pc_stats **stats, uint64_t *dups)
{
	struct counting *counter = NULL;
	pc_source *inner = remote, *src;
	int ret = inner ? 0 : pc_source_pattern(size, o->m.seed, &inner);
	if (ret == 0)
		ret = counting_source(inner, &counter, &src);
	if (ret < 0)
		return ret;
	pc_source_set_delay(src, o->m.delay_us, o->delay_kind);

	struct pc_region_opts ro = {
		.size = size,
		.backend = o->m.backend,
		.mode = o->mode,
		.uffds = o->m.uffds,
		.readers = o->m.readers,
		.window = o->window,
		.max_threads = o->m.vcpus,
		.prealloc = !o->m.cold,
		.no_memory_check = o->no_memory_check,
	};
	pc_region *r;
	ret = start_region("bench", &ro, src, &r);
	if (ret < 0)
		return ret;
	struct workload w = {
		.mem = pc_region_addr(r), .size = size, .vcpus = o->m.vcpus,
		.overlap = o->overlap, .write = true, .order = o->order,
		.ws = &o->ws, .region = r,
	};
	struct workload_result res;
	ret = workload_run(&w, &res);
	/* A working set leaves pages untouched: the filler brings them,
	 * after the clock. */
	if (ret == 0 && o->order == ORDER_WS)
		ret = pc_region_start_fill(r);
	if (ret == -EIO) {
		/* Its vCPUs are parked for good (postcopy.h, WHEN A PAGE
		 * CANNOT BE HAD): report, with the JSON asked for, and
		 * leave.  Not exit(): the parked threads and their region
		 * are left behind on purpose, and leak checkers would say
		 * so. */
		fail_report(o, size, "the pager failed", r);
		fflush(stdout);
		_exit(EXIT_FAIL);
	}
	if (ret == 0) {
		/* Every page was touched, so the region completes itself. */
		ret = pc_region_wait(r, 60000);
		if (ret < 0) {
			fail_report(o, size, ret == -ETIMEDOUT ?
				    "region did not complete: timed out" :
				    "region did not complete", r);
			workload_result_free(&res);
			pc_region_destroy(r);
			return ret;
		}
		uint64_t first_bad = 0;
		uint64_t nbad = verify_memory(pc_region_addr(r), size, ref,
					      res.touched, &first_bad);
		free(res.touched);
		if (nbad)
			complain("bench", "%llu pages differ from the source (first: page %llu)",
				 (unsigned long long)nbad,
				 (unsigned long long)first_bad);
		out->seconds = res.seconds;
		out->rate = (double)res.accesses / res.seconds;
		out->vcpu_rate = res.vcpu_rate;
		out->latency = res.latency;
		out->verified = nbad == 0;
		*dups = counting_duplicates(counter);
		pc_region_stats(r, stats);
	}
	pc_region_destroy(r);
	return ret;
}

static double mean(const double *v, unsigned n)
{
	double s = 0;
	for (unsigned i = 0; i < n; i++)
		s += v[i];
	return n ? s / n : 0;
}

static const char *delivery(const struct bench_opts *o, char *buf, size_t len)
{
	if (o->mode == PC_MODE_EXIT)
		snprintf(buf, len, "exit (SIGBUS, no handler thread)");
	else
		wait_desc(buf, len, o->m.uffds, o->m.readers);
	return buf;
}

static void print_text(const struct bench_opts *o, uint64_t size,
		       const struct run_result *base, const struct run_result *m,
		       const struct pc_stats *st, uint64_t dups)
{
	char how[96];
	char win[16];
	window_str(o->window, win, sizeof(win));
	printf("backend %s, mode %s, %u vCPUs x %llu KiB%s, %s access, window %s, "
	       "delay %u us (%s), %s page cache\n",
	       backend_str(o->m.backend), delivery(o, how, sizeof(how)), o->m.vcpus,
	       (unsigned long long)(o->m.per_vcpu >> 10),
	       o->overlap ? " (overlapping)" : "",
	       o->order == ORDER_RANDOM ? "random" : o->order == ORDER_WS ? "working-set" : "sequential", win,
	       o->m.delay_us, o->delay_kind == PC_DELAY_BUSY ? "busy" : "sleep",
	       o->m.backend == PC_BACKEND_ANON ? "no" : o->m.cold ? "cold" : "warm");
	printf("baseline   %s\n",
	       o->m.backend == PC_BACKEND_ANON ?
		       "no userfaultfd; first touch of fresh anonymous memory (allocate + zero, no contents)" :
		       "no userfaultfd; contents already in the page cache, minor faults only");
	printf("  %.3f s, %.0f pages/s total, %.0f pages/s per vCPU\n",
	       base->seconds, base->rate, mean(base->vcpu_rate, o->m.vcpus));
	printf("%-10s %.3f s, %.0f pages/s total, %.0f pages/s per vCPU, %.2fx baseline\n",
	       mode_str(o->mode), m->seconds, m->rate, mean(m->vcpu_rate, o->m.vcpus),
	       m->rate / base->rate);
	printf("latency    per access as the vCPU saw it: p50 %.1f us, p90 %.1f, p99 %.1f, "
	       "p99.9 %.1f, max %.1f (baseline p50 %.1f us)\n",
	       hist_percentile(m->latency, 500) / 1e3,
	       hist_percentile(m->latency, 900) / 1e3,
	       hist_percentile(m->latency, 990) / 1e3,
	       hist_percentile(m->latency, 999) / 1e3, hist_max(m->latency) / 1e3,
	       hist_percentile(base->latency, 500) / 1e3);
	pc_stats_print(st, stdout);
	printf("duplicates %llu pages fetched more than once\n",
	       (unsigned long long)dups);
	printf("verified   %s (%llu bytes)\n",
	       m->verified && base->verified ? "every byte matches the source" : "NO",
	       (unsigned long long)size);
}

static void print_json(const struct bench_opts *o, uint64_t size,
		       const struct run_result *base, const struct run_result *m,
		       const struct pc_stats *st, uint64_t dups)
{
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "mode", json_object_new_string(mode_str(o->mode)));
	json_object_object_add(j, "backend", json_object_new_string(backend_str(o->m.backend)));
	json_object_object_add(j, "vcpus", json_object_new_int((int)o->m.vcpus));
	json_object_object_add(j, "uffds", json_object_new_int((int)o->m.uffds));
	json_object_object_add(j, "readers", json_object_new_int(o->mode == PC_MODE_EXIT ? 0 : (int)o->m.readers));
	json_object_object_add(j, "one_uffd", json_object_new_boolean(o->mode == PC_MODE_EXIT || o->m.one_uffd));
	json_object_object_add(j, "bytes", json_object_new_int64((int64_t)size));
	json_object_object_add(j, "pages", json_object_new_int64((int64_t)(size / PC_SOURCE_PAGE_SIZE)));
	json_object_object_add(j, "overlap", json_object_new_boolean(o->overlap));
	json_object_object_add(j, "pattern", json_object_new_string(o->order == ORDER_RANDOM ? "random" : o->order == ORDER_WS ? "ws" : "seq"));
	json_object_object_add(j, "window", o->window == PC_WINDOW_AUTO ?
						    json_object_new_string("auto") :
						    json_object_new_int((int)o->window));
	json_object_object_add(j, "delay_us", json_object_new_int((int)o->m.delay_us));
	json_object_object_add(j, "delay_kind", json_object_new_string(o->delay_kind == PC_DELAY_BUSY ? "busy" : "sleep"));
	json_object_object_add(j, "cold", json_object_new_boolean(o->m.cold));
	json_object_object_add(j, "seconds", json_object_new_double(m->seconds));
	json_object_object_add(j, "pages_per_sec", json_object_new_double(m->rate));
	struct json_object *per = json_object_new_array();
	for (unsigned i = 0; i < o->m.vcpus; i++)
		json_object_array_add(per, json_object_new_double(m->vcpu_rate[i]));
	json_object_object_add(j, "per_vcpu_pages_per_sec", per);
	json_object_object_add(j, "baseline_pages_per_sec", json_object_new_double(base->rate));
	json_object_object_add(j, "baseline_kind", json_object_new_string(
		o->m.backend == PC_BACKEND_ANON ? "anon-first-touch" : "page-cache-minor-faults"));
	json_object_object_add(j, "ratio_to_baseline", json_object_new_double(m->rate / base->rate));
	json_object_object_add(j, "faults", json_object_new_int64((int64_t)st->faults));
	json_object_object_add(j, "duplicate_fetches", json_object_new_int64((int64_t)dups));
	json_object_object_add(j, "latency_us", latency_json_us(m->latency));
	json_object_object_add(j, "baseline_latency_us", latency_json_us(base->latency));
	json_object_object_add(j, "verified", json_object_new_boolean(m->verified && base->verified));
	json_object_object_add(j, "stats", stats_json(st));
	printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
	json_object_put(j);
}

static void print_csv(const struct bench_opts *o, const struct run_result *base,
		      const struct run_result *m, const struct pc_stats *st,
		      uint64_t dups)
{
	printf("mode,backend,vcpus,uffds,readers,window,delay_us,pages_per_sec,"
	       "baseline_pages_per_sec,ratio_to_baseline,per_vcpu_pages_per_sec,"
	       "faults,duplicate_fetches,p50_us,p99_us,verified\n");
	printf("%s,%s,%u,%u,%u,%u,%u,%.0f,%.0f,%.3f,%.0f,%llu,%llu,%.1f,%.1f,%s\n",
	       mode_str(o->mode), backend_str(o->m.backend), o->m.vcpus,
	       o->m.uffds,
	       o->mode == PC_MODE_EXIT ? 0 : o->m.readers, o->window, o->m.delay_us,
	       m->rate, base->rate, m->rate / base->rate,
	       mean(m->vcpu_rate, o->m.vcpus), (unsigned long long)st->faults,
	       (unsigned long long)dups, hist_percentile(m->latency, 500) / 1e3,
	       hist_percentile(m->latency, 990) / 1e3,
	       m->verified && base->verified ? "true" : "false");
}

static int write_cdf(const char *path, const struct hist *h)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		complain("bench", "%s: %s", path, strerror(errno));
		return -errno;
	}
	uint64_t total = hist_count(h), seen = 0;
	fprintf(f, "# latency_us fraction_at_or_below\n");
	for (unsigned b = 0; b < HIST_BUCKETS && total; b++) {
		uint64_t n = atomic_load(&h->bucket[b]);
		if (!n)
			continue;
		seen += n;
		fprintf(f, "%.3f %.6f\n", hist_bucket_value(b) / 1e3,
			(double)seen / (double)total);
	}
	return fclose(f) ? -errno : 0;
}

int cmd_bench(int argc, char **argv)
{
	struct bench_opts o;
	int ret = parse(argc, argv, &o);
	if (ret < 0)
		return EXIT_OK; /* --help */
	if (ret != EXIT_OK)
		return ret;

	pc_source *remote = NULL;
	if (o.source) {
		if (open_net_source("bench", o.source, o.key_path, o.insecure,
				    o.net_timeout_s, 0, &remote, NULL, 0) < 0)
			return EXIT_FAIL;
		o.m.per_vcpu = pc_source_size(remote) / o.m.vcpus;
	}
	uint64_t size = remote ? pc_source_size(remote) : o.m.per_vcpu * o.m.vcpus;
	pc_source *ref;
	if (pc_source_pattern(size, o.m.seed, &ref) < 0) {
		pc_source_destroy(remote);
		return EXIT_FAIL;
	}
	struct run_result base = { 0 }, m = { 0 };
	struct pc_stats *st = NULL;
	uint64_t dups = 0;
	int status = EXIT_FAIL;

	/* The baseline allocates as much as the region will: ask the library
	 * whether the machine can hold it before either does. */
	if (!o.no_memory_check && !memory_fits(&o, size)) {
		pc_source_destroy(remote);
		goto out;
	}
	ret = run_baseline(&o, size, ref, &base);
	if (ret < 0) {
		complain("bench", "baseline run failed: %s", strerror(-ret));
		pc_source_destroy(remote);
		goto out;
	}
	ret = run_mode(&o, size, ref, remote, &m, &st, &dups);
	if (ret < 0 || !st)
		goto out;
	if (o.m.json)
		print_json(&o, size, &base, &m, st, dups);
	else if (o.csv)
		print_csv(&o, &base, &m, st, dups);
	else
		print_text(&o, size, &base, &m, st, dups);
	status = m.verified && base.verified && dups == 0 ? EXIT_OK : EXIT_FAIL;
	if (o.cdf_path && write_cdf(o.cdf_path, m.latency) < 0)
		status = EXIT_FAIL;
out:
	free(st);
	free(base.vcpu_rate);
	free(base.latency);
	free(m.vcpu_rate);
	free(m.latency);
	pc_source_destroy(ref);
	return status;
}
