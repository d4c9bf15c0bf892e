#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_units.sh POSTCOPY - the systemd units are sound.  Prints TAP.
#
# Pins, for postcopy-serve@.service and postcopy-fc-handler@.service as
# `meson install` puts them in a scratch root: `systemd-analyze verify`
# finds nothing wrong (their ExecStart pointed at the CLI installed there);
# the flags their ExecStart passes are flags of that command's option table
# (tools/cli_options.py); `systemd-analyze security --offline` rates each
# 2.0 or better (the hardening stays on).
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init units
trap 'rm -rf "$tmp"' EXIT
bdir=${POSTCOPY_BUILDDIR:-$(dirname "$cli")}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
units="postcopy-serve@.service postcopy-fc-handler@.service"

if [[ ! -e $bdir/systemd/postcopy-serve@.service ]]; then
	echo "1..0 # SKIP units not built (-Dsystemd=disabled)"
	exit 0
fi
if ! command -v systemd-analyze >/dev/null; then
	echo "1..0 # SKIP no systemd-analyze (apt-get install systemd)"
	exit 0
fi
echo "1..4"

root=$tmp/root
meson install -C "$bdir" --no-rebuild --quiet --destdir "$root" >"$out" 2>"$err"
check "units_install" $?

# The installed units, their ExecStart moved to the installed CLI.
mkdir -p "$tmp/units"
for u in $units; do
	f=$(find "$root" -name "$u" | head -1)
	exe=$(sed -n 's|^ExecStart=\([^ ]*\) .*|\1|p' "$f")
	sed "s|^ExecStart=$exe |ExecStart=$root$exe |" "$f" >"$tmp/units/$u"
done

systemd-analyze verify --man=no $(printf "$tmp/units/%s " $units) >"$out" 2>&1
[[ $? == 0 && ! -s $out ]]
check "systemd_analyze_verify_finds_nothing" $?

python3 "$src/tools/cli_options.py" --list "$src" >"$tmp/flags"
: >"$out"
for u in $units; do
	line=$(sed -n 's|^ExecStart=[^ ]*/postcopy ||p' "$tmp/units/$u")
	cmd=${line%% *}
	for f in $(grep -o -- '--[a-z0-9-]*' <<<"$line"); do
		grep -qx "$cmd $f [01]" "$tmp/flags" || echo "$u: $cmd has no $f" >>"$out"
	done
	[[ -n $cmd ]] || echo "$u: no ExecStart" >>"$out"
done
[[ ! -s $out ]]
check "unit_command_lines_use_flags_the_cli_parses" $?

: >"$out"
for u in $units; do
	level=$(systemd-analyze security --offline=yes "$tmp/units/$u" 2>/dev/null |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	echo "$u: exposure ${level:-?}" >>"$out"
	awk -v l="${level:-99}" 'BEGIN { exit !(l <= 2.0) }' || echo "$u: above 2.0" >>"$out"
done
! grep -q 'above' "$out"
check "units_are_hardened_to_exposure_2_or_less" $?
exit $((failed > 0))
