/* SPDX-License-Identifier: MIT */
/*
 * kvm.c - a minimal KVM runner on postcopy memory: one VM, memslots over a
 * region, vCPU threads running the memstress guest (tools/vmm/kvm_guest.S), and
 * the three paths that resolve their faults (see kvm.h).
 *
 * The exit path never treats a bare EFAULT as an address: it acts only on
 * KVM_EXIT_MEMORY_FAULT, which the kernel fills in together with the
 * guest address; before each KVM_RUN the exit reason is set to a value
 * KVM never uses, so a stale reason from an earlier exit (6.1 leaves one)
 * cannot pass for a fresh one.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gate.h"
#include "kvm.h"

/* Newer than the 6.1 headers. */
#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif
#ifndef KVM_CAP_MEMORY_FAULT_INFO
#define KVM_CAP_MEMORY_FAULT_INFO 232
#endif

/* The KVM userfault bitmap of patches/linux-6.12 (after James Houghton's
 * proposal); the capability number is provisional, as in the patch. */
#ifndef KVM_CAP_USERFAULT
#define KVM_CAP_USERFAULT 1000
#endif
#ifndef KVM_MEM_USERFAULT
#define KVM_MEM_USERFAULT (1u << 3)
#endif
#ifndef KVM_MEMORY_EXIT_FLAG_USERFAULT
#define KVM_MEMORY_EXIT_FLAG_USERFAULT (1ull << 4)
#endif

/* kvm_userspace_memory_region2 (Linux 6.8) with the patch series'
 * userfault_bitmap taken from its padding. */
struct memory_region2 {
	uint32_t slot;
	uint32_t flags;
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t guest_memfd_offset;
	uint32_t guest_memfd;
	uint32_t pad1;
	uint64_t userfault_bitmap;
	uint64_t pad2[13];
};
#define SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct memory_region2)

/* kvm_run's memory_fault exit (Linux 6.8); the 6.1 headers lack the
 * member, but it is the first thing in the exit union, as hw is. */
struct memory_fault_exit {
	uint64_t flags;
	uint64_t gpa;
	uint64_t size;
};

static const struct memory_fault_exit *memory_fault_of(const struct kvm_run *run)
{
	return (const void *)&run->hw;
}

/* The userfault bitmap is made of little-endian 64-bit words (patch 4 of
 * patches/linux-6.12): unsigned long on x86-64, the only place this runs. */
#define BITS_PER_WORD (8 * sizeof(unsigned long))
_Static_assert(sizeof(unsigned long) == 8, "the bitmap's words are 64 bits");

/* Stored in exit_reason before KVM_RUN: no exit has this number. */
#define EXIT_REASON_UNSET 0xffffffffu

#define CODE_SLOT_SIZE (64u << 10)
#define CODE_GPA 0x1000u
/* With paging on: slot 2, the guest's page tables (map_guest()), between
 * the code slot and slot 1. */
#define TABLES_GPA 0x100000ull
/* 4-level paging: a page table maps 2 MiB, a directory 1 GiB. */
#define PT_SPAN (2ull << 20)
#define PTE_PRESENT 0x001ull
#define PTE_WRITE 0x002ull
#define PTE_ACCESSED 0x020ull
#define PTE_DIRTY 0x040ull
#define PTE_ADDR 0x000ffffffffff000ull
#define CR0_PE 0x00000001ull
#define CR0_PG 0x80000000ull
#define CR4_PAE 0x00000020ull
#define EFER_LME 0x100ull
#define EFER_LMA 0x400ull
/* KVM_SET_TSS_ADDR wants three pages outside every memslot (Intel). */
#define TSS_GPA 0xfffbd000u
/* A page reported again this many times in a row after being resolved
 * means KVM is not making progress: stop rather than spin. */
#define MAX_SAME_FAULT 64

extern const unsigned char kvm_guest_code[], kvm_guest_outs[], kvm_guest_code_end[];

struct vm {
	int kvm_fd;
	int fd;
	size_t run_size;
	char *code; /* slot 0 */
	char *mem;  /* slot 1 */
	uint64_t size;
	char *tables; /* slot 2, with paging on: the guest's page tables */
	size_t tables_pages, tables_used;
	struct kvm_cpuid2 *cpuid; /* with paging on: what the vCPUs get */
	unsigned long *userfault_bitmap; /* KVM_PATH_BITMAP: a bit per 4 KiB page */
};

struct vcpu {
	struct vm *vm;
	unsigned id;
	int fd;
	struct kvm_run *run;
	enum kvm_path path;
	pc_region *region;
	uint64_t npages;
	bool kvm_reads; /* start with kvm_guest_outs */
	bool bitmap_4k; /* clear the bit of the 4 KiB page exited on only */
	struct gate *gate;

	/* Results, written by the vCPU's own thread. */
	int err;
	char error[256];
	uint32_t sum;
	unsigned char outs[KVM_GUEST_OUTS_BYTES];
	unsigned outs_len;
	uint64_t end_ns;
	struct kvm_exit_counts exits;
};

static int open_kvm(char *why, size_t why_len)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(why, why_len, "cannot open /dev/kvm: %s%s", strerror(e),
			 e == ENOENT ? " (no KVM on this machine: load kvm-intel "
				       "or kvm-amd, or run inside a VM with "
				       "nested virtualization)" : "");
		return -e;
	}
	int version = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		snprintf(why, why_len, "/dev/kvm speaks API version %d, not %d",
			 version, KVM_API_VERSION);
		close(fd);
		return -EOPNOTSUPP;
	}
	return fd;
}

int kvm_available(char *why, size_t why_len)
{
	int fd = open_kvm(why, why_len);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

static void vm_destroy(struct vm *vm)
{
	if (vm->fd >= 0)
		close(vm->fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	if (vm->code && vm->code != MAP_FAILED)
		munmap(vm->code, CODE_SLOT_SIZE);
	if (vm->tables && vm->tables != MAP_FAILED)
		munmap(vm->tables, vm->tables_pages * PC_SOURCE_PAGE_SIZE);
	free(vm->cpuid);
	free(vm->userfault_bitmap);
}

static int set_slot(struct vm *vm, uint32_t slot, uint64_t gpa, void *hva,
		    uint64_t size)
{
	struct kvm_userspace_memory_region region = {
		.slot = slot,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uintptr_t)hva,
	};
	return ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0 ? -errno : 0;
}

/* Slot 1 with KVM_MEM_USERFAULT, a bit set for each page the region does
 * not have yet.  One that arrives later costs one exit, which finds it. */
static int set_userfault_slot(struct vm *vm, const pc_region *r)
{
	uint64_t pages = vm->size / PC_SOURCE_PAGE_SIZE;
	size_t words = (pages + BITS_PER_WORD - 1) / BITS_PER_WORD;
	vm->userfault_bitmap = calloc(words, sizeof(unsigned long));
	if (!vm->userfault_bitmap)
		return -ENOMEM;
	uint64_t base = (uint64_t)(vm->mem - (char *)pc_region_addr(r));
	for (uint64_t i = 0; i < pages; i++)
		if (!pc_region_page_present(r, base + i * PC_SOURCE_PAGE_SIZE))
			vm->userfault_bitmap[i / BITS_PER_WORD] |= 1ul << (i % BITS_PER_WORD);
	struct memory_region2 region = {
		.slot = 1,
		.flags = KVM_MEM_USERFAULT,
		.guest_phys_addr = KVM_GUEST_MEM_GPA,
		.memory_size = vm->size,
		.userspace_addr = (uintptr_t)vm->mem,
		.userfault_bitmap = (uintptr_t)vm->userfault_bitmap,
	};
	return ioctl(vm->fd, SET_USER_MEMORY_REGION2, &region) < 0 ? -errno : 0;
}

/* The table *@entry points to, taken from slot 2 when there is none yet;
 * NULL when slot 2 is full. */
static uint64_t *next_table(struct vm *vm, uint64_t *entry)
{
	if (!(*entry & PTE_PRESENT)) {
		if (vm->tables_used == vm->tables_pages)
			return NULL;
		*entry = (TABLES_GPA + vm->tables_used++ * PC_SOURCE_PAGE_SIZE) |
			 PTE_PRESENT | PTE_WRITE | PTE_ACCESSED;
	}
	return (uint64_t *)(vm->tables + ((*entry & PTE_ADDR) - TABLES_GPA));
}

/* Identity-map [gpa, gpa + size) with 4 KiB pages. */
static int map_range(struct vm *vm, uint64_t gpa, uint64_t size)
{
	for (uint64_t va = gpa; va < gpa + size; va += PC_SOURCE_PAGE_SIZE) {
		uint64_t *table = (uint64_t *)vm->tables; /* the PML4 */
		for (unsigned shift = 39; shift > 12 && table; shift -= 9)
			table = next_table(vm, &table[(va >> shift) & 511]);
		if (!table)
			return -ENOSPC;
		table[(va >> 12) & 511] = va | PTE_PRESENT | PTE_WRITE |
					  PTE_ACCESSED | PTE_DIRTY;
	}
	return 0;
}

/* The CPUID entries KVM supports, for KVM_SET_CPUID2. */
static int supported_cpuid(struct vm *vm)
{
	for (uint32_t n = 64; n <= 1024; n *= 2) {
		vm->cpuid = calloc(1, sizeof(*vm->cpuid) + n * sizeof(vm->cpuid->entries[0]));
		if (!vm->cpuid)
			return -ENOMEM;
		vm->cpuid->nent = n;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->cpuid) == 0)
			return 0;
		int e = errno;
		free(vm->cpuid);
		vm->cpuid = NULL;
		if (e != E2BIG)
			return -e;
	}
	return -E2BIG;
}

/*
 * Paging on: long mode's 4-level paging with 4 KiB pages, the tables in
 * slot 2 (plain memory, never under userfault), identity-mapping the code
 * slot and slot 1; the vCPUs run the same 32-bit code in compatibility
 * mode (vcpu_create()).  Long mode because it is what 64-bit guests run
 * (KVM's paging64 walker, also the one of nested NPT), and the only paging
 * the PVM flavour of KVM supports.  4 KiB pages, not 2 MiB ones: the
 * shadow MMU maps a guest huge page with direct shadow pages and
 * prefetches those through direct_pte_prefetch_many(), as with paging
 * off; only 4 KiB guest PTEs take FNAME(prefetch_gpte)().  The entries
 * come with Accessed (and the PTEs Dirty) set, as a kernel's direct map
 * has them: FNAME(prefetch_gpte)() skips a gpte without Accessed, so
 * there would be no prefetch to catch.
 */
static int map_guest(struct vm *vm)
{
	/* The PML4, the PDPT, a directory per GiB below 4 GiB, a table for
	 * the code slot and slot 1's (KVM_GUEST_MEM_GPA is 2 MiB aligned). */
	vm->tables_pages = 2 + 4 + 1 + (vm->size + PT_SPAN - 1) / PT_SPAN;
	vm->tables_used = 1;
	vm->tables = mmap(NULL, vm->tables_pages * PC_SOURCE_PAGE_SIZE,
			  PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vm->tables == MAP_FAILED)
		return -errno;
	/* Long mode's bits in KVM_SET_SREGS want a vCPU whose CPUID has PAE
	 * and LM: Debian's 6.12 fails it with EINVAL on a vCPU with no CPUID
	 * (6.1 and kvm-pvm took it).  The vCPUs get what KVM supports. */
	int ret = supported_cpuid(vm);
	if (ret == 0)
		ret = map_range(vm, 0, CODE_SLOT_SIZE);
	if (ret == 0)
		ret = map_range(vm, KVM_GUEST_MEM_GPA, vm->size);
	if (ret == 0)
		ret = set_slot(vm, 2, TABLES_GPA, vm->tables,
			       vm->tables_pages * PC_SOURCE_PAGE_SIZE);
	return ret;
}

/* With @userfault_region, slot 1 gets a userfault bitmap from its state;
 * with @paging, slot 2 the page tables. */
static int vm_create(struct vm *vm, char *mem, uint64_t size,
		     const pc_region *userfault_region, bool paging,
		     char *why, size_t why_len)
{
	*vm = (struct vm){ .kvm_fd = -1, .fd = -1, .mem = mem, .size = size };
	if (size == 0 || size % PC_SOURCE_PAGE_SIZE || size > KVM_GUEST_MEM_MAX) {
		snprintf(why, why_len, "guest memory of %llu bytes: must be a "
			 "multiple of 4 KiB and at most %llu MiB",
			 (unsigned long long)size,
			 (unsigned long long)(KVM_GUEST_MEM_MAX >> 20));
		return -EINVAL;
	}
	int ret = open_kvm(why, why_len);
	if (ret < 0)
		return ret;
	vm->kvm_fd = ret;
	const char *step = "KVM_CREATE_VM";
	vm->fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		goto err;
	step = "KVM_GET_VCPU_MMAP_SIZE";
	ret = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (ret <= 0)
		goto err;
	vm->run_size = (size_t)ret;
	step = "KVM_SET_TSS_ADDR";
	if (ioctl(vm->fd, KVM_SET_TSS_ADDR, TSS_GPA) < 0)
		goto err;

	step = "mmap of the code slot";
	vm->code = mmap(NULL, CODE_SLOT_SIZE, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vm->code == MAP_FAILED)
		goto err;
	memcpy(vm->code + CODE_GPA, kvm_guest_code,
	       (size_t)(kvm_guest_code_end - kvm_guest_code));
	step = "KVM_SET_USER_MEMORY_REGION (code)";
	if ((ret = set_slot(vm, 0, 0, vm->code, CODE_SLOT_SIZE)) < 0) {
		errno = -ret;
		goto err;
	}
	step = userfault_region ? "KVM_SET_USER_MEMORY_REGION2 (guest memory, KVM_MEM_USERFAULT)"
				: "KVM_SET_USER_MEMORY_REGION (guest memory)";
	ret = userfault_region ? set_userfault_slot(vm, userfault_region)
			       : set_slot(vm, 1, KVM_GUEST_MEM_GPA, mem, size);
	if (ret < 0) {
		errno = -ret;
		goto err;
	}
	step = "the page tables (slot 2)";
	if (paging && (ret = map_guest(vm)) < 0) {
		errno = -ret;
		goto err;
	}
	return 0;
err:
	ret = -errno;
	snprintf(why, why_len, "%s: %s", step, strerror(errno));
	vm_destroy(vm);
	return ret;
}

/* Flat 32-bit code at CODE_GPA with the slice in the registers
 * kvm_guest.S expects: in protected mode with paging off, or in long
 * mode's compatibility mode (a code segment with L clear and D set) on the
 * tables of map_guest().  Virtual = physical either way. */
static int vcpu_create(struct vcpu *v, struct vm *vm, unsigned id,
		       uint64_t first_gpa, uint64_t npages, char *why,
		       size_t why_len)
{
	const char *step = "KVM_CREATE_VCPU";
	v->vm = vm;
	v->id = id;
	v->npages = npages;
	v->run = MAP_FAILED;
	v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0)
		goto err;
	step = "mmap of kvm_run";
	v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->fd, 0);
	if (v->run == MAP_FAILED)
		goto err;

	step = "KVM_SET_CPUID2";
	if (vm->cpuid && ioctl(v->fd, KVM_SET_CPUID2, vm->cpuid) < 0)
		goto err;
	struct kvm_sregs sregs;
	step = "KVM_GET_SREGS";
	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		goto err;
	struct kvm_segment seg = {
		.base = 0, .limit = 0xffffffff, .selector = 1 << 3,
		.type = 11 /* code: execute/read, accessed */, .present = 1,
		.dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	sregs.cs = seg;
	seg.type = 3; /* data: read/write, accessed */
	seg.selector = 2 << 3;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg;
	sregs.cr0 |= CR0_PE;
	if (vm->tables) {
		sregs.cr0 |= CR0_PG;
		sregs.cr3 = TABLES_GPA; /* the PML4 */
		sregs.cr4 |= CR4_PAE;
		sregs.efer |= EFER_LME | EFER_LMA;
	}
	step = "KVM_SET_SREGS";
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		goto err;
	/* A KVM may keep paging off without failing the ioctl (kvm-pvm does
	 * so for 32-bit paging): a guest said to page must be paging. */
	step = "KVM_GET_SREGS";
	if (vm->tables && ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		goto err;
	if (vm->tables && (!(sregs.cr0 & CR0_PG) || !(sregs.efer & EFER_LMA))) {
		snprintf(why, why_len, "vCPU %u: KVM did not take paging on "
			 "(CR0 %#llx, EFER %#llx after KVM_SET_SREGS)", id,
			 (unsigned long long)sregs.cr0, (unsigned long long)sregs.efer);
		return -EOPNOTSUPP;
	}
	struct kvm_regs regs = {
		.rip = CODE_GPA + (v->kvm_reads ? kvm_guest_outs - kvm_guest_code : 0),
		.rflags = 2,
		.rsi = first_gpa, .rcx = npages, .rdi = PC_SOURCE_PAGE_SIZE,
	};
	step = "KVM_SET_REGS";
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		goto err;
	return 0;
err:;
	int ret = -errno;
	snprintf(why, why_len, "vCPU %u: %s: %s", id, step, strerror(errno));
	return ret;
}

static void vcpu_destroy(struct vcpu *v)
{
	if (v->run && v->run != MAP_FAILED)
		munmap(v->run, v->vm->run_size);
	if (v->fd >= 0)
		close(v->fd);
}

static int vcpu_fail(struct vcpu *v, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int vcpu_fail(struct vcpu *v, int err, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(v->error, sizeof(v->error), "vCPU %u: ", v->id);
	va_start(ap, fmt);
	vsnprintf(v->error + n, sizeof(v->error) - (size_t)n, fmt, ap);
	va_end(ap);
	return v->err = err;
}

static const char *exit_name(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
	case KVM_EXIT_IO: return "KVM_EXIT_IO";
	case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
	case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
	case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
	case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
	case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
	case KVM_EXIT_MEMORY_FAULT: return "KVM_EXIT_MEMORY_FAULT";
	case EXIT_REASON_UNSET: return "none";
	}
	return "another exit";
}

static bool in_guest_memory(const struct vm *vm, uint64_t gpa)
{
	return gpa >= KVM_GUEST_MEM_GPA && gpa - KVM_GUEST_MEM_GPA < vm->size;
}

/*
 * Exit and bitmap paths: make the page KVM could not map present, by guest
 * address, on this thread.  On the bitmap path, then clear the bits of
 * every 4 KiB page that went in (a huge page has many), with release
 * order so that KVM sees the contents before the cleared bit; with
 * bitmap_4k only the bit of the 4 KiB page KVM exited on, and a page that
 * came in with an earlier one (the rest of a huge page) is not resolved
 * again, only its bit cleared.
 */
static int resolve_gpa(struct vcpu *v, uint64_t gpa)
{
	struct vm *vm = v->vm;
	if (!in_guest_memory(vm, gpa))
		return vcpu_fail(v, -EFAULT, "memory fault at GPA %#llx, outside "
				 "the guest memory", (unsigned long long)gpa);
	uint64_t offset = gpa - KVM_GUEST_MEM_GPA;
	uint64_t region_offset = (uint64_t)(vm->mem - (char *)pc_region_addr(v->region)) + offset;
	if (!(v->bitmap_4k && vm->userfault_bitmap &&
	      pc_region_page_present(v->region, region_offset))) {
		int ret = pc_resolve(vm->mem + offset);
		if (ret < 0)
			return vcpu_fail(v, ret, "resolving GPA %#llx: %s",
					 (unsigned long long)gpa, strerror(-ret));
	}
	if (vm->userfault_bitmap) {
		uint64_t page = v->bitmap_4k ? PC_SOURCE_PAGE_SIZE : pc_region_page_size(v->region);
		uint64_t first = offset / page * page / PC_SOURCE_PAGE_SIZE;
		uint64_t end = first + page / PC_SOURCE_PAGE_SIZE;
		for (uint64_t i = first; i < end; i++)
			__atomic_fetch_and(&vm->userfault_bitmap[i / BITS_PER_WORD],
					   ~(1ul << (i % BITS_PER_WORD)), __ATOMIC_RELEASE);
	}
	return 0;
}

/* kvm_guest_outs: the bytes KVM read from guest memory, maybe in parts. */
static void take_outs(struct vcpu *v, const struct kvm_run *run)
{
	const unsigned char *data = (const unsigned char *)run + run->io.data_offset;
	for (uint32_t i = 0; i < run->io.size * run->io.count &&
			     v->outs_len < sizeof(v->outs); i++)
		v->outs[v->outs_len++] = data[i];
}

static int vcpu_loop(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint64_t last_gpa = UINT64_MAX;
	unsigned same = 0;

	for (;;) {
		run->exit_reason = EXIT_REASON_UNSET;
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			int e = errno;
			if (e == EINTR || e == EAGAIN) {
				v->exits.intr++;
				continue;
			}
			const struct memory_fault_exit *mf = memory_fault_of(run);
			bool userfault = mf->flags & KVM_MEMORY_EXIT_FLAG_USERFAULT;
			if (e == EFAULT && run->exit_reason == KVM_EXIT_MEMORY_FAULT &&
			    ((v->path == KVM_PATH_EXIT && !userfault) ||
			     (v->path == KVM_PATH_BITMAP && userfault))) {
				uint64_t gpa = mf->gpa & ~(uint64_t)(PC_SOURCE_PAGE_SIZE - 1);
				v->exits.memory_fault++;
				v->exits.userfault += userfault;
				same = gpa == last_gpa ? same + 1 : 0;
				last_gpa = gpa;
				if (same >= MAX_SAME_FAULT)
					return vcpu_fail(v, -EIO, "KVM reported a fault at "
							 "GPA %#llx %u times after it was "
							 "resolved", (unsigned long long)gpa, same);
				int ret = resolve_gpa(v, gpa);
				if (ret < 0)
					return ret;
				continue;
			}
			v->exits.other++;
			if (e == EFAULT && run->exit_reason == KVM_EXIT_MEMORY_FAULT)
				return vcpu_fail(v, -EFAULT, "KVM_EXIT_MEMORY_FAULT at GPA "
						 "%#llx (flags %#llx) on the %s path: KVM "
						 "could not get the host page",
						 (unsigned long long)mf->gpa,
						 (unsigned long long)mf->flags,
						 kvm_path_str(v->path));
			if (e == EFAULT)
				return vcpu_fail(v, -EFAULT, "KVM_RUN failed with EFAULT "
						 "and no memory-fault exit (exit reason: %s): "
						 "the kernel did not say which guest page "
						 "faulted and postcopy does not guess; %s",
						 exit_name(run->exit_reason),
						 v->path == KVM_PATH_EXIT
						 ? "this kernel cannot run the exit path "
						   "(use the wait path)"
						 : "guest memory could not be mapped");
			return vcpu_fail(v, -e, "KVM_RUN: %s", strerror(e));
		}
		if (run->exit_reason == KVM_EXIT_IO &&
		    run->io.port == KVM_GUEST_PORT_DONE &&
		    run->io.direction == KVM_EXIT_IO_OUT && run->io.size == 4) {
			memcpy(&v->sum, (char *)run + run->io.data_offset, 4);
			v->exits.io++;
			return 0;
		}
		if (run->exit_reason == KVM_EXIT_IO && v->kvm_reads &&
		    run->io.port == KVM_GUEST_PORT_OUTS &&
		    run->io.direction == KVM_EXIT_IO_OUT) {
			take_outs(v, run);
			v->exits.io++;
			continue;
		}
		v->exits.other++;
		if (run->exit_reason == KVM_EXIT_FAIL_ENTRY)
			return vcpu_fail(v, -EIO, "KVM_EXIT_FAIL_ENTRY, hardware "
					 "reason %#llx", (unsigned long long)
					 run->fail_entry.hardware_entry_failure_reason);
		if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
			char data[96] = "";
			for (uint32_t i = 0, n = 0; i < run->internal.ndata && i < 4 &&
						  n < sizeof(data); i++)
				n += (uint32_t)snprintf(data + n, sizeof(data) - n, " %#llx",
						      (unsigned long long)run->internal.data[i]);
			return vcpu_fail(v, -EIO, "KVM_EXIT_INTERNAL_ERROR, suberror %u%s%s",
					 run->internal.suberror,
					 data[0] ? ", data" : "", data);
		}
		if (run->exit_reason == KVM_EXIT_MMIO)
			return vcpu_fail(v, -EIO, "KVM_EXIT_MMIO at GPA %#llx%s",
					 (unsigned long long)run->mmio.phys_addr,
					 in_guest_memory(v->vm, run->mmio.phys_addr)
					 ? ", inside guest memory: KVM could not map "
					   "the page and called it MMIO" : "");
		return vcpu_fail(v, -EIO, "unexpected exit %u (%s)",
				 run->exit_reason, exit_name(run->exit_reason));
	}
}

static void *vcpu_main(void *arg)
{
	struct vcpu *v = arg;
	if (v->region)
		pc_thread_attach(v->region, v->id);
	if (gate_arrive(v->gate))
		vcpu_loop(v);
	v->end_ns = gate_now_ns();
	if (v->region)
		pc_thread_detach(v->region);
	gate_leave(v->gate);
	return NULL;
}

static void add_exits(struct kvm_exit_counts *to, const struct kvm_exit_counts *from)
{
	to->io += from->io;
	to->memory_fault += from->memory_fault;
	to->userfault += from->userfault;
	to->intr += from->intr;
	to->other += from->other;
}

int kvm_run_guest(const struct kvm_guest_opts *o, struct kvm_guest_result *res)
{
	*res = (struct kvm_guest_result){ 0 };
	if (o->vcpus == 0 || o->size % ((uint64_t)o->vcpus * PC_SOURCE_PAGE_SIZE) ||
	    (o->path == KVM_PATH_NONE) != (o->region == NULL)) {
		snprintf(res->error, sizeof(res->error), "bad runner options: "
			 "%u vCPUs, %llu bytes, path %s%s", o->vcpus,
			 (unsigned long long)o->size, kvm_path_str(o->path),
			 o->region ? " with a region" : " without a region");
		return -EINVAL;
	}

	struct vm vm;
	int ret = vm_create(&vm, o->mem, o->size,
			    o->path == KVM_PATH_BITMAP ? o->region : NULL, o->paging,
			    res->error, sizeof(res->error));
	if (ret < 0)
		return ret;
	uint64_t slice_pages = o->size / o->vcpus / PC_SOURCE_PAGE_SIZE;
	struct vcpu *vcpus = calloc(o->vcpus, sizeof(*vcpus));
	pthread_t *threads = calloc(o->vcpus, sizeof(*threads));
	struct gate *g = calloc(1, sizeof(*g));
	res->sums = calloc(o->vcpus, sizeof(*res->sums));
	unsigned created = 0, started = 0;
	if (!vcpus || !threads || !g || !res->sums) {
		ret = -ENOMEM;
		snprintf(res->error, sizeof(res->error), "out of memory");
		goto out;
	}
	gate_init(g);
	for (; created < o->vcpus; created++) {
		struct vcpu *v = &vcpus[created];
		v->fd = -1;
		v->path = o->path;
		v->region = o->region;
		v->kvm_reads = o->kvm_reads && created == 0;
		v->bitmap_4k = o->bitmap_4k;
		v->gate = g;
		ret = vcpu_create(v, &vm, created, KVM_GUEST_MEM_GPA +
				  created * slice_pages * PC_SOURCE_PAGE_SIZE,
				  slice_pages, res->error, sizeof(res->error));
		if (ret < 0) {
			created++;
			goto out;
		}
	}
	for (; started < o->vcpus; started++) {
		ret = -pthread_create(&threads[started], NULL, vcpu_main,
				      &vcpus[started]);
		if (ret < 0) {
			snprintf(res->error, sizeof(res->error),
				 "creating vCPU thread %u: %s", started,
				 strerror(-ret));
			break;
		}
	}
	uint64_t start_ns;
	int waited = gate_run(g, started, ret == 0, o->region, &start_ns);
	uint64_t end_ns = start_ns;
	if (waited < 0) {
		/* Its vCPUs sleep in the kernel for good: leave them, their VM
		 * and their memory to the process's end. */
		snprintf(res->error, sizeof(res->error), "the pager failed: %s",
			 pc_region_error(o->region));
		return waited;
	}
	for (unsigned i = 0; i < started; i++) {
		struct vcpu *v = &vcpus[i];
		pthread_join(threads[i], NULL);
		add_exits(&res->exits, &v->exits);
		res->sums[i] = v->sum;
		if (v->kvm_reads)
			memcpy(res->outs, v->outs, sizeof(res->outs));
		if (v->end_ns > end_ns)
			end_ns = v->end_ns;
		if (v->err < 0 && ret == 0) {
			ret = v->err;
			snprintf(res->error, sizeof(res->error), "%s", v->error);
		}
	}
	res->seconds = (double)(end_ns - start_ns) / 1e9;
	res->pages = o->size / PC_SOURCE_PAGE_SIZE;
	gate_destroy(g);
out:
	for (unsigned i = 0; i < created; i++)
		vcpu_destroy(&vcpus[i]);
	free(g);
	free(vcpus);
	free(threads);
	vm_destroy(&vm);
	return ret;
}

int kvm_probe_exit_path(char *why, size_t why_len)
{
	pc_source *src;
	pc_region *r;
	struct vm vm;
	struct vcpu v = { .fd = -1, .path = KVM_PATH_EXIT };
	int ret = pc_source_pattern(PC_SOURCE_PAGE_SIZE, 1, &src);
	if (ret < 0) {
		snprintf(why, why_len, "probe source: %s", strerror(-ret));
		return ret;
	}
	struct pc_region_opts ro = { .size = PC_SOURCE_PAGE_SIZE,
				     .mode = PC_MODE_EXIT };
	ret = pc_region_create(&ro, src, &r, why, why_len);
	if (ret < 0)
		return ret;
	ret = pc_region_start(r);
	if (ret < 0) {
		snprintf(why, why_len, "probe region: %s", pc_region_error(r));
		goto out_region;
	}
	ret = vm_create(&vm, pc_region_addr(r), PC_SOURCE_PAGE_SIZE, NULL, false,
			why, why_len);
	if (ret < 0)
		goto out_region;
	v.region = r;
	ret = vcpu_create(&v, &vm, 0, KVM_GUEST_MEM_GPA, 1, why, why_len);
	if (ret < 0)
		goto out_vm;
	ret = vcpu_loop(&v);

	int has_info = ioctl(vm.kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_FAULT_INFO);
	uint32_t want;
	if (ret == -EFAULT && v.exits.memory_fault == 0) {
		snprintf(why, why_len, "a userfault in KVM_RUN gave a bare EFAULT "
			 "(exit reason: %s; KVM_CAP_MEMORY_FAULT_INFO %s), no "
			 "guest address", exit_name(v.run->exit_reason),
			 has_info > 0 ? "advertised" : "absent");
		ret = 0;
	} else if (ret == -EIO && v.run->exit_reason == KVM_EXIT_MMIO &&
		   in_guest_memory(&vm, v.run->mmio.phys_addr)) {
		/* Seen with kvm-pvm: a page it cannot map looks like MMIO. */
		snprintf(why, why_len, "a userfault in KVM_RUN came back as "
			 "KVM_EXIT_MMIO at the page's guest address, not as "
			 "KVM_EXIT_MEMORY_FAULT");
		ret = 0;
	} else if (ret < 0) {
		snprintf(why, why_len, "%s", v.error[0] ? v.error : "probe failed");
	} else if (v.exits.memory_fault != 1) {
		snprintf(why, why_len, "the guest finished after %llu memory-fault "
			 "exits, not 1", (unsigned long long)v.exits.memory_fault);
		ret = 0;
	} else if (kvm_expected_sum(src, 0, 1, &want) < 0 || v.sum != want ||
		   kvm_verify(pc_region_addr(r), PC_SOURCE_PAGE_SIZE, src, NULL)) {
		snprintf(why, why_len, "the probe guest read or left wrong contents");
		ret = -EIO;
	} else {
		snprintf(why, why_len, "KVM_EXIT_MEMORY_FAULT with the guest address");
		ret = 1;
	}
out_vm:
	vcpu_destroy(&v);
	vm_destroy(&vm);
out_region:
	pc_region_destroy(r);
	return ret;
}

bool kvm_has_userfault_bitmap(void)
{
	char why[160];
	int fd = open_kvm(why, sizeof(why));
	if (fd < 0)
		return false;
	bool has = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USERFAULT) > 0;
	close(fd);
	return has;
}

bool kvm_has_memory_fault_info(void)
{
	char why[160];
	int fd = open_kvm(why, sizeof(why));
	if (fd < 0)
		return false;
	bool has = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MEMORY_FAULT_INFO) > 0;
	close(fd);
	return has;
}
