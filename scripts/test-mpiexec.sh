#!/usr/bin/env bash
# Programs started by MPICH's launcher, with no dsmrun and no MPI library: a Rust program (the
# demo), C programs linked with libdsm (ffi/examples), a C MPI program linked with libdsmmpi
# (mpi-compat's mpi.h, built with dsmmpicc), the mpi-compat Rust check and a checkpoint and
# restart (DSM_RESTART=1), each as
# `mpiexec.hydra -n 4` with a hard timeout (MPIEXEC_TIMEOUT, and `timeout` around it).
#   scripts/test-mpiexec.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "test-mpiexec: FAILED: $*" >&2; exit 1; }
command -v mpiexec.hydra >/dev/null || fail "mpiexec.hydra is missing (scripts/setup.sh installs mpich)"
cargo build --locked --release -p dsm-core -p dsm-ffi -p dsmmpi -p tests --bins --lib >/dev/null 2>&1 ||
  cargo build --locked --release -p dsm-core -p dsm-ffi -p dsmmpi -p tests --bins --lib
R=$PWD/target/release
W=$(mktemp -d /tmp/dsm-mpiexec.XXXXXX)
trap 'rm -rf "$W"' EXIT

run() {  # run N PROGRAM ARGS...: prints the job's output; fails on a non-zero status
  local n=$1; shift
  local out
  out=$(MPIEXEC_TIMEOUT=120 timeout -k 5 150 mpiexec.hydra -n "$n" "$@" 2>&1) ||
    { echo "$out" >&2; fail "mpiexec.hydra -n $n $*"; }
  echo "$out"
}
expect() {  # expect COUNT PATTERN OUTPUT
  [ "$(grep -c -- "$2" <<<"$3")" = "$1" ] || { echo "$3" >&2; fail "expected $1 lines with '$2'"; }
}

out=$(run 4 "$R/dsm-demo" 256)
expect 1 "every check passed" "$out"
echo "test-mpiexec: Rust: dsm-demo on 4 ranks ok"

# libdsm.so carries the SONAME libdsm.so.0; the build leaves that link in the target directory.
for ex in hello counter; do
  cc -std=c11 -Wall -Wextra -Werror -O2 -Iffi/include "ffi/examples/$ex.c" -o "$W/$ex" \
    -L"$R" -ldsm -Wl,-rpath,"$R" -lm || fail "$ex.c does not compile against libdsm"
done
out=$(run 4 "$W/hello")
expect 4 "add up to 14" "$out"
out=$(run 4 "$W/counter" 300)
expect 4 "counter 1200, atomic 1200, expected 1200: ok" "$out"
echo "test-mpiexec: C with libdsm: hello and counter on 4 ranks ok"

# A PARMACS program (m4 with the shipped macros): no option, no variable under mpiexec either.
m4 -Ulen -Uindex ffi/parmacs/dsm.m4 ffi/tests/parmacs/check.c.in > "$W/parmacs-check.c" ||
  fail "m4 with ffi/parmacs/dsm.m4"
cc -std=c11 -O2 -Iffi/include "$W/parmacs-check.c" -o "$W/parmacs-check" -L"$R" -ldsm \
  -Wl,-rpath,"$R" || fail "the PARMACS check does not compile against libdsm"
out=$(run 4 "$W/parmacs-check" -p8)
expect 1 "parmacs check ok P=8" "$out"
echo "test-mpiexec: PARMACS program, P=8 threads over 4 ranks ok"

for t in p2p_coll rma; do
  DSMMPI_LIB_DIR=$R mpi-compat/capi/dsmmpicc -Wall -Wextra -Werror -O1 -o "$W/$t" \
    "mpi-compat/capi/tests/c/$t.c" || fail "$t.c does not compile with dsmmpicc"
done
out=$(run 4 "$W/p2p_coll")
expect 4 "c p2p and collectives ok" "$out"
out=$(run 4 "$W/rma")
expect 4 "c rma ok" "$out"
echo "test-mpiexec: C MPI programs with libdsmmpi: p2p_coll and rma on 4 ranks ok"

out=$(run 4 "$R/mpi-check" p2p nonblocking collectives rma)
expect 4 "rma ok" "$out"
echo "test-mpiexec: mpi-compat (Rust MPI-style) on 4 ranks ok"
# Checkpoint under mpiexec, then a restart with DSM_RESTART=1 (no dsmrun): the same result
# bits as 30 steps in one go.
out=$(DSM_CHECKPOINT_DIR="$W/ckpt-ref/%r" DSM_GLOBAL_SIZE=256M run 4 "$R/dsm-restart" stencil 30 10)
want=$(grep -o 'result [0-9a-f]*' <<<"$out") || fail "no result: $out"
DSM_CHECKPOINT_DIR="$W/ckpt/%r" DSM_GLOBAL_SIZE=256M run 4 "$R/dsm-restart" stencil 20 10 >/dev/null
out=$(DSM_RESTART=1 DSM_CHECKPOINT_DIR="$W/ckpt/%r" DSM_GLOBAL_SIZE=256M run 4 "$R/dsm-restart" stencil 30 10)
expect 1 "restarted from epoch 2" "$out"
expect 1 "$want after 30 steps" "$out"
echo "test-mpiexec: checkpoint, then restart with DSM_RESTART=1, on 4 ranks ok"
echo "test-mpiexec: all passed"
