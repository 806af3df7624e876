//! Register N users: REGISTER rate and latency at the server's hashing cost.

use serde_json::json;

use crate::stats::{Errors, RunReport};
use crate::Bench;

pub async fn run(
    bench: &Bench,
    users: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<RunReport>> {
    let mut reports = Vec::new();
    for run in 1..=bench.common.runs {
        let names = (0..users)
            .map(|i| format!("{}r{run}_{i}", bench_prefix(bench)))
            .collect();
        let start = bench.sample();
        let registered = bench.register(names, concurrency, "register").await;
        let cpu = bench.used_since(&start);
        let mut errors = Errors::default();
        let mut ok = 0;
        for r in &registered.results {
            match r {
                Ok(_) => ok += 1,
                Err(e) => errors.add(e.kind()),
            }
        }
        let report = RunReport {
            scenario: "register".into(),
            params: bench.params(&[("users", json!(users)), ("concurrency", json!(concurrency))]),
            run,
            runs: bench.common.runs,
            deliveries: ok,
            unit: "registrations",
            cpu,
            latency: registered.latency.summary(),
            errors,
            extra: Default::default(),
        };
        bench.print(&report);
        reports.push(report);
    }
    Ok(reports)
}

fn bench_prefix(bench: &Bench) -> String {
    // Names unique to this invocation, like every scenario's users.
    bench.name_prefix().to_string()
}
