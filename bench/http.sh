#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Restoring from nginx over loopback against plain downloads of the same
# object in the same run (BENCHMARKS.md, "From object storage").  Starts
# nginx (a non-daemon with a temp prefix, sendfile on), then for REPS
# rounds (default 3):
#   curl      `curl -o /dev/null` of the whole SIZE image (default 1G);
#             curl_cpu its user + system CPU seconds
#   fill      `restore --source http://...` of it, 1 vCPU reading
#             sequentially while the filler brings the rest; fill_cpu is
#             that process's user + system CPU seconds (all of it, setup
#             and teardown too), which a loaded machine changes less
#   file      the same restore from the local file (the pager's ceiling)
#   rtt       one 4 KiB range GET on a kept-alive connection: the p50 of
#             2000 in one curl invocation
#   demand    `restore --no-fill -w 1` of a 64 MiB image, 1 vCPU: every
#             page a demand fault (p50 per access, exit and wait mode)
# and prints one line per round with the ratios.
#
# usage: bench/http.sh POSTCOPY_CLI [SIZE [REPS]]
set -euo pipefail
cli=$(realpath "${1:?usage: http.sh POSTCOPY_CLI [SIZE [REPS]]}")
size=${2:-1G}
reps=${3:-3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/postcopy-bench-http.XXXXXX")
nginx_pid=
trap 'kill $nginx_pid 2>/dev/null; wait $nginx_pid 2>/dev/null; rm -rf "$tmp"' EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/www" "$tmp/logs" "$tmp/t"
cat >"$tmp/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $tmp/logs/error.log warn;
pid $tmp/nginx.pid;
events { worker_connections 256; }
http {
	access_log off;
	sendfile on;
	keepalive_requests 1000000;
	client_body_temp_path $tmp/t; proxy_temp_path $tmp/t; fastcgi_temp_path $tmp/t;
	uwsgi_temp_path $tmp/t; scgi_temp_path $tmp/t;
	server { listen 127.0.0.1:$port; root $tmp/www; }
}
EOF
nginx -p "$tmp" -c "$tmp/nginx.conf" &
nginx_pid=$!
"$cli" mkimage "$tmp/www/big" "$size" >/dev/null
"$cli" mkimage "$tmp/www/small" 64M >/dev/null
# Sparse holes would be read as zeros by nginx and skipped by the file
# source: make both read every byte (cp --sparse=never), and warm them.
cp --sparse=never "$tmp/www/big" "$tmp/www/big.full" && mv "$tmp/www/big.full" "$tmp/www/big"
cat "$tmp/www/big" "$tmp/www/small" >/dev/null
url=http://127.0.0.1:$port
for ((i = 0; i < 50; i++)); do curl -sf -o /dev/null -r 0-0 "$url/small" && break; sleep 0.1; done

json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
calc() { python3 -c "print($1)"; }
rtt_args=()
for ((i = 0; i < 2000; i++)); do rtt_args+=(-o /dev/null "$url/small"); done

printf '%-5s %9s %9s %9s %7s %7s %8s %8s %8s %6s %6s %8s %8s\n' round curl_s fill_s file_s \
	fill/curl file/curl rtt_us exit_us wait_us exit/rtt wait/rtt curl_cpu fill_cpu
for ((r = 1; r <= reps; r++)); do
	TIMEFORMAT='%U %S'
	t0=$(date +%s.%N)
	{ time curl -sf -o /dev/null "$url/big"; } 2>"$tmp/curl.time"
	t1=$(date +%s.%N)
	curl_cpu=$(awk '{printf "%.2f", $1 + $2}' "$tmp/curl.time")
	curl_s=$(calc "$t1 - $t0")
	{ time "$cli" restore --source "$url/big" --vcpus 1 --json --no-memory-check >"$tmp/fill.json"; } 2>"$tmp/fill.time"
	fill_s=$(json 'd["seconds"]' <"$tmp/fill.json")
	fill_cpu=$(awk '{printf "%.2f", $1 + $2}' "$tmp/fill.time")
	file_s=$("$cli" restore --image "$tmp/www/big" --vcpus 1 --json --no-memory-check | json 'd["seconds"]')
	rtt=$(curl -s -r 8192-12287 -w '%{time_total}\n' "${rtt_args[@]}" | sort -n |
		awk '{a[NR] = $1} END {printf "%.1f", a[int(NR / 2)] * 1e6}')
	ex=$("$cli" restore --source "$url/small" --vcpus 1 --no-fill -w 1 -m exit --json | json 'd["latency_us"]["p50"]')
	wa=$("$cli" restore --source "$url/small" --vcpus 1 --no-fill -w 1 -m wait --json | json 'd["latency_us"]["p50"]')
	printf '%-5s %9.3f %9.3f %9.3f %7.2f %7.2f %8.1f %8.1f %8.1f %6.2f %6.2f %8s %8s\n' "$r" "$curl_s" \
		"$fill_s" "$file_s" "$(calc "$curl_s / $fill_s")" \
		"$(calc "$curl_s / $file_s")" "$rtt" "$ex" "$wa" \
		"$(calc "$ex / $rtt")" "$(calc "$wa / $rtt")" "$curl_cpu" "$fill_cpu"
done
