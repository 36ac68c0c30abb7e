#!/bin/sh
# Benchmark of `flowctl bulk` against the sandbox (50 ms latency): achieved/target rate at
# --rate 80, 1000 and 5000, CPU seconds per 1,000 messages, peak RSS of a 10k-row run and of
# a 1M-row dry run. Not part of the test suite. See examples/bench_bulk.rs.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --bin flowctl --example bench_bulk
exec target/release/examples/bench_bulk
