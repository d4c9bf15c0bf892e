#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_packed.sh POSTCOPY - `postcopy pack` / `unpack` and restoring packed
# images from files (docs/packed.md).  Prints TAP.  (Packed images over
# HTTP are in test_http.sh, next to nginx.)
#
# Pins: pack then unpack gives the raw image back byte for byte (cmp), with
# all-zero chunks stored as nothing and left as holes; restore --image
# PACKED completes and matches in exit and wait mode, zero chunks installed
# as zero pages; a damaged chunk fails the restore (never installed) and
# unpack, saying so; a damaged index or a truncated file is refused at
# open, saying so; pack refuses a packed input and bad chunk sizes;
# `serve` of a packed image serves the raw image it holds (a restore
# from it matches the raw image byte for byte in both modes, its zero
# chunks sent as zero pages) and refuses a damaged one at start.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init packed
trap 'rm -rf "$tmp"' EXIT

echo "1..12"
raw=$tmp/raw pk=$tmp/raw.pk
# 6 MiB of pattern and 2 MiB of zeros at the end (two zero chunks of 1 MiB).
run mkimage "$raw" 6M
truncate -s 8M "$raw"
run pack "$raw" "$pk"
((rc == 0)) && grep -q "(2 zero" "$out" && "$cli" unpack "$pk" "$tmp/back" >"$out" 2>"$err" &&
	cmp "$raw" "$tmp/back" >>"$err" 2>&1
check pack_then_unpack_gives_the_raw_image_back $?

blocks=$(stat -c %b "$tmp/back")
((blocks * 512 <= 6 * 1024 * 1024 + 65536))
check unpack_leaves_zero_chunks_as_holes $?

for mode in exit wait; do
	run restore --image "$pk" -m "$mode" --vcpus 2 --json
	((rc == 0)) && json_check 'd["verified"] and d["stats"]["zero_pages"] >= 512'
	check "restore_packed_file_${mode}_mode_matches_with_zero_chunks_as_zero_pages" $?
done

# A byte of the first chunk's data flipped: its digest no longer matches.
cp "$pk" "$tmp/bad.pk"
python3 - "$tmp/bad.pk" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(96)
data_offset = struct.unpack_from("<Q", h, 48)[0]
f.seek(data_offset + 100)
b = f.read(1)
f.seek(data_offset + 100)
f.write(bytes([b[0] ^ 0x40]))
PY
run restore --image "$tmp/bad.pk" --vcpus 1
((rc == 1)) && grep -q "Bad message" "$err" && ! grep -q "pages differ" "$err"
check restore_of_a_damaged_chunk_fails_and_installs_nothing_of_it $?

"$cli" unpack "$tmp/bad.pk" "$tmp/bad.raw" >"$out" 2>"$err"
rc=$?
((rc == 1)) && grep -q "does not match its digest" "$err" && [[ ! -e $tmp/bad.raw ]]
check unpack_of_a_damaged_chunk_fails_saying_so $?

# A byte of the index flipped: the identity no longer matches.
cp "$pk" "$tmp/badidx.pk"
printf '\x01' | dd of="$tmp/badidx.pk" bs=1 seek=4100 conv=notrunc status=none
run restore --image "$tmp/badidx.pk"
((rc == 1)) && grep -q "damaged packed image" "$err"
check restore_of_a_damaged_index_is_refused_at_open $?

head -c 4096 "$pk" >"$tmp/short.pk"
run restore --image "$tmp/short.pk"
((rc == 1)) && grep -q "damaged packed image" "$err"
check restore_of_a_truncated_packed_file_is_refused_at_open $?

run pack "$pk" "$tmp/twice.pk"
((rc == 1)) && grep -q "packed already" "$err"
r1=$?
run pack --chunk 5000 "$raw" "$tmp/odd.pk"
((r1 == 0 && rc == 2))
check pack_refuses_packed_input_and_bad_chunk_sizes $?

# serve PACKED: a session over a Unix socket, compared with the raw image.
srv_pid=
for mode in exit wait; do
	sock=$tmp/srv.$mode.sock
	"$cli" serve --image "$pk" --listen "unix:$sock" --once --json >"$tmp/srv.out" 2>"$tmp/srv.err" &
	srv_pid=$!
	for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
	run restore --source "unix:$sock" --image "$raw" -m "$mode" --vcpus 2 --json
	r=$rc
	wait "$srv_pid"
	src=$?
	((r == 0 && src == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0' &&
		grep -q '"image_packed":true' "$tmp/srv.out"
	check "serve_of_a_packed_image_${mode}_mode_restores_the_raw_image_byte_for_byte" $? "$tmp/srv.err"
done
timeout 20 "$cli" serve --image "$tmp/bad.pk" --listen "unix:$tmp/bad.sock" >"$out" 2>"$err"
rc=$?
((rc == 1)) && grep -q "does not match its digest" "$err" && [[ ! -S $tmp/bad.sock ]]
check serve_of_a_damaged_packed_image_fails_at_start_saying_so $?
exit $((failed > 0))
