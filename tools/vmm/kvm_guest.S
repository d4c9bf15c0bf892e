/* SPDX-License-Identifier: MIT */
/*
 * kvm_guest.S - the code the KVM runner's vCPUs execute (tools/vmm/kvm.c).
 *
 * The memstress guest of the kernel's demand_paging_test, 32-bit code
 * with guest-virtual = guest-physical: in protected mode with paging off,
 * or in long mode's compatibility mode on page tables that identity-map
 * (kvm.c's map_guest()), so the same bytes run in both.  The runner sets
 * flat segments, CR0 (and CR3, CR4, EFER) with KVM_SET_SREGS and these
 * registers with KVM_SET_REGS:
 *
 *   esi  GPA of the first page of this vCPU's slice
 *   ecx  number of 4 KiB pages (>= 1)
 *   edi  stride, 4096
 *   ebx  0: running sum of what the guest read
 *
 * For every page: write the page's own GPA to its first word (the write
 * fault memstress takes), then add the word at offset 8 to ebx (so the
 * runner can check the guest saw the source's contents, not zeroes).  At
 * the end the sum goes out on port KVM_GUEST_PORT_DONE (tools/vmm/kvm.h) and the
 * vCPU halts.  The bytes are copied into guest memory, so the code only
 * uses relative jumps.
 *
 * kvm_guest_outs first makes KVM itself read guest memory: `rep outsb` of
 * KVM_GUEST_OUTS_BYTES bytes at esi to port KVM_GUEST_PORT_OUTS is
 * emulated by KVM, which copies them from the memslot's host mapping, not
 * through the vCPU's stage-2 fault path.  Then it runs the guest above
 * with the same registers.
 */
	.section .rodata
	.globl	kvm_guest_code
	.globl	kvm_guest_code_end
	.code32
kvm_guest_code:
1:	movl	%esi, (%esi)
	addl	8(%esi), %ebx
	addl	%edi, %esi
	decl	%ecx
	jnz	1b
	movl	%ebx, %eax
	movw	$0x10, %dx
	outl	%eax, %dx
2:	hlt
	jmp	2b
	.globl	kvm_guest_outs
kvm_guest_outs:
	movl	%esi, %ebp
	movl	%ecx, %eax
	movl	$16, %ecx
	movw	$0x11, %dx
	rep outsb
	movl	%ebp, %esi
	movl	%eax, %ecx
	jmp	kvm_guest_code
kvm_guest_code_end:
	.code64

	.section .note.GNU-stack, "", @progbits
