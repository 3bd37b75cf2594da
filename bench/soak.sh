#!/usr/bin/env bash
# Soak with faults: a fixed load through the gateway (Postgres store, Redis limits, both reached
# through TCP proxies this script kills and restores every few minutes), then a count of what was
# lost. Reports RSS over time, 2xx answers against usage records written, and concurrency leases
# left in Redis after recovery. Not part of CI: it runs for DURATION (30 min by default).
#
#   bench/soak.sh                                   # 30 minutes, faults every 180 s
#   DURATION=300 FAULT_EVERY=60 bench/soak.sh       # a quick look
#
# Needs the machine's PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379), socat and
# wrk (installed from Debian if missing). Uses its own database, halberd_soak, dropped at the start.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-1800}"        # seconds
FAULT_EVERY="${FAULT_EVERY:-180}"   # seconds between fault rounds
OUTAGE="${OUTAGE:-20}"              # seconds each dependency stays cut
CONNECTIONS="${CONNECTIONS:-4}"
PAUSE_MS="${PAUSE_MS:-8}"           # per connection between requests: a fixed load, not a flood
for tool in wrk socat; do
  command -v "$tool" >/dev/null || (apt-get update -qq && apt-get install -y -qq "$tool") >/dev/null
done
if [ -n "${HALBERD_BIN:-}" ]; then BIN=$HALBERD_BIN; else cargo build --release --locked --bin halberd >/dev/null; BIN=$PWD/target/release/halberd; fi
WORK=$(mktemp -d); pids=()
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); gw=$(port); pgp=$(port); rdp=$(port)
proxy_up() { socat "TCP-LISTEN:$1,fork,reuseaddr,bind=127.0.0.1" "TCP:127.0.0.1:$2" & echo $! > "$WORK/proxy-$1"; }
# Kills the listener and every forked connection: the dependency is gone, mid-query or not.
proxy_down() { pkill -f "socat TCP-LISTEN:$1," || true; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  proxy_down "$pgp"; proxy_down "$rdp"; wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT

PGOPTIONS="-c client_min_messages=warning" psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS halberd_soak" -c "CREATE DATABASE halberd_soak"
redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'halberd:*' | xargs -r redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
proxy_up "$pgp" 5432; proxy_up "$rdp" 6379
cat > "$WORK/h.toml" <<TOML
[server]
listen = "127.0.0.1:$gw"
admin_listen = "127.0.0.1:0"
[store]
url = "postgres://postgres@127.0.0.1:$pgp/halberd_soak"
[limits]
redis_url = "redis://127.0.0.1:$rdp"
[[providers]]
name = "up"
kind = "openai"
base_url = "http://127.0.0.1:$up/v1"
allow_http = true
[[models]]
name = "mock-gpt"
provider = "up"
TOML
export HALBERD_PEPPER=${HALBERD_PEPPER:-$(python3 -c "import secrets; print(secrets.token_hex(32))")}
(cd "$WORK" && HALBERD_LOG=warn exec "$BIN" mock-upstream --listen "127.0.0.1:$up") >/dev/null 2>&1 & pids+=($!)
sleep 0.5
KEY_JSON=$(cd "$WORK" && "$BIN" --config h.toml keys create --name soak --max-concurrent 64 --tpm 100000000 --json)
KEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$KEY_JSON")
KEY_ID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$KEY_JSON")
(cd "$WORK" && HALBERD_LOG=warn exec "$BIN" --config h.toml serve) >"$WORK/gw.log" 2>&1 & gwpid=$!; pids+=($gwpid)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$gw/healthz" >/dev/null && break; sleep 0.1; done

cat > "$WORK/req.lua" <<LUA
local key = os.getenv("GW_KEY")
local text = string.rep("The quarterly figures show steady growth across every region. ", 8) ..
  "Mail jane.doe@example.com about card 4111 1111 1111 1111."
local plain = '{"model":"mock-gpt","messages":[{"role":"user","content":"' .. text .. '"}]}'
local streamed = '{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"' .. text .. '"}]}'
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/chat/completions", headers, (n % 2 == 0) and streamed or plain)
end
delay = function() return $PAUSE_MS end
done = function(s, lat, req)
  io.write(string.format("requests %d non2xx %d socket_errors %d p50_us %d p99_us %d max_us %d\n", s.requests,
    s.errors.status, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout,
    lat:percentile(50), lat:percentile(99), lat.max))
end
LUA
rss() { ps -o rss= -p "$gwpid" | tr -d ' '; }
echo "soak: ${DURATION}s, $CONNECTIONS connections with ${PAUSE_MS} ms pauses, faults every ${FAULT_EVERY}s (${OUTAGE}s each)"
GW_KEY=$KEY wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s -s "$WORK/req.lua" "http://127.0.0.1:$gw" > "$WORK/wrk.out" 2>&1 &
wrkpid=$!
start=$(date +%s); next_fault=$((start + FAULT_EVERY)); next_sample=$((start + 60)); rss_first=""
while kill -0 "$wrkpid" 2>/dev/null; do
  now=$(date +%s)
  if [ "$now" -ge "$next_sample" ]; then
    r=$(rss); [ -z "$rss_first" ] && rss_first=$r
    echo "  t=$((now - start))s rss=${r} KiB"; next_sample=$((now + 60))
  fi
  if [ "$now" -ge "$next_fault" ] && [ $((now + 2 * OUTAGE + 10)) -lt $((start + DURATION)) ]; then
    echo "  t=$((now - start))s postgres cut for ${OUTAGE}s"; proxy_down "$pgp"; sleep "$OUTAGE"; proxy_up "$pgp" 5432
    sleep 5
    echo "  t=$(($(date +%s) - start))s redis cut for ${OUTAGE}s"; proxy_down "$rdp"; sleep "$OUTAGE"; proxy_up "$rdp" 6379
    next_fault=$((now + FAULT_EVERY))
  fi
  sleep 1
done
wait "$wrkpid" || true
rss_last=$(rss)
sleep 10   # the usage queue and the pending Redis releases catch up
read -r _ requests _ non2xx _ sockerr _ p50 _ p99 _ maxl <<< "$(grep '^requests' "$WORK/wrk.out")"
ok=$((requests - non2xx))
rows=$(psql -tA -h 127.0.0.1 -U postgres -d halberd_soak -c "SELECT count(*) FROM usage_records WHERE key_id = '$KEY_ID'")
completed=$(psql -tA -h 127.0.0.1 -U postgres -d halberd_soak -c "SELECT count(*) FROM usage_records WHERE key_id = '$KEY_ID' AND outcome = 'completed'")
leases=0
# Settlement markers are plain strings (and many): only the other keys can be leases.
for k in $(redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'halberd:*' | grep -v ':settled:'); do
  [ "$(redis-cli -h 127.0.0.1 -p 6379 type "$k")" = zset ] && leases=$((leases + $(redis-cli -h 127.0.0.1 -p 6379 zcard "$k")))
done
echo "answers: $requests ($ok 2xx, $non2xx refused or failed, $sockerr socket errors); latency p50 ${p50} us p99 ${p99} us max ${maxl} us"
echo "usage records: $rows ($completed completed); 2xx answers without a completed record: $((ok > completed ? ok - completed : 0))"
echo "concurrency leases left in Redis after recovery: $leases"
echo "rss: ${rss_first} KiB at 60 s, ${rss_last} KiB at the end ($(python3 -c "print(round(100*($rss_last-$rss_first)/$rss_first, 1))") %)"
echo "gateway log, by message:"; sed -E 's/.*(WARN|ERROR) //' "$WORK/gw.log" | cut -c1-100 | sort | uniq -c | sort -rn | head -15
