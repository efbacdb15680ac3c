#!/usr/bin/env bash
# End-to-end cost of jq rules: the same route with and without a filter + transform,
# interleaved A/B pairs at 64 connections, 2 KiB and 16 KiB GitHub pushes, servers on CPU1;
# in sync mode (relay) and in async mode (durable 202, delivered by the workers).
set -euo pipefail
. "$(dirname "$0")/kit.sh"
cd "$KIT"
. ./lib.sh
trap './stop-all.sh >/dev/null 2>&1 || true; [ -n "${GW:-}" ] && kill "$GW" 2>/dev/null || true' EXIT
SECRET="${SECRET:-bench-secret-0123456789abcdef}"
run() { # mode: the same route pair in sync (relay) or async (durable, then delivered) mode
  rm -rf "$WORK/data-rules"
  cat > "$WORK/routes-rules.yaml" <<YAML
server: { listen: ["127.0.0.1:8080"] }
admin: { listen: "127.0.0.1:19900" }
storage: { path: "$WORK/data-rules" }
routes:
  - name: plain
    path: /plain
    mode: $1
    dedup: false               # wrk repeats one X-GitHub-Delivery: no dedup, or every request is a duplicate
    verify: { github: { secret: "$SECRET" } }
    targets: [{ name: up, url: "http://127.0.0.1:18081/", concurrency: 64 }]
  - name: rules
    path: /rules
    mode: $1
    dedup: false
    verify: { github: { secret: "$SECRET" } }
    targets:
      - name: up
        url: http://127.0.0.1:18081/
        concurrency: 64
        filter: '.ref == "refs/heads/main" or .ref != null'
        transform: '{repo: .repository.full_name, sha: .after, ref: .ref}'
YAML
  RUST_LOG=warn setsid taskset -c 1 "$ROOT/target/release/hookgate" run -c "$WORK/routes-rules.yaml" >/dev/null 2>"$WORK/hookgate-rules.log" &
  GW=$!
  for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:19900/readyz >/dev/null 2>&1 && break; sleep 0.1; done
  A_LABEL=no-rules-$1 A_URL=http://127.0.0.1:8080/plain A_SUT=$GW A_AUX=$UP \
  B_LABEL=filter-transform-$1 B_URL=http://127.0.0.1:8080/rules B_SUT=$GW B_AUX=$UP \
    CONNS=64 PAIRS="${PAIRS:-3}" DURATION="${DURATION:-8}" ./pairs.sh
  if [ "$1" = async ]; then
    # End to end means delivered: the backlog left once the load stops must drain at once.
    sleep 2
    echo "async backlog 2 s after the load: $(curl -s http://127.0.0.1:19900/api/v1/routes | grep -o '"pending":[0-9]*' | tr '\n' ' ')"
  fi
  kill "$GW"; wait "$GW" 2>/dev/null || true; GW=
}
start_nginx upstream nginx/upstream.conf.in >/dev/null
UP=$(cat "$RUN_DIR/pids/nginx-upstream.pid")
for mode in ${MODES:-sync async}; do run "$mode"; done
./summarize.py > results/summary.md
echo "summary: $WORK/kit/results/summary.md"
