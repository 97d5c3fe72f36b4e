#!/usr/bin/env bash
# Start-up: time from spawning `oidc-bff serve` to its port accepting and to
# /readyz answering 200 (discovery loaded from the dev IdP, store answering),
# over RUNS starts; and the size of the release binary, as built and stripped.
#
#   bench/startup.sh [--smoke] [--runs N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RUNS=30
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) RUNS=3; smoke_profile; shift ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
need_apt jq:jq curl:curl
build_bins
start_idp 3600
start_upstream
gateway_config "$WORK/bff.toml" 60 warn
out=$(taskset -c "$CLIENT_CPU" "$HARNESS" startup --bin "$GATEWAY_BIN" --config "$WORK/bff.toml" \
  --url "$GATEWAY_URL" --runs "$RUNS")
strip -o "$WORK/oidc-bff.stripped" "$GATEWAY_BIN"
size=$(stat -c %s "$GATEWAY_BIN"); stripped=$(stat -c %s "$WORK/oidc-bff.stripped")
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo
echo "Start-up: $(machine); $RUNS starts; harness and gateway on core $CLIENT_CPU"
echo
echo "| measure | min | median | max |"
echo "|---|---|---|---|"
jq -r '"| spawn → port accepts connections | \(.listening.min_ms) ms | \(.listening.median_ms) ms | \(.listening.max_ms) ms |",
       "| spawn → /readyz 200 | \(.ready.min_ms) ms | \(.ready.median_ms) ms | \(.ready.max_ms) ms |"' <<<"$out"
echo
echo "| binary | size |"
echo "|---|---|"
echo "| target/$PROFILE/oidc-bff (as built) | $(mib "$size") ($size bytes) |"
echo "| stripped (strip) | $(mib "$stripped") ($stripped bytes) |"
