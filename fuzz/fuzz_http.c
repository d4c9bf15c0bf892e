/* SPDX-License-Identifier: MIT */
/*
 * fuzz_http.c - libFuzzer harness for what the HTTP source reads from a
 * server (src/sources/http_parse.c): the bytes are one header line, as
 * libcurl hands it to the header callback (CRLF and all), and the start
 * of an error answer's body.
 *
 * Input: byte 0 the size of the buffer the body's reason goes to (1 +
 * byte 0), the rest the line and the body.  Checks: every value is
 * NUL-terminated inside its buffer, without blanks around it; a
 * Content-Range that is accepted has A <= B < T and says exactly those
 * numbers (no digit lost to an overflow: printed back, they are the
 * header's digits without leading zeros).
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BODY_KEEP 512 /* as source_http.c keeps */

static void check_str(const char *s, size_t cap)
{
	if (!memchr(s, '\0', cap))
		abort();
}

/* The digits of @s from its start up to a non-digit, without leading zeros. */
static const char *digits(const char *s, size_t *n)
{
	while (*s == '0' && isdigit((unsigned char)s[1]))
		s++;
	*n = 0;
	while (isdigit((unsigned char)s[*n]))
		(*n)++;
	return s;
}

static void check_range(const char *v)
{
	uint64_t a, b, t;
	if (!http_content_range(v, &a, &b, &t))
		return;
	if (a > b || b >= t)
		abort();
	char want[80];
	snprintf(want, sizeof(want), "%" PRIu64 "-%" PRIu64 "/%" PRIu64, a, b, t);
	/* The header's numbers, leading zeros dropped. */
	char got[80] = "";
	const char *p = v + 6;
	size_t n, at = 0;
	for (int i = 0; i < 3; i++) {
		p = digits(p, &n);
		if (at + n + 2 > sizeof(got))
			abort(); /* a number longer than any u64 was accepted */
		memcpy(got + at, p, n);
		at += n;
		p += n;
		if (i < 2)
			got[at++] = *p++;
	}
	got[at] = '\0';
	if (strcmp(got, want))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t out_len = 1 + data[0];
	data++;
	size--;
	/* The line alone, in a buffer of its size (libcurl's is not
	 * NUL-terminated at the line's end). */
	char *line = malloc(size ? size : 1);
	if (!line)
		return 0;
	memcpy(line, data, size);

	long status = -1;
	char reason[64], val[256];
	memset(reason, 'x', sizeof(reason));
	if (http_status_line(line, size, &status, reason, sizeof(reason))) {
		check_str(reason, sizeof(reason));
		size_t m = strlen(reason);
		if (m && isspace((unsigned char)reason[m - 1]))
			abort();
		for (size_t i = 0; i < m; i++)
			if (reason[i] < 0x20 || reason[i] >= 0x7f)
				abort(); /* it goes into messages and logs */
	}
	static const char *const names[] = { "Content-Range", "ETag", "Last-Modified" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		memset(val, 'x', sizeof(val));
		if (!http_header_value(line, size, names[i], val, sizeof(val)))
			continue;
		check_str(val, sizeof(val));
		/* Blanks inside a value cut to the buffer may end it. */
		size_t m = strlen(val);
		if (m && (val[0] == ' ' || val[0] == '\t' ||
			  (m < sizeof(val) - 1 && isspace((unsigned char)val[m - 1]))))
			abort();
		if (i == 0)
			check_range(val);
	}
	/* The body as source_http.c keeps it: its first bytes, NUL-terminated. */
	size_t blen = size < BODY_KEEP - 1 ? size : BODY_KEEP - 1;
	char *body = malloc(blen + 1);
	char *out = malloc(out_len);
	if (body && out) {
		memcpy(body, data, blen);
		body[blen] = '\0';
		memset(out, 'x', out_len);
		http_body_reason(body, blen, out, out_len);
		check_str(out, out_len);
	}
	free(body);
	free(out);
	free(line);
	return 0;
}
