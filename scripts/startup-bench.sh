#!/usr/bin/env bash
# Start-up time of the runtime under each launcher: from the moment the launcher (or, by hand,
# the first process) is started to the end of `Dsm::init` in the slowest rank, for 2, 4 and 8
# nodes on this machine. Prints a table and `RESULT {json}` lines (median of --runs).
#
#   scripts/startup-bench.sh [--runs R] [--nodes "2 4 8"]
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=3 NODES="2 4 8"
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2;;
    --nodes) NODES=$2; shift 2;;
    *) sed -n '2,7p' "$0" >&2; exit 2;;
  esac
done
BIN=${DSM_NETNS_BIN:-target/release}
[ -n "${DSM_NETNS_BIN:-}" ] || cargo build --locked --release -p dsm-core -p dsm-launcher -p benches --bins >/dev/null 2>&1 ||
  { echo "startup-bench: build failed" >&2; exit 1; }
export DSM_TRANSPORT=tcp DSM_GLOBAL_SIZE=1G
unset DSM_RANK DSM_NODES DSM_COORDINATOR DSM_SECRET

# One job; prints "slowest-since-launch-ms slowest-node-init-ms".
measure() {
  local how=$1 n=$2 out
  out=$(mktemp)
  export DSM_BENCH_T0
  DSM_BENCH_T0=$(date +%s%N)
  case $how in
    dsmrun) "$BIN/dsmrun" -n "$n" --timeout 60 "$BIN/startup_bench" >"$out" 2>/dev/null;;
    mpiexec) MPIEXEC_TIMEOUT=60 mpiexec.hydra -n "$n" "$BIN/startup_bench" >"$out" 2>/dev/null;;
    manual)
      local secret port pids=()
      secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
      port=$((20000 + RANDOM % 20000))
      for ((r = 0; r < n; r++)); do
        DSM_RANK=$r DSM_NODES=$n DSM_COORDINATOR=127.0.0.1:$port DSM_SECRET=$secret \
          timeout 60 "$BIN/startup_bench" >>"$out" 2>/dev/null &
        pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p"; done;;
  esac
  python3 - "$out" "$n" <<'PY'
import json, sys
rows = [json.loads(l[7:]) for l in open(sys.argv[1]) if l.startswith("RESULT ")]
if len(rows) != int(sys.argv[2]):
    print("nan nan"); sys.exit()
print(max(r["since_launch_ms"] for r in rows), max(r["node_init_ms"] for r in rows))
PY
  rm -f "$out"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

printf '%-8s %5s %18s %16s\n' launcher nodes "launch->init(ms)" "Node::init(ms)"
for how in dsmrun mpiexec manual; do
  if [ $how = mpiexec ] && ! command -v mpiexec.hydra >/dev/null; then
    echo "startup-bench: SKIPPING mpiexec: mpiexec.hydra not installed"; continue
  fi
  for n in $NODES; do
    total=() init=()
    for ((i = 0; i < RUNS; i++)); do
      read -r t s < <(measure $how "$n")
      total+=("$t"); init+=("$s")
    done
    mt=$(printf '%s\n' "${total[@]}" | median)
    mi=$(printf '%s\n' "${init[@]}" | median)
    printf '%-8s %5s %18.1f %16.1f\n' $how "$n" "$mt" "$mi"
    echo "RESULT {\"bench\":\"startup\",\"launcher\":\"$how\",\"nodes\":$n,\"launch_to_init_ms\":$mt,\"node_init_ms\":$mi,\"runs\":$RUNS}" >&2
  done
done
