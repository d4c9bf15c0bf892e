/* SPDX-License-Identifier: MIT */
/*
 * s3_spec.c - the text behind `--source s3://BUCKET/KEY` (http_spec.c):
 * the object's URL, and a profile's keys in the shared credentials file
 * and its region in the config file.  Apart from the environment and the network, so that a fuzzer
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

/*
 * Calls @take(@arg, KEY, VALUE) for every "KEY = VALUE" line of section
 * [@section] in @f, read as the AWS CLI reads its files: blanks around
 * names and values, # and ; comments.  *@found: the section was there.
 * 0, or what @take returned first that was not 0.
 */
static int ini_section(FILE *f, const char *section,
		       int (*take)(void *arg, const char *k, const char *v),
		       void *arg, bool *found)
{
	/* Lines of any length: fgets() into a fixed buffer would read the
	 * rest of a long one (a comment, say) as a line of its own. */
	char *line = NULL;
	size_t cap = 0;
	bool in = false;
	int ret = 0;
	*found = false;
	while (ret == 0 && getline(&line, &cap, f) >= 0) {
		char *s = trim(line);
		if (*s == '#' || *s == ';' || !*s)
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			if (end)
				*end = '\0';
			in = end && !strcmp(trim(s + 1), section);
			*found |= in;
			continue;
		}
		char *eq = strchr(s, '=');
		if (!in || !eq)
			continue;
		*eq = '\0';
		char *v = trim(eq + 1);
		if (*v)
			ret = take(arg, trim(s), v);
	}
	if (line) /* it may have held secrets */
		memset(line, 0, cap);
	free(line);
	return ret;
}

/* *@slot = a copy of @v; -ENOMEM. */
static int set_copy(char **slot, const char *v)
{
	free(*slot);
	*slot = strdup(v);
	return *slot ? 0 : -ENOMEM;
}

static int take_creds(void *arg, const char *k, const char *v)
{
	struct aws_creds *c = arg;
	if (!strcmp(k, "aws_access_key_id"))
		return set_copy(&c->access_key, v);
	if (!strcmp(k, "aws_secret_access_key"))
		return set_copy(&c->secret_key, v);
	if (!strcmp(k, "aws_session_token"))
		return set_copy(&c->session_token, v);
	return 0;
}

int aws_creds_parse(FILE *f, const char *profile, struct aws_creds *c,
		    bool *found)
{
	int ret = ini_section(f, profile, take_creds, c, found);
	if (ret == 0 && c->access_key && c->secret_key)
		return 0;
	aws_creds_free(c);
	return ret < 0 ? ret : -EINVAL;
}

static int take_region(void *arg, const char *k, const char *v)
{
	return strcmp(k, "region") ? 0 : set_copy(arg, v);
}

int aws_config_region(FILE *f, const char *profile, char **region)
{
	char section[512];
	bool found;
	*region = NULL;
	/* The config file names its profiles "profile NAME", but the
	 * default one "default". */
	if (snprintf(section, sizeof(section), "%s%s",
		     strcmp(profile, "default") ? "profile " : "", profile) >=
	    (int)sizeof(section))
		return -ENOENT;
	int ret = ini_section(f, section, take_region, region, &found);
	if (ret < 0) {
		free(*region);
		*region = NULL;
		return ret;
	}
	return *region ? 0 : -ENOENT;
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

/* An object key a URL names as it is: not empty, and no "." or ".."
 * segment, which the URL's path would resolve (RFC 3986), naming another
 * object, or under an endpoint another bucket's. */
bool s3_key_ok(const char *k)
{
	if (!*k)
		return false;
	for (const char *seg = k;;) {
		size_t n = strcspn(seg, "/");
		if ((n == 1 && seg[0] == '.') || (n == 2 && !strncmp(seg, "..", 2)))
			return false;
		if (!seg[n])
			return true;
		seg += n + 1;
	}
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
	if (!s3_key_ok(slash + 1)) {
		snprintf(why, why_len, "%s: an object key, not empty and without '.' or '..' segments (a URL would resolve them to another object)",
			 source);
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
