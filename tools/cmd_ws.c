/* SPDX-License-Identifier: MIT */
/*
 * cmd_ws.c - `postcopy ws`: look at working-set recordings and merge them
 * (docs/working-set.md).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy ws show FILE [--list]\n"
		"       postcopy ws merge FILE... -o OUT [-k K]\n"
		"\n"
		"Working sets are recorded by `postcopy restore --record-ws FILE` and\n"
		"replayed by `postcopy restore --replay-ws FILE`.\n"
		"\n"
		"show: pages, runs, coverage of the image, the image's identity and a\n"
		"histogram of first-touch times.  merge: the pages that at least K of\n"
		"the N files hold, ordered by their median first touch.\n"
		"\n"
		"  --list           show: print every entry (offset, first touch in us,\n"
		"                   thread, runs holding it)\n"
		"  -o, --output OUT  merge: the file to write\n"
		"  -k K             merge: pages held by at least K files (default a\n"
		"                   majority, N/2 + 1)\n"
		"  -h, --help       this text\n"
		"\n"
		"Exit status: 0 done, 1 a file could not be read or written (corrupt,\n"
		"truncated, of another image), 2 bad arguments.\n");
}

static int load(const char *path, pc_ws **ws)
{
	char why[256];
	int ret = pc_ws_load(path, ws, why, sizeof(why));
	if (ret < 0)
		complain("ws", "%s: %s", path, why[0] ? why : strerror(-ret));
	return ret;
}

/* Both subcommands' flags (each refuses the other's). */
static const struct option longopts[] = {
	{ "list", no_argument, NULL, 'l' },
	{ "output", required_argument, NULL, 'o' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 }
};

static int show(int argc, char **argv)
{
	bool list = false;
	const char *path = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:k:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			list = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		path = argv[optind++];
	if (optind < argc)
		return bad_arg("ws show", "argument", argv[optind]);
	if (!path) {
		complain("ws", "show: FILE is required");
		return EXIT_USAGE;
	}
	pc_ws *ws;
	if (load(path, &ws) < 0)
		return EXIT_FAIL;
	struct pc_ws_info in;
	pc_ws_info(ws, &in);
	uint64_t img_pages = in.image.size / PC_SOURCE_PAGE_SIZE;
	printf("working set %s\n", path);
	printf("image      %llu bytes, digest ", (unsigned long long)in.image.size);
	for (unsigned i = 0; i < PC_IMAGE_DIGEST_LEN; i++)
		printf("%02x", in.image.digest[i]);
	printf("\n");
	printf("pages      %llu (%.2f%% of the image), %u run%s, last first touch %.3f s\n",
	       (unsigned long long)in.pages,
	       img_pages ? 100.0 * (double)in.pages / (double)img_pages : 0.0,
	       in.runs, in.runs == 1 ? "" : "s", (double)in.duration_ns / 1e9);
	enum { BUCKETS = 10 };
	uint64_t hist[BUCKETS] = { 0 }, next = 0, prev = UINT64_MAX;
	uint64_t span = in.duration_ns ? in.duration_ns : 1;
	for (uint64_t i = 0; i < in.pages; i++) {
		struct pc_ws_entry e;
		pc_ws_entry(ws, i, &e);
		uint64_t b = e.time_ns * BUCKETS / (span + 1);
		hist[b < BUCKETS ? b : BUCKETS - 1]++;
		if (prev != UINT64_MAX && e.offset == prev + PC_SOURCE_PAGE_SIZE)
			next++;
		prev = e.offset;
		if (list) {
			char t[16];
			if (e.thread == PC_THREAD_OTHER)
				snprintf(t, sizeof(t), "other");
			else
				snprintf(t, sizeof(t), "%u", e.thread);
			printf("  %#14llx %10llu us  thread %-5s  runs %u\n",
			       (unsigned long long)e.offset,
			       (unsigned long long)(e.time_ns / 1000), t, e.runs);
		}
	}
	if (in.pages > 1)
		printf("sequential %.1f%% of first touches are the next page\n",
		       100.0 * (double)next / (double)(in.pages - 1));
	printf("first touches over time (each bar a tenth of %.3f s):\n",
	       (double)in.duration_ns / 1e9);
	uint64_t most = 1;
	for (int b = 0; b < BUCKETS; b++)
		most = hist[b] > most ? hist[b] : most;
	for (int b = 0; b < BUCKETS; b++) {
		int w = (int)(40 * hist[b] / most);
		printf("  %5.1f%%  %-40.*s %llu\n", 10.0 * b, w,
		       "########################################",
		       (unsigned long long)hist[b]);
	}
	pc_ws_destroy(ws);
	return EXIT_OK;
}

static int merge(int argc, char **argv)
{
	const char *outp = NULL;
	unsigned k = 0;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:k:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			outp = optarg;
			break;
		case 'k':
			if (parse_uint(optarg, 1, 65535, &k) < 0)
				return bad_arg("ws merge", "-k", optarg);
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	unsigned n = (unsigned)(argc - optind);
	if (!outp || !n) {
		complain("ws", "merge: FILE... and -o OUT are required");
		return EXIT_USAGE;
	}
	if (!k)
		k = n / 2 + 1 > n ? n : n / 2 + 1;
	if (k > n) {
		complain("ws", "merge: -k %u is more than the %u files", k, n);
		return EXIT_USAGE;
	}
	pc_ws **in = calloc(n, sizeof(*in));
	int status = in ? EXIT_OK : EXIT_FAIL;
	for (unsigned i = 0; i < n && status == EXIT_OK; i++)
		if (load(argv[optind + i], &in[i]) < 0)
			status = EXIT_FAIL;
	pc_ws *out = NULL;
	if (status == EXIT_OK) {
		char why[256];
		int ret = pc_ws_merge((const pc_ws *const *)in, n, k, &out, why, sizeof(why));
		if (ret < 0) {
			complain("ws", "merge: %s", why[0] ? why : strerror(-ret));
			status = EXIT_FAIL;
		}
	}
	if (status == EXIT_OK) {
		int ret = pc_ws_save(out, outp);
		if (ret < 0) {
			complain("ws", "%s: %s", outp, strerror(-ret));
			status = EXIT_FAIL;
		} else {
			struct pc_ws_info info;
			pc_ws_info(out, &info);
			printf("ws merge: %llu pages held by at least %u of %u files -> %s\n",
			       (unsigned long long)info.pages, k, n, outp);
		}
	}
	pc_ws_destroy(out);
	for (unsigned i = 0; in && i < n; i++)
		pc_ws_destroy(in[i]);
	free(in);
	return status;
}

int cmd_ws(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (!strcmp(argv[1], "show"))
		return show(argc - 1, argv + 1);
	if (!strcmp(argv[1], "merge"))
		return merge(argc - 1, argv + 1);
	complain("ws", "unknown subcommand '%s' (show or merge)", argv[1]);
	return EXIT_USAGE;
}
