/* SPDX-License-Identifier: MIT */
/*
 * kvm_hold - keep one idle VM open until killed.
 *
 * Inside the nested test VM (tests/kvm/nested.sh) with two vCPUs, every VM
 * create and destroy flips a kernel static key, and patching its jump sites
 * races under QEMU's multi-threaded TCG: the guest kernel then oopses on an
 * int3 in the scheduler now and then.  With one VM open for the whole boot
 * the key stays on and no site is patched again.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		perror("kvm_hold: /dev/kvm");
		return 1;
	}
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		perror("kvm_hold: KVM_CREATE_VM");
		return 1;
	}
	for (;;)
		pause();
}
