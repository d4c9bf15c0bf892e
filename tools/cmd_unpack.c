/* SPDX-License-Identifier: MIT */
/*
 * cmd_unpack.c - `postcopy unpack PACKED OUT`: the raw image of a packed
 * one, read through the same reader every source uses, so every chunk's
 * digest is checked; zero chunks become holes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sources_int.h"
#include "tools.h"

static void unpack_usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy unpack PACKED OUT\n"
		"\n"
		"Write the raw image of a packed image (every chunk's digest checked;\n"
		"zero chunks left as holes).  OUT is replaced.\n"
		"\n"
		"  -h, --help  this text\n"
		"\n"
		"Exit status: 0 written, 1 I/O error or damaged input, 2 bad arguments.\n");
}

int cmd_unpack(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			unpack_usage(stdout);
			return EXIT_OK;
		}
		unpack_usage(stderr);
		return EXIT_USAGE;
	}
	if (argc - optind != 2) {
		unpack_usage(stderr);
		return EXIT_USAGE;
	}
	const char *in = argv[optind], *outp = argv[optind + 1];
	int st = check_input_file("unpack", "PACKED", in);
	if (st != EXIT_OK)
		return st;
	int fd = open(in, O_RDONLY | O_CLOEXEC);
	char magic[8];
	if (fd < 0 || pack_read_at(fd, magic, sizeof(magic), 0) < 0 ||
	    !packed_magic(magic, sizeof(magic))) {
		complain("unpack", "%s: not a packed image", in);
		if (fd >= 0)
			close(fd);
		return EXIT_FAIL;
	}
	close(fd);
	pc_source *src;
	int ret = pc_source_file(in, &src);
	if (ret < 0) {
		complain("unpack", "%s: %s", in, ret == -EBADMSG ? "damaged packed image" : strerror(-ret));
		return EXIT_FAIL;
	}
	char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp", outp) < 0) {
		pc_source_destroy(src);
		return EXIT_FAIL;
	}
	uint64_t size = pc_source_size(src), step = 1 << 20;
	int ofd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	char *buf = malloc(step);
	ret = ofd < 0 ? -errno : !buf ? -ENOMEM : 0;
	if (ret == 0 && ftruncate(ofd, (off_t)size) < 0)
		ret = -errno;
	for (uint64_t off = 0; ret == 0 && off < size; off += step) {
		uint64_t len = size - off < step ? size - off : step;
		uint64_t first = off / PC_SOURCE_PAGE_SIZE, n = len / PC_SOURCE_PAGE_SIZE;
		bool zero = true;
		for (uint64_t p = first; zero && p < first + n; p++)
			zero = pc_source_is_zero(src, p);
		if (zero)
			continue; /* a hole, as mkimage leaves them */
		ret = pc_source_read(src, first, n, buf);
		if (ret == 0)
			ret = pack_write_at(ofd, buf, len, off);
	}
	if (ret == 0 && fsync(ofd) < 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, outp) < 0)
		ret = -errno;
	if (ret < 0) {
		complain("unpack", "%s: %s", in,
			 ret == -EBADMSG ? "a chunk does not match its digest (damaged)" : strerror(-ret));
		unlink(tmp);
	}
	free(buf);
	free(tmp);
	if (ofd >= 0)
		close(ofd);
	pc_source_destroy(src);
	return ret < 0 ? EXIT_FAIL : EXIT_OK;
}
