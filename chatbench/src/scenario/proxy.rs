//! Balancer vs Nginx: the same load pushed directly to echo backends,
//! through our `balancer` and through Nginx's `stream` proxy, in one run.
//!
//! chatbench starts everything itself: in-process echo servers (on their
//! own thread and runtime, so they do not share the load generator's
//! thread), the `balancer` binary with a generated lb.toml and `nginx` with
//! a generated stream config, Nginx with as many worker processes as the
//! balancer has runtime threads. For each run, each test and each target
//! (interleaved, so a change in the machine's load hits all three alike):
//!
//! - `keepalive`: C connections, each a closed loop of small request/echo
//!   round trips → round trips/s, latency, proxy CPU per round trip;
//! - `connect`: W workers each connect, do one round trip, close, again →
//!   connections/s, errors;
//! - `bulk`: a few connections streaming large buffers through the echo →
//!   MB/s echoed back.
//!
//! Then a table of medians, a JSON line with the balancer/Nginx ratios and,
//! with `--markdown FILE`, a section appended to FILE.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::ValueEnum;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::options::Common;
use crate::procfs::CpuUsed;
use crate::stats::{self, RunReport};
use crate::{lock, Bench, Phase, SharedSlot, MEASURE, STOP};

/// Where the load goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Straight to the echo backends (the baseline).
    Direct,
    /// Through our `balancer`.
    Balancer,
    /// Through Nginx's stream proxy.
    Nginx,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Balancer => "balancer",
            Target::Nginx => "nginx",
        }
    }
}

/// What load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Test {
    /// Closed-loop round trips on long-lived connections.
    Keepalive,
    /// Connect, one round trip, close, as fast as possible.
    Connect,
    /// Large buffers streamed through the echo.
    Bulk,
}

impl Test {
    pub fn name(self) -> &'static str {
        match self {
            Test::Keepalive => "keepalive",
            Test::Connect => "connect",
            Test::Bulk => "bulk",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Test::Keepalive => "round trips",
            Test::Connect => "connections",
            Test::Bulk => "MB",
        }
    }
}

/// Options of the `proxy` subcommand.
#[derive(Debug, Clone)]
pub struct Options {
    pub connections: usize,
    pub connect_workers: usize,
    pub bulk_connections: usize,
    pub message_size: usize,
    pub bulk_chunk: usize,
    pub backends: usize,
    pub balancer_bin: Option<PathBuf>,
    pub nginx_bin: PathBuf,
    pub nginx_stream_module: Option<PathBuf>,
    pub proxy_threads: Option<usize>,
    pub targets: Vec<Target>,
    pub tests: Vec<Test>,
    pub markdown: Option<PathBuf>,
    /// Clients speak TLS, both proxies terminate it (see [`TlsSetup`]).
    pub tls: bool,
    /// Top-level lines added to the balancer's lb.toml (`--balancer-setting`).
    pub balancer_settings: Vec<String>,
}

/// Runtime threads the balancer gets: TOKIO_WORKER_THREADS when set (as
/// tokio reads it), else the number of CPUs.
pub fn default_proxy_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

pub async fn run(bench: &Bench, opts: Options) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(opts.backends >= 1, "--backends must be at least 1");
    anyhow::ensure!(opts.message_size >= 1, "--message-size must be at least 1");
    anyhow::ensure!(opts.bulk_chunk >= 1, "--bulk-chunk must be at least 1");
    let threads = opts.proxy_threads.unwrap_or_else(default_proxy_threads);
    anyhow::ensure!(threads >= 1, "--proxy-threads must be at least 1");
    let load_before = loadavg();

    let echo = EchoServers::start(opts.backends).context("starting the echo backends")?;
    let dir = TempDir::new()?;
    let tls = if opts.tls {
        Some(TlsSetup::new(dir.path())?)
    } else {
        None
    };
    let files = tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path()));
    let connector = tls.as_ref().map(|t| t.connector.clone());
    let mut opts = opts;
    if opts.tls {
        // The backends do not speak TLS.
        opts.targets.retain(|&t| t != Target::Direct);
    }
    let mut balancer = None;
    let mut nginx = None;
    let stream_module = opts.nginx_stream_module.as_deref().filter(|m| m.exists());
    if opts.targets.contains(&Target::Balancer) {
        let bin = match &opts.balancer_bin {
            Some(p) => p.clone(),
            None => default_balancer_bin()?,
        };
        balancer = Some(
            Balancer::start(
                &bin,
                dir.path(),
                &echo.addrs,
                threads,
                files,
                &opts.balancer_settings,
            )
            .await?,
        );
    }
    if opts.targets.contains(&Target::Nginx) {
        nginx = Some(
            Nginx::start(
                &opts.nginx_bin,
                stream_module,
                dir.path(),
                &echo.addrs,
                threads,
                files,
            )
            .await?,
        );
    }
    let endpoint = |t: Target| -> (Vec<SocketAddr>, Vec<u32>) {
        match t {
            Target::Direct => (echo.addrs.clone(), vec![]),
            Target::Balancer => {
                let b = balancer.as_ref().expect("started above");
                (vec![b.addr], vec![b.pid])
            }
            Target::Nginx => {
                let n = nginx.as_ref().expect("started above");
                (vec![n.addr], n.pids())
            }
        }
    };
    if !bench.common.json {
        println!(
            "== proxy: backends {:?}, balancer {}, nginx {} ({} runtime threads / worker processes), load {}",
            echo.addrs,
            balancer.as_ref().map_or("-".into(), |b| b.addr.to_string()),
            nginx.as_ref().map_or("-".into(), |n| n.addr.to_string()),
            threads,
            load_before
        );
    }

    let mut reports = Vec::new();
    for run in 1..=bench.common.runs {
        for &test in &opts.tests {
            for &target in &opts.targets {
                let (addrs, pids) = endpoint(target);
                let mut common = bench.common.clone();
                common.servers = addrs;
                common.server_pids = pids;
                common.no_progress = true;
                let sub = Bench::new(common)?;
                let report =
                    measure(&sub, &opts, test, target, run, threads, connector.clone()).await;
                if !bench.common.json {
                    println!("{}", short_line(&report));
                }
                println!("{}", report.to_json());
                reports.push(report);
            }
        }
    }

    let load_after = loadavg();
    let summary = Summary::from_reports(&reports, &opts);
    if !bench.common.json {
        print!("{}", summary.table());
    }
    let ratios = summary.ratios_json();
    println!(
        "{}",
        json!({ "proxy_ratios": ratios, "medians": summary.medians_json(), "runs": bench.common.runs, "proxy_threads": threads })
    );
    if let Some(path) = &opts.markdown {
        let nginx_version = nginx_version(&opts.nginx_bin);
        let section = summary.markdown(&MarkdownContext {
            command: shell_words(std::env::args()),
            threads,
            load_before,
            load_after,
            nginx_version,
            common: &bench.common,
            opts: &opts,
        });
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        std::io::Write::write_all(&mut file, section.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        if !bench.common.json {
            println!("== section appended to {}", path.display());
        }
    }
    drop(nginx);
    drop(balancer);
    drop(echo);
    Ok(reports)
}

fn short_line(r: &RunReport) -> String {
    let rate = r.extra.get("rate").and_then(Value::as_f64).unwrap_or(0.0);
    let cpu = r
        .server_cpu_us_per_delivery()
        .map_or(String::new(), |c| format!("  proxy cpu {c:.1} µs/op"));
    format!(
        "-- run {}/{} {:<9} {:<8} {:>12.1} {}/s  {}{}  errors {}",
        r.run,
        r.runs,
        r.params["test"].as_str().unwrap_or(""),
        r.params["target"].as_str().unwrap_or(""),
        rate,
        r.unit,
        r.latency.line(),
        cpu,
        r.errors.line()
    )
}

/// The load average line of /proc/loadavg (first three figures).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `target/release/balancer` next to the running chatbench binary.
fn default_balancer_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating chatbench itself")?;
    let bin = exe
        .parent()
        .context("chatbench has no parent directory")?
        .join("balancer");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it (`cargo build --release -p balancer`) or give --balancer-bin",
        bin.display()
    );
    Ok(bin)
}

// ------------------------------------------------------------- measuring

/// The certificate both proxies present (ECDSA P-256, made now) and a
/// client that trusts it and never resumes a session, so that every
/// connect is a full handshake.
struct TlsSetup {
    cert: PathBuf,
    key: PathBuf,
    connector: TlsConnector,
}

impl TlsSetup {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .context("making a certificate")?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem())?;
        std::fs::write(&key, made.key_pair.serialize_pem())?;
        let mut roots = tlsconf::rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone())?;
        let mut config = tlsconf::client_config(roots);
        config.resumption = tlsconf::rustls::client::Resumption::disabled();
        Ok(Self {
            cert,
            key,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }
}

/// A connection to a target: plain, or TLS with `--tls`.
type Conn = Either<TcpStream, TlsStream<TcpStream>>;

/// What the workers of one measurement share.
struct Shared {
    tls: Option<TlsConnector>,
    phase: Phase,
    /// Bytes received back in the measured window (bulk).
    bytes: AtomicU64,
    message: Vec<u8>,
    timeout: Duration,
}

async fn measure(
    bench: &Bench,
    opts: &Options,
    test: Test,
    target: Target,
    run: usize,
    threads: usize,
    tls: Option<TlsConnector>,
) -> RunReport {
    let shared = Arc::new(Shared {
        tls,
        phase: Phase::default(),
        bytes: AtomicU64::new(0),
        message: vec![b'x'; opts.message_size],
        timeout: bench.common.timeout,
    });
    let workers = match test {
        Test::Keepalive => opts.connections,
        Test::Connect => opts.connect_workers,
        Test::Bulk => opts.bulk_connections,
    }
    .max(1);
    let slots: Vec<SharedSlot> = (0..workers).map(|_| SharedSlot::default()).collect();
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
    for (i, slot) in slots.iter().enumerate() {
        let server = bench.server(i);
        let source = bench.source(i);
        let shared = shared.clone();
        let slot = slot.clone();
        let chunk = opts.bulk_chunk;
        tasks.push(tokio::spawn(async move {
            match test {
                Test::Keepalive => keepalive(server, source, &shared, &slot).await,
                Test::Connect => connect_loop(server, source, &shared, &slot).await,
                Test::Bulk => bulk(server, source, &shared, &slot, chunk).await,
            }
        }));
    }
    let what = format!("{} {}", test.name(), target.name());
    let (cpu, latency, errors) = bench.window(&shared.phase, &slots, &what).await;
    shared.phase.set(STOP);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    // Errors a worker hit after the window closed are not this window's.
    let (deliveries, rate) = match test {
        Test::Bulk => {
            let bytes = shared.bytes.load(Ordering::Relaxed);
            (bytes / 1_000_000, bytes as f64 / 1e6 / cpu.wall_s.max(1e-9))
        }
        _ => (
            latency.count(),
            latency.count() as f64 / cpu.wall_s.max(1e-9),
        ),
    };
    let mut extra = Map::new();
    extra.insert("rate".into(), json!((rate * 10.0).round() / 10.0));
    if test == Test::Bulk {
        extra.insert("bytes".into(), json!(shared.bytes.load(Ordering::Relaxed)));
    }
    RunReport {
        scenario: "proxy".into(),
        params: bench.params(&[
            ("test", json!(test.name())),
            ("target", json!(target.name())),
            ("workers", json!(workers)),
            ("message_size", json!(opts.message_size)),
            ("proxy_threads", json!(threads)),
            ("tls", json!(opts.tls)),
        ]),
        run,
        runs: bench.common.runs,
        deliveries,
        unit: test.unit(),
        cpu,
        latency: latency.summary(),
        errors,
        extra,
    }
}

fn err_kind(prefix: &str, e: &std::io::Error) -> String {
    format!("{prefix}_{:?}", e.kind()).to_lowercase()
}

async fn connect(
    server: SocketAddr,
    source: Option<std::net::IpAddr>,
    tls: Option<&TlsConnector>,
) -> std::io::Result<Conn> {
    let stream = match source {
        None => TcpStream::connect(server).await?,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(server).await?
        }
    };
    stream.set_nodelay(true)?;
    match tls {
        None => Ok(Either::Left(stream)),
        Some(tls) => {
            let name = tlsconf::ServerName::try_from("localhost").expect("a valid name");
            Ok(Either::Right(tls.connect(name, stream).await?))
        }
    }
}

/// One request and its echo; `Err(kind)` on failure.
async fn round_trip(stream: &mut Conn, shared: &Shared, buf: &mut [u8]) -> Result<(), String> {
    let work = async {
        stream
            .write_all(&shared.message)
            .await
            .map_err(|e| err_kind("io", &e))?;
        // TLS holds what was written until flushed.
        stream.flush().await.map_err(|e| err_kind("io", &e))?;
        match stream.read_exact(&mut buf[..shared.message.len()]).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err("closed".to_string()),
            Err(e) => Err(err_kind("io", &e)),
        }
    };
    match tokio::time::timeout(shared.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

fn record_error(slot: &SharedSlot, shared: &Shared, kind: String) {
    if shared.phase.get() != STOP {
        lock(slot).errors.add(kind);
    }
}

async fn keepalive(
    server: SocketAddr,
    source: Option<std::net::IpAddr>,
    shared: &Shared,
    slot: &SharedSlot,
) {
    let mut buf = vec![0u8; shared.message.len()];
    while shared.phase.get() != STOP {
        let mut stream = match connect(server, source, shared.tls.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                record_error(slot, shared, err_kind("connect", &e));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while shared.phase.get() != STOP {
            let started = Instant::now();
            match round_trip(&mut stream, shared, &mut buf).await {
                Ok(()) => {
                    if shared.phase.get() == MEASURE {
                        lock(slot).latency.record(started.elapsed());
                    }
                }
                Err(kind) => {
                    record_error(slot, shared, kind);
                    break;
                }
            }
        }
    }
}

async fn connect_loop(
    server: SocketAddr,
    source: Option<std::net::IpAddr>,
    shared: &Shared,
    slot: &SharedSlot,
) {
    let mut buf = vec![0u8; shared.message.len()];
    while shared.phase.get() != STOP {
        let started = Instant::now();
        let result = match tokio::time::timeout(
            shared.timeout,
            connect(server, source, shared.tls.as_ref()),
        )
        .await
        {
            Ok(Ok(mut stream)) => round_trip(&mut stream, shared, &mut buf).await,
            Ok(Err(e)) => Err(err_kind("connect", &e)),
            Err(_) => Err("connect_timeout".into()),
        };
        // The stream is closed (FIN) as it goes out of scope above.
        match result {
            Ok(()) => {
                if shared.phase.get() == MEASURE {
                    lock(slot).latency.record(started.elapsed());
                }
            }
            Err(kind) => {
                record_error(slot, shared, kind);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

async fn bulk(
    server: SocketAddr,
    source: Option<std::net::IpAddr>,
    shared: &Shared,
    slot: &SharedSlot,
    chunk: usize,
) {
    while shared.phase.get() != STOP {
        let stream = match connect(server, source, shared.tls.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                record_error(slot, shared, err_kind("connect", &e));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(stream);
        let data = vec![b'y'; chunk];
        let write = async {
            loop {
                if let Err(e) = writer.write_all(&data).await {
                    return err_kind("io", &e);
                }
            }
        };
        let read = async {
            let mut buf = vec![0u8; chunk.max(64 * 1024)];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => return "closed".to_string(),
                    Ok(n) => {
                        if shared.phase.get() == MEASURE {
                            shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Err(e) => return err_kind("io", &e),
                }
            }
        };
        let kind = tokio::select! {
            k = write => k,
            k = read => k,
        };
        record_error(slot, shared, kind);
    }
}

// ------------------------------------------------------------- echo backends

/// Echo servers on 127.0.0.1:0, served by their own thread and runtime.
struct EchoServers {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServers {
    fn start(count: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listeners = (0..count)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("echo".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for l in listeners {
                        match TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(echo_accept(l));
                            }
                            Err(e) => eprintln!("chatbench: echo listener: {e}"),
                        }
                    }
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            addrs,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn echo_accept(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ------------------------------------------------------------- the proxies

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "chatbench-proxy-{}-{:x}",
            std::process::id(),
            stamp & 0xffff_ffff
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lb.toml the balancer runs with: the echo servers as backends, TCP
/// health checks, no admin server, no idle timeout, and the `settings`
/// lines (top-level keys, so before the first table).
pub fn balancer_config(
    backends: &[SocketAddr],
    tls: Option<(&Path, &Path)>,
    settings: &[String],
) -> String {
    let mut out = String::from(
        "listen = \"127.0.0.1:0\"\nconnect_timeout = \"1s\"\nidle_timeout = \"0s\"\n\
         shutdown_grace = \"1s\"\n",
    );
    for line in settings {
        let _ = writeln!(out, "{}", line.trim());
    }
    out.push_str(
        "\n[health]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 2\nfall = 3\n",
    );
    if let Some((cert, key)) = tls {
        let _ = write!(
            out,
            "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        );
    }
    for b in backends {
        let _ = write!(out, "\n[[backend]]\naddress = \"{b}\"\nweight = 1\n");
    }
    out
}

/// The Nginx config: `workers` processes, a stream proxy on `port` to the
/// backends, the same long timeout as the balancer (none: 24h), no access log.
pub fn nginx_config(
    stream_module: Option<&Path>,
    workers: usize,
    port: u16,
    backends: &[SocketAddr],
    tls: Option<(&Path, &Path)>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "worker_processes {workers};");
    out.push_str("pid nginx.pid;\nerror_log error.log warn;\n");
    if let Some(m) = stream_module {
        let _ = writeln!(out, "load_module {};", m.display());
    }
    out.push_str("events {\n    worker_connections 16384;\n}\nstream {\n    upstream bench {\n");
    for b in backends {
        let _ = writeln!(out, "        server {b} max_fails=3 fail_timeout=10s;");
    }
    // With TLS: config/nginx.conf's settings.
    let (ssl, tls_lines) = match tls {
        None => ("", String::new()),
        Some((cert, key)) => (
            " ssl",
            format!(
                "        ssl_certificate {};\n        ssl_certificate_key {};\n\
                 \x20       ssl_protocols TLSv1.2 TLSv1.3;\n\
                 \x20       ssl_session_cache shared:bench_tls:10m;\n\
                 \x20       ssl_handshake_timeout 10s;\n",
                cert.display(),
                key.display()
            ),
        ),
    };
    let _ = write!(
        out,
        "    }}\n    server {{\n        listen 127.0.0.1:{port}{ssl};\n{tls_lines}        proxy_pass bench;\n\
         \x20       proxy_connect_timeout 1s;\n        proxy_timeout 24h;\n\
         \x20       tcp_nodelay on;\n    }}\n}}\n"
    );
    out
}

/// A child process with a `listening on ADDR` line on stdout.
struct Balancer {
    child: tokio::process::Child,
    addr: SocketAddr,
    pid: u32,
}

impl Balancer {
    async fn start(
        bin: &Path,
        dir: &Path,
        backends: &[SocketAddr],
        threads: usize,
        tls: Option<(&Path, &Path)>,
        settings: &[String],
    ) -> anyhow::Result<Self> {
        let conf = dir.join("lb.toml");
        std::fs::write(&conf, balancer_config(backends, tls, settings))?;
        let log = std::fs::File::create(dir.join("balancer.log"))?;
        let mut child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&conf)
            .env("TOKIO_WORKER_THREADS", threads.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("balancer exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("balancer did not print `listening on` within 20 s")??
            .with_context(|| {
                format!(
                    "balancer exited: {}",
                    std::fs::read_to_string(dir.join("balancer.log")).unwrap_or_default()
                )
            })?;
        let addr = line
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from the balancer: {line}"))?
            .trim()
            .parse()?;
        Ok(Self { child, addr, pid })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

struct Nginx {
    child: tokio::process::Child,
    addr: SocketAddr,
    master: u32,
    workers: Vec<u32>,
}

impl Nginx {
    async fn start(
        bin: &Path,
        stream_module: Option<&Path>,
        dir: &Path,
        backends: &[SocketAddr],
        workers: usize,
        tls: Option<(&Path, &Path)>,
    ) -> anyhow::Result<Self> {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(&prefix)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            nginx_config(stream_module, workers, port, backends, tls),
        )?;
        let child = tokio::process::Command::new(bin)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting {} (give --nginx-bin)", bin.display()))?;
        let master = child.id().context("nginx exited at once")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Nginx {
            child,
            addr,
            master,
            workers: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = nginx.child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut e) = nginx.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr).await;
                }
                anyhow::bail!(
                    "nginx exited at start-up ({status}): {stderr} {}",
                    std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
                );
            }
            nginx.workers = children_of(master);
            if nginx.workers.len() >= workers && TcpStream::connect(addr).await.is_ok() {
                return Ok(nginx);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx not ready on {addr} with {workers} workers within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Master and workers: their CPU time is the proxy's.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.master];
        pids.extend(&self.workers);
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops the workers too; SIGKILL would orphan them.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.master.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Workers left behind (the master was killed, say) are killed too.
        for pid in &self.workers {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("nginx") {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

/// Pids whose parent is `parent` (from /proc/*/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if parent_pid(&stat) == Some(parent) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// The parent pid (field 4) of a `/proc/PID/stat` text.
pub fn parent_pid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn nginx_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------- summary

/// Medians over the runs of one (test, target).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Proxy CPU (all its processes) per operation (per MB for bulk).
    pub cpu_us: Option<f64>,
    pub errors: u64,
}

pub struct Summary {
    tests: Vec<Test>,
    targets: Vec<Target>,
    figures: Vec<((Test, Target), Figures)>,
    runs: usize,
}

impl Summary {
    pub fn from_reports(reports: &[RunReport], opts: &Options) -> Self {
        let mut figures = Vec::new();
        for &test in &opts.tests {
            for &target in &opts.targets {
                let mine: Vec<&RunReport> = reports
                    .iter()
                    .filter(|r| {
                        r.params.get("test") == Some(&json!(test.name()))
                            && r.params.get("target") == Some(&json!(target.name()))
                    })
                    .collect();
                let med = |f: &dyn Fn(&RunReport) -> Option<f64>| {
                    let mut v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
                    stats::median(&mut v)
                };
                figures.push((
                    (test, target),
                    Figures {
                        rate: med(&|r| r.extra.get("rate").and_then(Value::as_f64)).unwrap_or(0.0),
                        p50_us: med(&|r| (r.latency.count > 0).then_some(r.latency.p50_us))
                            .unwrap_or(0.0),
                        p99_us: med(&|r| (r.latency.count > 0).then_some(r.latency.p99_us))
                            .unwrap_or(0.0),
                        cpu_us: med(&|r| cpu_per_op(r.cpu, r.deliveries)),
                        errors: mine.iter().map(|r| r.errors.total()).sum(),
                    },
                ));
            }
        }
        Self {
            tests: opts.tests.clone(),
            targets: opts.targets.clone(),
            figures,
            runs: reports.iter().map(|r| r.runs).max().unwrap_or(0),
        }
    }

    pub fn get(&self, test: Test, target: Target) -> Option<Figures> {
        self.figures
            .iter()
            .find(|(k, _)| *k == (test, target))
            .map(|(_, f)| *f)
    }

    /// balancer / nginx for each figure that both have.
    pub fn ratios_json(&self) -> Value {
        let mut out = Map::new();
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| (a / b * 1000.0).round() / 1000.0);
        for &test in &self.tests {
            let (Some(b), Some(n)) = (
                self.get(test, Target::Balancer),
                self.get(test, Target::Nginx),
            ) else {
                continue;
            };
            let key = match test {
                Test::Keepalive => "keepalive_round_trips_per_s",
                Test::Connect => "connections_per_s",
                Test::Bulk => "bulk_mb_per_s",
            };
            out.insert(key.into(), json!(ratio(b.rate, n.rate)));
            if test != Test::Bulk {
                out.insert(
                    format!("{}_p99", test.name()),
                    json!(ratio(b.p99_us, n.p99_us)),
                );
                if let Some(d) = self.get(test, Target::Direct) {
                    let (ab, an) = (b.p99_us - d.p99_us, n.p99_us - d.p99_us);
                    out.insert(
                        format!("{}_added_p99", test.name()),
                        json!(added_ratio(ab, an)),
                    );
                    out.insert(
                        format!("{}_added_p99_us", test.name()),
                        json!({"balancer": (ab * 10.0).round() / 10.0, "nginx": (an * 10.0).round() / 10.0}),
                    );
                }
            }
            if let (Some(cb), Some(cn)) = (b.cpu_us, n.cpu_us) {
                out.insert(format!("{}_proxy_cpu", test.name()), json!(ratio(cb, cn)));
            }
        }
        Value::Object(out)
    }

    pub fn medians_json(&self) -> Value {
        let mut out = Map::new();
        for ((test, target), f) in &self.figures {
            out.insert(
                format!("{}_{}", test.name(), target.name()),
                json!({
                    "rate": (f.rate * 10.0).round() / 10.0,
                    "p50_us": f.p50_us,
                    "p99_us": f.p99_us,
                    "proxy_cpu_us_per_op": f.cpu_us.map(|c| (c * 100.0).round() / 100.0),
                    "errors": f.errors,
                }),
            );
        }
        Value::Object(out)
    }

    fn rows(&self) -> Vec<[String; 6]> {
        let mut rows = Vec::new();
        for &test in &self.tests {
            for &target in &self.targets {
                let Some(f) = self.get(test, target) else {
                    continue;
                };
                let unit = match test {
                    Test::Bulk => "MB/s",
                    Test::Keepalive => "round trips/s",
                    Test::Connect => "connections/s",
                };
                let lat = |x: f64| {
                    if test == Test::Bulk || x == 0.0 {
                        "-".to_string()
                    } else {
                        stats::human_us(x)
                    }
                };
                let cpu = f.cpu_us.map_or("-".into(), |c| {
                    format!("{c:.2} µs/{}", if test == Test::Bulk { "MB" } else { "op" })
                });
                rows.push([
                    test.name().to_string(),
                    target.name().to_string(),
                    format!("{:.0} {unit}", f.rate),
                    format!("{} / {}", lat(f.p50_us), lat(f.p99_us)),
                    cpu,
                    f.errors.to_string(),
                ]);
            }
        }
        rows
    }

    pub fn table(&self) -> String {
        let mut t = format!("== proxy: medians of {} runs\n", self.runs);
        let _ = writeln!(
            t,
            "  {:<10} {:<9} {:>22} {:>22} {:>16} {:>7}",
            "test", "target", "rate", "p50 / p99", "proxy cpu", "errors"
        );
        for r in self.rows() {
            let _ = writeln!(
                t,
                "  {:<10} {:<9} {:>22} {:>22} {:>16} {:>7}",
                r[0], r[1], r[2], r[3], r[4], r[5]
            );
        }
        let _ = writeln!(t, "  ratios balancer/nginx: {}", self.ratios_json());
        t
    }

    pub fn markdown(&self, ctx: &MarkdownContext<'_>) -> String {
        let mut m = String::new();
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let tls = if ctx.opts.tls {
            ", TLS terminated (ECDSA P-256, full handshakes)"
        } else {
            ""
        };
        let _ = writeln!(
            m,
            "\n## Balancer vs Nginx: `chatbench proxy`{tls} ({date})\n"
        );
        let _ = writeln!(m, "```sh\n{}\n```\n", ctx.command);
        let _ = writeln!(
            m,
            "Machine: {} CPUs ({}), kernel {}; load average before {}, after {}. \
             Balancer runtime threads = Nginx worker processes = {}; {}. \
             Echo backends: {} in chatbench's process, on a thread and runtime of their own. Load: keep-alive {} \
             connections × {} B round trips; connect: {} workers (connect, one {} B round \
             trip, close); bulk: {} connections × {} KiB writes. Median of {} runs, {} s \
             measured after {} s warm-up, targets interleaved per run.\n",
            cpus(),
            cpu_model(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            ctx.load_before,
            ctx.load_after,
            ctx.threads,
            ctx.nginx_version,
            ctx.opts.backends,
            ctx.opts.connections,
            ctx.opts.message_size,
            ctx.opts.connect_workers,
            ctx.opts.message_size,
            ctx.opts.bulk_connections,
            ctx.opts.bulk_chunk / 1024,
            self.runs,
            ctx.common.duration.as_secs_f64(),
            ctx.common.warmup.as_secs_f64(),
        );
        m.push_str("| test | target | rate | p50 / p99 | proxy CPU | errors |\n|---|---|---|---|---|---|\n");
        for r in self.rows() {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} |",
                r[0], r[1], r[2], r[3], r[4], r[5]
            );
        }
        let _ = writeln!(
            m,
            "\nRatios balancer / Nginx (JSON):\n\n```json\n{}\n```",
            self.ratios_json()
        );
        m
    }
}

pub struct MarkdownContext<'a> {
    pub command: String,
    pub threads: usize,
    pub load_before: String,
    pub load_after: String,
    pub nginx_version: String,
    pub common: &'a Common,
    pub opts: &'a Options,
}

/// Added p99 of the balancer over Nginx's; when Nginx added nothing (or
/// less than nothing: noise), the ratio is undefined.
pub fn added_ratio(balancer_us: f64, nginx_us: f64) -> Option<f64> {
    (nginx_us > 0.0).then(|| (balancer_us / nginx_us * 1000.0).round() / 1000.0)
}

fn cpu_per_op(cpu: CpuUsed, ops: u64) -> Option<f64> {
    let s = cpu.server_s?;
    (ops > 0).then(|| s * 1e6 / ops as f64)
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown model".into())
}

/// The arguments as a shell command to paste back: an argument with a
/// space or a shell metacharacter is single-quoted
/// (`--balancer-setting 'half_close = false'`).
fn shell_words(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_command_quotes_what_the_shell_would_split() {
        let args = [
            "chatbench",
            "proxy",
            "--balancer-setting",
            "half_close = false",
            "it's",
        ];
        assert_eq!(
            shell_words(args.map(String::from)),
            r"chatbench proxy --balancer-setting 'half_close = false' 'it'\''s'"
        );
    }

    #[test]
    fn configs_name_every_backend() {
        let backends: Vec<SocketAddr> = vec![
            "127.0.0.1:5001".parse().unwrap(),
            "127.0.0.1:5002".parse().unwrap(),
        ];
        let lb = balancer_config(&backends, None, &["half_close = false".into()]);
        assert!(lb.contains("kind = \"tcp\""));
        assert!(
            lb.contains("shutdown_grace = \"1s\"\nhalf_close = false\n\n[health]"),
            "{lb}"
        );
        assert!(lb.contains("address = \"127.0.0.1:5002\""));
        assert!(!lb.contains("admin"));
        let ng = nginx_config(Some(Path::new("/m.so")), 3, 4000, &backends, None);
        assert!(ng.contains("worker_processes 3;"));
        assert!(ng.contains("load_module /m.so;"));
        assert!(ng.contains("listen 127.0.0.1:4000;"));
        assert!(ng.contains("server 127.0.0.1:5001 "));
        assert!(ng.contains("proxy_timeout 24h;"));
        assert!(!nginx_config(None, 1, 1, &backends, None).contains("load_module"));
        assert!(!ng.contains("ssl"));
        let files = Some((Path::new("/c.pem"), Path::new("/k.pem")));
        let lb = balancer_config(&backends, files, &[]);
        assert!(
            lb.contains("[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\""),
            "{lb}"
        );
        let ng = nginx_config(None, 1, 4000, &backends, files);
        assert!(ng.contains("listen 127.0.0.1:4000 ssl;"), "{ng}");
        assert!(ng.contains("ssl_certificate /c.pem;"), "{ng}");
        assert!(ng.contains("ssl_certificate_key /k.pem;"), "{ng}");
    }

    #[test]
    fn parent_pid_is_field_four() {
        assert_eq!(parent_pid("42 (nginx: worker) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn added_p99_ratio() {
        assert_eq!(added_ratio(105.0, 100.0), Some(1.05));
        assert_eq!(added_ratio(10.0, 0.0), None);
    }
}
