//! `cks-operator`: parses flags, sets up logging and runs the operator until SIGINT/SIGTERM.

use std::io::IsTerminal;

use cks_operator::config::{Args, LogFormat};
use cks_operator::runtime::{self, Runtime};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let format = args.log_format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Human
    } else {
        LogFormat::Json
    });
    let filter = EnvFilter::try_new(&args.log)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
    let host_config = kube::Config::infer().await?;
    let client = cks_client::client(host_config.clone(), args.max_api_requests)?;
    let rt = Runtime {
        client,
        probe: None,
        config: None,
        scenarios: None,
        host_config: Some(host_config),
    };
    runtime::run(&args, rt, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
