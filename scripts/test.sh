#!/usr/bin/env bash
# All tests: set up if needed, then native engine tests (ASan/UBSan + libFuzzer), lint, and pytest.
# With CI=true a skipped test or an empty test run is a failure (tests/conftest.py).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh" --tests
cd "$root"
export PATH="$root/.venv/bin:$PATH"
make -s test
