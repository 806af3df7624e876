//! Latency histograms, error counts by kind, and the per-run report
//! (a readable table and one JSON line).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::procfs::CpuUsed;

/// Latencies in nanoseconds, from 1 ns to 10 minutes, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    pub fn record(&mut self, elapsed: std::time::Duration) {
        let ns = (elapsed.as_nanos() as u64).clamp(1, 600_000_000_000);
        // Values are clamped into the bounds, so recording cannot fail.
        let _ = self.0.record(ns);
    }

    pub fn add(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Summary {
            count: self.0.len(),
            p50_us: us(self.0.value_at_quantile(0.50)),
            p90_us: us(self.0.value_at_quantile(0.90)),
            p99_us: us(self.0.value_at_quantile(0.99)),
            max_us: us(self.0.max()),
            mean_us: self.0.mean() / 1000.0,
        }
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_us": round1(self.p50_us),
            "p90_us": round1(self.p90_us),
            "p99_us": round1(self.p99_us),
            "max_us": round1(self.max_us),
            "mean_us": round1(self.mean_us),
        })
    }

    /// `p50 1.2 ms  p90 ...`, or `-` for an empty histogram.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "-".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  max {}  (n={})",
            human_us(self.p50_us),
            human_us(self.p90_us),
            human_us(self.p99_us),
            human_us(self.max_us),
            self.count
        )
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A duration in microseconds as `850 µs`, `3.21 ms` or `1.50 s`.
pub fn human_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// Errors counted by kind (`timeout`, `closed`, `errno_4`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Errors(BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Errors) {
        for (kind, n) in &other.0 {
            *self.0.entry(kind.clone()).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn get(&self, kind: &str) -> u64 {
        self.0.get(kind).copied().unwrap_or(0)
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
    }

    pub fn line(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What one measured run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    /// Scenario parameters (pairs, version, servers, ...), as given.
    pub params: Map<String, Value>,
    pub run: usize,
    pub runs: usize,
    /// Deliveries (or logins, registrations) counted in the measured window.
    pub deliveries: u64,
    /// What a "delivery" is in this scenario, for the table.
    pub unit: &'static str,
    pub cpu: CpuUsed,
    pub latency: Summary,
    pub errors: Errors,
    /// Scenario-specific figures (RSS, order checks, login verify time...).
    pub extra: Map<String, Value>,
}

impl RunReport {
    pub fn throughput(&self) -> f64 {
        if self.cpu.wall_s > 0.0 {
            self.deliveries as f64 / self.cpu.wall_s
        } else {
            0.0
        }
    }

    fn per_delivery_us(&self, secs: Option<f64>) -> Option<f64> {
        let secs = secs?;
        (self.deliveries > 0).then(|| secs * 1e6 / self.deliveries as f64)
    }

    pub fn server_cpu_us_per_delivery(&self) -> Option<f64> {
        self.per_delivery_us(self.cpu.server_s)
    }

    pub fn bench_cpu_us_per_delivery(&self) -> Option<f64> {
        self.per_delivery_us(self.cpu.bench_s)
    }

    pub fn to_json(&self) -> Value {
        let opt = |x: Option<f64>| x.map(round3).map_or(Value::Null, |v| json!(v));
        let mut out = Map::new();
        out.insert("scenario".into(), json!(self.scenario));
        out.insert("run".into(), json!(self.run));
        out.insert("runs".into(), json!(self.runs));
        out.insert("params".into(), Value::Object(self.params.clone()));
        out.insert("unit".into(), json!(self.unit));
        out.insert("measured_s".into(), json!(round3(self.cpu.wall_s)));
        out.insert("deliveries".into(), json!(self.deliveries));
        out.insert("per_s".into(), json!(round1(self.throughput())));
        out.insert("latency".into(), self.latency.to_json());
        out.insert("server_cpu_s".into(), opt(self.cpu.server_s));
        out.insert(
            "server_cpu_us_per_delivery".into(),
            opt(self.server_cpu_us_per_delivery()),
        );
        out.insert("bench_cpu_s".into(), opt(self.cpu.bench_s));
        out.insert(
            "bench_cpu_us_per_delivery".into(),
            opt(self.bench_cpu_us_per_delivery()),
        );
        out.insert("errors".into(), self.errors.to_json());
        out.insert("error_count".into(), json!(self.errors.total()));
        for (k, v) in &self.extra {
            out.insert(k.clone(), v.clone());
        }
        Value::Object(out)
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let params = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            t,
            "== {} run {}/{} ({params})",
            self.scenario, self.run, self.runs
        );
        let _ = writeln!(t, "  measured      {:.2} s", self.cpu.wall_s);
        let _ = writeln!(
            t,
            "  {:<13} {}  ({:.0}/s)",
            self.unit,
            self.deliveries,
            self.throughput()
        );
        let _ = writeln!(t, "  latency       {}", self.latency.line());
        let cpu = |secs: Option<f64>, per: Option<f64>| match (secs, per) {
            (Some(s), Some(p)) => format!(
                "{p:.2} µs per {}  ({s:.2} s, {:.0}% of one core)",
                singular(self.unit),
                100.0 * s / self.cpu.wall_s.max(1e-9)
            ),
            (Some(s), None) => format!("{s:.2} s"),
            _ => "not measured (give --server-pid)".into(),
        };
        let _ = writeln!(
            t,
            "  server cpu    {}",
            cpu(self.cpu.server_s, self.server_cpu_us_per_delivery())
        );
        let _ = writeln!(
            t,
            "  bench cpu     {}",
            cpu(self.cpu.bench_s, self.bench_cpu_us_per_delivery())
        );
        for (k, v) in &self.extra {
            let _ = writeln!(t, "  {k:<13} {v}");
        }
        let _ = writeln!(t, "  errors        {}", self.errors.line());
        t
    }
}

/// `deliveries` → `delivery`, `logins` → `login`.
pub fn singular(unit: &str) -> String {
    match unit.strip_suffix("ies") {
        Some(stem) => format!("{stem}y"),
        None => unit.trim_end_matches('s').to_string(),
    }
}

/// The median of a list (the lower middle for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[(values.len() - 1) / 2])
}

/// One JSON object with the median of each headline figure over the runs.
pub fn median_json(reports: &[RunReport]) -> Value {
    let med = |f: &dyn Fn(&RunReport) -> Option<f64>| {
        let mut v: Vec<f64> = reports.iter().filter_map(f).collect();
        median(&mut v).map_or(Value::Null, |m| json!(round3(m)))
    };
    let mut extra_keys: Vec<&String> = reports.iter().flat_map(|r| r.extra.keys()).collect();
    extra_keys.sort();
    extra_keys.dedup();
    let mut out = Map::new();
    out.insert(
        "scenario".into(),
        json!(reports.first().map(|r| r.scenario.as_str()).unwrap_or("")),
    );
    out.insert("median_of".into(), json!(reports.len()));
    if let Some(first) = reports.first() {
        out.insert("params".into(), Value::Object(first.params.clone()));
    }
    out.insert("per_s".into(), med(&|r| Some(r.throughput())));
    out.insert("p50_us".into(), med(&|r| nonzero(r.latency.p50_us, r)));
    out.insert("p90_us".into(), med(&|r| nonzero(r.latency.p90_us, r)));
    out.insert("p99_us".into(), med(&|r| nonzero(r.latency.p99_us, r)));
    out.insert("max_us".into(), med(&|r| nonzero(r.latency.max_us, r)));
    out.insert(
        "server_cpu_us_per_delivery".into(),
        med(&|r| r.server_cpu_us_per_delivery()),
    );
    out.insert(
        "bench_cpu_us_per_delivery".into(),
        med(&|r| r.bench_cpu_us_per_delivery()),
    );
    for key in extra_keys {
        let k = key.clone();
        out.insert(
            key.clone(),
            med(&move |r| r.extra.get(&k).and_then(Value::as_f64)),
        );
    }
    out.insert(
        "errors_total".into(),
        json!(reports.iter().map(|r| r.errors.total()).sum::<u64>()),
    );
    Value::Object(out)
}

fn nonzero(x: f64, r: &RunReport) -> Option<f64> {
    (r.latency.count > 0).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn summary_reports_percentiles_in_microseconds() {
        let mut h = Latency::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p90_us - 900.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        assert!((s.mean_us - 500.5).abs() < 1.0, "{s:?}");
        assert_eq!(Latency::default().summary(), Summary::default());
        assert_eq!(Summary::default().line(), "-");
    }

    #[test]
    fn histograms_add_and_reset() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        b.record(Duration::from_secs(3600)); // clamped, not lost
        a.add(&b);
        assert_eq!(a.count(), 3);
        a.reset();
        assert_eq!(a.count(), 0);
    }

    #[test]
    fn errors_count_by_kind_and_merge() {
        let mut e = Errors::default();
        e.add("timeout");
        e.add("timeout");
        e.add("errno_4");
        let mut f = Errors::default();
        f.add("timeout");
        e.merge(&f);
        assert_eq!(e.get("timeout"), 3);
        assert_eq!(e.total(), 4);
        assert_eq!(e.line(), "errno_4=1 timeout=3");
        assert_eq!(Errors::default().line(), "none");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_us(850.4), "850 µs");
        assert_eq!(human_us(3210.0), "3.21 ms");
        assert_eq!(human_us(1_500_000.0), "1.50 s");
        assert_eq!(singular("deliveries"), "delivery");
        assert_eq!(singular("logins"), "login");
    }

    fn report(deliveries: u64, wall: f64, server: f64) -> RunReport {
        RunReport {
            scenario: "pingpong".into(),
            params: Map::new(),
            run: 1,
            runs: 3,
            deliveries,
            unit: "deliveries",
            cpu: CpuUsed {
                wall_s: wall,
                server_s: Some(server),
                bench_s: None,
            },
            latency: Summary {
                count: deliveries,
                p99_us: deliveries as f64,
                ..Summary::default()
            },
            errors: Errors::default(),
            extra: Map::new(),
        }
    }

    #[test]
    fn report_figures_and_median() {
        let r = report(1000, 2.0, 0.01);
        assert_eq!(r.throughput(), 500.0);
        assert!((r.server_cpu_us_per_delivery().unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(r.bench_cpu_us_per_delivery(), None);
        let j = r.to_json();
        assert_eq!(j["deliveries"], 1000);
        assert_eq!(j["bench_cpu_s"], Value::Null);
        assert!(r.table().contains("10.00 µs per delivery"));
        let m = median_json(&[
            report(300, 1.0, 1.0),
            report(100, 1.0, 1.0),
            report(200, 1.0, 1.0),
        ]);
        assert_eq!(m["per_s"], 200.0);
        assert_eq!(m["p99_us"], 200.0);
        assert_eq!(m["median_of"], 3);
        assert_eq!(median(&mut [4.0, 1.0]), Some(1.0));
        assert_eq!(median(&mut []), None);
    }
}
