#!/usr/bin/env bash
# Configuration reload under load: wrk drives the proxy (/api with a
# signed-in session, as in bench/proxy.sh) while the script rewrites the
# gateway's file (adding and removing an [[api]] route) and sends SIGHUP
# every INTERVAL seconds. Reports throughput, the reloads the gateway
# logged, and non-2xx answers and socket errors, which must be zero.
#
#   bench/reload.sh [--smoke] [--duration S] [--connections C] [--interval S]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=10 CONNECTIONS=64 INTERVAL=0.5
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) DURATION=2 CONNECTIONS=8 INTERVAL=0.2; smoke_profile; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

need_apt wrk:wrk curl:curl
build_bins

start_idp 86400            # tokens outlive the run: no refresh while measuring
start_upstream
start_gateway 60 info
COOKIE=$(sign_in)
PID_GATEWAY=$(pgrep -f "oidc-bff serve --config $WORK/bff.toml" | head -1)
[ -n "$PID_GATEWAY" ] || { log "no gateway process"; exit 1; }

gateway_config "$WORK/plain.toml" 60 info
cp "$WORK/plain.toml" "$WORK/extra.toml"
cat >>"$WORK/extra.toml" <<TOML

[[api]]
path = "/extra"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
token = "user"
TOML

# Reloads until wrk is done, alternating the two files (write, then rename).
reloader() {
  local n=0 file
  while [ ! -e "$WORK/done" ]; do
    if [ $((n % 2)) -eq 0 ]; then file=extra; else file=plain; fi
    cp "$WORK/$file.toml" "$WORK/bff.toml.new" && mv "$WORK/bff.toml.new" "$WORK/bff.toml"
    kill -HUP "$PID_GATEWAY"
    n=$((n + 1))
    sleep "$INTERVAL"
  done
  echo "$n" >"$WORK/signals"
}
reloader &
RELOADER=$!

out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
  -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "$GATEWAY_URL/api/hello")
touch "$WORK/done"
wait "$RELOADER"
echo "$out" >"$WORK/wrk.txt"

# The session and the last file's routes still answer.
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "$GATEWAY_URL/api/check")
signals=$(cat "$WORK/signals")
logs=$(cat "$WORK/gateway.out" "$WORK/gateway.log")
reloaded=$(grep -c "configuration reloaded" <<<"$logs" || true)
refused=$(grep -c "configuration not reloaded" <<<"$logs" || true)
read -r rps p99 requests bad < <(echo "$out" | awk '
  function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
  /^ +99%/ { p99 = ms($2) }
  /requests in/ { n = $1 }
  /^Requests\/sec/ { rps = $2 }
  /Non-2xx/ { bad += $5 }
  /Socket errors/ { split($0, e, /[ ,]+/); for (i in e) if (e[i] ~ /^[0-9]+$/) bad += e[i] }
  END { printf "%.0f %.3f %d %d\n", rps, p99, n, bad }')

echo
echo "Reload under load: $(machine); wrk -t1 -c$CONNECTIONS -d${DURATION}s on /api, SIGHUP every ${INTERVAL}s"
echo
echo "| requests | req/s | p99 | SIGHUPs sent | reloads logged | refused | non-2xx + socket errors | session after |"
echo "|---|---|---|---|---|---|---|---|"
echo "| $requests | $rps | $p99 ms | $signals | $reloaded | $refused | $bad | $status |"
if [ "$bad" -ne 0 ] || [ "$reloaded" -eq 0 ] || [ "$refused" -ne 0 ] || [ "$status" != 200 ]; then
  log "reload under load failed"; cat "$WORK/wrk.txt" >&2; exit 1
fi
