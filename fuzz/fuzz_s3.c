/* SPDX-License-Identifier: MIT */
/*
 * fuzz_s3.c - libFuzzer harness for the text behind `--source
 * s3://BUCKET/KEY` (tools/s3_spec.c): the shared credentials file and the
 * object's URL.
 *
 * Input: byte 0 bit 0 clear: a credentials file, the rest being the
 * profile's name, a newline and the file (read through fmemopen()).  Every
 * key that is accepted must be the value of a line of the file that starts
 * with its name ("name = value", blanks around either).
 *
 * Bit 0 set: the rest is "BUCKET/KEY\nENDPOINT\nREGION" (an empty
 * endpoint: AWS, virtual-hosted; an empty region: us-east-1), taken only
 * when http_flags_ok() would take it (a bucket and a key; an http:// or
 * https:// endpoint).  A URL that is made must not let the names move the
 * request elsewhere: on AWS the host is BUCKET.s3.REGION.amazonaws.com of
 * host-name bytes only, under an endpoint the bucket is one path segment
 * of such bytes (not "." or ".."), what follows the endpoint has no
 * byte a URL would take as a delimiter or a blank, and the key no "." or
 * ".." segment.  The credentials input is also read as a config file: a
 * region found must be the value of a "region" line.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Some line of @file is "@key = @value" (blanks around each part). */
static bool has_line(const char *file, size_t len, const char *key, const char *value)
{
	size_t kl = strlen(key), vl = strlen(value);
	for (const char *l = file, *end = file + len; l < end;) {
		const char *nl = memchr(l, '\n', (size_t)(end - l));
		const char *le = nl ? nl : end, *p = l;
		while (p < le && blank(*p))
			p++;
		if ((size_t)(le - p) > kl && !memcmp(p, key, kl)) {
			/* The name is trimmed of CRs too (trim() at its end). */
			p += kl;
			while (p < le && (blank(*p) || *p == '\r'))
				p++;
			if (p < le && *p == '=') {
				p++;
				while (p < le && blank(*p))
					p++;
				const char *q = le;
				while (q > p && (blank(q[-1]) || q[-1] == '\r'))
					q--;
				if ((size_t)(q - p) == vl && !memcmp(p, value, vl))
					return true;
			}
		}
		l = le + 1;
	}
	return false;
}

static void fuzz_creds(const char *in, size_t len)
{
	const char *nl = memchr(in, '\n', len);
	if (!nl || memchr(in, '\0', len))
		return;
	char profile[256];
	size_t pl = (size_t)(nl - in);
	if (pl >= sizeof(profile))
		return;
	memcpy(profile, in, pl);
	profile[pl] = '\0';
	const char *file = nl + 1;
	size_t flen = len - pl - 1;
	if (!flen)
		return;
	char *copy = malloc(flen);
	if (!copy)
		return;
	memcpy(copy, file, flen);
	FILE *f = fmemopen(copy, flen, "r");
	if (!f) {
		free(copy);
		return;
	}
	struct aws_creds c = { 0 };
	bool found = false;
	int ret = aws_creds_parse(f, profile, &c, &found);
	fclose(f);
	if (ret == 0) {
		if (!c.access_key || !c.secret_key || !found ||
		    !has_line(copy, flen, "aws_access_key_id", c.access_key) ||
		    !has_line(copy, flen, "aws_secret_access_key", c.secret_key) ||
		    (c.session_token &&
		     !has_line(copy, flen, "aws_session_token", c.session_token)))
			abort();
	} else if (ret != -EINVAL && ret != -ENOMEM) {
		abort();
	} else if (c.access_key || c.secret_key || c.session_token) {
		abort();
	}
	aws_creds_free(&c);
	/* The same text as a config file: a region found is a line's value. */
	f = fmemopen(copy, flen, "r");
	if (f) {
		char *region = NULL;
		ret = aws_config_region(f, profile, &region);
		fclose(f);
		if (ret == 0 ? !region || !has_line(copy, flen, "region", region) :
			       (ret != -ENOENT && ret != -ENOMEM) || region)
			abort();
		free(region);
	}
	free(copy);
}

static bool host_byte(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool path_byte(char c)
{
	return host_byte(c) || c == '~' || c == '/' || c == '%';
}

/* Path @p has a "." or ".." segment, which a URL resolves away. */
static bool dot_segment(const char *p)
{
	for (const char *seg = p;; seg++) {
		size_t n = strcspn(seg, "/");
		if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return true;
		seg += n;
		if (!*seg)
			return false;
	}
}

static void check_url(const char *url, const char *endpoint, size_t el)
{
	const char *p;
	if (!endpoint) {
		static const char suffix[] = ".amazonaws.com";
		if (strncmp(url, "https://", 8))
			abort();
		const char *host = url + 8, *slash = strchr(host, '/');
		if (!slash || (size_t)(slash - host) < sizeof(suffix) - 1 ||
		    memcmp(slash - (sizeof(suffix) - 1), suffix, sizeof(suffix) - 1))
			abort();
		for (p = host; p < slash; p++)
			if (!host_byte(*p))
				abort();
		p = slash;
	} else {
		if (strncmp(url, endpoint, el) || url[el] != '/')
			abort();
		const char *seg = url + el + 1, *slash = strchr(seg, '/');
		if (!slash || (slash - seg == 1 && seg[0] == '.') ||
		    (slash - seg == 2 && seg[0] == '.' && seg[1] == '.'))
			abort();
		for (p = seg; p < slash; p++)
			if (!host_byte(*p))
				abort();
	}
	if (dot_segment(p + 1))
		abort();
	for (; *p; p++)
		if (!path_byte(*p))
			abort();
}

static void fuzz_url(const char *in, size_t len)
{
	/* Three NUL-terminated parts. */
	char *buf = malloc(len + 1);
	if (!buf)
		return;
	memcpy(buf, in, len);
	buf[len] = '\0';
	if (strlen(buf) != len) {
		free(buf);
		return;
	}
	char *part[3] = { buf, NULL, NULL };
	for (int i = 1; i < 3; i++) {
		char *nl = strchr(part[i - 1], '\n');
		if (!nl) {
			free(buf);
			return;
		}
		*nl = '\0';
		part[i] = nl + 1;
	}
	char *source = NULL;
	if (asprintf(&source, "s3://%s", part[0]) < 0) {
		free(buf);
		return;
	}
	const char *endpoint = part[1][0] ? part[1] : NULL;
	const char *region = part[2][0] ? part[2] : "us-east-1";
	/* What http_flags_ok() lets through. */
	const char *slash = strchr(source + 5, '/');
	bool ok = slash && slash != source + 5 && slash[1] &&
		  (!endpoint || !strncasecmp(endpoint, "http://", 7) ||
		   !strncasecmp(endpoint, "https://", 8));
	if (ok) {
		char *url = NULL, why[256] = "";
		int ret = s3_url(source, endpoint, region, &url, why, sizeof(why));
		if (ret == 0) {
			size_t el = endpoint ? strlen(endpoint) : 0;
			while (el && endpoint[el - 1] == '/')
				el--;
			check_url(url, endpoint, el);
		} else if ((ret != -EINVAL && ret != -ENOMEM) || !why[0]) {
			abort();
		}
		free(url);
	}
	free(source);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_url((const char *)data + 1, size - 1);
	else
		fuzz_creds((const char *)data + 1, size - 1);
	return 0;
}
