#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/run-suite.sh BUILD_DIR [threaded]
#
# Runs the test programs of one meson build directory and counts their TAP.
#
#   * every executable BUILD_DIR/tests/test_* (defined in tests/meson.build);
#   * every shell test tests/test_*.sh of the source tree, run with bash and
#     the CLI (BUILD_DIR/postcopy) as $1.
#   * `threaded`: only the names listed in tests/threaded.list (one per line,
#     `#` comments allowed; a name is a binary like test_fill or a script like
#     test_cli.sh).  Without that file: every binary, no shell tests.
#
# Each program runs with cwd BUILD_DIR/tests, a ${SUITE_TIMEOUT:-300} s
# timeout and these variables: POSTCOPY_CLI (absolute path of the CLI),
# POSTCOPY_SRCDIR, POSTCOPY_BUILDDIR.  Its stdout must be TAP:
#   1..N  /  ok N - name  /  not ok N - name  /  ok N - name # SKIP reason
# (`1..0 # SKIP reason` skips a whole program).  stdout and stderr are shown
# prefixed with the program name; only stdout is parsed.  A program that
# exits non-zero, dies by a signal, times out, prints "Bail out!", has no plan
# or fewer/more results than its plan counts as one extra failure.
#
# Prints `N passed, N failed, N skipped` and writes "P F S" to
# BUILD_DIR/suite-counts, and each failure on a line of
# BUILD_DIR/suite-failures (so a summary can repeat them at the end, with
# any sanitizer or assertion summary the program printed on stderr).
# Exit status: 0 iff nothing failed.
set -uo pipefail

usage() { echo "usage: $0 BUILD_DIR [threaded]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $# -eq 1 || $2 == threaded ]] || usage

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
builddir=$(cd "$1" 2>/dev/null && pwd) || { echo "$0: no build dir '$1'" >&2; exit 2; }
mode=${2:-all}
timeout_s=${SUITE_TIMEOUT:-300}
counts=$builddir/suite-counts
failures=$builddir/suite-failures
logdir=$builddir/suite-logs
rm -f "$counts" "$failures"
rm -rf "$logdir"
mkdir -p "$logdir" "$builddir/tests"
# The fuzz corpus replay is built in BUILD_DIR/fuzz (fuzz/meson.build).
[[ -x $builddir/fuzz/test_fuzz_replay ]] && ln -sf ../fuzz/test_fuzz_replay "$builddir/tests/test_fuzz_replay"

export POSTCOPY_CLI=$builddir/postcopy
export POSTCOPY_SRCDIR=$srcdir
export POSTCOPY_BUILDDIR=$builddir

passed=0 failed=0 skipped=0

# ---- what to run -----------------------------------------------------------
declare -a names=()
is_binary() { [[ -f $builddir/tests/$1 && -x $builddir/tests/$1 ]]; }

if [[ $mode == threaded && -f $srcdir/tests/threaded.list ]]; then
	while read -r name _; do
		[[ -z $name || $name == \#* ]] || names+=("$name")
	done <"$srcdir/tests/threaded.list"
else
	for f in "$builddir"/tests/test_*; do
		n=${f##*/}
		# skip meson's *.p object dirs and anything that is not a program
		[[ $n == *.p || $n == *.o ]] && continue
		is_binary "$n" && names+=("$n")
	done
	if [[ $mode == all ]]; then
		for f in "$srcdir"/tests/test_*.sh; do
			[[ -f $f ]] && names+=("${f##*/}")
		done
	fi
fi

# ---- one program -----------------------------------------------------------
fail_msg() {
	echo "$1: FAIL: $2"
	echo "$1: FAIL: $2" >>"$failures"
	failed=$((failed + 1))
}

run_one() {
	local name=$1 out=$logdir/$1.out err=$logdir/$1.err rcfile=$logdir/$1.rc
	local -a cmd
	if [[ $name == *.sh ]]; then
		[[ -f $srcdir/tests/$name ]] || { fail_msg "$name" "no such script tests/$name"; return; }
		cmd=(bash "$srcdir/tests/$name" "$POSTCOPY_CLI")
	else
		is_binary "$name" || { fail_msg "$name" "no such test program $builddir/tests/$name"; return; }
		cmd=("$builddir/tests/$name")
	fi

	echo "=== $name"
	# The program's stdout goes through tee (kept for parsing), its stderr
	# (fd 3) straight to the screen, both prefixed by sed.  The subshell turns
	# a death by signal into an exit status, so bash prints no job message.
	{
		(cd "$builddir/tests" && timeout -k 10 "$timeout_s" "${cmd[@]}" </dev/null 2> >(tee "$err" >&3) || exit $?) 2>/dev/null |
			tee "$out"
		echo "${PIPESTATUS[0]}" >"$rcfile"
	} 3>&1 | sed -u "s|^|$name: |"
	local rc
	rc=$(cat "$rcfile" 2>/dev/null) || rc=255

	local plan=-1 nres=0 p=0 f=0 s=0 bail=0 line rest
	while IFS= read -r line || [[ -n $line ]]; do
		line=${line%$'\r'}
		if [[ $line =~ ^1\.\.([0-9]+) ]]; then
			plan=${BASH_REMATCH[1]}
			# `1..0 # SKIP reason`: the whole program is skipped
			if ((plan == 0)) && [[ ${line,,} =~ \#[[:space:]]*skip ]]; then s=$((s + 1)); fi
		elif [[ $line =~ ^not\ ok($|[[:space:]])(.*) ]]; then
			nres=$((nres + 1)) rest=${BASH_REMATCH[2]}
			if [[ ${rest,,} =~ \#[[:space:]]*(todo|skip) ]]; then s=$((s + 1)); else
				f=$((f + 1))
				echo "$name: $line" >>"$failures"
			fi
		elif [[ $line =~ ^ok($|[[:space:]])(.*) ]]; then
			nres=$((nres + 1)) rest=${BASH_REMATCH[2]}
			if [[ ${rest,,} =~ \#[[:space:]]*skip ]]; then s=$((s + 1)); else p=$((p + 1)); fi
		elif [[ $line == "Bail out!"* ]]; then
			bail=1
		fi
	done <"$out"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))

	if ((rc == 124)); then
		fail_msg "$name" "timed out after ${timeout_s}s"
	elif ((rc > 128)); then
		fail_msg "$name" "killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo '?'))"
	elif ((rc != 0)); then
		fail_msg "$name" "exit status $rc"
	elif ((bail)); then
		fail_msg "$name" "bailed out"
	elif ((plan < 0)); then
		fail_msg "$name" "no TAP plan (1..N) printed"
	elif ((nres < plan)); then
		fail_msg "$name" "only $nres of $plan planned results"
	elif ((nres > plan)); then
		fail_msg "$name" "$nres results but the plan says $plan"
	fi
	if ((rc != 0)); then
		grep -E -m 3 'SUMMARY:|Assertion|runtime error|ERROR:' "$err" 2>/dev/null |
			sed "s|^|$name:   |" >>"$failures"
	fi
}

if ((${#names[@]} == 0)); then
	echo "$0: no tests found in $builddir/tests (mode: $mode)"
	failed=$((failed + 1))
fi
for n in "${names[@]}"; do
	run_one "$n"
done

echo "$passed $failed $skipped" >"$counts"
echo "--- ${builddir##*/}${2:+ ($2)}: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
