#!/usr/bin/env bash
# The same C benchmark source built against libdsmmpi (through dsmmpicc) and against MPICH
# (mpicc), run side by side on this machine, interleaved, with the project's Rust programs
# (mpi-compat, benches/src/bin/osu_*.rs) as a third column:
#
#   dsm-c      benches/mpi-c/osu_mpi.c built with mpi-compat/capi/dsmmpicc, under dsmrun
#              with DSM_TRANSPORT=tcp
#   mpich-tcp  the same source built with mpicc, MPICH over its TCP path (ch4:ucx with
#              MPIR_CVAR_NOLOCAL=1 UCX_TLS=tcp,self UCX_NET_DEVICES=lo)
#   dsm-rust   the Rust osu_* program of the same name, under dsmrun (tcp)
#   dsm-c-shm  (--shm) dsm-c with DSM_TRANSPORT=shm, what `auto` picks for ranks of one host
#   mpich-shm  (--shm) the MPICH build over shared memory (its default for local ranks)
#
# With OSU_SRC naming an OSU Micro-Benchmarks 7.x source tree (not part of this repository;
# nothing of it is committed), the real OSU programs are also built twice (copies under
# target/mpi-compare/osu-{dsm,mpich}, configured with CC=dsmmpicc and CC=mpicc) and run as two
# more columns, osu-dsm and osu-mpich-tcp. Benchmarks that osu_mpi.c does not have
# (osu_reduce, osu_allgather, osu_alltoall, osu_latency_mt) run only as those two columns, so
# only with OSU_SRC; they are in the default list and skipped without it.
#
#   scripts/mpi-compare.sh [--runs N] [--quick] [-m MAX] [--only "osu_latency osu_bw"]
#                          [--ranks "2 4"] [--shm]
#
# Every run of every column is interleaved (one program of each column, then the next run),
# so that all columns see the same load; one program runs at a time. --runs N (default 3)
# runs each program N times; the table gives the best and the median of the N runs of each
# column, and ratios of dsm-c and dsm-rust to mpich-tcp and of dsm-c-shm to mpich-shm
# (latency: below 1 is better;
# bandwidth: above 1 is better). --ranks gives the job sizes of the collectives (default
# "2 4"); point-to-point and RMA programs always run on 2 ranks.
#
# Writes target/mpi-compare/: results.jsonl (one line per run and size), summary.jsonl (best,
# median and ratios per benchmark, size and rank count), table.txt, latency.svg,
# bandwidth.svg, collectives.svg. Installs MPICH (mpich, libmpich-dev) from Debian when mpicc
# or its header is missing. Not part of scripts/test.sh (it takes many minutes).
# MPICH's ranks poll without sleeping: with more ranks than cores (4 on 2 vCPUs) its numbers
# measure the oversubscription; give small -i/-x there.
# MPI_COMPARE_TIMEOUT (seconds, default 600) bounds each program: MPICH's one-sided programs
# over UCX's tcp transport have been seen to hang here (osu_fop_latency).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
opts=()
osu_opts=()
only="osu_latency osu_bw osu_bibw osu_put_latency osu_get_latency osu_put_bw osu_get_bw osu_acc_latency osu_fop_latency osu_cas_latency osu_barrier osu_allreduce osu_bcast osu_reduce osu_allgather osu_alltoall osu_latency_mt"
# Benchmarks of the real OSU suite that benches/mpi-c/osu_mpi.c and the Rust programs lack.
osu_only=" osu_reduce osu_allgather osu_alltoall osu_latency_mt "
coll_ranks="2 4"
shm=no
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) opts+=(--quick); osu_opts+=(-m 4096 -i 20 -x 2) ;;
    --runs) runs="$2"; shift ;;
    -m) opts+=("$1" "$2"); osu_opts+=(-m "$2"); shift ;;
    -i|-x) opts+=("$1" "$2"); osu_opts+=("$1" "$2"); shift ;;
    --only) only="$2"; shift ;;
    --ranks) coll_ranks="$2"; shift ;;
    --shm) shm=yes ;;
    *) echo "mpi-compare: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

have_mpi_dev() { echo '#include <mpi.h>' | mpicc -E - >/dev/null 2>&1; }
if ! command -v mpiexec >/dev/null || ! have_mpi_dev || ! command -v python3 >/dev/null; then
  echo "mpi-compare: installing MPICH and python3 from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mpich libmpich-dev python3 >/dev/null
fi

limit=${MPI_COMPARE_TIMEOUT:-600}
out=target/mpi-compare
mkdir -p "$out"
cargo build --locked --release -p dsm-core -p dsm-launcher -p dsmmpi -p benches --bins --lib
DSMMPI_LIB_DIR=$PWD/target/release mpi-compat/capi/dsmmpicc -O2 -o "$out/osu_mpi.dsm" \
  benches/mpi-c/osu_mpi.c
mpicc -O2 -Wno-stringop-overflow -o "$out/osu_mpi.mpich" benches/mpi-c/osu_mpi.c

# The real OSU suite, when its source is given: one build per library.
osu_path() { # $1 build dir, $2 bench: the program's path, or nothing
  find "$1/c/mpi" -type f -name "$2" -perm -u+x 2>/dev/null | head -1
}
if [ -n "${OSU_SRC:-}" ]; then
  for lib in dsm mpich; do
    dir=$out/osu-$lib
    if [ ! -x "$(osu_path "$dir" osu_latency)" ]; then
      echo "mpi-compare: building the OSU suite of $OSU_SRC against $lib in $dir" >&2
      rm -rf "$dir" && mkdir -p "$dir" && cp -a "$OSU_SRC/." "$dir/"
      if [ ! -x "$dir/configure" ]; then (cd "$dir" && autoreconf -vi >/dev/null 2>&1); fi
      if [ $lib = dsm ]; then
        cc=$PWD/mpi-compat/capi/dsmmpicc cxx=$PWD/mpi-compat/capi/dsmmpicxx
      else
        cc=mpicc cxx=mpicxx
      fi
      (cd "$dir" && (make distclean >/dev/null 2>&1 || true) \
        && CC=$cc CXX=$cxx ./configure >configure.out 2>&1 && make -j2 >make.out 2>&1) \
        || echo "mpi-compare: the OSU build against $lib failed (see $dir)" >&2
    fi
  done
fi

: > "$out/results.jsonl"
tcp_env=(MPIR_CVAR_NOLOCAL=1 UCX_TLS=tcp,self UCX_NET_DEVICES=lo)

# Each runner prints RESULT objects, one per size, on standard output.
label() { # $1 impl, $2 run: rewrites the "impl" field and adds the run number
  sed 's/^RESULT //' | sed -E "s/\"impl\":\"[^\"]*\"/\"impl\":\"$1\",\"run\":$2/"
}
run_dsm_c() { # $1 bench, $2 ranks, $3 transport
  DSM_TRANSPORT=$3 target/release/dsmrun -n "$2" --timeout "$limit" "$out/osu_mpi.dsm" "$1" \
    "${opts[@]}" 2>/dev/null | grep '^RESULT '
}
run_dsm_rust() {
  DSM_TRANSPORT=tcp target/release/dsmrun -n "$2" --timeout "$limit" "target/release/$1" \
    "${opts[@]}" 2>/dev/null | grep '^RESULT '
}
run_mpich() { # $1 bench, $2 ranks, then environment assignments
  local b="$1" n="$2"; shift 2
  env "$@" timeout "$limit" mpiexec -n "$n" "$out/osu_mpi.mpich" "$b" "${opts[@]}" 2>/dev/null \
    | grep '^RESULT '
}
# The real OSU programs print "size value" lines (barrier: the value alone).
osu_results() { # $1 bench, $2 ranks, $3 unit
  awk -v b="$1" -v n="$2" -v u="$3" '
    /^#/ || NF == 0 { next }
    NF == 1 && $1 + 0 == $1 { printf "RESULT {\"bench\":\"%s\",\"impl\":\"osu\",\"ranks\":%d,\"size\":0,\"value\":%s,\"unit\":\"%s\"}\n", b, n, $1, u; next }
    $1 ~ /^[0-9]+$/ && $2 + 0 == $2 { printf "RESULT {\"bench\":\"%s\",\"impl\":\"osu\",\"ranks\":%d,\"size\":%d,\"value\":%s,\"unit\":\"%s\"}\n", b, n, $1, $2, u }'
}
run_osu() { # $1 lib, $2 bench, $3 ranks, $4 unit
  local p
  p=$(osu_path "$out/osu-$1" "$2")
  [ -n "$p" ] || return 0
  if [ "$1" = dsm ]; then
    DSM_TRANSPORT=tcp target/release/dsmrun -n "$3" --timeout "$limit" "$p" "${osu_opts[@]}" \
      2>/dev/null
  else
    env "${tcp_env[@]}" timeout "$limit" mpiexec -n "$3" "$p" "${osu_opts[@]}" 2>/dev/null
  fi | osu_results "$2" "$3" "$4"
}

for b in $only; do
  ours=yes
  if [ "${osu_only#* $b }" != "$osu_only" ]; then
    ours=no
    if [ -z "${OSU_SRC:-}" ]; then
      echo "mpi-compare: $b needs the real OSU suite (OSU_SRC): skipped" >&2
      continue
    fi
  fi
  case $b in
    osu_barrier|osu_allreduce|osu_bcast|osu_reduce|osu_allgather|osu_alltoall) sizes=$coll_ranks ;;
    *) sizes=2 ;;
  esac
  case $b in
    osu_bw|osu_bibw|osu_put_bw|osu_get_bw) unit=MB/s ;;
    *) unit=us ;;
  esac
  for n in $sizes; do
    for r in $(seq "$runs"); do
      echo "mpi-compare: $b, $n ranks, run $r of $runs" >&2
      if [ $ours = yes ]; then
        { run_dsm_c "$b" "$n" tcp || echo "mpi-compare: $b (dsm-c) failed" >&2; } \
          | label dsm-c "$r" >> "$out/results.jsonl"
        { run_mpich "$b" "$n" "${tcp_env[@]}" || echo "mpi-compare: $b (MPICH tcp) failed" >&2; } \
          | label mpich-tcp "$r" >> "$out/results.jsonl"
        { run_dsm_rust "$b" "$n" || echo "mpi-compare: $b (dsm-rust) failed" >&2; } \
          | label dsm-rust "$r" >> "$out/results.jsonl"
      fi
      if [ $shm = yes ] && [ $ours = yes ]; then
        { run_dsm_c "$b" "$n" shm || echo "mpi-compare: $b (dsm-c over shm) failed" >&2; } \
          | label dsm-c-shm "$r" >> "$out/results.jsonl"
        { run_mpich "$b" "$n" MPIR_CVAR_NOLOCAL=0 || echo "mpi-compare: $b (MPICH shm) failed" >&2; } \
          | label mpich-shm "$r" >> "$out/results.jsonl"
      fi
      if [ -n "${OSU_SRC:-}" ]; then
        { run_osu dsm "$b" "$n" $unit || true; } | label osu-dsm "$r" >> "$out/results.jsonl"
        { run_osu mpich "$b" "$n" $unit || true; } | label osu-mpich-tcp "$r" >> "$out/results.jsonl"
      fi
    done
  done
done

python3 scripts/mpi-compare-report.py "$out" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
