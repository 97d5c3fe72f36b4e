#!/usr/bin/env bash
# Builds oidc-bff, starts `oidc-bff demo` twice on free loopback ports (plain
# HTTP, and `--tls`: the gateway's own HTTPS with HTTP/2), runs the
# headless-Chromium test against both and stops the demos.
#
#   crates/gateway/tests/browser/run.sh
#
# Needs node (>= 18), npm and Chromium (CHROMIUM, default /usr/bin/chromium).
# SCREENSHOT=path keeps the screenshot there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
cd "$root"

# The workspace's features, as the test suite builds them: building one
# package alone would compile much of the dependency tree a second time.
cargo build -q --workspace --bins
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
bin="$target_dir/debug/oidc-bff"

if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
gateway_port="$(free_port)"
idp_port="$(free_port)"
tls_port="$(free_port)"
tls_idp_port="$(free_port)"

log="$(mktemp)"
tls_log="$(mktemp)"
"$bin" demo --listen "127.0.0.1:$gateway_port" --idp-port "$idp_port" >"$log" 2>&1 &
demo_pid=$!
tls_pid=""
cleanup() {
  kill $demo_pid $tls_pid 2>/dev/null || true
  wait $demo_pid $tls_pid 2>/dev/null || true
  rm -f "$log" "$tls_log"
}
trap cleanup EXIT

url="http://127.0.0.1:$gateway_port/"
tls_url="https://127.0.0.1:$tls_port/"
# wait_ready URL PID LOG (-k: the --tls demo's certificate is self-signed)
wait_ready() {
  for _ in $(seq 1 100); do
    if curl -kfsS "${1}readyz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "the demo exited:" >&2; cat "$3" >&2; exit 1
    fi
    sleep 0.2
  done
  curl -kfsS "${1}readyz" >/dev/null || { echo "the demo did not become ready:" >&2; cat "$3" >&2; exit 1; }
}
wait_ready "$url" "$demo_pid" "$log"
# One after the other: each demo puts its operations listener on 9464 when
# that port is free, and two starting at once could both find it free.
"$bin" demo --tls --listen "127.0.0.1:$tls_port" --idp-port "$tls_idp_port" >"$tls_log" 2>&1 &
tls_pid=$!
wait_ready "$tls_url" "$tls_pid" "$tls_log"

if ! node "$here/demo.test.mjs" "$url" "$tls_url"; then
  echo "--- demo log ---" >&2
  cat "$log" >&2
  echo "--- demo --tls log ---" >&2
  cat "$tls_log" >&2
  exit 1
fi
