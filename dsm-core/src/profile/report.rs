//! The job's profile, merged at rank 0 from the nodes' profiles: per-node totals, the hottest
//! pages, and the pages written by several nodes flagged as false or true sharing.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use super::record::COUNTERS;

/// How many pages each "hottest" list holds.
const HOT: usize = 10;

/// How several nodes wrote one page, at 64-byte-line granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// One writer (or none).
    Private,
    /// Several writers whose lines are disjoint.
    False,
    /// Several writers, some of whose lines overlap.
    True,
}

impl Sharing {
    fn name(self) -> &'static str {
        match self {
            Sharing::Private => "private",
            Sharing::False => "false",
            Sharing::True => "true",
        }
    }
}

/// Classifies a page from its writers: `exact` the lines each non-home writer's diffs changed
/// (node, mask); `home`, when the home wrote the page, the home's rank and the lines that
/// changed in its copy (its stores and the others' diffs). Returns the flag and the lines
/// attributed to each writer (the home's: the changed lines no other writer explains).
pub fn classify(
    exact: &[(usize, u64)],
    home: Option<(usize, u64)>,
) -> (Sharing, Vec<(usize, u64)>) {
    let mut writers: Vec<(usize, u64)> = exact.iter().copied().filter(|&(_, m)| m != 0).collect();
    let others = writers.iter().fold(0u64, |a, &(_, m)| a | m);
    let mut overlap = writers
        .iter()
        .enumerate()
        .any(|(i, &(_, a))| writers[i + 1..].iter().any(|&(_, b)| a & b != 0));
    if let Some((h, changed)) = home {
        let own = changed & !others;
        // A home that wrote but changed no line alone wrote only lines others wrote too.
        if own == 0 && !writers.is_empty() {
            overlap = true;
        }
        writers.push((h, own));
        writers.sort_unstable();
    }
    let flag = if writers.len() < 2 {
        Sharing::Private
    } else if overlap {
        Sharing::True
    } else {
        Sharing::False
    };
    (flag, writers)
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn mask(v: &Value, k: &str) -> u64 {
    v.get(k)
        .and_then(Value::as_str)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .unwrap_or(0)
}

/// One page over every node.
#[derive(Default)]
struct Merged {
    name: String,
    address: String,
    faults: u64,
    invalidations: u64,
    diffs: u64,
    diff_bytes: u64,
    exact: Vec<(usize, u64)>,
    home: Option<(usize, u64)>,
}

/// Merges the nodes' profiles (as written to `dsm-profile-RANK.json`, in rank order) into the
/// job's: per-node totals, the hottest pages by faults, invalidations and diffs, and every
/// page written by several nodes with its sharing flag.
pub fn merge(nodes: &[Value]) -> Value {
    let mut pages: BTreeMap<u64, Merged> = BTreeMap::new();
    let mut totals = Vec::new();
    for (rank, n) in nodes.iter().enumerate() {
        let phases = n["phases"].as_array().cloned().unwrap_or_default();
        let mut t = serde_json::Map::new();
        t.insert("rank".into(), json!(rank));
        t.insert("wall_ns".into(), json!(u(n, "wall_ns")));
        t.insert("phases".into(), json!(phases.len()));
        for c in COUNTERS {
            t.insert(c.into(), json!(phases.iter().map(|p| u(p, c)).sum::<u64>()));
        }
        totals.push(Value::Object(t));
        for p in n["pages"].as_array().into_iter().flatten() {
            let m = pages.entry(u(p, "page")).or_default();
            m.name = p["name"].as_str().unwrap_or_default().to_string();
            m.address = p["address"].as_str().unwrap_or_default().to_string();
            m.faults += u(p, "read_faults") + u(p, "write_faults");
            m.invalidations += u(p, "invalidations");
            m.diffs += u(p, "diffs");
            m.diff_bytes += u(p, "diff_bytes");
            if u(p, "diffs") > 0 {
                m.exact.push((rank, mask(p, "lines")));
            }
            if p["home_wrote"].as_bool() == Some(true) {
                m.home = Some((rank, mask(p, "home_lines")));
            }
        }
    }
    let row = |page: u64, m: &Merged| {
        let (flag, writers) = classify(&m.exact, m.home);
        json!({
            "page": page,
            "address": m.address,
            "name": m.name,
            "faults": m.faults,
            "invalidations": m.invalidations,
            "diffs": m.diffs,
            "diff_bytes": m.diff_bytes,
            "writers": writers.iter().map(|&(r, l)| json!({"rank": r, "lines": format!("{l:016x}")})).collect::<Vec<_>>(),
            "home_writer": m.home.map(|(r, _)| r),
            "sharing": flag.name(),
        })
    };
    let hottest = |key: fn(&Merged) -> u64| {
        let mut v: Vec<(&u64, &Merged)> = pages.iter().filter(|(_, m)| key(m) > 0).collect();
        v.sort_by_key(|(p, m)| (std::cmp::Reverse(key(m)), **p));
        v.into_iter()
            .take(HOT)
            .map(|(&p, m)| row(p, m))
            .collect::<Vec<_>>()
    };
    let shared: Vec<Value> = pages
        .iter()
        .map(|(&p, m)| row(p, m))
        .filter(|r| r["sharing"] != "private")
        .collect();
    let count = |f: &str| shared.iter().filter(|r| r["sharing"] == f).count();
    json!({
        "nodes": nodes.len(),
        "totals": totals,
        "hottest_by_faults": hottest(|m| m.faults),
        "hottest_by_invalidations": hottest(|m| m.invalidations),
        "hottest_by_diffs": hottest(|m| m.diffs),
        "sharing": {"false": count("false"), "true": count("true")},
        "shared_pages": shared,
    })
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

/// A short text summary of a merged profile, for stderr.
pub fn summary(merged: &Value) -> String {
    let mut s = String::from("dsm profile:\n");
    for t in merged["totals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "  rank {}: {} in {} phases; read faults {} ({}), write faults {} ({}), release {} \
             ({} diffs, {} KiB), acquire {} ({} invalidations), lock wait {} ({}), barrier wait {}",
            u(t, "rank"),
            ms(u(t, "wall_ns")),
            u(t, "phases"),
            u(t, "read_faults"),
            ms(u(t, "read_fault_ns")),
            u(t, "write_faults"),
            ms(u(t, "write_fault_ns")),
            ms(u(t, "release_ns")),
            u(t, "diffs"),
            u(t, "diff_bytes") / 1024,
            ms(u(t, "acquire_ns")),
            u(t, "invalidations"),
            ms(u(t, "lock_wait_ns")),
            u(t, "lock_waits"),
            ms(u(t, "barrier_wait_ns")),
        );
    }
    let _ = writeln!(
        s,
        "  pages written by several nodes: {} false sharing, {} true sharing",
        u(&merged["sharing"], "false"),
        u(&merged["sharing"], "true")
    );
    for (title, key) in [
        ("faults", "hottest_by_faults"),
        ("invalidations", "hottest_by_invalidations"),
        ("diffs", "hottest_by_diffs"),
    ] {
        let rows = merged[key].as_array().cloned().unwrap_or_default();
        let top: Vec<String> = rows
            .iter()
            .take(3)
            .map(|r| {
                format!(
                    "{} ({} {}, {})",
                    r["name"].as_str().unwrap_or_default(),
                    u(r, title),
                    title,
                    r["sharing"].as_str().unwrap_or_default()
                )
            })
            .collect();
        if !top.is_empty() {
            let _ = writeln!(s, "  hottest by {title}: {}", top.join("; "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_writers_are_false_sharing_and_overlapping_true() {
        let lo = u64::MAX >> 32;
        let hi = !lo;
        assert_eq!(classify(&[(0, lo), (1, hi)], None).0, Sharing::False);
        assert_eq!(classify(&[(0, lo), (1, lo | hi)], None).0, Sharing::True);
        assert_eq!(classify(&[(0, lo)], None).0, Sharing::Private);
        // The home's copy changed in both halves; the other node explains one.
        let (f, w) = classify(&[(1, hi)], Some((0, lo | hi)));
        assert_eq!(f, Sharing::False);
        assert_eq!(w, vec![(0, lo), (1, hi)]);
        // The home changed nothing the other did not: it wrote the same lines.
        assert_eq!(classify(&[(1, 1)], Some((0, 1))).0, Sharing::True);
        assert_eq!(classify(&[], Some((0, 1))).0, Sharing::Private);
    }
}
