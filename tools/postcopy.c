/* SPDX-License-Identifier: MIT */
/*
 * postcopy.c - the command-line front end: dispatches subcommands.
 */
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

#include "tools.h"

int cmd_bench(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_mkimage(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_netbench(int argc, char **argv);
int cmd_kvm_bench(int argc, char **argv);
int cmd_fc_handler(int argc, char **argv);
int cmd_ws(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_unpack(int argc, char **argv);

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *what;
} commands[] = {
	{ "bench", cmd_bench,
	  "measure demand paging like the KVM demand_paging_test" },
	{ "restore", cmd_restore,
	  "lazily restore a snapshot image under a live workload, verified" },
	{ "mkimage", cmd_mkimage, "write a verifiable test image" },
	{ "pack", cmd_pack, "write an image as compressed, checked chunks" },
	{ "unpack", cmd_unpack, "write the raw image of a packed one" },
	{ "serve", cmd_serve, "serve an image to post-copy destinations" },
	{ "netbench", cmd_netbench,
	  "measure post-copy over loopback against raw socket baselines" },
	{ "kvm-bench", cmd_kvm_bench,
	  "measure demand paging with real KVM vCPUs (needs /dev/kvm)" },
	{ "fc-handler", cmd_fc_handler,
	  "serve the page faults of Firecracker snapshot restores" },
	{ "ws", cmd_ws, "show and merge working-set recordings" },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy COMMAND [OPTIONS]\n"
		"\n"
		"Demand-page memory from a snapshot or a migration source with\n"
		"userfaultfd; in exit mode a faulting thread resolves its own fault.\n"
		"\n"
		"Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
	fprintf(f,
		"\n"
		"'postcopy COMMAND --help' describes each command;\n"
		"'postcopy --version' prints the version.\n"
		"Exit status: 0 success, 1 failure (error or verification\n"
		"mismatch), 2 bad command line.\n");
}

/* meson's project version, and the library's own pc_version() beside it
 * (the CLI links the library statically: they differ only if the header's
 * PC_VERSION_* were not kept in step, which meson.build also refuses). */
static int print_version(void)
{
	unsigned v = pc_version();

	printf("postcopy %s (libpostcopy %u.%u.%u)\n", POSTCOPY_VERSION,
	       v >> 16, (v >> 8) & 0xff, v & 0xff);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	/* The default 50 us timer slack would stretch an injected 30 us
	 * sleeping delay to ~100 us; threads created later inherit this. */
	prctl(PR_SET_TIMERSLACK, 1ul, 0, 0, 0);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))
		return print_version();
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "postcopy: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
