#!/usr/bin/env bash
# Our osu_* programs (mpi-compat over the runtime, through dsmrun) side by side with their MPI
# counterparts (benches/mpi-c/osu_mpi.c) under MPICH, in the same run, on this machine:
# MPICH over its TCP path (ch4:ucx with MPIR_CVAR_NOLOCAL=1 UCX_TLS=tcp,self
# UCX_NET_DEVICES=lo) and over shared memory (its default for local ranks). Benchmarks are
# interleaved (ours, MPICH tcp, MPICH shm for each program) so that all three see the same load.
#
#   scripts/mpi-compare.sh [--quick] [--runs N] [-m MAX] [--only "osu_latency osu_bw"]
#
# Installs MPICH (mpich, libmpich-dev) from Debian when mpicc is missing. Prints a table with
# ratios (ours / MPICH-tcp: below 1 is better for latency, above 1 for bandwidth), and writes
# target/mpi-compare/{results.jsonl,table.txt,latency.svg,bandwidth.svg}. With --runs N each
# program runs N times and the best result of each side is kept. Not part of scripts/test.sh
# (it takes minutes). MPI_COMPARE_TIMEOUT (seconds, default 600) bounds each program: MPICH's
# one-sided programs over UCX's tcp transport have been seen to hang here (osu_fop_latency).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=1
opts=()
only="osu_latency osu_bw osu_bibw osu_put_latency osu_get_latency osu_put_bw osu_get_bw osu_acc_latency osu_fop_latency osu_cas_latency osu_barrier osu_allreduce osu_bcast"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) opts+=(--quick) ;;
    --runs) runs="$2"; shift ;;
    -m|-i|-x) opts+=("$1" "$2"); shift ;;
    --only) only="$2"; shift ;;
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
cargo build --locked --release -p dsm-core -p benches --bins
mpicc -O2 -Wno-stringop-overflow -o "$out/osu_mpi" benches/mpi-c/osu_mpi.c
: > "$out/results.jsonl"

# Two ranks for point-to-point and RMA; the collectives too (same job size on both sides).
run_ours() {
  target/release/dsmrun -n 2 --timeout "$limit" "target/release/$1" "${opts[@]}" 2>/dev/null \
    | grep '^RESULT ' | sed 's/^RESULT //' | sed 's/"impl":"dsm"/"impl":"dsm-tcp"/'
}
run_mpich() { # $1 bench, $2 label, then environment assignments
  local b="$1" label="$2"; shift 2
  env "$@" timeout "$limit" mpiexec -n 2 "$out/osu_mpi" "$b" "${opts[@]}" 2>/dev/null \
    | grep '^RESULT ' | sed 's/^RESULT //' | sed "s/\"impl\":\"mpi\"/\"impl\":\"$label\"/"
}

for b in $only; do
  for _ in $(seq "$runs"); do
    echo "mpi-compare: $b" >&2
    run_ours "$b" >> "$out/results.jsonl" || echo "mpi-compare: $b (ours) failed" >&2
    run_mpich "$b" mpich-tcp MPIR_CVAR_NOLOCAL=1 UCX_TLS=tcp,self UCX_NET_DEVICES=lo \
      >> "$out/results.jsonl" || echo "mpi-compare: $b (MPICH tcp) failed" >&2
    run_mpich "$b" mpich-shm MPIR_CVAR_NOLOCAL=0 >> "$out/results.jsonl" \
      || echo "mpi-compare: $b (MPICH shm) failed" >&2
  done
done

python3 - "$out" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, sys, collections
out, commit = sys.argv[1], sys.argv[2]
best = {}
for line in open(f"{out}/results.jsonl"):
    r = json.loads(line)
    key = (r["bench"], r["size"], r["impl"])
    bw = r["unit"] == "MB/s"
    v = r["value"]
    if key not in best or (v > best[key] if bw else v < best[key]):
        best[key] = v
unit = {}
for line in open(f"{out}/results.jsonl"):
    r = json.loads(line); unit[r["bench"]] = r["unit"]
rows = sorted({(b, s) for (b, s, _) in best}, key=lambda k: (list(unit).index(k[0]), k[1]))
lines = [f"# osu_* over the DSM runtime (mpi-compat, tcp) vs MPICH 4 in the same run; 2 ranks; commit {commit}",
         f"{'benchmark':<18}{'size':>9}{'dsm-tcp':>12}{'mpich-tcp':>12}{'mpich-shm':>12}{'unit':>6}{'dsm/tcp':>9}{'dsm/shm':>9}"]
for b, s in rows:
    d, t, m = (best.get((b, s, i)) for i in ("dsm-tcp", "mpich-tcp", "mpich-shm"))
    f = lambda x: f"{x:12.2f}" if x is not None else f"{'-':>12}"
    ratio = lambda a, c: f"{a / c:9.2f}" if a and c else f"{'-':>9}"
    lines.append(f"{b:<18}{s:>9}{f(d)}{f(t)}{f(m)}{unit[b]:>6}{ratio(d, t)}{ratio(d, m)}")
text = "\n".join(lines)
print(text)
open(f"{out}/table.txt", "w").write(text + "\n")

def svg(name, benches, ylabel, logy):
    import math
    series = collections.OrderedDict()
    for (b, s, i), v in sorted(best.items()):
        if b in benches and s > 0 and v > 0:
            series.setdefault(f"{b} {i}", []).append((s, v))
    if not series:
        return
    W, H, L, B = 900, 520, 70, 50
    xs = [s for pts in series.values() for s, _ in pts]
    ys = [v for pts in series.values() for _, v in pts]
    x0, x1 = math.log2(min(xs)), math.log2(max(xs)) or 1
    y0, y1 = math.log10(min(ys)), math.log10(max(ys))
    if y1 - y0 < 1e-9: y1 = y0 + 1
    if x1 - x0 < 1e-9: x1 = x0 + 1
    X = lambda s: L + (math.log2(s) - x0) / (x1 - x0) * (W - L - 240)
    Y = lambda v: H - B - (math.log10(v) - y0) / (y1 - y0) * (H - B - 30)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"]
    dash = {"dsm-tcp": "", "mpich-tcp": "6,3", "mpich-shm": "2,3"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{L}" y="18">{ylabel} against message size (log-log), 2 ranks on one machine, commit {commit}</text>',
             f'<line x1="{L}" y1="{H-B}" x2="{W-240}" y2="{H-B}" stroke="black"/>',
             f'<line x1="{L}" y1="30" x2="{L}" y2="{H-B}" stroke="black"/>',
             f'<text x="{(W-240)/2}" y="{H-12}">message size (bytes)</text>',
             f'<text x="10" y="{H/2}" transform="rotate(-90 14 {H/2})">{ylabel}</text>']
    for e in range(int(x0), int(x1) + 1, 2):
        parts.append(f'<text x="{X(2**e)-10}" y="{H-B+16}">{2**e if e < 10 else str(2**(e-10))+"K" if e < 20 else str(2**(e-20))+"M"}</text>')
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        if y0 <= e <= y1:
            parts.append(f'<text x="8" y="{Y(10**e)+4}">{10**e:g}</text>')
            parts.append(f'<line x1="{L}" y1="{Y(10**e)}" x2="{W-240}" y2="{Y(10**e)}" stroke="#ddd"/>')
    benches_seen = sorted({k.split()[0] for k in series})
    for n, (k, pts) in enumerate(series.items()):
        b, impl = k.split()
        c = colors[benches_seen.index(b) % len(colors)]
        d = " ".join(f"{X(s):.1f},{Y(v):.1f}" for s, v in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="{dash.get(impl, "")}" points="{d}"/>')
        parts.append(f'<line x1="{W-230}" y1="{40+n*16}" x2="{W-200}" y2="{40+n*16}" stroke="{c}" stroke-width="2" stroke-dasharray="{dash.get(impl, "")}"/>')
        parts.append(f'<text x="{W-195}" y="{44+n*16}">{k}</text>')
    parts.append("</svg>")
    open(f"{out}/{name}", "w").write("\n".join(parts))
svg("latency.svg", {"osu_latency", "osu_put_latency", "osu_get_latency", "osu_acc_latency"}, "latency (us)", True)
svg("bandwidth.svg", {"osu_bw", "osu_bibw", "osu_put_bw", "osu_get_bw"}, "bandwidth (MB/s)", True)
print(f"\nmpi-compare: wrote {out}/table.txt, {out}/results.jsonl, {out}/latency.svg, {out}/bandwidth.svg")
PY
