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

# Each wrk thread stops after its share of the N requests and leaves a mark;
# the wall time runs until every thread has left its mark (wrk itself would
# only return at the end of -d).
cat >"$WORK/flood.lua" <<LUA
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local count = 0
local limit = $(( N / THREADS ))
function response(status, headers, body)
  count = count + 1
  if count == limit then
    local f = io.open("$WORK/done." .. id, "w")
    f:write("done")
    f:close()
    wrk.thread:stop()
  end
end
LUA
log "flooding /bff/login with $N requests (gateway pid $GATEWAY_PID, $(cat "/proc/$GATEWAY_PID/comm"))"
start=$(date +%s%N)
taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d3600s \
  -s "$WORK/flood.lua" "$GATEWAY_URL/bff/login?returnUrl=%2Fapp" >"$WORK/wrk.out" 2>&1 &
WRK_PID=$!
while [ "$(find "$WORK" -maxdepth 1 -name 'done.*' | wc -l)" -lt "$THREADS" ]; do
  kill -0 "$WRK_PID" 2>/dev/null || { log "wrk stopped early"; cat "$WORK/wrk.out" >&2; exit 1; }
  sleep 0.05
done
wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
kill -INT "$WRK_PID"; wait "$WRK_PID" || true
out=$(cat "$WORK/wrk.out")
requests=$(awk '/requests in/ { sub(/,$/, "", $1); print $1 }' <<<"$out")
errors=$(awk '/Non-2xx or 3xx/ { print $5 }' <<<"$out")
rate=$(awk -v n="$N" -v ms="$wall_ms" 'BEGIN { printf "%.0f", n * 1000 / ms }')
rss_after=$(rss_kib)

# A real user right after.
start=$(date +%s%N)
if cookie=$(sign_in); then signed_in=yes; else signed_in=no; fi
sign_in_ms=$(( ($(date +%s%N) - start) / 1000000 ))
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-csrf: 1' -H "cookie: $cookie" "$GATEWAY_URL/bff/user" || true)

echo
echo "Login flood: $(machine); $PROFILE build; wrk -t$THREADS -c$CONNECTIONS on loopback, gateway on core $SERVER_CPU"
echo
echo "| figure | value |"
echo "|---|---|"
echo "| /bff/login requests answered | $N in $((wall_ms / 1000)) s, $rate/s (wrk counted $requests; ${errors:-0} not 2xx/3xx) |"
echo "| gateway RSS before → after | $rss_before KiB → $rss_after KiB |"
echo "| a real user's sign-in right after | $signed_in in $sign_in_ms ms; /bff/user → $status |"
[ "$signed_in" = yes ] && [ "$status" = 200 ] || { log "the real user could not sign in"; exit 1; }
[ "${errors:-0}" = 0 ] || { log "some logins were refused"; exit 1; }
