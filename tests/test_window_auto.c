/* SPDX-License-Identifier: MIT */
/*
 * test_window_auto - the adaptive fault-around window (PC_WINDOW_AUTO).
 *
 * Per mode (exit, wait), one attached thread reading 8 MiB:
 *   (a) in order: the window doubles up to 2 MiB, so the pass takes a few
 *       dozen faults, not 2048; byte exact, no page fetched twice;
 *   (b) in a scrambled order (no fault follows the previous window): one
 *       page per fault, nothing prefetched; byte exact, none twice;
 *   (c) the same order while the background filler runs (its fetches slowed
 *       down, so that the faults find their neighbours missing): a fault
 *       brings the filler's short step, so far fewer faults than pages and
 *       most of each fault's pages prefetched; byte exact, none twice.
 */
#include <inttypes.h>

#include "postcopy.h"
#include "tap.h"

#define SIZE (8 * MIB)
#define PAGES (SIZE / SRC_PAGE)

enum order { IN_ORDER, SCATTERED, SCATTERED_WHILE_FILLING };

static void pass(enum pc_mode mode, enum order order)
{
	struct counting_src cs;
	pc_source *src, *ref;
	bool sequential = order == IN_ORDER, fill = order == SCATTERED_WHILE_FILLING;
	if (counting_new(&cs, SIZE, 3, &src) || pc_source_pattern(SIZE, 3, &ref))
		bail_out("sources");
	if (fill) /* 64 KiB per 2 ms: the filler covers a tenth meanwhile */
		pc_source_set_delay(src, 2000, PC_DELAY_SLEEP);
	struct pc_region_opts o = { .size = SIZE, .mode = mode, .max_threads = 1,
				    .window = PC_WINDOW_AUTO };
	pc_region *r;
	char why[256];
	if (pc_region_create(&o, src, &r, why, sizeof(why)))
		bail_out("pc_region_create: %s", why);
	int ret = pc_region_start(r);
	if (ret == 0 && fill)
		ret = pc_region_start_fill(r);
	if (ret == 0)
		ret = pc_thread_attach(r, 0);
	const char *mem = pc_region_addr(r);
	for (uint64_t i = 0; ret == 0 && i < PAGES; i++) {
		uint64_t p = sequential ? i : (i * 7919) % PAGES;
		(void)touch_read(mem + p * SRC_PAGE, p);
	}
	pc_thread_detach(r);
	if (ret == 0)
		ret = pc_region_wait(r, 30000);
	char cwhy[512];
	bool once = counting_check(&cs, ref, SRC_PAGE, ret == 0, cwhy, sizeof(cwhy));
	uint64_t bad = ret == 0 ? verify_mem(mem, SIZE, ref, NULL, NULL) : PAGES;
	struct pc_stats *st = NULL;
	pc_region_stats(r, &st);
	bool shape = st && (sequential ? st->faults <= 64 :
			    fill ? st->faults <= PAGES / 4 &&
					   st->pages_prefetch >= 8 * st->faults :
				   st->faults == PAGES && st->pages_prefetch == 0);
	static const char *const name[] = {
		[IN_ORDER] = "grows_on_a_sequential_pass",
		[SCATTERED] = "stays_one_page_on_scattered_faults",
		[SCATTERED_WHILE_FILLING] = "brings_64_kib_per_scattered_fault_while_filling",
	};
	ok(ret == 0 && once && bad == 0 && shape,
	   "%s_auto_window_%s (%d; %s; %" PRIu64 " bad; %" PRIu64 " faults, %" PRIu64 " prefetched)",
	   mode_name(mode), name[order], ret, cwhy, bad, st ? st->faults : 0,
	   st ? st->pages_prefetch : 0);
	free(st);
	pc_region_destroy(r);
	pc_source_destroy(ref);
	counting_free(&cs);
}

int main(void)
{
	plan(6);
	tap_watchdog(120);
	for (enum order o = IN_ORDER; o <= SCATTERED_WHILE_FILLING; o++) {
		pass(PC_MODE_EXIT, o);
		pass(PC_MODE_WAIT, o);
	}
	return done();
}
