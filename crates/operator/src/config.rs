//! Operator configuration: command-line flags, each also settable from the environment.

use std::net::SocketAddr;
use std::time::Duration;

/// How the operator reaches a practice cluster's API server.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PracticeApiAccess {
    /// Through the control plane's Service DNS name (the operator runs in the host cluster).
    #[default]
    Service,
    /// Straight to the control-plane VMI's IP, verifying the certificate for the Service's
    /// DNS name (the operator runs outside the host cluster but can route to VM IPs, as on
    /// the development control plane).
    VmiIp,
}

/// How the operator opens SSH connections to practice-cluster VMs (setup steps, validation).
pub use cks_ssh::TransportKind as SshTransportKind;

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (containers).
    Json,
    /// Human-readable lines (terminals).
    Human,
}

/// Flags of `cks-operator`.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "cks-operator",
    version,
    about = "Controllers of cks-lab: warm pools of practice clusters on KubeVirt"
)]
pub struct Args {
    /// Namespace whose ClusterPools and PracticeClusters are managed; all namespaces if unset.
    #[arg(long, env = "CKS_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "CKS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Log format; `human` when unset and stderr is a terminal, else `json`.
    #[arg(long, env = "CKS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// How to reach practice clusters' API servers for readiness checks.
    #[arg(long, env = "CKS_PRACTICE_API", value_enum, default_value = "service")]
    pub practice_api: PracticeApiAccess,

    /// DNS domain of the host cluster (names of the control-plane Services).
    #[arg(long, env = "CKS_HOST_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub host_cluster_domain: String,

    /// Namespace of the operator and gateway, allowed through the clusters' NetworkPolicies
    /// to reach the VMs' API server (6443) and SSH (22).
    #[arg(long, env = "CKS_OPERATOR_NAMESPACE", default_value = "cks-lab")]
    pub operator_namespace: String,

    /// First retry delay of a failed step, in seconds; doubles per attempt up to 5 minutes.
    #[arg(long, env = "CKS_RETRY_BASE_SECONDS", default_value_t = 5.0)]
    pub retry_base_seconds: f64,

    /// How often a step that waits on something (a clone, a boot) is looked at again even
    /// without a watch event, in seconds.
    #[arg(long, env = "CKS_POLL_SECONDS", default_value_t = 5.0)]
    pub poll_seconds: f64,

    /// Safety-net resync interval of settled objects, in seconds.
    #[arg(long, env = "CKS_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,

    /// How long an Available cluster's practice API may stop answering the periodic check
    /// (every resync) before the cluster is Failed and replaced, in seconds. A claimed
    /// cluster is never failed for it; its `ApiReachable` condition says so.
    #[arg(long, env = "CKS_UNREACHABLE_GRACE_SECONDS", default_value_t = 120)]
    pub unreachable_grace_seconds: u64,

    /// How long a cluster's claim must have been seen before the cluster controller checks
    /// that its Session (name and uid) still exists, in seconds; a claim whose Session is gone
    /// (deleted past its finalizer) is released and the cluster reset. Covers a claim written
    /// before its Session shows in every cache.
    #[arg(long, env = "CKS_ORPHANED_CLAIM_GRACE_SECONDS", default_value_t = 30)]
    pub orphaned_claim_grace_seconds: u64,

    /// Most requests to the host cluster's API server in flight at once, besides watches and
    /// leader election; more wait their turn (each is a connection: kube's client speaks
    /// HTTP/1.1).
    #[arg(long, env = "CKS_MAX_API_REQUESTS", default_value_t = 32)]
    pub max_api_requests: usize,

    /// Run controllers only while holding the leader Lease.
    #[arg(long, env = "CKS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader Lease.
    #[arg(long, env = "CKS_LEASE_NAME", default_value = "cks-operator")]
    pub lease_name: String,

    /// Namespace of the leader Lease; `--namespace`, else `default`.
    #[arg(long, env = "CKS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Lease duration in seconds; a standby takes over this long after the leader stops
    /// renewing.
    #[arg(long, env = "CKS_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// Identity written into the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Scenario catalog directory; reloaded when its files change.
    #[arg(long, env = "CKS_SCENARIOS", default_value = "scenarios")]
    pub scenarios: std::path::PathBuf,

    /// Active (not ended, expired or failed) Sessions one user may have at once.
    #[arg(long, env = "CKS_MAX_SESSIONS_PER_USER", default_value_t = 1)]
    pub max_sessions_per_user: u32,

    /// How SSH connections to the VMs are opened.
    #[arg(long, env = "CKS_SSH_TRANSPORT", value_enum, default_value = "direct")]
    pub ssh_transport: SshTransportKind,

    /// Port of the VMs' SSH servers.
    #[arg(long, env = "CKS_SSH_PORT", default_value_t = 22)]
    pub ssh_port: u16,

    /// Finished ValidationRuns kept per Session and task; older ones are deleted.
    #[arg(long, env = "CKS_VALIDATION_RUNS_KEPT", default_value_t = 5)]
    pub validation_runs_kept: u32,
}

/// What the controllers read from the configuration.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// See [`Args::practice_api`].
    pub practice_api: PracticeApiAccess,
    /// See [`Args::host_cluster_domain`].
    pub host_cluster_domain: String,
    /// See [`Args::operator_namespace`].
    pub operator_namespace: String,
    /// First retry delay.
    pub retry_base: Duration,
    /// Re-check interval while waiting.
    pub poll: Duration,
    /// Safety-net resync interval.
    pub resync: Duration,
    /// See [`Args::unreachable_grace_seconds`].
    pub unreachable_grace: Duration,
    /// See [`Args::orphaned_claim_grace_seconds`].
    pub orphaned_claim_grace: Duration,
    /// See [`Args::max_sessions_per_user`].
    pub max_sessions_per_user: u32,
    /// See [`Args::ssh_transport`].
    pub ssh_transport: SshTransportKind,
    /// See [`Args::ssh_port`].
    pub ssh_port: u16,
    /// See [`Args::validation_runs_kept`].
    pub validation_runs_kept: u32,
}

impl ControllerConfig {
    /// Settings for tests: short delays.
    pub fn test() -> Self {
        Self {
            practice_api: PracticeApiAccess::Service,
            host_cluster_domain: "cluster.local".to_owned(),
            operator_namespace: "cks-lab".to_owned(),
            retry_base: Duration::from_millis(50),
            poll: Duration::from_millis(100),
            resync: Duration::from_secs(30),
            unreachable_grace: Duration::from_secs(60),
            // Longer than any test: tests claim clusters by hand for Sessions that do not exist.
            orphaned_claim_grace: Duration::from_secs(600),
            max_sessions_per_user: 1,
            ssh_transport: SshTransportKind::Direct,
            ssh_port: 22,
            validation_runs_kept: 5,
        }
    }
}

impl From<&Args> for ControllerConfig {
    fn from(args: &Args) -> Self {
        Self {
            practice_api: args.practice_api,
            host_cluster_domain: args.host_cluster_domain.clone(),
            operator_namespace: args.operator_namespace.clone(),
            retry_base: Duration::from_secs_f64(args.retry_base_seconds.max(0.001)),
            poll: Duration::from_secs_f64(args.poll_seconds.max(0.01)),
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            unreachable_grace: Duration::from_secs(args.unreachable_grace_seconds),
            orphaned_claim_grace: Duration::from_secs(args.orphaned_claim_grace_seconds),
            max_sessions_per_user: args.max_sessions_per_user.max(1),
            ssh_transport: args.ssh_transport,
            ssh_port: args.ssh_port,
            validation_runs_kept: args.validation_runs_kept.max(1),
        }
    }
}
