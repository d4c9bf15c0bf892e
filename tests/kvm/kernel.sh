#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/kvm/kernel.sh: build the kernels of our patch series for the nested
# KVM tests, and print one line per kernel for tests/kvm/nested.sh:
#
#   LABEL:image:PATH:EXIT:BITMAP
#
#   6.12-patch1   Debian's linux-source-6.12 + patch 1 (annotated -EFAULT)
#   6.12-patched  + patch 2 (the KVM userfault bitmap)
#
# Both are tinyconfig kernels with tests/kvm/kernel.config merged in, built
# one after the other in the same tree, so each patch is shown to build on
# its own; the tree's checkpatch.pl must pass both patches first.  They are
# cached outside any build tree, in $POSTCOPY_KERNEL_CACHE (default
# /var/cache/postcopy/kernels), under a key hashed from the patches, the
# config, this script and the source package's version: a second run skips
# the build, a cold machine builds (about 5 minutes on two cores).
#
# Exit status: 0 built or cached, 1 the build failed (see the log it
# names), 2 it cannot be built here (missing packages and not root, or not
# enough disk).
set -uo pipefail

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
patches=("$srcdir"/patches/linux-6.12/*.patch)
config=$srcdir/tests/kvm/kernel.config
cache_root=${POSTCOPY_KERNEL_CACHE:-/var/cache/postcopy/kernels}
pkgs=(linux-source-6.12 flex bison libelf-dev bc make gcc xz-utils patch perl)

say() { echo "kernel.sh: $*" >&2; }

missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		say "needs Debian packages ${missing[*]} (as root: apt-get install ${missing[*]})"
		exit 2
	fi
	mkdir -p "$cache_root"
	{ apt-get install -y -q --no-install-recommends "${missing[@]}" ||
	  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }; } \
		>"$cache_root/apt-install.log" 2>&1 ||
		{ say "could not install ${missing[*]} (see $cache_root/apt-install.log)"; exit 2; }
fi
tarball=$(ls /usr/src/linux-source-6.12.tar.* 2>/dev/null | head -1)
[[ -n $tarball ]] || { say "linux-source-6.12 has no tarball in /usr/src"; exit 2; }

version=$(dpkg-query -W -f '${Version}' linux-source-6.12)
# The recipe (this script) is part of what the images are made from.
key=$(cat "${patches[@]}" "$config" "${BASH_SOURCE[0]}" <(echo "$version") |
	sha256sum | cut -c1-16)
cache=$cache_root/$key
print() {
	echo "6.12-patch1:image:$cache/bzImage-patch1:yes:no"
	echo "6.12-patched:image:$cache/bzImage-patched:yes:yes"
}
if [[ -f $cache/bzImage-patch1 && -f $cache/bzImage-patched ]]; then
	print
	exit 0
fi

mkdir -p "$cache"
# The unpacked tree and the objects take about 2 GB for a while; a machine
# without the room cannot build here, which is not a failure of the patches.
need_kb=$((2500 * 1024))
have_kb=$(df --output=avail -k "$cache" | tail -1)
if ((have_kb < need_kb)); then
	say "needs $((need_kb / 1024)) MB free in $cache to build the kernels, has $((have_kb / 1024)) MB"
	exit 2
fi
exec 9>"$cache/lock"
flock 9 # one build per key at a time
if [[ -f $cache/bzImage-patch1 && -f $cache/bzImage-patched ]]; then
	print
	exit 0
fi
log=$cache/build.log
say "building the patched kernels (log: $log)"
build() {
	rm -rf "$cache/src" "$cache/out" && mkdir -p "$cache/src" "$cache/out" &&
	tar -xf "$tarball" -C "$cache/src" --strip-components=1 &&
	cd "$cache/src" &&
	make O="$cache/out" tinyconfig &&
	./scripts/kconfig/merge_config.sh -O "$cache/out" -m "$cache/out/.config" "$config" &&
	make O="$cache/out" olddefconfig &&
	./scripts/checkpatch.pl "${patches[@]}" &&
	patch -p1 <"${patches[0]}" &&
	make O="$cache/out" -j"$(nproc)" bzImage &&
	cp "$cache/out/arch/x86/boot/bzImage" "$cache/bzImage-patch1.tmp" &&
	for p in "${patches[@]:1}"; do patch -p1 <"$p" || return; done &&
	make O="$cache/out" -j"$(nproc)" bzImage &&
	cp "$cache/out/arch/x86/boot/bzImage" "$cache/bzImage-patched" &&
	mv "$cache/bzImage-patch1.tmp" "$cache/bzImage-patch1"
}
(build) >"$log" 2>&1
status=$?
# The tree is 1.5 GB; only the images (and the log) are kept, either way.
rm -rf "$cache/src" "$cache/out"
if ((status)); then
	say "the build failed; the end of $log:"
	tail -20 "$log" >&2
	exit 1
fi
print
