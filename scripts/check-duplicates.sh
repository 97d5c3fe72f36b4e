#!/usr/bin/env bash
# Fails when the build holds two versions of a crate that must exist once.
set -euo pipefail
cd "$(dirname "$0")/.."
dups=$(cargo tree --workspace -d -e normal,build --depth 0 --prefix none \
  | grep -E '^(reqwest|reqwest-middleware|hyper|http|hyper-util|tower-http|axum|rustls|tokio|h2) v' | sort -u || true)
if [ -n "$dups" ]; then
  echo "duplicate versions in the build:"
  echo "$dups"
  exit 1
fi
echo "ok: one version each of reqwest, hyper, http, hyper-util, tower-http, axum, rustls, tokio, h2"
