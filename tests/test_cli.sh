#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_cli.sh POSTCOPY - the command-line tool, end to end.  Prints TAP.
#
# Pins: --help lists the subcommands; bad command lines exit 2 with a
# message on stderr, and so do flags that would be ignored and a FIFO or a
# directory given as a file to read (at once, no hang); a missing image
# exits 1 naming the file; a source lost mid-restore exits 1 with the reason
# and the JSON object in both modes; a restore (or bench) larger than shmem
# or hugetlb can hold exits 1 at once with the numbers, unless
# --no-memory-check; mkimage
# rejects a size that is not a multiple of 4 KiB; mkimage + restore (exit
# and wait mode, shmem and anon) verify the restored memory; bench prints
# the documented JSON with verified == true.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init cli
trap 'rm -rf "$tmp"' EXIT

echo "1..49"

# Each check below is a command list whose status is the verdict.
nonempty_err() { [[ -s $err ]]; }

# ---- help and bad command lines --------------------------------------------
run --help
((rc == 0)) && grep -q bench "$out" && grep -q restore "$out" && grep -q mkimage "$out"
check "cli_help_exits_0_and_lists_bench_restore_mkimage" $?

run no-such-command
((rc == 2)) && nonempty_err
check "cli_unknown_subcommand_exits_2_with_message" $?

for sub in bench restore mkimage kvm-bench; do
	run "$sub" --no-such-flag
	((rc == 2)) && nonempty_err
	check "cli_${sub}_unknown_flag_exits_2_with_message" $?
done

run bench -v 0
((rc == 2)) && nonempty_err
check "cli_bench_zero_vcpus_exits_2" $?

run restore
((rc == 2)) && nonempty_err
check "cli_restore_without_image_exits_2" $?

# ---- images -----------------------------------------------------------------
run restore --image "$tmp/nonexistent.img"
((rc == 1)) && grep -q "nonexistent.img" "$err"
check "cli_restore_missing_image_exits_1_naming_the_file" $?

run mkimage "$tmp/bad.img" 12345
((rc != 0)) && grep -Eqi 'multiple|4096|4 ?KiB|page' "$err"
check "cli_mkimage_size_not_page_multiple_fails_with_clear_message" $?

run mkimage "$tmp/img" 8M
((rc == 0)) && [[ $(stat -c %s "$tmp/img" 2>/dev/null) == 8388608 ]]
check "cli_mkimage_8M_makes_an_8_MiB_image" $?

run restore --image "$tmp/img" --vcpus 2 -m exit --json
((rc == 0)) && json_check 'd.get("verified") is True'
check "cli_restore_exit_mode_2_vcpus_json_verified" $?

run restore --image "$tmp/img" --vcpus 2 -m wait -s anon --json
((rc == 0)) && json_check 'd.get("verified") is True'
check "cli_restore_wait_mode_anon_json_verified" $?

run restore --image "$tmp/img" --vcpus 2 -m exit -s anon --json
((rc == 0)) && json_check 'd.get("verified") is True'
check "cli_restore_exit_mode_anon_json_verified" $?

run restore --image "$tmp/img" --vcpus 1 -m wait --no-fill --workload random --json
((rc == 0)) && json_check 'd.get("verified") is True'
check "cli_restore_wait_mode_no_fill_random_json_verified" $?

run restore --image "$tmp/img" --vcpus 2
((rc == 0)) && [[ -s $out ]]
check "cli_restore_text_output_exits_0" $?

# The filler's threads: each count restores every byte; out of range, or
# with no filler to run, is a usage error.
ok_fillers=0
for nf in 1 3 8; do
	run restore --image "$tmp/img" --vcpus 1 --fillers "$nf" --json
	((rc == 0)) && json_check 'd.get("verified") is True and d["stats"]["pages_fill"] > 0' &&
		ok_fillers=$((ok_fillers + 1))
done
((ok_fillers == 3))
check "cli_restore_with_1_3_8_fillers_json_verified" $?
run restore --image "$tmp/img" --fillers 9
((rc == 2)) && grep -q -- "--fillers" "$err"
r1=$?
run restore --image "$tmp/img" --fillers 2 --no-fill
((rc == 2 && r1 == 0)) && grep -q -- "--fillers cannot go with --no-fill" "$err"
check "cli_restore_bad_fillers_or_fillers_without_fill_exit_2" $?

# restore compares the guest with the image itself, whatever its seed.
run mkimage --seed 99 "$tmp/img99" 4M
((rc == 0)) && run restore --image "$tmp/img99" --vcpus 2 -m exit --json &&
	((rc == 0)) && json_check 'd.get("verified") is True'
check "cli_restore_of_other_seed_image_json_verified" $?

# ---- bench ------------------------------------------------------------------
# -b is memory per vCPU (as in demand_paging_test): 2 x 4 MiB = 2048 pages.
bench_keys='all(k in d for k in ("mode", "backend", "vcpus", "pages", "seconds",
  "pages_per_sec", "per_vcpu_pages_per_sec", "baseline_pages_per_sec",
  "ratio_to_baseline", "faults", "duplicate_fetches", "latency_us", "verified"))
  and all(k in d["latency_us"] for k in ("p50", "p90", "p99", "p999", "max"))
  and d["latency_us"]["p50"] <= d["latency_us"]["p90"] <= d["latency_us"]["p99"]
      <= d["latency_us"]["p999"] <= d["latency_us"]["max"]
  and d["verified"] is True and d["vcpus"] == 2 and d["pages"] == 2048
  and (not isinstance(d["per_vcpu_pages_per_sec"], list)
       or len(d["per_vcpu_pages_per_sec"]) == 2)
  and d["pages_per_sec"] > 0 and d["baseline_pages_per_sec"] > 0'
run bench -v 2 -b 4M -m exit --json
((rc == 0)) && json_check "$bench_keys and d['mode'] == 'exit'"
check "cli_bench_exit_mode_json_has_every_key_and_verified" $?

run bench -v 2 -b 4M -m wait --json
((rc == 0)) && json_check "$bench_keys and d['mode'] == 'wait'"
check "cli_bench_wait_mode_json_has_every_key_and_verified" $?

# ---- kvm-bench: runs where /dev/kvm works, says so clearly where not -------
run kvm-bench -p sometimes
((rc == 2)) && grep -q "path" "$err"
check "cli_kvm_bench_bad_path_exits_2_naming_the_option" $?

# Whether KVM works here is decided first, the way the CLI decides it; each
# run then has one right outcome, and the check for the other is skipped.
if kvm_usable; then
	no_kvm_skip="KVM works here (the check without it cannot run)"
	run kvm-bench -v 2 -b 1M -p wait --json
	((rc == 0)) &&
		json_check 'd.get("verified") is True and d["path"] == "wait" and d["kvm_exits"]["io"] == 2'
	check "cli_kvm_bench_wait_path_json_verified" $?
	skip "cli_kvm_bench_wait_path_without_kvm_exits_1_naming_kvm" "$no_kvm_skip"

	run kvm-bench -b 1M
	((rc == 0)) && grep -q "because:" "$out"
	check "cli_kvm_bench_auto_path_says_which_path_and_why" $?
	skip "cli_kvm_bench_auto_path_without_kvm_exits_1_naming_kvm" "$no_kvm_skip"
else
	run kvm-bench -v 2 -b 1M -p wait --json
	skip "cli_kvm_bench_wait_path_json_verified" "$kvm_why"
	((rc == 1)) && grep -Eq "/dev/kvm|KVM" "$err"
	check "cli_kvm_bench_wait_path_without_kvm_exits_1_naming_kvm" $?

	run kvm-bench -b 1M
	skip "cli_kvm_bench_auto_path_says_which_path_and_why" "$kvm_why"
	((rc == 1)) && grep -Eq "/dev/kvm|KVM" "$err"
	check "cli_kvm_bench_auto_path_without_kvm_exits_1_naming_kvm" $?
fi

# ---- a source that dies mid-restore: a clear failure, never a hang ---------
# The image shrinks to one page while a slow restore (2 ms per request, one
# page each, no filler) runs; the pages past the new end cannot be read any
# more.
shrink_during_restore() { # MODE
	# A failed mkimage must fail both checks below: no status they accept.
	"$cli" mkimage "$tmp/shrink.img" 16M >/dev/null 2>&1 || { rc=99; return; }
	timeout -k 5 60 "$cli" restore --image "$tmp/shrink.img" -m "$1" \
		--vcpus 2 --no-fill -w 1 -d 2000 --json >"$out" 2>"$err" &
	local pid=$! i
	# Cut the image only once the restore has it open (a slow start,
	# under a sanitizer, would otherwise restore the cut image).
	for ((i = 0; i < 200; i++)); do
		find /proc/[0-9]*/fd -lname "$tmp/shrink.img" 2>/dev/null | grep -q . && break
		sleep 0.05
	done
	sleep 0.3
	truncate -s 4096 "$tmp/shrink.img"
	wait "$pid"
	rc=$?
}
# Both modes end alike: status 1, the reason (the page and the error) on
# stderr, and the JSON object, with "verified": false and that reason.
lost='d["verified"] is False and "No data available" in d.get("error", "")'
shrink_during_restore wait
((rc == 1)) && grep -q "page [0-9]*.*No data available" "$err" && json_check "$lost"
check "cli_restore_wait_mode_source_lost_exits_1_with_reason_and_json" $?

# Exit mode: the faulting thread is parked, not killed by SIGBUS.
shrink_during_restore exit
((rc == 1)) && grep -q "page [0-9]*.*No data available" "$err" && json_check "$lost"
check "cli_restore_exit_mode_source_lost_exits_1_with_reason_and_json" $?

# ---- a FIFO or a directory where a file is read: refused at once, status 2
# (issue #9, finding 13: a FIFO used to hang open() for ever) -------------
mkfifo "$tmp/fifo"
# quick ARGS...: like run, but a hang fails within 10 s.
quick() {
	timeout -k 2 10 "$cli" "$@" >"$out" 2>"$err"
	rc=$?
}
quick restore --image "$tmp/fifo"
((rc == 2)) && grep -q -- "--image .*fifo: a FIFO; a regular file is needed" "$err"
check "cli_restore_image_fifo_exits_2_at_once_saying_fifo" $?

quick restore --image "$tmp"
((rc == 2)) && grep -q "a directory; a regular file is needed" "$err"
check "cli_restore_image_directory_exits_2_saying_directory" $?

quick restore --source unix:"$tmp/none.sock" --key "$tmp/fifo"
((rc == 2)) && grep -q "key file .*fifo: a FIFO" "$err"
check "cli_restore_key_fifo_exits_2_at_once_saying_fifo" $?

# ---- flags that would be ignored: said, status 2 (finding 14) ------------
# unused NAME PATTERN ARGS...: exit status 2 and PATTERN (grep -E) on stderr.
unused() {
	local name=$1 pattern=$2
	shift 2
	quick "$@"
	((rc == 2)) && grep -Eq -- "$pattern" "$err"
	check "cli_${name}_exits_2_saying_so" $?
}
unused restore_net_timeout_without_source "--net-timeout goes with --source" \
	restore --image "$tmp/img" --net-timeout 5
unused restore_s3_region_without_s3_source "--s3-endpoint and --s3-region go with --source s3://" \
	restore --source http://127.0.0.1:9/img --s3-region us-east-1
unused restore_http_timeout_with_an_image "--http-timeout goes with an http" \
	restore --image "$tmp/img" --http-timeout 100
unused restore_key_with_an_http_source "--key and --insecure" \
	restore --source http://127.0.0.1:9/img --insecure
unused restore_s3_without_key "want s3://BUCKET/KEY" \
	restore --source s3://bucket
unused restore_window_with_hugetlb "hugetlb .*--window does not apply" \
	restore --image "$tmp/img" -s hugetlb -w 4
unused bench_readers_in_exit_mode "-r and -a are for wait mode" \
	bench -b 1M -m exit -r 2
unused bench_one_uffd_in_exit_mode "-r and -a are for wait mode" \
	bench -b 1M -a
unused bench_delay_kind_without_delay "--delay-kind goes with -d" \
	bench -b 1M --delay-kind busy
unused bench_cold_with_anon "--cold is for shmem and hugetlb" \
	bench -b 1M -s anon --cold
unused bench_window_with_hugetlb "hugetlb .*-w does not apply" \
	bench -b 2M -s hugetlb -w 4
unused bench_net_timeout_without_source "--net-timeout goes with --source" \
	bench -b 1M --net-timeout 5
unused kvm_bench_readers_on_exit_path "-r and -a are for the wait and bitmap paths" \
	kvm-bench -b 1M -p exit -a
unused kvm_bench_cold_with_anon "--cold is for shmem and hugetlb" \
	kvm-bench -b 1M -s anon --cold

# ---- more memory than the machine holds: refused before anything is
# allocated, with the numbers (finding 15: it used to run into the OOM
# killer).  The image is sparse: twice MemAvailable + SwapFree (at least
# 64 GiB) of apparent size, no block allocated; it goes with $tmp.
room_kb=$(awk '/^(MemAvailable|SwapFree):/ { s += $2 } END { print s }' /proc/meminfo)
big_gib=$(( (2 * room_kb >> 20) + 1 ))
((big_gib < 64)) && big_gib=64
truncate -s "${big_gib}G" "$tmp/huge.img"
quick restore --image "$tmp/huge.img" --vcpus 1
((rc == 1)) && grep -Eq "$big_gib\.[0-9] GiB of shmem guest memory .* is more than this (machine|process's memory cgroup)" "$err" &&
	grep -Eq "MemAvailable [0-9.]+ GiB" "$err" && grep -q -- "--no-memory-check starts anyway" "$err"
check "cli_restore_larger_than_memory_exits_1_at_once_naming_the_numbers" $?

quick bench -b "${big_gib}G"
((rc == 1)) && grep -Eq "GiB of shmem guest memory .* is more than" "$err"
check "cli_bench_larger_than_memory_exits_1_before_the_baseline" $?

quick restore --image "$tmp/huge.img" -s hugetlb --vcpus 1
((rc == 1)) && grep -Eq "needs [0-9]+ 2 MiB huge pages, and [0-9]+ are free" "$err"
check "cli_restore_hugetlb_larger_than_free_huge_pages_exits_1_naming_the_counts" $?

# The override skips the check: hugetlb then meets the kernel's own refusal
# at mmap (no pool holds twice the machine's memory), a different message.
quick restore --image "$tmp/huge.img" -s hugetlb --vcpus 1 --no-memory-check
((rc == 1)) && grep -q "not enough 2 MiB huge pages" "$err" && ! grep -q "are free" "$err"
check "cli_restore_no_memory_check_skips_the_check" $?
rm -f "$tmp/huge.img"

exit $((failed != 0))
