//! `lvstun-operator` entry point: parse flags, set up logging, run (see the library's docs);
//! `lvstun-operator uninstall ...` runs [`lvstun_operator::uninstall`] instead.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use lvstun_operator::Cli;
use lvstun_operator::cli::LogFormat;
use lvstun_operator::uninstall::UninstallArgs;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        // Colour codes only for a person at a terminal, never in a file or a pod's log.
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // `lvstun-operator uninstall ...`: the chart's pre-delete hook (ADR 0008). A word, not a
    // flag, before the operator's own flags are parsed: those are required and mean nothing to
    // it.
    if std::env::args().nth(1).as_deref() == Some("uninstall") {
        let args = UninstallArgs::parse_from(std::env::args().skip(1));
        init_logging(args.log_format);
        return match uninstall(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("uninstall: FAILED: {e}");
                tracing::error!(category = e.category(), error = %e, "lvstun-operator uninstall failed");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match lvstun_operator::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(category = e.category(), error = %e, "lvstun-operator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn uninstall(args: &UninstallArgs) -> Result<(), lvstun_operator::Error> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| lvstun_operator::Error::Client(Box::new(e)))?;
    lvstun_operator::uninstall::run(client, args).await
}
