/* SPDX-License-Identifier: MIT */
/*
 * replay.c - run a fuzz harness (fuzz_*.c) over saved inputs without
 * libFuzzer, printing TAP.  Built by meson once per harness (test_fuzz_replay
 * for fuzz_proto.c, test_fuzz_NAME for fuzz_NAME.c), so each seed corpus is
 * replayed by `make check` in the normal build and under ASan+UBSan, where
 * a crash, an overread or a failed check in the harness ends the program
 * and fails the test.
 *
 *   test_fuzz_replay [FILE|DIR]...
 *
 * Without arguments: every file of $POSTCOPY_SRCDIR/fuzz/FUZZ_CORPUS_NAME
 * (the test runner sets POSTCOPY_SRCDIR), else of the corpus directory this
 * program was built from.  Directories are read in name order, one level deep;
 * files whose name starts with '.' are skipped.  Prints `ok N - replay
 * NAME` per input; no usable input at all is a failure ("Bail out!").
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef FUZZ_CORPUS_NAME
#define FUZZ_CORPUS_NAME "corpus"
#endif
#ifndef FUZZ_CORPUS_DIR
#define FUZZ_CORPUS_DIR "fuzz/" FUZZ_CORPUS_NAME
#endif

struct list {
	char **path;
	size_t n, cap;
};

static void bail(const char *fmt, const char *arg, int err)
{
	printf("Bail out! ");
	printf(fmt, arg);
	printf("%s%s\n", err ? ": " : "", err ? strerror(err) : "");
	exit(1);
}

static void add(struct list *l, const char *dir, const char *name)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->path = realloc(l->path, l->cap * sizeof(*l->path));
		if (!l->path)
			bail("%s", "out of memory", 0);
	}
	size_t len = (dir ? strlen(dir) + 1 : 0) + strlen(name) + 1;
	char *p = malloc(len);
	if (!p)
		bail("%s", "out of memory", 0);
	if (dir)
		snprintf(p, len, "%s/%s", dir, name);
	else
		snprintf(p, len, "%s", name);
	l->path[l->n++] = p;
}

static int skip_dots(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* A file as itself, a directory as its regular files in name order. */
static void collect(struct list *l, const char *arg)
{
	struct stat st;

	if (stat(arg, &st))
		bail("cannot stat %s", arg, errno);
	if (!S_ISDIR(st.st_mode)) {
		add(l, NULL, arg);
		return;
	}
	struct dirent **ents;
	int n = scandir(arg, &ents, skip_dots, alphasort);
	if (n < 0)
		bail("cannot read directory %s", arg, errno);
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", arg, ents[i]->d_name);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			add(l, arg, ents[i]->d_name);
		free(ents[i]);
	}
	free(ents);
}

static uint8_t *slurp(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (len == cap) {
			cap = cap ? 2 * cap : 65536;
			uint8_t *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		size_t got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	int err = ferror(f);
	fclose(f);
	if (err) {
		free(buf);
		return NULL;
	}
	/* Exactly sized, so ASan sees a read past the end of the input. */
	uint8_t *exact = malloc(len ? len : 1);
	if (exact)
		memcpy(exact, buf, len);
	free(buf);
	*size = len;
	return exact;
}

int main(int argc, char **argv)
{
	struct list l = { 0 };

	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			collect(&l, argv[i]);
	} else {
		const char *src = getenv("POSTCOPY_SRCDIR");
		char dir[4096];
		if (src && *src)
			snprintf(dir, sizeof(dir), "%s/fuzz/%s", src, FUZZ_CORPUS_NAME);
		else
			snprintf(dir, sizeof(dir), "%s", FUZZ_CORPUS_DIR);
		collect(&l, dir);
	}
	if (!l.n)
		bail("%s", "no inputs to replay", 0);

	printf("1..%zu\n", l.n);
	fflush(stdout);
	int failed = 0;
	for (size_t i = 0; i < l.n; i++) {
		const char *name = strrchr(l.path[i], '/');
		name = name ? name + 1 : l.path[i];
		size_t size = 0;
		uint8_t *data = slurp(l.path[i], &size);
		if (!data) {
			printf("not ok %zu - replay %s # cannot read\n", i + 1, name);
			failed = 1;
		} else {
			/* A finding aborts inside; its ok line is missing. */
			LLVMFuzzerTestOneInput(data, size);
			printf("ok %zu - replay %s\n", i + 1, name);
		}
		fflush(stdout);
		free(data);
		free(l.path[i]);
	}
	free(l.path);
	return failed;
}
