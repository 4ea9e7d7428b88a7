//! `lvstun-operator` entry point: parse flags, set up logging, run (see the library's docs).

use std::process::ExitCode;

use clap::Parser;
use lvstun_operator::Cli;
use lvstun_operator::cli::LogFormat;
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
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
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
