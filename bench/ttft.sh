#!/usr/bin/env bash
# Time to first token with sensitive-data redaction on and off: the mock
# upstream streams replies in 4-byte deltas 25 ms apart and in word pieces 20 ms
# apart (see ttft.py); the script measures,
# per request, the time to the first SSE event and to the first non-empty text
# delta, straight to the mock and through the gateway under two policies.
#
#   bench/ttft.sh            # 40 requests per case
#   N=100 bench/ttft.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-40}"
UP_PORT="${UP_PORT:-19190}"
GW_PORT="${GW_PORT:-18887}"
cargo build --release --locked --bin halberd >/dev/null
BIN="$PWD/target/release/halberd"
WORK="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/halberd.toml" <<TOML
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:0"
[[providers]]
name = "oai"
kind = "openai"
base_url = "http://127.0.0.1:$UP_PORT/v1"
allow_http = true
mock_headers = true
[[models]]
name = "mock-1"
provider = "oai"
[[policies]]
name = "open"
[policies.sensitive]
input = { default = "off" }
output = { default = "off" }
TOML

HALBERD_LOG=warn "$BIN" mock-upstream --listen "127.0.0.1:$UP_PORT" >/dev/null & pids+=($!)
HALBERD_LOG=warn "$BIN" --config "$WORK/halberd.toml" serve >/dev/null & pids+=($!)
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$UP_PORT/healthz" >/dev/null && curl -sf "http://127.0.0.1:$GW_PORT/healthz" >/dev/null && break
  sleep 0.1
done
key() { "$BIN" --config "$WORK/halberd.toml" keys create --name "$1" ${2:+--policy "$2"} --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'; }
KEY_ON=$(key on)
KEY_OFF=$(key off open)
python3 bench/ttft.py "127.0.0.1:$GW_PORT" "127.0.0.1:$UP_PORT" "$KEY_ON" "$KEY_OFF" "$N"
