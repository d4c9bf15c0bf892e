// SPDX-License-Identifier: MIT
/*
 * The guest of bench/qemu-postcopy.sh: bare metal, 32-bit protected mode,
 * paging off, booted by QEMU's -kernel (multiboot).  It fills every page from
 * 4 MiB to the top of RAM with a pattern only it can predict (each word holds
 * its own address xor SEED), says "READY" on COM1, then, on each CPU, keeps
 * reading one word and incrementing another in every page of its slice (in
 * order, or with the stride given as "stride=N" on the command line) until a
 * 'V' arrives on COM1.  Then every CPU finishes its pass and the boot CPU
 * checks every word of every page and says "VERIFY OK" or "VERIFY FAIL".
 *
 * Page layout: word 0 counts the passes that wrote it; words 1..1023 hold
 * the pattern.  A pass visits each page of a slice exactly once (the stride
 * is coprime with the slice), so after a whole pass every page of a slice
 * has word 0 equal to that CPU's pass count.
 */
#include <stdint.h>

#define SEED 0x5eed1234u
#define BASE 0x400000u		/* first page touched: above the image and BIOS data */
#define PAGE 4096u
#define MAX_CPUS 8
#define COM1 0x3f8
#define LAPIC 0xfee00000u
#define TRAMPOLINE 0x7000u	/* real-mode start of the APs (SIPI vector 0x07) */

struct multiboot_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

extern const char trampoline_start[], trampoline_end[];
void guest_main(const struct multiboot_info *mbi);
void ap_main(uint32_t cpu);

/* Shared by the CPUs (guest RAM, so it migrates with the rest). */
static volatile uint32_t npages, ncpus, stride;
static volatile uint32_t aps_up, stop, done;
static volatile uint32_t passes[MAX_CPUS], errors[MAX_CPUS];

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static void putc_serial(char c)
{
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, (uint8_t)c);
}

static void puts_serial(const char *s)
{
	while (*s)
		putc_serial(*s++);
}

static void putu(uint32_t v)
{
	char b[11];
	int i = 10;
	b[i] = 0;
	do
		b[--i] = (char)('0' + v % 10);
	while (v /= 10);
	puts_serial(b + i);
}

static void putx(uint32_t v)
{
	puts_serial("0x");
	for (int s = 28; s >= 0; s -= 4)
		putc_serial("0123456789abcdef"[(v >> s) & 15]);
}

/* The value of "key=N" on the command line, or dflt. */
static uint32_t arg(const char *cmdline, const char *key, uint32_t dflt)
{
	for (const char *p = cmdline; p && *p; p++) {
		const char *k = key, *q = p;
		while (*k && *q == *k)
			k++, q++;
		if (*k || (p != cmdline && p[-1] != ' '))
			continue;
		uint32_t v = 0;
		while (*q >= '0' && *q <= '9')
			v = v * 10 + (uint32_t)(*q++ - '0');
		return v;
	}
	return dflt;
}

static uint32_t gcd(uint32_t a, uint32_t b)
{
	while (b) {
		uint32_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

static void slice(uint32_t cpu, uint32_t *first, uint32_t *len)
{
	*first = npages * cpu / ncpus;
	*len = npages * (cpu + 1) / ncpus - *first;
}

static volatile uint32_t *page_at(uint32_t i)
{
	return (volatile uint32_t *)(uintptr_t)(BASE + i * PAGE);
}

/* Touch the CPU's slice pass after pass until told to stop. */
static void touch(uint32_t cpu)
{
	uint32_t first, len, idx = 0, step;
	slice(cpu, &first, &len);
	step = stride % len ? stride % len : 1; /* guest_main checked it is coprime */
	for (;;) {
		for (uint32_t n = 0; n < len; n++) {
			volatile uint32_t *pg = page_at(first + idx);
			if (pg[1] != ((uint32_t)(uintptr_t)&pg[1] ^ SEED))
				errors[cpu]++;
			pg[0]++;
			idx += step;
			if (idx >= len)
				idx -= len;
		}
		passes[cpu]++;
		if (cpu == 0 && (inb(COM1 + 5) & 1) && inb(COM1) == 'V')
			stop = 1;
		if (stop)
			return;
	}
}

void ap_main(uint32_t cpu)
{
	__atomic_add_fetch(&aps_up, 1, __ATOMIC_SEQ_CST);
	while (!npages)
		__asm__ volatile("pause");
	touch(cpu);
	__atomic_add_fetch(&done, 1, __ATOMIC_SEQ_CST);
}

static void lapic_icr(uint32_t low)
{
	volatile uint32_t *icr = (volatile uint32_t *)(uintptr_t)(LAPIC + 0x300);
	*icr = low;
	while (*icr & (1u << 12)) /* delivery pending */
		;
}

static void start_aps(void)
{
	const char *s = trampoline_start;
	char *d = (char *)(uintptr_t)TRAMPOLINE;
	while (s < trampoline_end)
		*d++ = *s++;
	lapic_icr(0x000c4500);			    /* INIT, all but self */
	for (volatile int i = 0; i < 100000; i++)
		;
	lapic_icr(0x000c4600 | TRAMPOLINE >> 12); /* SIPI, twice as the MP spec says */
	lapic_icr(0x000c4600 | TRAMPOLINE >> 12);
	while (aps_up < ncpus - 1)
		;
}

void guest_main(const struct multiboot_info *mbi)
{
	const char *cmdline = (mbi->flags & 4) ? (const char *)(uintptr_t)mbi->cmdline : "";
	uint32_t top = 0x100000u + mbi->mem_upper * 1024u;
	uint32_t n = (top - BASE) / PAGE;
	ncpus = arg(cmdline, "cpus=", 1);
	stride = arg(cmdline, "stride=", 1);
	if (ncpus < 1 || ncpus > MAX_CPUS || !stride) {
		puts_serial("BAD ARGS\n");
		return;
	}
	outb(COM1 + 1, 0);	/* no interrupts */
	outb(COM1 + 3, 0x03);	/* 8N1 */
	for (uint32_t c = 0; c < ncpus; c++) {
		uint32_t len = n * (c + 1) / ncpus - n * c / ncpus;
		if (gcd(stride % len ? stride % len : 1, len) != 1) {
			puts_serial("BAD STRIDE\n");
			return;
		}
	}
	if (ncpus > 1)
		start_aps();
	for (uint32_t a = BASE; a < top; a += PAGE) {
		volatile uint32_t *pg = (volatile uint32_t *)(uintptr_t)a;
		pg[0] = 0;
		for (uint32_t w = 1; w < PAGE / 4; w++)
			pg[w] = (a + 4 * w) ^ SEED;
	}
	puts_serial("READY pages=");
	putu(n);
	puts_serial(" cpus=");
	putu(ncpus);
	puts_serial(" stride=");
	putu(stride);
	putc_serial('\n');
	npages = n; /* lets the APs go */
	touch(0);
	while (done < ncpus - 1)
		;

	uint32_t bad = 0, first_bad = 0, errs = 0;
	for (uint32_t c = 0; c < ncpus; c++) {
		uint32_t first, len;
		slice(c, &first, &len);
		errs += errors[c];
		for (uint32_t i = first; i < first + len; i++) {
			volatile uint32_t *pg = page_at(i);
			uint32_t ok = pg[0] == passes[c];
			for (uint32_t w = 1; w < PAGE / 4; w++)
				ok &= pg[w] == ((uint32_t)(uintptr_t)&pg[w] ^ SEED);
			if (!ok && !bad++)
				first_bad = (uint32_t)(uintptr_t)pg;
		}
	}
	puts_serial(bad || errs ? "VERIFY FAIL" : "VERIFY OK");
	puts_serial(" pages=");
	putu(n);
	puts_serial(" bad=");
	putu(bad);
	if (bad) {
		puts_serial(" first=");
		putx(first_bad);
	}
	puts_serial(" read_errors=");
	putu(errs);
	puts_serial(" passes=");
	for (uint32_t c = 0; c < ncpus; c++) {
		putu(passes[c]);
		putc_serial(c + 1 < ncpus ? ',' : '\n');
	}
}
