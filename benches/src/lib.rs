//! Shared helpers of the benchmark programs: timing statistics and a report that prints a
//! human-readable table and machine-readable JSON lines, each result beside the physical floor
//! measured in the same run.

pub mod apps;
pub mod osu;

use std::time::Duration;

/// Summary of repeated timings.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median.
    pub median: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
    /// Fastest.
    pub min: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Stats {
    /// Summarises `samples` (which it sorts). Returns zeros for no samples.
    pub fn of(samples: &mut [Duration]) -> Stats {
        if samples.is_empty() {
            return Stats {
                median: Duration::ZERO,
                mean: Duration::ZERO,
                min: Duration::ZERO,
                p99: Duration::ZERO,
            };
        }
        samples.sort_unstable();
        let n = samples.len();
        let total: Duration = samples.iter().sum();
        Stats {
            median: samples[n / 2],
            mean: total / n as u32,
            min: samples[0],
            p99: samples[(n * 99 / 100).min(n - 1)],
        }
    }
}

/// Which way a ratio is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Latency-like: smaller is better; ratio = ours / floor.
    Lower,
    /// Bandwidth-like: larger is better; ratio = ours / floor.
    Higher,
}

/// One row of a report.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// Our result.
    pub value: f64,
    /// The floor (or ceiling) measured in the same run.
    pub floor: f64,
    /// Unit of both.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// The target ratio, if the project set one.
    pub target: Option<f64>,
}

impl Row {
    /// `value / floor`.
    pub fn ratio(&self) -> f64 {
        if self.floor == 0.0 {
            f64::NAN
        } else {
            self.value / self.floor
        }
    }

    /// Whether the ratio meets the target (`None` without a target).
    pub fn meets_target(&self) -> Option<bool> {
        self.target.map(|t| match self.better {
            Better::Lower => self.ratio() <= t,
            Better::Higher => self.ratio() >= t,
        })
    }
}

/// Prints the rows as a table on stdout, then one JSON object per row prefixed `RESULT `.
pub fn print_report(context: &[(&str, String)], rows: &[Row]) {
    for (k, v) in context {
        println!("# {k}: {v}");
    }
    println!(
        "{:<34} {:>12} {:>12} {:>6} {:>8} {:>8}",
        "metric", "dsm", "floor", "unit", "ratio", "target"
    );
    for r in rows {
        let target = match (r.target, r.better) {
            (Some(t), Better::Lower) => format!("<={t}"),
            (Some(t), Better::Higher) => format!(">={t}"),
            (None, _) => "-".into(),
        };
        let mark = match r.meets_target() {
            Some(true) => " ok",
            Some(false) => " MISS",
            None => "",
        };
        println!(
            "{:<34} {:>12.2} {:>12.2} {:>6} {:>8.2} {:>8}{mark}",
            r.metric,
            r.value,
            r.floor,
            r.unit,
            r.ratio(),
            target
        );
    }
    let ctx: serde_json::Map<String, serde_json::Value> = context
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
        .collect();
    for r in rows {
        let obj = serde_json::json!({
            "metric": r.metric,
            "value": r.value,
            "floor": r.floor,
            "unit": r.unit,
            "ratio": r.ratio(),
            "target": r.target,
            "meets_target": r.meets_target(),
            "context": ctx,
        });
        println!("RESULT {obj}");
    }
}

/// The commit being measured (`git rev-parse`), or `unknown`.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_ratios() {
        let mut v: Vec<Duration> = [5u64, 1, 3, 2, 4]
            .iter()
            .map(|&u| Duration::from_micros(u))
            .collect();
        let s = Stats::of(&mut v);
        assert_eq!(s.median, Duration::from_micros(3));
        assert_eq!(s.min, Duration::from_micros(1));
        assert_eq!(s.mean, Duration::from_micros(3));
        let r = Row {
            metric: "m".into(),
            value: 12.0,
            floor: 10.0,
            unit: "us",
            better: Better::Lower,
            target: Some(1.2),
        };
        assert!((r.ratio() - 1.2).abs() < 1e-9);
        assert_eq!(r.meets_target(), Some(true));
        let r = Row {
            better: Better::Higher,
            target: Some(0.8),
            value: 7.0,
            ..r
        };
        assert_eq!(r.meets_target(), Some(false));
    }
}
