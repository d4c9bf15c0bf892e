#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_s3.sh POSTCOPY - `postcopy restore --source s3://BUCKET/KEY
# --s3-endpoint URL` against s3rver (an S3 API server from npm, installed
# on first use into $POSTCOPY_S3RVER_DIR, default BUILDDIR/npm-s3rver, and
# started here on loopback).  Prints TAP.
#
# Pins: a SigV4-signed restore (credentials from AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, also with AWS_SESSION_TOKEN) matches the image byte
# for byte in exit and wait mode; an unknown access key and a missing key
# fail at once with the server's code and message; no credentials is an
# error saying which variables to set.  Without the variables, the shared
# credentials file is read (~/.aws/credentials, AWS_SHARED_CREDENTIALS_FILE,
# AWS_PROFILE): its default and named profiles restore byte for byte, the
# variables win over it, and a profile it lacks is an error naming it.  The
# region comes from the config file (AWS_CONFIG_FILE, "[profile NAME]")
# when no --s3-region or AWS_REGION names one; a key with a '.' or '..'
# segment is refused.
# Every restore goes through tests/sigv4_proxy.py, which checks each
# request's V4 signature as S3 does before it forwards it to s3rver (3.7.1
# checks the access key but not the signature), so a wrong secret is
# refused with SignatureDoesNotMatch.  Skips, saying why,
# without node/npm, when npm cannot install s3rver, without the curl CLI
# (which uploads the image), or in a build without libcurl.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init s3

s3_pid= proxy_pid=
cleanup() {
	for p in $proxy_pid $s3_pid; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

checks=(
	s3_without_credentials_fails_saying_which_variables
	s3_names_that_would_leave_the_host_are_refused
	s3_keys_with_dot_segments_are_refused
	s3_sigv4_restore_exit_mode_matches_every_byte
	s3_sigv4_restore_wait_mode_matches_every_byte
	s3_sigv4_restore_with_session_token_matches_every_byte
	s3_unknown_access_key_fails_with_the_servers_reason
	s3_missing_key_fails_with_no_such_key
	s3_credentials_file_missing_profile_fails_naming_it
	s3_credentials_file_default_profile_matches_every_byte
	s3_credentials_file_aws_profile_picks_its_section
	s3_credentials_variables_win_over_the_file
	s3_wrong_secret_is_refused_by_the_server
	s3_region_from_the_config_file_signs_and_the_variable_wins
)
echo "1..${#checks[@]}"
img=$tmp/img

skip_rest() {
	while ((n < ${#checks[@]})); do
		skip "${checks[n]}" "$1"
	done
	exit $((failed > 0))
}

"$cli" mkimage "$img" 8M >/dev/null || skip_rest "mkimage failed"
mkdir -p "$tmp/nohome"
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
	-u AWS_SHARED_CREDENTIALS_FILE HOME="$tmp/nohome" \
	timeout 60 "$cli" restore --source s3://bucket/key --s3-endpoint http://127.0.0.1:9 \
	--image "$img" >"$out" 2>"$err"
rc=$?
((rc == 1)) && grep -q "AWS_ACCESS_KEY_ID" "$err"
check s3_without_credentials_fails_saying_which_variables $?

# A bucket or region that a URL would read as another host ('#' ends the
# host; a region with a '/') is refused before any request is signed.
ok=0
timeout 60 "$cli" restore --source 's3://evil.example#/key' --image "$img" \
	>"$out" 2>"$err"
rc=$?
((rc == 2)) && grep -q "bucket name" "$err" || ok=1
AWS_ACCESS_KEY_ID=A AWS_SECRET_ACCESS_KEY=B AWS_REGION='x.evil.example/' \
	timeout 60 "$cli" restore --source s3://bucket/key --image "$img" >"$out" 2>"$err"
rc=$?
((rc == 1)) && grep -q "S3 region" "$err" || ok=1
check s3_names_that_would_leave_the_host_are_refused $ok

# A key whose '.' or '..' segment a URL would resolve (to another object,
# under an endpoint to another bucket's) is refused before any request.
ok=0
for key in 'a/../../other/img' './img' 'img/..'; do
	timeout 60 "$cli" restore --source "s3://bucket/$key" --s3-endpoint http://127.0.0.1:9 \
		--image "$img" >"$out" 2>"$err"
	rc=$?
	((rc == 2)) && grep -q "'\.\.' segments" "$err" || ok=1
done
check s3_keys_with_dot_segments_are_refused $ok

# A shared credentials file: the default profile has a key s3rver does not
# know, so using it where another was asked for fails visibly.
mkdir -p "$tmp/home/.aws"
cat >"$tmp/home/.aws/credentials" <<'EOF'
# as the AWS CLI writes it
[default]
aws_access_key_id = S3RVER
aws_secret_access_key = S3RVER
EOF
cat >"$tmp/creds" <<'EOF'
[default]
aws_access_key_id = NOSUCHKEYID
aws_secret_access_key = x
; another
[pc]
aws_access_key_id=S3RVER
aws_secret_access_key=S3RVER
aws_session_token = token-from-the-file
EOF
# s3file MODE KEY [ENV...]: restore s3://pcbucket/KEY without the
# variables, HOME pointing at $tmp/home.
s3file() {
	local mode=$1 key=$2
	shift 2
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
		-u AWS_PROFILE -u AWS_SHARED_CREDENTIALS_FILE HOME="$tmp/home" "$@" \
		timeout -k 5 120 "$cli" restore --source "s3://pcbucket/$key" \
		--s3-endpoint "${endpoint:-http://127.0.0.1:9}" --s3-region us-east-1 \
		--image "$img" -m "$mode" --vcpus 2 --json >"$out" 2>"$err"
	rc=$?
}
s3file exit img AWS_SHARED_CREDENTIALS_FILE="$tmp/creds" AWS_PROFILE=nope
((rc == 1)) && grep -q "no profile \[nope\]" "$err"
check s3_credentials_file_missing_profile_fails_naming_it $?

command -v node >/dev/null && command -v npm >/dev/null ||
	skip_rest "node and npm are not installed"
command -v curl >/dev/null || skip_rest "no curl CLI to upload the image (Debian package curl)"
bdir=${POSTCOPY_BUILDDIR:-$(dirname "$cli")}
s3dir=${POSTCOPY_S3RVER_DIR:-$bdir/npm-s3rver}
s3rver=$s3dir/node_modules/s3rver/bin/s3rver.js
if [[ ! -f $s3rver ]]; then
	mkdir -p "$s3dir"
	timeout 180 npm install --prefix "$s3dir" --no-audit --no-fund --no-save \
		s3rver@3.7.1 >"$tmp/npm.log" 2>&1 ||
		skip_rest "npm could not install s3rver: $(tail -n 2 "$tmp/npm.log" | tr '\n' ' ' | head -c 200)"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/s3"
node "$s3rver" -d "$tmp/s3" -a 127.0.0.1 -p "$port" --silent \
	--configure-bucket pcbucket >"$tmp/s3rver.log" 2>&1 &
s3_pid=$!
endpoint=http://127.0.0.1:$port
# s3rver's default account: access key S3RVER, secret S3RVER.
up=
for ((i = 0; i < 100; i++)); do
	if curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -T "$img" \
		"$endpoint/pcbucket/img" -o /dev/null 2>/dev/null; then
		up=1
		break
	fi
	kill -0 "$s3_pid" 2>/dev/null || break
	sleep 0.1
done
[[ -n $up ]] || skip_rest "s3rver did not start or refused the upload: $(head -c 200 "$tmp/s3rver.log")"
# Every restore goes through the signature-checking proxy.
pport=$tmp/proxy.port
python3 "$(dirname "${BASH_SOURCE[0]}")/sigv4_proxy.py" "$port" S3RVER:S3RVER >"$pport" 2>>"$tmp/proxy.err" &
proxy_pid=$!
for ((i = 0; i < 50; i++)); do
	grep -q '^[0-9]' "$pport" 2>/dev/null && break
	sleep 0.1
done
grep -q '^[0-9]' "$pport" || skip_rest "the SigV4 proxy did not start: $(head -c 200 "$tmp/proxy.err")"
endpoint=http://127.0.0.1:$(cat "$pport")

# s3 MODE ACCESS SECRET KEY [ENV...]: restore s3://pcbucket/KEY.
s3() {
	local mode=$1 ak=$2 sk=$3 key=$4
	shift 4
	env -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID="$ak" AWS_SECRET_ACCESS_KEY="$sk" "$@" \
		timeout -k 5 120 "$cli" restore --source "s3://pcbucket/$key" \
		--s3-endpoint "$endpoint" --s3-region us-east-1 --image "$img" \
		-m "$mode" --vcpus 2 --json >"$out" 2>"$err"
	rc=$?
}

s3 exit S3RVER S3RVER img
((rc != 0)) && grep -q "without libcurl" "$err" &&
	skip_rest "this build has no HTTP source (libcurl)"
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0'
check s3_sigv4_restore_exit_mode_matches_every_byte $?

s3 wait S3RVER S3RVER img
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0'
check s3_sigv4_restore_wait_mode_matches_every_byte $?

s3 exit S3RVER S3RVER img AWS_SESSION_TOKEN=token-of-the-test
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0'
check s3_sigv4_restore_with_session_token_matches_every_byte $?

s3 exit NOSUCHKEYID S3RVER img
((rc == 1)) && grep -q "403 Forbidden: InvalidAccessKeyId" "$err"
check s3_unknown_access_key_fails_with_the_servers_reason $?

s3 exit S3RVER S3RVER missing
((rc == 1)) && grep -q "404 Not Found: NoSuchKey" "$err"
check s3_missing_key_fails_with_no_such_key $?

s3file exit img
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0'
check s3_credentials_file_default_profile_matches_every_byte $?

s3file wait img AWS_SHARED_CREDENTIALS_FILE="$tmp/creds" AWS_PROFILE=pc
((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0'
check s3_credentials_file_aws_profile_picks_its_section $?

s3file exit img AWS_ACCESS_KEY_ID=NOSUCHKEYID AWS_SECRET_ACCESS_KEY=S3RVER
((rc == 1)) && grep -q "InvalidAccessKeyId" "$err"
check s3_credentials_variables_win_over_the_file $?

s3 exit S3RVER wrong-secret img
((rc == 1)) && grep -q "403 Forbidden: SignatureDoesNotMatch" "$err"
check s3_wrong_secret_is_refused_by_the_server $?

# No --s3-region and no AWS_REGION: the profile's region in the config
# file signs (the proxy says which region each request carried); then
# AWS_REGION wins over the file.
cat >"$tmp/config" <<'EOF'
[default]
region = us-west-2
[profile pc]
region = eu-west-3
EOF
ok=0
s3region() {
	: >"$tmp/proxy.err"
	env -u AWS_SESSION_TOKEN -u AWS_REGION -u AWS_DEFAULT_REGION -u AWS_PROFILE \
		AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER \
		AWS_CONFIG_FILE="$tmp/config" "$@" \
		timeout -k 5 120 "$cli" restore --source s3://pcbucket/img \
		--s3-endpoint "$endpoint" --image "$img" --vcpus 2 --json >"$out" 2>"$err"
	rc=$?
	((rc == 0)) && json_check 'd["verified"] and d["mismatched_pages"] == 0'
}
# Each call's region is one no other call uses: a request of the call
# before that the proxy reports late cannot pass for this one's.
s3region AWS_PROFILE=pc && grep -aqx "region eu-west-3" "$tmp/proxy.err" || ok=1
s3region AWS_PROFILE=pc AWS_REGION=ap-south-1 &&
	grep -aqx "region ap-south-1" "$tmp/proxy.err" || ok=1
s3region && grep -aqx "region us-west-2" "$tmp/proxy.err" || ok=1
check s3_region_from_the_config_file_signs_and_the_variable_wins $ok
exit $((failed > 0))
