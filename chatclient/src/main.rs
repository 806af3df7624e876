//! chatclient's command line: parse it, set up logging, hand over to `run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use chatclient::app::{Settings, EXIT_USAGE};
use chatclient::net::{Target, Tls};
use chatclient::ui::ColorChoice;
use chatclient::Options;
use clap::Parser;

const AFTER_HELP: &str = "\
Interactive use (stdin is a terminal):
  A menu asks 1 (login), 2 (register) or 3 (quit). After login you see your
  id and name, your friends with their state, your groups with members and
  roles, and the messages that arrived while you were away. Then type:
    help                          list the commands
    chat:friendid:message         send a message to a user
    addfriend:friendid            add a friend
    creategroup:groupname:desc    create a group (its id is printed)
    addgroup:groupid              join a group
    groupchat:groupid:message     send a message to a group
    history:friendid              the last 20 messages with a user; the
                                  same command again shows older ones
    history:#groupid              the same for a group
    friends, groups               list friends or groups again
    loginout                      log out, back to the menu
    quit                          leave (or Ctrl-D)
  Only the first colons split: a message may contain colons. Every command
  gets a result line: ok, or the server's error. Incoming messages appear
  above the line being typed; passwords are not echoed.

Scripted use (stdin is not a terminal):
  The same menu answers and commands are read from stdin, one per line,
  with no prompts. Received messages go to stdout, one per line:
    [TIME] <sender id> <sender name>: <text>
    [TIME] #<group id> <sender id> <sender name>: <text>
  (control characters in texts are escaped; use --json for exact text).
  A registration prints `registered: id N`; a login prints `logged in: id N
  NAME`, then `friend:`, `group:` and `member:` lines; command results go
  to stdout, errors and connection news to stderr. `history:` prints
  `history: [TIME] ...` lines, oldest first, then a `history:` line saying
  whether older messages exist. At the end of stdin the client keeps
  receiving for --linger seconds, then exits.

Connection and delivery:
  When the connection drops, the client says so, reconnects to HOST PORT
  with backoff (HOST PORT may be a balancer that picks another server) and
  logs in again with its session token (the password only if the token is
  refused) and `since`, the last message it has shown: the server replays
  the rest, and nothing is shown twice. Chat messages not acknowledged are
  sent again with the same cid (stored once); other commands that could
  not be confirmed are reported. If the old session is still closing
  (errno 2), login is retried for a while. On a server's GOAWAY the client
  reconnects after a random delay up to the server's retry_ms. Shown
  messages are confirmed (DELIVERED) at most 4 times a second and before
  leaving; unconfirmed ones come again at the next login. A heartbeat
  (PING) goes out every --ping-interval seconds.

Exit codes:
  0  success
  1  bad usage
  2  cannot connect, or the connection was lost for good
  3  bad credentials, or the account is already logged in

Environment:
  NO_COLOR   no colours (with --color auto)
  RUST_LOG   debug logs on stderr, e.g. RUST_LOG=chatclient=debug";

/// A terminal client for the ChatChat cluster.
#[derive(Debug, Parser)]
#[command(name = "chatclient", version, after_help = AFTER_HELP)]
struct Cli {
    /// Host name or address of a chat server or of the balancer in front of the cluster.
    host: String,
    /// Port of the chat server or balancer.
    port: u16,
    /// Log in as this user id at start, without the menu. The password comes
    /// from --password-env or --password-file; without either it is asked
    /// for (in scripted mode: the first line of stdin).
    #[arg(long, value_name = "ID")]
    login: Option<i64>,
    /// With --login: read the password from this environment variable.
    #[arg(
        long,
        value_name = "VAR",
        requires = "login",
        conflicts_with = "password_file"
    )]
    password_env: Option<String>,
    /// With --login: read the password from the first line of this file.
    #[arg(long, value_name = "PATH", requires = "login")]
    password_file: Option<PathBuf>,
    /// Print every frame received from the server as is (one JSON object per
    /// line) instead of formatted messages and results.
    #[arg(long)]
    json: bool,
    /// At the end of stdin, keep receiving for this many seconds, then exit.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = seconds)]
    linger: Duration,
    /// When to use colours.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Seconds between heartbeats (PING); a heartbeat unanswered for as long
    /// means the connection is dead.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = positive_seconds)]
    ping_interval: Duration,
    /// Seconds to wait for the reply to a request before taking the
    /// connection for dead.
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = positive_seconds)]
    reply_timeout: Duration,
    /// Seconds to wait for a connection to be accepted (and, with --tls, its
    /// handshake).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = positive_seconds)]
    connect_timeout: Duration,
    /// In scripted mode, give up reconnecting after this many seconds
    /// (exit code 2). Interactive sessions keep trying until you quit.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    reconnect_for: Duration,
    /// Speak TLS (1.2 or 1.3) to the server or balancer, checking its
    /// certificate against the system's trusted roots (or --ca).
    #[arg(long)]
    tls: bool,
    /// With --tls: trust the certificates in this PEM file instead of the
    /// system's roots (a private CA, a self-signed server).
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: the name the server's certificate must carry [default: HOST]
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
}

fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=1e9).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!("{text:?} is not a number of seconds")),
    }
}

fn positive_seconds(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        d if d.is_zero() => Err("must be more than 0".to_owned()),
        d => Ok(d),
    }
}

/// The password given by --password-env or --password-file, if any.
fn password(cli: &Cli) -> anyhow::Result<Option<String>> {
    let password = if let Some(var) = &cli.password_env {
        std::env::var(var).with_context(|| format!("--password-env: variable {var} is not set"))?
    } else if let Some(path) = &cli.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--password-file: cannot read {}", path.display()))?;
        text.lines().next().unwrap_or_default().to_owned()
    } else {
        return Ok(None);
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(Some(password))
}

fn options(cli: Cli) -> anyhow::Result<Options> {
    if cli.login.is_some_and(|id| id <= 0) {
        bail!("--login: a user id is a positive number");
    }
    let auto_login = match cli.login {
        Some(id) => Some((id, password(&cli)?)),
        None => None,
    };
    let settings = Settings {
        interactive: std::io::stdin().is_terminal(),
        json: cli.json,
        linger: cli.linger,
        ping_interval: cli.ping_interval,
        reply_timeout: cli.reply_timeout,
        auto_login,
        ..Settings::default()
    };
    let tls = if cli.tls {
        let name = cli.server_name.as_deref().unwrap_or(&cli.host);
        Some(Tls::new(cli.ca.as_deref(), name).map_err(|e| anyhow::anyhow!("--tls: {e}"))?)
    } else {
        None
    };
    Ok(Options {
        target: Target {
            host: cli.host,
            port: cli.port,
            connect_timeout: cli.connect_timeout,
            tls,
        },
        settings,
        color: cli.color.enabled(),
        reconnect_for: Some(cli.reconnect_for),
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage_error { EXIT_USAGE } else { 0 });
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let options = match options(cli) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = runtime.block_on(chatclient::run(options));
    // The input thread may be blocked reading stdin; do not wait for it.
    runtime.shutdown_background();
    ExitCode::from(code)
}
