#!/usr/bin/env bash
# End-to-end cost of jq rules: the same sync route with and without a filter + transform,
# interleaved A/B pairs at 64 connections, 2 KiB and 16 KiB GitHub pushes, servers on CPU1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KIT_SRC="${KIT_SRC:-$ROOT/../shared/bench}"
WORK="${WORK:-/tmp/hookgate-bench}"
rm -rf "$WORK/kit"; mkdir -p "$WORK"
cp -r "$KIT_SRC" "$WORK/kit"; chmod -R u+w "$WORK/kit"; rm -rf "$WORK/kit/results"
cd "$ROOT" && cargo build --release --quiet
cd "$WORK/kit"
. ./lib.sh
trap './stop-all.sh >/dev/null 2>&1 || true; [ -n "${GW:-}" ] && kill "$GW" 2>/dev/null || true' EXIT
SECRET="${SECRET:-bench-secret-0123456789abcdef}"
cat > "$WORK/routes-rules.yaml" <<YAML
server: { listen: ["127.0.0.1:8080"] }
admin: { listen: "127.0.0.1:19900" }
routes:
  - name: plain
    path: /plain
    mode: sync
    dedup: false               # wrk repeats one X-GitHub-Delivery: no dedup, or every request is a duplicate
    verify: { github: { secret: "$SECRET" } }
    targets: [{ name: up, url: "http://127.0.0.1:18081/" }]
  - name: rules
    path: /rules
    mode: sync
    dedup: false               # wrk repeats one X-GitHub-Delivery: no dedup, or every request is a duplicate
    verify: { github: { secret: "$SECRET" } }
    targets:
      - name: up
        url: http://127.0.0.1:18081/
        filter: '.ref == "refs/heads/main" or .ref != null'
        transform: '{repo: .repository.full_name, sha: .after, ref: .ref}'
YAML
start_nginx upstream nginx/upstream.conf.in >/dev/null
UP=$(cat "$RUN_DIR/pids/nginx-upstream.pid")
RUST_LOG=warn taskset -c 1 "$ROOT/target/release/hookgate" run -c "$WORK/routes-rules.yaml" >/dev/null 2>"$WORK/hookgate-rules.log" &
GW=$!
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:19900/readyz >/dev/null 2>&1 && break; sleep 0.1; done
A_LABEL=no-rules A_URL=http://127.0.0.1:8080/plain A_SUT=$GW A_AUX=$UP \
B_LABEL=filter-transform B_URL=http://127.0.0.1:8080/rules B_SUT=$GW B_AUX=$UP \
  CONNS=64 PAIRS="${PAIRS:-3}" DURATION="${DURATION:-8}" ./pairs.sh
./summarize.py > results/summary.md
echo "summary: $WORK/kit/results/summary.md"
