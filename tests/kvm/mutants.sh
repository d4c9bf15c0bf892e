#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/kvm/mutants.sh: build the mutant kernels for tests/kvm/nested.sh's
# mutants job, and print one line per mutant and the selftests line:
#
#   mutant:NAME:PATH
#   selftests:DIR
#
# A mutant (tests/kvm/mutants/NAME.patch) is our patch series with one of
# its fixes taken out again: a small reverse hunk applied on top of all
# ten patches.  The tests must catch each one; the header of its file
# lists the boots and the cases that must fail.
#
# tests/kvm/kernel.sh runs first: it checks and builds the series patch by
# patch (or finds it in its cache), and its selftests are the mutants' too
# (the mutants change only the kernel).  Then the series is applied to a
# fresh tree and built once, and each mutant is applied, built
# incrementally and taken off again.  The images are cached like
# kernel.sh's, in $POSTCOPY_KERNEL_CACHE (default
# /var/cache/postcopy/kernels), under a key hashed from the same recipe
# (the patches, the config, kernel.sh, the source package's version), this
# script and the mutants' diffs (not their headers: the expectations can
# change without a rebuild).
#
# Exit status: 0 built or cached, 1 the build failed (see the log it
# names), 2 it cannot be built here (kernel.sh's reasons).
set -uo pipefail

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
patches=("$srcdir"/patches/linux-6.12/*.patch)
mutants=("$srcdir"/tests/kvm/mutants/*.patch)
config=$srcdir/tests/kvm/kernel.config
cache_root=${POSTCOPY_KERNEL_CACHE:-/var/cache/postcopy/kernels}

say() { echo "mutants.sh: $*" >&2; }

[[ -f ${mutants[0]} ]] || { say "no mutants in $srcdir/tests/kvm/mutants"; exit 1; }
# The series first: kernel.sh installs what is missing, and says why not.
series=$(bash "$srcdir/tests/kvm/kernel.sh") || exit
selftests_line=$(grep '^selftests:' <<<"$series")
tarball=$(ls /usr/src/linux-source-6.12.tar.* | head -1)
version=$(dpkg-query -W -f '${Version}' linux-source-6.12)

# A mutant's diff starts at its first "--- " line.
key=$(cat "${patches[@]}" "$config" "$srcdir/tests/kvm/kernel.sh" <(echo "$version") \
	"${BASH_SOURCE[0]}" \
	<(for m in "${mutants[@]}"; do basename "$m"; sed -n '/^--- /,$p' "$m"; done) |
	sha256sum | cut -c1-16)
cache=$cache_root/$key
name() { basename "$1" .patch; }
print() {
	local m
	for m in "${mutants[@]}"; do echo "mutant:$(name "$m"):$cache/bzImage-$(name "$m")"; done
	echo "$selftests_line"
}
built() {
	local m
	for m in "${mutants[@]}"; do [[ -f $cache/bzImage-$(name "$m") ]] || return 1; done
}
if built; then
	print
	exit 0
fi

mkdir -p "$cache"
need_kb=$((2500 * 1024))
have_kb=$(df --output=avail -k "$cache" | tail -1)
if ((have_kb < need_kb)); then
	say "needs $((need_kb / 1024)) MB free in $cache to build the mutants, has $((have_kb / 1024)) MB"
	exit 2
fi
exec 9>"$cache/lock"
flock 9 # one build per key at a time
if built; then
	print
	exit 0
fi
log=$cache/build.log
say "building the mutant kernels (log: $log)"
build() {
	local p m
	rm -rf "$cache/src" "$cache/out" && mkdir -p "$cache/src" "$cache/out" &&
	tar -xf "$tarball" -C "$cache/src" --strip-components=1 &&
	cd "$cache/src" &&
	make O="$cache/out" tinyconfig &&
	./scripts/kconfig/merge_config.sh -O "$cache/out" -m "$cache/out/.config" "$config" &&
	make O="$cache/out" olddefconfig || return
	for p in "${patches[@]}"; do
		patch -p1 -s <"$p" || return
	done
	make O="$cache/out" -j"$(nproc)" bzImage || return
	# -F0: a mutant whose context moved is an error, not a guess.
	for m in "${mutants[@]}"; do
		echo "=== mutant $(name "$m")"
		patch -p1 -F0 -N <"$m" &&
		make O="$cache/out" -j"$(nproc)" bzImage &&
		cp "$cache/out/arch/x86/boot/bzImage" "$cache/bzImage-$(name "$m").tmp" &&
		patch -p1 -F0 -R <"$m" || return
	done
	for m in "${mutants[@]}"; do
		mv "$cache/bzImage-$(name "$m").tmp" "$cache/bzImage-$(name "$m")" || return
	done
}
(build) >"$log" 2>&1
status=$?
# Only the images (and the log) are kept, either way.
rm -rf "$cache/src" "$cache/out" "$cache"/bzImage-*.tmp
if ((status)); then
	say "the build failed; the end of $log:"
	tail -20 "$log" >&2
	exit 1
fi
print
