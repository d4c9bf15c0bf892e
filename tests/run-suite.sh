#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/run-suite.sh BUILD_DIR [threaded]
#
# Runs the tests of one meson build directory, one at a time, and counts
# their TAP checks (meson test counts programs; make check counts checks).
#
# What runs, and how, is what tests/meson.build registers with `meson test`
# (read from BUILD_DIR/meson-info/intro-tests.json, which ninja keeps up to
# date): each test's command (a program, or bash with a tests/test_*.sh and
# the CLI as $1, under `setarch ARCH -R` in sanitized builds), its
# environment (the sanitizer options, POSTCOPY_CLI, POSTCOPY_SRCDIR,
# POSTCOPY_BUILDDIR), its working directory (BUILD_DIR/tests) and its
# timeout (SUITE_TIMEOUT, in seconds, overrides it for every test).
#   * without `threaded`: every registered test; a tests/test_*.c or
#     tests/test_*.sh that is not registered counts as a failure;
#   * `threaded`: the tests of suite 'threaded' (tests/threaded.list).
#
# A test's stdout must be TAP:
#   1..N  /  ok N - name  /  not ok N - name  /  ok N - name # SKIP reason
# (`1..0 # SKIP reason` skips a whole program).  stdout and stderr are shown
# prefixed with the test's name; only stdout is parsed.  A test that
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
counts=$builddir/suite-counts
failures=$builddir/suite-failures
logdir=$builddir/suite-logs
rm -f "$counts" "$failures"
rm -rf "$logdir"
mkdir -p "$logdir" "$builddir/tests"
intro=$builddir/meson-info/intro-tests.json
[[ -f $intro ]] || { echo "$0: no $intro (configure with meson setup)" >&2; exit 2; }
for f in "$srcdir/tests/meson.build" "$srcdir/tests/threaded.list"; do
	[[ $f -nt $intro ]] && echo "$0: warning: $f is newer than $intro: run ninja -C $1 first" >&2
done

# ---- what to run -----------------------------------------------------------
# One line per registered test: name, timeout, working directory and the
# command (`env VAR=VALUE... PROGRAM ARGS...`, quoted for bash).
declare -a names=()
declare -A tmo=() wdir=() cmdline=()
while IFS=$'\t' read -r name t wd cmd; do
	names+=("$name") tmo[$name]=$t wdir[$name]=$wd cmdline[$name]=$cmd
done < <(python3 - "$intro" "$mode" <<'EOF'
import json, shlex, sys
path, mode = sys.argv[1], sys.argv[2]
for t in json.load(open(path)):
    if mode == "threaded" and not any(s.split(":")[-1] == "threaded" for s in t["suite"]):
        continue
    env = ["%s=%s" % kv for kv in sorted(t["env"].items())]
    cmd = " ".join(shlex.quote(a) for a in ["env"] + env + t["cmd"])
    print("\t".join([t["name"], str(t["timeout"] or 0), t["workdir"] or ".", cmd]))
EOF
)

passed=0 failed=0 skipped=0

# ---- one program -----------------------------------------------------------
fail_msg() {
	echo "$1: FAIL: $2"
	echo "$1: FAIL: $2" >>"$failures"
	failed=$((failed + 1))
}

run_one() {
	local name=$1 out=$logdir/$1.out err=$logdir/$1.err rcfile=$logdir/$1.rc
	local -a cmd
	eval "cmd=(${cmdline[$name]})"
	local timeout_s=${SUITE_TIMEOUT:-${tmo[$name]}}
	((timeout_s > 0)) || timeout_s=300

	echo "=== $name"
	# The program's stdout goes through tee (kept for parsing), its stderr
	# (fd 3) straight to the screen, both prefixed by sed.  The subshell turns
	# a death by signal into an exit status, so bash prints no job message.
	{
		(cd "${wdir[$name]}" && timeout -k 10 "$timeout_s" "${cmd[@]}" </dev/null 2> >(tee "$err" >&3) || exit $?) 2>/dev/null |
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

# Every test in tests/ must be registered, or it would silently not run.
if [[ $mode == all ]]; then
	for f in "$srcdir"/tests/test_*.c "$srcdir"/tests/test_*.sh; do
		[[ -f $f ]] || continue
		n=${f##*/}
		n=${n%.c}
		[[ -v "cmdline[$n]" ]] ||
			fail_msg "$n" "tests/${f##*/} is not registered in tests/meson.build"
	done
fi

if ((${#names[@]} == 0)); then
	echo "$0: no tests registered in $intro (mode: $mode)"
	failed=$((failed + 1))
fi
for n in "${names[@]}"; do
	run_one "$n"
done

echo "$passed $failed $skipped" >"$counts"
echo "--- ${builddir##*/}${2:+ ($2)}: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
