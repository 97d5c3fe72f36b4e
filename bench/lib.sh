# Shared helpers of the benchmark scripts (sourced, not run).
# shellcheck shell=bash
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# Measurements use the release build. Smoke runs (--smoke) only check that a
# benchmark still works, so they use the debug build the test suite already
# made: CI pays for no release build. A script's --smoke sets PROFILE=debug.
PROFILE=release
GATEWAY_BIN=$TARGET_DIR/release/oidc-bff
HARNESS=$TARGET_DIR/release/examples/bench
# bench/proxy.sh's row (d): the minimal proxy on hyper (examples/reference_proxy.rs).
REFERENCE_BIN=$TARGET_DIR/release/examples/reference_proxy
# Fixed loopback ports; move them with BENCH_PORT_BASE if taken.
PORT_BASE=${BENCH_PORT_BASE:-18400}
UPSTREAM_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
GATEWAY_PORT=$((PORT_BASE + 3))
IDP_PORT=$((PORT_BASE + 4))
IDP_CONTROL_PORT=$((PORT_BASE + 5))
REFERENCE_PORT=$((PORT_BASE + 6))
GATEWAY_URL=http://127.0.0.1:$GATEWAY_PORT
# Servers on core 0, load generators on core 1 (a 2-core machine).
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/oidc-bff-bench.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "[bench] $*" >&2; }

# Installs Debian packages for missing commands: need_apt CMD:PKG ...
need_apt() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Switches to the debug build (smoke runs): smoke_profile
smoke_profile() {
  PROFILE=debug
  GATEWAY_BIN=$TARGET_DIR/debug/oidc-bff
  HARNESS=$TARGET_DIR/debug/examples/bench
  REFERENCE_BIN=$TARGET_DIR/debug/examples/reference_proxy
}

# The gateway and the harness, in $PROFILE. The debug build takes every
# workspace target, so its features match the test suite's and the build is
# already there after `cargo test --workspace --all-targets`.
build_bins() {
  if [ "$PROFILE" = release ]; then
    log "building the release gateway and the harness"
    cargo build --release -q -p oidc-bff-gateway --bin oidc-bff --example bench
  else
    log "building the debug gateway and the harness (smoke run)"
    cargo build -q --workspace --bins --examples
  fi
}

# The reference proxy of bench/proxy.sh, in $PROFILE (the debug build of
# smoke runs is already there: build_bins takes every example).
build_reference() {
  if [ "$PROFILE" = release ]; then
    log "building the reference proxy"
    cargo build --release -q -p oidc-bff-gateway --example reference_proxy
  fi
}

# Starts the reference proxy in front of the upstream.
start_reference() {
  spawn reference "$REFERENCE_BIN" --listen "127.0.0.1:$REFERENCE_PORT" \
    --upstream "127.0.0.1:$UPSTREAM_PORT"
  wait_http "http://127.0.0.1:$REFERENCE_PORT/"
}

# Runs a server in the background on the server core: spawn NAME CMD...
spawn() {
  local name=$1; shift
  taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PIDS+=($!)
}

# Waits until URL answers (any HTTP status): wait_http URL
wait_http() {
  local i
  for i in $(seq 1 300); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  log "no answer from $1"; return 1
}

# Starts the dev IdP (access tokens live $1 seconds).
start_idp() {
  spawn idp "$HARNESS" idp --port "$IDP_PORT" --control-port "$IDP_CONTROL_PORT" \
    --public-url "$GATEWAY_URL" --lifetime "$1"
  wait_http "http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration"
}

# The IdP's counter $1 (e.g. refresh_grants).
idp_counter() {
  curl -s "http://127.0.0.1:$IDP_CONTROL_PORT/counters" | jq -r ".$1"
}

start_upstream() {
  spawn upstream "$HARNESS" upstream --listen "127.0.0.1:$UPSTREAM_PORT"
  wait_http "http://127.0.0.1:$UPSTREAM_PORT/"
}

# Writes the gateway's config: gateway_config FILE REFRESH_MARGIN [LOG_LEVEL]
gateway_config() {
  cat >"$1" <<TOML
listen = "127.0.0.1:$GATEWAY_PORT"
public_url = "$GATEWAY_URL"

[oidc]
authority = "http://127.0.0.1:$IDP_PORT"
client_id = "bff"
client_secret = "bench-client-secret"
refresh_margin = $2

[log]
level = "${3:-info}"

[[api]]
path = "/api"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
token = "user"
TOML
}

# Starts the real release gateway: start_gateway REFRESH_MARGIN [LOG_LEVEL]
start_gateway() {
  gateway_config "$WORK/bff.toml" "$@"
  spawn gateway "$GATEWAY_BIN" serve --config "$WORK/bff.toml"
  local i
  for i in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$GATEWAY_URL/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  log "the gateway did not become ready"; cat "$WORK/gateway.log" >&2; return 1
}

# Signs in with curl (the dev IdP needs no form); prints the Cookie header value.
sign_in() {
  local jar=$WORK/jar
  curl -sL -c "$jar" -b "$jar" -o /dev/null "$GATEWAY_URL/bff/login?returnUrl=/"
  local value
  value=$(awk '$6 == "__Host-bff" { print $7 }' "$jar")
  [ -n "$value" ] || { log "sign-in failed: no session cookie"; return 1; }
  echo "__Host-bff=$value"
}

# machine line for the reports
machine() {
  echo "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(date -u +%Y-%m-%d)"
}
