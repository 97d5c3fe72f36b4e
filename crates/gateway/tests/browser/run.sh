#!/usr/bin/env bash
# Builds oidc-bff, starts `oidc-bff demo` on free loopback ports, runs the
# headless-Chromium test against it and stops the demo.
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

log="$(mktemp)"
"$bin" demo --listen "127.0.0.1:$gateway_port" --idp-port "$idp_port" >"$log" 2>&1 &
demo_pid=$!
cleanup() {
  kill "$demo_pid" 2>/dev/null || true
  wait "$demo_pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

url="http://127.0.0.1:$gateway_port/"
for _ in $(seq 1 100); do
  if curl -fsS "${url}readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$demo_pid" 2>/dev/null; then
    echo "the demo exited:" >&2; cat "$log" >&2; exit 1
  fi
  sleep 0.2
done
curl -fsS "${url}readyz" >/dev/null || { echo "the demo did not become ready:" >&2; cat "$log" >&2; exit 1; }

if ! node "$here/demo.test.mjs" "$url"; then
  echo "--- demo log ---" >&2
  cat "$log" >&2
  exit 1
fi
