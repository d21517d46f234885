//! What the handlers share: reflector caches of the four custom resources in the configured
//! namespace (reads never go to the API server), a change counter to wait on, the scenario
//! catalog, the client for writes, the authenticator and the rate limiter. Nothing here is
//! state of the gateway's own: any number of replicas can run side by side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cks_api::{ClusterPool, PracticeCluster, Session, ValidationRun};
use cks_scenarios::CatalogStore;
use futures::StreamExt;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::limits::RateLimiter;

/// Reflector caches of Sessions, ValidationRuns, PracticeClusters and ClusterPools.
///
/// Watches run in tasks that stop when the caches are dropped. Objects that do not
/// deserialize are kept out (`DeserializeGuard`) instead of stalling the watch.
#[derive(Debug)]
pub struct Caches {
    namespace: String,
    sessions: Store<DeserializeGuard<Session>>,
    runs: Store<DeserializeGuard<ValidationRun>>,
    clusters: Store<DeserializeGuard<PracticeCluster>>,
    pools: Store<DeserializeGuard<ClusterPool>>,
    changes: watch::Sender<u64>,
    ready: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn watch_kind<K>(
    client: &Client,
    namespace: &str,
    changes: &watch::Sender<u64>,
) -> (Store<DeserializeGuard<K>>, JoinHandle<()>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<DeserializeGuard<K>> = Api::namespaced(client.clone(), namespace);
    let (store, writer) = reflector::store();
    let changes = changes.clone();
    let kind = K::kind(&()).into_owned();
    let task = tokio::spawn(async move {
        watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|event| {
                match event {
                    Ok(_) => {
                        changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Err(e) => tracing::warn!(kind = %kind, error = %e, "watch failed; retrying"),
                }
                async {}
            })
            .await;
    });
    (store, task)
}

fn ok<K: Clone>(guard: &DeserializeGuard<K>) -> Option<K> {
    guard.0.as_ref().ok().cloned()
}

impl Caches {
    /// Starts the watches of `namespace`.
    pub fn start(client: &Client, namespace: &str) -> Arc<Self> {
        let (changes, _) = watch::channel(0u64);
        let (sessions, t1) = watch_kind::<Session>(client, namespace, &changes);
        let (runs, t2) = watch_kind::<ValidationRun>(client, namespace, &changes);
        let (clusters, t3) = watch_kind::<PracticeCluster>(client, namespace, &changes);
        let (pools, t4) = watch_kind::<ClusterPool>(client, namespace, &changes);
        let ready = Arc::new(AtomicBool::new(false));
        let t5 = {
            let (s, r, c, p) = (sessions.clone(), runs.clone(), clusters.clone(), pools.clone());
            let ready = ready.clone();
            let changes = changes.clone();
            tokio::spawn(async move {
                let synced = async {
                    s.wait_until_ready().await.is_ok()
                        && r.wait_until_ready().await.is_ok()
                        && c.wait_until_ready().await.is_ok()
                        && p.wait_until_ready().await.is_ok()
                };
                if synced.await {
                    ready.store(true, Ordering::Release);
                    changes.send_modify(|n| *n = n.wrapping_add(1));
                    tracing::info!("caches synced");
                }
            })
        };
        Arc::new(Self {
            namespace: namespace.to_owned(),
            sessions,
            runs,
            clusters,
            pools,
            changes,
            ready,
            tasks: vec![t1, t2, t3, t4, t5],
        })
    }

    /// True once every cache has its first full list.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The namespace watched.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn key<K: Resource<DynamicType = ()>>(&self, name: &str) -> ObjectRef<K> {
        ObjectRef::new(name).within(&self.namespace)
    }

    /// A Session by name.
    pub fn session(&self, name: &str) -> Option<Session> {
        self.sessions.get(&self.key(name)).as_deref().and_then(ok)
    }

    /// Every Session.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.state().iter().filter_map(|g| ok(g)).collect()
    }

    /// A ValidationRun by name.
    pub fn run(&self, name: &str) -> Option<ValidationRun> {
        self.runs.get(&self.key(name)).as_deref().and_then(ok)
    }

    /// Every ValidationRun.
    pub fn runs(&self) -> Vec<ValidationRun> {
        self.runs.state().iter().filter_map(|g| ok(g)).collect()
    }

    /// A PracticeCluster by name.
    pub fn cluster(&self, name: &str) -> Option<PracticeCluster> {
        self.clusters.get(&self.key(name)).as_deref().and_then(ok)
    }

    /// Every PracticeCluster.
    pub fn clusters(&self) -> Vec<PracticeCluster> {
        self.clusters.state().iter().filter_map(|g| ok(g)).collect()
    }

    /// A ClusterPool by name.
    pub fn pool(&self, name: &str) -> Option<ClusterPool> {
        self.pools.get(&self.key(name)).as_deref().and_then(ok)
    }

    /// Every ClusterPool.
    pub fn pools(&self) -> Vec<ClusterPool> {
        self.pools.state().iter().filter_map(|g| ok(g)).collect()
    }

    /// A receiver that sees every cache change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Calls `check` after every cache change until it returns `Some` or `timeout` passes.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.changes.subscribe();
        loop {
            rx.mark_unchanged();
            if let Some(v) = check(self) {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return check(self),
            }
        }
    }
}

/// Everything a handler needs.
pub struct AppState {
    /// Client for writes (reads come from `caches`).
    pub client: Client,
    /// The caches.
    pub caches: Arc<Caches>,
    /// The scenario catalog.
    pub catalog: Arc<CatalogStore>,
    /// Who is calling.
    pub auth: Authenticator,
    /// Rate limit of creates and validations.
    pub limiter: RateLimiter,
    /// Settings from the flags.
    pub settings: Settings,
    /// Open event streams (a metric).
    pub sse_clients: prometheus_client::metrics::gauge::Gauge,
    /// Open event streams per user, bounded.
    pub sse_slots: crate::limits::StreamSlots,
    /// Terminal capabilities, SSH access and open-terminal bookkeeping.
    pub terminals: Arc<crate::terminal::Terminals>,
    /// Becomes true when the server shuts down; long-lived responses (event streams) end
    /// then, or a graceful shutdown would wait for them forever.
    pub stopping: watch::Receiver<bool>,
}

impl AppState {
    /// Sessions API of the namespace.
    pub fn sessions_api(&self) -> Api<Session> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// ValidationRuns API of the namespace.
    pub fn runs_api(&self) -> Api<ValidationRun> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// PracticeClusters API of the namespace.
    pub fn clusters_api(&self) -> Api<PracticeCluster> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
