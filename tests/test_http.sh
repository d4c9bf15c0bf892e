#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_http.sh POSTCOPY - `postcopy restore --source http://...` from a real
# nginx on loopback (started here as a non-daemon with a temp prefix), with
# tests/http_proxy in front of it injecting faults.  Prints TAP.
#
# Pins: a restore from nginx completes and matches the image byte for byte
# in exit mode (fetcher threads) and wait mode; so does one read mostly by
# the fill's stream of ranges in flight (an image of no multiple of their
# size, a guest at random, truncated answers), and a wait-mode batch of
# faults sent several at a time through truncated answers; the object
# replaced with the stream's ranges in flight fails saying it changed; with resets, 503s, 429s,
# truncated bodies, a wrong Content-Range or a stalled answer on some
# requests it still completes byte-exact, having retried (transient
# errors > 0); 404 and 403 fail at once with the server's status in the
# message; the object replaced mid-restore (new ETag) fails the restore, in
# both modes, with a message saying the object changed, and nothing of the
# new object is ever accepted (the restore fails instead).  Over https
# (nginx with a certificate of a CA made here by openssl) a restore with
# --http-ca of that CA matches every byte in both modes; without it, or
# with another CA, it fails at once saying the certificate did not verify.
# Skips, saying why, without nginx or in a build without libcurl.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init http

nginx_pid= proxy_pid= nproxy=0
cleanup() {
	for p in $proxy_pid $nginx_pid; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

checks=(
	restore_exit_mode_from_nginx_matches_every_byte
	restore_wait_mode_from_nginx_matches_every_byte
	exit_mode_survives_connection_resets_byte_exact
	exit_mode_survives_503_byte_exact
	exit_mode_survives_429_byte_exact
	exit_mode_survives_truncated_bodies_byte_exact
	exit_mode_refuses_wrong_content_range_and_retries_byte_exact
	exit_mode_survives_stalled_answers_byte_exact
	fill_stream_survives_stalled_ranges_byte_exact
	wait_mode_survives_connection_resets_byte_exact
	wait_mode_survives_truncated_bodies_byte_exact
	wait_mode_refuses_wrong_content_range_and_retries_byte_exact
	missing_object_404_fails_at_once_with_the_status
	forbidden_object_403_fails_at_once_with_the_status
	exit_mode_object_replaced_mid_restore_fails_saying_it_changed
	wait_mode_object_replaced_mid_restore_fails_saying_it_changed
	fill_stream_odd_sized_image_matches_every_byte
	fill_stream_following_a_random_guest_matches_every_byte
	fill_stream_survives_truncated_bodies_byte_exact
	fill_stream_object_replaced_with_ranges_in_flight_fails_saying_it_changed
	fill_of_a_hugetlb_region_matches_every_byte
	wait_mode_batches_in_flight_survive_truncated_bodies_byte_exact
	wait_mode_batches_get_through_when_every_third_answer_breaks
	replay_over_http_batches_its_runs_byte_exact
	fc_handler_source_url_serves_every_byte_right
	packed_image_over_http_exit_mode_matches_the_raw_image
	packed_image_over_http_wait_mode_matches_the_raw_image
	packed_image_over_http_survives_truncated_bodies_byte_exact
	packed_image_over_http_reads_several_chunks_at_once
	https_exit_mode_with_the_servers_ca_matches_every_byte
	https_wait_mode_with_the_servers_ca_matches_every_byte
	https_without_the_servers_ca_fails_at_once_saying_why
	https_with_another_ca_fails_at_once_saying_why
	http_ca_with_a_plain_http_source_is_refused_with_status_2
)
echo "1..${#checks[@]}"

skip_all() {
	local c
	for c in "${checks[@]}"; do
		skip "$c" "$1"
	done
	exit 0
}

nginx=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null)
[[ -n $nginx && -x $nginx ]] || skip_all "nginx is not installed (Debian package nginx)"
proxy=$(dirname "$cli")/tests/http_proxy
[[ -x $proxy ]] || skip_all "no $proxy (built by tests/meson.build)"

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait (5 s at most) until something accepts on 127.0.0.1:$1.
wait_port() {
	local i
	for ((i = 0; i < 50; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# A CA and a certificate for 127.0.0.1 signed by it (and a second CA that
# signed nothing), for nginx's https server; none without openssl.
tls=
make_certs() {
	local d=$tmp/tls
	mkdir -p "$d" && command -v openssl >/dev/null || return 1
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=postcopy-test-ca \
		-keyout "$d/ca.key" -out "$d/ca.pem" &&
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca \
			-keyout "$d/other.key" -out "$d/other.pem" &&
		openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
			-keyout "$d/srv.key" -out "$d/srv.csr" &&
		printf 'subjectAltName=IP:127.0.0.1\n' >"$d/ext" &&
		openssl x509 -req -in "$d/srv.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
			-CAcreateserial -days 2 -extfile "$d/ext" -out "$d/srv.pem"
}
make_certs >"$tmp/openssl.log" 2>&1 && tls=$tmp/tls

# nginx as a plain process: no daemon, no master, everything under $tmp.
mkdir -p "$tmp/www/forbidden" "$tmp/nginx/logs" "$tmp/nginx/tmp"
start_nginx() {
	port=$(free_port) tport=$(free_port)
	local https=
	[[ -n $tls ]] && https="server { listen 127.0.0.1:$tport ssl; ssl_certificate $tls/srv.pem; ssl_certificate_key $tls/srv.key; root $tmp/www; }"
	cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $tmp/nginx/logs/error.log warn;
pid $tmp/nginx/nginx.pid;
events { worker_connections 256; }
http {
	access_log off;
	keepalive_requests 1000000;
	client_body_temp_path $tmp/nginx/tmp;
	proxy_temp_path $tmp/nginx/tmp;
	fastcgi_temp_path $tmp/nginx/tmp;
	uwsgi_temp_path $tmp/nginx/tmp;
	scgi_temp_path $tmp/nginx/tmp;
	server {
		listen 127.0.0.1:$port;
		root $tmp/www;
		location /forbidden/ { deny all; }
	}
	$https
}
EOF
	"$nginx" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" >"$tmp/nginx/logs/out" 2>&1 &
	nginx_pid=$!
	wait_port "$port" && { [[ -z $tls ]] || wait_port "$tport"; }
}
tries=0
until start_nginx; do
	kill "$nginx_pid" 2>/dev/null
	wait "$nginx_pid" 2>/dev/null
	nginx_pid=
	((++tries < 3)) || skip_all "nginx did not start: $(head -c 300 "$tmp/nginx/logs/out" "$tmp/nginx/logs/error.log" 2>/dev/null | tr '\n' ' ')"
done

img=$tmp/www/img
"$cli" mkimage "$img" 16M >/dev/null || skip_all "mkimage failed"
cp "$img" "$tmp/www/forbidden/img"
base=http://127.0.0.1:$port

run restore --source "$base/nope"
if ((rc != 0)) && grep -q "without libcurl" "$err"; then
	skip_all "this build has no HTTP source (libcurl): $(head -c 200 "$err")"
fi

# restore_ok MODE URL [ARGS...]: restores, every byte matches $img.
restore_ok() {
	local mode=$1 url=$2
	shift 2
	run restore --source "$url" --image "$img" -m "$mode" --vcpus 2 --json "$@"
	((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0'
}

restore_ok exit "$base/img"
check restore_exit_mode_from_nginx_matches_every_byte $?
restore_ok wait "$base/img"
check restore_wait_mode_from_nginx_matches_every_byte $?

# with_proxy MODE-ARGS...: a fresh proxy in front of nginx; sets $purl.
with_proxy() {
	if [[ -n $proxy_pid ]]; then
		kill "$proxy_pid" 2>/dev/null
		wait "$proxy_pid" 2>/dev/null
	fi
	local pf=$tmp/proxy.port.$((++nproxy)) i
	"$proxy" "$port" "$@" >"$pf" 2>"$tmp/proxy.err" &
	proxy_pid=$!
	for ((i = 0; i < 50; i++)); do
		grep -q '^[0-9]' "$pf" 2>/dev/null && break
		sleep 0.1
	done
	purl=http://127.0.0.1:$(cat "$pf")/img
}

# faulty MODE NAME PROXY-ARGS...: completes byte-exact, having retried
# (a reset before any byte of the answer on a kept-alive connection is
# retried by libcurl itself, on a new connection: then it need not count).
faulty() {
	local mode=$1 name=$2 retried='d["http"]["transient_errors"] > 0 and '
	shift 2
	[[ $1 == reset ]] && retried=
	with_proxy "$@"
	restore_ok "$mode" "$purl" --http-timeout 1000 &&
		json_check "${retried}d[\"http\"][\"fatal_errors\"] == 0"
	check "$name" $?
}

# Every third request from the sixth on, at most 8 times: early enough
# that even a restore of few requests (the filler reads ahead up to 4 MiB
# at once) meets them.
faulty exit exit_mode_survives_connection_resets_byte_exact reset 3 8
faulty exit exit_mode_survives_503_byte_exact 503 3 8
faulty exit exit_mode_survives_429_byte_exact 429 3 8
faulty exit exit_mode_survives_truncated_bodies_byte_exact truncate 3 8
faulty exit exit_mode_refuses_wrong_content_range_and_retries_byte_exact badrange 3 8
# Two stalls, each a request timeout (1 s) before the retry: on demand
# requests only (--no-fill), which a vCPU waits for.  Then the same during
# the fill's stream, whose stalled ranges the vCPUs or the filler bring.
with_proxy stall 3 2 3000
restore_ok exit "$purl" --http-timeout 1000 --no-fill &&
	json_check 'd["http"]["transient_errors"] > 0 and d["http"]["fatal_errors"] == 0'
check exit_mode_survives_stalled_answers_byte_exact $?
with_proxy stall 2 2 3000
restore_ok exit "$purl" --http-timeout 1000 --vcpus 1 &&
	json_check 'd["http"]["fatal_errors"] == 0'
check fill_stream_survives_stalled_ranges_byte_exact $?
faulty wait wait_mode_survives_connection_resets_byte_exact reset 3 8
faulty wait wait_mode_survives_truncated_bodies_byte_exact truncate 3 8
faulty wait wait_mode_refuses_wrong_content_range_and_retries_byte_exact badrange 3 8

run restore --source "$base/nope" --image "$img"
((rc == 1)) && grep -q "404 Not Found" "$err"
check missing_object_404_fails_at_once_with_the_status $?

run restore --source "$base/forbidden/img" --image "$img"
((rc == 1)) && grep -q "403 Forbidden" "$err"
check forbidden_object_403_fails_at_once_with_the_status $?

# The object replaced after 3 requests (the probe and two more) by one of other contents (and so
# another ETag: nginx's is mtime and size).  Compared with the original,
# so a page of the new one that got in would show as a mismatch too.
cp "$img" "$tmp/orig"
for mode in exit wait; do
	"$cli" mkimage --seed 7 "$tmp/www/new" 16M >/dev/null
	touch -d '2001-01-01' "$tmp/www/new"
	cp "$tmp/orig" "$img"
	with_proxy replace 3 "$tmp/www/new" "$img"
	run restore --source "$purl" --image "$tmp/orig" -m "$mode" --vcpus 2
	((rc == 1)) && grep -q "object changed" "$err" &&
		! grep -q "pages differ" "$err"
	check "${mode}_mode_object_replaced_mid_restore_fails_saying_it_changed" $?
done
cp "$tmp/orig" "$img"

# The fill's stream: ranges of 1 MiB, several in flight, each page
# installed as it arrives, on an image whose size is no multiple of them
# (the last is short), with one vCPU so that the stream brings most of
# it; its 4 connections were used (and the pool's).  Then a guest at
# random, which the stream follows.  Cut answers: the first ends the
# stream with what it brought installed, and the filler's threads fetch
# the rest, retrying.
odd=$tmp/www/odd
"$cli" mkimage --seed 3 "$odd" 9268K >/dev/null
run restore --source "$base/odd" --image "$odd" --vcpus 1 --json
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0 and d["stats"]["pages_fill"] > 0 and d["http"]["connections"] >= 5'
check fill_stream_odd_sized_image_matches_every_byte $?
run restore --source "$base/odd" --image "$odd" --vcpus 2 --workload random --json
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0 and d["stats"]["pages_fill"] > 0'
check fill_stream_following_a_random_guest_matches_every_byte $?
with_proxy truncate 3 8
run restore --source "${purl%/img}/odd" --image "$odd" --vcpus 1 --json --http-timeout 1000
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0 and d["http"]["transient_errors"] > 0 and d["http"]["fatal_errors"] == 0'
check fill_stream_survives_truncated_bodies_byte_exact $?
# Replaced after 6 requests, when the stream has several in flight: those
# answered before are of the pinned version, the rest fail If-Match.
"$cli" mkimage --seed 9 "$tmp/www/new" 9268K >/dev/null
touch -d '2001-01-01' "$tmp/www/new"
cp "$odd" "$tmp/odd.orig"
with_proxy replace 6 "$tmp/www/new" "$odd"
run restore --source "${purl%/img}/odd" --image "$tmp/odd.orig" --vcpus 1
((rc == 1)) && grep -q "object changed" "$err" && ! grep -q "pages differ" "$err"
check fill_stream_object_replaced_with_ranges_in_flight_fails_saying_it_changed $?
cp "$tmp/odd.orig" "$odd"
# 2 MiB pages take no stream (it installs 4 KiB pages): the filler's
# threads fetch one huge page a step, through the pool.
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
hp_free=$(cat "$HP/free_hugepages" 2>/dev/null || echo 0)
if ((hp_free < 8)) && [[ -w $HP/nr_hugepages ]]; then
	hp_orig=$(cat "$HP/nr_hugepages")
	echo $((hp_orig + 8 - hp_free)) >"$HP/nr_hugepages" 2>/dev/null
	hp_free=$(cat "$HP/free_hugepages")
fi
if ((hp_free < 8)); then
	skip fill_of_a_hugetlb_region_matches_every_byte "no 2 MiB huge pages could be reserved ($hp_free free, 8 needed)"
else
	run restore --source "$base/img" --image "$img" --backend hugetlb --vcpus 1 --json
	((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0 and d["stats"]["pages_fill"] > 0'
	check fill_of_a_hugetlb_region_matches_every_byte $?
fi
[[ -n ${hp_orig:-} ]] && echo "$hp_orig" >"$HP/nr_hugepages" 2>/dev/null
# A wait-mode handler's batch of faults, 4 vCPUs, a page each: its runs go
# out several at a time; a batch with a broken answer is asked again,
# byte-exact.
with_proxy truncate 3 8
run restore --source "${purl%/img}/odd" --image "$odd" -m wait --vcpus 4 --no-fill -w 1 --json --http-timeout 1000
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0 and d["http"]["transient_errors"] > 0 and d["http"]["fatal_errors"] == 0'
check wait_mode_batches_in_flight_survive_truncated_bodies_byte_exact $?
# Every third answer broken, without end: a batch whose one run failed
# asks that run again alone rather than failing whole (a batch of four
# would then almost never get through, and the fault would be lost).
with_proxy truncate 3
run restore --source "${purl%/img}/odd" --image "$odd" -m wait --vcpus 4 --no-fill -w 1 --json --http-timeout 1000
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0 and d["http"]["transient_errors"] > 0 and d["http"]["fatal_errors"] == 0'
check wait_mode_batches_get_through_when_every_third_answer_breaks $?

# A working-set replay's batches (sorted runs spread over the image) go
# out as batches, several in flight; the recording is the file
# restore's own.
run restore --image "$img" --workload ws --seed 2 --record-ws "$tmp/h.ws"
restore_ok exit "$base/img" --workload ws --seed 3 --replay-ws "$tmp/h.ws" &&
	json_check 'd["stats"]["pages_replay"] > 0'
check replay_over_http_batches_its_runs_byte_exact $?

# fc-handler --source URL: fc_client plays Firecracker and compares every
# byte of its memory with the file nginx serves.
client_bin=$(dirname "$cli")/tests/fc_client
if [[ -x $client_bin ]]; then
	sock=$tmp/fc.sock
	"$cli" fc-handler --sock "$sock" --source "$base/img" --json --once \
		>"$tmp/fc.out" 2>"$tmp/fc.err" &
	fc_pid=$!
	for _ in $(seq 200); do [[ -S $sock ]] && break; sleep 0.05; done
	timeout -k 5 90 "$client_bin" --sock "$sock" --image "$img" --threads 2 \
		>"$tmp/c.out" 2>"$tmp/c.err"
	crc=$?
	timeout 20 tail --pid="$fc_pid" -f /dev/null
	wait "$fc_pid"
	rc=$?
	((crc == 0 && rc == 0)) && grep -q '"status": *"complete"' "$tmp/fc.out"
	check fc_handler_source_url_serves_every_byte_right $? "$tmp/fc.out" "$tmp/fc.err" "$tmp/c.err"
else
	skip fc_handler_source_url_serves_every_byte_right "no $client_bin"
fi
# A packed image (docs/packed.md) of the same contents, compared with the
# raw one: decoded through checked range requests.
if "$cli" pack --chunk 256K "$img" "$tmp/www/img.pk" >"$out" 2>"$err"; then
	restore_ok exit "$base/img.pk"
	check packed_image_over_http_exit_mode_matches_the_raw_image $?
	restore_ok wait "$base/img.pk"
	check packed_image_over_http_wait_mode_matches_the_raw_image $?
	with_proxy truncate 3
	restore_ok exit "${purl%/img}/img.pk" --http-timeout 1000 &&
		json_check 'd["http"]["transient_errors"] > 0 and d["http"]["fatal_errors"] == 0'
	check packed_image_over_http_survives_truncated_bodies_byte_exact $?
	# Every request 20 ms late, as over a slow network: the chunks a
	# fetch needs go out together, several in flight (the proxy reports
	# the most it saw at once).  Chunk by chunk, one vCPU and the filler
	# had at most two in flight.
	with_proxy delay 1 0 20
	restore_ok wait "${purl%/img}/img.pk" --vcpus 1 --workload ws
	peak=$(grep -a '^peak ' "$tmp/proxy.err" | tail -n 1 | cut -d' ' -f2)
	echo "# packed over a 20 ms proxy: at most ${peak:-0} requests in flight"
	((rc == 0 && ${peak:-0} >= 4))
	check packed_image_over_http_reads_several_chunks_at_once $?
else
	check packed_image_over_http_exit_mode_matches_the_raw_image 1
	skip packed_image_over_http_wait_mode_matches_the_raw_image "pack failed"
	skip packed_image_over_http_survives_truncated_bodies_byte_exact "pack failed"
	skip packed_image_over_http_reads_several_chunks_at_once "pack failed"
fi
# https, checked against the CA given, never skipped past: a certificate
# that does not verify is fatal (not retried for the open's 10 s).
tls_names=(https_exit_mode_with_the_servers_ca_matches_every_byte
	https_wait_mode_with_the_servers_ca_matches_every_byte
	https_without_the_servers_ca_fails_at_once_saying_why
	https_with_another_ca_fails_at_once_saying_why)
if [[ -n $tls ]]; then
	surl=https://127.0.0.1:$tport/img
	restore_ok exit "$surl" --http-ca "$tls/ca.pem"
	check "${tls_names[0]}" $?
	restore_ok wait "$surl" --http-ca "$tls/ca.pem"
	check "${tls_names[1]}" $?
	t0=$SECONDS
	run restore --source "$surl" --image "$img"
	((rc == 1 && SECONDS - t0 < 8)) && grep -qi "certificate" "$err"
	check "${tls_names[2]}" $?
	sed -n '1,2s/^/# /p' "$err"
	t0=$SECONDS
	run restore --source "$surl" --image "$img" --http-ca "$tls/other.pem"
	((rc == 1 && SECONDS - t0 < 8)) && grep -qi "certificate" "$err"
	check "${tls_names[3]}" $?
else
	for c in "${tls_names[@]}"; do
		skip "$c" "no certificates: openssl failed or is missing ($(head -c 200 "$tmp/openssl.log" 2>/dev/null | tr '\n' ' '))"
	done
fi
run restore --source "$base/img" --image "$img" --http-ca "${tls:-$tmp}/ca.pem"
((rc == 2)) && grep -q -- "--http-ca goes with" "$err"
check http_ca_with_a_plain_http_source_is_refused_with_status_2 $?
exit $((failed > 0))
