/* SPDX-License-Identifier: MIT */
/*
 * http_spec.c - `--source http://...|https://...|s3://BUCKET/KEY` for the
 * CLI: an s3:// name becomes a URL (path style under --s3-endpoint,
 * virtual-hosted style on AWS), signed with the credentials of the
 * standard AWS variables, else of the shared credentials file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

bool is_http_spec(const char *s)
{
	return s && (!strncasecmp(s, "http://", 7) || !strncasecmp(s, "https://", 8) ||
		     !strncmp(s, "s3://", 5));
}

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

static const char *aws_profile(void)
{
	return env("AWS_PROFILE") ? env("AWS_PROFILE") : "default";
}

/* The AWS CLI's file $@var, else ~/@name, opened into *@f, its path in
 * @path: 0; -ENOENT when the default one is not there; another negative
 * errno with the reason in @why. */
static int open_aws_file(const char *var, const char *name, FILE **f,
			 char *path, size_t path_len, char *why, size_t why_len)
{
	const char *file = env(var), *home = env("HOME");
	if (!file && !home)
		return -ENOENT;
	snprintf(path, path_len, "%s%s%s", file ? file : home, file ? "" : "/",
		 file ? "" : name);
	*f = fopen(path, "re");
	if (*f)
		return 0;
	int err = errno;
	if (err == ENOENT && !file)
		return -ENOENT;
	snprintf(why, why_len, "%s: %s", path, strerror(err));
	return -err;
}

/*
 * The keys of profile $AWS_PROFILE (else "default") in the shared
 * credentials file, $AWS_SHARED_CREDENTIALS_FILE or else
 * ~/.aws/credentials.  0 with both keys; -ENOENT when there is no such
 * file (the caller's message then names the variables); another negative
 * errno with the reason in @why.
 */
static int read_shared_credentials(struct aws_creds *c, char *why, size_t why_len)
{
	const char *profile = aws_profile();
	char path[4096];
	FILE *f;
	int ret = open_aws_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials",
				&f, path, sizeof(path), why, why_len);
	if (ret < 0)
		return ret;
	bool found = false;
	ret = aws_creds_parse(f, profile, c, &found);
	fclose(f);
	if (ret < 0 && ret != -EINVAL) {
		snprintf(why, why_len, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (ret == 0)
		return 0;
	snprintf(why, why_len, found ? "%s: profile [%s] has no aws_access_key_id and aws_secret_access_key" :
				       "%s: no profile [%s] (AWS_PROFILE)", path, profile);
	return -EINVAL;
}

/*
 * The signing region, as the AWS CLI finds it: $AWS_REGION,
 * $AWS_DEFAULT_REGION, the profile's "region" in the config file
 * ($AWS_CONFIG_FILE, else ~/.aws/config), else us-east-1; into *@owned
 * when read from the file.  0, or a negative errno with the reason in @why.
 */
static int find_region(const char **region, char **owned, char *why, size_t why_len)
{
	char path[4096];
	FILE *f;
	*owned = NULL;
	*region = env("AWS_REGION") ? env("AWS_REGION") : env("AWS_DEFAULT_REGION");
	if (*region)
		return 0;
	int ret = open_aws_file("AWS_CONFIG_FILE", ".aws/config", &f, path,
				sizeof(path), why, why_len);
	if (ret == 0) {
		ret = aws_config_region(f, aws_profile(), owned);
		fclose(f);
		if (ret == -ENOMEM) {
			snprintf(why, why_len, "%s: %s", path, strerror(-ret));
			return ret;
		}
	} else if (ret != -ENOENT) {
		return ret;
	}
	*region = *owned ? *owned : "us-east-1";
	return 0;
}

bool http_flags_ok(const char *cmd, const struct http_spec *h)
{
	bool s3 = h->source && !strncmp(h->source, "s3://", 5);
	if ((h->s3_endpoint || h->s3_region) && !s3) {
		complain(cmd, "--s3-endpoint and --s3-region go with --source s3://BUCKET/KEY");
		return false;
	}
	if (h->timeout_ms && !is_http_spec(h->source)) {
		complain(cmd, "--http-timeout goes with an http://, https:// or s3:// --source");
		return false;
	}
	if (h->ca_file) {
		bool tls = h->source && (!strncasecmp(h->source, "https://", 8) ||
					 (s3 && (!h->s3_endpoint ||
						 !strncasecmp(h->s3_endpoint, "https://", 8))));
		if (!tls) {
			complain(cmd, "--http-ca goes with an https:// --source, or s3:// over https");
			return false;
		}
		if (check_input_file(cmd, "--http-ca", h->ca_file) != EXIT_OK)
			return false;
	}
	if (s3) {
		const char *slash = strchr(h->source + 5, '/');
		if (!slash || slash == h->source + 5 || !slash[1]) {
			complain(cmd, "--source %s: want s3://BUCKET/KEY", h->source);
			return false;
		}
		if (!s3_bucket_ok(h->source + 5, (size_t)(slash - h->source - 5))) {
			complain(cmd, "--source %s: a bucket name holds letters, digits, '.', '-' and '_', from a letter or digit to a letter or digit",
				 h->source);
			return false;
		}
		if (!s3_key_ok(slash + 1)) {
			complain(cmd, "--source %s: an object key without '.' or '..' segments (a URL would resolve them to another object)",
				 h->source);
			return false;
		}
	}
	if (h->s3_region && !s3_region_ok(h->s3_region)) {
		complain(cmd, "--s3-region %s: letters, digits, '-' and '_' only", h->s3_region);
		return false;
	}
	if (h->s3_endpoint && strncasecmp(h->s3_endpoint, "http://", 7) &&
	    strncasecmp(h->s3_endpoint, "https://", 8)) {
		complain(cmd, "--s3-endpoint %s: want http://HOST[:PORT] or https://...",
			 h->s3_endpoint);
		return false;
	}
	return true;
}

int open_http_source(const struct http_spec *h, unsigned connections,
		     pc_source **src, char *why, size_t why_len)
{
	struct pc_http_opts ho = {
		.url = h->source,
		.timeout_ms = h->timeout_ms,
		.max_connections = connections,
		.ca_file = h->ca_file,
	};
	char *url = NULL, *region_file = NULL;
	struct aws_creds file = { 0 };
	int ret;

	if (!strncmp(h->source, "s3://", 5)) {
		const char *region = h->s3_region;
		if (!region && (ret = find_region(&region, &region_file, why, why_len)) < 0)
			goto out;
		/* The names first: no secret is read for a URL that is refused. */
		ret = s3_url(h->source, h->s3_endpoint, region, &url, why, why_len);
		if (ret < 0)
			goto out;
		ho.url = url;
		ho.access_key = env("AWS_ACCESS_KEY_ID");
		ho.secret_key = env("AWS_SECRET_ACCESS_KEY");
		ho.session_token = env("AWS_SESSION_TOKEN");
		ho.s3_region = region;
		/* As the AWS CLI: the variables, else the shared file. */
		if (!ho.access_key && !ho.secret_key) {
			ret = read_shared_credentials(&file, why, why_len);
			if (ret < 0 && ret != -ENOENT)
				goto out;
			ho.access_key = file.access_key;
			ho.secret_key = file.secret_key;
			ho.session_token = file.session_token;
		}
		if (!ho.access_key || !ho.secret_key) {
			snprintf(why, why_len, "%s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), or a [default] profile (or AWS_PROFILE's) in ~/.aws/credentials (or AWS_SHARED_CREDENTIALS_FILE); a presigned URL goes as https://",
				 h->source);
			ret = -EINVAL;
			goto out;
		}
	}
	ret = pc_source_http(&ho, src, why, why_len);
	if (ret < 0 && !why[0])
		snprintf(why, why_len, "%s: %s", h->source, strerror(-ret));
out:
	aws_creds_free(&file); /* the source keeps copies */
	free(region_file);
	free(url);
	return ret;
}

const char *http_error(pc_source *src, char *buf, size_t len)
{
	if (pc_http_last_error(src, buf, len) < 0 || !buf[0])
		return NULL;
	return buf;
}
