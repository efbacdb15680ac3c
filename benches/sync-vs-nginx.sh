#!/usr/bin/env bash
# hookgate mode: sync (GitHub verification) vs nginx proxy_pass vs the upstream directly.
# See benches/README.md. Loopback only; every server started here is stopped on exit.
set -euo pipefail
export REPS="${REPS:-1}" DURATION="${DURATION:-10}" CONNS="${CONNS:-16 64 256}"
SECRET="${SECRET:-bench-secret-0123456789abcdef}"

. "$(dirname "$0")/kit.sh"
(cd "$ROOT" && cargo build --release --quiet --example relay_floor)
cd "$KIT"
. ./lib.sh
trap './stop-all.sh >/dev/null 2>&1 || true; kill ${GW:-} ${FLOOR:-} 2>/dev/null || true' EXIT

cat > "$WORK/routes.yaml" <<YAML
server:
  listen: ["127.0.0.1:8080"]
  max_connections: 10000
admin:
  listen: 127.0.0.1:19900
routes:
  - name: github
    path: /hooks/github
    mode: sync
    dedup: false               # wrk repeats one X-GitHub-Delivery: no dedup, or every request is a duplicate
    verify:
      github:
        secret: "$SECRET"
    targets:
      - name: upstream
        url: http://127.0.0.1:18081/
YAML
"$ROOT/target/release/hookgate" check -c "$WORK/routes.yaml"

start_nginx upstream nginx/upstream.conf.in >/dev/null
start_nginx proxy nginx/proxy.conf.in >/dev/null
UP=$(cat "$RUN_DIR/pids/nginx-upstream.pid"); PROXY=$(cat "$RUN_DIR/pids/nginx-proxy.pid")
RUST_LOG=warn setsid taskset -c 1 "$ROOT/target/release/hookgate" run -c "$WORK/routes.yaml" 2>"$WORK/hookgate.log" &
GW=$!
# (d) the floor: the least a relay on hookgate's stack costs (examples/relay_floor.rs).
FLOOR_SECRET="$SECRET" setsid taskset -c 1 "$ROOT/target/release/examples/relay_floor" 127.0.0.1:8091 127.0.0.1:18081 &
FLOOR=$!
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:19900/readyz >/dev/null 2>&1 && break; sleep 0.1; done

# The signature must be accepted, or we would measure the 401 path.
code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Hub-Signature-256: $(cat payloads/push-2k.json.sig)" \
  --data-binary @payloads/push-2k.json http://127.0.0.1:8080/hooks/github)
[ "$code" = 200 ] || { echo "hookgate answered $code to a signed request" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Hub-Signature-256: $(cat payloads/push-2k.json.sig)" \
  --data-binary @payloads/push-2k.json http://127.0.0.1:8091/)
[ "$code" = 200 ] || { echo "relay_floor answered $code to a signed request" >&2; exit 1; }

LABEL=direct-nginx TARGET_URL=http://127.0.0.1:18081/ SUT_PIDS=$UP ./load.sh
LABEL=proxy-nginx TARGET_URL=http://127.0.0.1:18082/ SUT_PIDS=$PROXY AUX_PIDS=$UP ./load.sh
LABEL=hookgate-sync TARGET_URL=http://127.0.0.1:8080/hooks/github SUT_PIDS=$GW AUX_PIDS=$UP ./load.sh
LABEL=relay-floor TARGET_URL=http://127.0.0.1:8091/ SUT_PIDS=$FLOOR AUX_PIDS=$UP ./load.sh
A_LABEL=proxy-nginx A_URL=http://127.0.0.1:18082/ A_SUT=$PROXY A_AUX=$UP \
B_LABEL=hookgate-sync B_URL=http://127.0.0.1:8080/hooks/github B_SUT=$GW B_AUX=$UP \
  CONNS=64 PAIRS="${PAIRS:-5}" ./pairs.sh
A_LABEL=proxy-nginx A_URL=http://127.0.0.1:18082/ A_SUT=$PROXY A_AUX=$UP \
B_LABEL=relay-floor B_URL=http://127.0.0.1:8091/ B_SUT=$FLOOR B_AUX=$UP \
  CONNS=64 PAIRS="${PAIRS:-5}" ./pairs.sh
./summarize.py > results/summary.md
echo "summary: $KIT/results/summary.md"
