# Sourced by the benchmark scripts: the release build, and a scratch copy of the load kit in
# benches/kit (its scripts write their results beside themselves) at $KIT.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/tmp/hookgate-bench}"
KIT="$WORK/kit"
rm -rf "$KIT"; mkdir -p "$WORK"
cp -r "$ROOT/benches/kit" "$KIT"; chmod -R u+w "$KIT"; rm -rf "$KIT/results"
(cd "$ROOT" && cargo build --release --quiet)
