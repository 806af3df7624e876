//! The options every scenario shares (servers, timing, runs, output), kept
//! apart from the command line so scenarios need not import the parser
//! that in turn names their own option types.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Options that every scenario reads; all global, so they may stand before
/// or after the subcommand and show in its `--help`.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server address(es), comma-separated or repeated. Users are
    /// registered on the first; scenarios spread connections over all.
    #[arg(
        long = "server",
        short = 's',
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:6000"
    )]
    pub servers: Vec<SocketAddr>,
    /// PID(s) of the server process(es): CPU time (from /proc/PID/stat) and
    /// RSS (from /proc/PID/status) are read for them.
    #[arg(long = "server-pid", global = true, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Time before each measured window, excluded from every figure.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Length of each measured window (closed-loop scenarios).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Measured runs; a JSON line with the median of each figure follows.
    #[arg(long, global = true, default_value_t = 1)]
    pub runs: usize,
    /// Speak v1, frames as the original client sends them, instead of v2
    /// (`"v":2`, request ids, an ACK per request). The server spaces frames
    /// to a v1 connection at least 5 ms apart (its --v1-write-gap), so v1
    /// throughput measures that gap rather than the server.
    #[arg(long, global = true)]
    pub v1: bool,
    /// v2 ping-pong: each receiver confirms every push with DELIVERED, as a
    /// real client does, so the server's inbox cursor moves (without it
    /// the inboxes only grow). Off by default, since a server from before
    /// the delivery work refuses msgid 14.
    #[arg(long, global = true)]
    pub delivered: bool,
    /// How long to wait for any one reply or delivery.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Password of the benchmark users.
    #[arg(long, global = true, default_value = "bench-password")]
    pub password: String,
    /// Runtime worker threads of the load generator (1: a single-threaded
    /// runtime, cheapest when it shares the cores with the server).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Print only the JSON lines.
    #[arg(long, global = true)]
    pub json: bool,
    /// Never show a progress bar (it is shown only on a terminal anyway).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Connections used at once to register and log in users.
    #[arg(long, global = true, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// Local addresses to connect from, round robin (e.g.
    /// 127.0.0.1,127.0.0.2): each gives about 28,000 ephemeral ports.
    #[arg(long, global = true, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Log the measured connections in over WebSocket to these addresses
    /// (the chat servers' --ws-listen), round robin, instead of TCP to
    /// --server; users are still registered over TCP on the first
    /// --server. v2 only.
    #[arg(long = "ws-server", global = true, value_delimiter = ',')]
    pub ws_servers: Vec<SocketAddr>,
    /// Reuse users listed in this file (`id name` per line) and append the
    /// ones registered, so repeated runs against one database skip
    /// registration.
    #[arg(long, global = true)]
    pub users_file: Option<PathBuf>,
}

/// `1.5s`, `500ms`, `2m`, `100us`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use us, ms, s or m)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
