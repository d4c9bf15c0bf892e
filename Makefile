# SPDX-License-Identifier: MIT
#
# The front door.  Two commands matter:
#   make run     install what is missing, build, run the demo restore
#   make check   build normal, ASan+UBSan and TSan configurations and run the
#                test suite on each; ends with "N passed, N failed, N skipped"
# Also: make build, make bench, make kvm-check, make kvm-mutants, make kvm-bench, make clean,
# make install [PREFIX=/usr/local] [DESTDIR=...], make deb.
# Compiling is meson's and ninja's job (meson.build); this file only
# strings the steps together.

SHELL := /bin/bash

PKGS := meson ninja-build pkg-config gcc libjson-c-dev libsodium-dev libxxhash-dev gnuplot-nox python3 \
  scdoc bash-completion man-db libcurl4-openssl-dev libzstd-dev nginx curl openssl

BUILDS := build build-asan build-tsan
OPTS_build      :=
OPTS_build-asan := -Db_sanitize=address,undefined -Db_lundef=false
OPTS_build-tsan := -Db_sanitize=thread -Db_lundef=false
# Statically linked, for the initramfs of the nested KVM VM (tests/kvm/).
KVM_BUILD := build-kvm
OPTS_build-kvm  := -Dprefer_static=true -Dc_link_args=-static
KVM_TARGETS := postcopy tests/test_kvm tests/kvm_hold

# The library's exit mode catches SIGBUS itself: no sanitizer may take it over.
# (tests/meson.build sets the same three for `meson test`: keep them in step.)
export ASAN_OPTIONS  := handle_sigbus=0:handle_segv=1:detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS := halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS  := halt_on_error=1:handle_sigbus=0:report_signal_unsafe=0

# gcc 12's sanitizer runtimes predate the 32 bits of mmap ASLR entropy newer
# kernels allow (vm.mmap_rnd_bits=32, as on 6.18): TSan then dies at start-up
# with "FATAL: ThreadSanitizer: unexpected memory mapping", and ASan segfaults
# at start-up in about one run in three.  Both are fine with ASLR off, so the
# sanitizer suites run under `setarch -R`, which turns it off for those
# processes only and leaves the machine alone.  Where setarch -R is not
# allowed (some container seccomp profiles), lower the entropy instead:
# `sysctl -w vm.mmap_rnd_bits=28`; the TSan probe below says so.
NOASLR = $(shell setarch $$(uname -m) -R true 2>/dev/null && echo setarch $$(uname -m) -R)

.PHONY: build run check bench clean deps tsan-probe kvm-check kvm-mutants kvm-bench install deb

build: deps build/build.ninja
	ninja -C build

# Debian packages: install the missing ones when root, else say what is needed.
deps:
	@command -v dpkg >/dev/null || exit 0; \
	missing=$$(for p in $(PKGS); do \
	  dpkg -s $$p 2>/dev/null | grep -q '^Status: install ok installed' || echo $$p; done); \
	[ -z "$$missing" ] && exit 0; missing=$$(echo $$missing); \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "Missing Debian packages: $$missing (as root: apt-get install $$missing)" >&2; exit 1; fi; \
	echo "Installing: $$missing"; \
	apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

# Configure a build directory once; ninja re-runs meson itself after that.
# --werror: warnings fail the project's own builds (and CI's), while
# meson.build leaves them warnings for whoever else builds a release.
$(BUILDS:%=%/build.ninja) $(KVM_BUILD)/build.ninja: %/build.ninja: | deps
	rm -rf $*
	meson setup --werror $* $(OPTS_$*)

run: build
	test -e build/demo.img || build/postcopy mkimage build/demo.img 1G
	build/postcopy restore --image build/demo.img -m exit --vcpus 2

# Each suite is tests/run-suite.sh over what tests/meson.build registers with
# `meson test` (one test alone: meson test -C build test_matrix).
# The fourth suite boots Debian's kernels in QEMU's software emulation and
# runs the KVM tests there (tests/kvm/nested.sh; it skips, saying why, where
# QEMU or the kernel packages cannot be had).
check: deps $(BUILDS:%=%/build.ninja) $(KVM_BUILD)/build.ninja tsan-probe
	@for d in $(BUILDS); do ninja -C $$d || exit; done
	@ninja -C $(KVM_BUILD) $(KVM_TARGETS)
	@rm -f $(BUILDS:%=%/suite-counts) $(KVM_BUILD)/suite-counts
	bash tests/run-suite.sh build || true
	$(NOASLR) bash tests/run-suite.sh build-asan || true
	$(NOASLR) bash tests/run-suite.sh build-tsan threaded || true
	bash tests/kvm/nested.sh $(KVM_BUILD) || true
	@p=0 f=0 s=0; for d in $(BUILDS) $(KVM_BUILD); do \
	  [ -s $$d/suite-failures ] && sed "s|^|$$d: |" $$d/suite-failures; \
	  read -r dp df ds 2>/dev/null <$$d/suite-counts || { dp=0 df=1 ds=0; }; \
	  p=$$((p + dp)) f=$$((f + df)) s=$$((s + ds)); done; \
	echo "$$p passed, $$f failed, $$s skipped"; [ $$f -eq 0 ]

# A tiny threaded program: does TSan start at all on this machine?
tsan-probe: build-tsan/build.ninja
	@printf '%s\n' '#include <pthread.h>' 'static void *f(void *a) { return a; }' \
	  'int main(void) { pthread_t t; return pthread_create(&t, 0, f, 0) || pthread_join(t, 0); }' \
	  | gcc -fsanitize=thread -pthread -x c - -o build-tsan/tsan-probe
	@$(NOASLR) build-tsan/tsan-probe || { echo "TSan cannot start here;" \
	  "as root try: sysctl -w vm.mmap_rnd_bits=28" >&2; exit 1; }

bench: build
	bash bench/run-matrix.sh build/postcopy

# ---- make install [PREFIX=/usr/local] [DESTDIR=/tmp/root] --------------------
# Installs the library (libpostcopy.so.0, libpostcopy.a, postcopy.h,
# libpostcopy.pc), the CLI, its man pages and bash completion from the
# plain build, with the prefix set in that build (meson configure).
PREFIX ?= /usr/local
install: build
	meson configure build --prefix=$(PREFIX)
	ninja -C build -j2
	meson install -C build --no-rebuild $(if $(DESTDIR),--destdir $(DESTDIR))

# ---- make deb: Debian packages in build-deb/ (debian/) ---------------------
# libpostcopy0, libpostcopy-dev and postcopy, built by dpkg-buildpackage
# without -Werror like any distribution build, in a copy of the tree (the
# .debs land beside it, in build-deb/), then checked with lintian (errors
# fail; warnings are printed) and installed into a scratch root
# (build-deb/root) to run the packaged CLI.  Not part of make check: it
# builds everything once more (about two minutes here).
DEB_PKGS := debhelper dpkg-dev fakeroot lintian scdoc bash-completion systemd
deb:
	@$(MAKE) --no-print-directory deps PKGS="$(PKGS) $(DEB_PKGS)"
	rm -rf build-deb && mkdir -p build-deb/src
	git ls-files -co --exclude-standard | tar -cf - -T - | tar -C build-deb/src -xf -
	cd build-deb/src && nice -n 19 dpkg-buildpackage -us -uc -b -j2
	lintian --fail-on error --info build-deb/*.changes
	for d in build-deb/*.deb; do dpkg-deb -x $$d build-deb/root; done
	build-deb/root/usr/bin/postcopy --version

# ---- make fuzz [FUZZ_TARGETS="proto fc ..."] [FUZZ_SECONDS=60] -------------
# Builds the libFuzzer harnesses (fuzz/fuzz_NAME.c, fuzz/README.md) in a
# clang ASan+UBSan build, build-fuzz/ (meson -Dlibfuzzer=true), and runs
# each of FUZZ_TARGETS for FUZZ_SECONDS on build-fuzz/corpus-NAME (its seeds
# from fuzz/ plus whatever earlier runs found), with fuzz/NAME.dict if there
# is one.  Fails on any crash, sanitizer report, leak or timeout; the input
# is left in build-fuzz/crashes-NAME/.  libFuzzer's runtime is in
# libclang-rt-14-dev; only this target installs FUZZ_PKGS.
FUZZ_PKGS := clang libclang-rt-14-dev
FUZZ_TARGETS ?= proto fc packed ws http s3
FUZZ_SECONDS ?= 60
FUZZ_FLAGS ?=

.PHONY: fuzz
build-fuzz/build.ninja: | deps
	@$(MAKE) --no-print-directory deps PKGS="$(FUZZ_PKGS)"
	rm -rf build-fuzz
	CC=clang meson setup --werror build-fuzz -Dlibfuzzer=true \
	  -Db_sanitize=address,undefined -Db_lundef=false \
	  -Dc_args='-fsanitize=fuzzer-no-link -fno-sanitize-recover=all'

fuzz: build-fuzz/build.ninja
	nice -n 19 ninja -j2 -C build-fuzz $(FUZZ_TARGETS:%=fuzz/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
	  seeds=fuzz/corpus-$$t; [ $$t = proto ] && seeds=fuzz/corpus; \
	  dict=; [ -f fuzz/$$t.dict ] && dict=-dict=fuzz/$$t.dict; \
	  mkdir -p build-fuzz/corpus-$$t build-fuzz/crashes-$$t; \
	  cp $$seeds/* build-fuzz/corpus-$$t/; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  $(NOASLR) build-fuzz/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=10 -print_final_stats=1 $$dict \
	    -artifact_prefix=build-fuzz/crashes-$$t/ $(FUZZ_FLAGS) \
	    build-fuzz/corpus-$$t || exit; \
	done

# ---- real KVM in a nested software-emulated VM (tests/kvm/nested.sh) -------
# kvm-check runs the KVM tests on Debian's 6.12 and 6.1 kernels; kvm-bench
# runs kvm-bench there (tests/kvm/bench.list) and prints the table that
# BENCHMARKS.md quotes.  Downloads are cached in build-kvm/kvm-cache.
kvm-check: deps $(KVM_BUILD)/build.ninja
	ninja -C $(KVM_BUILD) $(KVM_TARGETS)
	bash tests/kvm/nested.sh $(KVM_BUILD)

# kvm-mutants boots the series with one of its fixes taken out
# (tests/kvm/mutants/) and passes only when the cases each mutant lists fail:
# the tests catch what the series fixes.  Slow (a cold build of the mutant
# kernels), so not part of `make check`.
kvm-mutants: deps $(KVM_BUILD)/build.ninja
	ninja -C $(KVM_BUILD) $(KVM_TARGETS)
	bash tests/kvm/nested.sh $(KVM_BUILD) mutants

kvm-bench: deps $(KVM_BUILD)/build.ninja
	ninja -C $(KVM_BUILD) $(KVM_TARGETS)
	bash tests/kvm/nested.sh $(KVM_BUILD) bench
	python3 bench/kvm_table.py --rewrite BENCHMARKS.md $(KVM_BUILD)/kvm-bench-*.jsonl

clean:
	rm -rf $(BUILDS) $(KVM_BUILD) build-fuzz build-deb
