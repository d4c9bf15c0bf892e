/* SPDX-License-Identifier: MIT */
/*
 * test_window - opts.window: pages resolved per fault.
 *
 * With window = 16, touching one page of a 16-page aligned window installs
 * exactly that window (clipped at the region's end), fetching each of its
 * data pages once and nothing outside it; the faulting page counts as
 * demand, the rest as prefetch; the region ends byte exact.  A window
 * larger than the region resolves the whole region on one touch.  The
 * fault hook is called once per such fault, with the touched page and the
 * faulting thread's slot, and cannot be set once the region runs.
 */
#include <inttypes.h>

#include "postcopy.h"
#include "tap.h"

#define WINDOW 16
#define REGION_PAGES 1000	/* not a multiple of 16: the last window is 8 */
#define NWINDOWS ((REGION_PAGES + WINDOW - 1) / WINDOW)

static int setup(struct fixture *f, enum pc_backend backend,
		 enum pc_mode mode, unsigned window, uint64_t pages,
		 uint64_t seed)
{
	struct pc_region_opts opts = {
		.size = pages * SRC_PAGE, .backend = backend, .mode = mode,
		.window = window,
	};

	return fixture_setup(f, &opts, seed);
}

static uint64_t touched_page(uint64_t w)
{
	uint64_t p = w * WINDOW + (w * 7) % WINDOW;

	return p < REGION_PAGES ? p : REGION_PAGES - 1;
}

static uint64_t mark(uint64_t p)
{
	return 0x77177177abcd0000ull | p;
}

static void patch_touched(void *ctx, uint64_t p, void *buf)
{
	(void)ctx;
	if (p == touched_page(p / WINDOW))
		memcpy(buf, &(uint64_t){ mark(p) }, 8);
}

/* Data pages in [0, end): what the fetch total must be. */
static uint64_t data_pages_below(struct fixture *f, uint64_t end)
{
	uint64_t n = 0;

	for (uint64_t p = 0; p < end; p++)
		n += !pc_source_is_zero(f->ref, p);
	return n;
}

/*
 * After touching window @w: every data page of windows 0..w fetched once,
 * nothing beyond.  Wait mode may finish the window after waking the
 * faulting thread, so give it a moment there.
 */
static bool window_done(struct fixture *f, uint64_t w, enum pc_mode mode,
			char *why, size_t len)
{
	uint64_t end = (w + 1) * WINDOW < REGION_PAGES ? (w + 1) * WINDOW :
							  REGION_PAGES;
	uint64_t want = data_pages_below(f, end);

	for (int tries = 0; tries < 200; tries++) {
		if (counting_total(&f->cs) >= want ||
		    mode == PC_MODE_EXIT)
			break;
		sleep_ms(10);
	}
	if (counting_total(&f->cs) != want) {
		snprintf(why, len,
			 "after touching page %" PRIu64 " (window %" PRIu64
			 "), %" PRIu64 " pages fetched, want %" PRIu64,
			 touched_page(w), w, counting_total(&f->cs), want);
		return false;
	}
	return counting_check(&f->cs, f->ref, SRC_PAGE, false, why, len);
}

static void window_16(enum pc_backend backend, enum pc_mode mode)
{
	const char *m = mode_name(mode), *b = backend_name(backend);
	char why[256] = "";
	struct pc_stats *st = NULL;
	struct fixture f;
	uint64_t bad;
	int ret;

	tap_watchdog(60);
	if (setup(&f, backend, mode, WINDOW, REGION_PAGES, 61 + 2 * backend + mode))
		bail_out("setup failed");
	for (uint64_t w = 0; w < NWINDOWS && !why[0]; w++) {
		uint64_t p = touched_page(w);

		memcpy(f.mem + p * SRC_PAGE, &(uint64_t){ mark(p) }, 8);
		window_done(&f, w, mode, why, sizeof(why));
	}
	if (!ok(!why[0],
		"%s_mode_%s_window_16_touch_installs_its_aligned_window_once", m,
		b))
		diag("%s", why);

	ret = pc_region_wait(f.r, 10000);
	if (ret || pc_region_stats(f.r, &st)) {
		snprintf(why, sizeof(why), "pc_region_wait = %d (%s)", ret,
			 pc_region_error(f.r));
	} else if (stats_consistent(st, REGION_PAGES, SRC_PAGE,
				    counting_total(&f.cs) * SRC_PAGE,
				    atomic_load(&f.cs.calls), why,
				    sizeof(why))) {
		if (st->pages_demand != NWINDOWS ||
		    st->pages_prefetch != REGION_PAGES - NWINDOWS ||
		    st->faults != NWINDOWS)
			snprintf(why, sizeof(why),
				 "faults %" PRIu64 " demand %" PRIu64
				 " prefetch %" PRIu64 ", want %d %d %d",
				 st->faults, st->pages_demand,
				 st->pages_prefetch, NWINDOWS, NWINDOWS,
				 REGION_PAGES - NWINDOWS);
	}
	if (!ok(!why[0], "%s_mode_%s_window_16_counts_demand_and_prefetch", m,
		b))
		diag("%s", why);
	free(st);

	bad = verify_mem(f.mem, REGION_PAGES * SRC_PAGE, f.ref, patch_touched,
			 NULL);
	ok(bad == 0, "%s_mode_%s_window_16_region_byte_exact", m, b);
	fixture_teardown(&f);
}

/*
 * Window 512 (the most the library accepts, see the report) over a region
 * of 256 pages: one touch resolves everything.
 */
#define BIG_WINDOW 512
#define SMALL_REGION 256

static void window_larger_than_region(enum pc_backend backend,
				      enum pc_mode mode)
{
	const char *m = mode_name(mode), *b = backend_name(backend);
	char why[256] = "";
	struct fixture f;
	char want[SRC_PAGE];
	int ret;

	tap_watchdog(60);
	ret = setup(&f, backend, mode, BIG_WINDOW, SMALL_REGION,
		    71 + 2 * backend + mode);
	if (ret) {
		snprintf(why, sizeof(why), "setup = %d", ret);
		goto report;
	}
	pc_source_read(f.ref, 100, 1, want);
	if (memcmp(f.mem + 100 * SRC_PAGE, want, SRC_PAGE))
		snprintf(why, sizeof(why), "touched page has wrong bytes");
	ret = pc_region_wait(f.r, 10000);
	if (!why[0] && (ret || !pc_region_complete(f.r)))
		snprintf(why, sizeof(why),
			 "one touch did not complete the region: wait = %d, present %"
			 PRIu64 " of %d", ret, pc_region_present(f.r),
			 SMALL_REGION);
	if (!why[0])
		counting_check(&f.cs, f.ref, SRC_PAGE, true, why, sizeof(why));
	if (!why[0] && verify_mem(f.mem, SMALL_REGION * SRC_PAGE, f.ref, NULL,
				  NULL))
		snprintf(why, sizeof(why), "memory differs from the source");
report:
	if (!ok(!why[0], "%s_mode_%s_window_larger_than_region_completes_on_one_touch",
		m, b))
		diag("%s", why);
	fixture_teardown(&f);
}

struct hook_log {
	_Atomic unsigned n;
	uint64_t offset[NWINDOWS + 1];
	unsigned thread[NWINDOWS + 1];
};

static void log_fault(void *arg, uint64_t offset, unsigned thread)
{
	struct hook_log *h = arg;
	unsigned i = atomic_fetch_add(&h->n, 1);
	if (i <= NWINDOWS) {
		h->offset[i] = offset;
		h->thread[i] = thread;
	}
}

static void window_hook(enum pc_mode mode)
{
	const unsigned slot = 3;
	struct pc_region_opts opts = { .size = REGION_PAGES * SRC_PAGE,
				       .mode = mode, .window = WINDOW };
	static struct hook_log h;
	struct counting_src cs;
	char why[256] = "";
	pc_source *src;
	pc_region *r;

	memset(&h, 0, sizeof(h));
	if (counting_new(&cs, opts.size, 77, &src) ||
	    pc_region_create(&opts, src, &r, why, sizeof(why)))
		bail_out("region: %s", why);
	int set = pc_region_set_fault_hook(r, log_fault, &h);
	if (set || pc_region_start(r) || pc_thread_attach(r, slot))
		bail_out("hook, start or attach");
	int late = pc_region_set_fault_hook(r, NULL, NULL);
	for (uint64_t w = 0; w < NWINDOWS; w++)
		(void)*(volatile char *)(pc_region_addr(r) + touched_page(w) * SRC_PAGE);
	pc_thread_detach(r);
	bool good = pc_region_wait(r, 10000) == 0 && late == -EBUSY &&
		    atomic_load(&h.n) == NWINDOWS;
	for (unsigned i = 0; good && i < NWINDOWS; i++)
		good = h.offset[i] == touched_page(i) * SRC_PAGE && h.thread[i] == slot;
	if (!ok(good, "%s_mode_fault_hook_sees_each_fetching_fault_once_with_its_slot",
		mode_name(mode)))
		diag("%u calls for %d faults; late set %d; first: offset %" PRIu64
		     " thread %u", atomic_load(&h.n), NWINDOWS, late, h.offset[0],
		     h.thread[0]);
	pc_region_destroy(r);
	counting_free(&cs);
}

int main(void)
{
	static const enum pc_backend backends[] = { PC_BACKEND_SHMEM,
						    PC_BACKEND_ANON };
	static const enum pc_mode modes[] = { PC_MODE_EXIT, PC_MODE_WAIT };

	plan(18);
	for (int b = 0; b < 2; b++) {
		for (int m = 0; m < 2; m++) {
			window_16(backends[b], modes[m]);
			window_larger_than_region(backends[b], modes[m]);
		}
	}
	window_hook(PC_MODE_EXIT);
	window_hook(PC_MODE_WAIT);
	return done();
}
