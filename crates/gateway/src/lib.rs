//! cks-gateway: the HTTP front door of cks-lab. A REST API under `/api/v1` (a superset of the
//! reference system's contract) that reads through reflector caches and the scenario catalog
//! and writes only custom resources (Sessions, ValidationRuns, annotations the operator
//! honours). `main.rs` parses flags and calls [`run`].
//!
//! Modules by what a newcomer looks for: [`routes`] (the router and handlers), [`auth`]
//! (who is calling), [`views`] (the JSON shapes), [`errors`] (the error shape), [`state`]
//! (caches and shared state), [`terminal`] (terminal URLs and the WebSocket-to-SSH bridge),
//! [`config`] (flags), [`limits`] (rate limit), [`metrics`],
//! [`openapi`] (the OpenAPI document's root; `routes` adds the paths), [`web`] (the web page
//! from `--web-dir`).

pub mod auth;
pub mod config;
pub mod errors;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod terminal;
pub mod views;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cks_scenarios::{CatalogStore, LoadOptions};
use kube::Client;
use tokio::net::TcpListener;

use crate::auth::{Authenticator, ProxySettings, TokenFile};
use crate::config::{Args, AuthMode, header_name};
use crate::limits::{RateLimiter, StreamSlots};
use crate::metrics::Metrics;
use crate::state::{AppState, Caches};
use crate::terminal::{Signer, Terminals};

/// Everything [`run`] needs besides the flags.
pub struct Runtime {
    /// Client of the cluster holding the custom resources.
    pub client: Client,
    /// Replaces the catalog loaded (and watched) from `--scenarios` (tests).
    pub catalog: Option<Arc<CatalogStore>>,
    /// Replaces binding `--listen` (tests bind port 0 first to learn the address).
    pub listener: Option<TcpListener>,
    /// The host cluster's client configuration, for terminals over the KubeVirt port-forward
    /// (a client of its own that sets `TCP_NODELAY`); `client` is used without it.
    pub host_config: Option<Arc<kube::Config>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

fn authenticator(args: &Args) -> anyhow::Result<(Authenticator, Option<tokio::task::JoinHandle<()>>)> {
    Ok(match args.auth {
        AuthMode::Dev => {
            tracing::warn!(
                user = %args.dev_user,
                "DEV AUTH: every request is the admin user {:?}; never use this outside a development machine",
                args.dev_user
            );
            (Authenticator::Dev(args.dev_user.clone()), None)
        }
        AuthMode::Proxy => (
            Authenticator::Proxy(ProxySettings {
                user_header: header_name("--user-header", &args.user_header)?,
                groups_header: header_name("--groups-header", &args.groups_header)?,
                trusted: args.trusted_proxies.clone(),
                admin_group: args.admin_group.clone(),
            }),
            None,
        ),
        AuthMode::Token => {
            let path = args
                .token_file
                .clone()
                .context("--auth token needs --token-file")?;
            let file = TokenFile::open(&path)?;
            let poll = file.poll(Duration::from_secs_f64(args.token_reload_seconds.max(0.1)));
            (Authenticator::Token(file), Some(poll))
        }
    })
}

/// The terminal URL signer: from `--terminal-key-file`, else a random key of this process.
fn terminal_signer(args: &Args) -> anyhow::Result<Signer> {
    match &args.terminal_key_file {
        Some(path) => Ok(Signer::from_file(path)?),
        None => {
            tracing::warn!(
                "no --terminal-key-file: terminal URLs are signed with a random key and work only on this replica"
            );
            Ok(Signer::random()?)
        }
    }
}

/// Serves the API until `shutdown` resolves.
pub async fn run(
    args: &Args,
    rt: Runtime,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let (auth, token_poll) = authenticator(args)?;
    let (catalog, _watcher) = match rt.catalog {
        Some(store) => (store, None),
        None => {
            let store = CatalogStore::open(&args.scenarios, LoadOptions::default())
                .with_context(|| format!("loading the scenario catalog {}", args.scenarios.display()))?;
            let watcher = store
                .watch(Duration::from_millis(500))
                .with_context(|| format!("watching the scenario catalog {}", args.scenarios.display()))?;
            (store, Some(watcher))
        }
    };
    let caches = Caches::start(&rt.client, &settings.namespace);
    let limiter = RateLimiter::new(settings.rate_per_second, settings.rate_burst);
    let metrics = Arc::new(Metrics::default());
    let terminals = Arc::new(Terminals::new(
        terminal_signer(args)?,
        cks_ssh::AccessOptions {
            port: args.ssh_port,
            transport: args.ssh_transport,
            host_config: rt.host_config,
        },
        metrics.terminals_open.clone(),
        metrics.terminals_closed.clone(),
    ));
    let open_terminals = terminals.open.clone();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        stopping,
        sse_clients: metrics.sse_clients.clone(),
        sse_slots: StreamSlots::new(settings.sse_max_streams_per_user),
        terminals,
        client: rt.client,
        caches,
        catalog,
        auth,
        limiter,
        settings,
    });
    let registry = Arc::new(metrics.registry());
    let app = routes::router(state, metrics, registry, &args.cors_origins);
    let listener = match rt.listener {
        Some(l) => l,
        None => TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, auth = ?args.auth, namespace = %args.namespace, "serving the API under /api/v1");
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
    if let Some(poll) = token_poll {
        poll.abort();
    }
    // Upgraded connections are not part of the graceful shutdown: give open terminals a moment
    // to send their `shutdown` message and close SSH before the process ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open_terminals.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.context("serving HTTP")
}
