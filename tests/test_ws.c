/* SPDX-License-Identifier: MIT */
/*
 * test_ws - working sets: record, save, load, refuse, replay.
 *
 * Per mode (exit, wait):
 *   (a) a recording round-trips: the pages one attached thread faulted,
 *       in its order, with its slot, saved and loaded back;
 *   (b) a recording of another image (other contents, other size) is
 *       refused by pc_ws_check_image() and pc_region_replay(), which then
 *       installs nothing;
 *   (c) a replay with nobody touching installs the recorded pages, then
 *       the filler the rest: byte exact, no page fetched twice;
 *   (d) the same while two vCPUs race ahead of the replay through the
 *       recorded pages (and one goes backwards): byte exact, none twice.
 * Once: (e) truncated and corrupt files are refused whole, with a reason.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "postcopy.h"
#include "tap.h"

#define SIZE (8 * MIB)
#define PAGES (SIZE / SRC_PAGE)
#define SEED 7
#define NREC 300   /* pages the recording thread touches */
#define NBIG 1500  /* pages of the list the racing vCPUs meet */

static char dir[] = "/tmp/postcopy-test-ws.XXXXXX";

static uint64_t rec_page(uint64_t i)
{
	return (i * 7919 + 11) % PAGES;
}

static void id_of_pattern(uint64_t size, uint64_t seed, struct pc_image_id *id)
{
	pc_source *s;
	if (pc_source_pattern(size, seed, &s) || pc_image_id_of(s, id))
		bail_out("image id of pattern(%" PRIu64 ")", seed);
	pc_source_destroy(s);
}

static pc_region *new_region(enum pc_mode mode, struct counting_src *cs,
			     unsigned delay_us)
{
	pc_source *src;
	if (counting_new(cs, SIZE, SEED, &src))
		bail_out("counting source");
	pc_source_set_delay(src, delay_us, PC_DELAY_SLEEP);
	struct pc_region_opts o = { .size = SIZE, .mode = mode, .max_threads = 4 };
	pc_region *r;
	char why[256];
	if (pc_region_create(&o, src, &r, why, sizeof(why)))
		bail_out("pc_region_create: %s", why);
	return r;
}

/* (a) Record what the main thread, attached as slot 0, faults. */
static void record_round_trip(enum pc_mode mode, const struct pc_image_id *id,
			      const char *path)
{
	struct counting_src cs;
	pc_region *r = new_region(mode, &cs, 0);
	pc_ws *rec = NULL, *back = NULL;
	char why[256] = "";
	int ret = pc_ws_record(r, id, &rec);
	if (ret == 0)
		ret = pc_region_start(r);
	if (ret == 0)
		ret = pc_thread_attach(r, 0);
	char *mem = pc_region_addr(r);
	for (uint64_t i = 0; ret == 0 && i < NREC; i++)
		(void)touch_read(mem + rec_page(i) * SRC_PAGE, rec_page(i));
	pc_thread_detach(r);
	if (ret == 0)
		ret = pc_ws_save(rec, path);
	if (ret == 0)
		ret = pc_ws_load(path, &back, why, sizeof(why));
	bool same = ret == 0;
	struct pc_ws_info info = { 0 };
	if (same) {
		pc_ws_info(back, &info);
		same = info.pages == NREC && info.runs == 1 &&
		       pc_ws_check_image(back, id, NULL, 0) == 0;
	}
	uint64_t prev = 0;
	for (uint64_t i = 0; same && i < NREC; i++) {
		struct pc_ws_entry e;
		same = pc_ws_entry(back, i, &e) == 0 && e.offset == rec_page(i) * SRC_PAGE &&
		       e.thread == 0 && e.runs == 1 && e.time_ns >= prev;
		if (!same)
			diag("entry %" PRIu64 ": offset %#" PRIx64 " thread %u runs %u, want %#" PRIx64,
			     i, e.offset, e.thread, e.runs, rec_page(i) * SRC_PAGE);
		prev = e.time_ns;
	}
	ok(ret == 0 && same, "%s_recording_round_trips_in_first_touch_order (%d %s, %" PRIu64 " pages)",
	   mode_name(mode), ret, why, info.pages);
	pc_ws_destroy(back);
	if (pc_region_start_fill(r) == 0)
		pc_region_wait(r, 30000);
	pc_region_destroy(r);
	pc_ws_destroy(rec);
	counting_free(&cs);
}

/* (b) Other contents, other size: refused, nothing installed. */
static void other_image_refused(enum pc_mode mode, const char *path)
{
	struct pc_image_id other, small;
	id_of_pattern(SIZE, SEED + 1, &other);
	id_of_pattern(SIZE / 2, SEED, &small);
	pc_ws *ws;
	char why[256] = "", why2[256] = "", why3[256] = "";
	if (pc_ws_load(path, &ws, why, sizeof(why)))
		bail_out("load %s: %s", path, why);
	int c1 = pc_ws_check_image(ws, &other, why, sizeof(why));
	int c2 = pc_ws_check_image(ws, &small, why2, sizeof(why2));
	struct counting_src cs;
	pc_region *r = new_region(mode, &cs, 0);
	int start = pc_region_start(r);
	int rp = pc_region_replay(r, ws, &other, why3, sizeof(why3));
	sleep_ms(20);
	uint64_t present = pc_region_present(r);
	ok(c1 == -ESTALE && c2 == -ESTALE && start == 0 && rp == -ESTALE && present == 0 &&
		   counting_total(&cs) == 0 && strstr(why, "another image"),
	   "%s_recording_of_another_image_is_refused (%d \"%s\", %d \"%s\", replay %d, %" PRIu64 " present)",
	   mode_name(mode), c1, why, c2, why2, rp, present);
	pc_region_destroy(r);
	pc_ws_destroy(ws);
	counting_free(&cs);
}

struct racer {
	pc_region *r;
	const pc_ws *ws;
	unsigned id;
	uint64_t from, to; /* list positions, backwards when from > to */
	pthread_barrier_t *go;
	uint64_t bad;
	const uint64_t *want;
};

static void *racer_main(void *arg)
{
	struct racer *v = arg;
	char *mem = pc_region_addr(v->r);
	pc_thread_attach(v->r, v->id);
	pthread_barrier_wait(v->go);
	for (uint64_t i = v->from; i != v->to; v->from < v->to ? i++ : i--) {
		struct pc_ws_entry e;
		pc_ws_entry(v->ws, i, &e);
		uint64_t p = e.offset / SRC_PAGE;
		if (touch_read(mem + e.offset, p) != v->want[p])
			v->bad++;
	}
	pc_thread_detach(v->r);
	return NULL;
}

static uint64_t big_page(uint64_t i)
{
	return (i * 104729 + 5) % PAGES;
}

/* Pages 100 and 105 (a hole of 4 between them), 130 and 131 (24 past). */
static uint64_t holed_page(uint64_t i)
{
	static const uint64_t p[] = { 131, 100, 130, 105 };
	return p[i];
}

/* A list of @n pages, page(0..n-1) in that order, saved for the replays. */
static void make_list(const struct pc_image_id *id, const char *path,
		      uint64_t (*page)(uint64_t), uint64_t n)
{
	/* Merging one loaded file gives a list to write: build it as a
	 * recording of a region no test installs into would be slower. */
	struct counting_src cs;
	pc_region *r = new_region(PC_MODE_EXIT, &cs, 0);
	pc_ws *rec;
	if (pc_ws_record(r, id, &rec) || pc_region_start(r))
		bail_out("recorder for the list %s", path);
	char *mem = pc_region_addr(r);
	pc_thread_attach(r, 1);
	for (uint64_t i = 0; i < n; i++)
		(void)touch_read(mem + page(i) * SRC_PAGE, page(i));
	pc_thread_detach(r);
	if (pc_ws_save(rec, path))
		bail_out("saving the list %s", path);
	pc_region_start_fill(r);
	pc_region_wait(r, 30000);
	pc_region_destroy(r);
	pc_ws_destroy(rec);
	counting_free(&cs);
}

/* The rest by the filler, then every fetch count (*@once: each page
 * fetched once, else why in @why) and every byte: the pages that differ
 * (all when the region did not complete; *@ret then says why). */
static uint64_t fill_and_verify(pc_region *r, struct counting_src *cs, pc_source *ref,
				int *ret, bool *once, char *why, size_t why_len)
{
	if (*ret == 0)
		*ret = pc_region_start_fill(r);
	if (*ret == 0)
		*ret = pc_region_wait(r, 60000);
	*once = counting_check(cs, ref, SRC_PAGE, *ret == 0, why, why_len);
	return *ret == 0 ? verify_mem(pc_region_addr(r), SIZE, ref, NULL, NULL) : PAGES;
}

/* (c), (d): replay, fill, then every byte and every fetch count. */
static void replay_case(enum pc_mode mode, const struct pc_image_id *id,
			const char *path, bool race)
{
	const char *name = race ? "replay_with_vcpus_racing_ahead_is_byte_exact_and_fetches_once" :
				  "replay_is_byte_exact_and_fetches_once";
	pc_ws *ws;
	char why[256] = "";
	if (pc_ws_load(path, &ws, why, sizeof(why)))
		bail_out("load %s: %s", path, why);
	struct pc_ws_info info;
	pc_ws_info(ws, &info);
	pc_source *ref;
	if (pc_source_pattern(SIZE, SEED, &ref))
		bail_out("reference source");
	uint64_t *want = touch_want_reads(ref, PAGES);
	struct counting_src cs;
	/* Slow enough that the racers pass the replay. */
	pc_region *r = new_region(mode, &cs, race ? 300 : 20);
	int ret = pc_region_start(r);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, 3);
	struct racer v[2] = {
		{ r, ws, 0, info.pages / 2, info.pages, &go, 0, want },
		{ r, ws, 1, info.pages - 1, info.pages / 3, &go, 0, want },
	};
	pthread_t t[2];
	if (race)
		for (int i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, racer_main, &v[i]);
	if (race) { /* both vCPUs are ahead before the replay starts */
		pthread_barrier_wait(&go);
		for (int i = 0; i < 5000; i++) {
			struct pc_stats *s0;
			if (pc_region_stats(r, &s0))
				break;
			bool both = s0->thread[0].faults && s0->thread[1].faults;
			free(s0);
			if (both)
				break;
			sleep_ms(1);
		}
	}
	if (ret == 0)
		ret = pc_region_replay(r, ws, id, why, sizeof(why));
	if (race)
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
	/* Let the replay run out before the filler starts, so (c) shows
	 * that the replay alone brought the listed pages. */
	struct pc_stats *st = NULL;
	for (int i = 0; ret == 0 && i < 3000; i++) {
		free(st);
		pc_region_stats(r, &st);
		if (st->pages_replay + st->pages_demand + st->pages_prefetch >= info.pages)
			break;
		sleep_ms(1);
	}
	uint64_t replayed = st ? st->pages_replay : 0;
	free(st);
	char cwhy[512];
	bool once;
	uint64_t bad = fill_and_verify(r, &cs, ref, &ret, &once, cwhy, sizeof(cwhy));
	pc_region_stats(r, &st);
	bool sums = st && st->pages_demand + st->pages_prefetch + st->pages_fill +
				  st->pages_replay == PAGES;
	ok(ret == 0 && once && bad == 0 && sums && v[0].bad + v[1].bad == 0 &&
		   (race ? st->pages_replay > 0 && st->pages_demand > 0 : replayed == info.pages),
	   "%s_%s (%d %s; %s; %" PRIu64 " bad pages; replayed %" PRIu64 " demand %" PRIu64
	   " fill %" PRIu64 ")",
	   mode_name(mode), name, ret, why, cwhy, bad, st ? st->pages_replay : 0,
	   st ? st->pages_demand : 0, st ? st->pages_fill : 0);
	free(st);
	pc_region_destroy(r);
	pthread_barrier_destroy(&go);
	free(want);
	pc_source_destroy(ref);
	pc_ws_destroy(ws);
	counting_free(&cs);
}

/* A hole of a few pages between two listed pages comes with the replay's
 * batch (nothing faults there after), a wider one does not. */
static void replay_bridges_small_holes(enum pc_mode mode, const struct pc_image_id *id,
				       const char *path)
{
	pc_ws *ws;
	char why[256] = "";
	if (pc_ws_load(path, &ws, why, sizeof(why)))
		bail_out("load %s: %s", path, why);
	pc_source *ref;
	if (pc_source_pattern(SIZE, SEED, &ref))
		bail_out("reference source");
	uint64_t *want = touch_want_reads(ref, PAGES);
	struct counting_src cs;
	pc_region *r = new_region(mode, &cs, 0);
	int ret = pc_region_start(r);
	if (ret == 0)
		ret = pc_region_replay(r, ws, id, why, sizeof(why));
	struct pc_stats *st = NULL;
	for (int i = 0; ret == 0 && i < 3000; i++) { /* until the replay ran out */
		free(st);
		pc_region_stats(r, &st);
		if (st->pages_replay >= 8)
			break;
		sleep_ms(1);
	}
	free(st);
	sleep_ms(20); /* anything more it would bring */
	pc_region_stats(r, &st);
	uint64_t replayed = st ? st->pages_replay : 0;
	free(st);
	/* The hole's pages take no fault; a page of the wide one does. */
	char *mem = pc_region_addr(r);
	uint64_t bad = 0;
	pc_thread_attach(r, 0);
	for (uint64_t p = 101; p < 105; p++)
		bad += touch_read(mem + p * SRC_PAGE, p) != want[p];
	pc_region_stats(r, &st);
	uint64_t hole_faults = st ? st->thread[0].faults : 1;
	free(st);
	bad += touch_read(mem + 110 * SRC_PAGE, 110) != want[110];
	pc_region_stats(r, &st);
	uint64_t wide_faults = st ? st->thread[0].faults : 0;
	free(st);
	pc_thread_detach(r);
	char cwhy[512];
	bool once;
	bad += fill_and_verify(r, &cs, ref, &ret, &once, cwhy, sizeof(cwhy));
	ok(ret == 0 && once && bad == 0 && replayed == 8 && hole_faults == 0 && wide_faults == 1,
	   "%s_replay_brings_a_small_hole_between_listed_pages (%d %s; %s; %" PRIu64
	   " bad; replayed %" PRIu64 " of 4 listed + 4 in the hole; faults %" PRIu64
	   " in the hole, %" PRIu64 " with the wide one's page)",
	   mode_name(mode), ret, why, cwhy, bad, replayed, hole_faults, wide_faults);
	pc_region_destroy(r);
	free(want);
	pc_source_destroy(ref);
	pc_ws_destroy(ws);
	counting_free(&cs);
}

/* ---- (e) files that must be refused ---- */

static size_t slurp(const char *path, uint8_t **b)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		bail_out("open %s", path);
	*b = malloc((size_t)st.st_size);
	if (!*b || read(fd, *b, (size_t)st.st_size) != st.st_size)
		bail_out("read %s", path);
	close(fd);
	return (size_t)st.st_size;
}

static void spit(const char *path, const uint8_t *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, b, len) != (ssize_t)len)
		bail_out("write %s", path);
	close(fd);
}

/* Seal @b again (the trailer checksum), as a forger would. */
static void reseal(uint8_t *b, size_t len)
{
	uint64_t h = XXH3_64bits(b, len - 8);
	for (int i = 0; i < 8; i++)
		b[len - 8 + i] = (uint8_t)(h >> (8 * i));
}

static void refused(const char *path, const uint8_t *b, size_t len, int want,
		    const char *word, const char *name)
{
	char bad[300], why[256] = "";
	snprintf(bad, sizeof(bad), "%s/bad.ws", dir);
	spit(bad, b, len);
	pc_ws *ws = NULL;
	int ret = pc_ws_load(bad, &ws, why, sizeof(why));
	ok(ret == want && !ws && strstr(why, word), "%s (%d \"%s\")", name, ret, why);
	(void)path;
}

static void corrupt_files(const char *path)
{
	uint8_t *b;
	size_t len = slurp(path, &b);
	uint8_t *c = malloc(len);
	refused(path, b, len - 3, -EBADMSG, "truncated", "truncated_recording_is_refused");
	refused(path, b, 40, -EBADMSG, "truncated", "recording_cut_in_its_header_is_refused");
	memcpy(c, b, len);
	c[64 + 16 * 5 + 2] ^= 0x40;
	refused(path, c, len, -EBADMSG, "checksum", "corrupt_recording_is_refused");
	memcpy(c, b, len);
	c[8] = 9;
	reseal(c, len);
	refused(path, c, len, -ENOTSUP, "version", "recording_of_a_later_version_is_refused");
	memcpy(c, b, len);
	c[64 + 16 * 7 + 5] = 0x7f; /* page far outside the image */
	reseal(c, len);
	refused(path, c, len, -EBADMSG, "outside", "recording_with_a_page_outside_the_image_is_refused");
	memcpy(c, b, len);
	memcpy(c + 64 + 16 * 9, c + 64 + 16 * 8, 8); /* a page twice */
	reseal(c, len);
	refused(path, c, len, -EBADMSG, "twice", "recording_with_a_page_twice_is_refused");
	refused(path, (const uint8_t *)"hello, world", 12, -EBADMSG, "magic",
		"other_file_is_refused");
	free(c);
	free(b);
}

int main(void)
{
	static const enum pc_mode modes[] = { PC_MODE_EXIT, PC_MODE_WAIT };
	plan(5 * 2 + 7);
	tap_watchdog(240);
	if (!mkdtemp(dir))
		bail_out("mkdtemp");
	struct pc_image_id id;
	id_of_pattern(SIZE, SEED, &id);
	char rec[300], big[300], holed[300];
	snprintf(rec, sizeof(rec), "%s/rec.ws", dir);
	snprintf(big, sizeof(big), "%s/big.ws", dir);
	snprintf(holed, sizeof(holed), "%s/holed.ws", dir);
	make_list(&id, big, big_page, NBIG);
	make_list(&id, holed, holed_page, 4);
	for (unsigned m = 0; m < 2; m++) {
		record_round_trip(modes[m], &id, rec);
		other_image_refused(modes[m], rec);
		replay_case(modes[m], &id, rec, false);
		replay_case(modes[m], &id, big, true);
		replay_bridges_small_holes(modes[m], &id, holed);
	}
	corrupt_files(rec);
	unlink(rec);
	unlink(big);
	unlink(holed);
	char bad[300];
	snprintf(bad, sizeof(bad), "%s/bad.ws", dir);
	unlink(bad);
	rmdir(dir);
	return done();
}
