#!/usr/bin/env bash
# Runs the transport benchmark between two local nodes and prints the table (and JSON lines
# prefixed RESULT) with every result beside the floor measured in the same run. The transport is
# DSM_TRANSPORT's: under the default (auto) two nodes on one host use shared memory, and the
# table adds shm reads and atomics beside the same accesses made directly on a shared mapping;
# DSM_TRANSPORT=tcp measures tcp on loopback.
#   scripts/bench.sh
#   DSM_TRANSPORT=tcp scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p dsm-core -p benches --bins
exec target/release/dsmrun -n 2 --timeout 600 target/release/transport_bench "$@"
