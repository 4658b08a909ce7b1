#!/usr/bin/env bash
# Set up everything codeisland needs on a Debian 12 machine, then build every part.
#   scripts/bootstrap.sh           the STEPS below (what demo.sh needs)
#   scripts/bootstrap.sh --tests   STEPS then TEST_STEPS (what test.sh needs)
#   scripts/bootstrap.sh STEP...   only the named steps;  --list prints every step
# Idempotent and quiet: a step prints one line when it has work to do and nothing otherwise, so a
# second run only checks (and rebuilds what changed).  Whatever the steps' commands print goes to
# build/bootstrap.log; a failure is one line naming the step, the log and the last line logged.
#
# To add an install step: write a function that returns at once when its work is already done,
# says what it does with `say`, runs its commands through `run` (output to the log), and add its
# name to STEPS (everything needs it) or TEST_STEPS (only the tests need it).  Slow downloads and
# builds live outside the tree under "$(cache_dir NAME)" (/var/cache/codeisland/NAME by default).
set -Eeuo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

STEPS=(install_debian_packages fetch_linux_guest fetch_port_sources check_python create_venv
  install_python_package build_everything)
TEST_STEPS=(install_edk2_build_deps build_edk2_firmware install_native_host_deps)

DEBIAN_PACKAGES=(clang lld llvm libclang-rt-14-dev gnu-efi qemu-system-x86 ovmf mtools dosfstools
  binutils make python3 python3-venv python3-pip)
PYTHON_MIN=(3 11)
VENV=.venv
LOG=$root/build/bootstrap.log
CACHE_ROOT=${CODEISLAND_CACHE:-/var/cache/codeisland}

# ---- helpers for the steps ----------------------------------------------------------------------

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# The command's output goes to the log, not the terminal.
run() { "$@" >>"$LOG" 2>&1; }

die() {
  printf 'bootstrap: error: %s\n' "$*" >&2
  exit 1
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# cache_dir NAME: a directory for slow downloads/builds that survives fresh clones (created if
# missing; under ~/.cache/codeisland when /var/cache is not writable and sudo is not available).
cache_dir() {
  local dir="$CACHE_ROOT/$1"
  if ! mkdir -p "$dir" 2>/dev/null; then
    if as_root mkdir -p "$dir" 2>/dev/null && as_root chown "$(id -u):$(id -g)" "$dir"; then :
    else dir="${XDG_CACHE_HOME:-$HOME/.cache}/codeisland/$1" && mkdir -p "$dir"; fi
  fi
  printf '%s\n' "$dir"
}

# python_ok PYTHON: PYTHON runs and is at least PYTHON_MIN.
python_ok() {
  "$1" -c "import sys; sys.exit(sys.version_info < (${PYTHON_MIN[0]}, ${PYTHON_MIN[1]}))" 2>/dev/null
}

# ---- the steps ----------------------------------------------------------------------------------

install_debian_packages() {
  local missing=() pkg
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  run as_root apt-get update
  run as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# The interpreter the .venv is made from: whatever python3 is first on PATH, if recent enough.
check_python() {
  command -v python3 >/dev/null || die "no python3 on PATH (Debian: apt-get install python3 python3-venv)"
  local min="${PYTHON_MIN[0]}.${PYTHON_MIN[1]}"
  python_ok python3 || die "python3 on PATH ($(command -v python3), $(python3 -V 2>&1 || true))" \
    "is older than $min; put a CPython $min+ first on PATH"
  python3 -c "import ensurepip, venv" 2>/dev/null \
    || die "python3 on PATH ($(command -v python3)) cannot create a venv (Debian: apt-get install python3-venv)"
}

# A .venv that runs, is recent enough and has pip; a broken one (interrupted creation, base
# interpreter gone) is made again.
create_venv() {
  if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python" \
     && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    return 0
  fi
  say "creating $VENV from $(command -v python3) ($(python3 -V 2>&1))"
  rm -rf "$VENV"
  run python3 -m venv "$VENV"
}

# The package (editable) with its test extras, again whenever pyproject.toml changes.
install_python_package() {
  local stamp="$VENV/.codeisland-installed" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  say "installing the codeisland package with its test extras into $VENV (pip)"
  run "$VENV/bin/python" -m pip install --upgrade pip
  run "$VENV/bin/python" -m pip install -e '.[test]'
  printf '%s\n' "$want" >"$stamp"
}

build_everything() {
  make -s uptodate 2>/dev/null && return 0
  say "building the SMM driver, target app, workloads and native libraries (make build)"
  run make -s build
}

# The Linux guest of `codeisland qemu run --guest linux`: Debian's current kernel (the image that
# linux-image-amd64 depends on) and busybox-static, downloaded with apt and unpacked without
# installing, cached outside the repo.  Nothing here is committed.
fetch_linux_guest() {
  local cache=${CODEISLAND_LINUX_CACHE:-$(cache_dir linux)} kpkg
  mkdir -p "$cache"
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9.]*-[0-9]*-amd64\)$/\1/p' | head -n1 || true)
  [ -n "$kpkg" ] || die "cannot find Debian's current kernel package (apt-cache depends linux-image-amd64)"
  if [ ! -f "$cache/vmlinuz" ] || [ "$(cat "$cache/kernel-package" 2>/dev/null)" != "$kpkg" ]; then
    say "fetching $kpkg into $cache (download only, no install)"
    (cd "$cache" && rm -f ./"$kpkg"_*.deb && run apt-get download -q -o APT::Sandbox::User=root "$kpkg")
    dpkg-deb --fsys-tarfile "$cache/$kpkg"_*.deb | tar -x -O --wildcards './boot/vmlinuz-*' >"$cache/vmlinuz.tmp"
    mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
    rm -f "$cache/$kpkg"_*.deb
    echo "$kpkg" >"$cache/kernel-package"
  fi
  if [ ! -x "$cache/busybox" ]; then
    say "fetching busybox-static into $cache"
    (cd "$cache" && rm -f busybox-static_*.deb && run apt-get download -q -o APT::Sandbox::User=root busybox-static)
    dpkg-deb --fsys-tarfile "$cache"/busybox-static_*.deb | tar -x -O ./bin/busybox >"$cache/busybox.tmp"
    chmod 755 "$cache/busybox.tmp" && mv "$cache/busybox.tmp" "$cache/busybox"
    rm -f "$cache"/busybox-static_*.deb
  fi
}

debian_suite() { (. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}"); }

# apt-get source needs a deb-src entry for Debian's archive (zlib for the port, edk2 for firmware).
ensure_deb_src() {
  grep -rqsE '^(Types: deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local suite
  suite=$(debian_suite)
  say "adding a deb-src entry for Debian's archive ($suite), for apt-get source"
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$suite" | as_root tee /etc/apt/sources.list.d/codeisland-deb-src.sources >/dev/null
  run as_root apt-get update
}

# The third-party programs ported as workloads (emulation/workloads/PORTING.md; zlib for
# tests/test_port_zlib.py, zlib and bzip2 for the benchmark's recorded profiles,
# scripts/record_bench_profiles.py): their upstream sources, from the Debian source packages of
# this release (apt-get source, download only), unpacked into caches outside the repo.
# Nothing here is committed.
fetch_port_sources() {
  fetch_source_package zlib "${CODEISLAND_ZLIB_SRC:-$(cache_dir zlib-src)}" deflate.c
  fetch_source_package bzip2 "${CODEISLAND_BZIP2_SRC:-$(cache_dir bzip2-src)}" blocksort.c
}

# fetch_source_package NAME DIR FILE: NAME's upstream tree in DIR (skipped when DIR/FILE exists).
fetch_source_package() {
  local name=$1 cache=$2 probe=$3 suite work
  [ -f "$cache/$probe" ] && return 0
  suite=$(debian_suite)
  ensure_deb_src
  say "fetching the source package $name/$suite into $cache"
  work=$(mktemp -d)
  (cd "$work" && run apt-get source -q --download-only -o APT::Sandbox::User=root "$name/$suite")
  tar -xf "$work"/"$name"_*.orig.tar.* -C "$work"
  mkdir -p "$cache"
  cp -r "$work"/"$name"-*/. "$cache"/
  basename "$work"/"$name"_*.dsc .dsc >"$cache/SOURCE-PACKAGE"
  rm -rf "$work"
}

# EDK2 from Debian's edk2 source package, for tests/test_edk2_build.py and test_qemu_e2e_edk2.py:
# CodeIslandPkg built by EDK2 (GCC5, CLANGPDB) and OVMF with the driver in its DSC/FDF (stock and
# the unrestricted test-board variant of OvmfPkgIa32X64, and stock OvmfPkgX64).  `codeisland
# firmware build` fetches the source (apt-get source, needs a deb-src entry) and builds BaseTools
# and the Build trees in $CACHE_ROOT/edk2, never in the repository: cold about 15 minutes of CPU
# on 2 quiet cores, seconds when nothing changed.
EDK2_BUILD_DEPS=(build-essential nasm acpica-tools uuid-dev python3-distutils dpkg-dev)

# The native host's tests and benchmark (codeisland native, scripts/native_bench.py): gcc and a
# static libc (the test programs, the static-binary refusal), dpkg-dev (dpkg-buildflags: Debian's
# compiler flags; dpkg-source for lua5.4's source), bolt-15, BOLT as the comparison, and
# qemu-user, whose plugin-enabled qemu-x86_64 replays the runs for the front-end model
# (codeisland.native.calibrate).
NATIVE_HOST_DEPS=(gcc libc6-dev dpkg-dev bolt-15 qemu-user)

install_native_host_deps() {
  DEBIAN_PACKAGES=("${NATIVE_HOST_DEPS[@]}") && install_debian_packages
}

install_edk2_build_deps() {
  ensure_deb_src
  DEBIAN_PACKAGES=("${EDK2_BUILD_DEPS[@]}") && install_debian_packages
}

build_edk2_firmware() {
  local cli=$VENV/bin/codeisland stamp
  stamp=$(cache_dir edk2)/.codeisland-bootstrap
  # the builds' own stamps make this quick; the message only when something may be built
  [ -f "$stamp" ] || say "EDK2: CodeIslandPkg (GCC5, CLANGPDB), OVMF stock + unrestricted + X64 (~15 min once)"
  run "$cli" firmware build-driver --toolchain GCC5
  run "$cli" firmware build-driver --toolchain CLANGPDB
  run "$cli" firmware build --variant stock
  run "$cli" firmware build --variant unrestricted
  run "$cli" firmware build --variant stock --platform X64
  touch "$stamp"
}

# ---- driver -------------------------------------------------------------------------------------

usage() { printf 'usage: scripts/bootstrap.sh [--tests | --list | STEP...]\n'; }

main() {
  local steps=("${STEPS[@]}") known=" ${STEPS[*]} ${TEST_STEPS[*]} "
  case "${1:-}" in
    "") ;;
    --tests) steps+=("${TEST_STEPS[@]}") ;;
    --list) printf '%s\n' "${STEPS[@]}" "${TEST_STEPS[@]}"; return 0 ;;
    -h | --help) usage; return 0 ;;
    -*) printf "bootstrap: error: no such option '%s' (%s)\n" "$1" "$(usage)" >&2; exit 2 ;;
    *) steps=("$@") ;;
  esac
  local step
  for step in "${steps[@]}"; do
    [[ $known == *" $step "* ]] || { printf "bootstrap: error: no such step '%s' (see --list)\n" "$step" >&2; exit 2; }
  done
  mkdir -p "$(dirname "$LOG")"
  : >"$LOG"
  trap 'on_failure $?' ERR
  for current_step in "${steps[@]}"; do "$current_step"; done
}

current_step=""
on_failure() {
  [ "$BASHPID" = "$$" ] || exit "$1" # a failing $(...) inside a step: its step reports it
  printf 'bootstrap: error: step %s failed (exit %s): %s (full output: %s)\n' \
    "$current_step" "$1" "$(first_error_line)" "$LOG" >&2
  exit "$1"
}

# The line of the log that says what went wrong: the first one naming an error (make's own
# "***" recap lines say nothing), else the last line.
first_error_line() {
  local lines
  lines=$(grep -v -E '^[[:space:]]*$|^make(\[[0-9]+\])?: \*\*\*' "$LOG" 2>/dev/null || true)
  { grep -i -m 1 -E 'error|^E: ' <<<"$lines" || tail -n 1 <<<"$lines"; } | cut -c1-200
}

main "$@"; exit # on one line: bash reads a script as it runs (an edit under it must not matter)
