#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_man.sh POSTCOPY - the man pages cover what they must.  Prints TAP.
#
# Pins, on the pages `meson install` puts in a scratch root: `man
# FUNCTION` finds a page for every function include/postcopy.h declares,
# whose NAME lists it and whose SYNOPSIS declares it; libpostcopy(3) refers
# to each of them; postcopy(1) has a section for every command of the CLI
# and names each flag of that command's option table (tools/cli_options.py);
# every page renders without a groff warning.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init man
trap 'rm -rf "$tmp"' EXIT
bdir=${POSTCOPY_BUILDDIR:-$(dirname "$cli")}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if ! command -v scdoc >/dev/null || [[ ! -e $bdir/man/libpostcopy.3 ]]; then
	echo "1..0 # SKIP no man pages in $bdir (scdoc missing: apt-get install scdoc)"
	exit 0
fi
if ! command -v man >/dev/null; then
	echo "1..0 # SKIP no man(1) to read the pages with (apt-get install man-db)"
	exit 0
fi
echo "1..5"

mandir=$(python3 -c 'import json, sys
o = {x["name"]: x["value"] for x in json.load(open(sys.argv[1] + "/meson-info/intro-buildoptions.json"))}
m = o["mandir"]
print(m if m.startswith("/") else o["prefix"] + "/" + m)' "$bdir")
root=$tmp/root
meson install -C "$bdir" --no-rebuild --quiet --destdir "$root" --tags man >"$out" 2>"$err"
check "man_pages_install" $?
mp=$root$mandir

# The text of a page as man shows it, its sections by heading.
# (No hyphens and no line breaks, so that a name is found whole.)
render() { MANROFFOPT="-rHY=0 -rLL=1000n" man -l -Tutf8 "$1" 2>/dev/null | col -b; }
section() { awk -v s="$1" '/^[A-Z]/ {on = ($0 == s)} on && !/^[A-Z]/'; }

python3 "$src/tests/header_functions.py" "$src/include/postcopy.h" >"$tmp/functions"
declare -A rendered=()
: >"$out"
while read -r f; do
	page=$(man -M "$mp" -w 3 "$f" 2>/dev/null)
	if [[ -z $page ]]; then
		echo "$f: no page" >>"$out"
		continue
	fi
	real=$(readlink -f "$page")
	[[ -v "rendered[$real]" ]] || rendered[$real]=$(render "$real")
	text=${rendered[$real]}
	section NAME <<<"$text" | grep -Eq "(^|[ ,])$f(,| |$)" ||
		echo "$f: not in the NAME of $(basename "$(readlink -f "$page")")" >>"$out"
	section SYNOPSIS <<<"$text" | grep -q "[ *]$f(" ||
		echo "$f: not declared in the SYNOPSIS of $(basename "$(readlink -f "$page")")" >>"$out"
done <"$tmp/functions"
[[ ! -s $out && -s $tmp/functions ]]
check "every_header_function_has_a_man_page" $?

text=$(render "$mp/man3/libpostcopy.3")
: >"$out"
while read -r f; do
	grep -q "$f(3)" <<<"$text" || echo "$f: not referred to in libpostcopy(3)" >>"$out"
done <"$tmp/functions"
[[ ! -s $out ]]
check "libpostcopy_3_refers_to_every_function" $?

# postcopy(1): the scdoc source's "## COMMAND" sections, each flag in bold.
python3 "$src/tools/cli_options.py" --list "$src" >"$tmp/flags" 2>"$err"
python3 - "$src/man/postcopy.1.scd" "$tmp/flags" >"$out" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
sections = {}
for part in re.split(r"^## ", text, flags=re.M)[1:]:
    name, _, body = part.partition("\n")
    sections[name.strip()] = body.split("\n# ")[0]
for line in open(sys.argv[2]):
    cmd, flag, _ = line.split()
    if cmd not in sections:
        print("%s: no section in postcopy(1)" % cmd)
    elif "*%s*" % flag not in sections[cmd]:
        print("%s %s: not in its section of postcopy(1)" % (cmd, flag))
EOF
[[ ! -s $out && -s $tmp/flags ]]
check "postcopy_1_documents_every_command_and_flag" $?

: >"$out"
for p in "$mp"/man*/*; do
	[[ -L $p ]] && continue
	w=$(MANWIDTH=80 man --warnings -l -Tutf8 "$p" 2>&1 >/dev/null)
	[[ -z $w ]] || echo "${p##*/}: $w" >>"$out"
done
[[ ! -s $out ]]
check "every_page_renders_without_warnings" $?
exit $((failed > 0))
