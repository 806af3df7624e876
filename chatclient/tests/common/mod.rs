//! Helpers of the delivery tests: a TCP relay between the client and the
//! server that the test can cut or mute (a network that fails mid-stream),
//! and a chatclient whose stdout the test reads only when it chooses.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

/// A relay on a free port to `server`. [`Relay::cut`] closes every current
/// connection (the client sees its connection drop; new ones are relayed
/// again); [`Relay::limit`] passes only so many more bytes from the server
/// and discards the rest (replies and pushes lost on the way).
pub struct Relay {
    pub port: u16,
    /// Where new connections go ([`Relay::retarget`]).
    server: Arc<Mutex<SocketAddr>>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Bytes from the server still to pass, over all connections.
    budget: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Relay {
    pub async fn start(server: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        let target = Arc::new(Mutex::new(server));
        let accept = {
            let (links, budget, target) = (links.clone(), budget.clone(), target.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let budget = budget.clone();
                    let server = *target.lock().unwrap();
                    let link = tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(server).await else {
                            return;
                        };
                        relay(client, server, budget).await;
                    });
                    links.lock().unwrap().push(link);
                }
            })
        };
        Relay {
            port,
            server: target,
            links,
            budget,
            accept,
        }
    }

    /// New connections go to `server` (a server restarted on another port).
    pub fn retarget(&self, server: SocketAddr) {
        *self.server.lock().unwrap() = server;
    }

    /// Closes every relayed connection now.
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// From now on pass only `bytes` more from the server (0: none), then
    /// read and drop the rest; `u64::MAX`: everything again.
    pub fn limit(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay(client: TcpStream, server: TcpStream, budget: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let left = budget.load(Ordering::SeqCst);
            let pass = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            if left != u64::MAX {
                budget.fetch_sub(pass as u64, Ordering::SeqCst);
            }
            if client_write.write_all(&buf[..pass]).await.is_err() {
                break;
            }
        }
    };
    // Either direction ending ends the link (both sockets close).
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// `chatclient 127.0.0.1 PORT --login ID ...` whose stdout is read only
/// through [`Reader::next_line`]: until then it fills the pipe and the
/// client blocks showing messages. Stderr is collected in the background.
pub struct Reader {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Lines<BufReader<ChildStdout>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Reader {
    pub fn login(port: u16, id: i64, password: &str, extra: &[&str]) -> Reader {
        let (port, id) = (port.to_string(), id.to_string());
        let mut args = vec![
            "127.0.0.1",
            &port,
            "--linger",
            "0.5",
            "--login",
            &id,
            "--password-env",
            "CHAT_PW",
        ];
        args.extend_from_slice(extra);
        let mut command = testkit::cli::command(&args);
        command
            .env("CHAT_PW", password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("starting chatclient");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut err_lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let collected = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Reader {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// The next stdout line, within `testkit::WAIT`.
    pub async fn next_line(&mut self) -> String {
        match tokio::time::timeout(testkit::WAIT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "no stdout line ({other:?}); stderr: {:#?}",
                self.stderr.lock().unwrap()
            ),
        }
    }

    pub async fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).await.expect("stdin");
        stdin.flush().await.expect("stdin");
    }

    pub fn stderr_has(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Closes stdin and returns the exit code and the remaining stdout.
    pub async fn finish(mut self) -> (i32, Vec<String>, Vec<String>) {
        self.stdin = None;
        let mut rest = Vec::new();
        loop {
            match tokio::time::timeout(testkit::WAIT, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => rest.push(line),
                Ok(_) => break,
                Err(_) => panic!("stdout still open {:?} after stdin closed", testkit::WAIT),
            }
        }
        let status = tokio::time::timeout(testkit::WAIT, self.child.wait())
            .await
            .expect("chatclient exits")
            .expect("waiting for chatclient");
        let err = self.stderr.lock().unwrap().clone();
        (status.code().unwrap_or(-1), rest, err)
    }
}
