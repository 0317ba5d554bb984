#!/usr/bin/env bash
# Runs the transport benchmark between two local nodes over TCP on loopback and prints the
# table (and JSON lines prefixed RESULT) with every result beside the floor measured in the
# same run.
#   scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p dsm-core -p dsm-launcher -p benches --bins
exec target/release/dsmrun -n 2 --timeout 600 target/release/transport_bench "$@"
