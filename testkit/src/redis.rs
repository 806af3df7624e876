//! A Redis server of the test's own (not the shared one), on a given port,
//! for tests that kill and restart Redis. Nothing is saved to disk.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bin::Process;
use crate::wait::Deadline;
use crate::WAIT;

pub struct RedisServer {
    pub port: u16,
    process: Process,
}

impl RedisServer {
    /// Starts `redis-server` on 127.0.0.1:`port` and waits at most
    /// [`WAIT`] for it to accept. Panics when Redis is not installed.
    pub fn start(port: u16) -> RedisServer {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        assert!(
            Command::new("redis-server")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "redis-server must be installed (scripts/test.sh installs it)"
        );
        let process = Process::spawn(&mut command);
        let deadline = Deadline::after(WAIT);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            deadline.check("redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { port, process }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: gone at once, as in a crash.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOP: its connections stay open and go silent, as when its host
    /// freezes or the network between is cut.
    pub fn pause(&self) {
        self.process.signal("STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.process.signal("CONT");
    }
}
