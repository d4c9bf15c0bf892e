#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# postcopy fc-handler against a handler written like Firecracker's examples
# (build/fc_example_handler: one thread, one UFFDIO_COPY of one page per
# fault), side by side in the same run, with tests/fc_client playing
# Firecracker.  Prints a Markdown table on stdout.
#
#  1. Demand alone (no fill): T guest threads (1 2 4 8 16) each walk their
#     slice of a FAULT_SIZE memory file once, in order and with a stride of
#     7919 pages: the walk's time, faults per second and pages per second,
#     and the stall latency p50/p99 seen by the guest threads; fc-handler
#     with one page per fault, its default adaptive window, and 16 pages.
#  2. A whole restore of a FULL_SIZE memory file while 8 guest threads walk
#     it at a stride: the example handler serves them (it has no fill);
#     fc-handler serves them and fills the rest, from the file and from
#     `postcopy serve` on a Unix socket.  "Every page present" is the
#     guest's walk for the example, the handler's own report for
#     fc-handler (its region complete).
# Every run verifies every byte of the guest memory against the file.
#
# usage: bench/fc-bench.sh BUILD_DIR [FAULT_SIZE [FULL_SIZE]]
set -euo pipefail
build=${1:?usage: fc-bench.sh BUILD_DIR [FAULT_SIZE [FULL_SIZE]]}
fault_size=${2:-256M}
full_size=${3:-1G}
cli=$build/postcopy client=$build/tests/fc_client example=$build/fc_example_handler
for b in "$cli" "$client" "$example"; do
	[[ -x $b ]] || { echo "fc-bench: $b not built" >&2; exit 1; }
done
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"' EXIT
sock=$tmp/fc.sock

"$cli" mkimage "$tmp/fault.img" "$fault_size" >/dev/null
"$cli" mkimage "$tmp/full.img" "$full_size" >/dev/null

# handler NAME ARGS...: start a handler for one VM on $sock, wait for it.
handler() {
	local name=$1
	shift
	rm -f "$sock"
	if [[ $name == example ]]; then
		"$example" "$sock" "$@" >"$tmp/h.out" 2>"$tmp/h.err" &
	else
		"$cli" fc-handler --sock "$sock" --once --json "$@" >"$tmp/h.out" 2>"$tmp/h.err" &
	fi
	hpid=$!
	for _ in $(seq 200); do [[ -S $sock ]] && return 0; sleep 0.02; done
	echo "fc-bench: the $name handler did not start: $(cat "$tmp/h.err")" >&2
	exit 1
}

# walk IMAGE THREADS PATTERN: the client's JSON line in $walk.
walk() {
	walk=$(timeout 300 "$client" --sock "$sock" --image "$1" --threads "$2" --bench "$3") || {
		echo "fc-bench: client failed (status $?)" >&2
		exit 1
	}
	wait "$hpid"
}

get() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

echo "| pattern | threads | handler | walk (s) | faults/s | pages/s | ÷ example (pages/s) | stall p50 / p99 (µs) |"
echo "|---|---|---|---|---|---|---|---|"
for pattern in seq scatter; do
	for t in 1 2 4 8 16; do
		base=0
		for h in example "fc-handler -w 1" "fc-handler (-w auto)" "fc-handler -w 16"; do
			case $h in
			example) handler example "$tmp/fault.img" ;;
			"fc-handler -w 1") handler pc --image "$tmp/fault.img" --no-fill --window 1 ;;
			"fc-handler -w 16") handler pc --image "$tmp/fault.img" --no-fill --window 16 ;;
			*) handler pc --image "$tmp/fault.img" --no-fill ;;
			esac
			walk "$tmp/fault.img" "$t" "$pattern"
			s=$(get "$walk" "d['seconds']") stalls=$(get "$walk" "d['stalls']")
			pages=$(get "$walk" "d['pages']")
			pps=$(python3 -c "print(round($pages / $s))")
			[[ $h == example ]] && base=$pps
			echo "| $pattern | $t | $h | $(printf %.3f "$s") | $(python3 -c "print(round($stalls / $s))") |" \
				"$pps | $(python3 -c "print('%.2f' % ($pps / $base))") |" \
				"$(get "$walk" "'%.0f / %.0f' % (d['p50_us'], d['p99_us'])") |"
		done
	done
done

echo
echo "| whole restore, $full_size, 8 threads at a stride | every page present (s) | ÷ example | guest walk (s) | faults |"
echo "|---|---|---|---|---|"
handler example "$tmp/full.img"
walk "$tmp/full.img" 8 scatter
ex=$(get "$walk" "d['seconds']")
echo "| example handler (demand only) | $(printf %.3f "$ex") | 1.00 | $(printf %.3f "$ex") | $(get "$walk" "d['stalls']") |"
"$cli" serve --image "$tmp/full.img" --listen "unix:$tmp/srv.sock" >/dev/null 2>"$tmp/srv.err" &
pids+=($!)
for _ in $(seq 500); do [[ -S $tmp/srv.sock ]] && break; sleep 0.02; done
for h in "the file" "the file, -w 16" "postcopy serve (push)"; do
	case $h in
	"the file") handler pc --image "$tmp/full.img" ;;
	"the file, -w 16") handler pc --image "$tmp/full.img" --window 16 ;;
	*) handler pc --source "unix:$tmp/srv.sock" ;;
	esac
	walk "$tmp/full.img" 8 scatter
	rep=$(tail -n 1 "$tmp/h.out")
	[[ $(get "$rep" "d['status']") == complete ]] || { echo "fc-bench: $rep" >&2; exit 1; }
	s=$(get "$rep" "d['seconds']")
	echo "| fc-handler, from $h | $(printf %.3f "$s") | $(python3 -c "print('%.2f' % ($s / $ex))") |" \
		"$(printf %.3f "$(get "$walk" "d['seconds']")") | $(get "$rep" "d['faults']") |"
done
