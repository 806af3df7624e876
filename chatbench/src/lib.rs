//! chatbench: a load generator for ChatChat servers. Each scenario sets up
//! its users and connections, then measures one or more windows (warm-up
//! excluded) and returns one report per window.

pub mod cli;
pub mod conn;
pub mod options;
pub mod procfs;
pub mod scenario;
pub mod stats;

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::Version;
use serde_json::{Map, Value};

use crate::cli::{Cli, Scenario};
use crate::conn::{BenchError, Conn, User};
use crate::options::Common;
use crate::procfs::{CpuSample, CpuUsed};
use crate::stats::{Errors, Latency, RunReport};

/// Runs the scenario and prints its reports; returns them too.
pub async fn run(cli: Cli) -> anyhow::Result<Vec<RunReport>> {
    let bench = Bench::new(cli.common)?;
    let reports = match cli.scenario {
        Scenario::Register { users, concurrency } => {
            scenario::register::run(&bench, users, concurrency).await?
        }
        Scenario::Login {
            users,
            chat_pairs,
            hash_threads,
        } => scenario::login::run(&bench, users, chat_pairs, hash_threads).await?,
        Scenario::Pingpong { pairs } => scenario::pingpong::run(&bench, pairs, false).await?,
        Scenario::Cross { pairs } => {
            anyhow::ensure!(
                bench.common.servers.len() >= 2,
                "cross needs two or more --server addresses"
            );
            scenario::pingpong::run(&bench, pairs, true).await?
        }
        Scenario::Fanout { members } => scenario::fanout::run(&bench, members).await?,
        Scenario::Offline { messages } => scenario::offline::run(&bench, messages).await?,
        Scenario::Groupstore {
            members,
            messages,
            size,
        } => scenario::groupstore::run(&bench, members, messages, size).await?,
        Scenario::Tokens { users, workers } => {
            scenario::tokens::run(&bench, users, workers).await?
        }
        Scenario::Idle { connections, hold } => {
            scenario::idle::run(&bench, connections, hold).await?
        }
        Scenario::Proxy {
            connections,
            connect_workers,
            bulk_connections,
            message_size,
            bulk_chunk,
            backends,
            balancer_bin,
            nginx_bin,
            nginx_stream_module,
            proxy_threads,
            targets,
            tests,
            markdown,
            tls,
            balancer_settings,
        } => {
            // Its own summary (medians per test and target, ratios) replaces
            // the generic median line.
            let opts = scenario::proxy::Options {
                connections,
                connect_workers,
                bulk_connections,
                message_size,
                bulk_chunk,
                backends,
                balancer_bin,
                nginx_bin,
                nginx_stream_module: Some(nginx_stream_module),
                proxy_threads,
                targets,
                tests,
                markdown,
                tls,
                balancer_settings,
            };
            return scenario::proxy::run(&bench, opts).await;
        }
    };
    if reports.len() > 1 {
        let median = stats::median_json(&reports);
        if !bench.common.json {
            println!("== median of {} runs (JSON):", reports.len());
        }
        println!("{}", serde_json::json!({ "median": median }));
    }
    Ok(reports)
}

/// Measurement phase shared by a scenario's tasks.
pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const STOP: u8 = 2;

#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

impl Phase {
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::Relaxed);
    }
}

/// What one task measured; the main task resets it at the start of a
/// window and takes it at the end. Errors are never reset: each report
/// carries every error since the previous one (set-up and warm-up included).
#[derive(Debug, Default)]
pub struct Slot {
    pub latency: Latency,
    pub errors: Errors,
}

pub type SharedSlot = Arc<Mutex<Slot>>;

pub fn lock(slot: &SharedSlot) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Options and helpers shared by the scenarios.
pub struct Bench {
    pub common: Common,
    ticks_per_sec: u64,
    progress: bool,
    prefix: String,
}

impl Bench {
    pub fn new(common: Common) -> anyhow::Result<Self> {
        anyhow::ensure!(!common.servers.is_empty(), "give at least one --server");
        anyhow::ensure!(common.runs >= 1, "--runs must be at least 1");
        let progress = !common.no_progress && !common.json && std::io::stderr().is_terminal();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        Ok(Self {
            common,
            ticks_per_sec: procfs::clock_ticks_per_sec(),
            progress,
            prefix: format!(
                "cb{:x}{:x}_",
                stamp & 0xff_ffff_ffff,
                std::process::id() & 0xfff
            ),
        })
    }

    /// Prefix of every name this invocation registers (unique per run of the tool).
    pub fn name_prefix(&self) -> &str {
        &self.prefix
    }

    /// The protocol version the scenario's connections speak: v2 unless --v1.
    pub fn version(&self) -> Version {
        if self.common.v1 {
            Version::V1
        } else {
            Version::V2
        }
    }

    pub fn server(&self, i: usize) -> SocketAddr {
        self.common.servers[i % self.common.servers.len()]
    }

    pub fn source(&self, i: usize) -> Option<IpAddr> {
        let ips = &self.common.source_ips;
        (!ips.is_empty()).then(|| ips[i % ips.len()])
    }

    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar
    }

    pub fn sample(&self) -> CpuSample {
        CpuSample::take(&self.common.server_pids)
    }

    pub fn used_since(&self, start: &CpuSample) -> CpuUsed {
        self.sample().since(start, self.ticks_per_sec)
    }

    /// Prints a report as a table (unless --json) and as one JSON line.
    pub fn print(&self, report: &RunReport) {
        if !self.common.json {
            print!("{}", report.table());
        }
        println!("{}", report.to_json());
    }

    /// Parameters every report carries.
    pub fn params(&self, extra: &[(&str, Value)]) -> Map<String, Value> {
        let mut params = Map::new();
        params.insert(
            "version".into(),
            (match self.version() {
                Version::V1 => "v1",
                Version::V2 => "v2",
            })
            .into(),
        );
        params.insert(
            "servers".into(),
            self.common
                .servers
                .iter()
                .map(|s| Value::from(s.to_string()))
                .collect(),
        );
        for (k, v) in extra {
            params.insert((*k).into(), v.clone());
        }
        params
    }

    /// `count` users for this scenario: from --users-file when it lists
    /// enough, otherwise registered now (and appended to the file).
    pub async fn users(&self, count: usize, what: &str) -> anyhow::Result<Vec<User>> {
        let mut users = match &self.common.users_file {
            Some(path) => read_users_file(path)?,
            None => Vec::new(),
        };
        if users.len() >= count {
            users.truncate(count);
            return Ok(users);
        }
        let names: Vec<String> = (users.len()..count)
            .map(|i| format!("{}{what}{i}", self.prefix))
            .collect();
        let registered = self
            .register(
                names,
                self.common.setup_concurrency,
                &format!("register {what}"),
            )
            .await;
        let mut errors = Errors::default();
        let mut fresh = Vec::new();
        for result in registered.results {
            match result {
                Ok(user) => fresh.push(user),
                Err(e) => errors.add(e.kind()),
            }
        }
        if let Some(path) = &self.common.users_file {
            append_users_file(path, &fresh)?;
        }
        anyhow::ensure!(
            errors.total() == 0,
            "registering {what} users failed: {}",
            errors.line()
        );
        users.extend(fresh);
        Ok(users)
    }

    /// Registers the names over `concurrency` connections.
    pub async fn register(&self, names: Vec<String>, concurrency: usize, what: &str) -> Registered {
        let bar = self.bar(names.len() as u64, what);
        let concurrency = concurrency.clamp(1, names.len().max(1));
        let chunks: Vec<Vec<(usize, String)>> = (0..concurrency)
            .map(|c| {
                names
                    .iter()
                    .enumerate()
                    .skip(c)
                    .step_by(concurrency)
                    .map(|(i, n)| (i, n.clone()))
                    .collect()
            })
            .collect();
        let tasks = chunks.into_iter().enumerate().map(|(c, chunk)| {
            let bar = bar.clone();
            async move {
                let mut out = Vec::new();
                let mut latency = Latency::default();
                let mut conn: Option<Conn> = None;
                for (i, name) in chunk {
                    if conn.is_none() {
                        match Conn::connect(self.server(0), self.source(c), self.version()).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                out.push((i, Err(e)));
                                continue;
                            }
                        }
                    }
                    let c = conn.as_mut().expect("connected above");
                    let started = std::time::Instant::now();
                    let result = c
                        .register(&name, &self.common.password, self.common.timeout)
                        .await;
                    latency.record(started.elapsed());
                    if result.as_ref().is_err_and(BenchError::is_fatal) {
                        conn = None;
                    }
                    out.push((i, result.map(|id| User { id, name })));
                    bar.inc(1);
                }
                (out, latency)
            }
        });
        let done: Vec<_> = futures::future::join_all(tasks).await;
        bar.finish_and_clear();
        let mut latency = Latency::default();
        let mut indexed = Vec::new();
        for (out, l) in done {
            latency.add(&l);
            indexed.extend(out);
        }
        indexed.sort_by_key(|(i, _)| *i);
        Registered {
            results: indexed.into_iter().map(|(_, r)| r).collect(),
            latency,
        }
    }

    /// Connects and logs in every user, `server_of(i)` choosing the server
    /// of user `i`; fails on the first error with how many succeeded.
    pub async fn login_all(
        &self,
        users: &[User],
        server_of: impl Fn(usize) -> SocketAddr,
        what: &str,
    ) -> anyhow::Result<Vec<Conn>> {
        self.login_all_keeping(users, server_of, what, |conn| conn)
            .await
    }

    /// [`Self::login_all`], keeping of each connection what `keep` makes
    /// of it as soon as it is logged in: what it drops is freed before the
    /// next connection allocates, so that holding many connections does
    /// not hold the heap of their logins.
    pub async fn login_all_keeping<T>(
        &self,
        users: &[User],
        server_of: impl Fn(usize) -> SocketAddr,
        what: &str,
        keep: impl Fn(Conn) -> T,
    ) -> anyhow::Result<Vec<T>> {
        let bar = self.bar(users.len() as u64, what);
        let server_of = &server_of;
        let keep = &keep;
        let results: Vec<Result<T, BenchError>> = stream::iter(users.iter().enumerate())
            .map(|(i, user)| {
                let bar = bar.clone();
                async move {
                    let ws = &self.common.ws_servers;
                    let mut conn = if ws.is_empty() {
                        Conn::connect(server_of(i), self.source(i), self.version()).await?
                    } else {
                        Conn::connect_ws(ws[i % ws.len()], self.source(i)).await?
                    };
                    conn.login(
                        user.id,
                        &self.common.password,
                        self.common.timeout.max(Duration::from_secs(60)),
                    )
                    .await?;
                    bar.inc(1);
                    Ok(keep(conn))
                }
            })
            .buffered(self.common.setup_concurrency.max(1))
            .collect()
            .await;
        bar.finish_and_clear();
        let mut conns = Vec::with_capacity(results.len());
        let mut errors = Errors::default();
        for r in results {
            match r {
                Ok(c) => conns.push(c),
                Err(e) => errors.add(e.kind()),
            }
        }
        anyhow::ensure!(
            errors.total() == 0,
            "{what}: {} of {} logins failed: {}",
            errors.total(),
            users.len(),
            errors.line()
        );
        Ok(conns)
    }

    /// Runs one measured window over the tasks' slots: waits the warm-up,
    /// resets the histograms, measures for --duration, and returns the CPU
    /// used plus the merged latency and errors.
    pub async fn window(
        &self,
        phase: &Phase,
        slots: &[SharedSlot],
        what: &str,
    ) -> (CpuUsed, Latency, Errors) {
        tokio::time::sleep(self.common.warmup).await;
        for slot in slots {
            lock(slot).latency.reset();
        }
        let start = self.sample();
        phase.set(MEASURE);
        let bar = self.bar(self.common.duration.as_millis() as u64, what);
        let step = Duration::from_millis(250);
        let end = tokio::time::Instant::now() + self.common.duration;
        loop {
            let now = tokio::time::Instant::now();
            if now >= end {
                break;
            }
            tokio::time::sleep(step.min(end - now)).await;
            if self.progress {
                let done = self
                    .common
                    .duration
                    .saturating_sub(end.saturating_duration_since(tokio::time::Instant::now()));
                let count: u64 = slots.iter().map(|s| lock(s).latency.count()).sum();
                bar.set_position(done.as_millis() as u64);
                bar.set_message(format!(
                    "{:.0}/s",
                    count as f64 / done.as_secs_f64().max(1e-3)
                ));
            }
        }
        phase.set(WARMUP);
        let used = self.used_since(&start);
        bar.finish_and_clear();
        let mut latency = Latency::default();
        let mut errors = Errors::default();
        for slot in slots {
            let mut s = lock(slot);
            latency.add(&s.latency);
            errors.merge(&std::mem::take(&mut s.errors));
        }
        (used, latency, errors)
    }
}

/// Results of [`Bench::register`], in the order of the names.
pub struct Registered {
    pub results: Vec<Result<User, BenchError>>,
    pub latency: Latency,
}

/// Parses a users file: `id name` per line; blank lines and `#` comments skipped.
pub fn parse_users(text: &str) -> anyhow::Result<Vec<User>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, line)| {
            let (id, name) = line
                .trim()
                .split_once(' ')
                .with_context(|| format!("line {}: expected `id name`", n + 1))?;
            Ok(User {
                id: id
                    .parse()
                    .with_context(|| format!("line {}: bad id", n + 1))?,
                name: name.to_string(),
            })
        })
        .collect()
}

fn read_users_file(path: &std::path::Path) -> anyhow::Result<Vec<User>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_users(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn append_users_file(path: &std::path::Path, users: &[User]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    for u in users {
        writeln!(file, "{} {}", u.id, u.name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_lines() {
        let users = parse_users("# id name\n1 alice\n\n22 bob smith\n").unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(
            users[1],
            User {
                id: 22,
                name: "bob smith".into()
            }
        );
        assert!(parse_users("x alice\n").is_err());
        assert!(parse_users("17\n").is_err());
    }
}
