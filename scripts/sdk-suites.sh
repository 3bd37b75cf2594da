#!/usr/bin/env bash
# The official Python SDKs' own generated test suites, run against Halberd.
#
# openai-python and anthropic-sdk-python ship tests for every endpoint
# (tests/api_resources), written against a mock server built from the API
# spec. Here the gateway stands in for that mock: every model the tests name
# is routed to Halberd's built-in mock provider, and every test of an
# endpoint Halberd serves must pass, the "with all params" and strict
# response-validation variants included.
#
#   scripts/sdk-suites.sh                   # uses target/debug/halberd
#   HALBERD_BIN=target/release/halberd scripts/sdk-suites.sh
#
# The SDK versions are the ones pinned in tests/e2e/requirements.txt; their
# source distributions (which hold the tests) come from PyPI, into a
# temporary directory, and are never part of this repository. The only change
# made to them: the tests' fixed API key is read from TEST_API_KEY.
#
# Tests left out, and why (each passes only against a spec-generated mock,
# not against the real API, so a faithful gateway cannot pass it):
# - openai `responses.create` with neither `model` nor a stored prompt (the
#   bare overloads: `create()` and `create(stream=True)`): the real API
#   refuses a request that names no model, and so does Halberd (400, param
#   `model`). A stored prompt without a model is served (the suite's
#   "with all params" variants and tests/it cover it).
# - openai `embeddings.create` with strict response validation: the SDK asks
#   for base64 vectors by default and decodes them after parsing, so the
#   test-only strict validator rejects the base64 string the real API (and
#   Halberd's mock, which follows it) returns. The loose variants pass.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HALBERD_BIN:-target/debug/halberd}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
[ -x "$BIN" ] || { echo "no halberd binary at $BIN (cargo build first)" >&2; exit 2; }
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

OPENAI=$(sed -n 's/^openai==//p' tests/e2e/requirements.txt)
ANTHROPIC=$(sed -n 's/^anthropic==//p' tests/e2e/requirements.txt)
VENV=${SDK_SUITES_VENV:-$PWD/target/sdk-suites-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
"${PIP[@]}" "openai[aiohttp]==$OPENAI" "anthropic[aiohttp]==$ANTHROPIC" \
  pytest==9.2.0 pytest-asyncio==1.5.0 pytest-xdist==3.8.0 respx==0.23.1 dirty-equals==0.11 \
  inline-snapshot==0.37.0 time-machine==3.6.0 httpx2==2.17.0 "http-snapshot[httpx]==0.1.9" \
  hypothesis==6.170.27 opentelemetry-sdk==1.45.2 nest-asyncio==1.6.0 rich==15.0.0
"$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  --dest "$WORK/sdist" "openai==$OPENAI" "anthropic==$ANTHROPIC"
tar -xzf "$WORK/sdist/openai-$OPENAI.tar.gz" -C "$WORK"
tar -xzf "$WORK/sdist/anthropic-$ANTHROPIC.tar.gz" -C "$WORK"
sed -i 's/^api_key = "My API Key"$/api_key = os.environ["TEST_API_KEY"]/' "$WORK/openai-$OPENAI/tests/conftest.py"
sed -i 's/^api_key = "my-anthropic-api-key"$/api_key = os.environ["TEST_API_KEY"]/' "$WORK/anthropic-$ANTHROPIC/tests/conftest.py"
grep -q 'os.environ\["TEST_API_KEY"\]' "$WORK/openai-$OPENAI/tests/conftest.py"
grep -q 'os.environ\["TEST_API_KEY"\]' "$WORK/anthropic-$ANTHROPIC/tests/conftest.py"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw=$(port)
mkdir -p "$WORK/gw"
{
  printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:0"\n' "$gw"
  # Every model name the suites use, to the built-in mock provider.
  for m in 'gpt-*' 'text-*' 'claude-*' 'model' 'model_id' 'prompt:*'; do
    printf '[[models]]\nname = "%s"\nprovider = "mock"\n' "$m"
  done
} > "$WORK/gw/h.toml"
(cd "$WORK/gw" && HALBERD_LOG=warn exec "$BIN" --config h.toml serve) >"$WORK/gw.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$gw/healthz" >/dev/null && break; sleep 0.1; done
TEST_API_KEY=$(cd "$WORK/gw" && "$BIN" --config h.toml keys create --name sdk-suites --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
export TEST_API_KEY

status=0
echo "openai-python $OPENAI: chat completions, responses, embeddings, models"
(cd "$WORK/openai-$OPENAI" && TEST_API_BASE_URL="http://127.0.0.1:$gw/v1" "$VENV/bin/python" -m pytest -q \
  -p no:cacheprovider \
  tests/api_resources/chat/test_completions.py tests/api_resources/test_responses.py \
  tests/api_resources/test_embeddings.py tests/api_resources/test_models.py \
  -k "(create or (Models and (list or retrieve))) \
      and not (Responses and create_overload) \
      and not (Embeddings and (strict or aiohttp))") || status=1
echo "anthropic-sdk-python $ANTHROPIC: messages (count_tokens included), models"
(cd "$WORK/anthropic-$ANTHROPIC" && TEST_API_BASE_URL="http://127.0.0.1:$gw" "$VENV/bin/python" -m pytest -q \
  -p no:cacheprovider \
  tests/api_resources/test_messages.py tests/api_resources/test_models.py) || status=1
if [ "$status" -ne 0 ]; then
  echo "--- gateway log (last 40 lines)"; tail -40 "$WORK/gw.log"
fi
exit "$status"
