#!/usr/bin/env bash
# Sessions at scale, in memory: the gateway (in-process, memory store) with
# N live sessions. One real sign-in at the dev IdP gives the template record
# (real RS256 tokens, the IdP's claims); N deep copies go into the store.
# Reports resident memory per session, and per session beyond the token bytes
# (budget: under 2 KB).
#
#   bench/sessions_memory.sh [--smoke] [--sessions N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

N=100000
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) N=5000; smoke_profile; shift ;;
    --sessions) N=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
need_apt jq:jq
build_bins
out=$(taskset -c "$SERVER_CPU" "$HARNESS" sessions-memory --sessions "$N")
[ "$(jq -r .api_status_after <<<"$out")" = 200 ] || { log "the signed-in session stopped working: $out"; exit 1; }
echo
echo "Sessions in memory: $(machine)"
echo
echo "| sessions | RSS before | RSS after | per session | token bytes per session | per session beyond the tokens | budget |"
echo "|---|---|---|---|---|---|---|"
jq -r '"| \(.sessions) | \(.rss_before_kib) KiB | \(.rss_after_kib) KiB | \(.bytes_per_session) B | \(.token_bytes_per_session) B | **\(.overhead_bytes_per_session) B** | < 2048 B |"' <<<"$out"
