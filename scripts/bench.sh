#!/usr/bin/env bash
# Runs the transport benchmark between two local nodes over TCP on loopback and prints the
# table (and JSON lines prefixed RESULT) with every result beside the floor measured in the
# same run.
#   scripts/bench.sh [transport_bench options]
# With --micro, runs the criterion micro-benchmarks instead (benches/benches/: twin, diff, the
# tcp wire codec, a page fault's round trip, the protocol machine's step), each with a short measurement; the rest of the
# arguments go to criterion (a filter such as `diff`, or `--measurement-time 5` for steadier
# figures).
#   scripts/bench.sh --micro [criterion options]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --micro ]; then
  shift
  exec cargo bench --locked -p benches --bench codec --bench fault --bench machine -- "$@"
fi
cargo build --release --locked -p dsm-core -p dsm-launcher -p benches --bins
exec target/release/dsmrun -n 2 --timeout 600 target/release/transport_bench "$@"
