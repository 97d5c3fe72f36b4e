#!/usr/bin/env bash
# Refresh storm: N concurrent requests through the gateway's /api proxy on a
# session whose access token has expired. Reports the wall time until all
# are answered, how many refresh grants reached the IdP (should be one per
# storm), and for comparison the same burst on a valid token and a single
# request that has to refresh (one refresh's own latency, end to end).
#
#   bench/refresh_storm.sh [--smoke] [-n N] [--rounds R]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

N=1000 ROUNDS=3 SINGLES=3 LIFETIME=5
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) N=50 ROUNDS=1 SINGLES=1 LIFETIME=3; smoke_profile; shift ;;
    -n) N=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

need_apt jq:jq curl:curl
build_bins
start_idp "$LIFETIME"         # short-lived access tokens
start_upstream
start_gateway 1               # renew 1 s before expiry
COOKIE=$(sign_in)
URL_API="$GATEWAY_URL/api/storm"

# storm N -> JSON line; fails unless every answer is 200
storm() {
  local out
  out=$(taskset -c "$CLIENT_CPU" "$HARNESS" storm --url "$URL_API" --cookie "$COOKIE" -n "$1")
  [ "$(jq -r '.statuses["200"] // 0' <<<"$out")" = "$1" ] || { log "not all answers were 200: $out"; exit 1; }
  echo "$out"
}
expire() { sleep $((LIFETIME + 1)); }   # expires_at has whole seconds
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

STORM_WALL=() STORM_P50=() BURST_WALL=() REFRESHES=() SINGLE=()
log "load before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  expire
  before=$(idp_counter refresh_grants)
  out=$(storm "$N")
  refreshes=$(( $(idp_counter refresh_grants) - before ))
  # The same burst right away, on the freshly renewed (valid) token.
  before=$(idp_counter refresh_attempts)
  burst=$(storm "$N")
  [ "$(( $(idp_counter refresh_attempts) - before ))" = 0 ] || log "warning: a refresh happened during the valid-token burst"
  log "round $round: storm $(jq -c . <<<"$out"), refreshes $refreshes; valid-token burst $(jq -r .wall_ms <<<"$burst") ms"
  STORM_WALL+=("$(jq -r .wall_ms <<<"$out")"); STORM_P50+=("$(jq -r .p50_ms <<<"$out")")
  BURST_WALL+=("$(jq -r .wall_ms <<<"$burst")"); REFRESHES+=("$refreshes")
done
for i in $(seq 1 "$SINGLES"); do
  expire
  before=$(idp_counter refresh_grants)
  out=$(storm 1)
  [ "$(( $(idp_counter refresh_grants) - before ))" = 1 ] || log "warning: the single request did not refresh exactly once"
  SINGLE+=("$(jq -r .wall_ms <<<"$out")")
done
# One request on a valid token (no refresh), for reference.
valid_single=$(storm 1 | jq -r .wall_ms)

m() { printf '%s\n' "$@" | median; }
storm_ms=$(m "${STORM_WALL[@]}"); single_ms=$(m "${SINGLE[@]}"); burst_ms=$(m "${BURST_WALL[@]}")
echo
echo "Refresh storm: $(machine); $N requests on $N connections opened beforehand; medians of $ROUNDS storm(s) and $SINGLES single refresh(es)"
echo
echo "| case | wall time | refresh grants at the IdP |"
echo "|---|---|---|"
echo "| $N concurrent requests, token expired (storm) | $storm_ms ms (first answer → p50 $(m "${STORM_P50[@]}") ms) | ${REFRESHES[*]} (per storm) |"
echo "| $N concurrent requests, token valid (same burst, no refresh) | $burst_ms ms | 0 |"
echo "| 1 request, token expired (one refresh, end to end) | $single_ms ms | 1 |"
echo "| 1 request, token valid | $valid_single ms | 0 |"
echo
awk -v s="$storm_ms" -v one="$single_ms" -v b="$burst_ms" 'BEGIN {
  printf "storm / one refresh = %.1f; storm − valid-token burst = %+.1f ms (what the shared refresh adds to the burst)\n", s / one, s - b }'
for r in "${REFRESHES[@]}"; do [ "$r" = 1 ] || { log "a storm caused $r refresh grants (expected 1)"; exit 1; }; done
