/* SPDX-License-Identifier: MIT */
/*
 * cmd_serve.c - `postcopy serve`: the source side of a post-copy
 * migration.  Serves a raw memory image to destinations until stopped
 * (SIGINT/SIGTERM) or, with --once, until one destination has every page.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tools.h"

static pc_server *running; /* for the signal handler: SIGINT stops it */

static void on_signal(int sig)
{
	(void)sig;
	if (running)
		pc_server_stop(running);
}

/*
 * Wait on a Unix socket for one peer (ourselves or root) to hand over a
 * descriptor with SCM_RIGHTS: the VMM that owns guest memory passing its
 * memfd.  Returns the descriptor, or -1 after saying why.
 */
static int receive_fd(const char *addr)
{
	if (strncmp(addr, "unix:", 5) || !addr[5] ||
	    strlen(addr + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		complain("serve", "--image-from needs unix:PATH, not '%s'", addr);
		return -1;
	}
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	strcpy(un.sun_path, addr + 5);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), fd = -1;
	bool bound = false;
	struct stat st;
	/* Replace a stale socket, never anything else that has the name. */
	if (lstat(un.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(un.sun_path);
	if (lfd < 0 || !(bound = bind(lfd, (struct sockaddr *)&un, sizeof(un)) == 0) ||
	    listen(lfd, 1) < 0) {
		complain("serve", "%s: %s", addr, strerror(errno));
		goto out;
	}
	printf("waiting for the image descriptor on %s\n", addr);
	fflush(stdout);
	int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	if (conn < 0 || getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != geteuid() && cred.uid != 0)) {
		complain("serve", "%s: refused the peer (not our user)", addr);
		if (conn >= 0)
			close(conn);
		goto out;
	}
	char byte;
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = control.buf,
			      .msg_controllen = sizeof(control.buf) };
	ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (n > 0 && cm && cm->cmsg_level == SOL_SOCKET &&
	    cm->cmsg_type == SCM_RIGHTS && cm->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	else
		complain("serve", "%s: no descriptor arrived", addr);
	close(conn);
out:
	if (lfd >= 0)
		close(lfd);
	if (bound)
		unlink(un.sun_path);
	return fd;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy serve --image FILE [--listen ADDR] [--key FILE | --insecure]\n"
		"       postcopy serve --image-from unix:PATH [...]\n"
		"\n"
		"Serve a raw memory image to post-copy destinations (postcopy restore\n"
		"--source ADDR): pages on demand, and a background push of the rest.\n"
		"\n"
		"  --image FILE      the image to serve (size a multiple of 4 KiB)\n"
		"  --image-from unix:PATH  receive the descriptor to serve (a VMM's\n"
		"                    memfd) over this Unix socket, SCM_RIGHTS, from\n"
		"                    our own user or root\n"
		"  --listen ADDR     tcp://HOST:PORT or unix:PATH\n"
		"                    (default tcp://127.0.0.1:7070; port 0 picks one)\n"
		"  --key FILE        pre-shared key (16+ bytes, mode 600): required for TCP\n"
		"  --insecure        TCP without authentication: loopback tests only\n"
		"  --allow-uid UID   unix: --listen only: the uid that may connect\n"
		"                    (default: ours)\n"
		"  --once            exit after one destination has every page\n"
		"  --session-timeout S  keep a dropped destination's session S seconds\n"
		"                    (default 60)\n"
		"  --json            print the final totals as JSON\n"
		"  -h, --help        this text\n"
		"\n"
		"It prints 'listening on ADDR' on stdout once ready.\n"
		"Exit status: 0 served, 1 error, 2 bad arguments: unknown, conflicting\n"
		"or unused flags, a bad --listen address, TCP without a key, --insecure\n"
		"off loopback, an unusable key file, an --image that is not a regular\n"
		"file.\n");
}

int cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "image", required_argument, NULL, 'i' },
		{ "image-from", required_argument, NULL, 'F' },
		{ "listen", required_argument, NULL, 'l' },
		{ "key", required_argument, NULL, 'k' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "allow-uid", required_argument, NULL, 'u' },
		{ "once", no_argument, NULL, 'o' },
		{ "session-timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct pc_server_opts so = { .allow_uid = -1, .image_fd = -1 };
	const char *key_path = NULL, *image_from = NULL;
	bool json = false;
	unsigned uid, timeout_s;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i': so.image = optarg; break;
		case 'F': image_from = optarg; break;
		case 'l': so.listen = optarg; break;
		case 'k': key_path = optarg; break;
		case 'I': so.insecure = true; break;
		case 'o': so.once = true; break;
		case 'j': json = true; break;
		case 'u':
			if (parse_uint(optarg, 0, 0x7fffffff, &uid) < 0) {
				complain("serve", "bad uid '%s'", optarg);
				return EXIT_USAGE;
			}
			so.allow_uid = (int)uid;
			break;
		case 't':
			if (parse_uint(optarg, 1, 86400, &timeout_s) < 0) {
				complain("serve", "bad session timeout '%s'", optarg);
				return EXIT_USAGE;
			}
			so.session_timeout_ms = timeout_s * 1000;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc || !so.image == !image_from) {
		complain("serve", optind < argc ? "unexpected argument" :
			 so.image ? "--image and --image-from are exclusive" :
			 "one of --image FILE and --image-from unix:PATH is required");
		return EXIT_USAGE;
	}
	if (!auth_flags_ok("serve", true, key_path, so.insecure))
		return EXIT_USAGE;
	const char *listen = so.listen ? so.listen : "tcp://127.0.0.1:7070";
	if (!address_ok("serve", "--listen", listen, key_path != NULL,
			so.insecure))
		return EXIT_USAGE;
	if (so.allow_uid >= 0 && strncmp(listen, "unix:", 5)) {
		complain("serve", "--allow-uid goes with a unix:PATH --listen address");
		return EXIT_USAGE;
	}
	/* The server opens the image itself; looking first, without
	 * blocking, turns a FIFO into a clear error instead of a hang. */
	int status = so.image ? check_input_file("serve", "--image", so.image) :
				EXIT_OK;
	if (status != EXIT_OK)
		return status;
	uint8_t *key = NULL;
	if (key_path && read_key_file("serve", key_path, &key, &so.key_len) < 0)
		return EXIT_USAGE;
	so.key = key;
	if (so.insecure)
		complain("serve", "warning: --insecure: anyone who can connect gets the image");

	if (image_from && (so.image_fd = receive_fd(image_from)) < 0) {
		free(key);
		return EXIT_FAIL;
	}
	pc_server *s;
	char why[256];
	int ret = pc_server_create(&so, &s, why, sizeof(why));
	free(key);
	if (so.image_fd >= 0)
		close(so.image_fd); /* the server keeps its own copy */
	if (ret < 0) {
		complain("serve", "%s", why);
		return EXIT_FAIL;
	}
	running = s;
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	struct pc_server_stats st;
	pc_server_get_stats(s, &st);
	if (st.image_packed)
		printf("image      packed: serving the raw image it holds, decoded into memory\n");
	printf("listening on %s\n", pc_server_address(s));
	fflush(stdout);
	double t0 = seconds_now();
	ret = pc_server_run(s);
	double dt = seconds_now() - t0;
	running = NULL;

	pc_server_get_stats(s, &st);
	if (json) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "seconds", json_object_new_double(dt));
		json_object_object_add(j, "connections", json_object_new_int64((int64_t)st.connections));
		json_object_object_add(j, "refused", json_object_new_int64((int64_t)st.refused));
		json_object_object_add(j, "bad_frames", json_object_new_int64((int64_t)st.bad_frames));
		json_object_object_add(j, "sessions", json_object_new_int64((int64_t)st.sessions));
		json_object_object_add(j, "sessions_done", json_object_new_int64((int64_t)st.sessions_done));
		json_object_object_add(j, "requests", json_object_new_int64((int64_t)st.requests));
		json_object_object_add(j, "pages_demand", json_object_new_int64((int64_t)st.pages_demand));
		json_object_object_add(j, "pages_pushed", json_object_new_int64((int64_t)st.pages_pushed));
		json_object_object_add(j, "pages_pushed_ordered", json_object_new_int64((int64_t)st.pages_ordered));
		json_object_object_add(j, "bytes_sent", json_object_new_int64((int64_t)st.bytes_sent));
		json_object_object_add(j, "handshakes_evicted", json_object_new_int64((int64_t)st.evicted));
		json_object_object_add(j, "queued_peak", json_object_new_int64((int64_t)st.queued_peak));
		json_object_object_add(j, "image_changed", json_object_new_boolean(st.image_changed));
		json_object_object_add(j, "image_packed", json_object_new_boolean(st.image_packed));
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
		json_object_put(j);
	} else {
		printf("served     %.3f s: %llu sessions (%llu complete), %llu connections, %llu refused, %llu bad frames\n",
		       dt, (unsigned long long)st.sessions, (unsigned long long)st.sessions_done,
		       (unsigned long long)st.connections, (unsigned long long)st.refused,
		       (unsigned long long)st.bad_frames);
		printf("pages      %llu on demand (%llu requests), %llu pushed (%llu in a replay's order); %.1f MiB sent\n",
		       (unsigned long long)st.pages_demand, (unsigned long long)st.requests,
		       (unsigned long long)st.pages_pushed, (unsigned long long)st.pages_ordered,
		       (double)st.bytes_sent / (1 << 20));
		if (st.evicted)
			printf("evicted    %llu connections that did not finish their handshake in time for new ones\n",
			       (unsigned long long)st.evicted);
	}
	/* Destinations were refused from then on; the operator must know. */
	if (st.image_changed)
		complain("serve", "the image changed on disk while it was served: a page read back did not match its digest, and every request since was refused");
	pc_server_destroy(s);
	return ret < 0 || st.image_changed ? EXIT_FAIL : EXIT_OK;
}
