/* SPDX-License-Identifier: MIT */
/*
 * source_http_none.c - the HTTP source in a build without libcurl (the
 * static KVM build, or -Dhttp=disabled): the same calls, which say so.
 */
#include <errno.h>
#include <stdio.h>

#include "internal.h"

int pc_source_http(const struct pc_http_opts *opts, pc_source **out,
		   char *why, size_t why_len)
{
	(void)opts;
	(void)out;
	if (why && why_len)
		snprintf(why, why_len, "this libpostcopy was built without libcurl (meson -Dhttp=enabled)");
	return -EOPNOTSUPP;
}

int pc_http_get_stats(pc_source *src, struct pc_http_stats *out)
{
	(void)src;
	(void)out;
	return -EINVAL;
}

int pc_http_last_error(pc_source *src, char *buf, size_t len)
{
	(void)src;
	(void)buf;
	(void)len;
	return -EINVAL;
}
