#!/usr/bin/env bash
# hookgate mode: async (durable acknowledgement) against the disk's own fsync rate and
# against hookgate mode: sync, 2 KiB bodies, 64 connections. See benches/README.md.
set -euo pipefail
DURATION="${DURATION:-10}"
PIN="${PIN:-split}"        # split: servers on CPU1, wrk on CPU0; none: everything shares both
. "$(dirname "$0")/kit.sh"
cd "$KIT"
. ./lib.sh
trap './stop-all.sh >/dev/null 2>&1 || true; [ -n "${GW:-}" ] && kill "$GW" 2>/dev/null || true' EXIT
SECRET="${SECRET:-bench-secret-0123456789abcdef}"
srv=""; cli="wrk -t2"
[ "$PIN" = split ] && { srv="taskset -c 1"; cli="taskset -c 0 wrk -t1"; }

echo "== disk: fsync per record vs batched (the durable-write anchor)"
$srv python3 fsync-bench.py --dir "$WORK" --mode append --size 2048 --batch 1 --seconds 3 | tail -1
$srv python3 fsync-bench.py --dir "$WORK" --mode append --size 2048 --batch 64 --seconds 3 | tail -1

start_nginx upstream nginx/upstream.conf.in >/dev/null
run() { # mode
  rm -rf "$WORK/data"
  cat > "$WORK/routes-$1.yaml" <<YAML
server: { listen: ["127.0.0.1:8080"] }
admin: { listen: "127.0.0.1:19900" }
storage: { path: "$WORK/data" }
routes:
  - name: github
    path: /hooks/github
    mode: $1
    dedup: false
    verify: { github: { secret: "$SECRET" } }
    targets: [{ name: upstream, url: "http://127.0.0.1:18081/", concurrency: 64 }]
YAML
  RUST_LOG=warn setsid $srv "$ROOT/target/release/hookgate" run -c "$WORK/routes-$1.yaml" >/dev/null 2>"$WORK/hookgate-$1.log" &
  GW=$!
  for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:19900/readyz >/dev/null 2>&1 && break; sleep 0.1; done
  echo "== hookgate mode: $1"
  if [ "$1" = async ]; then
    # Steady state: the backlog (acknowledged, not yet delivered) sampled every 2 s under load.
    ( for _ in $(seq 2 2 "$DURATION"); do sleep 2
        curl -s http://127.0.0.1:19900/api/v1/routes | grep -o '"pending":[0-9]*' ; done ) > "$WORK/backlog.txt" &
    SAMPLER=$!
  fi
  BODY_FILE=payloads/push-2k.json SIG_VALUE="$(cat payloads/push-2k.json.sig)" \
    $cli -c64 -d"${DURATION}s" -s wrk/post.lua http://127.0.0.1:8080/hooks/github | grep RESULT
  [ "$1" = async ] && { wait "$SAMPLER"; echo "backlog under load, every 2 s: $(tr '\n' ' ' < "$WORK/backlog.txt")"; }
  if [ "$1" = async ]; then
    sleep 1
    curl -s http://127.0.0.1:19900/api/v1/routes; echo
    curl -s http://127.0.0.1:19900/metrics | grep -E '^hookgate_store_commit_(batch_size|duration_seconds)_(sum|count)'
    echo "RSS kB: $(grep VmRSS /proc/$GW/status | awk '{print $2}')"
  fi
  kill "$GW"; wait "$GW" 2>/dev/null || true; GW=
}
run async
run sync
