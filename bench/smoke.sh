#!/usr/bin/env bash
# Every benchmark once in smoke mode (tiny parameters, a few seconds each):
# checks that they still build and run. No figure is asserted.
set -euo pipefail
cd "$(dirname "$0")"
for b in hot_path proxy reload refresh_storm sessions_memory sessions_lookup startup login_flood; do
  echo "== bench/$b.sh --smoke"
  start=$(date +%s)
  "./$b.sh" --smoke >/dev/null
  echo "   ok ($(( $(date +%s) - start )) s)"
done
