#!/usr/bin/env python3
"""The report of scripts/mpi-compare.sh: reads OUT/results.jsonl (one object per run and size:
bench, impl, run, ranks, size, value, unit) and writes OUT/summary.jsonl (best and median of the
runs of each column, and ratios to mpich-tcp, and of dsm-c-shm to mpich-shm), OUT/table.txt and SVG plots.

    python3 scripts/mpi-compare-report.py OUT COMMIT
"""
import collections
import json
import math
import statistics
import sys

out, commit = sys.argv[1], sys.argv[2]
runs = collections.defaultdict(list)
unit, order = {}, []
for line in open(f"{out}/results.jsonl"):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line)
    key = (r["bench"], r.get("ranks", 2), r["size"], r["impl"])
    runs[key].append(float(r["value"]))
    unit[r["bench"]] = r["unit"]
    if r["bench"] not in order:
        order.append(r["bench"])

COLLECTIVES = {"osu_allreduce", "osu_bcast", "osu_barrier", "osu_reduce", "osu_allgather",
               "osu_alltoall"}
IMPLS = ["dsm-c", "mpich-tcp", "dsm-rust", "dsm-c-shm", "mpich-shm", "osu-dsm", "osu-mpich-tcp"]
present = [i for i in IMPLS if any(k[3] == i for k in runs)]
# (numerator, denominator) of each ratio column.
RATIOS = [("dsm-c", "mpich-tcp"), ("dsm-rust", "mpich-tcp"), ("dsm-c-shm", "mpich-shm"),
          ("osu-dsm", "osu-mpich-tcp")]
ratios = [r for r in RATIOS if r[0] in present and r[1] in present]


def best(bench, vals):
    return max(vals) if unit[bench] == "MB/s" else min(vals)


stats = {}
for (b, n, s, i), vals in runs.items():
    stats[(b, n, s, i)] = (best(b, vals), statistics.median(vals), len(vals))

rows = sorted({(b, n, s) for (b, n, s, _) in stats}, key=lambda k: (order.index(k[0]), k[1], k[2]))
with open(f"{out}/summary.jsonl", "w") as f:
    for b, n, s in rows:
        rec = {"bench": b, "ranks": n, "size": s, "unit": unit[b], "commit": commit}
        for i in present:
            if (b, n, s, i) in stats:
                bv, med, k = stats[(b, n, s, i)]
                rec[i] = {"best": bv, "median": med, "runs": k}
        for a, c in ratios:
            if (b, n, s, a) in stats and (b, n, s, c) in stats and stats[(b, n, s, c)][0] > 0:
                rec[f"{a}/{c}"] = {
                    "best": round(stats[(b, n, s, a)][0] / stats[(b, n, s, c)][0], 3),
                    "median": round(stats[(b, n, s, a)][1] / stats[(b, n, s, c)][1], 3),
                }
        f.write(json.dumps(rec) + "\n")

nruns = max((v[2] for v in stats.values()), default=0)
head = f"{'benchmark':<16}{'n':>2}{'size':>9}"
for i in present:
    head += f"{i + ' best/med':>24}"
head += f"{'unit':>6}"
for a, c in ratios:
    head += f"{a + '/' + c:>24}"
lines = [
    f"# the same C source (benches/mpi-c/osu_mpi.c) through libdsmmpi (dsm-c) and MPICH 4 over tcp",
    f"# (mpich-tcp), the Rust programs (dsm-rust){', the real OSU suite (osu-*)' if 'osu-dsm' in present else ''};",
    f"# best / median of {nruns} interleaved runs; ratios best (median); latency: < 1 is better,",
    f"# bandwidth (MB/s): > 1 is better; commit {commit}",
    head,
]
fmt = lambda x: f"{x:.2f}" if x < 1e5 else f"{x:.3g}"
for b, n, s in rows:
    line = f"{b:<16}{n:>2}{s:>9}"
    for i in present:
        v = stats.get((b, n, s, i))
        line += f"{(fmt(v[0]) + ' / ' + fmt(v[1])) if v else '-':>24}"
    line += f"{unit[b]:>6}"
    for a, c in ratios:
        x, y = stats.get((b, n, s, a)), stats.get((b, n, s, c))
        line += f"{(f'{x[0] / y[0]:.2f} ({x[1] / y[1]:.2f})') if x and y and y[0] > 0 and y[1] > 0 else '-':>24}"
    lines.append(line)
text = "\n".join(lines)
print(text)
open(f"{out}/table.txt", "w").write(text + "\n")


def svg(name, benches, ylabel):
    """Best values against size, log-log; one colour per benchmark (and rank count), one dash
    per column."""
    series = collections.OrderedDict()
    for (b, n, s, i), (bv, _, _) in sorted(stats.items()):
        if b in benches and s > 0 and bv > 0:
            tag = f"{b}" + (f" n={n}" if b in COLLECTIVES else "")
            series.setdefault((tag, i), []).append((s, bv))
    if not series:
        return
    W, H, L, B, R = 980, 560, 70, 50, 300
    xs = [s for pts in series.values() for s, _ in pts]
    ys = [v for pts in series.values() for _, v in pts]
    x0, x1 = math.log2(min(xs)), math.log2(max(xs))
    y0, y1 = math.log10(min(ys)), math.log10(max(ys))
    x1 = x1 if x1 - x0 > 1e-9 else x0 + 1
    y1 = y1 if y1 - y0 > 1e-9 else y0 + 1
    X = lambda s: L + (math.log2(s) - x0) / (x1 - x0) * (W - L - R)
    Y = lambda v: H - B - (math.log10(v) - y0) / (y1 - y0) * (H - B - 30)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
              "#7f7f7f", "#17becf", "#bcbd22"]
    dash = {"dsm-c": "", "mpich-tcp": "6,3", "dsm-rust": "1,3", "mpich-shm": "10,3,2,3", "dsm-c-shm": "2,2",
            "osu-dsm": "3,1", "osu-mpich-tcp": "12,4"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{L}" y="18">{ylabel} against message size (log-log, best of runs), one machine, commit {commit}</text>',
             f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
             f'<line x1="{L}" y1="30" x2="{L}" y2="{H-B}" stroke="black"/>',
             f'<text x="{(W-R)/2}" y="{H-12}">message size (bytes)</text>',
             f'<text x="10" y="{H/2}" transform="rotate(-90 14 {H/2})">{ylabel}</text>']
    for e in range(math.ceil(x0), int(x1) + 1, 2):
        lab = 2**e if e < 10 else f"{2**(e-10)}K" if e < 20 else f"{2**(e-20)}M"
        parts.append(f'<text x="{X(2**e)-10}" y="{H-B+16}">{lab}</text>')
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        if y0 <= e <= y1:
            parts.append(f'<text x="8" y="{Y(10**e)+4}">{10**e:g}</text>')
            parts.append(f'<line x1="{L}" y1="{Y(10**e)}" x2="{W-R}" y2="{Y(10**e)}" stroke="#ddd"/>')
    tags = sorted({t for t, _ in series})
    for k, ((tag, impl), pts) in enumerate(series.items()):
        c = colors[tags.index(tag) % len(colors)]
        d = " ".join(f"{X(s):.1f},{Y(v):.1f}" for s, v in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="{dash.get(impl, "")}" points="{d}"/>')
        parts.append(f'<line x1="{W-R+10}" y1="{40+k*15}" x2="{W-R+40}" y2="{40+k*15}" stroke="{c}" stroke-width="2" stroke-dasharray="{dash.get(impl, "")}"/>')
        parts.append(f'<text x="{W-R+45}" y="{44+k*15}">{tag} {impl}</text>')
    parts.append("</svg>")
    open(f"{out}/{name}", "w").write("\n".join(parts))


svg("latency.svg", {"osu_latency", "osu_latency_mt", "osu_put_latency", "osu_get_latency", "osu_acc_latency"}, "latency (us)")
svg("bandwidth.svg", {"osu_bw", "osu_bibw", "osu_put_bw", "osu_get_bw"}, "bandwidth (MB/s)")
svg("collectives.svg", COLLECTIVES - {"osu_barrier"}, "latency (us)")
print(f"\nmpi-compare: wrote {out}/table.txt, {out}/results.jsonl, {out}/summary.jsonl, "
      f"{out}/latency.svg, {out}/bandwidth.svg, {out}/collectives.svg")
