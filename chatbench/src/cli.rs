//! The command line: the subcommands and their own options, on top of the
//! options every scenario shares.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::options::{parse_duration, Common};
use crate::scenario::proxy::{Target, Test};

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

// Parsed once per process: the size of the largest variant (`proxy`'s
// options) costs nothing, and boxing would only clutter the clap derive.
#[allow(clippy::large_enum_variant)]
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
    /// Group messages to offline members: each stored for every member
    /// before its ACK (measure the database's growth around it).
    Groupstore {
        /// Group size including the sender.
        #[arg(long, default_value_t = 5000)]
        members: usize,
        #[arg(long, default_value_t = 20)]
        messages: usize,
        /// Bytes of text per message.
        #[arg(long, default_value_t = 60_000)]
        size: usize,
    },
    /// Token logins: users get a token with one password login, then
    /// workers log in with the tokens, a new connection each time (no
    /// password hashing).
    Tokens {
        #[arg(long, default_value_t = 2000)]
        users: usize,
        /// Connections logging in at once.
        #[arg(long, default_value_t = 32)]
        workers: usize,
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
        targets: Vec<Target>,
        /// Tests, in the order they are run.
        #[arg(long, value_delimiter = ',', default_value = "keepalive,connect,bulk")]
        tests: Vec<Test>,
        /// Append a markdown section with the command, machine, load and
        /// results to this file (e.g. docs/BENCHMARKS.md).
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Clients speak TLS and both proxies terminate it, with the same
        /// generated ECDSA P-256 certificate (the backends stay plain; the
        /// `direct` target is left out). Every connect is a full handshake
        /// (no resumption): the connect test measures handshakes/s.
        #[arg(long)]
        tls: bool,
        /// A top-level lb.toml line added to the balancer's generated
        /// config, e.g. 'half_close = false' (Nginx's own default); may
        /// be given more than once.
        #[arg(long = "balancer-setting", value_name = "LINE")]
        balancer_settings: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn every_subcommand_help_shows_the_global_options() {
        use clap::CommandFactory;
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name();
            let err = Cli::try_parse_from(["chatbench", name, "--help"]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
            let help = err.to_string();
            for option in ["--server <SERVERS>", "--server-pid", "--runs", "--json"] {
                assert!(
                    help.contains(option),
                    "`{name} --help` lacks {option}:\n{help}"
                );
            }
        }
    }
}
