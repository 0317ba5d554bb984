//! The picture of a job's profile: a self-contained HTML page with one SVG chart per node
//! (a stacked bar per phase: where the phase's time went) and a table of the hottest pages.

use std::fmt::Write;

use serde_json::Value;

/// The time categories of a bar, bottom up: counter name, label, colour. What the phase's wall
/// time leaves over is drawn as "compute" on top.
const CATEGORIES: [(&str, &str, &str); 6] = [
    ("read_fault_ns", "read faults", "#4e79a7"),
    ("write_fault_ns", "write faults", "#f28e2b"),
    ("release_ns", "release (diffs)", "#e15759"),
    ("acquire_ns", "acquire (invalidations)", "#76b7b2"),
    ("lock_wait_ns", "lock waits", "#b07aa1"),
    ("barrier_wait_ns", "barrier waits", "#9c755f"),
];
const COMPUTE: &str = "#d9d9d9";

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One node's chart: a bar per phase, heights in the same scale for every node (`max_ns`).
fn chart(node: &Value, max_ns: u64) -> String {
    let phases = node["phases"].as_array().cloned().unwrap_or_default();
    let (w, h, left) = (900.0, 220.0, 50.0);
    let bar = ((w - left) / phases.len().max(1) as f64).min(60.0);
    let scale = h / max_ns.max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg width=\"{w}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"10\">",
        h + 30.0
    );
    let _ = write!(
        s,
        "<text x=\"0\" y=\"10\">{:.1} ms</text><line x1=\"{left}\" y1=\"0\" x2=\"{left}\" y2=\"{h}\" stroke=\"#000\"/>",
        max_ns as f64 / 1e6
    );
    for (i, p) in phases.iter().enumerate() {
        let x = left + i as f64 * bar;
        let wall = u(p, "end_ns").saturating_sub(u(p, "start_ns"));
        let mut y = h;
        let mut tip = format!("phase {i}: {:.2} ms", wall as f64 / 1e6);
        let mut used = 0;
        for (k, label, colour) in CATEGORIES {
            let v = u(p, k);
            used += v;
            let hh = v as f64 * scale;
            y -= hh;
            let _ = write!(tip, "\n{label}: {:.2} ms", v as f64 / 1e6);
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{hh:.1}\" fill=\"{colour}\"/>",
                (bar - 1.0).max(0.5)
            );
        }
        let rest = wall.saturating_sub(used);
        let hh = rest as f64 * scale;
        y -= hh;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{hh:.1}\" fill=\"{COMPUTE}\"><title>{}\ncompute and the rest: {:.2} ms</title></rect>",
            (bar - 1.0).max(0.5),
            esc(&tip),
            rest as f64 / 1e6
        );
        if phases.len() <= 40 || i % 10 == 0 {
            let _ = write!(s, "<text x=\"{x:.1}\" y=\"{}\">{i}</text>", h + 12.0);
        }
    }
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{}\">phase</text></svg>",
        h + 26.0
    );
    s
}

/// The whole page: `nodes` the nodes' profiles, `merged` the job's.
pub(crate) fn html(nodes: &[Value], merged: &Value, summary: &str) -> String {
    let max_ns = nodes
        .iter()
        .flat_map(|n| n["phases"].as_array().cloned().unwrap_or_default())
        .map(|p| u(&p, "end_ns").saturating_sub(u(&p, "start_ns")))
        .max()
        .unwrap_or(1);
    let mut s = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>dsm profile</title><style>\
         body{font-family:sans-serif;margin:20px}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}\
         .false{background:#fde0a0}.true{background:#f4a6a6}.k{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}\
         </style></head><body><h1>Where the time goes</h1><p>",
    );
    for (_, label, colour) in CATEGORIES {
        let _ = write!(
            s,
            "<span class=\"k\" style=\"background:{colour}\"></span>{label}"
        );
    }
    let _ = write!(
        s,
        "<span class=\"k\" style=\"background:{COMPUTE}\"></span>compute and the rest</p>"
    );
    for (rank, n) in nodes.iter().enumerate() {
        let _ = write!(s, "<h2>rank {rank}</h2>{}", chart(n, max_ns));
    }
    let _ = write!(
        s,
        "<h2>Hottest pages</h2><table><tr><th>list</th><th>page</th><th>faults</th>\
         <th>invalidations</th><th>diffs</th><th>diff bytes</th><th>writers (lines)</th><th>sharing</th></tr>"
    );
    for (title, key) in [
        ("faults", "hottest_by_faults"),
        ("invalidations", "hottest_by_invalidations"),
        ("diffs", "hottest_by_diffs"),
    ] {
        for r in merged[key].as_array().into_iter().flatten() {
            let writers: Vec<String> = r["writers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| format!("{} ({})", u(w, "rank"), w["lines"].as_str().unwrap_or("")))
                .collect();
            let flag = r["sharing"].as_str().unwrap_or("");
            let _ = write!(
                s,
                "<tr class=\"{flag}\"><td>{title}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{flag}</td></tr>",
                esc(r["name"].as_str().unwrap_or("")),
                r["address"].as_str().unwrap_or(""),
                u(r, "faults"),
                u(r, "invalidations"),
                u(r, "diffs"),
                u(r, "diff_bytes"),
                writers.join(", ")
            );
        }
    }
    let _ = write!(
        s,
        "</table><h2>Summary</h2><pre>{}</pre></body></html>",
        esc(summary)
    );
    s
}
