//! chatbench: parses the command line, builds the runtime, runs the scenario.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = chatbench::cli::Cli::parse();
    let runtime = if cli.common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.common.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatbench: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(chatbench::run(cli)) {
        Ok(reports) if reports.iter().all(|r| r.errors.total() == 0) => {
            std::process::ExitCode::SUCCESS
        }
        Ok(_) => std::process::ExitCode::from(3),
        Err(e) => {
            eprintln!("chatbench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
