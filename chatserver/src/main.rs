//! `chatserver IP PORT`: parse options, set up logging and signals, serve.

use std::process::ExitCode;

use chatserver::config::{mask_url, LogFormat};
use chatserver::{Args, Config, Server};
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit codes, as documented in --help and the README.
const EXIT_BAD_CONFIG: u8 = 1;
const EXIT_CANNOT_BIND: u8 = 2;
const EXIT_DATABASE: u8 = 3;
const EXIT_SECOND_SIGNAL: i32 = 130;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let check = args.check;
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("chatserver: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if check {
        // Like `nginx -t`: the settings as they would run, secrets masked.
        println!("{config:#?}");
        eprintln!("chatserver: configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chatserver: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal, and not when NO_COLOR is set (an
        // explicit with_ansi would otherwise override NO_COLOR).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config) -> ExitCode {
    let listener = match TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("chatserver: cannot listen on {}: {error}", config.listen);
            return ExitCode::from(EXIT_CANNOT_BIND);
        }
    };
    let local_addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("chatserver: cannot read the bound address: {error}");
            return ExitCode::from(EXIT_CANNOT_BIND);
        }
    };
    let admin = match config.admin {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                eprintln!("chatserver: cannot listen on {addr} (--admin): {error}");
                return ExitCode::from(EXIT_CANNOT_BIND);
            }
        },
        None => None,
    };
    let web = match config.ws_listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                eprintln!("chatserver: cannot listen on {addr} (--ws-listen): {error}");
                return ExitCode::from(EXIT_CANNOT_BIND);
            }
        },
        None => None,
    };
    let web_addr = web.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(database = %mask_url(&config.database_url), "starting");
    let server = match Server::start(&config, local_addr).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("chatserver: {error}");
            return ExitCode::from(EXIT_DATABASE);
        }
    };
    let server = match admin {
        Some(listener) => server.with_admin(listener),
        None => server,
    };
    let server = match web {
        Some(listener) => server.with_web(listener),
        None => server,
    };
    println!("listening on {local_addr}");
    if let Some(addr) = web_addr {
        // After the first line, which scripts and tests read for the chat port.
        println!("web listening on {addr}");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    server.serve(listener, shutdown.cancelled_owned()).await;
    ExitCode::SUCCESS
}

/// The first SIGINT or SIGTERM starts a clean shutdown; a second one exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if round == 0 {
            tracing::info!(
                "signal received, draining then shutting down (send again to exit at once)"
            );
            shutdown.cancel();
        }
    }
    tracing::warn!("second signal, exiting now");
    std::process::exit(EXIT_SECOND_SIGNAL);
}
