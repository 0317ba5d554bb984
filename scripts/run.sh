#!/usr/bin/env bash
# The main job: builds the runtime and runs the embedded default, NODES local nodes
# (default 4) over TCP on loopback, through dsmrun.
#   scripts/run.sh [NODES]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh
NODES=${1:-4}
bash scripts/setup.sh
echo "run: building (release)"
cargo build --release --locked -p dsm-core -p dsm-launcher --bins
echo "run: dsmrun -n $NODES dsm-demo (tcp on loopback)"
exec target/release/dsmrun -n "$NODES" --transport tcp --timeout 300 target/release/dsm-demo
