//! What each Session's own reconcile does: the admission checks that fail a Session, expiry
//! and extension, noticing a lost cluster, starting the setup task, and releasing the cluster
//! on the end or deletion. Claims are the pool allocator's ([`super::allocator`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cks_api::cluster_pool::ClusterPool;
use cks_api::conditions::{ConditionStatus, find_condition, new_condition, set_condition};
use cks_api::names::{annotations, condition_types, finalizers};
use cks_api::practice_cluster::{PracticeCluster, PracticeClusterPhase};
use cks_api::session::{Session, SessionPhase, SessionStatus};
use cks_scenarios::Scenario;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use super::setup_task::SetupJob;
use super::status::{self, Written};
use super::{SetupTask, Shared, admission, allocator, lock, queue, reasons};
use crate::context::Context;
use crate::error::{Result, kube_err};

/// After a write lost a race: the winner's write event brings the next reconcile (the
/// controller runs it after this one even if it arrived meanwhile); the requeue is a safety net.
fn retry_after_conflict() -> Action {
    Action::requeue(Duration::from_secs(5))
}

/// True for a write that lost a race with another writer.
fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

pub(super) struct Reconciler {
    shared: Arc<Shared>,
    session: Session,
    status: SessionStatus,
    namespace: String,
    name: String,
    uid: String,
    now: Timestamp,
}

impl Reconciler {
    pub(super) fn new(session: Session, shared: Arc<Shared>) -> Self {
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

    fn holds(&self, pc: &PracticeCluster) -> bool {
        pc.spec
            .claim_ref
            .as_ref()
            .is_some_and(|c| c.uid.as_deref() == Some(self.uid.as_str()))
    }

    fn sessions_api(&self) -> Api<Session> {
        Api::namespaced(self.ctx().client.clone(), &self.namespace)
    }

    fn clusters_api(&self) -> Api<PracticeCluster> {
        Api::namespaced(self.ctx().client.clone(), &self.namespace)
    }

    pub(super) async fn run(mut self) -> Result<Action> {
        if self.session.meta().deletion_timestamp.is_some() {
            return self.finalize().await;
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
        if queue::is_queued(phase) {
            return self.admit().await;
        }
        // The allocator adds the finalizer with its claim; one missing from an active
        // Session (a claim written by hand) is added before anything else.
        if !self
            .session
            .finalizers()
            .iter()
            .any(|f| f == finalizers::SESSION_RELEASE)
        {
            return self.add_finalizer().await;
        }
        self.active().await
    }

    /// Replaces the Session's finalizers with `list`, guarded by the version read.
    async fn write_finalizers(&self, list: Vec<String>) -> kube::Result<Session> {
        let patch =
            json!({"metadata": {"finalizers": list, "resourceVersion": self.session.resource_version()}});
        self.sessions_api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }

    async fn add_finalizer(&self) -> Result<Action> {
        let mut list = self.session.finalizers().to_vec();
        list.push(finalizers::SESSION_RELEASE.to_owned());
        match self.write_finalizers(list).await {
            Ok(_) => Ok(Action::await_change()),
            Err(e) if conflict(&e) => Ok(Action::await_change()),
            Err(e) => Err(kube_err("add finalizer to", "Session", self.name.clone())(e)),
        }
    }

    /// Writes the owned status fields that differ from what was read, guarded by the
    /// resourceVersion read. Returns false when another writer came first.
    async fn write(&mut self, next: SessionStatus) -> Result<bool> {
        let generation = self.session.meta().generation;
        let written = status::write(&self.sessions_api(), &self.session, next, generation, self.now).await?;
        match written {
            Written::Unchanged => Ok(true),
            Written::Stored(updated) => {
                self.status = updated.status.clone().unwrap_or_default();
                self.session = *updated;
                Ok(true)
            }
            Written::Conflict => Ok(false),
        }
    }

    fn count(&self, phase: SessionPhase, reason: &str) {
        super::count(self.ctx(), phase, reason);
    }

    /// Pending → Failed with a reason, a Warning event, nothing claimed.
    async fn fail(&mut self, reason: &str, message: String) -> Result<Action> {
        let was_waiting = queue::is_queued(self.status.phase);
        let mut next = self.status.clone();
        next.phase = SessionPhase::Failed;
        next.reason = Some(reason.to_owned());
        next.message = Some(message.clone());
        next.queue_position = None;
        next.ended_at = Some(Time(self.now));
        if !self.write(next).await? {
            return Ok(retry_after_conflict());
        }
        info!(reason, message = %message, "session failed");
        self.ctx()
            .event(&self.session, EventType::Warning, reason, "Admit", message)
            .await;
        self.count(SessionPhase::Failed, reason);
        if was_waiting {
            allocator::poke(&self.shared, Shared::pool_of(&self.session));
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
        admission::scenario(self.ctx().scenarios.as_ref(), &self.session)
    }

    /// Pending or WaitingForCluster: the checks, in order; a Session that passes is the
    /// pool's allocator's to serve.
    async fn admit(&mut self) -> Result<Action> {
        let scenario = self.scenario();
        let pool = self.get_pool().await?;
        let user_active = {
            let sessions = self.shared.sessions.state();
            admission::user_active(&self.session, sessions.iter().filter_map(|g| g.0.as_ref().ok()))
        };
        let refusal = admission::refusal(
            &self.session,
            scenario.as_deref().map_err(String::as_str),
            pool.as_ref(),
            &user_active,
            self.ctx().config.max_sessions_per_user,
        );
        if let Some(refusal) = refusal {
            return self.fail(refusal.reason, refusal.message).await;
        }
        allocator::poke(&self.shared, Shared::pool_of(&self.session));
        Ok(Action::await_change())
    }

    /// Initializing or Ready: expiry, extension, the cluster's health, setup.
    async fn active(&mut self) -> Result<Action> {
        let Some(cluster) = self.status.cluster.clone() else {
            return self
                .lose("the session is active but names no cluster".to_owned())
                .await;
        };
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
        if !self.write(next).await? {
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
        if !self.write(next).await? {
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
        if !self.write(next).await? {
            return Ok(retry_after_conflict());
        }
        info!(phase = ?phase, reason, "session ended");
        self.ctx()
            .event(&self.session, type_, reason, "Release", message)
            .await;
        self.count(phase, reason);
        if was_waiting {
            allocator::poke(&self.shared, Shared::pool_of(&self.session));
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
        match self.write_finalizers(list).await {
            Ok(_) => {}
            Err(e) if conflict(&e) => return Ok(retry_after_conflict()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err("remove finalizer from", "Session", self.name.clone())(e)),
        }
        lock(&self.shared.setups).remove(&self.uid);
        if was_active {
            self.count(SessionPhase::Ended, "Deleted");
        }
        if queue::is_queued(self.status.phase) {
            allocator::poke(&self.shared, Shared::pool_of(&self.session));
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
