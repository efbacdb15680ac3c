#!/usr/bin/env bash
# Scale-out: durable ingress and delivery with 1, 2 and 3 replicas on one PostgreSQL, as
# ratios to the embedded store in the same run, with PostgreSQL's own commit rate (pgbench,
# one-row insert transactions) as the anchor. Loopback only; everything stops on exit.
#   DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)  DURATION (10)
set -euo pipefail
DB="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
DURATION="${DURATION:-10}"
. "$(dirname "$0")/kit.sh"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== anchor: PostgreSQL commit rate (pgbench, 16 clients, one-row insert per transaction)"
psql "$DB" -qc "DROP TABLE IF EXISTS hg_bench_commit; CREATE TABLE hg_bench_commit (id BIGSERIAL PRIMARY KEY, body TEXT)"
echo "INSERT INTO hg_bench_commit (body) VALUES (repeat('x', 2048));" > "$WORK/commit.sql"
pgbench -n -c 16 -j 2 -T "$DURATION" -f "$WORK/commit.sql" "$DB" 2>/dev/null | grep -E "^tps"
psql "$DB" -qc "DROP TABLE hg_bench_commit"

# The upstream every delivery goes to: the kit's nginx `return 200`.
(cd "$KIT" && . ./lib.sh && start_nginx upstream nginx/upstream.conf.in >/dev/null)

run() { # label backend replicas
  local label=$1 backend=$2 n=$3 schema="hg_bench_$RANDOM"
  local storage
  if [ "$backend" = postgres ]; then
    psql "$DB" -qc "CREATE SCHEMA $schema"
    storage="storage: { backend: postgres, postgres: { url: \"$DB?options=-c%20search_path%3D$schema\", pool: 16 } }"
  else
    rm -rf "$WORK/data-bench"; storage="storage: { path: \"$WORK/data-bench\" }"
  fi
  local ports=()
  for i in $(seq 1 "$n"); do
    local port=$((18100 + i)) admin=$((19910 + i))
    cat > "$WORK/r$i.yaml" <<YAML
server: { listen: ["127.0.0.1:$port"] }
admin: { listen: "127.0.0.1:$admin" }
$storage
routes:
  - name: github
    path: /hooks/github
    dedup: false
    verify: { github: { secret: "bench-secret-0123456789abcdef" } }
    targets: [{ name: up, url: "http://127.0.0.1:18081/", concurrency: 64 }]
YAML
    HOOKGATE_REPLICA="r$i" RUST_LOG=warn setsid "$ROOT/target/release/hookgate" run -c "$WORK/r$i.yaml" >/dev/null 2>"$WORK/r$i.log" &
    PIDS+=($!)
    for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    ports+=("$port")
  done
  local c=$((64 / n)) total=0 loads=()
  for port in "${ports[@]}"; do
    (cd "$KIT" && BODY_FILE=payloads/push-2k.json SIG_VALUE="$(cat payloads/push-2k.json.sig)" \
      wrk -t1 -c"$c" -d"${DURATION}s" -s wrk/post.lua "http://127.0.0.1:$port/hooks/github" > "$WORK/wrk-$port.txt" 2>&1) &
    loads+=($!)
  done
  for l in "${loads[@]}"; do wait "$l" || true; done
  sleep 0.5
  local delivered
  delivered=$(curl -fsS "http://127.0.0.1:19911/api/v1/routes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["routes"][0]["targets"][0]["delivered"])')
  for port in "${ports[@]}"; do
    total=$(python3 -c "import re;t=open('$WORK/wrk-$port.txt').read();m=re.search(r'Requests/sec:\s+([\d.]+)',t);print($total+float(m.group(1)) if m else $total)")
  done
  echo "$label: durable 202/s $total; delivered within the run + 0.5 s: $delivered"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  [ "$backend" = postgres ] && psql "$DB" -qc "DROP SCHEMA $schema CASCADE"
  return 0
}
run "embedded, 1 process" embedded 1
run "postgres, 1 replica" postgres 1
run "postgres, 2 replicas" postgres 2
run "postgres, 3 replicas" postgres 3
(cd "$KIT" && ./stop-all.sh >/dev/null 2>&1) || true
