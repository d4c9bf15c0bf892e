/* SPDX-License-Identifier: MIT */
/*
 * s3_spec.c - the text behind `--source s3://BUCKET/KEY` (http_spec.c):
 * the object's URL, and the keys of a profile in a shared credentials
 * file.  Apart from the environment and the network, so that a fuzzer
 * (fuzz/fuzz_s3.c) drives them with bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

/* @key with every byte but unreserved ones and '/' percent-encoded. */
static char *escape_key(const char *key)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(key) * 3 + 1), *o = out;
	if (!out)
		return NULL;
	for (const unsigned char *k = (const unsigned char *)key; *k; k++) {
		if ((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') ||
		    (*k >= '0' && *k <= '9') || strchr("-._~/", *k)) {
			*o++ = (char)*k;
		} else {
			*o++ = '%';
			*o++ = hex[*k >> 4];
			*o++ = hex[*k & 15];
		}
	}
	*o = '\0';
	return out;
}

void aws_creds_free(struct aws_creds *c)
{
	if (c->secret_key) /* secrets: wiped before they are freed */
		memset(c->secret_key, 0, strlen(c->secret_key));
	if (c->session_token)
		memset(c->session_token, 0, strlen(c->session_token));
	free(c->access_key);
	free(c->secret_key);
	free(c->session_token);
	*c = (struct aws_creds){ 0 };
}

/* @s without the blanks around it, in place. */
static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && strchr(" \t\r\n", s[n - 1]))
		s[--n] = '\0';
	return s;
}

int aws_creds_parse(FILE *f, const char *profile, struct aws_creds *c,
		    bool *found)
{
	/* Lines of any length: fgets() into a fixed buffer would read the
	 * rest of a long one (a comment, say) as a line of its own. */
	char *line = NULL;
	size_t cap = 0;
	bool in = false, oom = false;
	*found = false;
	while (getline(&line, &cap, f) >= 0) {
		char *s = trim(line);
		if (*s == '#' || *s == ';' || !*s)
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			if (end)
				*end = '\0';
			in = end && !strcmp(trim(s + 1), profile);
			*found |= in;
			continue;
		}
		char *eq = strchr(s, '=');
		if (!in || !eq)
			continue;
		*eq = '\0';
		char *k = trim(s), *v = trim(eq + 1), **slot = NULL;
		if (!strcmp(k, "aws_access_key_id"))
			slot = &c->access_key;
		else if (!strcmp(k, "aws_secret_access_key"))
			slot = &c->secret_key;
		else if (!strcmp(k, "aws_session_token"))
			slot = &c->session_token;
		if (slot && *v) {
			free(*slot);
			*slot = strdup(v);
			oom |= !*slot;
		}
	}
	if (line) /* it held secrets */
		memset(line, 0, cap);
	free(line);
	if (c->access_key && c->secret_key && !oom)
		return 0;
	aws_creds_free(c);
	return oom ? -ENOMEM : -EINVAL;
}

static bool alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* S3's bucket names (with the legacy ones' capitals, '_' and length):
 * nothing that a URL would read as a delimiter, so a name cannot take
 * the request, signed, to another host ("evil.example#") or bucket
 * (".." under an endpoint). */
bool s3_bucket_ok(const char *b, size_t n)
{
	if (n < 1 || n > 255 || !alnum(b[0]) || !alnum(b[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!alnum(b[i]) && !strchr("._-", b[i]))
			return false;
	return true;
}

/* A region name goes into the host on AWS and into the signature's scope
 * everywhere: letters, digits, '-' and '_'. */
bool s3_region_ok(const char *r)
{
	size_t n = strlen(r);
	if (n < 1 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!alnum(r[i]) && r[i] != '-' && r[i] != '_')
			return false;
	return true;
}

int s3_url(const char *source, const char *endpoint, const char *region,
	   char **url, char *why, size_t why_len)
{
	const char *bucket = source + 5, *slash = strchr(bucket, '/');
	if (!s3_bucket_ok(bucket, (size_t)(slash - bucket))) {
		snprintf(why, why_len, "%s: a bucket name holds letters, digits, '.', '-' and '_', from a letter or digit to a letter or digit",
			 source);
		return -EINVAL;
	}
	if (!s3_region_ok(region)) {
		snprintf(why, why_len, "S3 region '%s': letters, digits, '-' and '_' only",
			 region);
		return -EINVAL;
	}
	char *key = escape_key(slash + 1);
	if (!key) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	int bl = (int)(slash - bucket), ret;
	if (endpoint) {
		size_t el = strlen(endpoint);
		while (el && endpoint[el - 1] == '/')
			el--;
		ret = asprintf(url, "%.*s/%.*s/%s", (int)el, endpoint, bl, bucket, key);
	} else {
		ret = asprintf(url, "https://%.*s.s3.%s.amazonaws.com/%s", bl, bucket,
			       region, key);
	}
	free(key);
	if (ret < 0) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	return 0;
}
