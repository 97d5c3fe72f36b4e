#!/usr/bin/env bash
# Proxy throughput and latency, side by side in one run:
#   (a) the upstream directly, (b) nginx as a plain reverse proxy to it,
#   (c) the oidc-bff gateway proxying /api with a signed-in session, the
#       user's access token attached,
#   (d) the reference proxy (crates/gateway/examples/reference_proxy.rs):
#       the smallest proxy on hyper and hyper-util's pooled client, which
#       only rewrites the URI, drops the cookie and inserts a ~900-byte
#       bearer. The floor "on hyper" for (c), measured in the same run.
# wrk runs on core 1, every server on core 0. Rounds are interleaved
# (a b c d a b c d ...) and the median of each target is reported.
#
#   bench/proxy.sh [--smoke] [--duration S] [--rounds N] [--connections C] [--log-level L]
#
# The gateway logs every request at `info` (its default) to a file;
# --log-level warn shows what that costs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=10 ROUNDS=3 CONNECTIONS=64 LOW_DURATION=5 WARMUP=2 LOG_LEVEL=info
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) DURATION=1 ROUNDS=1 CONNECTIONS=8 LOW_DURATION=1 WARMUP=0; smoke_profile; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --log-level) LOG_LEVEL=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

need_apt wrk:wrk nginx:nginx-light jq:jq curl:curl
build_bins
build_reference

start_idp 86400            # tokens outlive the run: no refresh while measuring
start_upstream

cat >"$WORK/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log $WORK/nginx-access.log;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  fastcgi_temp_path $WORK/nginx-fastcgi;
  uwsgi_temp_path $WORK/nginx-uwsgi;
  scgi_temp_path $WORK/nginx-scgi;
  upstream api { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
spawn nginx nginx -c "$WORK/nginx.conf" -p "$WORK"
wait_http "http://127.0.0.1:$NGINX_PORT/"

start_reference
start_gateway 60 "$LOG_LEVEL"
COOKIE=$(sign_in)
# The gateway attaches the token: the upstream reports a bearer header.
answer=$(curl -s -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "$GATEWAY_URL/api/check")
[ "$answer" = '{"ok":true,"bearer":true}' ] || { log "unexpected answer through the gateway: $answer"; exit 1; }
answer=$(curl -s -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "http://127.0.0.1:$REFERENCE_PORT/api/check")
[ "$answer" = '{"ok":true,"bearer":true}' ] || { log "unexpected answer through the reference proxy: $answer"; exit 1; }

declare -A URL=(
  [a]="http://127.0.0.1:$UPSTREAM_PORT/api/hello"
  [b]="http://127.0.0.1:$NGINX_PORT/api/hello"
  [c]="$GATEWAY_URL/api/hello"
  [d]="http://127.0.0.1:$REFERENCE_PORT/api/hello"
)
declare -A NAME=([a]="(a) upstream directly" [b]="(b) nginx reverse proxy" [c]="(c) oidc-bff gateway"
  [d]="(d) reference proxy on hyper")

# CPU time (user + system) of a process, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
PID_UPSTREAM=$(pgrep -f "examples/bench upstream --listen 127.0.0.1:$UPSTREAM_PORT" | head -1)
PID_NGINX=$(pgrep -f "nginx: worker process" -P "$(cat "$WORK/nginx.pid")" | head -1)
PID_GATEWAY=$(pgrep -f "oidc-bff serve --config $WORK/bff.toml" | head -1)
PID_REFERENCE=$(pgrep -f "reference_proxy --listen 127.0.0.1:$REFERENCE_PORT" | head -1)
declare -A PID_PROXY=([a]="" [b]="$PID_NGINX" [c]="$PID_GATEWAY" [d]="$PID_REFERENCE")
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# run_wrk TARGET CONNECTIONS SECONDS
#   -> "rps p50_ms p99_ms non2xx proxy_cpu_us_per_request upstream_cpu_us_per_request"
run_wrk() {
  local out proxy=${PID_PROXY[$1]} p0=0 p1=0 u0 u1
  [ -n "$proxy" ] && p0=$(ticks "$proxy")
  u0=$(ticks "$PID_UPSTREAM")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$2" -d"${3}s" --latency \
    -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "${URL[$1]}")
  [ -n "$proxy" ] && p1=$(ticks "$proxy")
  u1=$(ticks "$PID_UPSTREAM")
  echo "$out" >>"$WORK/wrk-$1.txt"
  echo "$out" | awk -v pt=$(( (p1 - p0) * TICK_US )) -v ut=$(( (u1 - u0) * TICK_US )) '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /requests in/ { n = $1 }
    /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $5 }
    /Socket errors/ { bad += 1 }
    END { printf "%.0f %.3f %.3f %d %.1f %.1f\n", rps, p50, p99, bad, pt / n, ut / n }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

refresh_before=$(idp_counter refresh_attempts)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "load before measuring: $load_before"
if [ "$WARMUP" -gt 0 ]; then
  for t in a b c d; do run_wrk "$t" "$CONNECTIONS" "$WARMUP" >/dev/null; done
fi
declare -A RPS P50 P99 PCPU UCPU
for round in $(seq 1 "$ROUNDS"); do
  for t in a b c d; do
    read -r rps p50 p99 bad pcpu ucpu < <(run_wrk "$t" "$CONNECTIONS" "$DURATION")
    [ "$bad" -eq 0 ] || { log "$t: $bad non-2xx answers or socket errors"; cat "$WORK/wrk-$t.txt" >&2; exit 1; }
    log "round $round ${NAME[$t]}: $rps req/s, p50 $p50 ms, p99 $p99 ms, CPU per request: proxy $pcpu µs, upstream $ucpu µs"
    RPS[$t]+="$rps "; P50[$t]+="$p50 "; P99[$t]+="$p99 "; PCPU[$t]+="$pcpu "; UCPU[$t]+="$ucpu "
  done
done
# Unloaded: one connection, one request at a time.
declare -A L50 L99
for t in a b c d; do
  read -r _ p50 p99 bad _ _ < <(run_wrk "$t" 1 "$LOW_DURATION")
  [ "$bad" -eq 0 ] || { log "$t: $bad non-2xx answers (1 connection)"; exit 1; }
  L50[$t]=$p50; L99[$t]=$p99
done
refreshes=$(( $(idp_counter refresh_attempts) - refresh_before ))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A M50 M99 MRPS MPCPU MUCPU
for t in a b c d; do
  MRPS[$t]=$(tr ' ' '\n' <<<"${RPS[$t]}" | grep . | median)
  M50[$t]=$(tr ' ' '\n' <<<"${P50[$t]}" | grep . | median)
  M99[$t]=$(tr ' ' '\n' <<<"${P99[$t]}" | grep . | median)
  MPCPU[$t]=$(tr ' ' '\n' <<<"${PCPU[$t]}" | grep . | median)
  MUCPU[$t]=$(tr ' ' '\n' <<<"${UCPU[$t]}" | grep . | median)
done
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%.2f", x / y }'; }
diff_ms() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%+.3f", x - y }'; }

echo
echo "Proxy benchmark: $(machine); load before $load_before, after $load_after"
echo "gateway log level: $LOG_LEVEL; wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency, $ROUNDS interleaved round(s), medians; wrk on core $CLIENT_CPU, servers on core $SERVER_CPU"
echo
echo "| target | req/s | p50 | p99 | p50 at 1 connection | p99 at 1 connection | CPU per request: proxy | CPU per request: upstream |"
echo "|---|---|---|---|---|---|---|---|"
for t in a b c d; do
  proxy_cpu="${MPCPU[$t]} µs"; [ "$t" = a ] && proxy_cpu="–"
  echo "| ${NAME[$t]} | ${MRPS[$t]} | ${M50[$t]} ms | ${M99[$t]} ms | ${L50[$t]} ms | ${L99[$t]} ms | $proxy_cpu | ${MUCPU[$t]} µs |"
done
echo
echo "| ratio | value | budget |"
echo "|---|---|---|"
echo "| throughput c/a | $(ratio "${MRPS[c]}" "${MRPS[a]}") | – |"
echo "| throughput c/b | $(ratio "${MRPS[c]}" "${MRPS[b]}") | ≥ 0.85 |"
echo "| throughput d/b (the reference proxy on hyper against nginx) | $(ratio "${MRPS[d]}" "${MRPS[b]}") | – |"
echo "| throughput c/d (the gateway against the reference proxy) | $(ratio "${MRPS[c]}" "${MRPS[d]}") | – |"
echo "| CPU per request c/b | $(ratio "${MPCPU[c]}" "${MPCPU[b]}") | ≤ 1 |"
echo "| CPU per request d/b | $(ratio "${MPCPU[d]}" "${MPCPU[b]}") | – |"
echo "| p99 added by the gateway (c − a), $CONNECTIONS connections | $(diff_ms "${M99[c]}" "${M99[a]}") ms | < 1 ms |"
echo "| p99 added by nginx (b − a), $CONNECTIONS connections | $(diff_ms "${M99[b]}" "${M99[a]}") ms | – |"
echo "| p50 added by the gateway (c − a), 1 connection | $(diff_ms "${L50[c]}" "${L50[a]}") ms | – |"
echo "| p50 added by nginx (b − a), 1 connection | $(diff_ms "${L50[b]}" "${L50[a]}") ms | – |"
echo "| p50 added by the reference proxy (d − a), 1 connection | $(diff_ms "${L50[d]}" "${L50[a]}") ms | – |"
echo "| p50 at 1 connection, gateway − nginx (c − b) | $(diff_ms "${L50[c]}" "${L50[b]}") ms | ≤ +0.05 ms |"
echo "| p99 at 1 connection, gateway − nginx (c − b) | $(diff_ms "${L99[c]}" "${L99[b]}") ms | ≤ +0.05 ms |"
echo
echo "Per-round req/s: a: ${RPS[a]}| b: ${RPS[b]}| c: ${RPS[c]}| d: ${RPS[d]}"
echo "Refresh grants requested at the IdP during the measurement: $refreshes"
