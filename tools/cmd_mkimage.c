/* SPDX-License-Identifier: MIT */
/*
 * cmd_mkimage.c - `postcopy mkimage FILE SIZE`: write a verifiable test
 * image (the pattern source's contents; its zero pages left as holes, so
 * the image is sparse and the restore's zero-page path gets exercised).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy mkimage [--seed N] FILE SIZE\n"
		"\n"
		"Write a raw memory image of SIZE bytes (K, M, G suffixes; a multiple\n"
		"of 4 KiB) filled with postcopy's verifiable pattern.  About one page in\n"
		"sixteen is zero and is left as a hole.  FILE is replaced.\n"
		"\n"
		"  --seed N   pattern seed (default 1)\n"
		"  -h, --help this text\n"
		"\n"
		"Exit status: 0 written, 1 I/O error, 2 bad arguments.\n");
}

int cmd_mkimage(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "seed", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	uint64_t seed = 1;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'S':
			if (parse_seed(optarg, &seed) < 0) {
				complain("mkimage", "bad seed '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *path = argv[optind];
	uint64_t size;
	if (parse_size(argv[optind + 1], &size) < 0 || !size ||
	    size % PC_SOURCE_PAGE_SIZE) {
		complain("mkimage",
			 "size '%s' must be a positive multiple of 4096 bytes (e.g. 64M, 1G)",
			 argv[optind + 1]);
		return EXIT_USAGE;
	}

	pc_source *src;
	int ret = pc_source_pattern(size, seed, &src);
	if (ret < 0) {
		complain("mkimage", "%s", strerror(-ret));
		return EXIT_FAIL;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		complain("mkimage", "%s: %s", path, strerror(errno));
		pc_source_destroy(src);
		return EXIT_FAIL;
	}
	enum { CHUNK = 256 };
	char *buf = malloc(CHUNK * PC_SOURCE_PAGE_SIZE);
	int status = EXIT_OK;
	if (!buf || ftruncate(fd, (off_t)size) < 0) {
		complain("mkimage", "%s: %s", path, strerror(buf ? errno : ENOMEM));
		status = EXIT_FAIL;
	}
	uint64_t pages = size / PC_SOURCE_PAGE_SIZE;
	for (uint64_t p = 0; p < pages && status == EXIT_OK; p += CHUNK) {
		uint64_t n = pages - p < CHUNK ? pages - p : CHUNK;
		pc_source_read(src, p, n, buf);
		/* Write runs of data pages; zero pages stay holes. */
		for (uint64_t i = 0; i < n;) {
			uint64_t j = i;
			while (j < n && !pc_source_is_zero(src, p + j))
				j++;
			if (j > i) {
				size_t len = (j - i) * PC_SOURCE_PAGE_SIZE;
				off_t off = (off_t)((p + i) * PC_SOURCE_PAGE_SIZE);
				if (pwrite(fd, buf + i * PC_SOURCE_PAGE_SIZE,
					   len, off) != (ssize_t)len) {
					complain("mkimage", "%s: write: %s", path,
						 strerror(errno ? errno : EIO));
					status = EXIT_FAIL;
					break;
				}
			}
			i = j + 1;
		}
	}
	if (close(fd) < 0 && status == EXIT_OK) {
		complain("mkimage", "%s: %s", path, strerror(errno));
		status = EXIT_FAIL;
	}
	free(buf);
	pc_source_destroy(src);
	return status;
}
