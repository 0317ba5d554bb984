#!/usr/bin/env bash
# The application suite (benches/src/apps/: fft, lu, radix, stencil, nbody) on the DSM on each
# node count and on 1 and 2 threads of one process, the same programs at the same sizes, runs
# interleaved (every configuration once per round). The first round checks every run against the
# program's serial run (--verify). Prints, per program and configuration, the best and median
# time of the parallel phase and its ratio to 1 thread (below 1: faster than one thread), then
# `RESULT {json}` lines of the summary.
#
#   scripts/app-bench.sh [--quick] [--runs N] [--nodes "1 2 4"] [--programs "fft lu radix stencil nbody"]
#
# Defaults: 5 runs, nodes "1 2 4", every program at sizes where one thread takes about half a
# second; --quick uses small sizes (a check of a few seconds). Transport: DSM_TRANSPORT as
# dsmrun reads it (tcp on loopback by default).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=5 NODES="1 2 4" QUICK=() PROGRAMS="fft lu radix stencil nbody"
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=(--quick); shift;;
    --runs) RUNS=$2; shift 2;;
    --nodes) NODES=$2; shift 2;;
    --programs) PROGRAMS=$2; shift 2;;
    *) echo "app-bench: unknown option $1" >&2; exit 2;;
  esac
done

cargo build --locked --release -p benches --bin app_bench -p dsm-launcher --bin dsmrun >&2
R=$PWD/target/release
OUT=$(mktemp /tmp/app-bench.XXXXXX)
trap 'rm -f "$OUT"' EXIT

for run in $(seq 1 "$RUNS"); do
  verify=()
  [ "$run" = 1 ] && verify=(--verify)
  for p in $PROGRAMS; do
    for t in 1 2; do
      timeout 600 "$R/app_bench" "$p" "${QUICK[@]}" "${verify[@]}" --threads "$t" | tee -a "$OUT" | grep -v '^RESULT' >&2
    done
    for n in $NODES; do
      "$R/dsmrun" -n "$n" --timeout 600 "$R/app_bench" "$p" "${QUICK[@]}" "${verify[@]}" \
        | tee -a "$OUT" | grep -v '^RESULT' >&2
    done
  done
done

python3 - "$OUT" "$PROGRAMS" "$NODES" <<'PY'
import json, statistics, subprocess, sys
path, programs, nodes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = [json.loads(l[len("RESULT "):]) for l in open(path) if l.startswith("RESULT ")]
commit = rows[0]["commit"] if rows else "?"
transport = next((r["transport"] for r in rows if r["mode"] == "dsm"), "?")
print(f"\napplication suite: commit {commit}, transport {transport}, page 4096 B, "
      f"nodes {' '.join(nodes)}, {len(rows)} runs; ratio = time / 1 thread's (same statistic)")
print(f"{'program':8} {'size':>9} {'config':11} {'best ms':>9} {'median ms':>10} "
      f"{'best/t1':>8} {'med/t1':>7} {'verified':>8}")
summary = []
configs = [("threads", 1), ("threads", 2)] + [("dsm", int(n)) for n in nodes]
for p in programs:
    stats = {}
    for mode, n in configs:
        ms = [r["ms"] for r in rows if r["program"] == p and r["mode"] == mode and r["n"] == n]
        ok = any(r["verified"] for r in rows
                 if r["program"] == p and r["mode"] == mode and r["n"] == n)
        if ms:
            stats[(mode, n)] = (min(ms), statistics.median(ms), ok, len(ms))
    base = stats.get(("threads", 1))
    size = next((r["size"] for r in rows if r["program"] == p), "?")
    for (mode, n), (best, med, ok, k) in stats.items():
        rb = best / base[0] if base else float("nan")
        rm = med / base[1] if base else float("nan")
        name = f"{mode} {n}"
        print(f"{p:8} {size:>9} {name:11} {best:9.1f} {med:10.1f} {rb:8.2f} {rm:7.2f} "
              f"{'yes' if ok else 'no':>8}")
        summary.append(json.dumps({
            "bench": "app-summary", "program": p, "size": size, "mode": mode, "n": n,
            "runs": k, "best_ms": best, "median_ms": med, "best_ratio_to_1_thread": rb,
            "median_ratio_to_1_thread": rm, "verified": ok, "transport": transport,
            "commit": commit}))
for line in summary:
    print("RESULT " + line)
PY
