#!/usr/bin/env bash
# This build against an earlier one (OLD_BIN, a `hookgate` binary built from another commit),
# same routes, interleaved A/B pairs at 64 connections, servers on CPU1 and wrk on CPU0:
# the sync relay, the durable async ingress, and the rules route (filter + transform), so a
# change can show that it made none of them slower.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release)
#   OLD_BIN=/tmp/old-target/release/hookgate benches/compare-builds.sh
set -euo pipefail
: "${OLD_BIN:?set OLD_BIN to an earlier build of hookgate}"
. "$(dirname "$0")/kit.sh"
cd "$KIT"
. ./lib.sh
trap './stop-all.sh >/dev/null 2>&1 || true; kill ${OLD:-} ${NEW:-} 2>/dev/null || true' EXIT
SECRET="${SECRET:-bench-secret-0123456789abcdef}"
config() { # port admin data
  cat <<YAML
server: { listen: ["127.0.0.1:$1"] }
admin: { listen: "127.0.0.1:$2" }
storage: { path: "$3" }
routes:
YAML
  for mode in sync async; do
    cat <<YAML
  - { name: plain-$mode, path: /plain-$mode, mode: $mode, dedup: false, verify: { github: { secret: "$SECRET" } },
      targets: [{ name: up, url: "http://127.0.0.1:18081/", concurrency: 64 }] }
  - name: rules-$mode
    path: /rules-$mode
    mode: $mode
    dedup: false
    verify: { github: { secret: "$SECRET" } }
    targets:
      - name: up
        url: http://127.0.0.1:18081/
        concurrency: 64
        filter: '.ref == "refs/heads/main" or .ref != null'
        transform: '{repo: .repository.full_name, sha: .after, ref: .ref}'
YAML
  done
}
rm -rf "$WORK/data-old" "$WORK/data-new"
config 8081 19901 "$WORK/data-old" > "$WORK/routes-old.yaml"
config 8080 19900 "$WORK/data-new" > "$WORK/routes-new.yaml"
start_nginx upstream nginx/upstream.conf.in >/dev/null
RUST_LOG=warn setsid taskset -c 1 "$OLD_BIN" run -c "$WORK/routes-old.yaml" >/dev/null 2>"$WORK/old.log" &
OLD=$!
RUST_LOG=warn setsid taskset -c 1 "$ROOT/target/release/hookgate" run -c "$WORK/routes-new.yaml" >/dev/null 2>"$WORK/new.log" &
NEW=$!
for a in 19900 19901; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$a/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
for route in ${ROUTES:-plain-sync plain-async rules-sync rules-async}; do
  A_LABEL=old-$route A_URL=http://127.0.0.1:8081/$route A_SUT=$OLD \
  B_LABEL=new-$route B_URL=http://127.0.0.1:8080/$route B_SUT=$NEW \
    CONNS=64 PAIRS="${PAIRS:-3}" DURATION="${DURATION:-8}" ./pairs.sh
done
./summarize.py > results/summary.md
echo "summary: $WORK/kit/results/summary.md"
