#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the
# workspace (unit, integration, doctests), the interop suite against the
# certified oidc-provider, the demo's browser test, and each benchmark once in
# smoke mode (bench/smoke.sh).
# Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (database
# `test`); with CI=true their tests fail instead of skipping when absent.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set -o pipefail
# --all-targets runs unit and integration tests and each benchmark once (smoke mode).
cargo test --workspace --all-targets 2>&1 | tee -a "$log"
cargo test --workspace --doc 2>&1 | tee -a "$log"

# The client examples check their own results (each exits non-zero on a
# wrong one). `cargo test` built them only as test executables: link the
# binaries (the libraries are already compiled).
cargo build -q --workspace --examples
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
for example in named_client typed_client client_credentials; do
  echo "== example $example"
  "$target_dir/debug/examples/$example" 2>&1 | tee -a "$log"
done

if [ -x crates/gateway/tests/browser/run.sh ]; then
  crates/gateway/tests/browser/run.sh 2>&1 | tee -a "$log"
fi

# Each benchmark once with tiny parameters on the debug build (no figures).
bench/smoke.sh 2>&1 | tee -a "$log"

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
