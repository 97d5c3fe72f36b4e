#!/usr/bin/env bash
# Login flood (issue 15, defect 1): N requests to /bff/login on the real
# gateway (memory store), from wrk on loopback. Reports the request rate,
# the gateway's resident memory before and after (a started sign-in stores
# nothing, so it must stay flat), and whether a real user signs in right
# after the flood.
#
#   bench/login_flood.sh [--smoke] [-n N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

N=200000 CONNECTIONS=64 THREADS=2
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) N=2000 CONNECTIONS=8; smoke_profile; shift ;;
    -n) N=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

need_apt jq:jq curl:curl wrk:wrk
build_bins
start_idp 300
start_upstream
start_gateway 60 warn
GATEWAY_PID=${PIDS[-1]}
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$GATEWAY_PID/status"; }

# Warm up (discovery fetched, allocator settled), then measure.
sign_in >/dev/null
rss_before=$(rss_kib)

# Each wrk thread stops after its share of the N requests.
cat >"$WORK/flood.lua" <<LUA
local count = 0
local limit = $(( N / THREADS ))
response = function(status, headers, body)
  count = count + 1
  if count >= limit then wrk.thread:stop() end
end
LUA
log "flooding /bff/login with $N requests"
out=$(taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d600s --latency \
  -s "$WORK/flood.lua" "$GATEWAY_URL/bff/login?returnUrl=%2Fapp")
requests=$(awk '/requests in/ { print $1 }' <<<"$out")
seconds=$(awk '/requests in/ { sub(/s,/, "", $4); print $4 }' <<<"$out")
errors=$(awk '/Non-2xx or 3xx/ { print $5 }' <<<"$out")
rss_after=$(rss_kib)

# A real user right after.
start=$(date +%s%N)
if cookie=$(sign_in); then signed_in=yes; else signed_in=no; fi
sign_in_ms=$(( ($(date +%s%N) - start) / 1000000 ))
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-csrf: 1' -H "cookie: $cookie" "$GATEWAY_URL/bff/user" || true)

echo
echo "Login flood: $(machine); wrk -t$THREADS -c$CONNECTIONS on loopback, gateway on core $SERVER_CPU"
echo
echo "| figure | value |"
echo "|---|---|"
echo "| /bff/login requests answered | $requests in $seconds s (${errors:-0} not 2xx/3xx) |"
echo "| gateway RSS before → after | $rss_before KiB → $rss_after KiB |"
echo "| a real user's sign-in right after | $signed_in in $sign_in_ms ms; /bff/user → $status |"
[ "$signed_in" = yes ] && [ "$status" = 200 ] || { log "the real user could not sign in"; exit 1; }
[ "${errors:-0}" = 0 ] || { log "some logins were refused"; exit 1; }
