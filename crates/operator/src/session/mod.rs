//! The Session controller: checks a new Session (scenario, pool, requirements, the user's
//! limit), queues it FIFO per pool until a cluster is Available, has the pool's allocator
//! claim one (the cluster's `spec.claimRef`, guarded by its resourceVersion), runs the
//! scenario's setup in the background, extends and expires the session, and releases the
//! cluster on expiry, force-release or deletion (finalizer `cks.io/session-release`).
//!
//! Matching queued Sessions to clusters is the [`allocator`]'s alone: one loop per pool, poked
//! by the watches of Sessions and PracticeClusters. Each Session's own reconcile
//! ([`lifecycle`]) does everything else: the admission checks that fail a Session, expiry,
//! extension, a lost cluster, setup ([`setup_task`], steps in [`setup`]), release. Status
//! writes are in [`status`], pure queue planning in [`queue`], the checks in [`admission`].
//!
//! Sessions, PracticeClusters and ClusterPools come from reflector caches this module drives;
//! the Session cache feeds the controller too. Nothing a reconcile needs is kept in memory
//! but the handles of running setup tasks.

pub mod admission;
pub mod allocator;
pub mod apply;
mod lifecycle;
pub mod queue;
pub mod setup;
mod setup_task;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cks_api::cluster_pool::ClusterPool;
use cks_api::practice_cluster::{PracticeCluster, PracticeClusterPhase};
use cks_api::session::{Session, SessionPhase};
use futures::StreamExt;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tracing::warn;

use crate::context::Context;
use crate::controller::{Runner, without_managed_fields};
use crate::error::Result;

/// Name of this controller in events and metrics.
pub const CONTROLLER: &str = "session";

/// Reasons in a Session's status, conditions and events.
pub mod reasons {
    /// Failed: the scenario is not in the catalog (or no catalog is loaded).
    pub const SCENARIO_NOT_FOUND: &str = "ScenarioNotFound";
    /// Failed: the Session's ClusterPool does not exist.
    pub const POOL_NOT_FOUND: &str = "PoolNotFound";
    /// Failed: the pool's clusters have fewer nodes than the scenario needs.
    pub const REQUIREMENTS_NOT_MET: &str = "RequirementsNotMet";
    /// Failed: the user already has the allowed number of active Sessions.
    pub const USER_LIMIT_REACHED: &str = "UserLimitReached";
    /// Failed: the assigned cluster vanished, failed or was claimed away.
    pub const CLUSTER_LOST: &str = "ClusterLost";
    /// WaitingForCluster: no cluster of the pool is Available.
    pub const NO_CLUSTER_AVAILABLE: &str = "NoClusterAvailable";
    /// A cluster was claimed.
    pub const CLUSTER_CLAIMED: &str = "ClusterClaimed";
    /// ScenarioReady False: setup steps are running.
    pub const SETUP_RUNNING: &str = "SetupRunning";
    /// ScenarioReady False: a setup step failed after its retries.
    pub const SETUP_FAILED: &str = "SetupFailed";
    /// ScenarioReady True.
    pub const SETUP_SUCCEEDED: &str = "SetupSucceeded";
    /// Expired: the session ran out of time.
    pub const EXPIRED: &str = "Expired";
    /// Ended: an administrator force-released the cluster.
    pub const FORCE_RELEASED: &str = "ForceReleased";
    /// Event: `durationMinutes` was raised.
    pub const EXTENDED: &str = "Extended";
    /// Event: the requested duration exceeds the pool's maximum.
    pub const DURATION_CAPPED: &str = "DurationCapped";
}

/// A claim intent recorded by another operator is taken over only after this long (the
/// claim itself is two API writes; only a stopped operator leaves one behind).
pub const CLAIM_ABANDONED_AFTER: Duration = Duration::from_secs(30);

/// Shortest time between two rewrites of the queue positions of a pool's waiting Sessions:
/// each is a write per waiting Session whose position moved, so they are batched rather than
/// written per released cluster.
pub const WAKE_INTERVAL: Duration = Duration::from_secs(1);

/// How soon a reconcile that found the caches not yet filled looks again.
const CACHE_WAIT: Duration = Duration::from_millis(200);

/// A setup task of this process.
enum SetupTask {
    Running(tokio::task::AbortHandle),
    /// Finished (succeeded or failed); kept so a reconcile that still reads the status from
    /// before the result does not start it again.
    Finished,
}

/// State of one Session controller: the caches, the allocators, the running setup tasks.
pub struct Shared {
    ctx: Arc<Context>,
    sessions: Store<DeserializeGuard<Session>>,
    clusters: Store<DeserializeGuard<PracticeCluster>>,
    pools: Store<DeserializeGuard<ClusterPool>>,
    /// True once every cache has been filled (see [`CachesReady`]).
    ready: watch::Receiver<bool>,
    /// Names this controller's claim intents (see [`allocator`]); new per run.
    identity: String,
    allocators: allocator::Allocators,
    /// Setup tasks by Session uid: handles of tasks, so a Session that ends stops its setup.
    setups: Mutex<HashMap<String, SetupTask>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("ctx", &self.ctx)
            .field("identity", &self.identity)
            .field("allocators", &self.allocators)
            .field("setups", &lock(&self.setups).len())
            .finish_non_exhaustive()
    }
}

/// Counts a Session reaching `phase` (Ready, or an end) in `sessions_total{phase,reason}`.
fn count(ctx: &Context, phase: SessionPhase, reason: &str) {
    ctx.metrics
        .sessions
        .get_or_create(&crate::metrics::SessionLabels {
            phase: format!("{phase:?}"),
            reason: reason.to_owned(),
        })
        .inc();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn cancel_setup(&self, uid: &str) {
        if let Some(SetupTask::Running(handle)) = lock(&self.setups).remove(uid) {
            handle.abort();
        }
    }

    /// The pool of `session`, as the allocator keys it.
    fn pool_of(session: &Session) -> allocator::PoolKey {
        (session.namespace().unwrap_or_default(), session.spec.pool.clone())
    }
}

/// Which caches have been filled once, as their watch streams report it (`InitDone`).
///
/// Not `Store::wait_until_ready`: in kube-runtime 5 it is a `DelayedInit` over a futures
/// oneshot, whose receiver keeps only the waker of the last task that polled it, so of
/// several tasks waiting on one store at once only the last is woken. The controller's own
/// runner waits on the Session store that way; reconciles that waited on the stores as well
/// were the ones seen to hang forever (see `concurrent_store_waiters_lose_their_wakeup`).
#[derive(Debug)]
struct CachesReady {
    filled: watch::Sender<u8>,
    ready: watch::Sender<bool>,
}

impl CachesReady {
    const SESSIONS: u8 = 1;
    const CLUSTERS: u8 = 2;
    const POOLS: u8 = 4;

    fn new() -> (Self, watch::Receiver<bool>) {
        let (ready, rx) = watch::channel(false);
        (
            Self {
                filled: watch::channel(0).0,
                ready,
            },
            rx,
        )
    }

    fn filled(&self, cache: u8) {
        self.filled.send_modify(|f| *f |= cache);
        if *self.filled.borrow() == Self::SESSIONS | Self::CLUSTERS | Self::POOLS {
            self.ready.send_replace(true);
        }
    }
}

/// True when a cluster event may concern the Session holding it: the cluster failed, is
/// going away, or lost its claim.
fn cluster_concerns_its_session(pc: &PracticeCluster) -> bool {
    let phase = pc.status.as_ref().map(|s| s.phase).unwrap_or_default();
    phase == PracticeClusterPhase::Failed
        || pc.meta().deletion_timestamp.is_some()
        || (phase == PracticeClusterPhase::Assigned && pc.spec.claim_ref.is_none())
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
        client: kube::Client,
        namespace: Option<&str>,
    ) -> Api<K> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
    let sessions_api: Api<DeserializeGuard<Session>> = api(client.clone(), namespace);
    let clusters_api: Api<DeserializeGuard<PracticeCluster>> = api(client.clone(), namespace);
    let pools_api: Api<DeserializeGuard<ClusterPool>> = api(client, namespace);
    let (sessions, session_writer) = reflector::store();
    let (clusters, cluster_writer) = reflector::store();
    let (pools, pool_writer) = reflector::store();
    let (caches, ready) = CachesReady::new();
    let caches = Arc::new(caches);
    let shared = Arc::new(Shared {
        ctx,
        sessions: sessions.clone(),
        clusters,
        pools,
        ready,
        identity: format!(
            "{}-{}",
            crate::runtime::host_name(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        allocators: allocator::Allocators::default(),
        setups: Mutex::default(),
    });
    // Sessions a cluster or pool event concerns, to reconcile now.
    let (concern_tx, concern_rx) =
        futures::channel::mpsc::unbounded::<ObjectRef<DeserializeGuard<Session>>>();

    let (poker, filled) = (shared.clone(), caches.clone());
    let session_events = watcher(sessions_api, watcher::Config::default())
        .default_backoff()
        .modify(without_managed_fields)
        .reflect(session_writer)
        .inspect(move |event| match event {
            Ok(watcher::Event::Apply(guard) | watcher::Event::Delete(guard)) => {
                if let Ok(s) = &guard.0 {
                    allocator::poke(&poker, Shared::pool_of(s));
                }
            }
            Ok(watcher::Event::InitDone) => {
                filled.filled(CachesReady::SESSIONS);
                for guard in poker.sessions.state() {
                    if let Ok(s) = &guard.0 {
                        allocator::poke(&poker, Shared::pool_of(s));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "Session watch failed; retrying"),
        })
        .applied_objects();

    let (poker, filled, concern) = (shared.clone(), caches.clone(), concern_tx.clone());
    let cluster_watch = watcher(clusters_api, watcher::Config::default())
        .default_backoff()
        .modify(without_managed_fields)
        .reflect(cluster_writer)
        .for_each(move |event| {
            match &event {
                Ok(watcher::Event::Apply(guard) | watcher::Event::Delete(guard)) => {
                    if let Ok(pc) = &guard.0 {
                        allocator::poke(&poker, (pc.namespace().unwrap_or_default(), pc.spec.pool.clone()));
                        let gone = matches!(event, Ok(watcher::Event::Delete(_)));
                        if gone || cluster_concerns_its_session(pc) {
                            concerning(&poker, pc, &concern);
                        }
                    }
                }
                Ok(watcher::Event::InitDone) => filled.filled(CachesReady::CLUSTERS),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "PracticeCluster watch failed; retrying"),
            }
            futures::future::ready(())
        });
    let (poker, filled, concern) = (shared.clone(), caches.clone(), concern_tx);
    let pool_watch = watcher(pools_api, watcher::Config::default())
        .default_backoff()
        .modify(without_managed_fields)
        .reflect(pool_writer)
        .for_each(move |event| {
            match &event {
                Ok(watcher::Event::Apply(guard)) => {
                    allocator::poke(&poker, (guard.namespace().unwrap_or_default(), guard.name_any()));
                }
                // The pool's Sessions fail (PoolNotFound) or lose their clusters with it.
                Ok(watcher::Event::Delete(guard)) => {
                    let key = (guard.namespace().unwrap_or_default(), guard.name_any());
                    for s in poker.sessions.state() {
                        if s.0.as_ref().is_ok_and(|s| Shared::pool_of(s) == key) {
                            let _ = concern.unbounded_send(ObjectRef::from_obj(s.as_ref()));
                        }
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    filled.filled(CachesReady::POOLS);
                    for pool in poker.pools.state() {
                        allocator::poke(&poker, (pool.namespace().unwrap_or_default(), pool.name_any()));
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "ClusterPool watch failed; retrying"),
            }
            futures::future::ready(())
        });
    let shutdown = futures::FutureExt::shared(shutdown);
    // The allocators stop as soon as the controller is told to: a replica that lost its lease
    // must not claim while its reconciles finish.
    let allocators_stop = {
        let (shutdown, shared) = (shutdown.clone(), shared.clone());
        async move {
            shutdown.await;
            shared.allocators.stop();
            std::future::pending::<()>().await;
        }
    };
    let controller = Controller::for_stream(session_events, sessions).reconcile_on(concern_rx);
    let controller = Runner::new(CONTROLLER, shared.clone()).run(controller, shutdown, reconcile);
    tokio::select! {
        () = controller => {}
        () = cluster_watch => {}
        () = pool_watch => {}
        () = allocators_stop => {}
    }
    shared.allocators.stop();
    for (_, task) in lock(&shared.setups).drain() {
        if let SetupTask::Running(handle) = task {
            handle.abort();
        }
    }
}

/// Sends the Sessions `pc` may concern to be reconciled: the one its claim names, and any
/// whose status names it.
fn concerning(
    shared: &Shared,
    pc: &PracticeCluster,
    concern: &futures::channel::mpsc::UnboundedSender<ObjectRef<DeserializeGuard<Session>>>,
) {
    let namespace = pc.namespace();
    let name = pc.name_any();
    for guard in shared.sessions.state() {
        let Ok(s) = &guard.0 else { continue };
        if s.namespace() != namespace {
            continue;
        }
        let claimed = pc.spec.claim_ref.as_ref().is_some_and(|c| c.uid == s.uid());
        let named = s.status.as_ref().and_then(|st| st.cluster.as_deref()) == Some(name.as_str());
        if claimed || named {
            let _ = concern.unbounded_send(ObjectRef::from_obj(guard.as_ref()));
        }
    }
}

impl AsRef<Context> for Shared {
    fn as_ref(&self) -> &Context {
        &self.ctx
    }
}

/// Reconciles one Session (the runner counts, times, traces and reports it).
pub async fn reconcile(guard: Arc<DeserializeGuard<Session>>, shared: Arc<Shared>) -> Result<Action> {
    let session = shared.ctx.accept(guard.as_ref(), "Session").await?;
    // The checks and the release read the caches: never half-filled ones.
    if !*shared.ready.borrow() {
        return Ok(Action::requeue(CACHE_WAIT));
    }
    lifecycle::Reconciler::new(session.clone(), shared.clone())
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context as TaskContext, Poll, Wake, Waker};

    use super::*;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Why [`CachesReady`] exists: of two tasks waiting on one kube-runtime store, only the
    /// one that polled last is woken when the store fills; the other sleeps for good. If this
    /// fails after a kube upgrade, the library has fixed it.
    #[test]
    fn concurrent_store_waiters_lose_their_wakeup() {
        let (store, mut writer) = reflector::store::<k8s_openapi::api::core::v1::ConfigMap>();
        let first = Arc::new(Flag(AtomicBool::new(false)));
        let second = Arc::new(Flag(AtomicBool::new(false)));
        let mut wait_first = Box::pin(store.wait_until_ready());
        let mut wait_second = Box::pin(store.wait_until_ready());
        let waker_first = Waker::from(first.clone());
        let waker_second = Waker::from(second.clone());
        assert!(
            wait_first
                .as_mut()
                .poll(&mut TaskContext::from_waker(&waker_first))
                .is_pending()
        );
        assert!(
            wait_second
                .as_mut()
                .poll(&mut TaskContext::from_waker(&waker_second))
                .is_pending()
        );
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(second.0.load(Ordering::SeqCst), "the last waiter is woken");
        assert!(!first.0.load(Ordering::SeqCst), "the earlier waiter is not");
        // It would complete if polled again, but nothing polls a task that was never woken.
        assert!(matches!(
            wait_first
                .as_mut()
                .poll(&mut TaskContext::from_waker(&waker_first)),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn caches_are_ready_once_all_three_are_filled() {
        let (caches, ready) = CachesReady::new();
        caches.filled(CachesReady::SESSIONS);
        caches.filled(CachesReady::POOLS);
        caches.filled(CachesReady::POOLS);
        assert!(!*ready.borrow());
        caches.filled(CachesReady::CLUSTERS);
        assert!(*ready.borrow());
    }
}
