/* SPDX-License-Identifier: MIT */
/*
 * kvm.h - a minimal KVM runner on postcopy memory (tools/vmm/kvm.c).
 *
 * One VM, two memslots: slot 0 holds the guest code (tools/vmm/kvm_guest.S),
 * slot 1 is the memory under test, at KVM_GUEST_MEM_GPA (with paging on, a
 * third holds the guest's page tables).  V vCPUs each
 * write one word to every 4 KiB page of their slice and read another, as
 * the kernel's demand_paging_test guest does, then report on an I/O port.
 * The memory is either plain (the baseline) or a postcopy region, resolved
 * on one of these paths:
 *
 *   wait  vCPUs sleep in KVM_RUN while the region's handler threads
 *         resolve their faults (QEMU's way; works on every kernel).
 *   exit  the region is in exit mode (UFFD_FEATURE_SIGBUS), so KVM_RUN
 *         fails with EFAULT; where the kernel fills in
 *         KVM_EXIT_MEMORY_FAULT with the guest address, the vCPU thread
 *         translates it and calls pc_resolve() itself, then re-enters.
 *   bitmap the KVM userfault bitmap (KVM_CAP_USERFAULT, our patch series in
 *         patches/linux-6.12): slot 1 has KVM_MEM_USERFAULT and a bit set
 *         for each page the region lacks when the VM is created, until the
 *         vCPU thread resolved the page itself (pc_resolve(), then the bit
 *         is cleared); the region stays in wait mode, so KVM's own
 *         accesses are served by handler threads.
 *
 * Stock kernels (6.1, Debian's 6.12) return a bare EFAULT with no address,
 * and the PVM flavour of KVM an MMIO exit, so kvm_probe_exit_path() finds
 * out with a one-page VM before anyone relies on it.  Internal: used by
 * `postcopy kvm-bench` and the tests.
 */
#ifndef PC_KVM_H
#define PC_KVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "postcopy.h"

/* Guest-physical address of slot 1.  The guest runs with 32-bit addresses,
 * and the top of the 4 GiB holds the TSS pages Intel needs: slot 1 may be
 * at most 2 GiB. */
#define KVM_GUEST_MEM_GPA 0x40000000ull
#define KVM_GUEST_MEM_MAX (2ull << 30)
/* The port the guest reports its sum on when its slice is done. */
#define KVM_GUEST_PORT_DONE 0x10
/* The port kvm_guest_outs writes guest memory to (KVM reads it). */
#define KVM_GUEST_PORT_OUTS 0x11
/* Bytes kvm_guest_outs sends: from the start of vCPU 0's slice. */
#define KVM_GUEST_OUTS_BYTES 16

enum kvm_path {
	KVM_PATH_NONE, /* plain memory: the no-userfaultfd baseline */
	KVM_PATH_WAIT,
	KVM_PATH_EXIT,
	KVM_PATH_BITMAP,
};

const char *kvm_path_str(enum kvm_path p);

/* What made KVM_RUN return, summed over the vCPUs. */
struct kvm_exit_counts {
	uint64_t io;		/* the guest's report (one per vCPU) */
	uint64_t memory_fault;	/* EFAULT with KVM_EXIT_MEMORY_FAULT */
	uint64_t userfault;	/* ... of those, for a bit of the bitmap */
	uint64_t intr;		/* EINTR: a signal reached the vCPU thread */
	uint64_t other;		/* anything else (an error) */
};

struct kvm_guest_opts {
	char *mem;	    /* slot 1: the guest view of the region, or plain memory */
	uint64_t size;	    /* bytes; a multiple of vcpus * 4 KiB */
	unsigned vcpus;	    /* each takes size / vcpus */
	enum kvm_path path;
	pc_region *region;  /* NULL with KVM_PATH_NONE */
	/* vCPU 0 starts with kvm_guest_outs: KVM itself reads the first
	 * KVM_GUEST_OUTS_BYTES of its slice (into res->outs), then the guest
	 * goes on as usual. */
	bool kvm_reads;
	/* KVM_PATH_BITMAP: clear only the bit of the 4 KiB page KVM exited
	 * on, not the bits of the whole (huge) page that came in with it, so
	 * that every 4 KiB page of a huge page exits once.  On a kernel that
	 * mapped a huge page over bits still set (no 4 KiB rule), those pages
	 * would not exit, and the exits would be fewer than the pages. */
	bool bitmap_4k;
	/* The guest runs with paging on (long mode, 4 KiB pages; see kvm.c's
	 * map_guest()), not in flat protected mode: KVM then walks its page
	 * tables, and shadow paging prefetches through the guest's PTEs
	 * (FNAME(prefetch_gpte)()) rather than by guest address
	 * (direct_pte_prefetch_many()). */
	bool paging;
};

struct kvm_guest_result {
	double seconds;	       /* all vCPUs ready to the last one done */
	uint64_t pages;	       /* 4 KiB pages the guest touched */
	uint32_t *sums;	       /* per vCPU: what the guest read (malloc'ed) */
	unsigned char outs[KVM_GUEST_OUTS_BYTES]; /* with kvm_reads */
	struct kvm_exit_counts exits;
	char error[320];       /* why it failed, when it did */
};

/*
 * Is /dev/kvm there and usable?  0, or a negative errno with a reason in
 * @why ("no /dev/kvm", an old API version).
 */
int kvm_available(char *why, size_t why_len);

/*
 * Run a one-page VM on an exit-mode region and see what KVM_RUN reports
 * when the guest touches the missing page.  Returns 1 when the kernel
 * exits with KVM_EXIT_MEMORY_FAULT and the right guest address (the exit
 * path works; the guest is then resolved and run to the end), 0 when it
 * does not (@why says what came back instead), or a negative errno.
 */
int kvm_probe_exit_path(char *why, size_t why_len);

/* Does this kernel have the KVM userfault bitmap (KVM_CAP_USERFAULT)? */
bool kvm_has_userfault_bitmap(void);
/* Does it advertise KVM_CAP_MEMORY_FAULT_INFO (KVM_EXIT_MEMORY_FAULT
 * exists; whether a userfault in KVM_RUN takes it is another matter)? */
bool kvm_has_memory_fault_info(void);

/*
 * Create the VM on opts->mem, run the vCPUs to the end and fill @res.
 * Returns 0, or a negative errno with res->error set: -EFAULT for a bare
 * EFAULT on the exit path (the kernel did not say which page; nothing is
 * guessed), -EIO for an unexpected exit.  On success every vCPU reported.
 */
int kvm_run_guest(const struct kvm_guest_opts *opts,
		  struct kvm_guest_result *res);
void kvm_guest_result_free(struct kvm_guest_result *res);

/*
 * The guest's expectations, for verification against a source:
 * the sum a vCPU reads over pages [first, first + n) of slot 1, and the
 * number of 4 KiB pages of @mem that differ from @src once the guest
 * wrote its words (the first is reported in *first_bad).
 */
int kvm_expected_sum(pc_source *src, uint64_t first, uint64_t n,
		     uint32_t *sum);
uint64_t kvm_verify(const char *mem, uint64_t size, pc_source *src,
		    uint64_t *first_bad);

#endif
