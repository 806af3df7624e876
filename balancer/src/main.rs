//! `balancer --config lb.toml`: parse flags, set up logging, bind, wire
//! signals, and hand over to [`balancer::Balancer::run`].

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use balancer::config::Config;
use balancer::Balancer;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

/// Layer-4 TCP load balancer for the ChatChat cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The TOML config file; watched and re-read on change and on SIGHUP.
    #[arg(short, long, env = "BALANCER_CONFIG", default_value = "config/lb.toml")]
    config: PathBuf,
    /// Validate the config (and the TLS certificate and key), print the
    /// effective settings with secrets masked, and exit: 0 when valid, 1
    /// otherwise. Nothing is bound.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person watching; a file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    // Refuse to start (before printing `listening on`) rather than serve
    // plaintext where TLS was asked for.
    if let Some(tls) = &config.tls {
        balancer::tls::load(tls).context("loading the [tls] certificate and key")?;
    }
    if args.check {
        // Like `nginx -t`: what would run, the admin token masked by its Debug.
        println!("{config:#?}");
        eprintln!("balancer: {} is valid", args.config.display());
        return Ok(());
    }

    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding listen address {}", config.listen))?;
    let admin = match &config.admin {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding admin address {a}"))?,
        ),
        None => None,
    };
    let addr = listener.local_addr()?;

    let balancer = Balancer::new(config, Some(args.config.clone()));
    let handle = balancer.handle();
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading the config");
            handle.request_reload();
        }
    });
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT"),
        }
    };

    println!("listening on {addr}");
    balancer.run(listener, admin, shutdown).await?;
    Ok(())
}
