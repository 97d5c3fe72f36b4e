#!/usr/bin/env bash
# Hot path (criterion): the user's access token when a valid one is already
# in the session, per store (memory, SQLite file, Redis, PostgreSQL), and the
# managed HTTP client's overhead per outgoing request.
# Redis/PostgreSQL: the machine's services (see crates/tokens/benches/hot_path.rs);
# a missing one is skipped with a notice unless CI=true.
#
#   bench/hot_path.sh [--smoke]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CRITERION=(--warm-up-time 2 --measurement-time 5)
if [ "${1:-}" = --smoke ]; then
  # Each benchmark once, unoptimised: the build the test suite already made.
  cargo test -q --workspace --bench hot_path --bench client_middleware
  exit 0
fi

summary() {  # criterion's output -> "| case | median [95% CI] |"
  awk '/^[A-Za-z_]+\/[A-Za-z_]+/ { name = $1 }
       /time:/ { sub(/.*time: *\[/, ""); sub(/\].*/, ""); split($0, v, " ");
                 printf "| `%s` | **%s %s** [%s %s, %s %s] |\n", name, v[3], v[4], v[1], v[2], v[5], v[6] }'
}
log "load before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -q -p oidc-bff-tokens --features sqlite,redis,postgres --bench hot_path -- "${CRITERION[@]}" \
  2>&1 | tee "$WORK/hot_path.txt" >&2
cargo bench -q -p oidc-bff --bench client_middleware -- "${CRITERION[@]}" \
  2>&1 | tee "$WORK/client_middleware.txt" >&2
echo
echo "Hot path: $(machine)"
echo
echo "| case | time per call: median [95% CI] |"
echo "|---|---|"
summary <"$WORK/hot_path.txt"
summary <"$WORK/client_middleware.txt"
