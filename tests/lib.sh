# SPDX-License-Identifier: MIT
#
# tests/lib.sh - what the shell tests of the CLI share.  Not a test itself:
# each tests/test_*.sh sources it with
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# On sourcing: cli is the CLI to test ($1 of the test, else $POSTCOPY_CLI);
# without one the test prints a TAP skip and exits.  Then lib_init NAME
# makes the temp dir $tmp and the state run, check and json_check use.

cli=${1:-${POSTCOPY_CLI:-}}
if [[ -z $cli || ! -x $cli ]]; then
	echo "1..0 # SKIP no postcopy CLI given (usage: $0 PATH_TO_POSTCOPY)"
	exit 0
fi

# lib_init NAME: a new temp dir $tmp (postcopy-test-NAME.XXXXXX), the TAP
# counters and the files run keeps a command's output in.  Removing $tmp on
# exit is the caller's (trap).
lib_init() {
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/postcopy-test-$1.XXXXXX") || exit 1
	n=0 failed=0
	out=$tmp/stdout err=$tmp/stderr rc=0
}

# run ARGS...: run the CLI (bounded in time), keep stdout, stderr and status.
run() {
	timeout -k 5 120 "$cli" "$@" >"$out" 2>"$err"
	rc=$?
}

# check_status: the first diagnostic line of a failed check.  A test may
# redefine it to say more.
check_status() {
	echo "# exit status $rc"
}

# check NAME STATUS [FILES...]: one TAP line; on failure show what happened
# (the last command's output, or the given files, and its stderr).
check() {
	local name=$1 status=$2
	shift 2
	n=$((n + 1))
	if ((status == 0)); then
		echo "ok $n - $name"
		return
	fi
	failed=$((failed + 1))
	echo "not ok $n - $name"
	check_status
	local f
	for f in "${@:-$out}" "$err"; do
		[[ -f $f ]] && sed -n "1,15s|^|# ${f##*/}: |p" "$f"
	done
}

# skip NAME REASON: one TAP line for a check this machine cannot run.
skip() {
	n=$((n + 1))
	echo "ok $n - $1 # SKIP $2"
}

# kvm_usable: true when /dev/kvm opens read-write and speaks KVM API 12,
# which is what test_kvm and the CLI ask of it (tools/vmm/kvm.c,
# kvm_available()); else false with the reason in $kvm_why.
kvm_usable() {
	kvm_why=$(python3 - <<'EOF'
import fcntl, os, sys
try:
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
except OSError as e:
    print("cannot open /dev/kvm: %s" % e.strerror)
    sys.exit(1)
try:
    v = fcntl.ioctl(fd, 0xAE00)  # KVM_GET_API_VERSION
except OSError as e:
    v = "error %s" % e.strerror
if v != 12:
    print("/dev/kvm speaks API version %s, not 12" % v)
    sys.exit(1)
EOF
)
}

# json_check PYTHON-EXPR: every JSON object in stdout satisfies EXPR (with
# the object as d) and there is at least one; prints the reason otherwise.
json_check() {
	python3 - "$1" "$out" <<'EOF'
import json, sys
expr, path = sys.argv[1], sys.argv[2]
text = open(path).read()
dec, i, objs = json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    try:
        d, i = dec.raw_decode(text, i)
    except ValueError as e:
        print("# stdout is not JSON: %s" % e)
        sys.exit(1)
    objs.append(d)
if not objs:
    print("# no JSON object on stdout")
    sys.exit(1)
for d in objs:
    try:
        good = eval("(" + expr + ")", {"d": d})
    except Exception as e:
        print("# %r on %s" % (e, json.dumps(d)[:400]))
        sys.exit(1)
    if not good:
        print("# fails %s: %s" % (expr, json.dumps(d)[:400]))
        sys.exit(1)
EOF
}
