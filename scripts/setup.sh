#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: Debian's
# Chromium (browser test of the demo), redis-server and redis-tools (the
# Sentinel, Cluster and TLS Redis that the store and multi-instance tests
# start themselves; Sentinel runs as `redis-server --sentinel`), wrk, nginx
# and jq (the benchmarks' smoke runs), and the pinned npm packages (the
# certified oidc-provider for interop, playwright-core for the browser test).
# Idempotent: does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# Redis topologies started by the tests (tests/common/servers.rs).
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# The benchmarks' smoke runs: load generator, reference proxy, JSON reader.
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

for dir in tests/interop crates/gateway/tests/browser; do
  if [ -f "$dir/package-lock.json" ]; then
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
      echo "setup: npm ci in $dir"
      npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
      touch "$dir/node_modules"
    fi
  fi
done
