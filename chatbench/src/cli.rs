//! Command-line options.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Load generator for ChatChat servers: throughput, latency percentiles,
/// server CPU per delivered message and server memory per connection.
///
/// Prints a readable table per run and one JSON line per run (and one with
/// the medians when --runs > 1). Figures exclude the warm-up period.
#[derive(Debug, Parser)]
#[command(name = "chatbench", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

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
    /// Reuse users listed in this file (`id name` per line) and append the
    /// ones registered, so repeated runs against one database skip
    /// registration.
    #[arg(long, global = true)]
    pub users_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Register N users (rate and latency of REGISTER at the server's
    /// current hashing cost).
    Register {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Connections registering at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Login storm: N registered users log in at once, while chat pairs
    /// measure 1:1 latency before and during the storm.
    Login {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Ping-pong pairs running before and during the storm (0: none).
        #[arg(long, default_value_t = 10)]
        chat_pairs: usize,
        /// The server's --hash-threads, to compute the ideal login rate
        /// [default: number of CPUs here].
        #[arg(long)]
        hash_threads: Option<usize>,
    },
    /// 1:1 ping-pong between K pairs, one message in flight per pair.
    Pingpong {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
    },
    /// Ping-pong with the two users of each pair on different servers
    /// (give two or more --server addresses).
    Cross {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
    },
    /// Group fan-out: one sender, the other members online; the next
    /// message goes when every member has the previous one.
    Fanout {
        /// Group size including the sender (receivers = members - 1).
        #[arg(long, default_value_t = 50)]
        members: usize,
    },
    /// M messages to an offline user, then it logs in: count and order.
    Offline {
        #[arg(long, default_value_t = 200)]
        messages: usize,
    },
    /// Hold N logged-in idle connections and report the server's RSS per
    /// connection (needs --server-pid).
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// How long to hold them once all are logged in.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        hold: Duration,
    },
    /// Balancer vs Nginx: starts echo backends, `balancer` and `nginx`
    /// (stream), then pushes the same load directly, through each proxy:
    /// keep-alive round trips, new connections, bulk streams. Prints the
    /// medians and the balancer/Nginx ratios (--server is not used).
    Proxy {
        /// Keep-alive connections, each with one round trip in flight.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Workers of the connect test (connect, one round trip, close).
        #[arg(long, default_value_t = 32)]
        connect_workers: usize,
        /// Connections of the bulk test.
        #[arg(long, default_value_t = 4)]
        bulk_connections: usize,
        /// Bytes per request (echoed back) in the keep-alive and connect tests.
        #[arg(long, default_value_t = 64)]
        message_size: usize,
        /// Bytes per write in the bulk test.
        #[arg(long, default_value_t = 65536)]
        bulk_chunk: usize,
        /// Echo backends behind the proxies.
        #[arg(long, default_value_t = 2)]
        backends: usize,
        /// The balancer binary [default: `balancer` next to chatbench].
        #[arg(long)]
        balancer_bin: Option<PathBuf>,
        /// The nginx binary.
        #[arg(long, default_value = "nginx")]
        nginx_bin: PathBuf,
        /// Nginx's dynamic stream module (left out of the config when the
        /// file does not exist, for an nginx built with it).
        #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_stream_module.so")]
        nginx_stream_module: PathBuf,
        /// Balancer runtime threads and Nginx worker processes [default:
        /// TOKIO_WORKER_THREADS, else the number of CPUs].
        #[arg(long)]
        proxy_threads: Option<usize>,
        /// Targets, in the order they are measured.
        #[arg(long, value_delimiter = ',', default_value = "direct,balancer,nginx")]
        targets: Vec<crate::scenario::proxy::Target>,
        /// Tests, in the order they are run.
        #[arg(long, value_delimiter = ',', default_value = "keepalive,connect,bulk")]
        tests: Vec<crate::scenario::proxy::Test>,
        /// Append a markdown section with the command, machine, load and
        /// results to this file (e.g. docs/BENCHMARKS.md).
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
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

    #[test]
    fn arguments_parse_with_global_options_anywhere() {
        let cli = Cli::try_parse_from([
            "chatbench",
            "--server",
            "127.0.0.1:7000,127.0.0.1:7001",
            "cross",
            "--pairs",
            "3",
            "--server-pid",
            "10",
            "--server-pid",
            "11",
            "--v1",
            "--warmup",
            "0",
            "--runs",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.common.servers.len(), 2);
        assert_eq!(cli.common.server_pids, vec![10, 11]);
        assert!(cli.common.v1);
        assert_eq!(cli.common.warmup, Duration::ZERO);
        assert_eq!(cli.common.runs, 3);
        assert!(matches!(cli.scenario, Scenario::Cross { pairs: 3 }));

        let cli = Cli::try_parse_from(["chatbench", "pingpong"]).unwrap();
        assert_eq!(cli.common.servers, vec!["127.0.0.1:6000".parse().unwrap()]);
        assert!(!cli.common.v1);
        assert_eq!(cli.common.threads, 1);
        assert!(matches!(cli.scenario, Scenario::Pingpong { pairs: 100 }));

        let cli = Cli::try_parse_from([
            "chatbench",
            "idle",
            "--connections",
            "5",
            "--source-ips",
            "127.0.0.2,127.0.0.3",
            "--hold",
            "1s",
        ])
        .unwrap();
        assert_eq!(cli.common.source_ips.len(), 2);
        assert!(matches!(
            cli.scenario,
            Scenario::Idle { connections: 5, .. }
        ));
        assert!(Cli::try_parse_from(["chatbench", "pingpong", "--pairs", "x"]).is_err());

        let cli = Cli::try_parse_from([
            "chatbench",
            "proxy",
            "--targets",
            "balancer,nginx",
            "--tests",
            "bulk",
            "--proxy-threads",
            "2",
        ])
        .unwrap();
        match cli.scenario {
            Scenario::Proxy {
                targets,
                tests,
                proxy_threads,
                connections,
                ..
            } => {
                use crate::scenario::proxy::{Target, Test};
                assert_eq!(targets, vec![Target::Balancer, Target::Nginx]);
                assert_eq!(tests, vec![Test::Bulk]);
                assert_eq!(proxy_threads, Some(2));
                assert_eq!(connections, 50);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["chatbench", "proxy", "--targets", "haproxy"]).is_err());
        assert!(Cli::try_parse_from(["chatbench"]).is_err());
    }
}
