#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The standard benchmark matrix: vCPUs 1..32 x {wait, 1 uffd, 1 reader;
# wait, one uffd per vCPU; exit} x fetch delay {0, 30 us sleeping}, plus
# windowed exit runs; then whole migrations under load over TCP and Unix
# sockets (netbench --load-only, BENCH_LOAD_REPS times, default 3).  Each bench run measures its own no-userfaultfd
# baseline, so every figure is a ratio taken within one run; each point is
# run BENCH_REPS times (default 3) and the tables show the median run.
# Writes OUT/results.jsonl, OUT/tables.md, OUT/*.png (gnuplot).
#
# usage: bench/run-matrix.sh POSTCOPY_CLI [OUT_DIR]
set -euo pipefail
cli=${1:?usage: run-matrix.sh POSTCOPY_CLI [OUT_DIR]}
out=${2:-$(dirname "$cli")/bench}
here=$(cd "$(dirname "$0")" && pwd)
per_vcpu=${BENCH_PER_VCPU:-16M}
vcpus=${BENCH_VCPUS:-"1 2 4 8 16 32"}
reps=${BENCH_REPS:-3}
mkdir -p "$out"
: > "$out/results.jsonl"

# A point that fails (bench exits 1 and still writes its JSON, marked
# unverified) does not stop the matrix; the script exits 1 at the end.
failures=0
run() { # name, then bench args
	local name=$1; shift
	for rep in $(seq "$reps"); do
		echo "bench: $name ($rep/$reps) $*" >&2
		"$cli" bench --json --cdf "$out/cdf-$name-r$rep.dat" "$@" >> "$out/results.jsonl" ||
			{ echo "bench: $name ($rep/$reps) failed" >&2; failures=$((failures + 1)); }
	done
}

for d in 0 30; do
	for v in $vcpus; do
		run "wait1-v$v-d$d" -v "$v" -b "$per_vcpu" -m wait -a -r 1 -d "$d"
		run "waitper-v$v-d$d" -v "$v" -b "$per_vcpu" -m wait -r 1 -d "$d"
		run "exit-v$v-d$d" -v "$v" -b "$per_vcpu" -m exit -d "$d"
	done
done
for v in $vcpus; do
	run "exitw16-v$v-d0" -v "$v" -b "$per_vcpu" -m exit -w 16
done

# Whole migrations under load over the network (netbench), TCP and Unix.
load_reps=${BENCH_LOAD_REPS:-3}
load_runs=()
for t in tcp unix; do
	for rep in $(seq "$load_reps"); do
		f=$out/load-$t-r$rep.json
		echo "bench: migration under load, $t ($rep/$load_reps)" >&2
		"$cli" netbench -s "${BENCH_LOAD_SIZE:-1G}" --load-only $([[ $t == unix ]] && echo --unix) \
			--json > "$f" && load_runs+=("$f") ||
			{ echo "bench: netbench $t ($rep) failed" >&2; failures=$((failures + 1)); }
	done
done
((${#load_runs[@]})) && python3 "$here/load_table.py" "${load_runs[@]}" > "$out/load.md"

python3 "$here/tables.py" "$out/results.jsonl" > "$out/tables.md"
if command -v gnuplot > /dev/null; then
	gnuplot -e "dir='$out'" "$here/plots.gp" ||
		echo "bench: some plots lack data (a partial matrix?)" >&2
else
	echo "bench: gnuplot not found; no plots" >&2
fi
echo "bench: results in $out (tables.md, *.png)" >&2

# Into the repository's BENCHMARKS.md (between its markers) and docs/bench/,
# unless BENCH_NO_UPDATE is set; the prose around the table is by hand.
md=$here/../BENCHMARKS.md
if [[ -z ${BENCH_NO_UPDATE:-} && -f $md ]]; then
	python3 "$here/md_table.py" "$md" bench "$out/tables.md"
	[[ -f $out/load.md ]] && python3 "$here/md_table.py" "$md" load "$out/load.md"
	mkdir -p "$here/../docs/bench"
	cp "$out"/*.png "$here/../docs/bench/" 2>/dev/null || true
	echo "bench: updated BENCHMARKS.md's table and docs/bench/*.png" >&2
fi
if ((failures)); then
	echo "bench: $failures runs failed (see above)" >&2
	exit 1
fi
