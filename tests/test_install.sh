#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_install.sh POSTCOPY - the build installs, and what it installs can be
# used from outside the tree.  Prints TAP.
#
# Pins: `meson install --destdir` puts the library (libpostcopy.so.0 with
# its soname, libpostcopy.a), postcopy.h, libpostcopy.pc, the CLI, its man
# pages and bash completion under the prefix; examples/embed.c, built out of
# the tree with nothing but `pkg-config --cflags --libs libpostcopy` (its
# prefix moved to the scratch root), links the
# shared library, or with --static the archive alone, and restores 16 MiB
# and verifies every byte; the installed header compiles on its own in
# strict C11 and C++; the installed CLI's --version is meson's version.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init install
trap 'rm -rf "$tmp"' EXIT
bdir=${POSTCOPY_BUILDDIR:-$(dirname "$cli")}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

echo "1..8"

# The build's prefix and libdir, its version and its sanitizers.
eval "$(python3 - "$bdir" <<'EOF'
import json, shlex, sys
b = sys.argv[1]
opts = {o["name"]: o["value"] for o in json.load(open(b + "/meson-info/intro-buildoptions.json"))}
san = opts.get("b_sanitize", "none")
if isinstance(san, list):
    san = ",".join(san)
print("prefix=%s" % shlex.quote(opts["prefix"]))
print("libdir=%s" % shlex.quote(opts["libdir"]))
print("mandir=%s" % shlex.quote(opts["mandir"]))
inst = json.load(open(b + "/meson-info/intro-installed.json"))
comp = [v for k, v in inst.items() if k.endswith("/completion/postcopy")]
print("compdir=%s" % shlex.quote(comp[0].rsplit("/", 1)[0] if comp else ""))
print("static_build=%s" % ("1" if opts.get("prefer_static") else "0"))
print("san=%s" % shlex.quote("" if san in ("none", "") else "-fsanitize=" + san))
print("version=%s" % shlex.quote(json.load(open(b + "/meson-info/intro-projectinfo.json"))["version"]))
EOF
)"
[[ $libdir == /* ]] || libdir=$prefix/$libdir
[[ $mandir == /* ]] || mandir=$prefix/$mandir
root=$tmp/root
lib=$root$libdir

meson install -C "$bdir" --no-rebuild --quiet --destdir "$root" >"$out" 2>"$err"
check "meson_install_destdir_succeeds" $?

missing=
want=("$prefix/bin/postcopy" "$prefix/include/postcopy.h" "$libdir/libpostcopy.a"
      "$libdir/pkgconfig/libpostcopy.pc")
((static_build)) || want+=("$libdir/libpostcopy.so" "$libdir/libpostcopy.so.0")
[[ -e $bdir/man/postcopy.1 ]] &&
	want+=("$mandir/man1/postcopy.1" "$mandir/man3/libpostcopy.3" "$mandir/man3/pc_resolve.3")
[[ -e $bdir/completion/postcopy ]] && want+=("$compdir/postcopy")
for f in "${want[@]}"; do [[ -e $root$f ]] || missing+=" $f"; done
if ! ((static_build)); then
	soname=$(readelf -d "$lib/libpostcopy.so.0" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
	[[ $soname == libpostcopy.so.0 ]] || missing+=" (soname '$soname', not libpostcopy.so.0)"
fi
echo "missing:$missing" >"$out"
[[ -z $missing ]]
check "install_has_library_header_pc_cli_and_man_pages" $?

# pkg-config as an embedder runs it, on the installed libpostcopy.pc with
# its prefix= line moved to the scratch root (--define-variable would move
# libsodium's too, and hide a libpostcopy.pc without its own -L).
relocate() { # ROOT DIR: DIR/libpostcopy.pc, prefix ROOT$prefix
	mkdir -p "$2"
	sed "s|^prefix=.*|prefix=$1$prefix|" "$1$libdir/pkgconfig/libpostcopy.pc" >"$2/libpostcopy.pc"
}
relocate "$root" "$tmp/pc-shared"
pc() { PKG_CONFIG_PATH=$tmp/pc-shared pkg-config "$@"; }
req=$(pc --print-requires-private libpostcopy 2>&1)
slibs=$(pc --static --libs libpostcopy 2>&1)
echo "Requires.private: $(echo $req); --static --libs: $slibs" >"$out"
[[ $req == *libsodium* && $req == *libxxhash* && $slibs == *-lsodium* &&
   $slibs == *-lxxhash* && $slibs == *-pthread* ]]
check "pc_file_names_what_the_static_archive_needs" $?

# The installed header alone, strictly: what an embedder's -Werror meets
# (siginfo_t needs POSIX, as the header says).
printf '#include <postcopy.h>\nint main(void) { return pc_version() == PC_VERSION ? 0 : 1; }\n' >"$tmp/h.c"
cp "$tmp/h.c" "$tmp/h.cc"
{ cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Werror $(pc --cflags libpostcopy) -c "$tmp/h.c" -o "$tmp/h.o" &&
  { ! command -v c++ >/dev/null ||
    c++ -std=c++11 -Wall -Wextra -Werror $(pc --cflags libpostcopy) -c "$tmp/h.cc" -o "$tmp/hh.o"; }
} >"$out" 2>"$err"
check "installed_header_compiles_alone_in_c11_and_cxx" $?

# embed.c against the shared library, then the archive alone.
img=$tmp/img
"$cli" mkimage "$img" 4M >/dev/null 2>&1
if ((static_build)); then
	skip "embed_example_links_the_shared_library_and_verifies" "static build: no shared library"
else
	cc $san -std=gnu11 "$src/examples/embed.c" $(pc --cflags --libs libpostcopy) \
		-o "$tmp/embed-shared" >"$out" 2>"$err" &&
		readelf -d "$tmp/embed-shared" | grep -q 'NEEDED.*\[libpostcopy\.so\.0\]' &&
		LD_LIBRARY_PATH=$lib "$tmp/embed-shared" >"$out" 2>"$err" &&
		grep -q '^verified: 16777216 bytes' "$out" &&
		LD_LIBRARY_PATH=$lib "$tmp/embed-shared" "$img" >"$out" 2>>"$err" &&
		grep -q '^verified: 4194304 bytes' "$out"
	check "embed_example_links_the_shared_library_and_verifies" $?
fi

# A prefix with the archive only: -lpostcopy can only mean libpostcopy.a.
sroot=$tmp/static-root
cp -a "$root" "$sroot"
rm -f "$sroot$libdir"/libpostcopy.so*
relocate "$sroot" "$tmp/pc-static"
spc() { PKG_CONFIG_PATH=$tmp/pc-static pkg-config "$@"; }
cc $san -std=gnu11 "$src/examples/embed.c" $(spc --static --cflags --libs libpostcopy) \
	-o "$tmp/embed-static" >"$out" 2>"$err" &&
	! readelf -d "$tmp/embed-static" | grep -q 'NEEDED.*libpostcopy' &&
	"$tmp/embed-static" "$img" >"$out" 2>"$err" &&
	grep -q '^verified: 4194304 bytes' "$out"
check "embed_example_links_the_static_archive_and_verifies" $?

# The installed CLI says meson's version, and the library agrees.
"$root$prefix/bin/postcopy" --version >"$out" 2>"$err"
[[ $(cat "$out") == "postcopy $version (libpostcopy $version)" ]]
check "installed_cli_version_is_the_project_version" $?

# The development link leads to the soname, the soname to this release.
if ((static_build)); then
	skip "shared_library_symlinks_follow_the_version" "static build: no shared library"
else
	ls -l "$lib" >"$out"
	[[ $(readlink "$lib/libpostcopy.so") == libpostcopy.so.0 &&
	   $(readlink "$lib/libpostcopy.so.0") == "libpostcopy.so.$version" ]]
	check "shared_library_symlinks_follow_the_version" $?
fi
exit $((failed > 0))
