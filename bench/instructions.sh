#!/usr/bin/env bash
# Instructions per prompt-injection assessment of a 4 KiB varied text, counted
# by cachegrind: a figure the host's load cannot move, for comparing commits on
# a noisy machine (the time figures come from the criterion bench and from
# `examples/injection_timing.rs`). Runs the example untimed twice, with zero
# and with ROUNDS rounds over the bench's 64 varied texts, and divides the
# difference, so start-up (compiling the rules, building tables, warming the
# lazy DFA on every text) drops out.
#
#   bench/instructions.sh
#   ROUNDS=8 bench/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-4}"
command -v valgrind >/dev/null || { echo "needs valgrind (cachegrind)" >&2; exit 1; }
cargo build --release --locked -p halberd-guard --example injection_timing >/dev/null
BIN="$PWD/target/release/examples/injection_timing"
count() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$BIN" assess "$1" 2>&1 | tr -d ',' | sed -n 's/.*I *refs: *\([0-9]*\).*/\1/p'
}
base="$(count 0)"
with="$(count "$ROUNDS")"
echo "instructions per assessment (varied 4 KiB text): $(( (with - base) / (ROUNDS * 64) ))"
