#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_symbols.sh POSTCOPY - what the library exports.  Prints TAP.
#
# Pins: libpostcopy.a and libpostcopy.so (next to the CLI) define no global
# symbol outside the public pc_ API; the shared library exports exactly the
# functions include/postcopy.h declares (tests/header_functions.py), each
# with a LIBPOSTCOPY_ version node, and src/libpostcopy.map names exactly
# those (so neither a new function nor a removed one drifts in silently); a
# program that defines a function of its own called uffd_open (as QEMU
# does) links statically against libpostcopy.a and runs.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init symbols
trap 'rm -rf "$tmp"' EXIT
bdir=$(dirname "$cli")
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

echo "1..5"

# (A version node is itself an absolute symbol of that name: not one of ours.)
others() {
	nm "$@" 2>/dev/null | awk 'NF == 3 && $2 ~ /[A-TV-Z]/ && !($2 == "A" && $3 ~ /^LIBPOSTCOPY_/) {print $3}' |
		grep -v '^pc_'
}

if [[ -e $bdir/libpostcopy.a ]]; then
	o=$(others -g --defined-only "$bdir/libpostcopy.a")
	[[ -z $o ]]
	check "static_library_exports_only_pc_symbols" $? || echo "# also: $(echo $o | head -c 300)"
else
	false
	check "static_library_exports_only_pc_symbols" $? || echo "# no $bdir/libpostcopy.a"
fi

python3 "$src/tests/header_functions.py" "$src/include/postcopy.h" >"$tmp/header"
if [[ -e $bdir/libpostcopy.so ]]; then
	o=$(others -D --defined-only "$bdir/libpostcopy.so")
	[[ -z $o ]]
	check "shared_library_exports_only_pc_symbols" $? || echo "# also: $(echo $o | head -c 300)"

	# objdump -T: "... DF .text SIZE VERSION NAME" for each defined one.
	objdump -T "$bdir/libpostcopy.so" | awk '$2 == "g" && $4 != "*UND*" && $4 != "*ABS*" {print $NF, $(NF-1)}' |
		sort >"$tmp/exports"
	{ echo "header vs exports (< header only, > exported only):"
	  diff "$tmp/header" <(cut -d' ' -f1 "$tmp/exports")
	  echo "exports without a LIBPOSTCOPY_ node:"; grep -v ' LIBPOSTCOPY_' "$tmp/exports"
	} >"$out"
	diff -q "$tmp/header" <(cut -d' ' -f1 "$tmp/exports") >/dev/null &&
		! grep -qv ' LIBPOSTCOPY_' "$tmp/exports"
	check "shared_library_exports_exactly_the_header_functions_versioned" $?
else
	skip shared_library_exports_only_pc_symbols "static build: no shared library"
	skip shared_library_exports_exactly_the_header_functions_versioned "static build: no shared library"
fi

# The version script's names: each `name;` between `global:` and `local:`.
sed 's|/\*.*\*/||; s|/\*.*||' "$src/src/libpostcopy.map" |
	awk '/local:/ {g = 0} g && /^[[:space:]]*pc_[a-z0-9_]+;/ {gsub(/[[:space:];]/, ""); print} /global:/ {g = 1}' |
	sort >"$tmp/map"
diff "$tmp/header" "$tmp/map" >"$out"
check "version_script_lists_exactly_the_header_functions" $?

cat >"$tmp/embedder.c" <<'C'
#include <stdio.h>
#include "postcopy.h"
/* The embedder's own function of that name (QEMU has one). */
int uffd_open(int flags) { return flags + 1; }
int main(void)
{
	pc_source *s;
	int ret = pc_source_pattern(1 << 20, 1, &s);
	if (ret)
		return 1;
	pc_source_destroy(s);
	return uffd_open(41) == 42 && pc_version() == PC_VERSION ? 0 : 1;
}
C
# A sanitized build's archive needs its sanitizer runtime at link time.
san=$(python3 -c 'import json, sys
for o in json.load(open(sys.argv[1])):
    if o["name"] == "b_sanitize" and o["value"] not in ("none", ""):
        print("-fsanitize=" + ",".join(o["value"]) if isinstance(o["value"], list) else "-fsanitize=" + o["value"])' \
	"$bdir/meson-info/intro-buildoptions.json" 2>/dev/null)
# The HTTP source, where built in, needs libcurl at link time too.
curl_libs=
nm -u "$bdir/libpostcopy.a" 2>/dev/null | grep -q ' curl_' && curl_libs=$(pkg-config --libs libcurl)
if command -v cc >/dev/null; then
	cc $san -std=gnu11 -I"$src/include" "$tmp/embedder.c" "$bdir/libpostcopy.a" \
		$(pkg-config --libs libsodium libxxhash libzstd) $curl_libs -pthread -o "$tmp/embedder" \
		>"$out" 2>"$err" && "$tmp/embedder"
	check "embedder_with_its_own_uffd_open_links_the_static_library" $? "$err"
else
	skip embedder_with_its_own_uffd_open_links_the_static_library "no C compiler"
fi
exit $((failed > 0))
