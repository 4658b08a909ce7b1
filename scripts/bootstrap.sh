#!/usr/bin/env bash
# Set up everything codeisland needs on a Debian 12 machine, then build every part.
# Idempotent: a second run only checks and rebuilds what changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DEBIAN_PACKAGES=(clang lld llvm libclang-rt-14-dev gnu-efi qemu-system-x86 ovmf mtools dosfstools binutils make python3 python3-venv python3-pip)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_packages() {
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
  fi
  local stamp=.venv/.codeisland-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log "installing the codeisland package with its test extras into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
  fi
}

build_everything() {
  log "building the SMM driver, target app, workloads and native libraries"
  make -s build
}

# The Linux guest of `codeisland qemu run --guest linux`: Debian's current kernel (the image that
# linux-image-amd64 depends on) and busybox-static, downloaded with apt and unpacked without installing,
# cached outside the repo. Nothing here is committed.
LINUX_GUEST_CACHE=${CODEISLAND_LINUX_CACHE:-/var/cache/codeisland/linux}
fetch_linux_guest() {
  local cache=$LINUX_GUEST_CACHE
  mkdir -p "$cache"
  local kpkg
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9.]*-[0-9]*-amd64\)$/\1/p' | head -n1)
  if [ -z "$kpkg" ]; then
    log "cannot find Debian's current kernel package (apt-cache depends linux-image-amd64)"; return 1
  fi
  if [ ! -f "$cache/vmlinuz" ] || [ "$(cat "$cache/kernel-package" 2>/dev/null)" != "$kpkg" ]; then
    log "fetching $kpkg into $cache (download only, no install)"
    (cd "$cache" && rm -f ./"$kpkg"_*.deb && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >/dev/null)
    dpkg-deb --fsys-tarfile "$cache/$kpkg"_*.deb | tar -x -O --wildcards './boot/vmlinuz-*' >"$cache/vmlinuz.tmp"
    mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
    rm -f "$cache/$kpkg"_*.deb
    echo "$kpkg" >"$cache/kernel-package"
  fi
  if [ ! -x "$cache/busybox" ]; then
    log "fetching busybox-static into $cache"
    (cd "$cache" && rm -f busybox-static_*.deb && apt-get download -q -o APT::Sandbox::User=root busybox-static >/dev/null)
    dpkg-deb --fsys-tarfile "$cache"/busybox-static_*.deb | tar -x -O ./bin/busybox >"$cache/busybox.tmp"
    chmod 755 "$cache/busybox.tmp" && mv "$cache/busybox.tmp" "$cache/busybox"
    rm -f "$cache"/busybox-static_*.deb
  fi
}

install_debian_packages
fetch_linux_guest
install_python_packages
build_everything
log "ready: activate with 'source .venv/bin/activate' or call .venv/bin/codeisland"
