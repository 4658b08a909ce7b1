#!/usr/bin/env bash
# All tests: set up if needed, then native engine tests (ASan/UBSan), lint, and pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
make -s test
