#!/usr/bin/env bash
# The whole test suite, as CI runs it: format, lints, build, every test, docs.
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
step() { echo; echo "== test: $*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (all targets, -D warnings)"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "cargo build"
cargo build --locked --workspace --all-targets
step "cargo test"
# mpich is installed by setup.sh: the mpiexec tests must run, not skip.
DSM_REQUIRE_MPIEXEC=1 cargo test --locked --workspace
step "loom models of the page-state transitions (--cfg loom)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --locked --release -p dsm-core --lib loom
step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps
step "C API: install, compile the examples with pkg-config (shared and static), run on 4 nodes"
bash scripts/test-c-install.sh
step "transport benchmark, quick run (checks it works; numbers are not judged here)"
cargo build --locked --release -p dsm-core -p benches -p tests -p mpi-compat --bins
target/release/dsmrun -n 2 --timeout 120 target/release/transport_bench --quick | grep -v '^RESULT'
step "mpiexec.hydra: Rust, C (libdsm) and C MPI (libdsmmpi) programs started by MPICH's launcher (PMI-1, no dsmrun)"
bash scripts/test-mpiexec.sh
MPIEXEC_TIMEOUT=120 mpiexec.hydra -n 2 target/release/dsm_bench --quick | grep -v '^RESULT'
step "OSU-style programs over mpi-compat, quick run (checks they work; scripts/mpi-compare.sh measures)"
for b in osu_latency osu_bw osu_put_latency osu_acc_latency osu_allreduce; do
  target/release/dsmrun -n 2 --timeout 120 "target/release/$b" --quick | grep -v '^RESULT'
done
step "hosts with their own addresses: network namespaces, nodes started by hand, delay and loss (scripts/netns-test.sh)"
DSM_NETNS_BIN=target/release bash scripts/netns-test.sh
step "soft-RoCE: verbs tests, conformance and benchmark inside a QEMU guest (scripts/test-softroce.sh)"
if [ -n "${DSM_SKIP_SOFTROCE:-}" ]; then
  echo "test: SKIPPING the soft-RoCE stage: DSM_SKIP_SOFTROCE is set"
elif why=$(bash scripts/softroce-vm.sh --check 2>&1); then
  bash scripts/test-softroce.sh --bench --runs 3
else
  echo "test: SKIPPING the soft-RoCE stage: this machine cannot prepare the guest:"
  echo "$why" | sed 's/^/test:   /'
fi
echo
echo "test: all passed"
