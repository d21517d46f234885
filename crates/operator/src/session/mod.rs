//! The Session controller: checks a new Session (scenario, pool, requirements, the user's
//! limit), queues it FIFO per pool until a cluster is Available, claims one (the cluster's
//! `spec.claimRef`, guarded by its resourceVersion), runs the scenario's setup in the
//! background, extends and expires the session, and releases the cluster on expiry,
//! force-release or deletion (finalizer `cks.io/session-release`).
//!
//! Sessions come from a guarded watch; PracticeClusters from a reflector store (the claim
//! candidates). A cluster becoming Available, failing or going away, and a Session leaving a
//! queue, wake every Session, so waiting ones claim or move up and active ones notice a lost
//! cluster. Pure planning lives in [`queue`], the setup runner in [`setup`], manifest
//! application in [`apply`].

pub mod apply;
pub mod queue;
pub mod setup;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cks_api::cluster_pool::ClusterPool;
use cks_api::conditions::{ConditionStatus, find_condition, new_condition, set_condition};
use cks_api::names::{annotations, condition_types, finalizers};
use cks_api::practice_cluster::{PracticeCluster, PracticeClusterPhase};
use cks_api::session::{ClaimAttempt, Session, SessionPhase, SessionStatus, SetupProgress, user_key};
use cks_scenarios::Scenario;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::access::PracticeAccess;
use crate::context::Context;
use crate::error::{Error, Result, kube_err};
use crate::metrics::SessionLabels;
use queue::QueueKey;

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

/// A claim attempt recorded by another operator is taken over only after this long (the
/// claim itself is one API write; only a stopped operator leaves one behind).
pub const CLAIM_ABANDONED_AFTER: Duration = Duration::from_secs(30);

/// Shortest time between two passes over every Session (see [`Shared::wake_all`]): a pass
/// rewrites the queue position of every waiting Session whose position moved, so passes are
/// batched rather than run per released cluster.
pub const WAKE_INTERVAL: Duration = Duration::from_secs(1);

/// Longest a reconcile waits for the caches to be filled before it looks again later.
const CACHE_WAIT: Duration = Duration::from_millis(200);

/// A setup task of this process.
enum SetupTask {
    Running(tokio::task::AbortHandle),
    /// Finished (succeeded or failed); kept so a reconcile that still reads the status from
    /// before the result does not start it again.
    Finished,
}

/// State of one Session controller: the caches and what this process did that the caches
/// may not show yet.
pub struct Shared {
    ctx: Arc<Context>,
    sessions: Store<DeserializeGuard<Session>>,
    clusters: Store<DeserializeGuard<PracticeCluster>>,
    pools: Store<DeserializeGuard<ClusterPool>>,
    /// Session uid → the claim attempt this process recorded on it (an attempt of this
    /// process is never in flight when its Session is reconciled again).
    attempts: Mutex<HashMap<String, ClaimAttempt>>,
    /// Session uid → cluster this process claimed for it, until its status names the cluster
    /// (the guard against a lagging cache making a session claim a second cluster).
    claims: Mutex<HashMap<String, String>>,
    /// Clusters a reconcile of this process is claiming right now, and clusters whose claim
    /// failed with a conflict by the resourceVersion the cache still shows: neither is a
    /// candidate for anyone here, so concurrent reconciles do not pile up on one cluster.
    busy: Mutex<Busy>,
    /// Sessions this process took out of a queue, until the cache shows it.
    departed: Mutex<HashSet<String>>,
    /// Setup tasks by Session uid.
    setups: Mutex<HashMap<String, SetupTask>>,
    /// Wakes every Session (coalescing).
    wake: watch::Sender<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("ctx", &self.ctx)
            .field("claims", &lock(&self.claims).len())
            .field("setups", &lock(&self.setups).len())
            .finish_non_exhaustive()
    }
}

/// See [`Shared::busy`].
#[derive(Debug, Default)]
struct Busy {
    claiming: HashSet<String>,
    /// Cluster name → the resourceVersion a claim conflicted with.
    stale: HashMap<String, String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn wake_all(&self) {
        self.wake.send_replace(());
    }

    fn cancel_setup(&self, uid: &str) {
        if let Some(SetupTask::Running(handle)) = lock(&self.setups).remove(uid) {
            handle.abort();
        }
    }
}

/// True when a cluster event may let a Session move: a claim candidate appeared, or a
/// cluster failed, is going away, or lost its claim.
fn cluster_wakes_sessions(pc: &PracticeCluster) -> bool {
    let phase = pc.status.as_ref().map(|s| s.phase).unwrap_or_default();
    queue::is_candidate(pc, &pc.spec.pool)
        || phase == PracticeClusterPhase::Failed
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
    let (sessions_api, clusters_api): (
        Api<DeserializeGuard<Session>>,
        Api<DeserializeGuard<PracticeCluster>>,
    ) = match namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let pools_api: Api<DeserializeGuard<ClusterPool>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let (clusters, writer) = reflector::store();
    let (pools, pool_writer) = reflector::store();
    let (wake, wake_rx) = watch::channel(());
    let controller = Controller::new(sessions_api, watcher::Config::default());
    let shared = Arc::new(Shared {
        ctx,
        sessions: controller.store(),
        clusters,
        pools,
        attempts: Mutex::default(),
        claims: Mutex::default(),
        busy: Mutex::default(),
        departed: Mutex::default(),
        setups: Mutex::default(),
        wake,
    });

    let waker = shared.clone();
    let cluster_watch = watcher(clusters_api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(move |event| {
            let wake = match &event {
                Ok(watcher::Event::Apply(guard)) => guard.0.as_ref().is_ok_and(cluster_wakes_sessions),
                Ok(watcher::Event::Delete(_) | watcher::Event::InitDone) => true,
                Ok(_) => false,
                Err(e) => {
                    warn!(error = %e, "PracticeCluster watch failed; retrying");
                    false
                }
            };
            if wake {
                waker.wake_all();
            }
            futures::future::ready(())
        });
    let waker = shared.clone();
    // A pool appearing, changing its maximum duration or going away concerns its Sessions.
    let pool_watch = watcher(pools_api, watcher::Config::default())
        .default_backoff()
        .reflect(pool_writer)
        .for_each(move |event| {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                    waker.wake_all();
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "ClusterPool watch failed; retrying"),
            }
            futures::future::ready(())
        });
    // At most one pass over every Session per WAKE_INTERVAL: changes arriving meanwhile
    // are coalesced into the next pass.
    let trigger = futures::stream::unfold(wake_rx, |mut rx| async move {
        rx.changed().await.ok()?;
        tokio::time::sleep(WAKE_INTERVAL).await;
        rx.mark_unchanged();
        Some(((), rx))
    });
    let sessions = controller
        .reconcile_all_on(trigger)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, shared.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "session controller event");
            }
        });
    tokio::select! {
        () = sessions => {}
        () = cluster_watch => {}
        () = pool_watch => {}
    }
    for (_, task) in lock(&shared.setups).drain() {
        if let SetupTask::Running(handle) = task {
            handle.abort();
        }
    }
}

/// Requeue by kind of error.
pub fn error_policy(guard: Arc<DeserializeGuard<Session>>, error: &Error, shared: Arc<Shared>) -> Action {
    let ctx = &shared.ctx;
    ctx.metrics.reconcile_failed(CONTROLLER, error.category());
    warn!(session = %guard.name_any(), error = %error, reason = error.category(), "reconcile failed");
    if error.needs_spec_change() {
        Action::await_change()
    } else {
        Action::requeue(ctx.config.retry_base.max(Duration::from_millis(200)))
    }
}

/// Reconciles one Session.
pub async fn reconcile(guard: Arc<DeserializeGuard<Session>>, shared: Arc<Shared>) -> Result<Action> {
    let name = guard.name_any();
    let namespace = guard.namespace().unwrap_or_default();
    let span = info_span!("reconcile", controller = CONTROLLER, session = %name, namespace = %namespace);
    async move {
        shared.ctx.metrics.reconciled(CONTROLLER);
        let session = shared.ctx.accept(guard.as_ref(), "Session").await?;
        // Queue positions and the user limit are computed from the caches: never from
        // half-filled ones. The wait is bounded: a reconcile that waited on a store while it
        // became ready was seen to miss the wakeup and hang forever, holding its Session.
        let caches = async {
            let _ = shared.sessions.wait_until_ready().await;
            let _ = shared.clusters.wait_until_ready().await;
            let _ = shared.pools.wait_until_ready().await;
        };
        if tokio::time::timeout(CACHE_WAIT, caches).await.is_err() {
            return Ok(Action::requeue(CACHE_WAIT));
        }
        Reconciler::new(session.clone(), shared.clone()).run().await
    }
    .instrument(span)
    .await
}

/// After a write lost a race: the winner's write event brings the next reconcile (the
/// controller runs it after this one even if it arrived meanwhile); the requeue is a safety net.
fn retry_after_conflict() -> Action {
    Action::requeue(Duration::from_secs(5))
}

/// True for a write that lost a race with another writer.
fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// JSON merge patch turning `from` into `to` (objects recursively, everything else replaced;
/// a field missing in `to` becomes `null`).
pub fn merge_diff(from: &Value, to: &Value) -> Option<Value> {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in b {
                match a.get(k) {
                    Some(old) => {
                        if let Some(d) = merge_diff(old, v) {
                            patch.insert(k.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if from == to => None,
        _ => Some(to.clone()),
    }
}

/// The `Ready` condition follows the phase.
fn summarise(status: &mut SessionStatus, generation: Option<i64>, now: Timestamp) {
    let ready = status.phase == SessionPhase::Ready;
    let reason = format!("{:?}", status.phase);
    let message = if ready {
        "the scenario is set up; work on the tasks".to_owned()
    } else {
        status.message.clone().unwrap_or_default()
    };
    set_condition(
        &mut status.conditions,
        new_condition(
            condition_types::READY,
            ConditionStatus::from(ready),
            &reason,
            message,
            generation,
            now,
        ),
    );
    status.observed_generation = generation;
}

/// The status of a Session as this controller writes it: everything but `tasks`, which only
/// the claim initialises (the ValidationRun controller owns the entries afterwards).
fn owned_json(status: &SessionStatus, with_tasks: bool) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if !with_tasks && let Some(o) = v.as_object_mut() {
        o.remove("tasks");
    }
    v
}

struct Reconciler {
    shared: Arc<Shared>,
    session: Session,
    status: SessionStatus,
    namespace: String,
    name: String,
    uid: String,
    now: Timestamp,
}

impl Reconciler {
    fn new(session: Session, shared: Arc<Shared>) -> Self {
        Self {
            status: session.status.clone().unwrap_or_default(),
            namespace: session.namespace().unwrap_or_default(),
            name: session.name_any(),
            uid: session.uid().unwrap_or_default(),
            now: Timestamp::now(),
            session,
            shared,
        }
    }

    fn ctx(&self) -> &Context {
        &self.shared.ctx
    }

    fn sessions_api(&self) -> Api<Session> {
        Api::namespaced(self.ctx().client.clone(), &self.namespace)
    }

    fn clusters_api(&self) -> Api<PracticeCluster> {
        Api::namespaced(self.ctx().client.clone(), &self.namespace)
    }

    fn key(&self) -> QueueKey {
        QueueKey::of(&self.session)
    }

    async fn run(mut self) -> Result<Action> {
        let waiting = self
            .shared
            .sessions
            .state()
            .iter()
            .filter(|g| {
                g.0.as_ref().is_ok_and(|s| {
                    queue::is_waiting(s.status.as_ref().map(|st| st.phase).unwrap_or_default())
                })
            })
            .count();
        self.ctx()
            .metrics
            .sessions_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        if self.session.meta().deletion_timestamp.is_some() {
            return self.finalize().await;
        }
        if !self
            .session
            .finalizers()
            .iter()
            .any(|f| f == finalizers::SESSION_RELEASE)
        {
            return self.add_finalizer().await;
        }
        let phase = self.status.phase;
        if phase.is_terminal() {
            // Nothing is held after the end; a claim the cache still shows (a release whose
            // effect has not arrived) is released again, harmlessly.
            self.release(false).await?;
            return Ok(Action::await_change());
        }
        if self
            .session
            .annotations()
            .contains_key(annotations::FORCE_RELEASE)
        {
            let message = "an administrator force-released the session's cluster".to_owned();
            return self
                .end(
                    SessionPhase::Ended,
                    reasons::FORCE_RELEASED,
                    message,
                    EventType::Normal,
                )
                .await;
        }
        match phase {
            SessionPhase::Pending => self.admit().await,
            SessionPhase::WaitingForCluster => self.allocate(None).await,
            _ => self.active().await,
        }
    }

    async fn add_finalizer(&self) -> Result<Action> {
        let mut list = self.session.finalizers().to_vec();
        list.push(finalizers::SESSION_RELEASE.to_owned());
        let patch =
            json!({"metadata": {"finalizers": list, "resourceVersion": self.session.resource_version()}});
        match self
            .sessions_api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Action::await_change()),
            Err(e) if conflict(&e) => Ok(Action::await_change()),
            Err(e) => Err(kube_err("add finalizer to", "Session", self.name.clone())(e)),
        }
    }

    /// Writes the owned status fields that differ from what was read, guarded by the
    /// resourceVersion read. Returns false when another writer came first.
    async fn write(&mut self, mut next: SessionStatus, with_tasks: bool) -> Result<bool> {
        summarise(&mut next, self.session.meta().generation, self.now);
        let Some(diff) = merge_diff(
            &owned_json(&self.status, with_tasks),
            &owned_json(&next, with_tasks),
        ) else {
            return Ok(true);
        };
        let patch = json!({"metadata": {"resourceVersion": self.session.resource_version()}, "status": diff});
        match self
            .sessions_api()
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.status = updated.status.clone().unwrap_or_default();
                self.session = updated;
                if self.status.claiming.is_none() {
                    lock(&self.shared.attempts).remove(&self.uid);
                }
                Ok(true)
            }
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(kube_err("patch status of", "Session", self.name.clone())(e)),
        }
    }

    fn count(&self, phase: SessionPhase, reason: &str) {
        self.ctx()
            .metrics
            .sessions
            .get_or_create(&SessionLabels {
                phase: format!("{phase:?}"),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Pending → Failed with a reason, a Warning event, nothing claimed.
    async fn fail(&mut self, reason: &str, message: String) -> Result<Action> {
        let was_waiting = queue::is_queued(self.status.phase);
        let mut next = self.status.clone();
        next.phase = SessionPhase::Failed;
        next.reason = Some(reason.to_owned());
        next.message = Some(message.clone());
        next.queue_position = None;
        next.claiming = None;
        next.ended_at = Some(Time(self.now));
        if !self.write(next, false).await? {
            return Ok(retry_after_conflict());
        }
        info!(reason, message = %message, "session failed");
        self.ctx()
            .event(&self.session, EventType::Warning, reason, "Admit", message)
            .await;
        self.count(SessionPhase::Failed, reason);
        if was_waiting {
            lock(&self.shared.departed).insert(self.uid.clone());
            self.shared.wake_all();
        }
        Ok(Action::await_change())
    }

    /// The Session's pool from the cache; a pool the cache does not show (yet) is read.
    async fn get_pool(&self) -> Result<Option<ClusterPool>> {
        let cached = self.shared.pools.state().into_iter().find_map(|g| {
            g.0.as_ref()
                .ok()
                .filter(|p| {
                    p.name_any() == self.session.spec.pool
                        && p.namespace().as_deref() == Some(self.namespace.as_str())
                })
                .cloned()
        });
        if cached.is_some() {
            return Ok(cached);
        }
        let pools: Api<ClusterPool> = Api::namespaced(self.ctx().client.clone(), &self.namespace);
        pools.get_opt(&self.session.spec.pool).await.map_err(kube_err(
            "get",
            "ClusterPool",
            format!("{}/{}", self.namespace, self.session.spec.pool),
        ))
    }

    fn scenario(&self) -> std::result::Result<Arc<Scenario>, String> {
        let id = &self.session.spec.scenario;
        let Some(store) = &self.ctx().scenarios else {
            return Err(format!(
                "scenario {id} cannot be found: no scenario catalog is loaded"
            ));
        };
        store
            .catalog()
            .get(id)
            .cloned()
            .ok_or_else(|| format!("scenario {id} is not in the scenario catalog"))
    }

    /// Pending: the checks, in order, then the queue.
    async fn admit(&mut self) -> Result<Action> {
        let scenario = match self.scenario() {
            Ok(s) => s,
            Err(message) => return self.fail(reasons::SCENARIO_NOT_FOUND, message).await,
        };
        let pool_name = self.session.spec.pool.clone();
        let Some(pool) = self.get_pool().await? else {
            let message = format!(
                "ClusterPool {pool_name} does not exist in namespace {}",
                self.namespace
            );
            return self.fail(reasons::POOL_NOT_FOUND, message).await;
        };
        if let Some(why) = queue::requirements_unmet(&scenario.metadata.requirements, &pool.spec.template) {
            let message = format!("pool {pool_name} cannot run scenario {}: {why}", scenario.id());
            return self.fail(reasons::REQUIREMENTS_NOT_MET, message).await;
        }
        let limit = self.ctx().config.max_sessions_per_user;
        let me = self.key();
        let user = user_key(&self.session.spec.user);
        let older: Vec<QueueKey> = self
            .shared
            .sessions
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|s| {
                s.namespace().as_deref() == Some(self.namespace.as_str())
                    && user_key(&s.spec.user) == user
                    && s.uid().as_deref() != Some(self.uid.as_str())
                    && s.meta().deletion_timestamp.is_none()
                    && s.status
                        .as_ref()
                        .map(|st| st.phase)
                        .unwrap_or_default()
                        .is_active()
            })
            .map(QueueKey::of)
            .collect();
        if queue::over_user_limit(&me, &older, limit) {
            let message = format!(
                "user {} already has {limit} active session(s); end one before starting another",
                self.session.spec.user
            );
            return self.fail(reasons::USER_LIMIT_REACHED, message).await;
        }
        self.allocate(Some(pool)).await
    }

    /// The cluster this process or the cache knows this session claimed.
    async fn held_cluster(&self) -> Result<Option<PracticeCluster>> {
        let remembered = lock(&self.shared.claims).get(&self.uid).cloned();
        if let Some(name) = remembered {
            return self
                .clusters_api()
                .get_opt(&name)
                .await
                .map_err(kube_err("get", "PracticeCluster", name.clone()))
                .map(|pc| pc.filter(|pc| self.holds(pc)));
        }
        Ok(self
            .shared
            .clusters
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .find(|pc| self.holds(pc) && pc.namespace().as_deref() == Some(self.namespace.as_str()))
            .cloned())
    }

    fn holds(&self, pc: &PracticeCluster) -> bool {
        pc.spec
            .claim_ref
            .as_ref()
            .is_some_and(|c| c.uid.as_deref() == Some(self.uid.as_str()))
    }

    /// WaitingForCluster (or just admitted): claim a cluster if this session's turn has come,
    /// else show the queue position.
    async fn allocate(&mut self, pool: Option<ClusterPool>) -> Result<Action> {
        let pool = match pool {
            Some(p) => Some(p),
            None => self.get_pool().await?,
        };
        if let Some(pc) = self.held_cluster().await? {
            return self.claimed(pc, pool.as_ref()).await;
        }
        let pool_name = self.session.spec.pool.clone();
        let Some(pool) = pool else {
            // The pool went away while the session waited (its clusters go with it).
            let message = format!(
                "ClusterPool {pool_name} does not exist in namespace {}",
                self.namespace
            );
            return self.fail(reasons::POOL_NOT_FOUND, message).await;
        };
        let own_attempt = lock(&self.shared.attempts).get(&self.uid).cloned();
        if let Some(attempt) = &self.status.claiming
            && own_attempt.as_ref() != Some(attempt)
        {
            let age = self.now.duration_since(attempt.since.0).unsigned_abs();
            if age < CLAIM_ABANDONED_AFTER {
                // Another operator is claiming for this session right now.
                return Ok(Action::requeue(CLAIM_ABANDONED_AFTER - age));
            }
        }
        let sessions = self.shared.sessions.state();
        let departed = {
            let mut departed = lock(&self.shared.departed);
            if !departed.is_empty() {
                // Forget departures the cache shows by now.
                let queued: HashSet<String> = sessions
                    .iter()
                    .filter_map(|g| g.0.as_ref().ok())
                    .filter(|s| queue::is_queued(s.status.as_ref().map(|st| st.phase).unwrap_or_default()))
                    .filter_map(ResourceExt::uid)
                    .collect();
                departed.retain(|uid| queued.contains(uid));
            }
            departed.clone()
        };
        let live = || {
            sessions
                .iter()
                .filter_map(|g| g.0.as_ref().ok())
                .filter(|s| s.meta().deletion_timestamp.is_none())
                .filter(|s| !s.uid().is_some_and(|u| departed.contains(&u)))
        };
        let phase_of = |s: &Session| s.status.as_ref().map(|st| st.phase).unwrap_or_default();
        let queue: Vec<QueueKey> = live()
            .filter(|s| queue::is_queued(phase_of(s)))
            .filter(|s| {
                s.spec.pool == pool_name
                    && s.namespace().as_deref() == Some(self.namespace.as_str())
                    && s.uid().as_deref() != Some(self.uid.as_str())
            })
            .map(QueueKey::of)
            .collect();
        let position = queue::position(&queue, &self.key());
        // Clusters another session of this cache or this process is claiming or holds.
        let mut taken: HashSet<String> = lock(&self.shared.claims).values().cloned().collect();
        for s in live() {
            if s.uid().as_deref() == Some(self.uid.as_str()) {
                continue;
            }
            if let Some(st) = s.status.as_ref().filter(|st| st.phase.is_active()) {
                taken.extend(st.cluster.clone());
                taken.extend(st.claiming.as_ref().map(|c| c.cluster.clone()));
            }
        }
        drop(sessions);
        let mut candidates: Vec<Arc<DeserializeGuard<PracticeCluster>>> = {
            let mut busy = lock(&self.shared.busy);
            let clusters = self.shared.clusters.state();
            // A conflict is forgotten once the cache shows a newer version of the cluster.
            busy.stale.retain(|name, rv| {
                clusters
                    .iter()
                    .any(|g| g.name_any() == *name && g.resource_version().as_ref() == Some(rv))
            });
            clusters
                .into_iter()
                .filter(|g| {
                    g.0.as_ref().is_ok_and(|pc| {
                        let name = pc.name_any();
                        pc.namespace().as_deref() == Some(self.namespace.as_str())
                            && queue::is_candidate(pc, &pool_name)
                            && !taken.contains(&name)
                            && !busy.claiming.contains(&name)
                            && busy.stale.get(&name) != pc.resource_version().as_ref()
                    })
                })
                .collect()
        };
        candidates.sort_by_key(|g| g.name_any());

        if position <= candidates.len() {
            for index in queue::claim_order(candidates.len(), position) {
                let Ok(pc) = &candidates[index].0 else { continue };
                match self.try_claim(pc).await? {
                    ClaimOutcome::Claimed(pc) => return self.claimed(*pc, Some(&pool)).await,
                    ClaimOutcome::Taken => {}
                    ClaimOutcome::SessionChanged => return Ok(retry_after_conflict()),
                }
            }
        }
        // Not this session's turn, or every candidate went to someone else.
        if !candidates.is_empty()
            && self.status.phase == SessionPhase::WaitingForCluster
            && self.status.claiming.is_none()
        {
            // Sessions ahead are claiming the candidates right now, so the position is about
            // to move again: rewriting it now would cost a write per waiting Session per
            // claim. Look again after the next pass instead.
            return Ok(Action::requeue(WAKE_INTERVAL));
        }
        let mut next = self.status.clone();
        next.phase = SessionPhase::WaitingForCluster;
        next.claiming = None;
        next.queue_position = Some(i32::try_from(position).unwrap_or(i32::MAX));
        next.reason = Some(reasons::NO_CLUSTER_AVAILABLE.to_owned());
        next.message = Some(format!(
            "waiting for a cluster of pool {pool_name}: position {position} in the queue"
        ));
        set_condition(
            &mut next.conditions,
            new_condition(
                condition_types::CLUSTER_ASSIGNED,
                ConditionStatus::False,
                reasons::NO_CLUSTER_AVAILABLE,
                format!("position {position} in the queue of pool {pool_name}"),
                self.session.meta().generation,
                self.now,
            ),
        );
        if !self.write(next, false).await? {
            return Ok(retry_after_conflict());
        }
        Ok(Action::requeue(self.ctx().config.resync))
    }

    /// Records the attempt on the Session (guarded, so only one controller claims for it),
    /// then writes the cluster's claimRef guarded by the resourceVersion the cache saw.
    async fn try_claim(&mut self, pc: &PracticeCluster) -> Result<ClaimOutcome> {
        let cluster = pc.name_any();
        if !lock(&self.shared.busy).claiming.insert(cluster.clone()) {
            return Ok(ClaimOutcome::Taken);
        }
        let outcome = self.claim_marked(pc).await;
        let mut busy = lock(&self.shared.busy);
        busy.claiming.remove(&cluster);
        if let Ok(ClaimOutcome::Taken) = &outcome
            && let Some(rv) = pc.resource_version()
        {
            busy.stale.insert(cluster, rv);
        }
        outcome
    }

    /// [`Self::try_claim`] once `pc` is marked as being claimed here.
    async fn claim_marked(&mut self, pc: &PracticeCluster) -> Result<ClaimOutcome> {
        let cluster = pc.name_any();
        let mut intent = self.status.clone();
        intent.phase = SessionPhase::WaitingForCluster;
        let attempt = ClaimAttempt {
            cluster: cluster.clone(),
            since: Time(self.now),
        };
        intent.claiming = Some(attempt.clone());
        if !self.write(intent, false).await? {
            return Ok(ClaimOutcome::SessionChanged);
        }
        // What the write stored (times are kept to the second).
        let stored = self.status.claiming.clone().unwrap_or(attempt);
        lock(&self.shared.attempts).insert(self.uid.clone(), stored);
        let patch = json!({
            "metadata": {"resourceVersion": pc.resource_version()},
            "spec": {"claimRef": {"name": self.name, "uid": self.uid}},
        });
        match self
            .clusters_api()
            .patch(&cluster, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(claimed) => {
                lock(&self.shared.claims).insert(self.uid.clone(), cluster.clone());
                info!(cluster = %cluster, "claimed cluster");
                Ok(ClaimOutcome::Claimed(Box::new(claimed)))
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                info!(cluster = %cluster, code = s.code, "cluster changed since cached; trying the next");
                Ok(ClaimOutcome::Taken)
            }
            Err(e) => Err(kube_err("claim", "PracticeCluster", cluster)(e)),
        }
    }

    /// The cluster is claimed: the Session starts.
    async fn claimed(&mut self, pc: PracticeCluster, pool: Option<&ClusterPool>) -> Result<Action> {
        let cluster = pc.name_any();
        let scenario = self.scenario().ok();
        let pool_max = pool.map_or(1440, |p| p.spec.sessions.max_duration_minutes);
        let (minutes, capped) = queue::granted_minutes(self.session.spec.duration_minutes, pool_max);
        let mut next = self.status.clone();
        let fresh = next.cluster.as_deref() != Some(cluster.as_str());
        next.phase = SessionPhase::Initializing;
        next.cluster = Some(cluster.clone());
        next.claiming = None;
        next.queue_position = None;
        next.reason = Some(reasons::CLUSTER_CLAIMED.to_owned());
        next.message = Some(format!("cluster {cluster} assigned; setting up the scenario"));
        let started = if fresh {
            self.now
        } else {
            queue::effective_start(next.started_at.as_ref().map(|t| t.0), self.now)
        };
        next.started_at = Some(Time(started));
        next.expires_at = Some(Time(queue::expires_at(started, minutes)));
        next.terminals = queue::terminals(
            &self.name,
            pc.status.as_ref().map(|s| s.vms.as_slice()).unwrap_or_default(),
            self.ctx().config.ssh_port,
        );
        let with_tasks = next.tasks.is_empty();
        if with_tasks && let Some(s) = &scenario {
            next.tasks = queue::initial_tasks(s);
        }
        let total = scenario.as_ref().map_or(0, |s| s.setup.len());
        next.setup = Some(SetupProgress {
            total: i32::try_from(total).unwrap_or(i32::MAX),
            completed: 0,
            step: None,
            started_at: Some(Time(self.now)),
            finished_at: None,
        });
        let generation = self.session.meta().generation;
        set_condition(
            &mut next.conditions,
            new_condition(
                condition_types::CLUSTER_ASSIGNED,
                ConditionStatus::True,
                reasons::CLUSTER_CLAIMED,
                format!("cluster {cluster}"),
                generation,
                self.now,
            ),
        );
        // A scenario without setup steps is ready as soon as it has a cluster.
        let no_setup = scenario.as_ref().is_some_and(|s| s.setup.is_empty());
        let (ready, reason, message) = if no_setup {
            (true, reasons::SETUP_SUCCEEDED, "no setup steps".to_owned())
        } else {
            (
                false,
                reasons::SETUP_RUNNING,
                format!("{total} setup step(s) to run"),
            )
        };
        set_condition(
            &mut next.conditions,
            new_condition(
                condition_types::SCENARIO_READY,
                ConditionStatus::from(ready),
                reason,
                message,
                generation,
                self.now,
            ),
        );
        if no_setup {
            next.phase = SessionPhase::Ready;
            next.reason = Some(reasons::SETUP_SUCCEEDED.to_owned());
            next.message = Some(format!(
                "cluster {cluster} assigned; the scenario has no setup steps"
            ));
            if let Some(progress) = next.setup.as_mut() {
                progress.finished_at = Some(Time(self.now));
            }
        }
        if !self.write(next, with_tasks).await? {
            // The claim stays remembered; the next reconcile records it.
            return Ok(retry_after_conflict());
        }
        if no_setup {
            self.ctx().metrics.setup_duration.observe(0.0);
            self.count(SessionPhase::Ready, "");
        }
        let created = self
            .session
            .meta()
            .creation_timestamp
            .as_ref()
            .map_or(self.now, |t| t.0);
        self.ctx()
            .metrics
            .allocation_duration
            .observe(self.now.duration_since(created).as_secs_f64().max(0.0));
        self.ctx()
            .event(
                &self.session,
                EventType::Normal,
                reasons::CLUSTER_CLAIMED,
                "Claim",
                format!("cluster {cluster} assigned"),
            )
            .await;
        if capped {
            let note = format!(
                "{} minutes requested; pool {} allows at most {pool_max}",
                self.session.spec.duration_minutes, self.session.spec.pool
            );
            self.ctx()
                .event(
                    &self.session,
                    EventType::Normal,
                    reasons::DURATION_CAPPED,
                    "Claim",
                    note,
                )
                .await;
        }
        lock(&self.shared.departed).insert(self.uid.clone());
        self.shared.wake_all();
        Ok(Action::requeue(Duration::ZERO))
    }

    /// Initializing or Ready: expiry, extension, the cluster's health, setup.
    async fn active(&mut self) -> Result<Action> {
        let Some(cluster) = self.status.cluster.clone() else {
            return self
                .lose("the session is active but names no cluster".to_owned())
                .await;
        };
        {
            let mut claims = lock(&self.shared.claims);
            if claims.get(&self.uid) == Some(&cluster) {
                claims.remove(&self.uid);
            }
        }
        let pool = self.get_pool().await?;
        let pool_max = pool
            .as_ref()
            .map_or(1440, |p| p.spec.sessions.max_duration_minutes);
        let (minutes, capped) = queue::granted_minutes(self.session.spec.duration_minutes, pool_max);
        let started = queue::effective_start(self.status.started_at.as_ref().map(|t| t.0), self.now);
        let expires = queue::expires_at(started, minutes);
        if self.now >= expires {
            let message = format!("the session's {minutes} minutes are over");
            return self
                .end(
                    SessionPhase::Expired,
                    reasons::EXPIRED,
                    message,
                    EventType::Normal,
                )
                .await;
        }
        if let Some(lost) = self.check_cluster(&cluster).await? {
            return self.lose(lost).await;
        }

        let mut next = self.status.clone();
        // A start in the future is written back as now: recomputed from a future start on
        // every reconcile, the expiry would move along and the session never end.
        next.started_at = Some(Time(started));
        let previous = next.expires_at.as_ref().map(|t| t.0);
        next.expires_at = Some(Time(expires));
        let generation_changed = self.status.observed_generation != self.session.meta().generation;
        if generation_changed && previous.is_some_and(|p| p != expires) {
            let note = format!("session extended to {minutes} minutes; expires at {expires}");
            self.ctx()
                .event(
                    &self.session,
                    EventType::Normal,
                    reasons::EXTENDED,
                    "Extend",
                    note,
                )
                .await;
        }
        if generation_changed && capped {
            let note = format!(
                "{} minutes requested; pool {} allows at most {pool_max}",
                self.session.spec.duration_minutes, self.session.spec.pool
            );
            next.message = Some(note.clone());
            self.ctx()
                .event(
                    &self.session,
                    EventType::Normal,
                    reasons::DURATION_CAPPED,
                    "Extend",
                    note,
                )
                .await;
        }
        if !self.write(next, false).await? {
            return Ok(retry_after_conflict());
        }
        if self.status.phase == SessionPhase::Initializing {
            self.ensure_setup(&cluster).await?;
        }
        let left = expires.duration_since(self.now).unsigned_abs();
        Ok(Action::requeue(left.min(self.ctx().config.resync)))
    }

    /// `Some(why)` when `name` is no longer this session's healthy cluster. The cache is
    /// confirmed by a read before anything is declared lost (it may lag behind the claim).
    async fn check_cluster(&self, name: &str) -> Result<Option<String>> {
        let verdict = |pc: Option<&PracticeCluster>| -> Option<String> {
            let Some(pc) = pc else {
                return Some(format!("cluster {name} no longer exists"));
            };
            if !self.holds(pc) {
                return Some(format!("cluster {name} is no longer claimed by this session"));
            }
            if pc.meta().deletion_timestamp.is_some() {
                return Some(format!("cluster {name} is being deleted"));
            }
            let status = pc.status.clone().unwrap_or_default();
            (status.phase == PracticeClusterPhase::Failed).then(|| {
                format!(
                    "cluster {name} failed: {}",
                    status.failure_message.unwrap_or_default()
                )
            })
        };
        let cached = self
            .shared
            .clusters
            .state()
            .into_iter()
            .find(|g| g.name_any() == name && g.namespace().as_deref() == Some(self.namespace.as_str()));
        if verdict(cached.as_ref().and_then(|g| g.0.as_ref().ok())).is_none() {
            return Ok(None);
        }
        let fresh = self.clusters_api().get_opt(name).await.map_err(kube_err(
            "get",
            "PracticeCluster",
            name.to_owned(),
        ))?;
        Ok(verdict(fresh.as_ref()))
    }

    async fn lose(&mut self, why: String) -> Result<Action> {
        self.shared.cancel_setup(&self.uid);
        self.release(true).await?;
        let mut next = self.status.clone();
        next.phase = SessionPhase::Failed;
        next.reason = Some(reasons::CLUSTER_LOST.to_owned());
        next.message = Some(why.clone());
        next.ended_at = Some(Time(self.now));
        set_condition(
            &mut next.conditions,
            new_condition(
                condition_types::CLUSTER_ASSIGNED,
                ConditionStatus::False,
                reasons::CLUSTER_LOST,
                why.clone(),
                self.session.meta().generation,
                self.now,
            ),
        );
        if !self.write(next, false).await? {
            return Ok(retry_after_conflict());
        }
        warn!(reason = reasons::CLUSTER_LOST, message = %why, "session lost its cluster");
        self.ctx()
            .event(
                &self.session,
                EventType::Warning,
                reasons::CLUSTER_LOST,
                "Watch",
                why,
            )
            .await;
        self.count(SessionPhase::Failed, reasons::CLUSTER_LOST);
        Ok(Action::await_change())
    }

    /// Releases the cluster, then records the end.
    async fn end(
        &mut self,
        phase: SessionPhase,
        reason: &str,
        message: String,
        type_: EventType,
    ) -> Result<Action> {
        let was_waiting = queue::is_queued(self.status.phase);
        self.shared.cancel_setup(&self.uid);
        self.release(true).await?;
        let mut next = self.status.clone();
        next.phase = phase;
        next.reason = Some(reason.to_owned());
        next.message = Some(message.clone());
        next.queue_position = None;
        next.claiming = None;
        next.ended_at = Some(Time(self.now));
        if next.cluster.is_some() {
            set_condition(
                &mut next.conditions,
                new_condition(
                    condition_types::CLUSTER_ASSIGNED,
                    ConditionStatus::False,
                    reason,
                    "the cluster was released".to_owned(),
                    self.session.meta().generation,
                    self.now,
                ),
            );
        }
        if !self.write(next, false).await? {
            return Ok(retry_after_conflict());
        }
        info!(phase = ?phase, reason, "session ended");
        self.ctx()
            .event(&self.session, type_, reason, "Release", message)
            .await;
        self.count(phase, reason);
        if was_waiting {
            lock(&self.shared.departed).insert(self.uid.clone());
            self.shared.wake_all();
        }
        Ok(Action::await_change())
    }

    /// Clears the claimRef of every cluster this session holds, only if it still names this
    /// session. `thorough` also tries the
    /// clusters the status and this process name, whatever the cache says.
    async fn release(&self, thorough: bool) -> Result<()> {
        let mut names: HashSet<String> = self
            .shared
            .clusters
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|pc| self.holds(pc) && pc.namespace().as_deref() == Some(self.namespace.as_str()))
            .map(ResourceExt::name_any)
            .collect();
        if thorough {
            names.extend(self.status.cluster.clone());
            names.extend(self.status.claiming.as_ref().map(|c| c.cluster.clone()));
            names.extend(lock(&self.shared.claims).get(&self.uid).cloned());
        }
        for name in names {
            if self.release_one(&name).await? {
                info!(cluster = %name, "released cluster");
                self.ctx()
                    .event(
                        &self.session,
                        EventType::Normal,
                        "ClusterReleased",
                        "Release",
                        format!("cluster {name} released for reset"),
                    )
                    .await;
            }
        }
        lock(&self.shared.claims).remove(&self.uid);
        Ok(())
    }

    /// Clears `name`'s claimRef if it names this session: read, check, write guarded by the
    /// resourceVersion read (a claim by anyone else in between is a conflict, and read again).
    /// Returns whether this call released it.
    async fn release_one(&self, name: &str) -> Result<bool> {
        let api = self.clusters_api();
        loop {
            let Some(pc) =
                api.get_opt(name)
                    .await
                    .map_err(kube_err("get", "PracticeCluster", name.to_owned()))?
            else {
                return Ok(false);
            };
            if !self.holds(&pc) {
                return Ok(false);
            }
            let patch =
                json!({"metadata": {"resourceVersion": pc.resource_version()}, "spec": {"claimRef": null}});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if conflict(&e) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
                Err(e) => return Err(kube_err("release", "PracticeCluster", name.to_owned())(e)),
            }
        }
    }

    /// Deletion: cancel setup, release, then let the Session go.
    async fn finalize(&mut self) -> Result<Action> {
        if !self
            .session
            .finalizers()
            .iter()
            .any(|f| f == finalizers::SESSION_RELEASE)
        {
            return Ok(Action::await_change());
        }
        self.shared.cancel_setup(&self.uid);
        self.release(true).await?;
        let was_active = self.status.phase.is_active();
        let list: Vec<String> = self
            .session
            .finalizers()
            .iter()
            .filter(|f| *f != finalizers::SESSION_RELEASE)
            .cloned()
            .collect();
        let patch =
            json!({"metadata": {"finalizers": list, "resourceVersion": self.session.resource_version()}});
        match self
            .sessions_api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if conflict(&e) => return Ok(retry_after_conflict()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err("remove finalizer from", "Session", self.name.clone())(e)),
        }
        lock(&self.shared.setups).remove(&self.uid);
        lock(&self.shared.attempts).remove(&self.uid);
        if was_active {
            self.count(SessionPhase::Ended, "Deleted");
        }
        if queue::is_queued(self.status.phase) {
            lock(&self.shared.departed).insert(self.uid.clone());
            self.shared.wake_all();
        }
        Ok(Action::await_change())
    }

    /// Starts the setup task unless one runs (or ran) in this process, or the status says
    /// it failed.
    async fn ensure_setup(&self, cluster: &str) -> Result<()> {
        let failed = find_condition(&self.status.conditions, condition_types::SCENARIO_READY)
            .is_some_and(|c| c.reason == reasons::SETUP_FAILED);
        if failed || lock(&self.shared.setups).contains_key(&self.uid) {
            return Ok(());
        }
        let Some(pc) = self.clusters_api().get_opt(cluster).await.map_err(kube_err(
            "get",
            "PracticeCluster",
            cluster.to_owned(),
        ))?
        else {
            return Ok(());
        };
        let job = SetupJob {
            shared: self.shared.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            cluster: pc,
            scenario: self.scenario(),
            from: usize::try_from(self.status.setup.as_ref().map_or(0, |s| s.completed)).unwrap_or(0),
        };
        let mut setups = lock(&self.shared.setups);
        if setups.contains_key(&self.uid) {
            return Ok(());
        }
        let handle = tokio::spawn(job.run().instrument(info_span!("setup", session = %self.name)));
        setups.insert(self.uid.clone(), SetupTask::Running(handle.abort_handle()));
        Ok(())
    }
}

enum ClaimOutcome {
    Claimed(Box<PracticeCluster>),
    /// The cluster changed or went away since the cache saw it.
    Taken,
    /// The Session changed since read; start over.
    SessionChanged,
}

/// One Session's setup, run in the background.
struct SetupJob {
    shared: Arc<Shared>,
    namespace: String,
    name: String,
    uid: String,
    cluster: PracticeCluster,
    scenario: std::result::Result<Arc<Scenario>, String>,
    from: usize,
}

/// The setup stopped because the Session moved on (ended, deleted, or another cluster).
struct Stale;

impl SetupJob {
    async fn run(self) {
        let result = self.steps().await;
        if let Err(Stale) = result {
            info!("session moved on; setup stopped");
        }
        if let Some(task) = lock(&self.shared.setups).get_mut(&self.uid) {
            *task = SetupTask::Finished;
        }
    }

    async fn steps(&self) -> std::result::Result<(), Stale> {
        let ctx = self.shared.ctx.clone();
        let scenario = match &self.scenario {
            Ok(s) => s.clone(),
            Err(why) => return self.failed("-", why.clone()).await,
        };
        let steps = &scenario.setup;
        let total = steps.len();
        if self.from < total {
            let access = loop {
                match PracticeAccess::load(&ctx, &self.cluster).await {
                    Ok(a) => break a,
                    // The host API failing is transient; anything else is the cluster's state.
                    Err(Error::Kube { .. }) => {
                        tokio::time::sleep(ctx.config.retry_base.max(Duration::from_millis(200))).await;
                    }
                    Err(e) => return self.failed("-", e.to_string()).await,
                }
            };
            let exec = setup::ClusterSteps::new(access);
            for (index, step) in steps.iter().enumerate().skip(self.from) {
                let id = step.id.clone();
                self.update(|st| {
                    let progress = st.setup.get_or_insert_with(SetupProgress::default);
                    progress.step = Some(id.clone());
                    st.message = Some(format!("running setup step {id} ({}/{total})", index + 1));
                })
                .await?;
                let result = setup::run_step(&exec, step, ctx.config.retry_base).await;
                if !result.ok {
                    let message = format!(
                        "setup step {} failed after {} attempt(s): {}",
                        step.id, result.attempts, result.output
                    );
                    return self.failed(&step.id, message).await;
                }
                self.update(|st| {
                    let progress = st.setup.get_or_insert_with(SetupProgress::default);
                    progress.completed = i32::try_from(index + 1).unwrap_or(i32::MAX);
                })
                .await?;
            }
        }
        let now = Timestamp::now();
        let mut began = None;
        let session = self
            .update(|st| {
                st.phase = SessionPhase::Ready;
                st.reason = Some(reasons::SETUP_SUCCEEDED.to_owned());
                st.message = Some(format!("{total} setup step(s) done; the scenario is ready"));
                let progress = st.setup.get_or_insert_with(SetupProgress::default);
                progress.step = None;
                progress.finished_at = Some(Time(now));
                began = progress.started_at.as_ref().map(|t| t.0);
                set_condition(
                    &mut st.conditions,
                    new_condition(
                        condition_types::SCENARIO_READY,
                        ConditionStatus::True,
                        reasons::SETUP_SUCCEEDED,
                        format!("{total} setup step(s) done"),
                        None,
                        now,
                    ),
                );
            })
            .await?;
        if let Some(began) = began {
            ctx.metrics
                .setup_duration
                .observe(now.duration_since(began).as_secs_f64().max(0.0));
        }
        ctx.metrics
            .sessions
            .get_or_create(&SessionLabels {
                phase: "Ready".to_owned(),
                reason: String::new(),
            })
            .inc();
        ctx.event(
            &session,
            EventType::Normal,
            reasons::SETUP_SUCCEEDED,
            "Setup",
            format!("{total} setup step(s) done"),
        )
        .await;
        Ok(())
    }

    async fn failed(&self, step: &str, message: String) -> std::result::Result<(), Stale> {
        let now = Timestamp::now();
        let step = step.to_owned();
        let msg = message.clone();
        let session = self
            .update(|st| {
                st.message = Some(msg.clone());
                let progress = st.setup.get_or_insert_with(SetupProgress::default);
                progress.step = Some(step.clone());
                progress.finished_at = Some(Time(now));
                set_condition(
                    &mut st.conditions,
                    new_condition(
                        condition_types::SCENARIO_READY,
                        ConditionStatus::False,
                        reasons::SETUP_FAILED,
                        msg.clone(),
                        None,
                        now,
                    ),
                );
            })
            .await?;
        warn!(message = %message, "setup failed");
        self.shared
            .ctx
            .event(
                &session,
                EventType::Warning,
                reasons::SETUP_FAILED,
                "Setup",
                message,
            )
            .await;
        Ok(())
    }

    /// Read-modify-write of the Session's status while it is still Initializing on this
    /// cluster; retried on conflicts. Never touches `tasks`.
    async fn update(&self, change: impl FnMut(&mut SessionStatus)) -> std::result::Result<Session, Stale> {
        let mut change = change;
        let api: Api<Session> = Api::namespaced(self.shared.ctx.client.clone(), &self.namespace);
        let cluster = self.cluster.name_any();
        loop {
            let session = match api.get_opt(&self.name).await {
                Ok(Some(s)) => s,
                Ok(None) => return Err(Stale),
                Err(e) => {
                    warn!(error = %e, "reading the session for setup progress failed; retrying");
                    tokio::time::sleep(self.shared.ctx.config.retry_base.max(Duration::from_millis(200)))
                        .await;
                    continue;
                }
            };
            let status = session.status.clone().unwrap_or_default();
            if session.uid().as_deref() != Some(self.uid.as_str())
                || session.meta().deletion_timestamp.is_some()
                || status.phase != SessionPhase::Initializing
                || status.cluster.as_deref() != Some(cluster.as_str())
            {
                return Err(Stale);
            }
            let mut next = status.clone();
            change(&mut next);
            // The spec (a raised duration) is the reconcile's to observe, not the setup's.
            summarise(&mut next, status.observed_generation, Timestamp::now());
            let Some(diff) = merge_diff(&owned_json(&status, false), &owned_json(&next, false)) else {
                return Ok(session);
            };
            let patch = json!({"metadata": {"resourceVersion": session.resource_version()}, "status": diff});
            match api
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => return Ok(updated),
                Err(e) if conflict(&e) => {}
                Err(e) => {
                    warn!(error = %e, "writing setup progress failed; retrying");
                    tokio::time::sleep(self.shared.ctx.config.retry_base.max(Duration::from_millis(200)))
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_diff_writes_only_changes_and_nulls_removed_fields() {
        let from =
            json!({"phase": "WaitingForCluster", "queuePosition": 3, "setup": {"completed": 1, "step": "a"}});
        let to = json!({"phase": "WaitingForCluster", "queuePosition": 2, "setup": {"completed": 2}});
        assert_eq!(
            merge_diff(&from, &to),
            Some(json!({"queuePosition": 2, "setup": {"completed": 2, "step": null}}))
        );
        assert_eq!(merge_diff(&from, &from), None);
    }

    #[test]
    fn owned_status_leaves_tasks_alone_unless_initialising_them() {
        let status = SessionStatus {
            tasks: vec![cks_api::session::TaskStatus {
                id: "task-1".into(),
                state: Default::default(),
                attempts: 2,
                last_run: None,
                last_run_time: None,
            }],
            ..SessionStatus::default()
        };
        assert!(owned_json(&status, false).get("tasks").is_none());
        assert!(owned_json(&status, true).get("tasks").is_some());
    }

    #[test]
    fn ready_condition_follows_the_phase() {
        let now = Timestamp::from_second(10).unwrap();
        let mut status = SessionStatus {
            phase: SessionPhase::Ready,
            ..SessionStatus::default()
        };
        summarise(&mut status, Some(2), now);
        assert!(cks_api::conditions::is_condition_true(
            &status.conditions,
            condition_types::READY
        ));
        assert_eq!(status.observed_generation, Some(2));
        status.phase = SessionPhase::Expired;
        summarise(&mut status, Some(2), now);
        assert!(!cks_api::conditions::is_condition_true(
            &status.conditions,
            condition_types::READY
        ));
    }
}
