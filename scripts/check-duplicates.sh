#!/usr/bin/env bash
# Fails when the build holds two versions of a crate that must exist once.
#
# One known exception: tower-http. We use 0.7 (its `csrf` middleware);
# reqwest 0.13, whose newest release still asks for tower-http 0.6 (for its
# redirect-following only), keeps a 0.6 in the build. That copy is allowed
# while reqwest is the only crate using it; anything else pulling in a
# second tower-http fails as before.
set -euo pipefail
cd "$(dirname "$0")/.."
dups=$(cargo tree --workspace -d -e normal,build --depth 0 --prefix none \
  | grep -E '^(reqwest|reqwest-middleware|hyper|http|hyper-util|tower-http|axum|rustls|tokio|h2) v' | sort -u || true)
tower_http=$(grep -E '^tower-http v' <<<"$dups" || true)
if [ "$(wc -l <<<"$tower_http")" -eq 2 ]; then
  older=$(head -n 1 <<<"$tower_http" | awk '{print $2}' | tr -d v)
  users=$(cargo tree --workspace -i "tower-http@$older" -e normal,build --depth 1 --prefix none \
    | tail -n +2 | awk '{print $1}' | sort -u)
  if [ "$users" = "reqwest" ]; then
    echo "note: tower-http $older is reqwest's own (redirects); ours is $(tail -n 1 <<<"$tower_http" | awk '{print $2}')"
    dups=$(grep -vE '^tower-http v' <<<"$dups" || true)
  fi
fi
if [ -n "$dups" ]; then
  echo "duplicate versions in the build:"
  echo "$dups"
  exit 1
fi
echo "ok: one version each of reqwest, hyper, http, hyper-util, tower-http (besides reqwest's), axum, rustls, tokio, h2"
