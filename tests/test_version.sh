#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_version.sh POSTCOPY - one version everywhere.  Prints TAP.
#
# Pins: meson.build's project version (what this build was configured
# with) is what `postcopy --version` prints for the CLI and the library,
# what include/postcopy.h's PC_VERSION_* say (meson.build refuses to
# configure otherwise: checked here all the same), the newest section of
# CHANGELOG.md, and the version of debian/changelog's newest entry; the
# symbols of debian/libpostcopy0.symbols are the header's functions.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init version
trap 'rm -rf "$tmp"' EXIT
bdir=${POSTCOPY_BUILDDIR:-$(dirname "$cli")}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

echo "1..5"

version=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
	"$bdir/meson-info/intro-projectinfo.json")
IFS=. read -r major minor patch <<<"$version"

run --version
[[ $rc == 0 && $(cat "$out") == "postcopy $version (libpostcopy $version)" ]]
check "cli_version_is_the_project_version" $?

h=$src/include/postcopy.h
grep -q "^#define PC_VERSION_MAJOR $major\$" "$h" &&
	grep -q "^#define PC_VERSION_MINOR $minor\$" "$h" &&
	grep -q "^#define PC_VERSION_PATCH $patch\$" "$h"
check "header_version_macros_are_the_project_version" $? "$h"

top=$(grep -m1 '^## ' "$src/CHANGELOG.md")
echo "meson: $version; CHANGELOG.md: $top" >"$out"
[[ $top == "## $version "* || $top == "## $version" ]]
check "changelog_md_starts_with_the_project_version" $?

deb=$(sed -n '1s/^[a-z0-9.+-]* (\([^)]*\)).*/\1/p' "$src/debian/changelog")
echo "meson: $version; debian/changelog: $deb" >"$out"
[[ ${deb%-*} == "$version" ]]
check "debian_changelog_is_the_project_version" $?

python3 "$src/tests/header_functions.py" "$h" >"$tmp/functions"
awk '/^ pc_/ {sub(/@.*/, "", $1); print $1}' "$src/debian/libpostcopy0.symbols" | sort >"$tmp/symbols"
diff "$tmp/functions" "$tmp/symbols" >"$out"
check "debian_symbols_file_lists_the_header_functions" $?
exit $((failed > 0))
