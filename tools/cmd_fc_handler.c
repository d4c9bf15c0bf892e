/* SPDX-License-Identifier: MIT */
/*
 * cmd_fc_handler.c - `postcopy fc-handler`: a page-fault handler for
 * Firecracker snapshot restore (`"mem_backend": {"backend_type": "Uffd"}`).
 *
 * Listens on a Unix socket.  Each Firecracker process that connects sends
 * one message: a JSON array describing its guest memory regions, with its
 * userfaultfd attached (SCM_RIGHTS).  Every connection gets its own thread:
 * it reads and validates the handshake, creates an adopted region
 * (PC_BACKEND_ADOPTED) over the memory file, starts the pager and the
 * filler, and watches the Firecracker process through a pidfd (its pid
 * from SO_PEERCRED).  When every page is present, when the process exits
 * or when the region fails (the process is then killed, unless
 * --no-kill), that VM is reported and released; other VMs go on.
 * docs/firecracker.md describes the protocol as implemented.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "tools.h"

#define CMD "fc-handler"
#define HANDSHAKE_MAX (1u << 20)     /* bytes of JSON we accept at most */
#define HANDSHAKE_CHUNK (64u << 10)  /* one read */
#define HANDSHAKE_TIMEOUT_MS 10000

struct fc_opts {
	const char *sock;
	const char *image;
	const char *source; /* network address, or NULL for --image */
	const char *key_path;
	bool insecure;
	unsigned net_timeout_s;
	unsigned push_connections; /* --push-connections, 0: the default */
	bool http;	     /* --source is http://, https:// or s3:// */
	struct http_spec hs; /* then its flags */
	bool once, fill, kill, json;
	unsigned window, readers;
	unsigned fillers; /* --fillers, 0: the library's default */
	const char *replay_path;
	pc_ws *replay;		 /* loaded once, replayed into every VM */
	const char *record_path; /* --record-ws, with %n and %p */
	unsigned record_s;	 /* --record-seconds */
	struct pc_image_id image_id; /* of --image, with --replay-ws or --record-ws */
};

/* One Firecracker process. */
struct vm {
	struct vm *next;
	pthread_t thread;
	_Atomic bool finished; /* the thread is done: join it */
	int conn;
	unsigned number; /* 1, 2, ... in the order they connected */
	const struct fc_opts *o;
	bool served;  /* the handshake was accepted */
	bool failed;  /* its region failed */
	int64_t recorded;	 /* pages in its saved recording, or -1 */
	char ws_file[PATH_MAX];	 /* --record-ws's file for it */
};

static _Atomic bool stopping;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pthread_mutex_lock(&out_lock);
	fprintf(stderr, "postcopy " CMD ": ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	fflush(stderr);
	pthread_mutex_unlock(&out_lock);
	va_end(ap);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy fc-handler --sock PATH --image FILE [options]\n"
		"       postcopy fc-handler --sock PATH --source ADDR [--key FILE | --insecure]\n"
		"                           [options]\n"
		"       postcopy fc-handler --sock PATH --source URL [options]\n"
		"\n"
		"Serve the page faults of Firecracker processes restoring a snapshot with\n"
		"\"mem_backend\": {\"backend_type\": \"Uffd\", \"backend_path\": PATH}.\n"
		"Every process that connects to PATH hands over its userfaultfd and the\n"
		"layout of its guest memory (JSON: base_host_virt_addr, size, offset and,\n"
		"by version, page_size_kib and page_size, both in bytes); its memory is\n"
		"then demand-paged from FILE, the snapshot's memory file, or from\n"
		"`postcopy serve` at ADDR, while a background filler (with --source, the\n"
		"server's push) installs the rest.  Any number of VMs at once, each\n"
		"with its own pager, statistics and failure.  A balloon's MADV_DONTNEED\n"
		"(UFFD_EVENT_REMOVE) is honoured: those pages read as zeros.\n"
		"\n"
		"  --sock PATH     Unix socket to listen on (a stale socket is replaced)\n"
		"  --image FILE    the snapshot memory file (holes read as zero pages);\n"
		"                  opened anew for each VM, whose regions must cover it\n"
		"                  exactly (offsets cumulative from 0)\n"
		"  --source ADDR   serve the pages from `postcopy serve` at tcp://HOST:PORT\n"
		"                  or unix:PATH instead: one session (and push) per VM,\n"
		"                  whose regions must cover the served image exactly\n"
		"  --source URL    or from an object: http://, https:// or s3://BUCKET/KEY\n"
		"                  (as for `restore`), opened and pinned anew for each VM,\n"
		"                  with the background filler\n"
		"  --s3-endpoint URL, --s3-region R, --http-timeout MS, --http-ca FILE\n"
		"                  as for `restore`\n"
		"  --key FILE      pre-shared key for TCP (mode 600)\n"
		"  --insecure      TCP without authentication: loopback tests only\n"
		"  --net-timeout S with --source: a VM's server silent for S seconds\n"
		"                  (default 10) fails that VM\n"
		"  --push-connections N  with --source tcp:// or unix:: push connections\n"
		"                  per VM, each received by a thread (1..4, default 2;\n"
		"                  1 keeps demand faults' tails shortest on busy cores)\n"
		"  --once          exit after one VM was served and released\n"
		"  --no-fill       no background filler: only faulted pages are loaded\n"
		"  --fillers N     the filler's threads per VM (1..8; default 2 where\n"
		"                  the machine has two CPUs or more, else 1)\n"
		"  --no-kill       when a VM's pages cannot be had (the memory file\n"
		"                  became unreadable or shorter), only report it; by\n"
		"                  default the Firecracker process is killed (SIGKILL),\n"
		"                  as Firecracker's docs advise, instead of hanging\n"
		"  --window N|auto pages installed per fault, aligned around it (1..512),\n"
		"                  or auto (the default): per faulting thread, doubling\n"
		"                  while it reads sequentially (to 256 KiB while the\n"
		"                  fill or a server's push runs, else 2 MiB), else\n"
		"                  64 KiB while they run and one page with --no-fill;\n"
		"                  2 MiB pages always install one\n"
		"  --readers N     handler threads per VM (1..64, default 2)\n"
		"  --replay-ws FILE  install a working-set recording's pages first, in\n"
		"                  order, into every VM (docs/working-set.md; with\n"
		"                  --image, whose recording it must be, or a postcopy\n"
		"                  server's --source: a VM whose server has another\n"
		"                  image is refused)\n"
		"  --record-ws PATH  record each VM's working set (its demand faults'\n"
		"                  pages, in first-touch order) for --record-seconds,\n"
		"                  or until it exits, into PATH, where %%n is the VM's\n"
		"                  number (1, 2, ... as they connect), %%p its pid and\n"
		"                  %%%% a %%; without %%n or %%p only with --once.  Its\n"
		"                  filler starts when the recording is saved, and\n"
		"                  --window is 1 unless given.  Needs --image or a\n"
		"                  postcopy server's --source (the image's identity)\n"
		"  --record-seconds S  how long a VM is recorded (1..3600, default 10)\n"
		"  --json          one JSON line per VM on stdout when it is released\n"
		"                  (else a text line on stderr)\n"
		"  -h, --help      this text\n"
		"\n"
		"Per VM: released when every page is present, when the Firecracker process\n"
		"exits (watched with a pidfd from SO_PEERCRED), or after it was killed.\n"
		"The report gives pid, status (complete, exited, failed, stopped), pages,\n"
		"present, faults, resolve latency p50/p99, pages by origin (demand,\n"
		"prefetch, fill, zero), pages_removed and seconds.  A malformed handshake\n"
		"(bad JSON, no userfaultfd, overlapping regions, offsets not cumulative\n"
		"or past the file, a page size other than 4096 or 2097152, sizes that are\n"
		"not page multiples, more than 1 MiB of JSON, nothing within 10 s) is\n"
		"logged and that connection closed; the handler goes on serving.\n"
		"Logs go to stderr.  SIGTERM or SIGINT stops the handler: VMs still\n"
		"incomplete are reported as stopped and killed (unless --no-kill),\n"
		"since without their handler they would wait forever.\n"
		"\n"
		"Exit status: 0 stopped by a signal, or with --once the VM completed or\n"
		"exited; 1 runtime error (socket, or with --once the VM's region\n"
		"failed); 2 bad command line.\n");
}

/*
 * --record-ws's PATH for VM @number of process @pid: %n and %p replaced,
 * %% made a %.  0, or -1 if it does not fit in @len or has another %.
 */
static int record_file(const char *pattern, unsigned number, pid_t pid,
		       char *out, size_t len)
{
	size_t k = 0;
	for (const char *c = pattern; *c; c++) {
		char part[24];
		const char *add = part;
		if (*c != '%') {
			part[0] = *c;
			part[1] = 0;
		} else if (c[1] == 'n' || c[1] == 'p') {
			snprintf(part, sizeof(part), "%lld",
				 c[1] == 'n' ? (long long)number : (long long)pid);
			c++;
		} else if (c[1] == '%') {
			add = "%";
			c++;
		} else {
			return -1;
		}
		size_t n = strlen(add);
		if (k + n >= len)
			return -1;
		memcpy(out + k, add, n);
		k += n;
	}
	out[k] = 0;
	return 0;
}

/* Is --record-ws's PATH one every VM can use? */
static bool record_pattern_ok(const char *pattern, bool once, char *why, size_t len)
{
	char one[PATH_MAX], two[PATH_MAX];
	if (!*pattern || record_file(pattern, 1, 1, one, sizeof(one)) < 0 ||
	    record_file(pattern, 2, 2, two, sizeof(two)) < 0) {
		snprintf(why, len, "empty, too long, or a %% other than %%n, %%p or %%%%");
		return false;
	}
	/* Every VM its own file: else the second would replace the first's. */
	if (!once && !strcmp(one, two)) {
		snprintf(why, len, "every VM needs a file of its own: put %%n or %%p in it, or give --once");
		return false;
	}
	return true;
}

static int parse(int argc, char **argv, struct fc_opts *o)
{
	static const struct option longopts[] = {
		{ "sock", required_argument, NULL, 's' },
		{ "image", required_argument, NULL, 'i' },
		{ "source", required_argument, NULL, 'S' },
		{ "key", required_argument, NULL, 'k' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "net-timeout", required_argument, NULL, 'T' },
		{ "push-connections", required_argument, NULL, 'P' },
		{ "s3-endpoint", required_argument, NULL, 'E' },
		{ "s3-region", required_argument, NULL, 'G' },
		{ "http-timeout", required_argument, NULL, 'H' },
		{ "http-ca", required_argument, NULL, 'C' },
		{ "once", no_argument, NULL, '1' },
		{ "no-fill", no_argument, NULL, 'F' },
		{ "fillers", required_argument, NULL, 'f' },
		{ "no-kill", no_argument, NULL, 'K' },
		{ "window", required_argument, NULL, 'w' },
		{ "readers", required_argument, NULL, 'r' },
		{ "replay-ws", required_argument, NULL, 'R' },
		{ "record-ws", required_argument, NULL, 'W' },
		{ "record-seconds", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	int c;
	*o = (struct fc_opts){ .fill = true, .kill = true, .readers = 2 };
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's': o->sock = optarg; break;
		case 'i': o->image = optarg; break;
		case 'S': o->source = optarg; break;
		case 'k': o->key_path = optarg; break;
		case 'I': o->insecure = true; break;
		case 'T':
			if (parse_uint(optarg, 1, 86400, &o->net_timeout_s) < 0)
				return bad_arg(CMD, "--net-timeout (1..86400 s)", optarg);
			break;
		case 'P':
			if (parse_uint(optarg, 1, 4, &o->push_connections) < 0)
				return bad_arg(CMD, "--push-connections (1..4)", optarg);
			break;
		case 'E': o->hs.s3_endpoint = optarg; break;
		case 'G': o->hs.s3_region = optarg; break;
		case 'C': o->hs.ca_file = optarg; break;
		case 'H':
			if (parse_uint(optarg, 1, 3600000, &o->hs.timeout_ms) < 0)
				return bad_arg(CMD, "--http-timeout (milliseconds)", optarg);
			break;
		case '1': o->once = true; break;
		case 'F': o->fill = false; break;
		case 'f':
			if (parse_uint(optarg, 1, 8, &o->fillers) < 0)
				return bad_arg(CMD, "--fillers (1..8)", optarg);
			break;
		case 'K': o->kill = false; break;
		case 'j': o->json = true; break;
		case 'R': o->replay_path = optarg; break;
		case 'W': o->record_path = optarg; break;
		case 'D':
			if (parse_uint(optarg, 1, 3600, &o->record_s) < 0)
				return bad_arg(CMD, "--record-seconds (1..3600)", optarg);
			break;
		case 'w':
			if (parse_window(optarg, &o->window) < 0)
				return bad_arg(CMD, "--window (1..512 or auto)", optarg);
			break;
		case 'r':
			if (parse_uint(optarg, 1, 64, &o->readers) < 0)
				return bad_arg(CMD, "--readers (1..64)", optarg);
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
		complain(CMD, "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	if (!o->sock || !o->image == !o->source) {
		complain(CMD, "--sock PATH and one of --image FILE or --source ADDR are required");
		return EXIT_USAGE;
	}
	o->hs.source = o->source;
	o->http = is_http_spec(o->source);
	if (!auth_flags_ok(CMD, o->source && !o->http, o->key_path, o->insecure))
		return EXIT_USAGE;
	if (!http_flags_ok(CMD, &o->hs))
		return EXIT_USAGE;
	if (o->net_timeout_s && (!o->source || o->http)) {
		complain(CMD, "--net-timeout goes with --source tcp:// or unix:");
		return EXIT_USAGE;
	}
	if (o->fillers && !o->fill) {
		complain(CMD, "--fillers cannot go with --no-fill");
		return EXIT_USAGE;
	}
	if (o->push_connections && (!o->source || o->http)) {
		complain(CMD, "--push-connections goes with --source tcp:// or unix:");
		return EXIT_USAGE;
	}
	if ((o->replay_path || o->record_path) && !o->image && (!o->source || o->http)) {
		complain(CMD, "--%s goes with --image or a postcopy server's --source: a recording names its image by the digest of its contents",
			 o->replay_path ? "replay-ws" : "record-ws");
		return EXIT_USAGE;
	}
	if (o->record_s && !o->record_path) {
		complain(CMD, "--record-seconds goes with --record-ws");
		return EXIT_USAGE;
	}
	if (o->record_path) {
		char why[160];
		if (!record_pattern_ok(o->record_path, o->once, why, sizeof(why))) {
			complain(CMD, "--record-ws '%s': %s", o->record_path, why);
			return EXIT_USAGE;
		}
		if (!o->record_s)
			o->record_s = 10;
	}
	/* Not given: auto, but 1 while recording, since a window's other
	 * pages take no fault and would be missing from the recording. */
	if (!o->window)
		o->window = o->record_path ? 1 : PC_WINDOW_AUTO;
	if (strlen(o->sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		complain(CMD, "--sock path too long: '%s'", o->sock);
		return EXIT_USAGE;
	}
	if (o->http)
		return EXIT_OK;
	if (o->source)
		return address_ok(CMD, "--source", o->source, o->key_path != NULL,
				  o->insecure) &&
				       (!o->key_path || key_file_ok(CMD, o->key_path)) ?
			       EXIT_OK :
			       EXIT_USAGE;
	return check_input_file(CMD, "--image", o->image);
}

/* ---- the handshake ------------------------------------------------------ */

/*
 * Read one message: JSON (possibly in several reads on the stream) and the
 * descriptor that came with it.  0, or -1 with the reason in @why.
 */
static int read_handshake(int conn, struct json_object **out, int *fd,
			  char *why, size_t wlen)
{
	struct json_tokener *tok = json_tokener_new();
	char *buf = malloc(HANDSHAKE_CHUNK);
	size_t total = 0;
	int ret = -1;
	*fd = -1;
	*out = NULL;
	if (!tok || !buf) {
		snprintf(why, wlen, "out of memory");
		goto done;
	}
	for (;;) {
		struct pollfd p = { conn, POLLIN, 0 };
		int pr = poll(&p, 1, HANDSHAKE_TIMEOUT_MS);
		if (pr == 0) {
			snprintf(why, wlen, "no complete handshake within %d s (%zu bytes read)",
				 HANDSHAKE_TIMEOUT_MS / 1000, total);
			goto done;
		}
		if (pr < 0 && errno == EINTR)
			continue;
		char ctl[CMSG_SPACE(8 * sizeof(int))];
		struct iovec iov = { buf, HANDSHAKE_CHUNK };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = ctl, .msg_controllen = sizeof(ctl) };
		ssize_t n = recvmsg(conn, &m, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(why, wlen, "reading the handshake: %s", strerror(errno));
			goto done;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < nfd; i++) {
				int f;
				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (*fd < 0) {
					*fd = f;
				} else {
					close(f);
					snprintf(why, wlen, "more than one descriptor attached (guest_memfd handshakes are not supported)");
					ret = -2;
				}
			}
		}
		if (m.msg_flags & MSG_CTRUNC) {
			snprintf(why, wlen, "too many descriptors attached");
			ret = -2;
		}
		if (ret == -2) {
			ret = -1;
			goto done;
		}
		if (n == 0) {
			snprintf(why, wlen, total ? "connection closed after %zu bytes of incomplete JSON" :
					       "connection closed without a handshake", total);
			goto done;
		}
		total += (size_t)n;
		if (total > HANDSHAKE_MAX) {
			snprintf(why, wlen, "handshake longer than %u bytes", HANDSHAKE_MAX);
			goto done;
		}
		struct json_object *j;
		int fr = fc_handshake_feed(tok, buf, (size_t)n, &j, why, wlen);
		if (fr > 0)
			continue;
		if (fr < 0)
			goto done;
		*out = j;
		ret = 0;
		break;
	}
done:
	if (ret < 0 && *fd >= 0) {
		close(*fd);
		*fd = -1;
	}
	if (tok)
		json_tokener_free(tok);
	free(buf);
	return ret;
}

/* ---- one VM --------------------------------------------------------------- */

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_kill(int pidfd)
{
	return (int)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
}

/* Has the process behind @pidfd exited?  Waits up to @ms. */
static bool peer_gone(int pidfd, int ms)
{
	if (pidfd < 0)
		return false;
	struct pollfd p = { pidfd, POLLIN, 0 };
	return poll(&p, 1, ms) > 0;
}

static void report(const struct vm *v, pid_t pid, const struct fc_handshake *h,
		   pc_region *r, const char *status, const char *error,
		   bool killed, double seconds)
{
	struct pc_stats *s = NULL;
	if (pc_region_stats(r, &s) < 0)
		s = NULL;
	if (v->o->json) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "pid", json_object_new_int(pid));
		json_object_object_add(j, "status", json_object_new_string(status));
		if (error)
			json_object_object_add(j, "error", json_object_new_string(error));
		json_object_object_add(j, "killed", json_object_new_boolean(killed));
		json_object_object_add(j, "fields", json_object_new_string(h->shape));
		json_object_object_add(j, "regions", json_object_new_int((int)h->n));
		json_object_object_add(j, "size", json_object_new_int64((int64_t)h->total));
		json_object_object_add(j, "page_size", json_object_new_int64((int64_t)h->page_size));
		if (s) {
			json_object_object_add(j, "pages", json_object_new_int64((int64_t)s->pages));
			json_object_object_add(j, "present", json_object_new_int64((int64_t)s->present));
			json_object_object_add(j, "faults", json_object_new_int64((int64_t)s->faults));
			struct json_object *l = json_object_new_object();
			json_object_object_add(l, "p50", json_object_new_double(s->latency.p50 / 1e3));
			json_object_object_add(l, "p99", json_object_new_double(s->latency.p99 / 1e3));
			json_object_object_add(l, "max", json_object_new_double(s->latency.max / 1e3));
			json_object_object_add(j, "latency_us", l);
			struct json_object *g = json_object_new_object();
			json_object_object_add(g, "demand", json_object_new_int64((int64_t)s->pages_demand));
			json_object_object_add(g, "prefetch", json_object_new_int64((int64_t)s->pages_prefetch));
			json_object_object_add(g, "fill", json_object_new_int64((int64_t)s->pages_fill));
			json_object_object_add(g, "replay", json_object_new_int64((int64_t)s->pages_replay));
			json_object_object_add(g, "zero", json_object_new_int64((int64_t)s->zero_pages));
			json_object_object_add(j, "pages_by_origin", g);
			json_object_object_add(j, "pages_removed", json_object_new_int64((int64_t)s->pages_removed));
			json_object_object_add(j, "blocktime_ms", json_object_new_double(s->blocked_ns / 1e6));
		}
		if (v->o->record_path) {
			json_object_object_add(j, "ws_file", json_object_new_string(v->ws_file));
			if (v->recorded >= 0)
				json_object_object_add(j, "ws_recorded_pages",
						       json_object_new_int64(v->recorded));
		}
		json_object_object_add(j, "seconds", json_object_new_double(seconds));
		pthread_mutex_lock(&out_lock);
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
		fflush(stdout);
		pthread_mutex_unlock(&out_lock);
		json_object_put(j);
	} else if (s) {
		logf_("pid %d: %s%s%s%s: %llu/%llu pages present in %.3f s, %llu faults, latency p50 %.1f us p99 %.1f us, demand %llu prefetch %llu fill %llu zero %llu, removed %llu",
		      (int)pid, status, error ? " (" : "", error ? error : "", error ? ")" : "",
		      (unsigned long long)s->present, (unsigned long long)s->pages, seconds,
		      (unsigned long long)s->faults, s->latency.p50 / 1e3, s->latency.p99 / 1e3,
		      (unsigned long long)s->pages_demand, (unsigned long long)s->pages_prefetch,
		      (unsigned long long)s->pages_fill, (unsigned long long)s->zero_pages,
		      (unsigned long long)s->pages_removed);
	}
	if (killed)
		logf_("pid %d: killed (SIGKILL): without its pages it would wait forever", (int)pid);
	free(s);
}

/* A VM's own source: the memory file opened anew, or its own session
 * with the server (so one VM's broken connection is only its own). */
static int open_source(const struct fc_opts *o, pc_source **src, char *why,
		       size_t len)
{
	if (!o->source) {
		int ret = pc_source_file(o->image, src);
		if (ret < 0)
			snprintf(why, len, "%s: %s", o->image, strerror(-ret));
		return ret;
	}
	/* One connection per handler thread, and the filler's. */
	if (o->http)
		return open_http_source(&o->hs, o->readers + 1, src, why, len);
	return open_net_source(CMD, o->source, o->key_path, o->insecure,
			       o->net_timeout_s ? o->net_timeout_s : 10, o->push_connections,
			       src, why, len);
}

/* Write @v's recording to its file and say so. */
static void save_recording(struct vm *v, pid_t pid, const pc_ws *rec)
{
	uint64_t pages;
	int ret = save_working_set(rec, v->ws_file, &pages);
	if (ret < 0) {
		logf_("pid %d: --record-ws %s: %s", (int)pid, v->ws_file, strerror(-ret));
		return;
	}
	v->recorded = (int64_t)pages;
	logf_("pid %d: working set of %lld pages recorded to %s", (int)pid,
	      (long long)v->recorded, v->ws_file);
}

static void serve_vm(struct vm *v)
{
	const struct fc_opts *o = v->o;
	char why[512] = "";
	struct ucred cred = { 0 };
	socklen_t clen = sizeof(cred);
	struct json_object *j = NULL;
	struct fc_handshake h = { .uffd = -1 };
	pc_source *src = NULL;
	pc_region *r = NULL;
	pc_ws *rec = NULL;
	int pidfd = -1, uffd = -1;

	if (getsockopt(v->conn, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0)
		cred.pid = 0;
	if (read_handshake(v->conn, &j, &uffd, why, sizeof(why)) < 0)
		goto refuse;
	int ret = open_source(o, &src, why, sizeof(why));
	if (ret < 0)
		goto refuse;
	if (fc_parse_regions(j, pc_source_size(src), &h, why, sizeof(why)) < 0)
		goto refuse;
	if (uffd < 0) {
		snprintf(why, sizeof(why), "no userfaultfd attached to the handshake");
		goto refuse;
	}
	if (cred.pid > 0)
		pidfd = pidfd_open_(cred.pid);
	if (pidfd < 0)
		logf_("pid %d: cannot watch the process (%s): released only when complete",
		      (int)cred.pid, cred.pid > 0 ? strerror(errno) : "no pid from SO_PEERCRED");
	struct pc_region_opts ro = {
		.size = h.total, .backend = PC_BACKEND_ADOPTED, .mode = PC_MODE_WAIT,
		.uffd = uffd, .remote = h.r, .nremote = h.n, .page_size = h.page_size,
		.readers = o->readers, .window = h.page_size == FC_HUGE_2M ? 1 : o->window,
		.fillers = o->fillers,
	};
	uffd = -1; /* the region's from here on, also on failure */
	/* The region's, once created. */
	pc_source *net = o->source && !o->http ? src : NULL;
	pc_source *region_src = src;
	ret = pc_region_create(&ro, src, &r, why, sizeof(why));
	src = NULL;
	if (ret < 0)
		goto refuse;
	/* The image's identity, which a recording names and a replay must
	 * match: --image's, else the one this VM's server proved (a
	 * recording of another image is this VM's error). */
	struct pc_image_id id = o->image_id;
	if ((o->replay || o->record_path) && !o->image && (ret = pc_image_id_of(net, &id)) < 0) {
		snprintf(why, sizeof(why), "the server's image identity: %s", strerror(-ret));
		goto refuse;
	}
	if (o->record_path) {
		ret = record_file(o->record_path, v->number, cred.pid, v->ws_file,
				  sizeof(v->ws_file)) < 0 ? -ENAMETOOLONG :
							    pc_ws_record(r, &id, &rec);
		if (ret < 0) {
			snprintf(why, sizeof(why), "--record-ws: %s", strerror(-ret));
			goto refuse;
		}
	}
	double t0 = seconds_now();
	ret = pc_region_start(r);
	bool replay_failed = false;
	if (ret == 0 && o->replay) {
		ret = pc_region_replay(r, o->replay, &id, why, sizeof(why));
		replay_failed = ret < 0;
	}
	/* While recording, a page the filler brought first would take no
	 * fault and be missing from the recording: it starts after. */
	if (ret == 0 && o->fill && !rec)
		ret = start_background(net, r);
	if (ret < 0) {
		if (!replay_failed)
			snprintf(why, sizeof(why), "%s", pc_region_error(r));
		/* Its faults may already sleep on the userfaultfd. */
		if (o->kill && pidfd >= 0 && pidfd_kill(pidfd) == 0)
			logf_("pid %d: killed (SIGKILL) after the region failed to start", (int)cred.pid);
		goto refuse;
	}
	v->served = true;
	logf_("pid %d: %u region%s, %.1f MiB, %llu-byte pages (%s fields)%s%s",
	      (int)cred.pid, h.n, h.n == 1 ? "" : "s", (double)h.total / (1 << 20),
	      (unsigned long long)h.page_size, h.shape,
	      rec ? ", recording its working set" : "",
	      o->fill ? (rec ? ", then filling" : ", filling") : "");

	const char *status = NULL, *error = NULL;
	char error_buf[1024];
	bool killed = false;
	bool recording = rec != NULL;
	for (;;) {
		if (recording && seconds_now() - t0 >= o->record_s) {
			recording = false;
			save_recording(v, cred.pid, rec);
			if (o->fill && (ret = start_background(net, r)) < 0)
				logf_("pid %d: starting the fill: %s (its pages come on demand only)",
				      (int)cred.pid, strerror(-ret));
		}
		ret = pc_region_wait(r, 50);
		if (ret == 0) {
			status = "complete";
			break;
		}
		if (ret != -ETIMEDOUT) {
			/* The process may be exiting (its memory gone before its
			 * pidfd says so): then that is why. */
			if (peer_gone(pidfd, 200)) {
				status = pc_region_complete(r) ? "complete" : "exited";
				break;
			}
			status = "failed";
			error = pc_region_error(r)[0] ? pc_region_error(r) : strerror(-ret);
			/* An HTTP source knows what the server said. */
			char http_why[512];
			if (o->http && http_error(region_src, http_why, sizeof(http_why))) {
				snprintf(error_buf, sizeof(error_buf), "%s (%s)", error, http_why);
				error = error_buf;
			}
			v->failed = true;
			logf_("pid %d: region failed: %s", (int)cred.pid, error);
			if (o->kill && pidfd >= 0) {
				killed = pidfd_kill(pidfd) == 0;
				/* Release only once it is gone. */
				while (!peer_gone(pidfd, 1000) && !atomic_load(&stopping))
					;
			} else {
				/* --no-kill: report now, keep the VM until it exits. */
				report(v, cred.pid, &h, r, status, error, false, seconds_now() - t0);
				status = NULL;
				while (!peer_gone(pidfd, 200) && !atomic_load(&stopping))
					;
			}
			break;
		}
		if (peer_gone(pidfd, 0)) {
			/* Its last pages may have arrived just now. */
			status = pc_region_wait(r, 100) == 0 ? "complete" : "exited";
			break;
		}
		if (atomic_load(&stopping)) {
			status = "stopped";
			if (o->kill && pidfd >= 0)
				killed = pidfd_kill(pidfd) == 0;
			break;
		}
	}
	/* Ended before its time (complete, exited, stopped): what it has. */
	if (recording && !v->failed)
		save_recording(v, cred.pid, rec);
	if (status)
		report(v, cred.pid, &h, r, status, error, killed, seconds_now() - t0);
	pc_region_destroy(r);
	goto out;
refuse:
	logf_("pid %d: refused: %s", (int)cred.pid, why);
	pc_region_destroy(r);
out:
	pc_ws_destroy(rec); /* after its region */
	pc_source_destroy(src);
	if (uffd >= 0)
		close(uffd);
	if (pidfd >= 0)
		close(pidfd);
	if (j)
		json_object_put(j);
	close(v->conn);
	v->conn = -1;
}

static void *vm_main(void *arg)
{
	struct vm *v = arg;
	serve_vm(v);
	atomic_store(&v->finished, true);
	return NULL;
}

/* ---- the listener ----------------------------------------------------- */

static int listen_on(const char *path)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	struct stat st;
	strcpy(un.sun_path, path);
	/* Replace a stale socket, never anything else that has the name. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			complain(CMD, "%s exists and is not a socket", path);
			return -1;
		}
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 ||
	    listen(fd, 64) < 0) {
		complain(CMD, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Join finished VM threads (all of them with @all); how many VMs that
 * were served ended, and whether one of them failed. */
static unsigned reap(struct vm **list, bool all, bool *any_failed)
{
	unsigned ended = 0;
	for (struct vm **pp = list; *pp;) {
		struct vm *v = *pp;
		if (!all && !atomic_load(&v->finished)) {
			pp = &v->next;
			continue;
		}
		pthread_join(v->thread, NULL);
		if (v->served)
			ended++;
		if (v->failed)
			*any_failed = true;
		*pp = v->next;
		free(v);
	}
	return ended;
}

int cmd_fc_handler(int argc, char **argv)
{
	struct fc_opts o;
	int ret = parse(argc, argv, &o);
	if (ret < 0)
		return EXIT_OK;
	if (ret != EXIT_OK)
		return ret;
	if (o.replay_path || o.record_path) {
		/* The image's identity, which a recording names; a replay is
		 * checked whole, and against it, before serving (with a
		 * server, against the image each VM's server proves). */
		char why[256];
		pc_source *f;
		ret = o.image ? pc_source_file(o.image, &f) : 0;
		if (ret == 0 && o.image) {
			ret = pc_image_id_of(f, &o.image_id);
			pc_source_destroy(f);
		}
		if (ret < 0) {
			complain(CMD, "%s: cannot take its identity: %s", o.image, strerror(-ret));
			return EXIT_FAIL;
		}
		ret = o.replay_path ? pc_ws_load(o.replay_path, &o.replay, why, sizeof(why)) : 0;
		if (ret == 0 && o.replay && o.image &&
		    (ret = pc_ws_check_image(o.replay, &o.image_id, why, sizeof(why))) < 0)
			pc_ws_destroy(o.replay);
		if (ret < 0) {
			complain(CMD, "--replay-ws %s: %s", o.replay_path, why);
			return EXIT_FAIL;
		}
	}

	/* Signals are read from a signalfd here; every thread inherits the
	 * mask, so none is interrupted by them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigdelset(&set, SIGPIPE);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	int lfd = listen_on(o.sock);
	if (sfd < 0 || lfd < 0) {
		if (sfd < 0)
			complain(CMD, "signalfd: %s", strerror(errno));
		pc_ws_destroy(o.replay);
		return EXIT_FAIL;
	}
	logf_("listening on %s, %s %s%s", o.sock,
	      o.http ? "object" : o.source ? "server" : "memory file",
	      o.source ? o.source : o.image, o.fill ? "" : " (no fill)");

	struct vm *list = NULL;
	unsigned accepted = 0;
	bool any_failed = false;
	int status = EXIT_OK;
	for (;;) {
		struct pollfd p[2] = { { lfd, POLLIN, 0 }, { sfd, POLLIN, 0 } };
		int n = poll(p, 2, 100);
		if (n < 0 && errno != EINTR) {
			complain(CMD, "poll: %s", strerror(errno));
			status = EXIT_FAIL;
			break;
		}
		if (reap(&list, false, &any_failed) && o.once)
			break;
		if (n > 0 && p[1].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) > 0)
				logf_("signal %u: stopping", si.ssi_signo);
			break;
		}
		if (n > 0 && p[0].revents & POLLIN) {
			int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (conn < 0) {
				if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
					logf_("accept: %s", strerror(errno));
				continue;
			}
			struct vm *v = calloc(1, sizeof(*v));
			if (!v) {
				logf_("out of memory: connection closed");
				close(conn);
				continue;
			}
			v->conn = conn;
			v->o = &o;
			v->number = ++accepted;
			v->recorded = -1;
			if (pthread_create(&v->thread, NULL, vm_main, v)) {
				logf_("cannot start a thread: connection closed");
				close(conn);
				free(v);
				continue;
			}
			v->next = list;
			list = v;
		}
	}
	atomic_store(&stopping, true);
	close(lfd);
	unlink(o.sock);
	reap(&list, true, &any_failed);
	close(sfd);
	if (o.once && any_failed)
		status = EXIT_FAIL;
	pc_ws_destroy(o.replay);
	return status;
}
