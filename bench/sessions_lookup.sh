#!/usr/bin/env bash
# Sessions at scale in Redis and PostgreSQL: N sessions written through the
# stores (1,000,000 by default), then `load` of random sessions one at a time:
# p50/p90/p99 latency, decryption included. The machine's Redis and
# PostgreSQL (OIDC_BFF_TEST_REDIS, OIDC_BFF_TEST_POSTGRES). The sessions are
# deleted at the end unless --keep (a kept fill is reused by the next run).
#
#   bench/sessions_lookup.sh [--smoke] [--sessions N] [--lookups L] [--keep]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ARGS=(--sessions 1000000 --lookups 20000)
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) ARGS=(--sessions 2000 --lookups 500); smoke_profile; shift ;;
    --sessions) ARGS[1]=$2; shift 2 ;;
    --lookups) ARGS[3]=$2; shift 2 ;;
    --keep) EXTRA+=(--keep); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
need_apt jq:jq
log "building the lookup benchmark ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p oidc-bff-tokens --features redis,postgres --example bench_sessions_lookup
else
  cargo build -q --workspace --examples
fi
log "load before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
out=$("$TARGET_DIR/$PROFILE/examples/bench_sessions_lookup" "${ARGS[@]}" "${EXTRA[@]}")
echo
echo "Session lookup: $(machine); load after $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| store | sessions | lookups | p50 | p90 | p99 | p99.9 | miss p50 / p99 | fill rate |"
echo "|---|---|---|---|---|---|---|---|---|"
jq -r '"| \(.store) | \(.sessions) | \(.lookups) | **\(.p50_us) µs** | \(.p90_us) µs | **\(.p99_us) µs** | \(.p999_us) µs | \(.miss_p50_us) / \(.miss_p99_us) µs | \(if .fill_per_s then "\(.fill_per_s)/s" else "kept" end) |"' <<<"$out"
