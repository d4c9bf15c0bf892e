#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_completion.sh POSTCOPY - the bash completion is the CLI's.  Prints TAP.
#
# Pins: the option tables tools/cli_options.py reads from tools/*.c (what
# the completion is generated from) name the same commands as `postcopy
# --help` and, for each command, the same flags as the option lines of its
# --help; the built completion, loaded into bash with Debian's
# bash-completion, completes a command, a command's flags, and a file after
# a flag that takes one.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init completion
trap 'rm -rf "$tmp"' EXIT
bdir=${POSTCOPY_BUILDDIR:-$(dirname "$cli")}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

echo "1..3"

python3 "$src/tools/cli_options.py" --list "$src" >"$tmp/flags" 2>"$err"
"$cli" --help >"$tmp/help" 2>>"$err"
awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {on = 0}' "$tmp/help" | sort >"$tmp/help-cmds"
cut -d' ' -f1 "$tmp/flags" | sort -u >"$tmp/table-cmds"
diff "$tmp/help-cmds" "$tmp/table-cmds" >"$out"
check "option_tables_have_the_commands_of_help" $?

# Flags a table accepts that --help does not list: aliases known to be
# undocumented, each to be documented in its --help (then removed here).
known_undocumented=""
python3 - "$cli" "$tmp/flags" "$known_undocumented" >"$out" 2>&1 <<'EOF'
import re, subprocess, sys
cli, listing, known = sys.argv[1], sys.argv[2], sys.argv[3]
known = set(tuple(known.split()[i:i + 2]) for i in range(0, len(known.split()), 2))
table = {}
for line in open(listing):
    cmd, flag, _ = line.split()
    table.setdefault(cmd, set()).add(flag)
for cmd, flags in table.items():
    text = subprocess.run([cli, cmd, "--help"], capture_output=True, text=True).stdout
    doc = set()
    for line in text.splitlines():
        # An option line: two spaces, a flag, then its description after a
        # gap of two or more spaces ("  -m, --mode exit|wait  fault ...").
        if re.match(r"  -", line):
            col = re.split(r"\s{2,}", line.strip())[0]
            doc |= set(re.findall(r"(?<![\w-])(--[a-z0-9-]+|-[a-zA-Z0-9])(?![\w-])", col))
    for f in sorted(flags - doc):
        if (cmd, f) not in known:
            print("%s %s: parsed but not in --help" % (cmd, f))
    for f in sorted(doc - flags):
        print("%s %s: in --help but not parsed" % (cmd, f))
EOF
[[ ! -s $out && -s $tmp/flags ]]
check "option_tables_have_the_flags_of_each_commands_help" $?

bc=/usr/share/bash-completion/bash_completion
if [[ ! -r $bc ]]; then
	skip "bash_completes_commands_flags_and_files" "no $bc (apt-get install bash-completion)"
elif [[ ! -r $bdir/completion/postcopy ]]; then
	skip "bash_completes_commands_flags_and_files" "completion not built (-Dbash_completion=disabled)"
else
	touch "$tmp/vm.img"
	# complete WORDS...: what _postcopy offers for the last word.
	completions() {
		bash --norc --noprofile -c '
			source "$1"; source "$2"; cd "$3"; shift 3
			COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
			COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
			_postcopy postcopy "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
			printf "%s\n" "${COMPREPLY[@]}"' _ "$bc" "$bdir/completion/postcopy" "$tmp" "$@" 2>>"$err"
	}
	{
		echo "postcopy res -> $(completions postcopy res | xargs)"
		echo "postcopy serve --li -> $(completions postcopy serve --li | xargs)"
		echo "postcopy fc-handler --no- -> $(completions postcopy fc-handler --no- | xargs)"
		echo "postcopy restore --image v -> $(completions postcopy restore --image v | xargs)"
	} >"$out"
	grep -qx 'postcopy res -> restore' "$out" &&
		grep -qx 'postcopy serve --li -> --listen' "$out" &&
		grep -qx 'postcopy fc-handler --no- -> --no-fill --no-kill' "$out" &&
		grep -qx 'postcopy restore --image v -> vm.img' "$out"
	check "bash_completes_commands_flags_and_files" $?
fi
exit $((failed > 0))
