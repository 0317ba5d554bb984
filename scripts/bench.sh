#!/usr/bin/env bash
# Runs the transport benchmark between two local nodes and prints the table (and JSON lines
# prefixed RESULT) with every result beside the floor measured in the same run. The transport is
# DSM_TRANSPORT's: under the default (auto) two nodes on one host use shared memory, and the
# table adds shm reads and atomics beside the same accesses made directly on a shared mapping;
# DSM_TRANSPORT=tcp measures tcp on loopback.
#   scripts/bench.sh
#   DSM_TRANSPORT=tcp scripts/bench.sh
# With --micro, runs the criterion micro-benchmarks instead (benches/benches/: twin, diff, the
# tcp wire codec, a page fault's round trip, the protocol machine's step), each with a short
# measurement; the rest of the arguments go to criterion (a filter such as `diff`, or
# `--measurement-time 5` for steadier figures).
#   scripts/bench.sh --micro [criterion options]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --micro ]; then
  shift
  exec cargo bench --locked -p benches --bench codec --bench fault --bench machine -- "$@"
fi
cargo build --release --locked -p dsm-core -p dsm-launcher -p benches --bins
exec target/release/dsmrun -n 2 --timeout 600 target/release/transport_bench "$@"
