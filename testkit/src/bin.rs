//! The workspace's binaries as child processes: where to find them, a
//! server started on port 0 that reports `listening on ADDR`, a run to
//! completion, and a process driven line by line through pipes. Every wait
//! is bounded; every child is killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc as tokio_mpsc;

use crate::WAIT;

/// How long a server binary may take to print its address (the first
/// start of a test binary may run migrations on a busy machine).
pub const START_WAIT: Duration = Duration::from_secs(30);

/// `chatserver` options for the cheapest password hashing: tests log in
/// often and prove nothing about hashing cost.
pub const CHEAP_HASHING: [&str; 4] = ["--hash-memory-kib", "64", "--hash-iterations", "1"];

/// `chatserver` options that lift the signup and connection limits: tests
/// and benchmarks register many users and open many connections from
/// 127.0.0.1. Tests of those limits set their own.
pub const GENEROUS_LIMITS: [&str; 8] = [
    "--register-per-address",
    "1000000",
    "--create-group-per-user",
    "1000000",
    "--max-connections",
    "100000",
    "--max-connections-per-ip",
    "100000",
];

/// The path of workspace binary `name`: `$<NAME>_BIN` if set (say
/// `CHATSERVER_BIN`), else beside the running test's own directory
/// (`target/<profile>/<name>`, built by `cargo test --workspace` or
/// `cargo build`). Tests of the crate that owns the binary should pass
/// `env!("CARGO_BIN_EXE_<name>")` instead.
pub fn path(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let candidate = profile_dir.join(name);
    assert!(
        candidate.is_file(),
        "{} is not built: run `cargo build -p {name}` (or `cargo test --workspace`) first, \
         or set {var}",
        candidate.display()
    );
    candidate
}

/// Sends signal `name` (TERM, INT, HUP, KILL...) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill")
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// How a process that ran to its end ended.
#[derive(Debug)]
pub struct Exit {
    /// The exit code; -1 when a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end within `limit`, its output captured. Panics
/// (after killing it) if it runs longer.
pub fn run_to_exit(mut command: Command, limit: Duration) -> Exit {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => {
            let output = output.expect("collecting the output");
            Exit {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        Err(_) => {
            signal(pid, "KILL");
            panic!("{command:?} still running after {limit:?}")
        }
    }
}

/// A child process, killed (and reaped) on drop.
pub struct Process {
    pub child: Child,
}

impl Process {
    /// Starts `command` as it is set up.
    pub fn spawn(command: &mut Command) -> Process {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        Process { child }
    }

    /// Starts a server binary (its stdout piped here) and waits at most
    /// [`START_WAIT`] for its `listening on ADDR` line; later stdout is
    /// drained and dropped.
    pub fn start_listening(command: &mut Command) -> (Process, SocketAddr) {
        let mut process = Process::spawn(command.stdout(Stdio::piped()));
        let stdout = process.child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(START_WAIT)
            .unwrap_or_else(|_| panic!("{command:?} printed no address within {START_WAIT:?}"));
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("address in {line:?}: {e}"));
        (process, addr)
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        signal(self.id(), name);
    }

    /// The exit status if it ends within `limit`; `None` if it is still
    /// running (it is not killed).
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for a child") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`wait_timeout`](Process::wait_timeout) off the async runtime.
    pub async fn wait_timeout_async(mut self, limit: Duration) -> (Option<ExitStatus>, Process) {
        tokio::task::spawn_blocking(move || (self.wait_timeout(limit), self))
            .await
            .expect("waiting thread")
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("waiting for a child")
            .is_none()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process driven through pipes: lines written to stdin, stdout and
/// stderr read line by line with bounded waits.
pub struct LineProcess {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio_mpsc::UnboundedReceiver<String>,
    stderr: tokio_mpsc::UnboundedReceiver<String>,
    /// Every line seen so far, for failure messages and later checks.
    pub out_seen: Vec<String>,
    pub err_seen: Vec<String>,
}

fn lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> tokio_mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio_mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl LineProcess {
    /// Starts `command` with all three streams piped; killed on drop.
    pub fn spawn(mut command: tokio::process::Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdin,
            stdout,
            stderr,
            out_seen: Vec::new(),
            err_seen: Vec::new(),
        }
    }

    /// Writes `text` to stdin.
    pub async fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(text.as_bytes())
            .await
            .expect("writing stdin");
        stdin.flush().await.expect("flushing stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits at most [`WAIT`] for a stdout line containing `needle`.
    pub async fn expect_out(&mut self, needle: &str) -> String {
        match Self::find(&mut self.stdout, &mut self.out_seen, needle).await {
            Some(line) => line,
            None => {
                self.drain_err();
                panic!(
                    "no stdout line with {needle:?}; stdout: {:#?}; stderr so far: {:#?}",
                    self.out_seen, self.err_seen
                )
            }
        }
    }

    /// Waits at most [`WAIT`] for a stderr line containing `needle`.
    pub async fn expect_err(&mut self, needle: &str) -> String {
        match Self::find(&mut self.stderr, &mut self.err_seen, needle).await {
            Some(line) => line,
            None => panic!(
                "no stderr line with {needle:?}; stderr: {:#?}; stdout: {:#?}",
                self.err_seen, self.out_seen
            ),
        }
    }

    async fn find(
        lines: &mut tokio_mpsc::UnboundedReceiver<String>,
        seen: &mut Vec<String>,
        needle: &str,
    ) -> Option<String> {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.recv().await {
                seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found.ok().flatten()
    }

    fn drain_err(&mut self) {
        while let Ok(line) = self.stderr.try_recv() {
            self.err_seen.push(line);
        }
    }

    /// Closes stdin and waits at most [`WAIT`] for the exit; returns the
    /// status with every line of stdout and stderr not yet taken by an
    /// `expect_*`. Panics if the process panicked.
    pub async fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.close_stdin();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the process did not exit in time")
            .expect("waiting for the process");
        let mut out = std::mem::take(&mut self.out_seen);
        let mut err = std::mem::take(&mut self.err_seen);
        // The pipes close with the process: what is left arrives quickly.
        let tail = Duration::from_secs(2);
        while let Ok(Some(line)) = tokio::time::timeout(tail, self.stdout.recv()).await {
            out.push(line);
        }
        while let Ok(Some(line)) = tokio::time::timeout(tail, self.stderr.recv()).await {
            err.push(line);
        }
        for line in &err {
            assert!(!line.contains("panicked"), "the process panicked: {err:#?}");
        }
        (status, out, err)
    }
}

/// The exit code; panics if a signal ended the process.
pub fn code(status: ExitStatus) -> i32 {
    status.code().expect("exited by signal")
}
