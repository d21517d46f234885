//! Wiring: metrics and health server, scenario catalog, leader election, and the four
//! controllers, stopped together on shutdown or when leadership is lost.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use cks_scenarios::{CatalogStore, LoadOptions};
use kube::Client;
use tokio::sync::watch;

use crate::config::{Args, ControllerConfig};
use crate::context::Context;
use crate::http::{self, HttpState};
use crate::lease::LeaseLock;
use crate::metrics::Metrics;
use crate::probe::ClusterProbe;
use crate::{cluster, pool, session, validation_run};

/// How long the controllers get to finish the reconciles under way once they are told to
/// stop (shutdown or a lost lease).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything [`run`] needs besides the flags.
#[derive(Clone)]
pub struct Runtime {
    /// Client of the host cluster.
    pub client: Client,
    /// Replaces the practice-cluster probe (tests).
    pub probe: Option<Arc<dyn ClusterProbe>>,
    /// Replaces the controller settings derived from the flags (tests).
    pub config: Option<ControllerConfig>,
    /// Replaces the scenario catalog loaded (and watched) from `--scenarios` (tests).
    pub scenarios: Option<Arc<CatalogStore>>,
    /// The configuration `client` was built from, when known (see [`Context::host_config`]).
    pub host_config: Option<kube::Config>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// This replica's identity in the Lease and in events: `--identity`, else the host name
/// plus a random suffix.
pub fn identity(args: &Args) -> String {
    args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            host_name(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    })
}

/// `HOSTNAME` (the pod's name in Kubernetes), else `cks-operator`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "cks-operator".to_owned())
}

/// Runs the operator until `shutdown` resolves (clean exit, Lease released) or leadership is
/// lost (error: the process should exit and be restarted as a standby).
pub async fn run(
    args: &Args,
    rt: Runtime,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let state = HttpState {
        registry: Arc::new(metrics.registry()),
        ready: ready.clone(),
    };
    let server = tokio::spawn(http::serve(listener, state, stopped(stop_rx.clone())));

    // Loaded before leadership so a bad --scenarios fails the process at once; the watcher
    // lives as long as the controllers.
    let (scenarios, _watcher) = match rt.scenarios.clone() {
        Some(store) => (store, None),
        None => {
            let store = CatalogStore::open(&args.scenarios, LoadOptions::default())
                .with_context(|| format!("loading the scenario catalog {}", args.scenarios.display()))?;
            let watcher = store
                .watch(Duration::from_millis(500))
                .with_context(|| format!("watching the scenario catalog {}", args.scenarios.display()))?;
            tracing::info!(
                dir = %args.scenarios.display(),
                scenarios = store.catalog().len(),
                "scenario catalog loaded"
            );
            (store, Some(watcher))
        }
    };

    let identity = identity(args);
    let config = Arc::new(rt.config.clone().unwrap_or_else(|| ControllerConfig::from(args)));
    let lock = args.leader_election.then(|| {
        let ns = args
            .lease_namespace
            .clone()
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".to_owned());
        LeaseLock::new(
            rt.client.clone(),
            &ns,
            &args.lease_name,
            &identity,
            Duration::from_secs(args.lease_seconds.max(1)),
        )
    });
    ready.store(true, Ordering::Relaxed);

    tokio::pin!(shutdown);
    if let Some(lock) = &lock {
        tracing::info!(identity = %identity, "waiting for the leader lease");
        tokio::select! {
            () = lock.acquire() => tracing::info!(identity = %identity, "leading"),
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Ok(());
            }
        }
    }

    let host_config = rt.host_config.clone().map(Arc::new);
    let make_ctx = |controller: &str| {
        let mut ctx = Context::new(
            rt.client.clone(),
            controller,
            &identity,
            metrics.clone(),
            config.clone(),
        );
        if let Some(probe) = &rt.probe {
            ctx.probe = probe.clone();
        }
        ctx.scenarios = Some(scenarios.clone());
        ctx.host_config = host_config.clone();
        Arc::new(ctx)
    };
    let ns = args.namespace.as_deref();
    let pools = pool::run(make_ctx(pool::CONTROLLER), ns, stopped(stop_rx.clone()));
    let clusters = cluster::run(make_ctx(cluster::CONTROLLER), ns, stopped(stop_rx.clone()));
    let sessions = session::run(make_ctx(session::CONTROLLER), ns, stopped(stop_rx.clone()));
    let runs = validation_run::run(make_ctx(validation_run::CONTROLLER), ns, stopped(stop_rx.clone()));
    let mut controllers = Box::pin(futures::future::join4(pools, clusters, sessions, runs));

    let renewing = async {
        match &lock {
            Some(lock) => lock.keep_renewing().await,
            None => std::future::pending().await,
        }
    };
    let lost = tokio::select! {
        () = &mut shutdown => false,
        () = renewing => true,
        _ = &mut controllers => false,
    };
    let _ = stop_tx.send(true);
    // A controller stopped before its cache was first filled never finishes a graceful
    // shutdown (kube's runner holds its work until the store is ready, and the stopped watch
    // never fills it): after the grace, its work is dropped, which cancels it.
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers)
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "the controllers did not stop within the grace; their work is cancelled"
        );
    }
    drop(controllers);
    let _ = server.await;
    if lost {
        anyhow::bail!("lost the leader lease; exiting so that a standby takes over");
    }
    if let Some(lock) = &lock
        && let Err(e) = lock.release().await
    {
        tracing::warn!(error = %e, "releasing the leader lease failed");
    }
    Ok(())
}
