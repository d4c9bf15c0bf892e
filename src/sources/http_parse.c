/* SPDX-License-Identifier: MIT */
/*
 * http_parse.c - reading a server's answer for the HTTP source
 * (source_http.c): the status line, the headers it looks at and the
 * reason in an error's body.  Everything here is the server's word.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_parse.h"

bool http_status_line(const char *line, size_t n, long *status, char *reason,
		      size_t rlen)
{
	if (n <= 5 || strncmp(line, "HTTP/", 5))
		return false;
	const char *sp = memchr(line, ' ', n), *end = line + n;
	/* Not strtol(): the line is not NUL-terminated, and may end in its
	 * digits.  Six digits at most: a code is three. */
	long st = 0;
	for (const char *d = sp ? sp + 1 : end; d < end && isdigit((unsigned char)*d) &&
						  st < 100000; d++)
		st = st * 10 + (*d - '0');
	*status = st;
	reason[0] = '\0';
	if (sp && (size_t)(sp - line) + 5 < n) {
		/* One line of printable text: it goes into messages and logs,
		 * so no NUL, CR, LF or escape of the server's gets there. */
		size_t m = 0;
		for (const char *r = sp + 5; r < end && m < rlen - 1; r++) {
			if (*r == '\0' || *r == '\r' || *r == '\n')
				break;
			reason[m++] = *r == '\t' ? ' ' : *r >= 0x20 && *r < 0x7f ? *r : '?';
		}
		while (m && reason[m - 1] == ' ')
			m--;
		reason[m] = '\0';
	}
	return true;
}

bool http_header_value(const char *line, size_t n, const char *name,
		       char *val, size_t vlen)
{
	size_t k = strlen(name);
	if (n <= k || strncasecmp(line, name, k) || line[k] != ':')
		return false;
	const char *v = line + k + 1, *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && isspace((unsigned char)end[-1]))
		end--;
	size_t m = (size_t)(end - v) < vlen - 1 ? (size_t)(end - v) : vlen - 1;
	/* A NUL inside would cut the value short where it is compared (two
	 * ETags that differ after it would match): no value then. */
	if (memchr(v, '\0', (size_t)(end - v)))
		m = 0;
	memcpy(val, v, m);
	val[m] = '\0';
	return true;
}

/* A decimal number at *@p, moving *@p past it: false when there is no
 * digit or it does not fit in 64 bits (strtoull() would give
 * ULLONG_MAX for it, a size the server never said). */
static bool get_u64(const char **p, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;
	if (!isdigit((unsigned char)*s))
		return false;
	for (; isdigit((unsigned char)*s); s++)
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
			return false;
	*p = s;
	*out = v;
	return true;
}

bool http_content_range(const char *v, uint64_t *a, uint64_t *b, uint64_t *t)
{
	if (strncasecmp(v, "bytes ", 6))
		return false;
	v += 6;
	if (!get_u64(&v, a) || *v++ != '-' || !get_u64(&v, b) || *v++ != '/' ||
	    !get_u64(&v, t))
		return false;
	return *v == '\0' && *a <= *b && *b < *t;
}

void http_body_reason(const char *body, size_t body_len, char *out, size_t len)
{
	const char *m = strstr(body, "<Message>");
	const char *c = strstr(body, "<Code>");
	if (m || c) {
		int cl = 0, ml = 0;
		if (c) {
			c += 6;
			const char *e = strstr(c, "</Code>");
			cl = e ? (int)(e - c) : 0;
		}
		if (m) {
			m += 9;
			const char *e = strstr(m, "</Message>");
			ml = e ? (int)(e - m) : 0;
		}
		snprintf(out, len, ": %.*s%s%.*s", cl, c ? c : "",
			 cl && ml ? ": " : "", ml, m ? m : "");
		return;
	}
	size_t j = 0;
	bool space = true, tag = false;
	if (len < 3) {
		/* No room for ": x": nothing, but still a string. */
		if (len)
			out[0] = '\0';
		return;
	}
	out[j++] = ':';
	for (size_t i = 0; i < body_len && j < len - 2; i++) {
		char ch = body[i];
		if (ch == '<')
			tag = true;
		if (!tag && !isspace((unsigned char)ch) && isprint((unsigned char)ch)) {
			if (space)
				out[j++] = ' ';
			if (j < len - 1)
				out[j++] = ch;
			space = false;
		} else if (!tag) {
			space = true;
		}
		if (ch == '>') {
			tag = false;
			space = true;
		}
	}
	out[j > 1 ? j : 0] = '\0';
}
