#!/usr/bin/env bash
# The data endpoint's benchmark in one command (not part of the test suite):
#
#     examples/bench_endpoint.sh [SECONDS]
#
# 1. Builds the release binary and the bench_serve example.
# 2. Side by side with the reference Node endpoint and the machine's RSA ceiling, in one run:
#    ../shared/bench/endpoint/run.sh (or $PEER_BENCH) when it exists and wrk, node, openssl and
#    python3 with cryptography are installed; otherwise says what is missing and goes on.
# 3. The realistic paths (examples/bench_serve.rs): ping, INIT with the token lookup, a storing
#    data_exchange, /healthz under saturation, printed with their ratios to ping.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
cargo build --release --quiet --bin flowctl --example bench_serve
peer="${PEER_BENCH:-../shared/bench/endpoint/run.sh}"
missing=""
for t in wrk node openssl python3; do command -v "$t" >/dev/null || missing="$missing $t"; done
python3 -c 'import cryptography' 2>/dev/null || missing="$missing python3-cryptography"
if [ ! -f "$peer" ]; then
  echo "skipped: the side-by-side run ($peer not found; set PEER_BENCH)"
elif [ -n "$missing" ]; then
  echo "skipped: the side-by-side run (missing:$missing)"
else
  echo "== side by side: flowctl serve, the Node peer, the RSA ceiling ($peer)"
  FLOWCTL="$PWD/target/release/flowctl" DUR="$secs" bash "$peer"
fi
if command -v wrk >/dev/null; then
  echo "== realistic paths (examples/bench_serve.rs)"
  FLOWCTL_BIN="$PWD/target/release/flowctl" target/release/examples/bench_serve "$secs"
else
  echo "skipped: the realistic paths (missing: wrk)"
fi
