#!/usr/bin/env bash
# Load benchmark: the same request mix at the same concurrency, first straight
# to `halberd mock-upstream`, then through the gateway to that same upstream
# (OpenAI- and Anthropic-kind providers over real HTTP). Reports p50/p90/p99
# latency and requests/s for both and the difference: the gateway's overhead.
#
#   bench/load.sh                 # 2 threads, 32 connections, 15 s per run
#   DURATION=30s CONNECTIONS=64 bench/load.sh
#
# Everything runs on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
UP_PORT="${UP_PORT:-19090}"
GW_PORT="${GW_PORT:-18787}"
ADMIN_PORT="${ADMIN_PORT:-18788}"
export HALBERD_ADMIN_TOKEN="bench-$(date +%s%N)-only-on-loopback-for-stages"

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
cargo build --release --locked --bin halberd >/dev/null
BIN="$PWD/target/release/halberd"
WORK="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/halberd.toml" <<TOML
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
[[providers]]
name = "oai"
kind = "openai"
base_url = "http://127.0.0.1:$UP_PORT/v1"
allow_http = true
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "http://127.0.0.1:$UP_PORT"
allow_http = true
[[models]]
name = "mock-1"
provider = "oai"
[[models]]
name = "mock-claude"
provider = "claude"
upstream = "mock-1"
TOML

HALBERD_LOG=warn "$BIN" mock-upstream --listen "127.0.0.1:$UP_PORT" >/dev/null & pids+=($!)
HALBERD_LOG=warn "$BIN" --config "$WORK/halberd.toml" serve >/dev/null & pids+=($!)
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$UP_PORT/healthz" >/dev/null && curl -sf "http://127.0.0.1:$GW_PORT/healthz" >/dev/null && break
  sleep 0.1
done
KEY=$("$BIN" --config "$WORK/halberd.toml" keys create --name bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

run() { # name url
  HALBERD_KEY="$KEY" BENCH_MODEL=mock-1 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s bench/mix.lua "$2" | grep '^RESULT' | sed "s/^RESULT/$1/"
}
# Warm both paths (connection pools, page cache) before measuring.
DURATION=2s run warmup-direct "http://127.0.0.1:$UP_PORT" >/dev/null
DURATION=2s run warmup-gateway "http://127.0.0.1:$GW_PORT" >/dev/null
stages() { curl -sf -H "Authorization: Bearer $HALBERD_ADMIN_TOKEN" "http://127.0.0.1:$ADMIN_PORT/admin/stages"; }
direct=$(run direct "http://127.0.0.1:$UP_PORT")
before=$(stages)
gateway=$(run gateway "http://127.0.0.1:$GW_PORT")
after=$(stages)
echo "$direct"
echo "$gateway"
python3 - "$direct" "$gateway" <<'PY'
import sys
def parse(line):
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
d, g = parse(sys.argv[1]), parse(sys.argv[2])
for k in ("p50_us", "p90_us", "p99_us"):
    print(f"added {k[:-3]}: {g[k] - d[k]:.0f} us ({d[k]:.0f} -> {g[k]:.0f})")
print(f"throughput: {d['rps']:.0f} -> {g['rps']:.0f} req/s ({(g['rps'] / d['rps'] - 1) * 100:+.1f}%)")
if g["non200"] or d["non200"] or g["socket_errors"] or d["socket_errors"]:
    print(f"WARNING: errors during the run: direct non200={d['non200']:.0f} gateway non200={g['non200']:.0f}")
PY
# Where the gateway's time went during the measured run (wall time per stage,
# means over the run; `upstream` includes the upstream's own time).
python3 - "$before" "$after" <<'PY'
import json, sys
b = {s["stage"]: s for s in json.loads(sys.argv[1])["data"]}
a = {s["stage"]: s for s in json.loads(sys.argv[2])["data"]}
print("per stage (mean wall time during the gateway run):")
for name, s in a.items():
    n = s["count"] - b[name]["count"]
    us = s["total_us"] - b[name]["total_us"]
    print(f"  {name:<13} {us / max(n, 1):8.1f} us  ({n} calls)")
PY
