#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/kvm/nested.sh BUILD_DIR [test|bench|mutants]
#
# Real KVM on a machine without it: boots Debian's kernels under QEMU's
# software emulation (TCG) with an emulated AMD SVM CPU, where kvm-amd
# loads with nested paging, and runs postcopy's KVM tests (test) or
# kvm-bench (bench) inside.  BUILD_DIR is a statically linked build
# (`make kvm-check` configures build-kvm for it); its postcopy, tests/test_kvm
# and tests/kvm_hold go into the initramfs.
#
# Kernels: $KVM_KERNELS, words of LABEL:KIND:WHAT:EXIT:BITMAP[:ARGS].  KIND
# deb: WHAT is a Debian kernel metapackage, fetched with apt-get download;
# KIND image: WHAT is a bzImage with KVM built in.  EXIT and BITMAP (yes, no)
# say whether the kernel should report the guest address of a userfault and
# have the KVM userfault bitmap.  ARGS, words joined by commas, go on the
# kernel command line (kvm.tdp_mmu=0).  By default: Debian's 6.12 and 6.1,
# then the kernels of our patch series that tests/kvm/kernel.sh builds (or
# finds in its cache; KVM_PATCHED=0 leaves them out), the patched one also
# booted with kvm.tdp_mmu=0.  kernel.sh also builds the KVM selftests the
# series carries (userfault_test, demand_paging_test -k): they go into the
# initramfs of the image kernels, and their results are TAP lines too.
# ($KVM_SELFTESTS names another directory of them.)  Downloads and initramfs
# images are cached in BUILD_DIR/kvm-cache.
#
# test: prints TAP (one line per check, named by kernel and path; plan at
#   the end), writes "P F S" to BUILD_DIR/suite-counts and failures to
#   BUILD_DIR/suite-failures, like tests/run-suite.sh.  Without qemu or the
#   kernel packages (and no root to install them) it skips, saying why.
# bench: writes each kernel's kvm-bench JSON lines to
#   BUILD_DIR/kvm-bench-LABEL.jsonl (the runs are listed in
#   $KVM_BENCH_LIST, default tests/kvm/bench.list, and repeated
#   $KVM_BENCH_REPS times, default 3).
#
# mutants: proves that the tests catch what the series fixes.  Each mutant
#   kernel (tests/kvm/mutants/NAME.patch: the whole series with one fix
#   taken out; tests/kvm/mutants.sh builds and caches them) is booted as
#   its file's "Boot: BOOT [ARGS...]" lines say, as label NAME-BOOT, and
#   runs the test job.  Its results are not counted but printed as "#"
#   lines (and kept in BUILD_DIR/kvm-mutants-LABEL.results); the TAP lines
#   are the file's "Fail: BOOT CASE" lines instead, CASE a result's name
#   without the label: ok when that case failed there, not ok when it
#   passed, was skipped or did not run ("the tests did not catch mutant
#   NAME").  A boot with no "Fail:" line, or whose cases all passed, fails
#   too.  A boot that ended before a listed case ran is run once more.
#   Other failures on a mutant are listed, not counted.  Counts go to
#   BUILD_DIR/mutants-counts and mutants-failures.  Slow (a cold build of
#   the mutants takes about 6 minutes on 2 cores), so not part of `make
#   check`: `make kvm-mutants`.
#
# One case in a loop (an intermittent failure): KVM_RUN_ONLY names a program
# in the initramfs and its arguments ("demand_paging_test -k -v 2 -b 8M -u
# MISSING"); each boot then runs only that, KVM_RUN_REPS times (default 1),
# one TAP line per run, and the kernel log check.  The selftests are only in
# the image kernels' initramfs; to boot just one, name it in KVM_KERNELS and
# the selftests in KVM_SELFTESTS (the lines tests/kvm/kernel.sh prints).
# A boot is killed after KVM_BOOT_TIMEOUT seconds (default 300; for a loop,
# enough for every run to be killed by init.sh's 120 s watchdog).
#
# A boot that ends without its @@END line (a guest kernel oops under
# emulation, a hang) is an infrastructure failure: it is reported and
# rerun, at most twice.
#
# A hang: once test_kvm has printed nothing for pc.hangidle seconds
# (default 60), init.sh prints what each of its threads is doing ("# hang:"
# lines: state, CPU and guest time, wchan, system call, kernel stack).
# $KVM_QEMU_MONITOR, a path: QEMU listens there for its monitor (info
# registers -a, xp), and the console log is written as it comes, so that a
# watcher sees the first "# hang:" line while the VM is still stuck.
# $KVM_APPEND: more words for the kernel command line (pc.hangidle=10).
set -uo pipefail

usage() { echo "usage: $0 BUILD_DIR [test|bench|mutants]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
job=${2:-test}
[[ $job == test || $job == bench || $job == mutants ]] || usage
# The job the VM runs: a mutant runs the tests.
vm_job=$job
[[ $job == mutants ]] && vm_job=test
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
builddir=$(cd "$1" 2>/dev/null && pwd) || { echo "$0: no build dir '$1'" >&2; exit 2; }
cache=$builddir/kvm-cache
mkdir -p "$cache"
kernels=${KVM_KERNELS:-"6.12:deb:linux-image-6.12-amd64:no:no 6.1:deb:linux-image-amd64:no:no"}
bench_list=${KVM_BENCH_LIST:-$srcdir/tests/kvm/bench.list}
run_only=${KVM_RUN_ONLY:-}
run_reps=${KVM_RUN_REPS:-1}
[[ $run_only != *,* && $run_reps =~ ^[1-9][0-9]*$ ]] ||
	{ echo "$0: KVM_RUN_ONLY has a comma or KVM_RUN_REPS is not a count" >&2; exit 2; }
[[ $job == mutants && -n $run_only ]] &&
	{ echo "$0: KVM_RUN_ONLY is not for the mutants job" >&2; exit 2; }
# init.sh kills a looped run after 120 s.
boot_timeout=300
[[ -n $run_only ]] && boot_timeout=$((60 + 125 * run_reps))
boot_timeout=${KVM_BOOT_TIMEOUT:-$boot_timeout}

passed=0 failed=0 skipped=0 n=0
counts=$builddir/suite-counts failures=$builddir/suite-failures
[[ $job == mutants ]] && counts=$builddir/mutants-counts failures=$builddir/mutants-failures
rm -f "$counts" "$failures"
# The mutants job: a mutant boot's results go to this file (STATUS, a tab,
# the name without the label) instead of the counts.  Its failures still
# move $failed while it runs, which the per-boot checks compare; the total
# is put back after the boots.
record=

tap() { # STATUS NAME [DIRECTIVE]: STATUS ok | not ok | skip
	if [[ -n $record ]]; then
		printf '%s\t%s\n' "$1" "${2#"$label "}" >>"$record"
		[[ $1 == "not ok" ]] && failed=$((failed + 1))
		echo "#   $1 - $2${3:+ # SKIP $3}"
		return
	fi
	n=$((n + 1))
	case $1 in
	ok) passed=$((passed + 1)); echo "ok $n - $2" ;;
	skip) skipped=$((skipped + 1)); echo "ok $n - $2 # SKIP $3" ;;
	*) failed=$((failed + 1)); echo "not ok $n - $2"
	   echo "nested: not ok - $2" >>"$failures" ;;
	esac
}
finish() {
	echo "1..$n"
	echo "$passed $failed $skipped" >"$counts"
	echo "--- nested KVM: $passed passed, $failed failed, $skipped skipped"
	exit $((failed > 0))
}
skip_all() {
	echo "# $1"
	if [[ $job == mutants ]]; then
		tap skip "mutant kernels nested KVM tests" "$1"
	else
		for k in $kernels; do tap skip "${k%%:*} nested KVM tests" "$1"; done
	fi
	finish
}

# ---- what the host needs -----------------------------------------------
# Statically linked: no program interpreter (readelf comes with gcc).
is_static() { ! readelf -l "$1" 2>/dev/null | grep -q 'program interpreter'; }
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
dpkg -s busybox-static 2>/dev/null | grep -q '^Status: install ok installed' ||
	need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if ((${#need_pkgs[@]})); then
	if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
		skip_all "needs Debian packages ${need_pkgs[*]} (as root: apt-get install ${need_pkgs[*]})"
	fi
	echo "# installing ${need_pkgs[*]}"
	{ apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" ||
	  { apt-get update -q && apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"; }; } \
		>"$cache/apt-install.log" 2>&1 ||
		skip_all "could not install ${need_pkgs[*]} (see $cache/apt-install.log)"
fi
for f in postcopy tests/test_kvm tests/kvm_hold; do
	[[ -x $builddir/$f ]] || { echo "$0: $builddir/$f is missing (ninja -C $builddir)" >&2; exit 2; }
	is_static "$builddir/$f" ||
		{ echo "$0: $builddir/$f is not statically linked" >&2; exit 2; }
done

# ---- a Debian kernel: vmlinuz and the KVM modules, decompressed ----------
# Prints the directory holding vmlinuz and mods/, or fails with a reason on
# stderr.
fetch_deb_kernel() {
	local meta=$1 pkg deb dir
	pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	if [[ -z $pkg ]]; then
		apt-get update -q >"$cache/apt-update.log" 2>&1
		pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	fi
	[[ -n $pkg ]] || { echo "apt knows no kernel package behind $meta" >&2; return 1; }
	dir=$cache/$pkg
	if [[ ! -f $dir/.ready ]]; then
		rm -rf "$dir" && mkdir -p "$dir/mods"
		deb=$(ls "$cache"/debs/"${pkg}"_*.deb 2>/dev/null | head -1)
		if [[ -z $deb ]]; then
			mkdir -p "$cache/debs"
			(cd "$cache/debs" && apt-get download "$pkg" >"$cache/download-$pkg.log" 2>&1) ||
				{ echo "apt-get download $pkg failed (see $cache/download-$pkg.log)" >&2; return 1; }
			deb=$(ls "$cache"/debs/"${pkg}"_*.deb | head -1)
		fi
		# Only what the VM needs, not the whole package.
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards \
			'./boot/vmlinuz-*' '*/irqbypass.ko*' '*/ccp.ko*' '*/kvm.ko*' '*/kvm-amd.ko*' ||
			{ echo "unpacking $deb failed" >&2; return 1; }
		cp "$dir"/boot/vmlinuz-* "$dir/vmlinuz" || return 1
		local m f
		for m in irqbypass ccp kvm kvm-amd; do
			f=$(find "$dir/lib" -name "$m.ko*" | head -1)
			[[ -n $f ]] || { echo "$pkg has no $m module" >&2; return 1; }
			case $f in
			*.xz) xz -dc "$f" >"$dir/mods/$m.ko" ;;
			*) cp "$f" "$dir/mods/$m.ko" ;;
			esac || return 1
		done
		rm -rf "$dir/lib" "$dir/boot"
		touch "$dir/.ready"
	fi
	echo "$dir"
}

# ---- the initramfs -------------------------------------------------------
# make_initrd OUT [MODS_DIR [SELFTESTS_DIR]]: busybox, the test binaries,
# /init, modules, the kernel selftests.
make_initrd() {
	local out=$1 mods=${2:-} selftests=${3:-} root
	local inputs=("$builddir/postcopy" "$builddir/tests/test_kvm" "$builddir/tests/kvm_hold"
		"$srcdir/tests/kvm/init.sh" "$bench_list" /bin/busybox
		${selftests:+"$selftests"/*})
	# Rebuilt when what goes in changed, by content (a list passed in
	# $KVM_BENCH_LIST may be older than the image and still differ).
	local sum
	sum=$(cat "${inputs[@]}" ${mods:+"$mods"/*.ko} 2>/dev/null | sha256sum)
	[[ -f $out && $(cat "$out.sum" 2>/dev/null) == "$sum" ]] && return 0
	root=$(mktemp -d "$cache/initrd.XXXXXX")
	mkdir -p "$root"/{bin,mods,proc,sys,dev,tmp}
	cp /bin/busybox "$builddir/postcopy" "$builddir/tests/test_kvm" \
		"$builddir/tests/kvm_hold" "$root/bin/"
	cp "$srcdir/tests/kvm/init.sh" "$root/init" && chmod 755 "$root/init"
	[[ -f $bench_list ]] && cp "$bench_list" "$root/bench.list"
	[[ -n $mods ]] && cp "$mods"/*.ko "$root/mods/"
	[[ -n $selftests ]] && cp "$selftests"/* "$root/bin/"
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp" &&
		mv "$out.tmp" "$out" && echo "$sum" >"$out.sum"
	local ret=$?
	rm -rf "$root"
	return $ret
}

# ---- one boot ------------------------------------------------------------
# boot LABEL KERNEL INITRD EXIT BITMAP LOG [ARGS]: runs the job; 0 when
# @@END came.  tsc_early_khz: a kernel may fail to calibrate its TSC under
# emulation, and KVM_RUN then spins.
# The CPU: qemu64 with SVM and nested paging, and the x86-64-v2 features the
# KVM selftests are compiled for (their Makefile passes -march=x86-64-v2).
qemu_cpu=qemu64,+svm,+npt,+cx16,+popcnt,+ssse3,+sse4.1,+sse4.2
boot() {
	local label=$1 kernel=$2 initrd=$3 expect=$4 bitmap=$5 log=$6 args=${7:-}
	local mon=() unbuf=()
	# A monitor to look at a stuck VM with (info registers -a), and the
	# console log written as it comes, so that a watcher sees init.sh's
	# "# hang:" line while the VM is still stuck.
	[[ -n ${KVM_QEMU_MONITOR:-} ]] && mon=(-monitor "unix:$KVM_QEMU_MONITOR,server,nowait") unbuf=(stdbuf -o0)
	timeout -k 10 "$boot_timeout" qemu-system-x86_64 -accel tcg -cpu "$qemu_cpu" \
		-M pc -smp 2 -m 1024 -nic none -nographic -no-reboot "${mon[@]}" \
		-kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 loglevel=3 tsc_early_khz=2000000 ${args//,/ } pc.job=$vm_job pc.label=$label pc.expect=$expect pc.bitmap=$bitmap pc.reps=${KVM_BENCH_REPS:-3}${run_only:+ pc.run=${run_only// /,} pc.runreps=$run_reps}${KVM_APPEND:+ $KVM_APPEND}" \
		</dev/null 2>&1 | "${unbuf[@]}" tr -d '\r' | sed -u 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' >"$log"
	grep -q '^@@END' "$log"
}

# ---- the kernels of our patch series -------------------------------------
selftests=${KVM_SELFTESTS:-}
if [[ $job != mutants && -z ${KVM_KERNELS:-} && ${KVM_PATCHED:-1} != 0 ]]; then
	t0=$(date +%s)
	built=$(bash "$srcdir/tests/kvm/kernel.sh" 2>"$cache/kernel.err")
	case $? in
	0) echo "# patched kernels and selftests: built or found in $(($(date +%s) - t0)) s"
	   for line in $built; do
		case $line in
		selftests:*) selftests=${line#selftests:} ;;
		*) kernels+=" $line" ;;
		esac
	   done ;;
	2) tap skip "6.12-patched nested KVM tests" "$(tail -1 "$cache/kernel.err")" ;;
	*) sed 's/^/# /' "$cache/kernel.err"
	   tap "not ok" "6.12-patched kernels build (tests/kvm/kernel.sh)" ;;
	esac
fi

# ---- the mutants ---------------------------------------------------------
# mutant_of[LABEL]: the mutant a boot runs; must_fail[LABEL]: the cases
# that must fail there, one a line; mutant_boots: the labels, in order.
declare -A mutant_of=() must_fail=()
mutant_boots=()
if [[ $job == mutants ]]; then
	kernels=
	t0=$(date +%s)
	built=$(bash "$srcdir/tests/kvm/mutants.sh" 2>"$cache/mutants.err")
	case $? in
	0) echo "# mutant kernels: built or found in $(($(date +%s) - t0)) s" ;;
	2) skip_all "$(tail -1 "$cache/mutants.err")" ;;
	*) sed 's/^/# /' "$cache/mutants.err"
	   tap "not ok" "mutant kernels build (tests/kvm/mutants.sh)"
	   finish ;;
	esac
	for line in $built; do
		case $line in
		selftests:*) selftests=${line#selftests:}; continue ;;
		esac
		IFS=: read -r _ mname image <<<"$line"
		mfile=$srcdir/tests/kvm/mutants/$mname.patch
		while read -r key boot rest; do
			case $key in
			Boot:)
				l=$mname-$boot
				mutant_of[$l]=$mname must_fail[$l]=
				mutant_boots+=("$l")
				rest=${rest// /,}
				kernels+=" $l:image:$image:yes:yes${rest:+:$rest}" ;;
			Fail:)
				l=$mname-$boot
				[[ -n ${mutant_of[$l]:-} ]] ||
					{ echo "$0: $mfile: Fail: line before its Boot: line ($boot)" >&2; exit 2; }
				must_fail[$l]+="$rest"$'\n' ;;
			esac
		done < <(sed '/^--- /,$d' "$mfile")
	done
	((${#mutant_boots[@]})) || { tap "not ok" "the mutants have Boot: lines"; finish; }
fi

# ---- per kernel ----------------------------------------------------------
# A queue, so that a mutant boot can be run again (below).
failed_outside=$failed
read -ra specs <<<"$kernels"
declare -A retried=()
i=0
while ((i < ${#specs[@]})); do
	spec=${specs[i]}
	i=$((i + 1))
	IFS=: read -r label kind what expect bitmap args <<<"$spec"
	if [[ $job == mutants ]]; then
		record=$builddir/kvm-mutants-$label.results
		: >"$record"
		echo "# ---- mutant ${mutant_of[$label]}, boot $label${args:+ (${args//,/ })}"
	fi
	# A boot variant (kvm.tdp_mmu=0) is there for the tests, not for the
	# benchmark table.
	[[ $job == bench && -n $args ]] && continue
	if [[ $kind == deb ]]; then
		if ! kdir=$(fetch_deb_kernel "$what" 2>"$cache/fetch-$label.err"); then
			reason=$(tail -1 "$cache/fetch-$label.err")
			echo "# $label: $reason"
			tap skip "$label nested KVM tests" "kernel $what unavailable: $reason"
			continue
		fi
		kernel=$kdir/vmlinuz mods=$kdir/mods
	elif [[ $kind == image ]]; then
		kernel=$what mods=
		[[ -f $kernel ]] || { tap "not ok" "$label kernel image $kernel exists"; continue; }
	else
		echo "$0: bad kernel spec '$spec'" >&2
		exit 2
	fi
	# One image per set of modules: kernels with KVM built in share one.
	initrd=$cache/initrd-${mods:+$(basename "$(dirname "$mods")")}.cpio.gz
	[[ -n $mods ]] || initrd=$cache/initrd-builtin.cpio.gz
	kst=
	[[ $kind == image ]] && kst=$selftests
	make_initrd "$initrd" "$mods" "$kst" || { tap "not ok" "$label initramfs built"; continue; }
	log=$builddir/kvm-$job-$label.log
	t0=$(date +%s)
	# An infrastructure failure is rerun, at most twice: the nested
	# emulation's faults (below) come about once in a few boots of the
	# whole suite, and a rerun that hit another one failed CI once.
	for try in 1 2 3; do
		rerun=
		if ! boot "$label" "$kernel" "$initrd" "$expect" "$bitmap" "$log" "$args"; then
			rerun="the boot ended without a result (infrastructure failure?)"
		elif ! grep -q '^@@END 0' "$log" && grep -q 'KVM_EXIT_INTERNAL_ERROR, suberror 1' "$log"; then
			# An emulation failure: seen about once in 20 two-vCPU runs on
			# Debian's 6.12 under TCG, an instruction fetch just past the code
			# slot.  The guest's code lives in plain memory postcopy never
			# touches, and no value it reads steers its control flow, so the
			# RIP went astray in the emulation.
			rerun="a vCPU's RIP went astray in the nested emulation (KVM_EXIT_INTERNAL_ERROR, emulation)"
			grep -h 'KVM_EXIT_INTERNAL_ERROR' "$log" | head -2 | sed 's/^/#   /'
		elif grep -q '^Bail out! watchdog' "$log"; then
			# A test that hung inside the VM (its own watchdog), in a
			# two-vCPU case; passes on rerun and never hangs on the host.
			# Caught with init.sh's thread dump and QEMU's monitor (3 of
			# ~600 two-vCPU runs on 6.12-patched): one vCPU thread spinning
			# in KVM_RUN (guest time growing), the pager idle or finished,
			# and that vCPU's VMCB holding the L1 host's own state (the
			# TCG SVM fault of init.sh's tdp0 note).  The first log is
			# kept and its last case named.
			rerun="a test hung in the nested VM after \"$(grep -v '^# hang:' "$log" | grep -B1 '^Bail out! watchdog' | head -1 | cut -c1-120)\""
		fi
		# A loop counts every run as it came.
		[[ -n $rerun && -z $run_only && $try -lt 3 ]] || break
		echo "# $label: $rerun, rerunning; this try's log kept in $log.$try"
		mv "$log" "$log.$try"
	done
	echo "# $label: boot and $job took $(($(date +%s) - t0)) s; console log $log"
	if ! grep -q '^@@END' "$log"; then
		tail -5 "$log" | sed 's/^/# /'
		tap "not ok" "$label nested VM ran the $job job to the end"
		continue
	fi
	grep '^@@NOTE' "$log" | sed 's/^@@NOTE/#/'
	if [[ $job == bench ]]; then
		sed -n 's/^@@JSON //p' "$log" >"$builddir/kvm-bench-$label.jsonl"
		echo "# $label: $(wc -l <"$builddir/kvm-bench-$label.jsonl") results in $builddir/kvm-bench-$label.jsonl"
		grep -q '^@@END 0' "$log" && tap ok "$label kvm-bench runs verified" ||
			tap "not ok" "$label kvm-bench runs verified"
		continue
	fi
	# Re-number test_kvm's TAP into ours; its diagnostics pass through.
	# Then the selftests: userfault_test's TAP (kselftest's "ok N name"),
	# named by kernel and test, must come to the end of its plan; each
	# demand_paging_test run is one line, skipped on exit status 4
	# (KSFT_SKIP, with the reason it printed).
	plan=0 got=0 failed_before=$failed section=test_kvm
	while IFS= read -r line; do
		case $section:$line in
		*:"@@KSFT "*) section=ksft kname=${line#@@KSFT } kplan=0 kgot=0 kfailed=$failed; continue ;;
		ksft:"@@KSFT-END "*)
			krc=${line#@@KSFT-END }
			if ((kgot != kplan || kplan == 0)) || [[ $krc != 0 && $krc != 4 && $failed == "$kfailed" ]]; then
				tap "not ok" "$label $kname ran its whole plan ($kgot of $kplan results, exit $krc)"
			fi
			section=after; continue ;;
		*:"@@DMESG") section=dmesg; continue ;;
		dmesg:"@@DMESG-END "*)
			if [[ ${line#@@DMESG-END } == 0 ]]; then
				tap ok "$label kernel log has no WARNING, BUG or lockdep report"
			else
				tap "not ok" "$label kernel log has no WARNING, BUG or lockdep report (${line#@@DMESG-END } found)"
			fi
			section=after; continue ;;
		*:"@@RUN "*) section=run rname=${line#@@RUN } rskip=; continue ;;
		run:"@@RUN-END "*)
			case ${line#@@RUN-END } in
			0) tap ok "$label $rname" ;;
			4) tap skip "$label $rname" "${rskip:-the test skipped (KSFT_SKIP)}" ;;
			*) tap "not ok" "$label $rname (exit ${line#@@RUN-END })" ;;
			esac
			section=after; continue ;;
		esac
		case $section in
		test_kvm)
			case $line in
			1..*) plan=${line#1..} ;;
			"ok "*" # SKIP "*) got=$((got + 1)); body=${line#ok * - }
				tap skip "${body% \# SKIP *}" "${body##* \# SKIP }" ;;
			"ok "*) got=$((got + 1)); tap ok "${line#ok * - }" ;;
			"not ok "*) got=$((got + 1)); tap "not ok" "${line#not ok * - }" ;;
			"#"*) echo "$line" ;;
			esac ;;
		ksft)
			case $line in
			1..*) kplan=${line#1..} ;;
			"ok "*" # SKIP"*) kgot=$((kgot + 1)); body=${line#ok [0-9]* }
				tap skip "$label $kname ${body%% \# SKIP*}" "$(r=${body#* \# SKIP}; echo "${r# }")" ;;
			"ok "*) kgot=$((kgot + 1)); tap ok "$label $kname ${line#ok [0-9]* }" ;;
			"not ok "*) kgot=$((kgot + 1)); tap "not ok" "$label $kname ${line#not ok [0-9]* }" ;;
			"#"*) echo "$line" ;;
			esac ;;
		dmesg) echo "$line" ;;
		run)
			case $line in
			*"SKIP"*) rskip=${line#*SKIP}; rskip=${rskip# }; rskip=${rskip#- }; echo "$line" ;;
			"#"*) echo "$line" ;;
			esac ;;
		esac
	done < <(sed -n '/@@BEGIN/,/^@@END/p' "$log")
	# An L2 guest: in 6.12 only memstress's nested mode makes one
	# (memstress_setup_nested(), reached through dirty_log_perf_test -n and
	# access_tracking_perf_test; demand_paging_test has no nested option),
	# and it TEST_REQUIREs X86_FEATURE_VMX and EPT.  QEMU's TCG emulates
	# SVM but no VMX (it drops +vmx: "TCG doesn't support requested
	# feature: CPUID.01H:ECX.vmx"), which init.sh's @@CPU line confirms
	# from the VM's own /proc/cpuinfo.
	if [[ $kind == image && $bitmap == yes && -n $kst && -z $run_only ]]; then
		cpu=$(sed -n 's/^@@CPU //p' "$log")
		if [[ $cpu == vmx=0\ * ]]; then
			why="cannot run here: 6.12's only L2 guest is memstress's nested mode, which needs VMX with EPT, and this VM's CPU has no vmx flag ($cpu in /proc/cpuinfo) because QEMU's TCG emulates AMD SVM but not VMX"
		else
			why="not written: 6.12's only L2 guest is memstress's nested mode (VMX with EPT), which userfault_test does not use and demand_paging_test has no option for ($cpu in /proc/cpuinfo)"
		fi
		tap skip "$label userfault_test and demand_paging_test -k in an L2 guest" "$why"
	fi
	if [[ $section == ksft ]]; then
		tap "not ok" "$label $kname ran to its end (no @@KSFT-END)"
	elif [[ $section == run ]]; then
		tap "not ok" "$label $rname ran to its end (no @@RUN-END)"
	elif [[ $section == dmesg ]]; then
		tap "not ok" "$label kernel log read to its end (no @@DMESG-END)"
	fi
	rc=$(sed -n 's/^@@END //p' "$log")
	# Only the one case ran: no test_kvm plan to come to the end of.
	[[ -n $run_only ]] && continue
	if ((got != plan || plan == 0)) || [[ $rc != 0 && $failed == "$failed_before" ]]; then
		tap "not ok" "$label test_kvm ran its whole plan ($got of $plan results, exit $rc)"
	fi
	# A mutant boot cut short before a case it must fail (test_kvm's
	# watchdog once bailed out in a two-vCPU case before the hugetlb ones,
	# on a machine with a load of 6 on 2 cores) runs once more; the first
	# try is kept.
	if [[ $job == mutants && -z ${retried[$label]:-} ]]; then
		while IFS= read -r want; do
			[[ -n $want ]] || continue
			cut -f2 "$record" | grep -qxF -- "$want" && continue
			echo "# $label: \"$want\" did not run, rerunning the boot once; first try kept in $log.try1 and $record.try1"
			mv "$log" "$log.try1" && mv "$record" "$record.try1"
			retried[$label]=1
			specs+=("$spec")
			break
		done <<<"${must_fail[$label]}"
	fi
done
[[ $job == mutants ]] && failed=$failed_outside
record=

# ---- the mutants' verdicts -----------------------------------------------
for label in "${mutant_boots[@]}"; do
	m=${mutant_of[$label]} results=$builddir/kvm-mutants-$label.results
	if [[ -z ${must_fail[$label]} ]]; then
		tap "not ok" "mutant $m, boot $label: tests/kvm/mutants/$m.patch lists cases that must fail there"
		continue
	fi
	while IFS= read -r want; do
		[[ -n $want ]] || continue
		got=$(awk -F'\t' -v c="$want" '$2 == c { print $1 }' "$results" | sort -u | paste -sd, -)
		case $got in
		"not ok") tap ok "mutant $m, boot $label: $want fails" ;;
		"") tap "not ok" "the tests did not catch mutant $m: $want did not run on $label" ;;
		ok) tap "not ok" "the tests did not catch mutant $m: $want passed on $label" ;;
		skip) tap "not ok" "the tests did not catch mutant $m: $want was skipped on $label" ;;
		*) tap "not ok" "the tests did not catch mutant $m: $want on $label: $got" ;;
		esac
	done <<<"${must_fail[$label]}"
	if ! grep -q '^not ok' "$results"; then
		tap "not ok" "the tests did not catch mutant $m: every case passed on $label"
	fi
	# What else failed: listed, not counted.
	awk -F'\t' '$1 == "not ok" { print $2 }' "$results" | grep -vxF -f <(printf '%s' "${must_fail[$label]}") |
		sed "s/^/# $label also failed (not listed): /"
done
finish
