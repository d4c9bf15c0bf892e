#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/kvm/kernel.sh: build the kernels of our patch series, and the KVM
# selftests it carries, for the nested KVM tests, and print one line per
# kernel boot for tests/kvm/nested.sh:
#
#   LABEL:image:PATH:EXIT:BITMAP[:KERNEL_ARGS]
#
#   6.12-exit          Debian's linux-source-6.12 + the two exit patches
#                      (patches/linux-6.12/0001, 0002: the annotated -EFAULT)
#   6.12-patched       + the KVM userfault bitmap (the rest of the kernel
#                      patches)
#   6.12-patched-tdp0  the same image booted with kvm.tdp_mmu=0: the older
#                      TDP MMU, whose prefetch goes through the shadow MMU
#                      code (direct_pte_prefetch_many())
#   6.12-patched-shadow  the same image booted with kvm_amd.npt=0: shadow
#                      paging, whose prefetch of a paging guest goes through
#                      FNAME(prefetch_gpte)()
#
# and one line naming the directory of the statically linked selftests
# (userfault_test, demand_paging_test) built from the patched tree:
#
#   selftests:DIR
#
# The kernels are tinyconfig kernels with tests/kvm/kernel.config merged in.
# The tree's checkpatch.pl must pass every patch first (--no-signoff: the
# patches carry no Signed-off-by, see patches/README.md; --ignore
# FILE_PATH_CHANGES: the selftest patch adds a file, which MAINTAINERS
# already covers with tools/testing/selftests/kvm/); then the patches
# are applied one at a time and the kernel is built after each of them, so
# each patch is shown to build on its own (after the first, the builds are
# incremental), with W=1 and no warning in KVM's files.  Everything is
# cached outside any build tree, in $POSTCOPY_KERNEL_CACHE (default
# /var/cache/postcopy/kernels), under a key hashed from the patches, the
# config, this script and the source package's version: a second run skips
# the build.
#
# Exit status: 0 built or cached, 1 the build failed (see the log it
# names), 2 it cannot be built here (missing packages and not root, or not
# enough disk).
set -uo pipefail

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
patches=("$srcdir"/patches/linux-6.12/*.patch)
config=$srcdir/tests/kvm/kernel.config
cache_root=${POSTCOPY_KERNEL_CACHE:-/var/cache/postcopy/kernels}
# The series' base (patches/README.md): the source package is pinned to it,
# since a newer point release may not take the patches (6.12.118 does not
# take 0003's last hunk), and the tests are of the series, not of a rebase.
base_version=6.12.117-1~deb12u1
pkgs=(flex bison libelf-dev bc make gcc xz-utils patch perl rsync python3-ply python3-git)
# The patch that ends the exit-path kernel (0002): the ones after it add the
# userfault bitmap.  Patches whose name has "selftests" change only
# tools/testing/selftests.
exit_patches=2

say() { echo "kernel.sh: $*" >&2; }

missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
[[ $(dpkg-query -W -f '${Version}' linux-source-6.12 2>/dev/null) == "$base_version" ]] ||
	missing+=("linux-source-6.12=$base_version")
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		say "needs Debian packages ${missing[*]} (as root: apt-get install ${missing[*]})"
		exit 2
	fi
	mkdir -p "$cache_root"
	install=(apt-get install -y -q --no-install-recommends --allow-downgrades "${missing[@]}")
	{ "${install[@]}" || { apt-get update -q && "${install[@]}"; }; } \
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
outputs=("$cache/bzImage-exit" "$cache/bzImage-patched"
	"$cache/selftests/userfault_test" "$cache/selftests/demand_paging_test")
print() {
	echo "6.12-exit:image:$cache/bzImage-exit:yes:no"
	echo "6.12-patched:image:$cache/bzImage-patched:yes:yes"
	echo "6.12-patched-tdp0:image:$cache/bzImage-patched:yes:yes:kvm.tdp_mmu=0"
	echo "6.12-patched-shadow:image:$cache/bzImage-patched:yes:yes:kvm_amd.npt=0"
	echo "selftests:$cache/selftests"
}
built() {
	local f
	for f in "${outputs[@]}"; do [[ -f $f ]] || return 1; done
}
if built; then
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
if built; then
	print
	exit 0
fi
log=$cache/build.log
say "building the patched kernels and selftests (log: $log)"
build() {
	local i=0 p name st=$cache/selftests.tmp
	rm -rf "$cache/src" "$cache/out" "$st" && mkdir -p "$cache/src" "$cache/out" &&
	tar -xf "$tarball" -C "$cache/src" --strip-components=1 &&
	cd "$cache/src" &&
	make O="$cache/out" tinyconfig &&
	./scripts/kconfig/merge_config.sh -O "$cache/out" -m "$cache/out/.config" "$config" &&
	make O="$cache/out" olddefconfig || return
	./scripts/checkpatch.pl --no-signoff --ignore FILE_PATH_CHANGES "${patches[@]}" || return
	# Every kernel patch is applied and built on its own, in order.
	for p in "${patches[@]}"; do
		i=$((i + 1)) name=$(basename "$p")
		echo "=== $name"
		patch -p1 <"$p" || return
		[[ $name == *selftests* ]] && continue
		# W=1; a warning in KVM's own files fails the patch (the
		# tree's KVM is W=1 clean in this config).
		make O="$cache/out" W=1 -j"$(nproc)" bzImage 2>&1 | tee "$cache/make.out" ||
			{ echo "=== $name does not build"; return 1; }
		if grep -E '(arch/x86/kvm|virt/kvm|include/linux/kvm|include/uapi/linux/kvm)[^:]*:[0-9]+:[0-9]+: warning:' \
			"$cache/make.out"; then
			echo "=== $name adds W=1 warnings to KVM"
			return 1
		fi
		if ((i == exit_patches)); then
			cp "$cache/out/arch/x86/boot/bzImage" "$cache/bzImage-exit.tmp" || return
		fi
	done
	cp "$cache/out/arch/x86/boot/bzImage" "$cache/bzImage-patched.tmp" || return
	# The selftests, statically linked for the initramfs, against the
	# patched tree's uapi headers.
	make O="$cache/out" headers_install &&
	mkdir -p "$st" &&
	make -C tools/testing/selftests/kvm -j"$(nproc)" OUTPUT="$st/build" \
		KHDR_INCLUDES="-isystem $cache/out/usr/include" CC="gcc -static" \
		"$st/build/x86_64/userfault_test" "$st/build/demand_paging_test" &&
	cp "$st/build/x86_64/userfault_test" "$st/build/demand_paging_test" "$st/" &&
	rm -rf "$st/build" && rm -rf "$cache/selftests" && mv "$st" "$cache/selftests" &&
	mv "$cache/bzImage-exit.tmp" "$cache/bzImage-exit" &&
	mv "$cache/bzImage-patched.tmp" "$cache/bzImage-patched"
}
(build) >"$log" 2>&1
status=$?
# The tree is 1.5 GB; only the images, the selftests (and the log) are
# kept, either way.
rm -rf "$cache/src" "$cache/out" "$cache/selftests.tmp" "$cache/make.out"
if ((status)); then
	say "the build failed; the end of $log:"
	tail -20 "$log" >&2
	exit 1
fi
print
