#!/usr/bin/env bash
# The main job: set up if needed, then an emulated end-to-end relocation on a built-in workload.
# Extra arguments go to `codeisland emulate` (see `codeisland emulate --help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/codeisland" emulate "$@"
