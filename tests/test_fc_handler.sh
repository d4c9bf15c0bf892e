#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_fc_handler.sh POSTCOPY - `postcopy fc-handler` against fc_client, a
# program that behaves towards it exactly as Firecracker does (see
# tests/fc_client.c).  Prints TAP.
#
# Pins: every JSON field set (v1.1, v1.7, v1.12) is served and every byte
# of the client's memory is right; the userfaultfd(2) fallback; a balloon
# mid-run (pages given back read zeros and are counted); a JSON longer
# than 64 KiB sent in two parts; several VMs at once; 2 MiB hugetlb
# regions (skipped when huge pages cannot be reserved); each malformed
# handshake is refused with its reason and a correct client is served
# right after; a client SIGKILLed mid-run is reported as exited and the
# next is served; a memory file that becomes unreadable mid-run gets the
# client killed, or with --no-kill reported while it is left alone;
# --once and SIGTERM end the handler with status 0; with --source the
# pages come from `postcopy serve` (its push), balloon included, and
# conflicting source flags are refused with status 2.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init fc
client_bin=${POSTCOPY_BUILDDIR:-$(dirname "$cli")}/tests/fc_client
[[ -x $client_bin ]] || client_bin=$(dirname "$cli")/tests/fc_client
hpids=()
hp_orig=""
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
cleanup() {
	local p
	for p in "${hpids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	[[ -n $hp_orig ]] && echo "$hp_orig" >"$HP/nr_hugepages"
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "1..39"
if [[ ! -x $client_bin ]]; then
	for i in $(seq 36); do skip "fc_handler_$i" "no fc_client next to the CLI"; done
	exit 0
fi


check_status() {
	echo "# last status $rc"
	[[ -f $tmp/c.err ]] && sed -n '1,5s|^|# client: |p' "$tmp/c.err"
	[[ -f $hout ]] && tail -n 3 "$hout" | sed 's|^|# handler stdout: |'
	[[ -f $herr ]] && tail -n 5 "$herr" | sed 's|^|# handler stderr: |'
}

# start_handler NAME ARGS...: a handler on $tmp/NAME.sock, JSON on
# $tmp/NAME.out, log on $tmp/NAME.err; hpid, sock, hout, herr are set.
start_handler() {
	local name=$1
	shift
	sock=$tmp/$name.sock hout=$tmp/$name.out herr=$tmp/$name.err
	"$cli" fc-handler --sock "$sock" --json "$@" >"$hout" 2>"$herr" &
	hpid=$!
	hpids+=("$hpid")
	for _ in $(seq 200); do [[ -S $sock ]] && return 0; sleep 0.05; done
	return 1
}

# stop_handler: SIGTERM, then its status in rc.
stop_handler() {
	kill -TERM "$hpid" 2>/dev/null
	wait "$hpid"
	rc=$?
}

# client ARGS...: fc_client on $sock with $img, status in rc.
client() {
	timeout -k 5 90 "$client_bin" --sock "$sock" --image "${cimg:-$img}" "$@" \
		>"$tmp/c.out" 2>"$tmp/c.err"
	rc=$?
}

# wait_lines N: until the handler printed N JSON lines (10 s at most).
wait_lines() {
	for _ in $(seq 200); do
		(($(wc -l <"$hout") >= $1)) && return 0
		sleep 0.05
	done
	return 1
}

# last_json EXPR: the handler's last JSON line satisfies EXPR (as d).
last_json() {
	python3 - "$1" "$hout" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[2]) if l.strip()]
if not lines:
    print("# no JSON line from the handler"); sys.exit(1)
d = json.loads(lines[-1])
if not eval(sys.argv[1], {"d": d}):
    print("# fails %s: %s" % (sys.argv[1], lines[-1].strip()[:400])); sys.exit(1)
EOF
}

# ---- command line -------------------------------------------------------------
run fc-handler --help
((rc == 0)) && grep -q -- --no-kill "$out" && grep -q -- --sock "$out"
check "fc_handler_help_exits_0_and_documents_the_options" $?

run fc-handler --image /dev/null
((rc == 2)) && [[ -s $err ]]
check "fc_handler_without_sock_exits_2" $?

img=$tmp/mem.img
run mkimage "$img" 8M
check "fc_handler_mkimage_8M" $?

# ---- every field set, 4 KiB pages ---------------------------------------------
start_handler main --image "$img"
check "fc_handler_listens" $?
lines=0
for shape in v1.1 v1.7 v1.12; do
	client --shape "$shape" --threads 4
	lines=$((lines + 1))
	((rc == 0)) && wait_lines $lines &&
		last_json "d['status'] == 'complete' and d['fields'] == '$shape' and d['present'] == d['pages'] == 2048"
	check "fc_handler_${shape//./_}_fields_served_every_byte_right" $?
done

client --syscall --regions 1
lines=$((lines + 1))
((rc == 0)) && wait_lines $lines && last_json "d['status'] == 'complete' and d['regions'] == 1"
check "fc_handler_userfaultfd_syscall_fallback_one_region" $?

client --balloon --threads 3
lines=$((lines + 1))
((rc == 0)) && wait_lines $lines && last_json "d['status'] == 'complete' and d['present'] == d['pages']"
check "fc_handler_balloon_with_fill_removed_pages_read_zero" $?

client --pad 70000 --split
lines=$((lines + 1))
((rc == 0)) && wait_lines $lines && last_json "d['status'] == 'complete'"
check "fc_handler_70_KiB_json_in_two_reads_served" $?

# ---- several VMs at once --------------------------------------------------------
cpids=()
for i in 0 1 2 3; do
	shape=$([[ $i == 0 ]] && echo v1.1 || echo v1.12)
	extra=$([[ $i == 1 ]] && echo --split)
	timeout -k 5 90 "$client_bin" --sock "$sock" --image "$img" --shape "$shape" \
		--threads 3 $extra >"$tmp/c$i.out" 2>"$tmp/c$i.err" &
	cpids+=($!)
done
bad=0
for p in "${cpids[@]}"; do wait "$p" || bad=$((bad + 1)); done
rc=$bad
lines=$((lines + 4))
((bad == 0)) && wait_lines $lines &&
	[[ $(tail -n 4 "$hout" | python3 -c 'import json,sys; print(len({json.loads(l)["pid"] for l in sys.stdin if json.loads(l)["status"] == "complete"}))') == 4 ]]
check "fc_handler_four_vms_at_once_all_served_each_reported" $?

# ---- malformed handshakes: refused with the reason, the next one served ---------
declare -A reason=(
	[nofd]="no userfaultfd attached"
	[json]="bad JSON"
	[overlap]="overlap"
	[offset]="goes past the end of the memory file"
	[pagesize]="page size 8192"
	[truncated]="connection closed after"
	[toolarge]="handshake longer than"
)
for kind in nofd json overlap offset pagesize truncated toolarge; do
	client --bad "$kind"
	closed=$rc
	grep -q "refused: .*${reason[$kind]}" "$herr"
	said=$?
	client --threads 2
	lines=$((lines + 1))
	((closed == 0 && said == 0 && rc == 0)) && wait_lines $lines && last_json "d['status'] == 'complete'"
	check "fc_handler_bad_${kind}_refused_with_reason_then_next_client_served" $?
done
kill -0 "$hpid"
check "fc_handler_still_running_after_every_malformed_handshake" $?

stop_handler
((rc == 0)) && [[ ! -e $sock ]]
check "fc_handler_sigterm_exits_0_and_removes_the_socket" $?

# ---- balloon without fill: removed pages counted --------------------------------
start_handler nofill --image "$img" --no-fill
client --balloon --threads 3
((rc == 0)) && wait_lines 1 && last_json "d['status'] == 'complete' and d['pages_removed'] > 0 and d['pages_by_origin']['fill'] == 0"
check "fc_handler_balloon_without_fill_pages_removed_counted_bytes_right" $?

# ---- a client killed mid-run ----------------------------------------------------
rm -f "$tmp/ready" "$tmp/go"
"$client_bin" --sock "$sock" --image "$img" --pause-pages 64 --ready "$tmp/ready" \
	--go "$tmp/go" >/dev/null 2>&1 &
cpid=$!
for _ in $(seq 200); do [[ -e $tmp/ready ]] && break; sleep 0.05; done
[[ -e $tmp/ready ]] && kill -9 "$cpid"
wait "$cpid" 2>/dev/null
wait_lines 2 && last_json "d['status'] == 'exited' and d['pid'] == $cpid and d['present'] < d['pages']"
check "fc_handler_client_killed_mid_run_reported_as_exited" $?
client --threads 2
((rc == 0)) && wait_lines 3 && last_json "d['status'] == 'complete'"
check "fc_handler_serves_a_correct_client_after_one_was_killed" $?
stop_handler

# ---- the memory file becomes unreadable mid-run -----------------------------------
# break_run NAME HANDLER-ARGS...: a client pauses, the file is truncated, the
# client goes on; cpid and cst (its status, or "alive") are set.
break_run() {
	local name=$1
	shift
	cp "$img" "$tmp/$name.img"
	start_handler "$name" --image "$tmp/$name.img" --no-fill "$@"
	rm -f "$tmp/ready" "$tmp/go"
	"$client_bin" --sock "$sock" --image "$img" --pause-pages 64 --ready "$tmp/ready" \
		--go "$tmp/go" >"$tmp/c.out" 2>"$tmp/c.err" &
	cpid=$!
	for _ in $(seq 200); do [[ -e $tmp/ready ]] && break; sleep 0.05; done
	truncate -s 0 "$tmp/$name.img"
	touch "$tmp/go"
	wait_lines 1
	sleep 1
	if kill -0 "$cpid" 2>/dev/null; then
		cst=alive
	else
		wait "$cpid"
		cst=$?
	fi
}

break_run kill
rc=$cst
[[ $cst == 137 ]] && last_json "d['status'] == 'failed' and d['killed'] is True and d['pid'] == $cpid and 'error' in d"
check "fc_handler_unreadable_memory_file_client_killed_with_sigkill" $?
grep -q "pid $cpid: region failed" "$herr"
check "fc_handler_logs_why_the_region_failed" $?
stop_handler

break_run nokill --no-kill
rc=$cst
[[ $cst == alive ]] && last_json "d['status'] == 'failed' and d['killed'] is False and d['pid'] == $cpid"
check "fc_handler_no_kill_reports_the_failure_and_leaves_the_client" $?
kill -9 "$cpid" 2>/dev/null
wait "$cpid" 2>/dev/null
kill -0 "$hpid"
check "fc_handler_no_kill_still_running_after_the_client_died" $?
stop_handler
((rc == 0))
check "fc_handler_no_kill_sigterm_exits_0" $?

# ---- --once ------------------------------------------------------------------------
start_handler once --image "$img" --once
client --threads 2
crc=$rc
for _ in $(seq 100); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.05; done
wait "$hpid"
rc=$?
((crc == 0 && rc == 0)) && last_json "d['status'] == 'complete'"
check "fc_handler_once_exits_0_after_one_vm" $?

# ---- a network source: postcopy serve on a Unix socket --------------------------------
run fc-handler --sock "$tmp/x.sock" --image "$img" --source "unix:$tmp/none.sock"
r1=$rc
run fc-handler --sock "$tmp/x.sock" --image "$img" --insecure
((r1 == 2 && rc == 2)) && [[ -s $err ]]
check "fc_handler_source_and_image_or_key_without_source_exit_2" $?

"$cli" serve --image "$img" --listen "unix:$tmp/srv.sock" >"$tmp/srv.out" 2>"$tmp/srv.err" &
hpids+=($!)
for _ in $(seq 200); do [[ -S $tmp/srv.sock ]] && break; sleep 0.05; done
start_handler net --source "unix:$tmp/srv.sock"
client --threads 8
((rc == 0)) && wait_lines 1 &&
	last_json "d['status'] == 'complete' and d['present'] == d['pages'] == 2048"
check "fc_handler_network_source_served_every_byte_right" $?
stop_handler
run fc-handler --sock "$tmp/x.sock" --image "$img" --push-connections 1
r1=$rc
run fc-handler --sock "$tmp/x.sock" --source "unix:$tmp/srv.sock" --push-connections 5
((r1 == 2 && rc == 2)) && grep -q -- '--push-connections' "$err"
check "fc_handler_push_connections_needs_a_server_and_1_to_4" $?
run fc-handler --sock "$tmp/x.sock" --image "$img" --fillers 9
r1=$rc
run fc-handler --sock "$tmp/x.sock" --image "$img" --fillers 1 --no-fill
((r1 == 2 && rc == 2)) && grep -q -- '--fillers cannot go with --no-fill' "$err"
check "fc_handler_fillers_1_to_8_and_not_with_no_fill" $?
start_handler fill1 --image "$img" --fillers 1
client --threads 4
((rc == 0)) && wait_lines 1 && last_json "d['status'] == 'complete' and d['present'] == d['pages']"
check "fc_handler_one_filler_thread_served_every_byte_right" $?
stop_handler
start_handler net1 --source "unix:$tmp/srv.sock" --push-connections 1
client --threads 4 --balloon
((rc == 0)) && wait_lines 1 && last_json "d['status'] == 'complete' and d['present'] == d['pages']"
check "fc_handler_one_push_connection_balloon_removed_pages_read_zero" $?
stop_handler

# ---- 2 MiB hugetlb regions ----------------------------------------------------------
need=8
free=$(cat "$HP/free_hugepages" 2>/dev/null || echo 0)
if ((free < need)) && [[ -w $HP/nr_hugepages ]]; then
	hp_orig=$(cat "$HP/nr_hugepages")
	echo $((hp_orig + need - free)) >"$HP/nr_hugepages" 2>/dev/null
	free=$(cat "$HP/free_hugepages")
fi
hugenames=(v1_12_fields v1_7_fields balloon balloon_no_fill_counted)
if ((free < need)); then
	for h in "${hugenames[@]}"; do
		skip "fc_handler_hugetlb_$h" "no 2 MiB huge pages could be reserved ($free free, $need needed)"
	done
else
	start_handler huge --image "$img"
	client --huge --threads 4
	((rc == 0)) && wait_lines 1 && last_json "d['status'] == 'complete' and d['page_size'] == 2097152 and d['pages'] == 4"
	check "fc_handler_hugetlb_v1_12_fields" $?
	client --huge --shape v1.7
	((rc == 0)) && wait_lines 2 && last_json "d['status'] == 'complete' and d['fields'] == 'v1.7'"
	check "fc_handler_hugetlb_v1_7_fields" $?
	client --huge --balloon
	((rc == 0)) && wait_lines 3 && last_json "d['status'] == 'complete' and d['present'] == d['pages']"
	check "fc_handler_hugetlb_balloon" $?
	stop_handler
	start_handler hugenf --image "$img" --no-fill
	client --huge --balloon --threads 2
	((rc == 0)) && wait_lines 1 && last_json "d['status'] == 'complete' and d['pages_removed'] >= 1"
	check "fc_handler_hugetlb_balloon_no_fill_counted" $?
	stop_handler
fi

exit $((failed > 0))
