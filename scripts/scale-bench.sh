#!/usr/bin/env bash
# How the costs grow with the job, over tcp on this machine (release binaries; one job at a
# time): start-up to the end of Dsm::init (startup_bench: the slowest rank, from the launcher's
# start, and the largest resident memory of a rank then), barrier latency beside one-way message x ceil(log2 N), and the first write to a page
# read by k nodes beside the same write to a page nobody reads (scale_bench). Writes
# target/scale-bench/results.jsonl, prints a table, and plots each against N
# (scripts/scale-bench-report.py: startup.svg, barrier.svg, first-write.svg).
#   scripts/scale-bench.sh                       N = 8 16 32 64 128
#   DSM_SCALE_BENCH_NODES="8 64" scripts/scale-bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
fail() { echo "scale-bench: FAILED: $*" >&2; exit 1; }
cargo build --locked --release -q -p dsm-launcher -p benches --bins || fail "cannot build"
B=target/release
OUT=target/scale-bench
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
export DSM_GLOBAL_SIZE=256M
for n in ${DSM_SCALE_BENCH_NODES:-8 16 32 64 128}; do
  out=$(DSM_BENCH_T0=$(date +%s%N) timeout -k 5 300 "$B/dsmrun" -n "$n" --transport tcp --timeout 280 \
        "$B/startup_bench" 2>&1) || { echo "$out" | tail; fail "startup_bench on $n nodes"; }
  ms=$(grep -o '"since_launch_ms":[0-9.]*' <<<"$out" | cut -d: -f2 | sort -g | tail -1)
  rss=$(grep -o '"rss_kib":[0-9]*' <<<"$out" | cut -d: -f2 | sort -g | tail -1)
  echo "{\"bench\":\"startup\",\"nodes\":$n,\"slowest_rank_ms\":$ms,\"largest_rss_kib\":${rss:-null}}" >> "$OUT/results.jsonl"
  printf 'scale-bench: %4d nodes: start-up %8.1f ms (slowest rank, from the launcher start), largest resident memory %s KiB\n' "$n" "$ms" "${rss:-?}"
  out=$(timeout -k 5 600 "$B/dsmrun" -n "$n" --transport tcp --timeout 580 "$B/scale_bench" 2>&1) ||
    { echo "$out" | tail; fail "scale_bench on $n nodes"; }
  grep -v '^RESULT' <<<"$out" | grep -E 'barrier|first write' | sed "s/^/scale-bench: $n nodes: /"
  grep '^RESULT' <<<"$out" | sed 's/^RESULT //' >> "$OUT/results.jsonl"
done
echo "scale-bench: results in $OUT/results.jsonl"
python3 scripts/scale-bench-report.py "$OUT" || fail "plotting"
