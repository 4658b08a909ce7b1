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

install_debian_packages
install_python_packages
build_everything
log "ready: activate with 'source .venv/bin/activate' or call .venv/bin/codeisland"
