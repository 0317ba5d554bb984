#!/usr/bin/env python3
"""The plots of scripts/scale-bench.sh: reads OUT/results.jsonl (start-up lines and the
RESULT objects of scale_bench) and writes OUT/startup.svg, OUT/barrier.svg and
OUT/first-write.svg, each a quantity against the number of nodes N (log2 axis), with its floor
where there is one.

    python3 scripts/scale-bench-report.py OUT
"""
import collections
import json
import math
import re
import sys

out = sys.argv[1]
startup, barrier, barrier_floor = {}, {}, {}
writes = collections.defaultdict(dict)  # k -> {N: ratio to the unshared write}
for line in open(f"{out}/results.jsonl"):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line)
    if r.get("bench") == "startup":
        startup[r["nodes"]] = r["slowest_rank_ms"]
        continue
    n = int(r.get("context", {}).get("nodes", 0))
    m = r.get("metric", "")
    if m.startswith("barrier"):
        barrier[n], barrier_floor[n] = r["value"], r["floor"]
    elif (k := re.search(r"page read by (\d+)", m)) and r["floor"] > 0:
        writes[int(k.group(1))][n] = r["value"] / r["floor"]


def plot(name, title, ylabel, series, log_y):
    """`series`: (label, {N: value}, dash) lines against N on a log2 axis."""
    pts = [(n, v) for _, s, _ in series for n, v in s.items() if v > 0]
    if not pts:
        return
    W, H, L, B, R = 860, 480, 70, 50, 230
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    x0, x1 = math.log2(min(n for n, _ in pts)), math.log2(max(n for n, _ in pts))
    y0, y1 = min(fy(v) for _, v in pts), max(fy(v) for _, v in pts)
    if not log_y:
        y0 = min(0.0, y0)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    X = lambda n: L + (math.log2(n) - x0) / (x1 - x0) * (W - L - R)
    Y = lambda v: H - B - (fy(v) - y0) / (y1 - y0) * (H - B - 30)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{L}" y="18">{title}</text>',
             f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
             f'<line x1="{L}" y1="30" x2="{L}" y2="{H-B}" stroke="black"/>',
             f'<text x="{(W-R)/2}" y="{H-12}">nodes N</text>',
             f'<text x="10" y="{H/2}" transform="rotate(-90 14 {H/2})">{ylabel}</text>']
    for e in range(math.ceil(x0), int(x1) + 1):
        parts.append(f'<text x="{X(2**e)-8}" y="{H-B+16}">{2**e}</text>')
    ticks = ([10**e for e in range(math.floor(y0), math.ceil(y1) + 1)] if log_y
             else [y0 + (y1 - y0) * i / 5 for i in range(6)])
    for t in ticks:
        if y0 <= fy(t) <= y1:
            parts.append(f'<text x="8" y="{Y(t)+4}">{t:.3g}</text>')
            parts.append(f'<line x1="{L}" y1="{Y(t)}" x2="{W-R}" y2="{Y(t)}" stroke="#ddd"/>')
    for i, (label, s, dash) in enumerate(series):
        c = colors[i % len(colors)]
        d = " ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v in sorted(s.items()) if v > 0)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="{dash}" points="{d}"/>')
        parts.append(f'<line x1="{W-R+10}" y1="{40+i*16}" x2="{W-R+40}" y2="{40+i*16}" stroke="{c}" stroke-width="2" stroke-dasharray="{dash}"/>')
        parts.append(f'<text x="{W-R+45}" y="{44+i*16}">{label}</text>')
    parts.append("</svg>")
    open(f"{out}/{name}", "w").write("\n".join(parts))
    print(f"scale-bench: wrote {out}/{name}")


if startup:
    first = min(startup)
    linear = {n: startup[first] * n / first for n in startup}
    plot("startup.svg", "start-up to the end of Dsm::init (slowest rank), tcp", "ms",
         [("start-up", startup, ""), (f"linear from N={first}", linear, "6,3")], True)
plot("barrier.svg", "barrier latency against one-way message x ceil(log2 N), tcp", "us",
     [("barrier", barrier, ""), ("floor", barrier_floor, "6,3")], True)
plot("first-write.svg", "first write to a page read by k nodes / the same write unshared", "ratio",
     [(f"k = {k}", s, "") for k, s in sorted(writes.items())], False)
