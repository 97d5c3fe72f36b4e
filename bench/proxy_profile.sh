#!/usr/bin/env bash
# Instructions and heap allocations per proxied request, counted rather than
# timed, so the figures repeat on a busy machine: the release gateway runs
# under valgrind's callgrind; after a warm-up its counters are zeroed, N
# requests go through /api one after another on one keep-alive connection
# (a signed-in session, the user's token attached), the counters are dumped
# and divided by N. Allocations are the calls of Rust's global allocator
# entry points (`__rust_alloc`, `__rust_alloc_zeroed`, `__rust_realloc`)
# anywhere in the gateway process: server, session, token, proxy, client.
#
#   bench/proxy_profile.sh [--smoke] [--requests N] [--gateway BIN] [--keep DIR] [--log-level L] [--reference]
#
# --gateway profiles another build of the gateway (e.g. an older commit's);
# --keep copies the callgrind dump to DIR for callgrind_annotate
# (`callgrind_annotate --inclusive=yes DIR/callgrind.out.*`);
# --log-level sets the gateway's `[log] level` (default `info`, the
# gateway's own default: one access log line per request; `warn` leaves it out);
# --reference profiles bench/proxy.sh's reference proxy (row d,
# examples/reference_proxy.rs) instead of the gateway, with the same requests
# (a session cookie of the same shape, which it drops; no session behind it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

REQUESTS=2000 WARMUP=200 KEEP="" OTHER_BIN="" LOG_LEVEL=info REFERENCE=
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) REQUESTS=20 WARMUP=5; smoke_profile; shift ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --gateway) OTHER_BIN=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --log-level) LOG_LEVEL=$2; shift 2 ;;
    --reference) REFERENCE=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

need_apt valgrind:valgrind curl:curl jq:jq
build_bins
[ -n "$OTHER_BIN" ] && GATEWAY_BIN=$OTHER_BIN

if [ -n "$REFERENCE" ]; then
  build_reference
  start_upstream
  BASE_URL=http://127.0.0.1:$REFERENCE_PORT
  spawn reference valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$REFERENCE_BIN" --listen "127.0.0.1:$REFERENCE_PORT" --upstream "127.0.0.1:$UPSTREAM_PORT"
  for _ in $(seq 1 600); do
    curl -s -o /dev/null "$BASE_URL/" && break
    sleep 0.2
  done
  # The shape of a real session cookie (43 characters of base64url).
  COOKIE="__Host-bff=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
else
  start_idp 86400            # tokens outlive the run: no refresh while counting
  start_upstream
  gateway_config "$WORK/bff.toml" 60 "$LOG_LEVEL"
  spawn gateway valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$GATEWAY_BIN" serve --config "$WORK/bff.toml"
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$GATEWAY_URL/readyz")" = 200 ] && break
    sleep 0.2
  done
  COOKIE=$(sign_in)
  BASE_URL=$GATEWAY_URL
fi
answer=$(curl -s -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "$BASE_URL/api/check")
[ "$answer" = '{"ok":true,"bearer":true}' ] || { log "unexpected answer through the proxy: $answer"; exit 1; }

# N requests on one connection (curl's URL globbing keeps it alive).
requests() {
  curl -sf -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "$BASE_URL/api/hello?n=[1-$1]" >/dev/null
}
requests "$WARMUP"
PID=$(pgrep -f "callgrind-out-file=$WORK/callgrind.out" | head -1)
callgrind_control --zero "$PID" >/dev/null
requests "$REQUESTS"
callgrind_control --dump "$PID" >/dev/null
sleep 1
DUMP=$(ls -t "$WORK"/callgrind.out* | head -1)
if [ -n "$KEEP" ]; then
  mkdir -p "$KEEP" && cp "$DUMP" "$KEEP/"
  log "callgrind dump kept: $KEEP/$(basename "$DUMP")"
fi

# Total instructions, and calls per callee name (names are compressed: the
# first `cfn=(id) name` defines an id, later ones repeat only the id; `fn`
# and `cfn` share the ids). Current Rust (1.95 here) names the allocator shims
# `__rustc::__rust_alloc` (v0 mangling); older ones `__rust_alloc`. Code
# compiled into the crate that declares the `#[global_allocator]` (the
# reference proxy is one file) may call the allocator without the shim, so
# mimalloc's entry points (`mi_malloc_aligned`, `mi_zalloc_aligned`,
# `mi_realloc_aligned`, what its `GlobalAlloc` calls) are counted as well,
# and the larger count is the figure.
awk -v n="$REQUESTS" '
  function shim(s) { sub(/^.*::/, "", s); return s }
  /^(fn|cfn)=\([0-9]+\) / { id = substr($1, index($1, "(")); name[id] = shim($2) }
  /^cfn=/ { id = substr($1, index($1, "(")); callee = name[id] }
  /^calls=/ { split($1, c, "="); calls[callee] += c[2] }
  /^summary:/ || /^totals:/ { total = $2 }
  END {
    allocs = calls["__rust_alloc"] + calls["__rust_alloc_zeroed"] + calls["__rust_realloc"]
    frees = calls["__rust_dealloc"]
    mi = calls["mi_malloc_aligned"] + calls["mi_zalloc_aligned"] + calls["mi_realloc_aligned"]
    printf "requests: %d\n", n
    printf "instructions per proxied request: %.0f\n", total / n
    printf "allocations per proxied request: %.1f (alloc %.1f, alloc_zeroed %.1f, realloc %.1f; deallocations %.1f)\n", \
      (mi > allocs ? mi : allocs) / n, calls["__rust_alloc"] / n, calls["__rust_alloc_zeroed"] / n, \
      calls["__rust_realloc"] / n, frees / n
    printf "allocator calls per proxied request: through the shims %.1f, at mimalloc %.1f\n", allocs / n, mi / n
  }' "$DUMP"
