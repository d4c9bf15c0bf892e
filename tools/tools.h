/* SPDX-License-Identifier: MIT */
/*
 * tools.h - what the CLI's subcommands share: option parsing helpers, the
 * vCPU workload, verification, and output.
 */
#ifndef PC_TOOLS_H
#define PC_TOOLS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "hist.h"
#include "postcopy.h"

/* Exit codes of every subcommand (documented in --help). */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,	/* runtime error or verification failure */
	EXIT_USAGE = 2, /* bad command line */
};

/* ---- util.c ---- */
/* Parse "4096", "64K", "16M", "1G" (binary units).  0 on success. */
int parse_size(const char *s, uint64_t *out);
/* Parse an unsigned integer in [min, max].  0 on success. */
int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out);
/* Parse a fault window: "auto" (PC_WINDOW_AUTO) or 1..512 pages.  0 on
 * success. */
int parse_window(const char *s, unsigned *out);
/* A window as the commands print it: "auto" or the page count. */
const char *window_str(unsigned window, char *buf, size_t len);
/* "postcopy CMD: bad WHAT 'ARG' (see --help)"; returns EXIT_USAGE. */
int bad_arg(const char *cmd, const char *what, const char *arg);

/*
 * The options bench and kvm-bench share, after the KVM selftest:
 * -v vCPUs, -b bytes per vCPU, -s backend, -r readers, -a one
 * userfaultfd, -d delay (us), and the long options --cold ('C'), --seed
 * ('S') and --json ('j').
 */
struct memstress_opts {
	unsigned vcpus;
	uint64_t per_vcpu;
	enum pc_backend backend;
	unsigned readers;
	bool one_uffd;
	unsigned delay_us;
	bool cold;
	uint64_t seed;
	bool json;
	unsigned uffds; /* userfaultfds the region gets: the command derives it */
};
/* 1 vCPU of @per_vcpu bytes, shmem, 1 reader, seed 1. */
void memstress_defaults(struct memstress_opts *m, uint64_t per_vcpu);
/* Take option @c: 0 taken, EXIT_USAGE for a bad value (said why), -1 not
 * one of these. */
int memstress_opt(const char *cmd, int c, const char *arg, unsigned max_vcpus,
		  struct memstress_opts *m);

/* A pattern seed: decimal, 0x hex or 0 octal.  0 on success. */
int parse_seed(const char *s, uint64_t *out);
/* Is @bytes (-b) a whole number of @backend's pages?  Says why not. */
bool page_multiple_ok(const char *cmd, enum pc_backend backend, uint64_t bytes);
int parse_backend(const char *s, enum pc_backend *out);
const char *backend_str(enum pc_backend b);
int parse_mode(const char *s, enum pc_mode *out);
const char *mode_str(enum pc_mode m);
/* "wait (U userfaultfds x R readers)", into @buf. */
const char *wait_desc(char *buf, size_t len, unsigned uffds, unsigned readers);
/* "postcopy <cmd>: <message>" on stderr. */
void complain(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The monotonic clock, in ns and in seconds. */
uint64_t ns_now(void);
double seconds_now(void);

/* Pages in the background for a started region: the filler, or with a
 * postcopy server's source (@push_src) its push. */
int start_background(pc_source *push_src, pc_region *r);
/* pc_ws_save() of a recorder; *@pages is what the written file holds
 * (read back: a recorder does not count itself), 0 if it cannot be read. */
int save_working_set(const pc_ws *rec, const char *path, uint64_t *pages);
/* Create and start a region over @src (owned from here on); says why on
 * failure, and then nothing is left to destroy. */
int start_region(const char *cmd, const struct pc_region_opts *ro,
		 pc_source *src, pc_region **out);

/* ---- workload.c: vCPU threads touching guest memory ---- */
/* ORDER_STRIDE: every STRIDE_PAGES-th page, wrapping (a prime, so each
 * page comes once per pass). */
enum access_order { ORDER_SEQ, ORDER_RANDOM, ORDER_STRIDE, ORDER_WS };
#define STRIDE_PAGES 7919u

/* ORDER_WS (ws_workload.c): a working set drawn around a base set. */
struct ws_params {
	double fraction;   /* of memory in the working set (default 0.1) */
	double similarity; /* Jaccard similarity of two runs (default 0.93) */
	double next_page;  /* chance the next touch is the next page (0.09) */
	uint64_t seed;	   /* the run */
	uint64_t base;	   /* the base working set every run is drawn around */
};
#define WS_PARAMS_DEFAULT { .fraction = 0.1, .similarity = 0.93, .next_page = 0.09, .seed = 1 }
/*
 * The pages each of @vcpus vCPUs touches, in order: order[v] (malloc'ed,
 * count[v] pages).  *next_share: how often the next touch of the run (all
 * vCPUs together) is the next page.
 */
int ws_orders(const struct ws_params *p, uint64_t pages, unsigned vcpus,
	      uint64_t **order, uint64_t *count, double *next_share);

struct workload {
	char *mem;
	uint64_t size;
	unsigned vcpus;
	bool overlap; /* every vCPU touches all memory, not its slice */
	bool write;   /* write one word per page (bench) or read (restore) */
	bool read_too; /* with write: read another word of the page first */
	/* A guest under load: go over the slice again and again until the
	 * region is complete, then once more (so every page was written). */
	bool until_complete;
	enum access_order order;
	const struct ws_params *ws; /* ORDER_WS */
	pc_region *region; /* attach threads to it; NULL for a baseline */
	/* The vCPU threads' nice value (0: as the caller): netbench's
	 * --load-nice, a host whose vCPUs leave the pager its cores. */
	int nice;
};

struct workload_result {
	double seconds;		/* from all-ready to the last join */
	uint64_t accesses;	/* 4 KiB pages touched, all vCPUs */
	double *vcpu_rate;	/* pages/s of each vCPU (malloc'ed) */
	struct hist *latency;	/* per access, ns (malloc'ed) */
	/* Accesses to pages that were missing when the vCPU reached them:
	 * what a vCPU waited for each, from its side (with a region). */
	struct hist *stalls;
	double ws_next_share; /* ORDER_WS: how often the next touch was the next page */
	uint64_t *touched;    /* ORDER_WS: a bit per 4 KiB page touched (malloc'ed) */
};

/*
 * Run the vCPUs to the end.  Returns -EIO, leaving the vCPU threads behind,
 * when w->region failed while they ran (its sleeping threads never return).
 */
int workload_run(const struct workload *w, struct workload_result *res);
void workload_result_free(struct workload_result *res);

/* Offset and value of the word the write workload puts in 4 KiB page p. */
static inline uint64_t written_offset(uint64_t p)
{
	return (p % 512) * 8;
}
static inline uint64_t written_value(uint64_t p)
{
	return (p * 0x9e3779b97f4a7c15ull) ^ 0x706f7374636f7079ull;
}

/*
 * Compare every byte of @mem against @src (pages of 4 KiB), each page's
 * workload word holding written_value() instead (only the pages whose bit
 * is set in @touched, unless it is NULL).  Returns the number of
 * pages that differ; the first is reported in *first_bad.
 */
uint64_t verify_memory(const char *mem, uint64_t size, pc_source *src,
		       const uint64_t *touched, uint64_t *first_bad);

/*
 * Read a pre-shared key file (16..4096 bytes, used as is).  Refuses a
 * file that others can read and anything but a regular file (opened
 * without blocking).  0, or a negative errno with a message.
 */
int read_key_file(const char *cmd, const char *path, uint8_t **key,
		  size_t *len);

/* The key file at @path is usable (regular, mode 600, 16..4096 bytes);
 * says why not.  A bad key is a bad command line: EXIT_USAGE. */
bool key_file_ok(const char *cmd, const char *path);

/*
 * @addr (the argument of @flag) is tcp://HOST:PORT or unix:PATH, TCP has a
 * key or --insecure, and --insecure is on a loopback address; says why
 * not.  The library checks the same, but as a runtime error.
 */
bool address_ok(const char *cmd, const char *flag, const char *addr,
		bool has_key, bool insecure);

/*
 * An input file named on the command line (@flag @path) is a regular file
 * we can open, checked without blocking (a FIFO would hang open()):
 * EXIT_OK, EXIT_USAGE when it is not a regular file, EXIT_FAIL when it
 * cannot be opened; says why.
 */
int check_input_file(const char *cmd, const char *flag, const char *path);

/* --key and --insecure: only with a network peer, and not both; says why. */
bool auth_flags_ok(const char *cmd, bool networked, const char *key_path,
		   bool insecure);

/* Connect to a postcopy server (key from @key_path, or @insecure); on
 * failure says why into @why, or on stderr when @why is NULL.
 * @timeout_s and @push_connections 0 take the library's defaults. */
int open_net_source(const char *cmd, const char *addr, const char *key_path,
		    bool insecure, unsigned timeout_s, unsigned push_connections,
		    pc_source **src, char *why, size_t why_len);

/* ---- http_spec.c: --source http://, https://, s3:// ---- */
struct http_spec {
	const char *source;	 /* the --source argument */
	const char *s3_endpoint; /* --s3-endpoint URL, or NULL for AWS */
	const char *s3_region;	 /* --s3-region, or NULL: $AWS_REGION, us-east-1 */
	unsigned timeout_ms;	 /* --http-timeout: one request's limit; 0 default */
	const char *ca_file;	 /* --http-ca: PEM CAs for https, NULL: the system's */
};
/* @s names an HTTP(S) or S3 object. */
bool is_http_spec(const char *s);
/* The S3 flags go with an s3:// source, which names a bucket and key;
 * says why not. */
bool http_flags_ok(const char *cmd, const struct http_spec *h);
/* Open it (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN; region from AWS_REGION), with up to @connections
 * kept alive (0: the library's default); the reason in @why on failure. */
int open_http_source(const struct http_spec *h, unsigned connections,
		     pc_source **src, char *why, size_t why_len);
/* The HTTP source's latest failure, or NULL (not HTTP, or none). */
const char *http_error(pc_source *src, char *buf, size_t len);

/* ---- s3_spec.c: s3://BUCKET/KEY and the shared credentials file ---- */
/* Keys read from a shared credentials file (malloc'ed). */
struct aws_creds {
	char *access_key, *secret_key, *session_token;
};
/* Wipes the secrets, frees all, zeroes @c. */
void aws_creds_free(struct aws_creds *c);
/* Profile @profile's keys in credentials file @f (read as the AWS CLI
 * reads it: [NAME] sections of "key = value" lines, # and ; comments)
 * into @c: 0 with both keys; -EINVAL without (*@found: the profile was
 * there), -ENOMEM; @c is then empty. */
int aws_creds_parse(FILE *f, const char *profile, struct aws_creds *c,
		    bool *found);
/* Profile @profile's region in config file @f ([default] or [profile
 * NAME] sections, read as aws_creds_parse() reads): 0 with *@region
 * (malloc'ed), -ENOENT without, -ENOMEM. */
int aws_config_region(FILE *f, const char *profile, char **region);
/* Bucket name @b (@n bytes), region @r and object key @k may go into a
 * URL. */
bool s3_bucket_ok(const char *b, size_t n);
bool s3_region_ok(const char *r);
bool s3_key_ok(const char *k);
/* The https URL (or under @endpoint, path style) of s3://BUCKET/KEY
 * @source, which http_flags_ok() passed, into *@url (malloc'ed): 0, or
 * -EINVAL (a bucket, region or key that s3_bucket_ok(), s3_region_ok() or
 * s3_key_ok() refuses)
 * or -ENOMEM with the reason in @why. */
int s3_url(const char *source, const char *endpoint, const char *region,
	   char **url, char *why, size_t why_len);

/* ---- cmd_pack.c: whole-buffer pread/pwrite (also for cmd_unpack.c) ---- */
int pack_read_at(int fd, void *buf, size_t len, uint64_t off);
int pack_write_at(int fd, const void *buf, size_t len, uint64_t off);

/* ---- counting.c: a source wrapper that counts fetches per page ---- */
struct counting;
/* Wrap @inner (owned from here on, also on failure). */
int counting_source(pc_source *inner, struct counting **cp, pc_source **out);
/* Fetches beyond the first, summed over all pages. */
uint64_t counting_duplicates(const struct counting *c);

/* ---- baseline.c: memory for the no-userfaultfd baselines ---- */
struct baseline_mem {
	char *mem;
	uint64_t size;
	int fd;
	pc_source *expect; /* what the memory holds before the vCPUs write */
	pc_source *zero;   /* anon: the source of zeroes behind expect (owned) */
};
/*
 * @size bytes of @backend memory with @ref's contents already local: a
 * memfd filled and mapped afresh (first touches are minor faults), or
 * fresh anonymous memory (first touches allocate zeroes, so ->expect is
 * a source of zeroes, not @ref).  -ENOMEM for hugetlb means too few huge
 * pages.
 */
int baseline_map(enum pc_backend backend, uint64_t size, pc_source *ref,
		 struct baseline_mem *out);
void baseline_unmap(struct baseline_mem *m);

/* ---- util.c: JSON output (json-c) ---- */
struct json_object;
struct json_object *stats_json(const struct pc_stats *s);
/* {p50, p90, p99, p999, max} in microseconds. */
struct json_object *latency_json(const struct pc_latency *l);
struct json_object *latency_json_us(const struct hist *h);

/* ---- fc_regions.c: the Firecracker handshake (issue 11) ---- */
#define FC_MAX_REGIONS 64 /* what an adopted region takes */
#define FC_HUGE_2M (2ull << 20)
struct fc_handshake {
	struct pc_remote_range r[FC_MAX_REGIONS];
	unsigned n;
	uint64_t page_size, total;
	const char *shape; /* which field set: "v1.1", "v1.7" or "v1.12" */
	int uffd;
};
struct json_tokener;
/* Give @tok the next @n bytes of the stream: 1 when the JSON is not
 * complete yet, 0 with the document in *@out (nothing but blanks may
 * follow it), -EINVAL with the reason in @why. */
int fc_handshake_feed(struct json_tokener *tok, const char *buf, size_t n,
		      struct json_object **out, char *why, size_t wlen);
/* The regions of handshake @j, checked against each other and a memory
 * file of @file_size bytes, into @h: 0, or -EINVAL with the reason in @why. */
int fc_parse_regions(struct json_object *j, uint64_t file_size,
		     struct fc_handshake *h, char *why, size_t wlen);

#endif
