#!/usr/bin/env bash
# Memory under sustained load: the whole-path request (1 KiB chat with an email and a card number,
# default policy, SQLite store unless STORE is set) at 50 connections for DURATION seconds through
# the gateway to `halberd mock-upstream`, sampling the gateway's RSS every 10 s. Prints the samples,
# the growth from the first sample after warm-up (30 s) to the last, and the requests served.
#
#   bench/rss.sh                       # 300 s, SQLite
#   DURATION=60 bench/rss.sh
#   STORE=postgres://postgres@127.0.0.1:5432/test bench/rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-300}"
cargo build --release --locked --bin halberd >/dev/null
BIN="$PWD/target/release/halberd"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
WORK=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); gw=$(port)
{
  printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:0"\n' "$gw"
  [ -n "${STORE:-}" ] && printf '[store]\nurl = "%s"\n' "$STORE"
  printf '[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\nallow_http = true\n' "$up"
  printf '[[models]]\nname = "mock-gpt"\nprovider = "up"\n'
} > "$WORK/h.toml"
(cd "$WORK" && HALBERD_LOG=warn exec "$BIN" mock-upstream --listen "127.0.0.1:$up") >/dev/null 2>&1 & pids+=($!)
(cd "$WORK" && HALBERD_LOG=warn exec "$BIN" --config h.toml serve) >"$WORK/gw.log" 2>&1 & gwpid=$!; pids+=($gwpid)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$gw/healthz" >/dev/null && break; sleep 0.1; done
KEY=$(cd "$WORK" && "$BIN" --config h.toml keys create --name rss --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
cat > "$WORK/req.lua" <<'LUA'
local filler = string.rep("The quarterly figures show steady growth across every region, with margins holding. ", 10)
local body = '{"model":"mock-gpt","messages":[{"role":"user","content":"' .. filler ..
  'Send the summary to jane.doe@example.com and bill card 4111 1111 1111 1111."}]}'
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("GW_KEY")}
request = function() return wrk.format("POST", "/v1/chat/completions", headers, body) end
LUA
GW_KEY="$KEY" wrk -t2 -c50 -d"${DURATION}s" -s "$WORK/req.lua" "http://127.0.0.1:$gw/v1/chat/completions" >"$WORK/wrk.txt" & wrkpid=$!
samples=()
for ((t = 0; t < DURATION; t += 10)); do
  sleep 10
  rss=$(awk '/VmRSS/{print $2}' "/proc/$gwpid/status")
  samples+=("$rss"); echo "t=$((t + 10))s rss=${rss} KiB"
done
wait "$wrkpid" || true
grep -E "requests in|Requests/sec|Non-2xx|Socket errors" "$WORK/wrk.txt" || true
python3 - "${samples[@]}" <<'PY'
import sys
s = [int(x) for x in sys.argv[1:]]
base = s[2] if len(s) > 3 else s[0]   # after 30 s of warm-up
print(f"RSS after warm-up {base} KiB, at the end {s[-1]} KiB, peak {max(s)} KiB: growth {(s[-1] / base - 1) * 100:+.1f}%")
PY
