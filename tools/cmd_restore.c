/* SPDX-License-Identifier: MIT */
/*
 * cmd_restore.c - `postcopy restore`: a lazy snapshot restore you can
 * watch.  Maps a region, starts demand paging from the image, runs vCPU
 * threads reading their slices while the filler completes the rest, then
 * checks every byte of guest memory against the image file (read again
 * through its own descriptor, not through the pager) and prints stats.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools.h"

struct restore_opts {
	const char *image;
	const char *source; /* network address, or NULL for --image */
	const char *key_path;
	bool insecure;
	unsigned net_timeout_s;
	unsigned push_connections; /* --push-connections, 0: the default */
	unsigned fillers;	   /* --fillers, 0: the library's default */
	enum pc_mode mode;
	enum pc_backend backend;
	unsigned vcpus;
	enum access_order order;
	bool json;
	bool fill;
	unsigned delay_us;
	unsigned timeout_s;
	unsigned window;
	bool no_memory_check;
	struct ws_params ws;
	const char *record_ws;
	const char *replay_ws;
	bool http; /* source is http://, https:// or s3:// */
	struct http_spec hs;
};

static const char *order_name(enum access_order a)
{
	return a == ORDER_RANDOM ? "random" : a == ORDER_WS ? "ws" : "seq";
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy restore --image FILE [options]\n"
		"       postcopy restore --source ADDR [--key FILE | --insecure] [options]\n"
		"       postcopy restore --source URL [--image FILE] [options]\n"
		"\n"
		"Lazily restore a memory image into fresh guest memory while vCPU threads\n"
		"read it and the rest arrives in the background (a filler for a file, the\n"
		"server's push over the network); then verify it and print statistics.\n"
		"\n"
		"  --image FILE          raw image to restore (size a multiple of 4 KiB,\n"
		"                        of 2 MiB for hugetlb); with --source, the copy\n"
		"                        to verify against, byte for byte\n"
		"  --source ADDR         restore from `postcopy serve` at tcp://HOST:PORT\n"
		"                        or unix:PATH; every run is checked against the\n"
		"                        image digest (\"checksummed\"); with --image it\n"
		"                        is also compared byte for byte (\"verified\")\n"
		"  --source URL          restore from an object: http://HOST[:PORT]/PATH,\n"
		"                        https://... (a presigned S3 URL too), or\n"
		"                        s3://BUCKET/KEY signed with AWS SigV4 (credentials\n"
		"                        from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,\n"
		"                        AWS_SESSION_TOKEN, else the AWS_PROFILE (or\n"
		"                        default) profile of ~/.aws/credentials or\n"
		"                        AWS_SHARED_CREDENTIALS_FILE); range requests,\n"
		"                        the object pinned by its ETag; with --image\n"
		"                        compared byte for byte (\"verified\")\n"
		"  --s3-endpoint URL     s3://: the store's endpoint, path-style requests\n"
		"                        (MinIO, Ceph RGW; default AWS, virtual-hosted)\n"
		"  --s3-region R         s3://: signing region (default $AWS_REGION,\n"
		"                        $AWS_DEFAULT_REGION, the profile's region in\n"
		"                        ~/.aws/config or AWS_CONFIG_FILE, else us-east-1)\n"
		"  --http-timeout MS     URL sources: one request's limit (default 10000);\n"
		"                        a stalled request fails after it and is retried\n"
		"  --http-ca FILE        https: trust the certificate authorities in this\n"
		"                        PEM file (a private store's CA) instead of the\n"
		"                        system's; certificates are always verified\n"
		"  --key FILE            pre-shared key for TCP (mode 600)\n"
		"  --insecure            TCP without authentication: loopback tests only\n"
		"  --net-timeout S       with --source: give up when the server is gone\n"
		"                        S seconds (default 30)\n"
		"  --push-connections N  with --source: push connections, each received\n"
		"                        by a thread (1..4, default 2; 1 keeps demand\n"
		"                        faults' tails shortest when every core is busy)\n"
		"  -m, --mode exit|wait  fault delivery (default exit)\n"
		"  -s, --backend shmem|hugetlb|anon   guest memory (default shmem)\n"
		"  -v, --vcpus N         vCPU threads running the workload (default 2)\n"
		"  --workload seq|random|ws  order in which vCPUs touch their pages\n"
		"                        (default seq); ws: a working set like a booting\n"
		"                        guest's, clustered and mostly not sequential\n"
		"  --seed N              ws: which run (runs differ around one base set)\n"
		"  --ws-fraction F       ws: share of memory in the working set (0.1)\n"
		"  --ws-similarity J     ws: Jaccard similarity of two runs' pages (0.93)\n"
		"  --ws-next P           ws: chance the next touch is the next page (0.09)\n"
		"  --ws-base N           ws: the base set the runs are drawn around (0)\n"
		"  --record-ws FILE      record the pages demand faults fetched, in\n"
		"                        first-touch order (docs/working-set.md); the\n"
		"                        fill then starts when the vCPUs are done, and\n"
		"                        -w is 1 unless given\n"
		"  --replay-ws FILE      install a recording's pages first, in order,\n"
		"                        ahead of the vCPUs; refused if it was recorded\n"
		"                        on another image (both need --image, or a\n"
		"                        postcopy server's --source, whose identity\n"
		"                        the server proves)\n"
		"  -d, --delay US        injected latency per fetch, microseconds\n"
		"  -w, --window N|auto   pages fetched per fault, aligned around it\n"
		"                        (1..512; not hugetlb); auto: per vCPU,\n"
		"                        doubling up to 2 MiB while it reads\n"
		"                        sequentially (to 256 KiB while the fill or a\n"
		"                        server's push runs), else 64 KiB while they\n"
		"                        run and one page with --no-fill.  Default\n"
		"                        auto (1 on hugetlb and with --record-ws)\n"
		"  --no-fill             no background filler: only touched pages load\n"
		"  --fillers N           the filler's threads (1..8; default 2 where the\n"
		"                        machine has two CPUs or more, else 1)\n"
		"  --timeout S           give up if not complete after S seconds\n"
		"                        (default 600)\n"
		"  --no-memory-check     start even if the image is larger than shmem or\n"
		"                        hugetlb memory can hold here (MemAvailable +\n"
		"                        SwapFree, the cgroup's limit, free huge pages)\n"
		"  --json                one JSON object on stdout instead of text\n"
		"  -h, --help            this text\n"
		"\n"
		"Exit status: 0 restored and verified, 1 error or mismatch (also a\n"
		"source lost mid-restore, in either mode), 2 bad arguments: unknown,\n"
		"conflicting or unused flags, a bad address, TCP without a key,\n"
		"--insecure off loopback, an unusable key file, an --image that is not\n"
		"a regular file.\n");
}

static int parse(int argc, char **argv, struct restore_opts *o)
{
	static const struct option longopts[] = {
		{ "image", required_argument, NULL, 'i' },
		{ "source", required_argument, NULL, 'S' },
		{ "key", required_argument, NULL, 'k' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "net-timeout", required_argument, NULL, 'N' },
		{ "push-connections", required_argument, NULL, 1008 },
		{ "mode", required_argument, NULL, 'm' },
		{ "backend", required_argument, NULL, 's' },
		{ "vcpus", required_argument, NULL, 'v' },
		{ "workload", required_argument, NULL, 'W' },
		{ "delay", required_argument, NULL, 'd' },
		{ "window", required_argument, NULL, 'w' },
		{ "no-fill", no_argument, NULL, 'F' },
		{ "fillers", required_argument, NULL, 1009 },
		{ "timeout", required_argument, NULL, 'T' },
		{ "no-memory-check", no_argument, NULL, 'M' },
		{ "seed", required_argument, NULL, 1000 },
		{ "ws-fraction", required_argument, NULL, 1001 },
		{ "ws-similarity", required_argument, NULL, 1002 },
		{ "ws-next", required_argument, NULL, 1003 },
		{ "ws-base", required_argument, NULL, 1004 },
		{ "record-ws", required_argument, NULL, 1005 },
		{ "replay-ws", required_argument, NULL, 1006 },
		{ "json", no_argument, NULL, 'j' },
		{ "s3-endpoint", required_argument, NULL, 'E' },
		{ "s3-region", required_argument, NULL, 'R' },
		{ "http-timeout", required_argument, NULL, 'H' },
		{ "http-ca", required_argument, NULL, 1007 },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;

	*o = (struct restore_opts){ .vcpus = 2, .fill = true,
				    .timeout_s = 600, .ws = WS_PARAMS_DEFAULT };
	bool ws_flags = false;
	while ((c = getopt_long(argc, argv, "m:s:d:v:w:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			o->image = optarg;
			break;
		case 'S':
			o->source = optarg;
			break;
		case 'k':
			o->key_path = optarg;
			break;
		case 'I':
			o->insecure = true;
			break;
		case 'N':
			if (parse_uint(optarg, 1, 86400, &o->net_timeout_s) < 0) {
				complain("restore", "bad --net-timeout '%s' (seconds)", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'm':
			if (parse_mode(optarg, &o->mode) < 0) {
				complain("restore", "mode must be exit or wait, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 's':
			if (parse_backend(optarg, &o->backend) < 0) {
				complain("restore", "backend must be shmem, hugetlb or anon, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'v':
			if (parse_uint(optarg, 1, 1024, &o->vcpus) < 0) {
				complain("restore", "--vcpus must be 1..1024, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'W':
			if (!strcmp(optarg, "seq")) {
				o->order = ORDER_SEQ;
			} else if (!strcmp(optarg, "random")) {
				o->order = ORDER_RANDOM;
			} else if (!strcmp(optarg, "ws")) {
				o->order = ORDER_WS;
			} else {
				complain("restore", "--workload must be seq, random or ws, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'd':
			if (parse_uint(optarg, 0, 10000000, &o->delay_us) < 0) {
				complain("restore", "bad delay '%s' (microseconds)", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'F':
			o->fill = false;
			break;
		case 'w':
			if (parse_window(optarg, &o->window) < 0) {
				complain("restore", "--window must be 1..512 or auto, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'T':
			if (parse_uint(optarg, 1, 1000000, &o->timeout_s) < 0) {
				complain("restore", "bad timeout '%s' (seconds)", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'j':
			o->json = true;
			break;
		case 1000:
		case 1004:
			ws_flags = true;
			if (parse_seed(optarg, c == 1000 ? &o->ws.seed : &o->ws.base) < 0)
				return bad_arg("restore", c == 1000 ? "--seed" : "--ws-base", optarg);
			break;
		case 1001:
		case 1002:
		case 1003: {
			char *end;
			double v = strtod(optarg, &end);
			ws_flags = true;
			if (*end || end == optarg || !(v >= 0 && v <= 1) || (c == 1001 && v <= 0))
				return bad_arg("restore", c == 1001 ? "--ws-fraction (0..1]" :
						  c == 1002 ? "--ws-similarity (0..1)" : "--ws-next (0..1)",
					       optarg);
			*(c == 1001 ? &o->ws.fraction : c == 1002 ? &o->ws.similarity : &o->ws.next_page) = v;
			break;
		}
		case 1005:
			o->record_ws = optarg;
			break;
		case 1006:
			o->replay_ws = optarg;
			break;
		case 'M':
			o->no_memory_check = true;
			break;
		case 1007:
			o->hs.ca_file = optarg;
			break;
		case 1008:
			if (parse_uint(optarg, 1, 4, &o->push_connections) < 0) {
				complain("restore", "bad --push-connections '%s' (1..4)", optarg);
				return EXIT_USAGE;
			}
			break;
		case 1009:
			if (parse_uint(optarg, 1, 8, &o->fillers) < 0) {
				complain("restore", "bad --fillers '%s' (1..8)", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'E':
			o->hs.s3_endpoint = optarg;
			break;
		case 'R':
			o->hs.s3_region = optarg;
			break;
		case 'H':
			if (parse_uint(optarg, 1, 3600000, &o->hs.timeout_ms) < 0) {
				complain("restore", "bad --http-timeout '%s' (milliseconds)", optarg);
				return EXIT_USAGE;
			}
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
		complain("restore", "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	if (!o->image && !o->source) {
		complain("restore", "--image FILE or --source ADDR is required");
		return EXIT_USAGE;
	}
	o->hs.source = o->source;
	o->http = is_http_spec(o->source);
	if (!auth_flags_ok("restore", o->source && !o->http, o->key_path, o->insecure))
		return EXIT_USAGE;
	if (!http_flags_ok("restore", &o->hs))
		return EXIT_USAGE;
	/* Flags that would be ignored are refused, not dropped silently. */
	if (o->net_timeout_s && (!o->source || o->http)) {
		complain("restore", "--net-timeout goes with --source tcp:// or unix:");
		return EXIT_USAGE;
	}
	if (o->push_connections && (!o->source || o->http)) {
		complain("restore", "--push-connections goes with --source tcp:// or unix:");
		return EXIT_USAGE;
	}
	if (o->fillers && !o->fill) {
		complain("restore", "--fillers cannot go with --no-fill");
		return EXIT_USAGE;
	}
	if (ws_flags && o->order != ORDER_WS) {
		complain("restore", "--seed and --ws-* go with --workload ws");
		return EXIT_USAGE;
	}
	if ((o->record_ws || o->replay_ws) && !o->image && (!o->source || o->http)) {
		complain("restore", "--record-ws and --replay-ws need --image, or a postcopy server's --source: a recording names its image by the digest of its contents");
		return EXIT_USAGE;
	}
	if (o->window > 1 && o->backend == PC_BACKEND_HUGETLB) {
		complain("restore", "hugetlb resolves one 2 MiB page per fault: --window does not apply");
		return EXIT_USAGE;
	}
	/* Measured (BENCHMARKS.md, "A fault's window while pages come in the
	 * background"): auto brings the whole restore in sooner, from a file,
	 * over HTTP and from a server.  Not while recording: a page a window
	 * brings before the guest touches it takes no fault and would be
	 * missing from the recording (as with the filler, started late). */
	if (!o->window)
		o->window = o->backend == PC_BACKEND_HUGETLB || o->record_ws ?
				    1 : PC_WINDOW_AUTO;
	if (o->source && !o->http && !address_ok("restore", "--source", o->source,
				     o->key_path != NULL, o->insecure))
		return EXIT_USAGE;
	if (o->key_path && !key_file_ok("restore", o->key_path))
		return EXIT_USAGE;
	if (o->image)
		return check_input_file("restore", "--image", o->image);
	return EXIT_OK;
}

/* Compare guest memory with the image, read independently of the pager
 * (through a source of its own, so that a packed image is decoded). */
static int verify_against_file(const char *path, const char *mem,
			       uint64_t size, uint64_t *bad_pages,
			       uint64_t *first_bad)
{
	enum { CHUNK = 1 << 20 };
	pc_source *img = NULL;
	char *buf = malloc(CHUNK);
	/* pc_source_file opens without blocking: the path was checked at
	 * start, but what it names now might be a FIFO. */
	int ret = buf ? pc_source_file(path, &img) : -ENOMEM;

	*bad_pages = 0;
	if (ret < 0)
		goto out;
	if (pc_source_size(img) != size) {
		ret = -EINVAL;
		goto out;
	}
	for (uint64_t off = 0; off < size; off += CHUNK) {
		size_t len = size - off < CHUNK ? size - off : CHUNK;
		ret = pc_source_read(img, off / PC_SOURCE_PAGE_SIZE,
				     len / PC_SOURCE_PAGE_SIZE, buf);
		if (ret < 0)
			goto out;
		if (!memcmp(buf, mem + off, len))
			continue;
		for (size_t p = 0; p < len; p += PC_SOURCE_PAGE_SIZE)
			if (memcmp(buf + p, mem + off + p, PC_SOURCE_PAGE_SIZE)) {
				if (!*bad_pages)
					*first_bad = (off + p) / PC_SOURCE_PAGE_SIZE;
				(*bad_pages)++;
			}
	}
out:
	pc_source_destroy(img);
	free(buf);
	return ret;
}

struct progress {
	pc_region *r;
	_Atomic bool stop;
	double t0;
};

/* A progress bar on a terminal: pages present, rate, ETA. */
static void *progress_main(void *arg)
{
	struct progress *pr = arg;
	uint64_t total = pc_region_size(pr->r) / pc_region_page_size(pr->r);
	uint64_t psz = pc_region_page_size(pr->r);
	for (;;) {
		bool last = atomic_load(&pr->stop) || pc_region_complete(pr->r);
		uint64_t have = pc_region_present(pr->r);
		double dt = seconds_now() - pr->t0;
		double rate = dt > 0 ? (double)(have * psz) / dt : 0;
		double eta = rate > 0 ? (double)((total - have) * psz) / rate : 0;
		int width = 30, fill = (int)(width * have / total);
		fprintf(stderr, "\r[%.*s%*s] %3d%% %llu/%llu pages  %.0f MiB/s  ETA %.1fs ",
			fill, "##############################", width - fill, "",
			(int)(100 * have / total), (unsigned long long)have,
			(unsigned long long)total, rate / (1 << 20), eta);
		if (last)
			break;
		usleep(100000);
	}
	fputc('\n', stderr);
	return NULL;
}

/* The image's identity, from its file (also with --source: the copy). */
static int image_identity(const char *path, struct pc_image_id *id, double *secs)
{
	pc_source *f;
	double t0 = seconds_now();
	int ret = pc_source_file(path, &f);
	if (ret == 0) {
		ret = pc_image_id_of(f, id);
		pc_source_destroy(f);
	}
	*secs = seconds_now() - t0;
	if (ret < 0)
		complain("restore", "%s: cannot take its identity: %s", path, strerror(-ret));
	return ret;
}

/* The recording to replay, loaded and checked whole against @id before
 * anything is registered. */
static int load_replay(const struct restore_opts *o, const struct pc_image_id *id,
		       pc_ws **out)
{
	char why[256];
	int ret = pc_ws_load(o->replay_ws, out, why, sizeof(why));
	if (ret == 0 && (ret = pc_ws_check_image(*out, id, why, sizeof(why))) < 0) {
		pc_ws_destroy(*out);
		*out = NULL;
	}
	if (ret < 0)
		complain("restore", "--replay-ws %s: %s", o->replay_ws, why);
	return ret;
}

static int run(const struct restore_opts *o)
{
	pc_source *src;
	int ret;
	const char *from = o->source ? o->source : o->image;
	struct pc_image_id id;
	double id_secs = 0;
	pc_ws *replay = NULL, *rec = NULL;
	char why[256];
	/* The image's identity from its file; without one (a postcopy
	 * server's --source), the one the server proved, once connected. */
	bool ws = o->record_ws || o->replay_ws;
	if (ws && o->image && (image_identity(o->image, &id, &id_secs) < 0 ||
			       (o->replay_ws && load_replay(o, &id, &replay) < 0)))
		return EXIT_FAIL;
	if (o->http) {
		/* One connection per fetching thread: the vCPUs' (through
		 * the fetchers in exit mode, the handler in wait mode) and the
		 * filler's. */
		char hwhy[512] = "";
		if (open_http_source(&o->hs, o->vcpus + 1, &src, hwhy, sizeof(hwhy)) < 0) {
			complain("restore", "%s", hwhy);
			pc_ws_destroy(replay);
			return EXIT_FAIL;
		}
	} else if (o->source) {
		if (open_net_source("restore", o->source, o->key_path, o->insecure,
				    o->net_timeout_s, o->push_connections, &src, NULL, 0) < 0)
			return EXIT_FAIL;
	} else if ((ret = pc_source_file(o->image, &src)) < 0) {
		if (ret == -EINVAL)
			complain("restore", "%s: not a regular file, empty, or size not a multiple of 4096 bytes", o->image);
		else if (ret == -EBADMSG)
			complain("restore", "%s: a damaged packed image (its header or index does not match its identity)", o->image);
		else
			complain("restore", "%s: %s", o->image, strerror(-ret));
		pc_ws_destroy(replay);
		return EXIT_FAIL;
	}
	if (ws && !o->image && (pc_image_id_of(src, &id) < 0 ||
				(o->replay_ws && load_replay(o, &id, &replay) < 0))) {
		pc_source_destroy(src);
		return EXIT_FAIL;
	}
	uint64_t size = pc_source_size(src);
	pc_source_set_delay(src, o->delay_us, PC_DELAY_SLEEP);

	struct pc_region_opts ro = {
		.size = size,
		.backend = o->backend,
		.mode = o->mode,
		.max_threads = o->vcpus,
		.window = o->window,
		.fillers = o->fillers,
		.no_memory_check = o->no_memory_check,
		/* Exit mode hands a source that is not async-signal-safe to
		 * fetcher threads: one per vCPU, so none waits for another's. */
		.fetchers = !(pc_source_flags(src) & PC_SOURCE_ASYNC_SIGNAL_SAFE) ?
				    (o->vcpus < 64 ? o->vcpus : 64) : 0,
	};
	pc_region *r;
	ret = pc_region_create(&ro, src, &r, why, sizeof(why));
	if (ret < 0) {
		complain("restore", "%s: %s%s", from, why,
			 ret == -ENOMEM && o->backend == PC_BACKEND_SHMEM ?
				 "; --no-memory-check starts anyway" : "");
		pc_ws_destroy(replay);
		return EXIT_FAIL;
	}
	if (o->record_ws && (ret = pc_ws_record(r, &id, &rec)) < 0) {
		complain("restore", "--record-ws: %s", strerror(-ret));
		pc_region_destroy(r);
		pc_ws_destroy(replay);
		return EXIT_FAIL;
	}
	double t0 = seconds_now();
	ret = pc_region_start(r);
	if (ret == 0 && replay) {
		/* From the start, ahead of the vCPUs; the filler waits for it. */
		ret = pc_region_replay(r, replay, &id, why, sizeof(why));
		pc_ws_destroy(replay);
		replay = NULL;
		if (ret < 0) {
			complain("restore", "--replay-ws %s: %s", o->replay_ws, why);
			pc_region_destroy(r);
			pc_ws_destroy(rec);
			return EXIT_FAIL;
		}
	}
	/* A recording holds the pages that took a fault: a filler running
	 * meanwhile would bring part of the working set untouched, so it
	 * starts when the vCPUs are done. */
	bool fill_later = o->fill && o->record_ws;
	if (ret == 0 && o->fill && !fill_later)
		ret = start_background(o->source && !o->http ? src : NULL, r);
	if (ret < 0) {
		complain("restore", "%s", pc_region_error(r));
		pc_region_destroy(r);
		pc_ws_destroy(rec);
		return EXIT_FAIL;
	}

	struct progress pr = { .r = r, .t0 = t0 };
	pthread_t progress;
	bool show = !o->json && isatty(STDERR_FILENO);
	if (show && pthread_create(&progress, NULL, progress_main, &pr))
		show = false;

	struct workload w = {
		.mem = pc_region_addr(r),
		.size = size,
		.vcpus = o->vcpus,
		.order = o->order,
		.ws = &o->ws,
		.region = r,
	};
	struct workload_result res;
	int status = EXIT_OK;
	/* The region failed while vCPUs ran: in either mode they are parked
	 * on pages that will not come (postcopy.h, WHEN A PAGE CANNOT BE
	 * HAD).  Report like any other failure, then leave without touching
	 * the region again. */
	bool stuck = false;
	ret = workload_run(&w, &res);
	if (ret == 0 && fill_later) {
		ret = start_background(o->source && !o->http ? src : NULL, r);
		if (ret < 0)
			complain("restore", "starting the fill: %s", strerror(-ret));
	}
	if (ret == -EIO) {
		stuck = true;
		ret = pc_region_wait(r, 0);
	} else if (ret == 0) {
		ret = pc_region_wait(r, (int)(o->timeout_s * 1000));
	}
	double restored = seconds_now() - t0;
	if (show) {
		atomic_store(&pr.stop, true);
		pthread_join(progress, NULL);
	}
	const char *error = NULL;
	char http_why[512], error_buf[1024];
	if (ret < 0) {
		error = ret == -ETIMEDOUT ? "timed out before every page arrived" :
			pc_region_error(r)[0] ? pc_region_error(r) :
						strerror(-ret);
		/* The pager says which page and the errno; the HTTP source
		 * knows what the server said. */
		if (o->http && http_error(src, http_why, sizeof(http_why))) {
			snprintf(error_buf, sizeof(error_buf), "%s (%s)", error, http_why);
			error = error_buf;
		}
		complain("restore", "%s", error);
		status = EXIT_FAIL;
	}

	uint64_t recorded = 0;
	if (rec && status == EXIT_OK) {
		ret = save_working_set(rec, o->record_ws, &recorded);
		if (ret < 0) {
			complain("restore", "--record-ws %s: %s", o->record_ws, strerror(-ret));
			status = EXIT_FAIL;
		}
	}

	uint64_t bad = 0, first_bad = 0;
	bool verified = false, checksummed = false;
	if (status == EXIT_OK && !o->image && o->http) {
		/* Every answer was checked for its range and the pinned ETag,
		 * but nothing was compared with a copy. */
	} else if (status == EXIT_OK && !o->image) {
		/* Over the network every run was checked against the image
		 * digest before it was installed, and the region is complete;
		 * but nothing was compared with a copy. */
		checksummed = true;
	} else if (status == EXIT_OK) {
		ret = verify_against_file(o->image, pc_region_addr(r), size,
					  &bad, &first_bad);
		verified = ret == 0 && bad == 0;
		if (ret < 0)
			complain("restore", "verifying against %s: %s", o->image,
				 strerror(-ret));
		else if (bad)
			complain("restore", "%llu pages differ from %s (first: page %llu)",
				 (unsigned long long)bad, o->image,
				 (unsigned long long)first_bad);
		if (!verified)
			status = EXIT_FAIL;
	}

	struct pc_stats *st = NULL;
	pc_region_stats(r, &st);
	struct pc_net_stats ns;
	bool net = o->source && !o->http && pc_net_get_stats(src, &ns) == 0;
	struct pc_http_stats hst;
	bool http = o->http && pc_http_get_stats(src, &hst) == 0;
	double wl_rate = res.seconds > 0 ? (double)res.accesses / res.seconds : 0;
	if (o->json) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "source", json_object_new_string(from));
		json_object_object_add(j, "size", json_object_new_int64((int64_t)size));
		json_object_object_add(j, "mode", json_object_new_string(mode_str(o->mode)));
		json_object_object_add(j, "backend", json_object_new_string(backend_str(o->backend)));
		json_object_object_add(j, "vcpus", json_object_new_int((int)o->vcpus));
		json_object_object_add(j, "workload", json_object_new_string(order_name(o->order)));
		json_object_object_add(j, "workload_seconds", json_object_new_double(res.seconds));
		json_object_object_add(j, "workload_pages", json_object_new_int64((int64_t)res.accesses));
		if (o->order == ORDER_WS)
			json_object_object_add(j, "ws_next_page_share", json_object_new_double(res.ws_next_share));
		if (o->record_ws)
			json_object_object_add(j, "recorded_pages", json_object_new_int64((int64_t)recorded));
		json_object_object_add(j, "fill", json_object_new_boolean(o->fill));
		json_object_object_add(j, "seconds", json_object_new_double(restored));
		json_object_object_add(j, "workload_pages_per_sec", json_object_new_double(wl_rate));
		json_object_object_add(j, "verified", json_object_new_boolean(verified));
		if (o->source && !o->http)
			json_object_object_add(j, "checksummed",
					       json_object_new_boolean(checksummed || verified));
		json_object_object_add(j, "mismatched_pages", json_object_new_int64((int64_t)bad));
		if (error)
			json_object_object_add(j, "error", json_object_new_string(error));
		if (st)
			json_object_object_add(j, "stats", stats_json(st));
		if (res.latency)
			json_object_object_add(j, "latency_us", latency_json_us(res.latency));
		if (net) {
			struct json_object *n = json_object_new_object();
			json_object_object_add(n, "requests", json_object_new_int64((int64_t)ns.requests));
			json_object_object_add(n, "pages_demanded", json_object_new_int64((int64_t)ns.pages_received));
			json_object_object_add(n, "pages_pushed", json_object_new_int64((int64_t)ns.pages_pushed));
			json_object_object_add(n, "bytes_received", json_object_new_int64((int64_t)ns.bytes_received));
			json_object_object_add(n, "reconnects", json_object_new_int64((int64_t)ns.reconnects));
			json_object_object_add(n, "checksum_failures", json_object_new_int64((int64_t)ns.checksum_failures));
			json_object_object_add(n, "push_done", json_object_new_boolean(ns.push_done));
			json_object_object_add(n, "pages_ordered", json_object_new_int64((int64_t)ns.pages_ordered));
			json_object_object_add(j, "net", n);
		}
		if (http) {
			struct json_object *n = json_object_new_object();
			json_object_object_add(n, "requests", json_object_new_int64((int64_t)hst.requests));
			json_object_object_add(n, "bytes_received", json_object_new_int64((int64_t)hst.bytes_received));
			json_object_object_add(n, "connections", json_object_new_int64((int64_t)hst.connections));
			json_object_object_add(n, "transient_errors", json_object_new_int64((int64_t)hst.transient_errors));
			json_object_object_add(n, "fatal_errors", json_object_new_int64((int64_t)hst.fatal_errors));
			json_object_object_add(j, "http", n);
		}
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
	} else {
		printf("restore: %s, %.1f MiB, %s memory, %s mode, %u vCPUs (%s reads)%s%s\n",
		       from, (double)size / (1 << 20), backend_str(o->backend),
		       mode_str(o->mode), o->vcpus,
		       o->order == ORDER_RANDOM ? "random" : o->order == ORDER_WS ? "working-set" :
						      "sequential",
		       o->fill ? ", background fill" : "",
		       o->replay_ws ? ", replaying a working set" : "");
		printf("restored   %.3f s to every page present; workload %.0f pages/s\n",
		       restored, wl_rate);
		printf("workload   %.3f s, %llu pages touched", res.seconds,
		       (unsigned long long)res.accesses);
		if (o->order == ORDER_WS)
			printf(" (seed %llu; %.1f%% of touches the next page)",
			       (unsigned long long)o->ws.seed, 100 * res.ws_next_share);
		printf("\n");
		if (o->record_ws || o->replay_ws)
			printf(o->image ? "identity   taken in %.3f s (reading the image once)\n" :
					  "identity   the server's, proved at connect (%.3f s)\n", id_secs);
		if (o->record_ws && status == EXIT_OK)
			printf("recorded   %llu pages to %s\n", (unsigned long long)recorded,
			       o->record_ws);
		if (st)
			pc_stats_print(st, stdout);
		if (net)
			printf("network    %llu requests, %llu pages demanded, %llu pushed, %.1f MiB received, %llu reconnects, %llu bad checksums\n",
			       (unsigned long long)ns.requests, (unsigned long long)ns.pages_received,
			       (unsigned long long)ns.pages_pushed, (double)ns.bytes_received / (1 << 20),
			       (unsigned long long)ns.reconnects, (unsigned long long)ns.checksum_failures);
		if (net && ns.pages_ordered)
			printf("push order %llu pages of the working set sent to the server first\n",
			       (unsigned long long)ns.pages_ordered);
		if (http)
			printf("http       %llu range requests, %.1f MiB received, %llu connections, %llu transient errors (retried), %llu fatal\n",
			       (unsigned long long)hst.requests, (double)hst.bytes_received / (1 << 20),
			       (unsigned long long)hst.connections, (unsigned long long)hst.transient_errors,
			       (unsigned long long)hst.fatal_errors);
		if (status == EXIT_OK && o->http && !o->image)
			printf("unverified every answer was its range of the pinned object; no copy compared (--image FILE verifies every byte)\n");
		else if (checksummed)
			printf("checksummed every page matched the server's image digest (no copy compared: --image FILE verifies every byte)\n");
		else
			printf("verified   %s\n", verified ? "every byte matches the image" :
							 "NO: see the message above");
	}
	free(st);
	workload_result_free(&res);
	if (stuck) {
		/* Not exit(): the parked threads and their region are left
		 * behind on purpose, and leak checkers would say so.  A
		 * source's own threads (the push receiver, the HTTP stream)
		 * are no vCPUs: join them. */
		if (o->source)
			pc_source_stop(src, false);
		fflush(stdout);
		_exit(status);
	}
	pc_region_destroy(r);
	pc_ws_destroy(rec);
	return status;
}

int cmd_restore(int argc, char **argv)
{
	struct restore_opts o;
	int ret = parse(argc, argv, &o);
	if (ret < 0)
		return EXIT_OK; /* --help */
	if (ret != EXIT_OK)
		return ret;
	return run(&o);
}
