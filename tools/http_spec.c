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

/*
 * The keys of profile $AWS_PROFILE (else "default") in the shared
 * credentials file, $AWS_SHARED_CREDENTIALS_FILE or else
 * ~/.aws/credentials, read as the AWS CLI reads it: [NAME] sections of
 * "key = value" lines, # and ; comments.  0 with both keys; -ENOENT when
 * there is no such file (the caller's message then names the variables);
 * another negative errno with the reason in @why.
 */
static int read_shared_credentials(struct aws_creds *c, char *why, size_t why_len)
{
	const char *file = env("AWS_SHARED_CREDENTIALS_FILE"), *home = env("HOME");
	const char *profile = env("AWS_PROFILE") ? env("AWS_PROFILE") : "default";
	char path[4096];
	if (!file && !home)
		return -ENOENT;
	snprintf(path, sizeof(path), "%s%s", file ? file : home,
		 file ? "" : "/.aws/credentials");
	FILE *f = fopen(path, "re");
	if (!f) {
		int err = errno;
		if (err == ENOENT && !file)
			return -ENOENT;
		snprintf(why, why_len, "%s: %s", path, strerror(err));
		return -err;
	}
	bool found = false;
	int ret = aws_creds_parse(f, profile, c, &found);
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
	char *url = NULL;
	struct aws_creds file = { 0 };
	int ret;

	if (!strncmp(h->source, "s3://", 5)) {
		const char *region = h->s3_region ? h->s3_region :
				     env("AWS_REGION") ? env("AWS_REGION") :
				     env("AWS_DEFAULT_REGION") ? env("AWS_DEFAULT_REGION") :
								 "us-east-1";
		/* The names first: no secret is read for a URL that is refused. */
		ret = s3_url(h->source, h->s3_endpoint, region, &url, why, why_len);
		if (ret < 0)
			return ret;
		ho.url = url;
		ho.access_key = env("AWS_ACCESS_KEY_ID");
		ho.secret_key = env("AWS_SECRET_ACCESS_KEY");
		ho.session_token = env("AWS_SESSION_TOKEN");
		ho.s3_region = region;
		/* As the AWS CLI: the variables, else the shared file. */
		if (!ho.access_key && !ho.secret_key) {
			ret = read_shared_credentials(&file, why, why_len);
			if (ret < 0 && ret != -ENOENT) {
				free(url);
				return ret;
			}
			ho.access_key = file.access_key;
			ho.secret_key = file.secret_key;
			ho.session_token = file.session_token;
		}
		if (!ho.access_key || !ho.secret_key) {
			snprintf(why, why_len, "%s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), or a [default] profile (or AWS_PROFILE's) in ~/.aws/credentials (or AWS_SHARED_CREDENTIALS_FILE); a presigned URL goes as https://",
				 h->source);
			free(url);
			return -EINVAL;
		}
	}
	ret = pc_source_http(&ho, src, why, why_len);
	aws_creds_free(&file); /* the source keeps copies */
	if (ret < 0 && !why[0])
		snprintf(why, why_len, "%s: %s", h->source, strerror(-ret));
	free(url);
	return ret;
}

const char *http_error(pc_source *src, char *buf, size_t len)
{
	if (pc_http_last_error(src, buf, len) < 0 || !buf[0])
		return NULL;
	return buf;
}
