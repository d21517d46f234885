//! A Session's setup as a background task: its scenario's setup steps run one after the
//! other on the claimed cluster, progress is written to the Session's status after each step
//! (so a restarted operator resumes after the last completed one), and the Session becomes
//! Ready, or records the failed step. The task stops when the Session moves on.

use std::sync::Arc;
use std::time::Duration;

use cks_api::conditions::{ConditionStatus, new_condition, set_condition};
use cks_api::names::condition_types;
use cks_api::practice_cluster::PracticeCluster;
use cks_api::session::{Session, SessionPhase, SessionStatus, SetupProgress};
use cks_scenarios::Scenario;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::status::{self, Written};
use super::{SetupTask, Shared, lock, reasons, setup};
use crate::access::PracticeAccess;
use crate::error::Error;

/// One Session's setup, run in the background.
pub(super) struct SetupJob {
    pub(super) shared: Arc<Shared>,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) uid: String,
    pub(super) cluster: PracticeCluster,
    pub(super) scenario: std::result::Result<Arc<Scenario>, String>,
    pub(super) from: usize,
}

/// The setup stopped because the Session moved on (ended, deleted, or another cluster).
struct Stale;

impl SetupJob {
    pub(super) async fn run(self) {
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
        super::count(&ctx, SessionPhase::Ready, "");
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
            let observed = status.observed_generation;
            match status::write(&api, &session, next, observed, Timestamp::now()).await {
                Ok(Written::Unchanged) => return Ok(session),
                Ok(Written::Stored(updated)) => return Ok(*updated),
                Ok(Written::Conflict) => {}
                Err(e) => {
                    warn!(error = %e, "writing setup progress failed; retrying");
                    tokio::time::sleep(self.shared.ctx.config.retry_base.max(Duration::from_millis(200)))
                        .await;
                }
            }
        }
    }
}
