#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Working-set replay against no replay, in the same run (BENCHMARKS.md,
# "Working-set replay"): a SIZE image (default 1G), 2 vCPUs, shmem, a
# sleeping DELAY µs per request (default 100), the filler on, the default
# window.  Records the `ws` workload of seeds 2, 3 and 4 and merges them
# (pages in at least 2 of 3), records an unrelated working set (another
# base set, similarity about 0), then for REPS rounds (default 6) and both
# modes restores seed 1 with no replay, the merged recording and the
# unrelated one, in turn.  Prints one Markdown row per round and mode, then
# per mode the medians of the per-round ratios: the workload's time
# (until the vCPUs finished their working set) and its demand faults.
# Every restore verifies every byte (--image).
#
# usage: bench/ws-replay.sh POSTCOPY_CLI [SIZE [REPS [DELAY]]]
set -euo pipefail
cli=$(realpath "${1:?usage: ws-replay.sh POSTCOPY_CLI [SIZE [REPS [DELAY]]]}")
size=${2:-1G}
reps=${3:-6}
delay=${4:-100}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/postcopy-bench-ws.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

"$cli" mkimage "$tmp/img" "$size" >/dev/null
common=(--image "$tmp/img" --vcpus 2 -d "$delay" --workload ws --json)
# restore ARGS...: one restore's JSON line (compact), or fail the script.
restore() {
	"$cli" restore "${common[@]}" "$@" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))'
}
for s in 2 3 4; do restore -m exit --seed "$s" --record-ws "$tmp/r$s.ws" >/dev/null; done
"$cli" ws merge "$tmp/r2.ws" "$tmp/r3.ws" "$tmp/r4.ws" -o "$tmp/m.ws" >/dev/null
restore -m exit --ws-base 77 --seed 2 --record-ws "$tmp/u.ws" >/dev/null

echo "| round | mode | none: workload / faults | merged: workload / faults | unrelated: workload / faults | merged ÷ none: time, faults | unrelated ÷ none: time |"
echo "|---|---|---|---|---|---|---|"
: >"$tmp/rows"
for ((r = 1; r <= reps; r++)); do
	for mode in exit wait; do
		none=$(restore -m "$mode" --seed 1)
		merged=$(restore -m "$mode" --seed 1 --replay-ws "$tmp/m.ws")
		unrel=$(restore -m "$mode" --seed 1 --replay-ws "$tmp/u.ws")
		python3 - "$r" "$mode" "$none" "$merged" "$unrel" "$tmp/rows" <<'PY'
import json, sys
r, mode, rows = sys.argv[1], sys.argv[2], sys.argv[6]
n, m, u = (json.loads(a) for a in sys.argv[3:6])
for d in (n, m, u):
    if not d["verified"]:
        sys.exit("ws-replay: a restore did not verify")
t = lambda d: d["workload_seconds"]
f = lambda d: d["stats"]["faults"]
print(f"| {r} | {mode} | {t(n):.3f} s / {f(n)} | {t(m):.3f} s / {f(m)} | {t(u):.3f} s / {f(u)} "
      f"| {t(n) / t(m):.1f}× shorter, {100 * f(m) / f(n):.1f}% | {t(u) / t(n):.2f}× |")
with open(rows, "a") as out:
    out.write(f"{mode} {t(n) / t(m)} {f(m) / f(n)} {t(u) / t(n)}\n")
PY
	done
done
python3 - "$tmp/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for mode in ("exit", "wait"):
    v = [[float(x) for x in l[1:]] for l in rows if l[0] == mode]
    short, faults, unrel = zip(*v)
    print(f"\n{mode}: merged {statistics.median(short):.1f}× shorter (median of {len(v)}; "
          f"{min(short):.1f}–{max(short):.1f}), faults {100 * statistics.median(faults):.1f}% "
          f"({100 * min(faults):.1f}–{100 * max(faults):.1f}%); unrelated ÷ none "
          f"{statistics.median(unrel):.2f}× ({min(unrel):.2f}–{max(unrel):.2f})")
PY
