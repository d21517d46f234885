//! One allocator per ClusterPool: a single loop that matches the pool's FIFO queue of
//! Sessions to its Available clusters in one pass over the caches, and writes each match.
//!
//! A pass runs whenever a Session or cluster of the pool changes (the watches poke the
//! pool's [`Allocators`] entry; pokes arriving during a pass are coalesced into the next). It
//! takes the queued Sessions — Pending or WaitingForCluster, no cluster, not being deleted —
//! in `(creationTimestamp, name)` order, skips those the [`admission`](super::admission)
//! checks refuse (their reconcile records the failure), and gives each the next Available
//! cluster by name. A claim is three writes, each guarded by the resourceVersion it read:
//!
//! 1. the Session's metadata: the release finalizer and [`annotations::CLAIM_INTENT`] (this
//!    allocator and the time). Only one writer can get past this for a given version of the
//!    Session, so two operators never both claim for it; an intent of another allocator
//!    younger than [`CLAIM_ABANDONED_AFTER`] makes this one leave the Session alone.
//! 2. the cluster's `spec.claimRef` — the claim itself; only one Session can win a cluster.
//! 3. the Session's status: Initializing (or Ready), the cluster, expiry, terminals, tasks.
//!
//! A conflict on (1) or (2) ends that pair's attempt; the next pass plans it again with what
//! the caches then show, and the Session keeps its place at the head of the queue. A Session
//! whose cluster names it but whose status does not (a claim cut off between (2) and (3)) is
//! completed with that cluster. Sessions left waiting get their queue position, rewritten at
//! most once per [`WAKE_INTERVAL`] (a newly queued Session at once).
//!
//! Claims run as tasks next to the loop, so a pass never waits for the API server. The
//! caches lag the writes by a watch round-trip: until they show a version past the one a
//! write replaced, the Session or cluster is "in flight" and no pass plans it. That record
//! ([`InFlight`]) is the only thing kept between passes, and it is not state: after a restart
//! the caches show every write that landed, and the guards refuse any plan made from a stale
//! view.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cks_api::cluster_pool::ClusterPool;
use cks_api::names::{annotations, finalizers};
use cks_api::practice_cluster::PracticeCluster;
use cks_api::session::{Session, SessionPhase};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, info, info_span, warn};

use super::status::{self, Written};
use super::{CLAIM_ABANDONED_AFTER, Shared, WAKE_INTERVAL, admission, queue, reasons};
use crate::context::Context;

/// A pool: namespace and name.
pub type PoolKey = (String, String);

/// Most claims and position writes one allocator has in flight at once; the rest wait for
/// the next pass (a burst is served in waves of this many). More would only queue in the
/// client (`--max-api-requests`), and each running claim keeps a spare cluster back from
/// younger Sessions until it is done (see [`Busy::Claiming`]).
const MAX_TASKS: usize = 64;

/// An in-flight record is dropped after this long even if the cache never showed the write
/// (a broken watch): the guarded writes keep a stale plan harmless.
const IN_FLIGHT_LIMIT: Duration = Duration::from_secs(30);

/// The allocators of one Session controller, started on a pool's first poke.
#[derive(Default)]
pub struct Allocators {
    wakers: Mutex<HashMap<PoolKey, Arc<Notify>>>,
    tasks: Mutex<JoinSet<()>>,
    /// Set by [`Allocators::stop`]: no allocator starts again.
    stopped: AtomicBool,
}

impl std::fmt::Debug for Allocators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocators")
            .field("pools", &super::lock(&self.wakers).len())
            .finish()
    }
}

impl Allocators {
    /// Stops every allocator for good (their claim tasks finish on their own: each is a few
    /// guarded writes, safe to interrupt).
    pub fn stop(&self) {
        let mut wakers = super::lock(&self.wakers);
        self.stopped.store(true, Ordering::Relaxed);
        wakers.clear();
        super::lock(&self.tasks).abort_all();
    }
}

/// Makes the allocator of `pool` run a pass soon, starting it if needed.
pub fn poke(shared: &Arc<Shared>, pool: PoolKey) {
    let mut wakers = super::lock(&shared.allocators.wakers);
    // Read under the lock `stop` sets it under: no allocator starts after it.
    if shared.allocators.stopped.load(Ordering::Relaxed) {
        return;
    }
    let waker = wakers.entry(pool.clone()).or_insert_with(|| {
        let waker = Arc::new(Notify::new());
        let span = info_span!("allocator", namespace = %pool.0, pool = %pool.1);
        super::lock(&shared.allocators.tasks)
            .spawn(run(Arc::downgrade(shared), pool, waker.clone()).instrument(span));
        waker
    });
    waker.notify_one();
}

/// A claim or position write of a Session running as a task.
struct Task {
    handle: JoinHandle<Outcome>,
}

impl std::future::Future for Task {
    type Output = Outcome;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outcome> {
        std::pin::Pin::new(&mut self.handle)
            .poll(cx)
            .map(|joined| joined.unwrap_or_default())
    }
}

/// What a task wrote: per object, the resourceVersions its writes replaced.
#[derive(Debug, Default)]
struct Outcome {
    session: Option<(String, Vec<String>)>,
    cluster: Option<(String, Vec<String>)>,
    /// The Session holds a cluster now (its claim was written).
    claimed: bool,
}

/// Sessions (by uid) and clusters (by name) a task of this allocator is writing, or whose
/// latest write the cache does not show yet.
#[derive(Debug, Default)]
struct InFlight {
    sessions: HashMap<String, Pending>,
    clusters: HashMap<String, Pending>,
}

#[derive(Debug)]
struct Pending {
    /// A task is writing it.
    running: bool,
    /// The task claims a cluster for this Session (which may fail).
    claim: bool,
    /// A Session whose write does not give it a cluster (a queue position, a claim that
    /// failed): it keeps its place in the queue, and a cluster, while it is in flight.
    keeps_place: bool,
    /// Versions a write of this allocator replaced: the cache is behind while it shows one.
    replaced: HashSet<String>,
    since: Instant,
}

impl Pending {
    /// A task starts writing it (what its writes replaced is known when it finishes).
    fn start() -> Self {
        Self {
            running: true,
            claim: false,
            keeps_place: false,
            replaced: HashSet::new(),
            since: Instant::now(),
        }
    }

    fn blocks(&self, cached_version: Option<&str>) -> bool {
        self.running || cached_version.is_some_and(|v| self.replaced.contains(v))
    }
}

impl InFlight {
    fn finish(map: &mut HashMap<String, Pending>, done: Option<(String, Vec<String>)>, claimed: bool) {
        if let Some((key, replaced)) = done
            && let Some(pending) = map.get_mut(&key)
        {
            pending.running = false;
            pending.keeps_place = !claimed;
            pending.replaced.extend(replaced);
        }
    }

    /// Forgets what the caches have caught up with (or what they never will).
    fn forget_seen(
        &mut self,
        sessions: &HashMap<String, Cached<Session>>,
        clusters: &HashMap<String, Cached<PracticeCluster>>,
    ) {
        self.sessions.retain(|uid, p| {
            p.since.elapsed() < IN_FLIGHT_LIMIT
                && p.blocks(
                    sessions
                        .get(uid)
                        .and_then(|s| s.meta().resource_version.as_deref()),
                )
        });
        self.clusters.retain(|name, p| {
            p.since.elapsed() < IN_FLIGHT_LIMIT
                && p.blocks(
                    clusters
                        .get(name)
                        .and_then(|c| c.meta().resource_version.as_deref()),
                )
        });
    }
}

/// The loop of one pool's allocator.
///
/// It holds its controller's state only during a pass: once the controller is gone (stopped,
/// or its task dropped), the loop ends with it.
async fn run(shared: Weak<Shared>, pool: PoolKey, wake: Arc<Notify>) {
    let Some((mut ready, identity)) = shared.upgrade().map(|s| (s.ready.clone(), s.identity.clone())) else {
        return;
    };
    if ready.wait_for(|ready| *ready).await.is_err() {
        return;
    }
    let mut allocator = PoolAllocator {
        shared,
        pool,
        identity,
        in_flight: InFlight::default(),
        tasks: FuturesUnordered::new(),
        positions_at: None,
        refresh_at: None,
    };
    loop {
        let Some(shared) = allocator.shared.upgrade() else {
            return;
        };
        allocator.pass(&shared);
        drop(shared);
        let refresh = allocator.refresh_at;
        tokio::select! {
            () = wake.notified() => {}
            Some(done) = allocator.tasks.next(), if !allocator.tasks.is_empty() => {
                allocator.finished(done);
                // Collect every task that finished meanwhile before planning again.
                while let Some(Some(done)) = futures::FutureExt::now_or_never(allocator.tasks.next()) {
                    allocator.finished(done);
                }
            }
            () = sleep_until(refresh) => allocator.refresh_at = None,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

struct PoolAllocator {
    shared: Weak<Shared>,
    pool: PoolKey,
    identity: String,
    in_flight: InFlight,
    tasks: FuturesUnordered<Task>,
    /// When waiting Sessions' positions were last written.
    positions_at: Option<Instant>,
    /// When positions that moved are due to be written.
    refresh_at: Option<Instant>,
}

/// Whether a Session is in flight (see [`InFlight`]), and how it counts in a pass.
enum Busy {
    No,
    /// Its claim was written (or its status is being completed): it needs no cluster.
    Served,
    /// A claim of ours is running for it. Its planned cluster is out of `free`; as the claim
    /// may still fail, it also keeps its place, and a cluster, until the claim is done.
    Claiming,
    /// A write that does not give it a cluster: it keeps its place (and a cluster).
    KeepsPlace,
}

/// An object of a cache that deserialized (the only ones a pass keeps).
#[derive(Clone)]
struct Cached<K>(Arc<DeserializeGuard<K>>);

impl<K: Clone> Cached<K> {
    /// A copy to hand to a task.
    fn object(&self) -> Arc<K> {
        Arc::new((**self).clone())
    }
}

impl<K> std::ops::Deref for Cached<K> {
    type Target = K;

    fn deref(&self) -> &K {
        match &self.0.0 {
            Ok(object) => object,
            Err(_) => unreachable!("a pass keeps only objects that deserialized"),
        }
    }
}

/// What a pass decided for one Session.
enum Plan {
    /// Claim this cluster for it.
    Claim(Arc<Session>, Arc<PracticeCluster>),
    /// Its cluster names it already: record the claim in its status.
    Complete(Arc<Session>, Arc<PracticeCluster>),
    /// Write its place in the queue.
    Position(Arc<Session>, usize),
}

impl PoolAllocator {
    fn finished(&mut self, done: Outcome) {
        InFlight::finish(&mut self.in_flight.sessions, done.session, done.claimed);
        InFlight::finish(&mut self.in_flight.clusters, done.cluster, done.claimed);
    }

    fn pass(&mut self, shared: &Arc<Shared>) {
        let (namespace, pool_name) = &self.pool;
        let pool = shared.pools.state().into_iter().find_map(|g| {
            g.0.as_ref()
                .ok()
                .filter(|p| {
                    p.name_any() == *pool_name && p.namespace().as_deref() == Some(namespace.as_str())
                })
                .cloned()
        });
        // Without its pool, a Session's reconcile fails it (PoolNotFound).
        let Some(pool) = pool else { return };
        let pool = Arc::new(pool);
        let all_sessions = shared.sessions.state();
        let mut waiting_total = 0usize;
        // The caches' own objects, shared (a pass copies only the Sessions it writes).
        let mut sessions: HashMap<String, Cached<Session>> = HashMap::new();
        let mut user_active: HashMap<(String, String), Vec<queue::QueueKey>> = HashMap::new();
        for guard in &all_sessions {
            let Ok(s) = &guard.0 else { continue };
            let phase = s.status.as_ref().map(|st| st.phase).unwrap_or_default();
            waiting_total += usize::from(queue::is_waiting(phase));
            if s.namespace().as_deref() != Some(namespace.as_str()) {
                continue;
            }
            if admission::counts_for_user(s) {
                user_active
                    .entry(admission::user_of(s))
                    .or_default()
                    .push(queue::QueueKey::of(s));
            }
            if s.spec.pool == *pool_name
                && let Some(uid) = s.uid()
            {
                sessions.insert(uid, Cached(guard.clone()));
            }
        }
        shared
            .ctx
            .metrics
            .sessions_waiting
            .set(i64::try_from(waiting_total).unwrap_or(i64::MAX));
        let clusters: HashMap<String, Cached<PracticeCluster>> = shared
            .clusters
            .state()
            .into_iter()
            .filter(|g| {
                g.0.as_ref().is_ok_and(|pc| {
                    pc.spec.pool == *pool_name && pc.namespace().as_deref() == Some(namespace.as_str())
                })
            })
            .map(|g| (g.name_any(), Cached(g)))
            .collect();
        self.in_flight.forget_seen(&sessions, &clusters);

        let session_busy =
            |s: &Session, in_flight: &InFlight| match s.uid().and_then(|uid| in_flight.sessions.get(&uid)) {
                Some(p) if p.blocks(s.meta().resource_version.as_deref()) => {
                    if p.keeps_place {
                        Busy::KeepsPlace
                    } else if p.running && p.claim {
                        Busy::Claiming
                    } else {
                        Busy::Served
                    }
                }
                _ => Busy::No,
            };
        let cluster_busy = |pc: &PracticeCluster, in_flight: &InFlight| {
            in_flight
                .clusters
                .get(&pc.name_any())
                .is_some_and(|p| p.blocks(pc.meta().resource_version.as_deref()))
        };
        // Clusters whose claim names a Session, by that Session's uid.
        let mut held: HashMap<String, Cached<PracticeCluster>> = HashMap::new();
        for pc in clusters.values() {
            if let Some(uid) = pc.spec.claim_ref.as_ref().and_then(|c| c.uid.clone()) {
                held.insert(uid, pc.clone());
            }
        }
        // A cluster an active Session's status names is not free even without its claim (that
        // Session's reconcile finds it lost first).
        let named: HashSet<&str> = sessions
            .values()
            .filter_map(|s| s.status.as_ref())
            .filter(|st| st.phase.is_active())
            .filter_map(|st| st.cluster.as_deref())
            .collect();
        let mut free: VecDeque<Cached<PracticeCluster>> = {
            let mut free: Vec<_> = clusters
                .values()
                .filter(|pc| {
                    queue::is_candidate(pc, pool_name)
                        && !cluster_busy(pc, &self.in_flight)
                        && !named.contains(pc.name_any().as_str())
                })
                .cloned()
                .collect();
            free.sort_by_key(|pc| pc.name_any());
            free.into()
        };
        let mut queued: Vec<Cached<Session>> = sessions
            .values()
            .filter(|s| {
                let st = s.status.as_ref();
                s.meta().deletion_timestamp.is_none()
                    && queue::is_queued(st.map(|st| st.phase).unwrap_or_default())
                    && st.and_then(|st| st.cluster.as_ref()).is_none()
            })
            .cloned()
            .collect();
        queued.sort_by_cached_key(|s| queue::QueueKey::of(s));

        let now = Timestamp::now();
        let scenarios = shared.ctx.scenarios.clone();
        let limit = shared.ctx.config.max_sessions_per_user;
        let mut plans = Vec::new();
        let mut left_waiting = Vec::new();
        let mut eligible = Vec::new();
        // Sessions this pass had to leave to a write in flight or to another allocator: a
        // later pass must look again even if no event comes (an abandoned intent, a write
        // whose effect the cache never shows).
        let mut blocked = false;
        let room = MAX_TASKS.saturating_sub(self.tasks.len());
        for s in queued {
            match session_busy(&s, &self.in_flight) {
                Busy::No => {}
                Busy::Served => {
                    blocked = true;
                    continue;
                }
                // Should the claim under way fail (its cluster taken meanwhile), a cluster
                // freed since must still be this Session's, not a younger one's.
                Busy::Claiming | Busy::KeepsPlace => {
                    blocked = true;
                    eligible.push((s, false));
                    continue;
                }
            }
            let uid = s.uid().unwrap_or_default();
            if let Some(pc) = held.get(&uid) {
                if !cluster_busy(pc, &self.in_flight) {
                    plans.push(Plan::Complete(s.object(), pc.object()));
                }
                continue;
            }
            if self.claimed_elsewhere(&s, now) {
                // Another allocator is serving it: it keeps its place and a cluster, so no
                // later Session overtakes it here.
                blocked = true;
                eligible.push((s, false));
                continue;
            }
            let scenario = admission::scenario(scenarios.as_ref(), &s);
            let user = user_active
                .get(&admission::user_of(&s))
                .map_or(&[][..], Vec::as_slice);
            if admission::refusal(
                &s,
                scenario.as_deref().map_err(String::as_str),
                Some(&pool),
                user,
                limit,
            )
            .is_some()
            {
                continue;
            }
            eligible.push((s, true));
        }
        // `ours`: this pass may write the Session; the others (in flight, or served by
        // another allocator) only keep their place and take a cluster if one is left.
        for (s, ours) in eligible {
            match free.pop_front() {
                Some(pc) if ours => plans.push(Plan::Claim(s.object(), pc.object())),
                Some(_) => {}
                None => left_waiting.push((s, ours)),
            }
        }
        tracing::debug!(
            queued = left_waiting.len(),
            plans = plans.len(),
            free = free.len(),
            clusters = clusters.len(),
            candidates = clusters
                .values()
                .filter(|pc| queue::is_candidate(pc, pool_name))
                .count(),
            named = named.len(),
            in_flight_sessions = self.in_flight.sessions.len(),
            in_flight_clusters = self.in_flight.clusters.len(),
            blocked,
            "pass"
        );
        if blocked {
            let at = Instant::now() + RECHECK;
            self.refresh_at = Some(self.refresh_at.map_or(at, |r| r.min(at)));
        }
        // Positions: a newly queued Session learns its place at once; moved places are
        // rewritten at most once per WAKE_INTERVAL (each is a write per waiting Session).
        let due = self.positions_at.is_none_or(|at| at.elapsed() >= WAKE_INTERVAL);
        let mut moved = false;
        for (index, (s, ours)) in left_waiting.into_iter().enumerate() {
            if !ours {
                continue;
            }
            let position = index + 1;
            let st = s.status.clone().unwrap_or_default();
            if st.phase == SessionPhase::WaitingForCluster
                && st.queue_position == i32::try_from(position).ok()
                && st.reason.as_deref() == Some(reasons::NO_CLUSTER_AVAILABLE)
            {
                continue;
            }
            if st.phase == SessionPhase::Pending || due {
                plans.push(Plan::Position(s.object(), position));
            } else {
                moved = true;
            }
        }
        if moved && let Some(due_at) = self.positions_at.map(|at| at + WAKE_INTERVAL) {
            self.refresh_at = Some(self.refresh_at.map_or(due_at, |r| r.min(due_at)));
        }
        let mut positions_written = false;
        for plan in plans.into_iter().take(room) {
            positions_written |= matches!(plan, Plan::Position(..));
            self.start(shared, plan, &pool);
        }
        if positions_written {
            self.positions_at = Some(Instant::now());
        }
    }

    /// True when another allocator recorded an intent on `s` recently enough that its claim
    /// may still be under way.
    fn claimed_elsewhere(&self, s: &Session, now: Timestamp) -> bool {
        let Some(intent) = s.annotations().get(annotations::CLAIM_INTENT) else {
            return false;
        };
        let Some((by, since)) = parse_intent(intent) else {
            return false;
        };
        by != self.identity && now.duration_since(since).unsigned_abs() < CLAIM_ABANDONED_AFTER
    }

    fn start(&mut self, shared: &Shared, plan: Plan, pool: &Arc<ClusterPool>) {
        // A task holds the context, not the controller: once the controller is gone, its
        // allocator loops end (see `run`) while the writes under way finish on their own.
        let ctx = shared.ctx.clone();
        let (session, cluster) = match &plan {
            Plan::Claim(s, pc) | Plan::Complete(s, pc) => (s.clone(), Some(pc.clone())),
            Plan::Position(s, _) => (s.clone(), None),
        };
        let mut pending = Pending::start();
        pending.keeps_place = matches!(plan, Plan::Position(..));
        pending.claim = matches!(plan, Plan::Claim(..));
        self.in_flight
            .sessions
            .insert(session.uid().unwrap_or_default(), pending);
        if let Some(pc) = &cluster {
            self.in_flight.clusters.insert(pc.name_any(), Pending::start());
        }
        let pool_name = self.pool.1.clone();
        let identity = self.identity.clone();
        let pool = pool.clone();
        let span = info_span!("claim", session = %session.name_any());
        let handle = tokio::spawn(
            async move {
                match plan {
                    Plan::Claim(s, pc) => claim(&ctx, &identity, s, pc, Some(&pool)).await,
                    Plan::Complete(s, pc) => complete(&ctx, s, pc, Some(&pool), Vec::new()).await,
                    Plan::Position(s, position) => set_position(&ctx, s, &pool_name, position).await,
                }
            }
            .instrument(span),
        );
        self.tasks.push(Task { handle });
    }
}

/// How soon a pass that had to leave Sessions to in-flight writes or another allocator runs
/// again when no event comes first.
const RECHECK: Duration = Duration::from_secs(1);

/// `{identity} {RFC 3339 time}` of a claim intent.
fn intent(identity: &str, now: Timestamp) -> String {
    format!("{identity} {now}")
}

fn parse_intent(value: &str) -> Option<(&str, Timestamp)> {
    let (by, since) = value.rsplit_once(' ')?;
    Some((by, since.parse().ok()?))
}

fn sessions_api(ctx: &Context, s: &Session) -> Api<Session> {
    Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default())
}

fn clusters_api(ctx: &Context, s: &Session) -> Api<PracticeCluster> {
    Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default())
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

/// Writes (1) and (2) of a claim (see the module doc), then hands over to [`complete`].
async fn claim(
    ctx: &Arc<Context>,
    identity: &str,
    session: Arc<Session>,
    pc: Arc<PracticeCluster>,
    pool: Option<&ClusterPool>,
) -> Outcome {
    let uid = session.uid().unwrap_or_default();
    let cluster = pc.name_any();
    // What each write replaced, once it happened (or lost to another writer, whose write the
    // cache will show): until the cache moves past it, no pass plans the object again.
    let mut outcome = Outcome {
        session: Some((uid.clone(), Vec::new())),
        cluster: Some((cluster.clone(), Vec::new())),
        claimed: false,
    };
    let mut list = session.finalizers().to_vec();
    if !list.iter().any(|f| f == finalizers::SESSION_RELEASE) {
        list.push(finalizers::SESSION_RELEASE.to_owned());
    }
    let patch = json!({"metadata": {
        "resourceVersion": session.resource_version(),
        "finalizers": list,
        "annotations": {annotations::CLAIM_INTENT: intent(identity, Timestamp::now())},
    }});
    let marked = match sessions_api(ctx, &session)
        .patch(
            &session.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(marked) => marked,
        Err(e) => {
            if conflict(&e) {
                outcome.session = Some((uid, read(session.as_ref())));
            } else {
                warn!(error = %e, "recording a claim intent failed; planned again on the next pass");
            }
            return outcome;
        }
    };
    outcome.session = Some((uid.clone(), read(session.as_ref())));
    let patch = json!({
        "metadata": {"resourceVersion": pc.resource_version()},
        "spec": {"claimRef": {"name": session.name_any(), "uid": uid}},
    });
    let claimed = match clusters_api(ctx, &session)
        .patch(&cluster, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            if conflict(&e) {
                info!(cluster = %cluster, "cluster changed since cached; the session is planned again");
                outcome.cluster = Some((cluster, read(pc.as_ref())));
            } else {
                warn!(cluster = %cluster, error = %e, "claiming a cluster failed; planned again on the next pass");
            }
            // The Session stays as the intent write left it: the next pass plans it again.
            return outcome;
        }
    };
    info!(cluster = %cluster, "claimed cluster");
    outcome.cluster = Some((cluster, read(pc.as_ref())));
    let done = complete(
        ctx,
        Arc::new(marked),
        Arc::new(claimed),
        pool,
        read(session.as_ref()),
    )
    .await;
    outcome.session = done.session;
    outcome.claimed = true;
    outcome
}

/// The version of `object` as read, as the list of versions a write replaced.
fn read<K: Resource>(object: &K) -> Vec<String> {
    object.meta().resource_version.clone().into_iter().collect()
}

/// The outcome of [`complete`]: `pc` is claimed for the Session (or given back, the Session
/// having moved on); either way the Session no longer waits for a cluster here.
fn recorded(uid: String, replaced: Vec<String>, pc: &PracticeCluster) -> Outcome {
    Outcome {
        session: Some((uid, replaced)),
        cluster: Some((pc.name_any(), Vec::new())),
        claimed: true,
    }
}

/// Write (3) of a claim: the Session's status names `pc`, which names the Session. On a
/// conflict the Session is read again; one no longer waiting for a cluster (ended, deleted,
/// given another) gets `pc` released instead.
async fn complete(
    ctx: &Arc<Context>,
    mut session: Arc<Session>,
    pc: Arc<PracticeCluster>,
    pool: Option<&ClusterPool>,
    mut replaced: Vec<String>,
) -> Outcome {
    let uid = session.uid().unwrap_or_default();
    let api = sessions_api(ctx, &session);
    let scenario = admission::scenario(ctx.scenarios.as_ref(), &session).ok();
    loop {
        let now = Timestamp::now();
        let (next, capped) =
            status::assigned(&session, &pc, pool, scenario.as_ref(), ctx.config.ssh_port, now);
        let generation = session.meta().generation;
        match status::write(&api, &session, next, generation, now).await {
            Ok(Written::Stored(stored)) => {
                replaced.extend(session.resource_version());
                assigned(ctx, &stored, &pc, pool, capped, now);
                return recorded(uid, replaced, &pc);
            }
            Ok(Written::Unchanged) => {
                return recorded(uid, replaced, &pc);
            }
            Ok(Written::Conflict) => {}
            Err(e) => {
                warn!(error = %e, "recording a claim in the session's status failed; completed on a later pass");
                return recorded(uid, replaced, &pc);
            }
        }
        replaced.extend(session.resource_version());
        let fresh = match api.get_opt(&session.name_any()).await {
            Ok(fresh) => fresh.filter(|s| s.uid().as_deref() == Some(uid.as_str())),
            Err(e) => {
                warn!(error = %e, "reading the session after a conflict failed; completed on a later pass");
                return recorded(uid, replaced, &pc);
            }
        };
        let names_it = fresh.as_ref().is_some_and(|s| {
            s.status.as_ref().and_then(|st| st.cluster.as_deref()) == Some(pc.name_any().as_str())
        });
        if names_it {
            // Another allocator recorded this very claim first.
            return recorded(uid, replaced, &pc);
        }
        let claimable = fresh.as_ref().is_some_and(|s| {
            let st = s.status.clone().unwrap_or_default();
            s.meta().deletion_timestamp.is_none() && queue::is_queued(st.phase) && st.cluster.is_none()
        });
        match fresh {
            Some(s) if claimable => session = Arc::new(s),
            _ => {
                // The Session moved on while its cluster was claimed: give the cluster back.
                release_if_held(ctx, &session, &pc.name_any()).await;
                return recorded(uid, replaced, &pc);
            }
        }
    }
}

/// Clears the claim of `cluster` if it still names `session` (guarded by the version read).
async fn release_if_held(ctx: &Context, session: &Session, cluster: &str) {
    let api = clusters_api(ctx, session);
    let uid = session.uid();
    for _ in 0..5 {
        let pc = match api.get_opt(cluster).await {
            Ok(Some(pc)) => pc,
            Ok(None) => return,
            Err(e) => {
                warn!(cluster, error = %e, "reading a cluster to release failed");
                return;
            }
        };
        if pc.spec.claim_ref.as_ref().and_then(|c| c.uid.clone()) != uid {
            return;
        }
        let patch =
            json!({"metadata": {"resourceVersion": pc.resource_version()}, "spec": {"claimRef": null}});
        match api
            .patch(cluster, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                info!(cluster, "released a cluster claimed for a session that moved on");
                return;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                warn!(cluster, error = %e, "releasing a cluster failed; the cluster controller releases orphaned claims");
                return;
            }
        }
    }
}

/// Metrics and events of a claim recorded in `session`'s status; the events are sent in the
/// background, off the allocation path.
fn assigned(
    ctx: &Arc<Context>,
    session: &Session,
    pc: &PracticeCluster,
    pool: Option<&ClusterPool>,
    capped: bool,
    now: Timestamp,
) {
    let pool_max = pool.map_or(1440, |p| p.spec.sessions.max_duration_minutes);
    let ctx = ctx.clone();
    let phase = session.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase == SessionPhase::Ready {
        ctx.metrics.setup_duration.observe(0.0);
        super::count(&ctx, SessionPhase::Ready, "");
    }
    let created = session.meta().creation_timestamp.as_ref().map_or(now, |t| t.0);
    ctx.metrics
        .allocation_duration
        .observe(now.duration_since(created).as_secs_f64().max(0.0));
    let session = session.clone();
    let cluster = pc.name_any();
    tokio::spawn(async move {
        ctx.event(
            &session,
            EventType::Normal,
            reasons::CLUSTER_CLAIMED,
            "Claim",
            format!("cluster {cluster} assigned"),
        )
        .await;
        if capped {
            let note = format!(
                "{} minutes requested; pool {} allows at most {pool_max}",
                session.spec.duration_minutes, session.spec.pool
            );
            ctx.event(
                &session,
                EventType::Normal,
                reasons::DURATION_CAPPED,
                "Claim",
                note,
            )
            .await;
        }
    });
}

/// Writes a waiting Session's place in the queue.
async fn set_position(ctx: &Context, session: Arc<Session>, pool: &str, position: usize) -> Outcome {
    let uid = session.uid().unwrap_or_default();
    let now = Timestamp::now();
    let next = status::waiting(&session, pool, position, now);
    let api = sessions_api(ctx, &session);
    // Only a write that happened leaves the cache behind.
    let replaced = match status::write(&api, &session, next, session.meta().generation, now).await {
        Ok(Written::Stored(_)) => session.resource_version().into_iter().collect(),
        Ok(Written::Unchanged | Written::Conflict) => Vec::new(),
        Err(e) => {
            warn!(error = %e, "writing a queue position failed; written on a later pass");
            Vec::new()
        }
    };
    Outcome {
        session: Some((uid, replaced)),
        cluster: None,
        claimed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_names_its_allocator_and_time() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let value = intent("operator-1 abc", now);
        assert_eq!(parse_intent(&value), Some(("operator-1 abc", now)));
        assert_eq!(parse_intent("garbage"), None);
        assert_eq!(parse_intent("someone not-a-time"), None);
    }

    #[test]
    fn a_pending_write_blocks_until_the_cache_shows_a_later_version() {
        let mut p = Pending::start();
        assert!(p.blocks(Some("5")), "running");
        assert!(p.blocks(Some("6")), "running, whatever the cache shows");
        p.running = false;
        p.replaced.extend(["5".to_owned(), "6".to_owned()]);
        assert!(p.blocks(Some("5")));
        assert!(p.blocks(Some("6")));
        assert!(!p.blocks(Some("7")));
        assert!(!p.blocks(None), "gone from the cache");
    }

    #[test]
    fn a_finished_task_that_wrote_nothing_blocks_nothing() {
        // A claim that only completed a Session's status leaves its cluster as the cache
        // shows it; no later event would ever unblock the cluster.
        let mut p = Pending::start();
        p.running = false;
        assert!(!p.blocks(Some("5")));
    }
}
