//! `cks-devcluster`: run the development control plane until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cks_devcluster::kubevirt::{Fault, SimOptions, Timings};
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
    /// Run the KubeVirt/CDI simulator: CRDs, controller, subresources and simulated VMs.
    #[arg(long)]
    simulate_kubevirt: bool,
    /// Simulator step durations: `fast` (milliseconds, for tests) or `realistic` (seconds).
    #[arg(long, default_value = "realistic", value_parser = ["fast", "realistic"])]
    kubevirt_profile: String,
    /// Inject a fault into this fraction of objects, e.g. `clone-fail=0.1` (repeatable).
    #[arg(long = "kubevirt-fault-rate", value_name = "FAULT=P", value_parser = parse_fault_rate)]
    fault_rates: Vec<(Fault, f64)>,
    /// A golden-image PVC `NAMESPACE/NAME` created Bound at start (repeatable).
    #[arg(long = "golden-image", value_name = "NAMESPACE/NAME")]
    golden_images: Vec<String>,
    /// Where simulated disks live (default: DATA_DIR/kubevirt, else a temporary directory).
    #[arg(long)]
    vm_disk_dir: Option<PathBuf>,
    /// Port of the simulated VMs' SSH servers (on each VMI's loopback IP).
    #[arg(long, default_value_t = 2222)]
    vm_ssh_port: u16,
    /// Another bearer token and the user it authenticates, `TOKEN=USER` (repeatable): a caller
    /// with its own identity in the audit log (the server's own token is the user `admin`).
    #[arg(long = "identity", value_name = "TOKEN=USER", value_parser = parse_identity)]
    identities: Vec<(String, String)>,
    /// Append each authenticated request's attributes (user, verb, group, resource,
    /// subresource, namespace, name) to this file as JSON lines.
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Refuse (403) what the stored Roles, ClusterRoles and bindings do not allow to the
    /// `--identity` callers, as kube-apiserver's RBAC authorizer would.
    #[arg(long)]
    enforce_rbac: bool,
    /// Log filter, e.g. `info` or `cks_devcluster=debug` (default: RUST_LOG, else `info`).
    #[arg(long)]
    log: Option<String>,
}

fn parse_identity(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((token, user)) if !token.is_empty() && !user.is_empty() => {
            Ok((token.to_owned(), user.to_owned()))
        }
        _ => Err("expected TOKEN=USER".to_owned()),
    }
}

fn parse_fault_rate(s: &str) -> Result<(Fault, f64), String> {
    let (name, p) = s.split_once('=').ok_or("expected FAULT=PROBABILITY")?;
    let fault = Fault::parse(name).ok_or_else(|| {
        let names: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
        format!("unknown fault {name:?}; one of {}", names.join(", "))
    })?;
    let p: f64 = p.parse().map_err(|e| format!("probability {p:?}: {e}"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("probability {p} is not within 0..=1"));
    }
    Ok((fault, p))
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
        kubevirt: args.simulate_kubevirt.then(|| SimOptions {
            timings: Timings::profile(&args.kubevirt_profile).unwrap_or_else(Timings::realistic),
            fault_rates: args.fault_rates.iter().copied().collect(),
            disk_dir: args.vm_disk_dir.clone(),
            golden_images: args.golden_images.clone(),
            ssh_port: args.vm_ssh_port,
        }),
        identities: args.identities.iter().cloned().collect(),
        audit_log: args.audit_log.clone(),
        enforce_rbac: args.enforce_rbac,
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
