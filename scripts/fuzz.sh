#!/usr/bin/env bash
# Builds the fuzz targets under fuzz/ and runs each for a while.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default 15 s, all targets)
#
# Stable toolchain, libFuzzer through cargo-fuzz without a sanitizer (see
# docs/SECURITY.md, "Fuzzing", for why). Installs the pinned cargo-fuzz when
# it is missing. Fails when a target crashes, leaks past the memory limit or
# spends more than 10 s on one input; the input is then in
# fuzz/artifacts/<target>/. Prints executions, corpus size and the result of
# each target.
#
# FUZZ_TARGET_DIR: where the targets are built (default target/fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
secs="${1:-15}"
shift || true

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
# Coverage instrumentation is stable rustc; only the sanitizers are not, and
# none is used (--sanitizer none). -a: debug assertions and overflow checks,
# so an arithmetic overflow on hostile input is a crash, not a wrap-around.
flags=(--sanitizer none -a)

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - start )) s"

summary=$(mktemp)
log=$(mktemp)
trap 'rm -f "$summary" "$log"' EXIT
failed=0
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  seeds="fuzz/seeds/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  dirs=("$corpus")
  [ -d "$seeds" ] && dirs+=("$seeds")
  echo "== fuzz $target (${secs} s)"
  status=ok
  if ! cargo fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
      -print_final_stats=1 >"$log" 2>&1; then
    status=FAILED
    failed=1
    tail -n 60 "$log"
  fi
  execs=$(awk '/^stat::number_of_executed_units:/ {s+=$2} END {print s+0}' "$log")
  rss=$(awk '/^stat::peak_rss_mb:/ {if ($2>m) m=$2} END {print m+0}' "$log")
  files=$(find "$corpus" -type f | wc -l)
  printf '%-16s %-7s %12s execs %7s corpus files %6s MB peak RSS\n' \
    "$target" "$status" "$execs" "$files" "$rss" | tee -a "$summary"
done

echo
echo "fuzz summary (${secs} s per target, $(( $(date +%s) - start )) s in all):"
cat "$summary"
exit "$failed"
