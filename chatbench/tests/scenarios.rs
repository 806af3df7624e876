//! Runs chatbench against the real chatserver binary on a free port.
//!
//! The server binary is not built by this test: set CHATSERVER_BIN, or
//! build it first (`cargo build -p chatserver`, or `cargo test
//! --workspace`) so that it is found beside the test (target/debug).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testkit::bin::{self, run_to_exit, Process};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The chatserver binary on a free port over an SQLite file in a temp dir
/// of the run; killed on drop.
struct Server {
    process: Process,
    addr: String,
}

impl Server {
    fn start() -> Server {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Server {
        let (process, addr) = Process::start_listening(
            Command::new(bin::path("chatserver"))
                .args(["127.0.0.1", "0"])
                .args(extra)
                .args(bin::CHEAP_HASHING)
                .args(bin::GENEROUS_LIMITS)
                .current_dir(testkit::run::temp_dir("chatbench"))
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        Server {
            process,
            addr: addr.to_string(),
        }
    }

    /// Runs chatbench with --json against this server; returns its JSON lines.
    fn bench(&self, args: &[&str]) -> Vec<Value> {
        let pid = self.process.id().to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatbench"));
        command
            .args([
                "--json",
                "--server",
                &self.addr,
                "--server-pid",
                &pid,
                "--timeout",
                "5s",
            ])
            .args(args);
        let exit = run_to_exit(command, RUN_TIMEOUT);
        assert!(
            exit.code == 0,
            "chatbench {args:?} failed ({}): {}\n{}",
            exit.code,
            exit.stdout,
            exit.stderr
        );
        exit.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

#[test]
fn ping_pong_offline_and_fan_out_against_the_real_server() {
    let server = Server::start();

    for version in [None, Some("--v1")] {
        let mut args = vec![
            "pingpong",
            "--pairs",
            "2",
            "--warmup",
            "200ms",
            "--duration",
            "1s",
        ];
        args.extend(version);
        let lines = server.bench(&args);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let run = &lines[0];
        assert_eq!(run["scenario"], "pingpong");
        assert_eq!(run["error_count"], 0, "{run}");
        let deliveries = run["deliveries"].as_u64().unwrap();
        assert!(deliveries > 50, "{run}");
        assert_eq!(run["latency"]["count"].as_u64(), Some(deliveries));
        assert!(run["server_cpu_s"].is_number(), "{run}");
        assert!(run["bench_cpu_s"].is_number(), "{run}");
    }

    let lines = server.bench(&["offline", "--messages", "50", "--runs", "2"]);
    assert_eq!(lines.len(), 3, "two runs and the median: {lines:?}");
    for run in &lines[..2] {
        assert_eq!(run["scenario"], "offline");
        assert_eq!(run["sent"], 50);
        assert_eq!(run["delivered"], 50, "{run}");
        assert_eq!(run["missing"], 0);
        assert_eq!(run["duplicates"], 0);
        assert_eq!(run["in_order"], 1);
        assert_eq!(run["error_count"], 0);
    }
    assert_eq!(lines[2]["median"]["median_of"], 2);

    let lines = server.bench(&[
        "fanout",
        "--members",
        "4",
        "--warmup",
        "100ms",
        "--duration",
        "500ms",
    ]);
    let run = &lines[0];
    assert_eq!(run["error_count"], 0, "{run}");
    assert!(run["deliveries"].as_u64().unwrap() >= 3, "{run}");
    assert!(run["messages_per_s"].as_f64().unwrap() > 0.0, "{run}");

    let lines = server.bench(&["idle", "--connections", "20", "--hold", "200ms"]);
    let run = &lines[0];
    assert_eq!(run["server_load"], 20, "{run}");
    assert!(run["rss_after_kib"].as_u64().unwrap() > 0, "{run}");
}

/// `--ws-server`: the measured connections log in over WebSocket (the
/// server's web listener); users are registered over TCP.
#[test]
fn ping_pong_over_websocket() {
    let web = format!("127.0.0.1:{}", testkit::free_port());
    let server = Server::start_with(&["--ws-listen", &web]);
    let lines = server.bench(&[
        "--ws-server",
        &web,
        "pingpong",
        "--pairs",
        "2",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
    ]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let run = &lines[0];
    assert_eq!(run["error_count"], 0, "{run}");
    assert!(run["deliveries"].as_u64().unwrap() > 50, "{run}");
}
