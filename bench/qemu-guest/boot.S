/* SPDX-License-Identifier: MIT */
/*
 * Entry of the QEMU bench guest: a multiboot (v1) header, a flat GDT of our
 * own (multiboot leaves the loader's in place, which may be anywhere), a
 * stack per CPU, and the real-mode trampoline that application processors
 * start in after INIT-SIPI-SIPI (copied below 1 MiB by guest.c).
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003	/* page-aligned modules, memory info */
#define MAX_CPUS 8
#define STACK 16384

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

	.text
	.code32
	.globl _start
_start:
	cli
	lgdt gdt_desc
	ljmp $0x08, $1f
1:	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov %ax, %fs
	mov %ax, %gs
	mov $stacks + STACK, %esp
	push %ebx			/* the multiboot information */
	call guest_main
2:	cli
	hlt
	jmp 2b

/* An AP lands here in protected mode: take the next CPU number, its stack. */
ap_entry32:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov %ax, %fs
	mov %ax, %gs
	mov $1, %eax
	lock xadd %eax, next_cpu
	mov %eax, %esp
	inc %esp
	imul $STACK, %esp
	add $stacks, %esp
	push %eax
	call ap_main
3:	cli
	hlt
	jmp 3b

/* Real-mode start of an AP, run from the copy at trampoline address. */
	.code16
	.globl trampoline_start, trampoline_end
trampoline_start:
	cli
	mov %cs, %ax
	mov %ax, %ds
	lgdtl tramp_gdt_desc - trampoline_start
	mov %cr0, %eax
	or $1, %eax
	mov %eax, %cr0
	ljmpl $0x08, $ap_entry32
tramp_gdt_desc:
	.word 3 * 8 - 1
	.long gdt
trampoline_end:
	.code32

	.data
	.align 8
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff	/* 0x08: flat 32-bit code */
	.quad 0x00cf92000000ffff	/* 0x10: flat data */
gdt_desc:
	.word gdt_desc - gdt - 1
	.long gdt
next_cpu:
	.long 1

	.bss
	.align 16
	.globl stacks
stacks:
	.skip STACK * MAX_CPUS

	.section .note.GNU-stack, "", @progbits
