//! `cks-devcluster`: run the development control plane until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cks_devcluster::{DevCluster, Options, apply};
use clap::Parser;

/// Local Kubernetes-API-compatible server for development and tests (not for production).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (HTTPS); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:6443")]
    addr: SocketAddr,
    /// Where to write the kubeconfig for kubectl and kube-rs.
    #[arg(long, default_value = "target/devcluster/kubeconfig")]
    kubeconfig: PathBuf,
    /// Keep state in DIR/state.json across restarts.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Apply the YAML manifests in this directory or file after start (repeatable; CRDs go first).
    #[arg(long = "apply", value_name = "PATH")]
    apply: Vec<PathBuf>,
    /// Log filter, e.g. `info` or `cks_devcluster=debug` (default: RUST_LOG, else `info`).
    #[arg(long)]
    log: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter.as_str())
        .with_writer(std::io::stderr)
        .init();

    let opts = Options {
        addr: args.addr,
        kubeconfig: Some(args.kubeconfig.clone()),
        data_dir: args.data_dir.clone(),
        ..Options::default()
    };
    let cluster = DevCluster::start(opts)
        .await
        .context("starting the development cluster")?;
    let mut manifests = Vec::new();
    for p in &args.apply {
        manifests.extend(apply::read_manifests(p)?);
    }
    apply::order(&mut manifests);
    for applied in cluster.apply(&manifests)? {
        println!("applied {applied}");
    }
    let kubeconfig = std::fs::canonicalize(&args.kubeconfig).unwrap_or(args.kubeconfig);
    println!(
        "cks-devcluster serving https://{} (development/test tool)",
        cluster.addr()
    );
    println!("kubeconfig: {}", kubeconfig.display());
    println!(
        "try: KUBECONFIG={} kubectl get crds,namespaces",
        kubeconfig.display()
    );
    println!("stop with Ctrl-C");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    println!("stopping");
    cluster.shutdown().await;
    Ok(())
}
