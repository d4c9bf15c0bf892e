#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test_ws_cli.sh - working sets from the command line: `restore --workload
# ws --record-ws`, `ws show`, `ws merge`, `restore --replay-ws` (both
# modes, byte-verified by restore itself), `fc-handler --replay-ws` and
# `--record-ws` (a file per VM, exactly the pages it faulted on, then the
# fill), and the refusals: a recording of another image, a truncated one,
# a corrupt one, fc-handler's bad --record-ws flags.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init ws
trap 'rm -rf "$tmp"' EXIT

echo "1..25"

run mkimage "$tmp/a.img" 16M
run mkimage --seed 2 "$tmp/b.img" 16M

ok_rec=0
for s in 1 2 3; do
	run restore --image "$tmp/a.img" --workload ws --seed $s --record-ws "$tmp/r$s.ws"
	((rc == 0)) && grep -q '^recorded   [1-9]' "$out" && grep -q 'every byte matches' "$out" || ok_rec=1
done
check "restore_records_a_working_set" $ok_rec

run ws show "$tmp/r1.ws"
((rc == 0)) && grep -q '^pages      [1-9]' "$out" && grep -q 'first touches over time' "$out"
check "ws_show_prints_pages_and_histogram" $?

# A recording holds every page the workload touched: by default it faults
# one page at a time (a window's other pages would take no fault and be
# missing from it).
run restore --image "$tmp/a.img" --workload ws --seed 5 --record-ws "$tmp/r5.ws" --json
touched=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["workload_pages"])' "$out" 2>/dev/null)
recorded=$("$cli" ws show "$tmp/r5.ws" | awk '$1 == "pages" { print $2 }')
((rc == 0)) && [[ -n $touched && $recorded == "$touched" ]]
check "restore_records_every_page_the_workload_touched" $?

run ws merge "$tmp/r1.ws" "$tmp/r2.ws" "$tmp/r3.ws" -o "$tmp/m.ws" -k 2
((rc == 0)) && grep -q 'at least 2 of 3' "$out"
check "ws_merge_keeps_pages_of_k_runs" $?

run ws show "$tmp/m.ws"
((rc == 0)) && grep -q '3 runs' "$out"
check "merged_working_set_names_its_runs" $?

for m in exit wait; do
	run restore --image "$tmp/a.img" -m $m --workload ws --seed 4 -d 50 --replay-ws "$tmp/m.ws"
	((rc == 0)) && grep -Eq '[1-9][0-9]* replayed' "$out" && grep -q 'every byte matches' "$out"
	check "restore_${m}_replays_a_merged_working_set_byte_exact" $?
done

# Over the network the replay's order goes to the server too (the push
# sends it first); restore still checks every byte.
ws_pages=$("$cli" ws show "$tmp/m.ws" | awk '$1 == "pages" { print $2 }')
for m in exit wait; do
	sock=$tmp/ws-$m.sock
	"$cli" serve --image "$tmp/a.img" --listen "unix:$sock" --once >"$tmp/serve.out" 2>&1 &
	spid=$!
	for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
	run restore --source "unix:$sock" --image "$tmp/a.img" -m $m --workload ws --seed 4 \
		--replay-ws "$tmp/m.ws" --json
	wait $spid
	((rc == 0)) && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(not (d["verified"] and d["mismatched_pages"] == 0 and
              d["net"]["pages_ordered"] == int(sys.argv[2])))' "$out" "$ws_pages"
	check "restore_${m}_from_a_server_sends_the_replay_order_byte_exact" $?
done

# Without --image the identity is the one the server proved: a recording
# of its image replays (every page checked against the server's digest),
# one of another image is refused before anything is restored.
sock=$tmp/ws-id.sock
"$cli" serve --image "$tmp/a.img" --listen "unix:$sock" --once >"$tmp/serve.out" 2>&1 &
spid=$!
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
run restore --source "unix:$sock" --workload ws --seed 4 --replay-ws "$tmp/m.ws"
wait $spid
((rc == 0)) && grep -Eq '[1-9][0-9]* replayed' "$out" && grep -q "server's, proved" "$out" &&
	grep -q 'every page matched' "$out"
check "restore_from_a_server_without_image_replays_by_the_servers_identity" $?
"$cli" serve --image "$tmp/b.img" --listen "unix:$sock" --once >"$tmp/serve.out" 2>&1 &
spid=$!
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
run restore --source "unix:$sock" --workload ws --seed 4 --replay-ws "$tmp/m.ws"
kill $spid 2>/dev/null
wait $spid 2>/dev/null
((rc == 1)) && grep -q 'another image' "$err" && ! grep -q '^restored' "$out"
check "restore_from_a_server_of_another_image_refuses_the_recording" $?

run restore --image "$tmp/b.img" --workload ws --replay-ws "$tmp/r1.ws"
((rc == 1)) && grep -q 'another image' "$err"
check "replay_of_another_images_recording_is_refused" $?

head -c -5 "$tmp/r1.ws" >"$tmp/short.ws"
run restore --image "$tmp/a.img" --workload ws --replay-ws "$tmp/short.ws"
((rc == 1)) && grep -q 'truncated' "$err" && ! grep -q '^restored' "$out"
check "truncated_recording_is_refused_before_restoring" $?

cp "$tmp/r1.ws" "$tmp/bad.ws"
printf '\xff' | dd of="$tmp/bad.ws" bs=1 seek=100 conv=notrunc status=none
run ws show "$tmp/bad.ws"
((rc == 1)) && grep -q 'checksum' "$err"
check "corrupt_recording_is_refused" $?

run restore --image "$tmp/a.img" --record-ws "$tmp/x.ws" --seed 3
((rc == 2))
check "seed_without_ws_workload_is_a_usage_error" $?

for m in exit wait; do
	run bench -v 2 -b 8M -m $m --pattern ws --ws-seed 5 -d 20
	((rc == 0)) && grep -q 'working-set access' "$out" && grep -q 'every byte matches' "$out" &&
		grep -q '^duplicates 0 ' "$out"
	check "bench_${m}_runs_the_ws_workload_verified" $?
done

# fc-handler --replay-ws: every VM gets the recording first (fc_client checks
# every byte it reads); another image's recording is refused at start.
client_bin=${POSTCOPY_BUILDDIR:-$(dirname "$cli")}/tests/fc_client
[[ -x $client_bin ]] || client_bin=$(dirname "$cli")/tests/fc_client
# start_fc ARGS...: fc-handler on $sock (JSON to fc.out, log to fc.err),
# hpid set, back once it listens.  start_server: `serve` of a.img on
# fcs.sock, spid set.  run_client ARGS...: fc_client on $sock, crc set
# and returned.
start_fc() {
	rm -f "$sock"
	"$cli" fc-handler --sock "$sock" --json "$@" >"$tmp/fc.out" 2>"$tmp/fc.err" &
	hpid=$!
	for _ in $(seq 200); do [[ -S $sock ]] && break; sleep 0.05; done
}
start_server() {
	"$cli" serve --image "$tmp/a.img" --listen "unix:$tmp/fcs.sock" >"$tmp/serve.out" 2>&1 &
	spid=$!
	for _ in $(seq 100); do [[ -S $tmp/fcs.sock ]] && break; sleep 0.05; done
}
stop_server() {
	kill $spid 2>/dev/null
	wait $spid 2>/dev/null
}
run_client() {
	timeout -k 5 90 "$client_bin" --sock "$sock" --image "$tmp/a.img" --threads 2 "$@" \
		>"$tmp/c.out" 2>"$tmp/c.err"
	crc=$?
	return $crc
}
# fc_json PYTHON-EXPR: EXPR holds for vms, the list of fc.out's reports.
fc_json() {
	python3 -c "
import json, sys
vms = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(not ($1))" "$tmp/fc.out"
}
replayed='len(vms) == 1 and vms[0]["status"] == "complete" and vms[0]["pages_by_origin"]["replay"] > 0'

if [[ -x $client_bin ]]; then
	sock=$tmp/fc.sock
	start_fc --image "$tmp/a.img" --replay-ws "$tmp/m.ws"
	run_client
	for _ in $(seq 200); do [[ -s $tmp/fc.out ]] && break; sleep 0.05; done
	kill -TERM $hpid 2>/dev/null
	wait $hpid
	((crc == 0)) && fc_json "$replayed"
	check "fc_handler_replays_a_working_set_into_a_vm" $? "$tmp/fc.out" "$tmp/fc.err"
	# From a server, without --image: the identity its server proves.
	start_server
	start_fc --source "unix:$tmp/fcs.sock" --replay-ws "$tmp/m.ws" --once
	run_client
	wait $hpid
	stop_server
	((crc == 0)) && fc_json "$replayed"
	check "fc_handler_from_a_server_replays_by_the_servers_identity" $? "$tmp/fc.out" "$tmp/fc.err"

	# fc-handler --record-ws: every VM its own file (%n); it holds exactly
	# the pages the VM faulted on until the recording ended (fc_client
	# touches pages 0..63 and waits; the window is 1 while recording);
	# then the fill starts and the VM is served whole, every byte checked.
	start_fc --image "$tmp/a.img" --record-ws "$tmp/fc%n.ws" --record-seconds 1
	ok=0
	for vm in 1 2; do
		rm -f "$tmp/ready" "$tmp/go"
		run_client --pause-pages 64 --ready "$tmp/ready" --go "$tmp/go" &
		cpid=$!
		for _ in $(seq 400); do grep -q "recorded to $tmp/fc$vm.ws" "$tmp/fc.err" && break; sleep 0.05; done
		touch "$tmp/go"
		wait $cpid || ok=1
		"$cli" ws show --list "$tmp/fc$vm.ws" >"$tmp/list$vm" || ok=1
		# The listed offsets, sorted: pages 0..63 and nothing else.
		awk '/ thread / { print $1 }' "$tmp/list$vm" | python3 -c '
import sys
got = sorted(int(x, 0) for x in sys.stdin.read().split())
sys.exit(got != [p * 4096 for p in range(64)])' || ok=1
	done
	for _ in $(seq 200); do (($(wc -l <"$tmp/fc.out") >= 2)) && break; sleep 0.05; done
	kill -TERM $hpid 2>/dev/null
	wait $hpid || ok=1
	((ok == 0)) && fc_json 'len(vms) == 2 and all(
    d["status"] == "complete" and d["ws_recorded_pages"] == 64 and
    d["pages_by_origin"]["fill"] > 0 and d["ws_file"].endswith("/fc%d.ws" % (i + 1))
    for i, d in enumerate(vms))'
	check "fc_handler_records_each_vms_working_set_then_fills" $? "$tmp/fc.out" "$tmp/fc.err"

	# A recording from fc-handler is one like any other: restore replays it.
	run restore --image "$tmp/a.img" --workload ws --seed 4 --replay-ws "$tmp/fc1.ws" --json
	((rc == 0)) && json_check 'd["verified"] is True and d["stats"]["pages_replay"] > 0'
	check "restore_replays_a_recording_fc_handler_made" $?

	# With --once one file needs no %n; a VM that completes before the
	# recording's time is saved then, all its pages in it.
	start_fc --image "$tmp/a.img" --record-ws "$tmp/once.ws" --once
	run_client
	wait $hpid
	hrc=$?
	((crc == 0 && hrc == 0)) && fc_json 'vms[0]["status"] == "complete" and
    vms[0]["ws_recorded_pages"] == vms[0]["pages"] and vms[0]["pages_by_origin"]["fill"] == 0' &&
		"$cli" ws show "$tmp/once.ws" | grep -q '(100.00% of the image)'
	check "fc_handler_once_records_a_vm_that_completes_first" $? "$tmp/fc.out" "$tmp/fc.err"

	# From a server, without --image: the recording names the image the
	# server proved, so it replays against the file's identity.
	start_server
	start_fc --source "unix:$tmp/fcs.sock" --record-ws "$tmp/net.ws" --once
	run_client
	wait $hpid
	hrc=$?
	stop_server
	run restore --image "$tmp/a.img" --workload ws --seed 4 --replay-ws "$tmp/net.ws" --json
	((crc == 0 && hrc == 0 && rc == 0)) &&
		json_check 'd["verified"] is True and d["stats"]["pages_replay"] > 0'
	check "fc_handler_from_a_server_records_by_the_servers_identity" $? "$tmp/fc.out" "$tmp/fc.err"
else
	for t in fc_handler_replays_a_working_set_into_a_vm \
		fc_handler_from_a_server_replays_by_the_servers_identity \
		fc_handler_records_each_vms_working_set_then_fills \
		restore_replays_a_recording_fc_handler_made \
		fc_handler_once_records_a_vm_that_completes_first \
		fc_handler_from_a_server_records_by_the_servers_identity; do
		skip "$t" "no fc_client next to the CLI"
	done
fi
timeout 20 "$cli" fc-handler --sock "$tmp/fc2.sock" --image "$tmp/b.img" --replay-ws "$tmp/m.ws" \
	>"$out" 2>"$err"
rc=$?
((rc == 1)) && grep -q 'another image' "$err"
check "fc_handler_refuses_another_images_recording" $?

# --record-ws's refusals, before anything is served: one file for many VMs,
# an unknown %, --record-seconds alone or out of range, no identity (HTTP).
ok=0
for args in "--record-ws $tmp/x.ws" "--record-ws $tmp/x%q.ws --once" \
	"--record-seconds 5" "--record-ws $tmp/x%n.ws --record-seconds 0"; do
	# shellcheck disable=SC2086 # the words are the flags
	timeout 20 "$cli" fc-handler --sock "$tmp/fc3.sock" --image "$tmp/a.img" $args >"$out" 2>"$err"
	rc=$?
	((rc == 2)) && [[ ! -e $tmp/fc3.sock ]] || { echo "# $args: $rc"; ok=1; }
done
grep -q 'a file of its own' <(timeout 20 "$cli" fc-handler --sock "$tmp/fc3.sock" --image "$tmp/a.img" \
	--record-ws "$tmp/x.ws" 2>&1) || ok=1
timeout 20 "$cli" fc-handler --sock "$tmp/fc3.sock" --source http://127.0.0.1:9/x \
	--record-ws "$tmp/x%n.ws" >"$out" 2>"$err"
rc=$?
((rc == 2)) && grep -q 'record-ws goes with --image' "$err" || ok=1
check "fc_handler_record_ws_refusals_exit_2" $ok

exit $((failed > 0))
