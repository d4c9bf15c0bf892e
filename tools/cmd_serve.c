/* SPDX-License-Identifier: MIT */
/*
 * cmd_serve.c - `postcopy serve`: the source side of a post-copy
 * migration.  Serves a raw memory image to destinations until stopped
 * (SIGINT/SIGTERM) or, with --once, until one destination has every page.
 */
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools.h"

static pc_server *running; /* for the signal handler: SIGINT stops it */

static void on_signal(int sig)
{
	(void)sig;
	if (running)
		pc_server_stop(running);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: postcopy serve --image FILE [--listen ADDR] [--key FILE | --insecure]\n"
		"\n"
		"Serve a raw memory image to post-copy destinations (postcopy restore\n"
		"--source ADDR): pages on demand, and a background push of the rest.\n"
		"\n"
		"  --image FILE      the image to serve (size a multiple of 4 KiB)\n"
		"  --listen ADDR     tcp://HOST:PORT or unix:PATH\n"
		"                    (default tcp://127.0.0.1:7070; port 0 picks one)\n"
		"  --key FILE        pre-shared key (16+ bytes, mode 600): required for TCP\n"
		"  --insecure        TCP without authentication: loopback tests only\n"
		"  --allow-uid UID   Unix socket: the uid that may connect (default: ours)\n"
		"  --once            exit after one destination has every page\n"
		"  --session-timeout S  keep a dropped destination's session S seconds\n"
		"                    (default 60)\n"
		"  --json            print the final totals as JSON\n"
		"  -h, --help        this text\n"
		"\n"
		"It prints 'listening on ADDR' on stdout once ready.\n"
		"Exit status: 0 served, 1 error, 2 bad arguments.\n");
}

int cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "image", required_argument, NULL, 'i' },
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
	struct pc_server_opts so = { .allow_uid = -1 };
	const char *key_path = NULL;
	bool json = false;
	unsigned uid, timeout_s;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i': so.image = optarg; break;
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
	if (optind < argc || !so.image) {
		complain("serve", optind < argc ? "unexpected argument" : "--image FILE is required");
		return EXIT_USAGE;
	}
	if (key_path && so.insecure) {
		complain("serve", "--key and --insecure are exclusive");
		return EXIT_USAGE;
	}
	uint8_t *key = NULL;
	if (key_path && read_key_file("serve", key_path, &key, &so.key_len) < 0)
		return EXIT_FAIL;
	so.key = key;
	if (so.insecure)
		complain("serve", "warning: --insecure: anyone who can connect gets the image");

	pc_server *s;
	char why[256];
	int ret = pc_server_create(&so, &s, why, sizeof(why));
	free(key);
	if (ret < 0) {
		complain("serve", "%s", why);
		return EXIT_FAIL;
	}
	running = s;
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	printf("listening on %s\n", pc_server_address(s));
	fflush(stdout);
	double t0 = seconds_now();
	ret = pc_server_run(s);
	double dt = seconds_now() - t0;
	running = NULL;

	struct pc_server_stats st;
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
		json_object_object_add(j, "bytes_sent", json_object_new_int64((int64_t)st.bytes_sent));
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
		json_object_put(j);
	} else {
		printf("served     %.3f s: %llu sessions (%llu complete), %llu connections, %llu refused, %llu bad frames\n",
		       dt, (unsigned long long)st.sessions, (unsigned long long)st.sessions_done,
		       (unsigned long long)st.connections, (unsigned long long)st.refused,
		       (unsigned long long)st.bad_frames);
		printf("pages      %llu on demand (%llu requests), %llu pushed; %.1f MiB sent\n",
		       (unsigned long long)st.pages_demand, (unsigned long long)st.requests,
		       (unsigned long long)st.pages_pushed, (double)st.bytes_sent / (1 << 20));
	}
	pc_server_destroy(s);
	return ret < 0 ? EXIT_FAIL : EXIT_OK;
}
