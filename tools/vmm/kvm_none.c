/* SPDX-License-Identifier: MIT */
/*
 * kvm_none.c - the benchmark VMM where it cannot run: its guest
 * (kvm_guest.S) and its set-up (kvm.c) are x86-64 code, so on other
 * architectures `kvm-bench` and test_kvm say so and skip.
 */
#include <errno.h>
#include <stdio.h>

#include "kvm.h"

static int not_here(char *why, size_t why_len)
{
	if (why && why_len)
		snprintf(why, why_len, "the benchmark VMM's guest is x86-64 code");
	return -EOPNOTSUPP;
}

int kvm_available(char *why, size_t why_len)
{
	return not_here(why, why_len);
}

int kvm_probe_exit_path(char *why, size_t why_len)
{
	return not_here(why, why_len);
}

bool kvm_has_userfault_bitmap(void)
{
	return false;
}

bool kvm_has_memory_fault_info(void)
{
	return false;
}

int kvm_run_guest(const struct kvm_guest_opts *opts, struct kvm_guest_result *res)
{
	(void)opts;
	return not_here(res->error, sizeof(res->error));
}
