/* SPDX-License-Identifier: MIT */
/* util.c - small parsing and reporting helpers for the CLI. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "tools.h"

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		return -EINVAL;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && (shift || end[1] == '\0'))
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		return -EINVAL;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int parse_window(const char *s, unsigned *out)
{
	if (s && !strcmp(s, "auto")) {
		*out = PC_WINDOW_AUTO;
		return 0;
	}
	return parse_uint(s, 1, 512, out);
}

const char *window_str(unsigned window, char *buf, size_t len)
{
	if (window == PC_WINDOW_AUTO)
		snprintf(buf, len, "auto");
	else
		snprintf(buf, len, "%u", window);
	return buf;
}

int parse_seed(const char *s, uint64_t *out)
{
	char *end;
	uint64_t v = strtoull(s, &end, 0);
	if (!*s || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

bool page_multiple_ok(const char *cmd, enum pc_backend backend, uint64_t bytes)
{
	uint64_t unit = backend == PC_BACKEND_HUGETLB ? 2u << 20 : 4096;
	if (bytes % unit == 0)
		return true;
	complain(cmd, "-b must be a multiple of %s for %s memory",
		 unit == 4096 ? "4 KiB" : "2 MiB", backend_str(backend));
	return false;
}

int bad_arg(const char *cmd, const char *what, const char *arg)
{
	complain(cmd, "bad %s '%s' (see --help)", what, arg);
	return EXIT_USAGE;
}

void memstress_defaults(struct memstress_opts *m, uint64_t per_vcpu)
{
	*m = (struct memstress_opts){ .vcpus = 1, .per_vcpu = per_vcpu,
				      .readers = 1, .seed = 1 };
}

int memstress_opt(const char *cmd, int c, const char *arg, unsigned max_vcpus,
		  struct memstress_opts *m)
{
	char what[40];
	switch (c) {
	case 'v':
		snprintf(what, sizeof(what), "vCPU count (1..%u)", max_vcpus);
		if (parse_uint(arg, 1, max_vcpus, &m->vcpus) < 0)
			return bad_arg(cmd, what, arg);
		return 0;
	case 'b':
		if (parse_size(arg, &m->per_vcpu) < 0 || !m->per_vcpu)
			return bad_arg(cmd, "size", arg);
		return 0;
	case 's':
		if (parse_backend(arg, &m->backend) < 0)
			return bad_arg(cmd, "backend", arg);
		return 0;
	case 'r':
		if (parse_uint(arg, 1, 256, &m->readers) < 0)
			return bad_arg(cmd, "reader count (1..256)", arg);
		return 0;
	case 'a':
		m->one_uffd = true;
		return 0;
	case 'd':
		if (parse_uint(arg, 0, 10000000, &m->delay_us) < 0)
			return bad_arg(cmd, "delay", arg);
		return 0;
	case 'C':
		m->cold = true;
		return 0;
	case 'S':
		if (parse_seed(arg, &m->seed) < 0)
			return bad_arg(cmd, "seed", arg);
		return 0;
	case 'j':
		m->json = true;
		return 0;
	}
	return -1;
}

int start_background(pc_source *push_src, pc_region *r)
{
	return push_src ? pc_net_start_push(push_src, r) : pc_region_start_fill(r);
}

int save_working_set(const pc_ws *rec, const char *path, uint64_t *pages)
{
	pc_ws *back;
	struct pc_ws_info info;
	int ret = pc_ws_save(rec, path);
	*pages = 0;
	if (ret == 0 && pc_ws_load(path, &back, NULL, 0) == 0) {
		if (pc_ws_info(back, &info) == 0)
			*pages = info.pages;
		pc_ws_destroy(back);
	}
	return ret;
}

int start_region(const char *cmd, const struct pc_region_opts *ro,
		 pc_source *src, pc_region **out)
{
	char why[256];
	int ret = pc_region_create(ro, src, out, why, sizeof(why));
	if (ret < 0) {
		complain(cmd, "%s", why);
		return ret;
	}
	ret = pc_region_start(*out);
	if (ret < 0) {
		complain(cmd, "%s", pc_region_error(*out));
		pc_region_destroy(*out);
	}
	return ret;
}

int parse_backend(const char *s, enum pc_backend *out)
{
	if (!strcmp(s, "shmem"))
		*out = PC_BACKEND_SHMEM;
	else if (!strcmp(s, "hugetlb"))
		*out = PC_BACKEND_HUGETLB;
	else if (!strcmp(s, "anon"))
		*out = PC_BACKEND_ANON;
	else
		return -EINVAL;
	return 0;
}

const char *backend_str(enum pc_backend b)
{
	return b == PC_BACKEND_HUGETLB ? "hugetlb" :
	       b == PC_BACKEND_ANON    ? "anon" :
					 "shmem";
}

int parse_mode(const char *s, enum pc_mode *out)
{
	if (!strcmp(s, "exit"))
		*out = PC_MODE_EXIT;
	else if (!strcmp(s, "wait"))
		*out = PC_MODE_WAIT;
	else
		return -EINVAL;
	return 0;
}

const char *mode_str(enum pc_mode m)
{
	return m == PC_MODE_WAIT ? "wait" : "exit";
}

void complain(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "postcopy %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char *wait_desc(char *buf, size_t len, unsigned uffds, unsigned readers)
{
	snprintf(buf, len, "wait (%u userfaultfd%s x %u reader%s)", uffds,
		 uffds == 1 ? "" : "s", readers, readers == 1 ? "" : "s");
	return buf;
}

uint64_t ns_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double seconds_now(void)
{
	return (double)ns_now() / 1e9;
}

static struct json_object *jdouble(double v)
{
	return json_object_new_double(v);
}

static struct json_object *jint(uint64_t v)
{
	return json_object_new_int64((int64_t)v);
}

struct json_object *latency_json(const struct pc_latency *l)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "p50", jdouble(l->p50 / 1e3));
	json_object_object_add(o, "p90", jdouble(l->p90 / 1e3));
	json_object_object_add(o, "p99", jdouble(l->p99 / 1e3));
	json_object_object_add(o, "p999", jdouble(l->p999 / 1e3));
	json_object_object_add(o, "max", jdouble(l->max / 1e3));
	return o;
}

struct json_object *latency_json_us(const struct hist *h)
{
	struct pc_latency l;
	hist_summarize(h, &l);
	return latency_json(&l);
}

struct json_object *stats_json(const struct pc_stats *s)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "pages", jint(s->pages));
	json_object_object_add(o, "page_size", jint(s->page_size));
	json_object_object_add(o, "present", jint(s->present));
	json_object_object_add(o, "faults", jint(s->faults));
	json_object_object_add(o, "refaults", jint(s->refaults));
	json_object_object_add(o, "pages_demand", jint(s->pages_demand));
	json_object_object_add(o, "pages_prefetch", jint(s->pages_prefetch));
	json_object_object_add(o, "pages_fill", jint(s->pages_fill));
	json_object_object_add(o, "pages_replay", jint(s->pages_replay));
	json_object_object_add(o, "zero_pages", jint(s->zero_pages));
	json_object_object_add(o, "duplicate_fetches_avoided",
			       jint(s->duplicate_fetches_avoided));
	json_object_object_add(o, "bytes_fetched", jint(s->bytes_fetched));
	json_object_object_add(o, "fetches", jint(s->fetches));
	json_object_object_add(o, "blocktime_ms", jdouble(s->blocked_ns / 1e6));
	json_object_object_add(o, "elapsed_s", jdouble(s->elapsed_ns / 1e9));
	json_object_object_add(o, "resolve_latency_us", latency_json(&s->latency));
	struct json_object *threads = json_object_new_array();
	for (unsigned i = 0; i < s->nthreads; i++) {
		const struct pc_thread_stats *t = &s->thread[i];
		bool other = i + 1 == s->nthreads;
		if (!t->faults && !other)
			continue;
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "thread",
				       other ? json_object_new_string("other") :
					       jint(i));
		json_object_object_add(j, "faults", jint(t->faults));
		json_object_object_add(j, "blocktime_ms",
				       jdouble(t->blocked_ns / 1e6));
		json_object_array_add(threads, j);
	}
	json_object_object_add(o, "per_thread", threads);
	return o;
}

static const char *file_kind(mode_t mode)
{
	return S_ISFIFO(mode) ? "a FIFO" :
	       S_ISDIR(mode)  ? "a directory" :
	       S_ISCHR(mode)  ? "a character device" :
	       S_ISBLK(mode)  ? "a block device" :
	       S_ISSOCK(mode) ? "a socket" :
				"not a regular file";
}

/*
 * Open @path for reading without blocking: open() of a FIFO waits for a
 * writer, for ever if none comes, so O_NONBLOCK first, and it is cleared
 * once the file is known to be regular.  Returns the descriptor (*st
 * filled), -EINVAL for anything but a regular file, or -errno.
 */
static int open_regular(const char *path, struct stat *st)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	int flags;
	if (fstat(fd, st) < 0 || (flags = fcntl(fd, F_GETFL)) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return -EINVAL;
	}
	if (fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int check_input_file(const char *cmd, const char *flag, const char *path)
{
	struct stat st = { 0 };
	int fd = open_regular(path, &st);
	if (fd >= 0) {
		close(fd);
		return EXIT_OK;
	}
	if (fd == -EINVAL) {
		complain(cmd, "%s %s: %s; a regular file is needed", flag, path,
			 file_kind(st.st_mode));
		return EXIT_USAGE;
	}
	complain(cmd, "%s %s: %s", flag, path, strerror(-fd));
	return EXIT_FAIL;
}

int read_key_file(const char *cmd, const char *path, uint8_t **key,
		  size_t *len)
{
	struct stat st = { 0 };
	int fd = open_regular(path, &st);
	if (fd < 0) {
		if (fd == -EINVAL)
			complain(cmd, "key file %s: %s; a regular file is needed",
				 path, file_kind(st.st_mode));
		else
			complain(cmd, "key file %s: %s", path, strerror(-fd));
		return fd;
	}
	int ret = 0;
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		complain(cmd, "key file %s is readable by others: chmod 600 it", path);
		ret = -EACCES;
	} else if (st.st_size < 16 || st.st_size > 4096) {
		complain(cmd, "key file %s must hold 16 to 4096 bytes (e.g. head -c 32 /dev/urandom)", path);
		ret = -EINVAL;
	} else if (!(*key = malloc((size_t)st.st_size)) ||
		   read(fd, *key, (size_t)st.st_size) != st.st_size) {
		complain(cmd, "key file %s: cannot read", path);
		free(*key);
		*key = NULL;
		ret = -EIO;
	} else {
		*len = (size_t)st.st_size;
	}
	close(fd);
	return ret;
}

int open_net_source(const char *cmd, const char *addr, const char *key_path,
		    bool insecure, unsigned timeout_s, unsigned push_connections,
		    pc_source **src, char *why, size_t why_len)
{
	struct pc_net_opts no = {
		.address = addr,
		.insecure = insecure,
		.timeout_ms = timeout_s * 1000,
		.push_connections = push_connections,
	};
	uint8_t *key = NULL;
	if (key_path && read_key_file(cmd, key_path, &key, &no.key_len) < 0) {
		if (why)
			snprintf(why, why_len, "%s: the key file cannot be used", key_path);
		return -EINVAL;
	}
	no.key = key;
	char nwhy[256] = "";
	int ret = pc_source_net(&no, src, nwhy, sizeof(nwhy));
	if (key)
		memset(key, 0, no.key_len);
	free(key);
	if (ret < 0 && why)
		snprintf(why, why_len, "%s: %s", addr, nwhy[0] ? nwhy : strerror(-ret));
	else if (ret < 0)
		complain(cmd, "%s: %s", addr, nwhy[0] ? nwhy : strerror(-ret));
	return ret;
}

bool key_file_ok(const char *cmd, const char *path)
{
	uint8_t *key = NULL;
	size_t len = 0;
	if (read_key_file(cmd, path, &key, &len) < 0)
		return false;
	memset(key, 0, len);
	free(key);
	return true;
}

static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

/* The library's rules (src/net/net.c), checked here so that a bad command line
 * is told apart from a failure at run time. */
bool address_ok(const char *cmd, const char *flag, const char *addr,
		bool has_key, bool insecure)
{
	if (!strncmp(addr, "unix:", 5)) {
		size_t n = strlen(addr + 5);
		if (n && n < sizeof(((struct sockaddr_un *)0)->sun_path))
			return true;
		complain(cmd, "%s '%s': a Unix socket path of 1..%zu bytes is needed",
			 flag, addr, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return false;
	}
	const char *s = strncmp(addr, "tcp://", 6) ? addr : addr + 6;
	const char *colon = strrchr(s, ':');
	char host[128], *end;
	unsigned long port = 0;
	size_t hl = colon ? (size_t)(colon - s) : 0;
	if (colon && colon[1])
		port = strtoul(colon + 1, &end, 10);
	if (!colon || !hl || !colon[1] || *end || !isdigit((unsigned char)colon[1]) ||
	    port > 65535) {
		complain(cmd, "%s '%s': expected tcp://HOST:PORT (port 0..65535) or unix:PATH",
			 flag, addr);
		return false;
	}
	if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') { /* [v6]:port */
		s++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		complain(cmd, "%s '%s': host name too long", flag, addr);
		return false;
	}
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (!has_key && !insecure) {
		complain(cmd, "%s %s: TCP needs a key (--key FILE); --insecure is for loopback tests only",
			 flag, addr);
		return false;
	}
	if (!insecure)
		return true;
	/* --insecure: the address must be loopback, so resolve it now. */
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	int err = getaddrinfo(host, NULL, &hints, &res);
	if (err) {
		complain(cmd, "%s '%s': %s", flag, addr, gai_strerror(err));
		return false;
	}
	bool local = is_loopback(res->ai_addr);
	freeaddrinfo(res);
	if (!local)
		complain(cmd, "--insecure is for loopback addresses only, not %s", addr);
	return local;
}

bool auth_flags_ok(const char *cmd, bool networked, const char *key_path,
		   bool insecure)
{
	if ((key_path || insecure) && !networked) {
		complain(cmd, "--key and --insecure go with --source");
		return false;
	}
	if (key_path && insecure) {
		complain(cmd, "--key and --insecure are exclusive");
		return false;
	}
	return true;
}
