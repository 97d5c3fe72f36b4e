#!/usr/bin/env bash
# Gateway throughput with the session in a shared store against the memory
# store, in one run: the release gateway proxying /api with the user's token,
# its session in (m) memory, (r) Redis, (p) PostgreSQL. One gateway at a
# time on the same port (signed in afresh each time); rounds interleaved
# (m r p m r p ...), medians reported. wrk on core 1, servers on core 0.
#
#   bench/store_throughput.sh [--smoke] [--duration S] [--rounds N] [--connections C]
#
# Redis and PostgreSQL are the machine's (OIDC_BFF_TEST_REDIS,
# OIDC_BFF_TEST_POSTGRES); keys and tables get a random prefix, removed at
# the end.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=10 ROUNDS=3 CONNECTIONS=64 WARMUP=2
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) DURATION=1 ROUNDS=1 CONNECTIONS=8 WARMUP=0; smoke_profile; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

need_apt wrk:wrk jq:jq curl:curl redis-cli:redis-tools psql:postgresql-client
build_bins

REDIS=${OIDC_BFF_TEST_REDIS:-redis://127.0.0.1:6379}
POSTGRES=${OIDC_BFF_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
SUFFIX=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
REDIS_PREFIX="oidc-bff-bench-$SUFFIX:"
PG_PREFIX="bench_${SUFFIX}_"
KEY="k1:$(head -c 32 /dev/urandom | base64)"

declare -A STORE=([m]="memory" [r]="$REDIS" [p]="$POSTGRES")
declare -A PREFIX=([m]="" [r]="$REDIS_PREFIX" [p]="$PG_PREFIX")
declare -A NAME=([m]="(m) memory store" [r]="(r) Redis, read cache" [p]="(p) PostgreSQL, read cache")

drop_shared() {
  redis-cli -u "$REDIS" --scan --pattern "${REDIS_PREFIX}*" | xargs -r redis-cli -u "$REDIS" del >/dev/null || true
  for t in sessions transient leases meta; do
    psql -q "$POSTGRES" -c "DROP TABLE IF EXISTS ${PG_PREFIX}$t" 2>/dev/null || true
  done
}
trap 'drop_shared; cleanup' EXIT

start_idp 86400            # tokens outlive the run: no refresh while measuring
start_upstream

GATEWAY_PID=
# run_store T -> "rps p50_ms p99_ms non2xx": a gateway on store T, signed in, measured.
run_store() {
  gateway_config "$WORK/bff.toml" 60 warn
  if [ "$1" != m ]; then
    cat >>"$WORK/bff.toml" <<TOML

[session]
store = "${STORE[$1]}"
encryption_keys = ["$KEY"]
prefix = "${PREFIX[$1]}"
TOML
  fi
  taskset -c "$SERVER_CPU" "$GATEWAY_BIN" serve --config "$WORK/bff.toml" >"$WORK/gateway-$1.out" 2>>"$WORK/gateway-$1.log" &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  local i
  for i in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$GATEWAY_URL/readyz")" = 200 ] && break
    sleep 0.1
  done
  local cookie
  cookie=$(sign_in)
  if [ "$2" -gt 0 ]; then
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$2s" -H "Cookie: $cookie" -H 'X-CSRF: 1' "$GATEWAY_URL/api/hello" >/dev/null
  fi
  local out
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -H "Cookie: $cookie" -H 'X-CSRF: 1' "$GATEWAY_URL/api/hello")
  kill "$GATEWAY_PID"; wait "$GATEWAY_PID" 2>/dev/null || true
  rm -f "$WORK/jar"
  echo "$out" >>"$WORK/wrk-$1.txt"
  echo "$out" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $5 }
    /Socket errors/ { bad += 1 }
    END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, bad }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A RPS P50 P99
for round in $(seq 1 "$ROUNDS"); do
  for t in m r p; do
    read -r rps p50 p99 bad < <(run_store "$t" "$WARMUP")
    [ "$bad" -eq 0 ] || { log "$t: $bad non-2xx answers or socket errors"; cat "$WORK/wrk-$t.txt" "$WORK/gateway-$t.log" >&2; exit 1; }
    log "round $round ${NAME[$t]}: $rps req/s, p50 $p50 ms, p99 $p99 ms"
    RPS[$t]+="$rps "; P50[$t]+="$p50 "; P99[$t]+="$p99 "
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A MRPS M50 M99
for t in m r p; do
  MRPS[$t]=$(tr ' ' '\n' <<<"${RPS[$t]}" | grep . | median)
  M50[$t]=$(tr ' ' '\n' <<<"${P50[$t]}" | grep . | median)
  M99[$t]=$(tr ' ' '\n' <<<"${P99[$t]}" | grep . | median)
done
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%.2f", x / y }'; }

echo
echo "Store throughput: $(machine); load before $load_before, after $load_after"
echo "gateway log level warn; wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency, $ROUNDS interleaved round(s), medians; wrk on core $CLIENT_CPU, servers on core $SERVER_CPU"
echo
echo "| session store | req/s | p50 | p99 | throughput against memory |"
echo "|---|---|---|---|---|"
for t in m r p; do
  echo "| ${NAME[$t]} | ${MRPS[$t]} | ${M50[$t]} ms | ${M99[$t]} ms | $(ratio "${MRPS[$t]}" "${MRPS[m]}") |"
done
