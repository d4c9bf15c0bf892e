/* SPDX-License-Identifier: MIT */
/*
 * http_parse.h - what the HTTP source reads from a server's answer (its
 * status line, headers and an error's body), apart from libcurl so that
 * a fuzzer (fuzz/fuzz_http.c) drives it with bytes alone.
 */
#ifndef PC_HTTP_PARSE_H
#define PC_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* @line (@n bytes, not NUL-terminated) is a status line "HTTP/...": its
 * code into @status (0 when there is none) and its reason phrase into
 * @reason (printable ASCII, '?' for other bytes, up to the line's end or
 * a NUL, cut to @rlen - 1 bytes). */
bool http_status_line(const char *line, size_t n, long *status, char *reason,
		      size_t rlen);

/* @line (@n bytes, not NUL-terminated) is header @name: its value, without
 * the blanks around it, into @val (cut to @vlen - 1 bytes; "" when it
 * holds a NUL byte). */
bool http_header_value(const char *line, size_t n, const char *name,
		       char *val, size_t vlen);

/* @v is a Content-Range "bytes A-B/T" with A <= B < T. */
bool http_content_range(const char *v, uint64_t *a, uint64_t *b, uint64_t *t);

/* The server's reason from the start of an error answer's body (@len
 * bytes, NUL-terminated): S3's <Code> and <Message>, else the text on one
 * line, as ": ..." into @out ("" when there is none). */
void http_body_reason(const char *body, size_t len, char *out, size_t out_len);

#endif
