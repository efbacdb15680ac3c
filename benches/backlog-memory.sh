#!/usr/bin/env bash
# Resident memory of a gateway holding a large undelivered backlog (a dead target), measured
# from /proc after EVENTS durable 202s (default 1,000,000 × 2 KiB). Loopback only.
set -euo pipefail
EVENTS="${EVENTS:-1000000}"
. "$(dirname "$0")/kit.sh"
rm -rf "$WORK/backlog-data"
cat > "$WORK/routes-backlog.yaml" <<YAML
server: { listen: ["127.0.0.1:8080"] }
admin: { listen: "127.0.0.1:19900" }
storage: { path: "$WORK/backlog-data", max_size: 100GiB }
routes:
  - name: github
    path: /hooks/github
    dedup: false
    verify: { github: { secret: "bench-secret-0123456789abcdef" } }
    targets: [{ name: dead, url: "http://127.0.0.1:9/", retry: { max_attempts: 1000000, max_age: 720h } }]
YAML
RUST_LOG=warn setsid "$ROOT/target/release/hookgate" run -c "$WORK/routes-backlog.yaml" >/dev/null 2>"$WORK/hookgate-backlog.log" &
GW=$!
trap 'kill $GW 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:19900/readyz >/dev/null 2>&1 && break; sleep 0.1; done
pending() { curl -fsS http://127.0.0.1:19900/api/v1/routes | python3 -c 'import json,sys; print(json.load(sys.stdin)["routes"][0]["targets"][0]["pending"])'; }
cd "$KIT"
while [ "$(pending)" -lt "$EVENTS" ]; do
  BODY_FILE=payloads/push-2k.json SIG_VALUE="$(cat payloads/push-2k.json.sig)" \
    wrk -t2 -c64 -d20s -s wrk/post.lua http://127.0.0.1:8080/hooks/github | grep -E "^Requests/sec" || true
  echo "pending: $(pending); RSS: $(grep VmRSS /proc/$GW/status | awk '{print $2}') kB"
done
sleep 5
echo "final pending: $(pending)"
echo "final RSS: $(grep VmRSS /proc/$GW/status | awk '{print $2}') kB"
du -sh "$WORK/backlog-data"
