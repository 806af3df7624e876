//! The `chatserver` binary with its web listener, on a SQLite file of this
//! run, on ports chosen once so that a restart comes back where the open
//! pages and clients look for it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use testkit::bin::{self, Process, CHEAP_HASHING, GENEROUS_LIMITS};
use testkit::prelude::*;

/// How long a clean stop (GOAWAY, drain) may take.
const STOP_WAIT: Duration = Duration::from_secs(15);

pub struct WebServer {
    process: Option<Process>,
    args: Vec<String>,
    /// The TCP listener (v1/v2 clients).
    pub tcp: SocketAddr,
    /// The web listener: the page at `/`, the WebSocket at `/ws`.
    pub web: SocketAddr,
}

impl WebServer {
    /// A new server on a new SQLite file; `drain` is its drain period
    /// (GOAWAY's `retry_ms`).
    pub fn start(drain: Duration) -> WebServer {
        let db = testkit::run::fresh_sqlite_url();
        let (tcp_port, web_port) = two_free_ports();
        let web: SocketAddr = format!("127.0.0.1:{web_port}").parse().expect("address");
        let mut args: Vec<String> = vec![
            "--database-url".into(),
            db,
            "--ws-listen".into(),
            web.to_string(),
            "--drain-period".into(),
            format!("{}ms", drain.as_millis()),
        ];
        args.extend(CHEAP_HASHING.iter().map(|s| s.to_string()));
        args.extend(GENEROUS_LIMITS.iter().map(|s| s.to_string()));
        args.extend(["127.0.0.1".into(), tcp_port.to_string()]);
        let mut server = WebServer {
            process: None,
            args,
            tcp: format!("127.0.0.1:{tcp_port}").parse().expect("address"),
            web,
        };
        server.launch();
        server
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.web)
    }

    fn launch(&mut self) {
        // tokio binds with SO_REUSEADDR: the ports of the server just
        // stopped are free again at once.
        let mut command = Command::new(bin::path("chatserver"));
        command.args(&self.args).env("RUST_LOG", "warn");
        let (process, addr) = Process::start_listening(&mut command);
        assert_eq!(addr, self.tcp, "the server listens where it was told");
        self.process = Some(process);
        let deadline = Deadline::after(WAIT);
        while std::net::TcpStream::connect(self.web).is_err() {
            deadline.check("the web listener did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server cleanly (SIGTERM: GOAWAY to every v2 session, then
    /// the drain) and waits for it to exit; the SQLite file stays.
    pub async fn stop(&mut self) {
        let process = self.process.take().expect("the server is running");
        process.signal("TERM");
        let (status, _process) = process.wait_timeout_async(STOP_WAIT).await;
        let status = status.expect("the server did not stop in time");
        assert!(status.success(), "the server exited with {status}");
    }

    /// SIGKILL: no GOAWAY, no drain, whatever was in flight cut off.
    pub fn kill(&mut self) {
        let mut process = self.process.take().expect("the server is running");
        process.kill();
    }

    /// Starts it again on the same file and ports.
    pub fn start_again(&mut self) {
        assert!(self.process.is_none(), "stop it first");
        self.launch();
    }
}

/// Two distinct ports nothing listens on (both held while choosing, so
/// they differ).
fn two_free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().expect("local address").port();
    (port(&a), port(&b))
}
