#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# QEMU's own post-copy against postcopy's migration under load, side by side
# in one run, so that BENCHMARKS.md can give a ratio measured on the same
# machine at the same time.  A benchmark tool, not a test.
#
#  - QEMU (qemu-system-x86_64, TCG unless ACCEL says otherwise): two QEMU
#    processes on loopback TCP, source and destination (-incoming), a guest
#    of SIZE in a memfd-backed RAM (share=on), postcopy-ram and
#    postcopy-preempt on both ends, migrate and at once
#    migrate-start-postcopy (bench/qemu_migrate.py, over QMP).  The guest
#    (bench/qemu-guest, bare metal, built here with gcc -m32) fills its
#    memory, then keeps reading and writing every page (in order, or with a
#    stride of 7919 pages) while the migration runs, and afterwards checks
#    every page on the destination; a run that does not verify fails.
#  - postcopy: `postcopy netbench -s SIZE --load-only --load-vcpus V` over
#    TCP (both modes, in order / at random / stride 7919).
#  Runs are interleaved (QEMU points, then netbench, N times) so that noise
#  hits both.  Prints a Markdown table on stdout; the raw JSON stays in OUT.
#
# usage: bench/qemu-postcopy.sh [options] BUILD_DIR
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/qemu-postcopy.sh [options] BUILD_DIR

QEMU's post-copy (two qemu-system-x86_64 on loopback TCP, a guest that keeps
touching all of its memory) and `BUILD_DIR/postcopy netbench --load-only`,
interleaved in one run; prints a Markdown table of QEMU's post-copy phase,
postcopy's time to every page present and their ratio.

  -n N            rounds (default 3)
  -s SIZE         guest / image size (default 1G; the guest uses RAM below 3 GiB)
  --vcpus "LIST"  vCPU counts (default "1 2")
  --patterns "L"  QEMU guest patterns: seq, stride (default "seq stride")
  --no-preempt    QEMU without postcopy-preempt
  --out DIR       keep the JSON there (default: a temporary directory)
  -h, --help      this text

Environment: QEMU (default qemu-system-x86_64), ACCEL (default tcg).
Exit status: 0 measured (or SKIP: no QEMU), 1 a run failed or did not verify.
EOF
}

rounds=3 size=1G vcpus="1 2" patterns="seq stride" preempt=() out=
while (($#)); do
	case $1 in
	-n) rounds=$2; shift 2 ;;
	-s) size=$2; shift 2 ;;
	--vcpus) vcpus=$2; shift 2 ;;
	--patterns) patterns=$2; shift 2 ;;
	--no-preempt) preempt=(--no-preempt); shift ;;
	--out) out=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) usage >&2; exit 2 ;;
	*) break ;;
	esac
done
(($# == 1)) || { usage >&2; exit 2; }
build=$1
cli=$build/postcopy
here=$(cd "$(dirname "$0")" && pwd)
qemu=${QEMU:-qemu-system-x86_64}
accel=${ACCEL:-tcg}

if ! command -v "$qemu" >/dev/null; then
	echo "SKIP: $qemu not found (apt-get install qemu-system-x86); nothing measured"
	exit 0
fi
[[ -x $cli ]] || { echo "qemu-postcopy: $cli not built" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=${out:-$tmp}
mkdir -p "$out"
: > "$out/qemu.jsonl"

guest=$tmp/guest.elf
gcc -m32 -march=i686 -ffreestanding -fno-pic -no-pie -fno-stack-protector \
	-mgeneral-regs-only -O2 -Wall -Wextra -Werror -nostdlib -static \
	-Wl,-T,"$here/qemu-guest/guest.ld" -Wl,--build-id=none -Wl,--no-warn-rwx-segments \
	-o "$guest" "$here/qemu-guest/boot.S" "$here/qemu-guest/guest.c"

max_vcpus=0
for v in $vcpus; do ((v > max_vcpus)) && max_vcpus=$v; done
echo "qemu-postcopy: $("$qemu" --version | head -1), accel $accel; load: $(uptime)" >&2
failures=0
nb_runs=()
for r in $(seq "$rounds"); do
	for v in $vcpus; do
		for p in $patterns; do
			stride=1
			[[ $p == stride ]] && stride=7919
			echo "qemu-postcopy: QEMU $v vCPU(s) $p ($r/$rounds)" >&2
			python3 "$here/qemu_migrate.py" --qemu "$qemu" --accel "$accel" --kernel "$guest" \
				--mem "$size" --vcpus "$v" --stride "$stride" "${preempt[@]}" \
				>> "$out/qemu.jsonl" || failures=$((failures + 1))
		done
	done
	echo "qemu-postcopy: postcopy netbench ($r/$rounds)" >&2
	f=$out/netbench-r$r.json
	if "$cli" netbench -s "$size" --load-only --load-vcpus "$max_vcpus" --json > "$f"; then
		nb_runs+=("$f")
	else
		failures=$((failures + 1))
	fi
done
echo "qemu-postcopy: load after: $(uptime)" >&2

python3 "$here/qemu_table.py" --vcpus "$vcpus" "$out/qemu.jsonl" "${nb_runs[@]}"
((failures == 0)) || { echo "qemu-postcopy: $failures run(s) failed" >&2; exit 1; }
