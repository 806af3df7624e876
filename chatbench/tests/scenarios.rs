//! Runs chatbench against the real chatserver binary on a free port.
//!
//! The server binary is not built by this test: set CHATSERVER_BIN, or
//! build it first (`cargo build -p chatserver`) so that it is found at
//! $CARGO_TARGET_DIR/debug/chatserver (or target/debug/chatserver).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn chatserver_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CHATSERVER_BIN") {
        return path.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for profile in ["debug", "release"] {
        let candidate = target.join(profile).join("chatserver");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "chatserver binary not found under {}/{{debug,release}}: run `cargo build -p chatserver` \
         first or set CHATSERVER_BIN to its path",
        target.display()
    );
}

struct Server {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Server {
    fn start() -> Server {
        let dir = std::env::temp_dir().join(format!(
            "chatbench-test-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_bits()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(chatserver_bin())
            .args([
                "127.0.0.1",
                "0",
                "--hash-memory-kib",
                "64",
                "--hash-iterations",
                "1",
            ])
            .current_dir(&dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chatserver starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("chatserver did not print `listening on` within {START_TIMEOUT:?}");
            }
        };
        Server { child, addr, dir }
    }

    /// Runs chatbench with --json against this server; returns its JSON lines.
    fn bench(&self, args: &[&str]) -> Vec<Value> {
        let pid = self.child.id().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatbench"))
            .args([
                "--json",
                "--server",
                &self.addr,
                "--server-pid",
                &pid,
                "--timeout",
                "5s",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chatbench starts");
        let deadline = Instant::now() + RUN_TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chatbench {args:?} did not finish within {RUN_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "chatbench {args:?} failed ({}): {stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_bits() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
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
