//! The ValidationRun controller: checks that a run's Session can be validated, runs the
//! validation engine against the Session's practice cluster, writes one result per rule and
//! the verdict, records the attempt in the Session's `status.tasks`, and prunes old runs.
//!
//! A run goes `Pending → Running → Passed | Failed | Error` and never changes once finished;
//! after that only the task-status bookkeeping (marked by the `TasksRecorded` condition) and
//! pruning touch it. Admission (which Session, scenario and task) and the bookkeeping are pure
//! functions, unit-tested below.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cks_api::conditions::{ConditionStatus, find_condition, new_condition, set_condition};
use cks_api::names::{condition_types, labels};
use cks_api::practice_cluster::PracticeCluster;
use cks_api::session::{Session, SessionPhase, TaskState, TaskStatus};
use cks_api::validation_run::{RuleResult, ValidationRun, ValidationRunPhase, ValidationRunStatus};
use cks_scenarios::{Catalog, Scenario};
use cks_validation::{Engine, TaskSelector, ValidationReport};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::access::PracticeAccess;
use crate::context::Context;
use crate::controller::{Runner, lean_controller};
use crate::error::{Error, Result, kube_err};
use crate::metrics::{RuleLabels, RunLabels};
use crate::status::{self, Guard, managers};

/// Name of this controller in events and metrics.
pub const CONTROLLER: &str = "validationrun";

/// Condition type set on a finished run once its attempt is recorded in the Session's
/// `status.tasks`, so a restarted operator neither loses nor double-counts the attempt.
pub const TASKS_RECORDED: &str = "TasksRecorded";

/// Most results a run's status holds (the CRD schema's bound).
pub const MAX_RESULTS: usize = 500;

/// Failed rules named in a Failed run's message.
const MESSAGE_RULES: usize = 10;

/// Reasons in the `Complete` condition and the events of a run.
pub mod reasons {
    /// The run's Session does not exist.
    pub const SESSION_NOT_FOUND: &str = "SessionNotFound";
    /// The run's Session has expired, ended, failed or is being deleted.
    pub const SESSION_NOT_ACTIVE: &str = "SessionNotActive";
    /// The run's Session has no practice cluster (yet), or no longer holds it.
    pub const SESSION_NOT_READY: &str = "SessionNotReady";
    /// The Session's scenario is not in the catalog (any more).
    pub const SCENARIO_NOT_FOUND: &str = "ScenarioNotFound";
    /// The run's task is not a task of the scenario.
    pub const TASK_NOT_FOUND: &str = "TaskNotFound";
    /// The practice cluster's API or VMs could not be reached to start evaluating.
    pub const CLUSTER_UNREACHABLE: &str = "PracticeClusterUnreachable";
    /// Every rule passed.
    pub const PASSED: &str = "Passed";
    /// Every rule was evaluated and at least one failed.
    pub const FAILED: &str = "Failed";
    /// At least one rule could not be evaluated.
    pub const RULE_ERROR: &str = "RuleError";
}

/// Event reasons of finished runs.
pub mod events {
    /// Normal: every rule passed.
    pub const PASSED: &str = "ValidationPassed";
    /// Warning: a rule failed.
    pub const FAILED: &str = "ValidationFailed";
    /// Warning: the run could not be evaluated, or was refused.
    pub const ERROR: &str = "ValidationError";
}

/// Why a run is refused before any rule runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// One of [`reasons`].
    pub reason: &'static str,
    /// What is wrong, for the student or operator.
    pub message: String,
}

impl Rejection {
    fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}

/// What an admitted run evaluates.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The Session's scenario.
    pub scenario: Arc<Scenario>,
    /// The PracticeCluster the Session holds.
    pub cluster: String,
    /// Ids (`task-N`) of the tasks checked, in scenario order.
    pub tasks: Vec<String>,
}

/// The value of the run's `cks.io/task` label: the scenario's id for the task when it
/// resolves (`01` and `1` both become `task-1`, so they are pruned together), else the spec's
/// text; empty for a run of every task.
pub fn task_label(task: &str, scenario: Option<&Scenario>) -> String {
    if task.is_empty() {
        return String::new();
    }
    scenario
        .and_then(|s| s.task(task))
        .map_or_else(|| task.to_owned(), |t| t.id.clone())
}

/// Decides whether a run on `session` for `task` can be evaluated. `cluster` is the
/// PracticeCluster the Session's status names, if it exists.
pub fn admit(
    session_name: &str,
    task: &str,
    session: Option<&Session>,
    cluster: Option<&PracticeCluster>,
    catalog: Option<&Catalog>,
) -> Result<Admitted, Rejection> {
    let Some(session) = session else {
        return Err(Rejection::new(
            reasons::SESSION_NOT_FOUND,
            format!("Session {session_name} does not exist"),
        ));
    };
    let status = session.status.clone().unwrap_or_default();
    if session.meta().deletion_timestamp.is_some() || status.phase.is_terminal() {
        let phase = if status.phase.is_terminal() {
            format!("{:?}", status.phase)
        } else {
            "being deleted".to_owned()
        };
        return Err(Rejection::new(
            reasons::SESSION_NOT_ACTIVE,
            format!("Session {session_name} is {phase}; start a new session to validate again"),
        ));
    }
    let cluster_name = match (status.phase, status.cluster.as_deref()) {
        (SessionPhase::Initializing | SessionPhase::Ready, Some(c)) => c,
        _ => {
            return Err(Rejection::new(
                reasons::SESSION_NOT_READY,
                format!(
                    "Session {session_name} is {:?} and has no practice cluster yet; validate once it is Ready",
                    status.phase
                ),
            ));
        }
    };
    // A released cluster may already serve another student: never look at it for this one.
    let holds = cluster.is_some_and(|pc| {
        pc.spec.claim_ref.as_ref().is_some_and(|claim| {
            claim.name == session_name
                && match (claim.uid.as_deref(), session.meta().uid.as_deref()) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    });
    if !holds {
        return Err(Rejection::new(
            reasons::SESSION_NOT_READY,
            format!("PracticeCluster {cluster_name} is missing or not claimed by Session {session_name}"),
        ));
    }
    let scenario_id = &session.spec.scenario;
    let Some(scenario) = catalog.and_then(|c| c.get(scenario_id)) else {
        return Err(Rejection::new(
            reasons::SCENARIO_NOT_FOUND,
            format!("scenario {scenario_id} of Session {session_name} is not in the scenario catalog"),
        ));
    };
    let tasks = if task.is_empty() {
        scenario.tasks.iter().map(|t| t.id.clone()).collect()
    } else {
        match scenario.task(task) {
            Some(t) => vec![t.id.clone()],
            None => {
                let valid: Vec<&str> = scenario.tasks.iter().map(|t| t.id.as_str()).collect();
                return Err(Rejection::new(
                    reasons::TASK_NOT_FOUND,
                    format!(
                        "scenario {scenario_id} has no task {task}; valid tasks: {} (or empty for all)",
                        valid.join(", ")
                    ),
                ));
            }
        }
    };
    Ok(Admitted {
        scenario: scenario.clone(),
        cluster: cluster_name.to_owned(),
        tasks,
    })
}

/// The finished status of an evaluated run.
pub fn evaluated_status(
    report: &ValidationReport,
    generation: Option<i64>,
    start: Time,
    now: Timestamp,
) -> ValidationRunStatus {
    let mut results = report.rule_results();
    let total = results.len();
    results.truncate(MAX_RESULTS);
    let passed = report.passed_count();
    let phase = report.phase();
    let (reason, message) = match phase {
        ValidationRunPhase::Error => {
            let first = report.first_error().expect("an Error report has an error");
            (
                reasons::RULE_ERROR,
                format!(
                    "rule {} of {} could not be evaluated: {}",
                    first.rule, first.task, first.message
                ),
            )
        }
        ValidationRunPhase::Passed => (reasons::PASSED, format!("all {total} rules passed")),
        _ => {
            let failed: Vec<&str> = report
                .results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| r.rule.as_str())
                .collect();
            // The results say everything; the message stays one readable line.
            let mut named = failed[..failed.len().min(MESSAGE_RULES)].join(", ");
            if failed.len() > MESSAGE_RULES {
                named.push_str(&format!(" and {} more", failed.len() - MESSAGE_RULES));
            }
            (
                reasons::FAILED,
                format!("{passed} of {total} rules passed; failed: {named}"),
            )
        }
    };
    let mut status = ValidationRunStatus {
        observed_generation: generation,
        phase,
        message: Some(message.clone()),
        start_time: Some(start),
        completion_time: Some(Time(now)),
        passed_rules: i32::try_from(passed).unwrap_or(i32::MAX),
        total_rules: i32::try_from(total).unwrap_or(i32::MAX),
        results,
        conditions: Vec::new(),
    };
    set_condition(
        &mut status.conditions,
        new_condition(
            condition_types::COMPLETE,
            ConditionStatus::True,
            reason,
            message,
            generation,
            now,
        ),
    );
    status
}

/// The finished status of a run that ended in Error before any rule ran (`start` is set when
/// evaluation had begun, as for an unreachable cluster).
pub fn error_status(
    reason: &str,
    message: &str,
    generation: Option<i64>,
    start: Option<Time>,
    now: Timestamp,
) -> ValidationRunStatus {
    let mut status = ValidationRunStatus {
        observed_generation: generation,
        phase: ValidationRunPhase::Error,
        message: Some(message.to_owned()),
        start_time: start,
        completion_time: Some(Time(now)),
        ..ValidationRunStatus::default()
    };
    set_condition(
        &mut status.conditions,
        new_condition(
            condition_types::COMPLETE,
            ConditionStatus::True,
            reason,
            message,
            generation,
            now,
        ),
    );
    status
}

/// The state a finished run gives `task`: Passed when all its rules passed, Failed when one
/// failed and none errored, `None` (state unchanged) when one errored or no rule ran.
pub fn task_verdict(results: &[RuleResult], task: &str) -> Option<TaskState> {
    let mine: Vec<&RuleResult> = results.iter().filter(|r| r.task == task).collect();
    if mine.is_empty() || mine.iter().any(|r| r.error) {
        None
    } else if mine.iter().all(|r| r.passed) {
        Some(TaskState::Passed)
    } else {
        Some(TaskState::Failed)
    }
}

/// Records a finished run in a Session's task list: per task of `tasks` (scenario ids), one
/// more attempt, `lastRun`/`lastRunTime`, and the verdict's state. An entry whose `lastRun`
/// already names this run is left alone (idempotent); a missing entry is added. Entries are
/// matched by the scenario's task lookup, so `01` and `task-1` are the same task. Returns
/// whether anything changed.
pub fn record_run(
    entries: &mut Vec<TaskStatus>,
    scenario: &Scenario,
    tasks: &[String],
    run: &str,
    results: &[RuleResult],
    finished: &Time,
) -> bool {
    let mut changed = false;
    for task in tasks {
        let same_task = |e: &TaskStatus| e.id == *task || scenario.task(&e.id).is_some_and(|t| t.id == *task);
        let index = match entries.iter().position(same_task) {
            Some(i) => i,
            None => {
                entries.push(TaskStatus {
                    id: task.clone(),
                    state: TaskState::Pending,
                    attempts: 0,
                    last_run: None,
                    last_run_time: None,
                });
                entries.len() - 1
            }
        };
        let entry = &mut entries[index];
        if entry.last_run.as_deref() == Some(run) {
            continue;
        }
        if let Some(state) = task_verdict(results, task) {
            entry.state = state;
        }
        entry.attempts = entry.attempts.saturating_add(1);
        entry.last_run = Some(run.to_owned());
        entry.last_run_time = Some(finished.clone());
        changed = true;
    }
    changed
}

/// Finished runs of one (session, task label) group beyond the newest `keep`, to delete.
/// Runs the Session shows (`shown`: the `lastRun` of its tasks) count first and are never
/// chosen; the rest go by creation time, then name. Creation times have whole seconds and
/// names a random suffix, so two runs of one second are in no real order: only the Session
/// knows which of them was recorded last. Runs not finished are never chosen and do not count.
pub fn runs_to_prune<'a>(
    runs: &'a [ValidationRun],
    task: &str,
    keep: usize,
    shown: &HashSet<String>,
) -> Vec<&'a ValidationRun> {
    let mut finished: Vec<&ValidationRun> = runs
        .iter()
        .filter(|r| r.labels().get(labels::TASK).map_or("", String::as_str) == task)
        .filter(|r| r.status.as_ref().is_some_and(|s| s.phase.is_finished()))
        .filter(|r| r.meta().deletion_timestamp.is_none())
        .collect();
    finished.sort_by(|a, b| {
        let created = |r: &ValidationRun| r.meta().creation_timestamp.as_ref().map(|t| t.0);
        let is_shown = |r: &ValidationRun| shown.contains(&r.name_any());
        is_shown(b)
            .cmp(&is_shown(a))
            .then_with(|| created(b).cmp(&created(a)))
            .then_with(|| b.name_any().cmp(&a.name_any()))
    });
    finished
        .into_iter()
        .skip(keep)
        .filter(|r| !shown.contains(&r.name_any()))
        .collect()
}

/// True when nothing is left to do for a run: finished, its attempt recorded in the Session
/// (or not an attempt), labelled and owned by its Session. Such a run is not read further, so
/// an operator restart costs one read per old run.
pub fn is_settled(run: &ValidationRun) -> bool {
    let Some(status) = run.status.as_ref() else {
        return false;
    };
    let recorded =
        status.start_time.is_none() || find_condition(&status.conditions, TASKS_RECORDED).is_some();
    let labelled = [labels::SESSION, labels::TASK]
        .iter()
        .all(|k| run.labels().contains_key(*k));
    let owned = run
        .owner_references()
        .iter()
        .any(|o| o.kind == "Session" && o.name == run.spec.session);
    status.phase.is_finished() && recorded && labelled && owned
}

/// Runs the controller until `stop` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let runs: Api<DeserializeGuard<ValidationRun>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Runner::new(CONTROLLER, ctx)
        .run(lean_controller(runs, watcher::Config::default()), stop, reconcile)
        .await;
}

/// Reconciles one ValidationRun.
pub async fn reconcile(guard: Arc<DeserializeGuard<ValidationRun>>, ctx: Arc<Context>) -> Result<Action> {
    let name = guard.name_any();
    let namespace = guard.namespace().unwrap_or_default();
    let cached = ctx.accept(guard.as_ref(), "ValidationRun").await?;
    // The watch cache can lag behind this controller's own writes (Running, the verdict,
    // TasksRecorded); deciding on a stale copy would evaluate a finished run again or
    // count its attempt twice, so decisions use the run as the API has it now.
    let api: Api<ValidationRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(run) =
        api.get_opt(&name)
            .await
            .map_err(kube_err("get", "ValidationRun", format!("{namespace}/{name}")))?
    else {
        return Ok(Action::await_change());
    };
    if run.meta().deletion_timestamp.is_some() || run.uid() != cached.uid() || is_settled(&run) {
        return Ok(Action::await_change());
    }
    Reconciler::read(&run, &ctx).await?.reconcile().await
}

/// One reconcile of one run, with what it read.
struct Reconciler<'a> {
    ctx: &'a Context,
    run: ValidationRun,
    namespace: String,
    session: Option<Session>,
    cluster: Option<PracticeCluster>,
    catalog: Option<Arc<Catalog>>,
    admitted: Result<Admitted, Rejection>,
}

impl<'a> Reconciler<'a> {
    async fn read(run: &ValidationRun, ctx: &'a Context) -> Result<Self> {
        let namespace = run.namespace().unwrap_or_default();
        let sessions: Api<Session> = Api::namespaced(ctx.client.clone(), &namespace);
        let session = sessions.get_opt(&run.spec.session).await.map_err(kube_err(
            "get",
            "Session",
            format!("{namespace}/{}", run.spec.session),
        ))?;
        let cluster_name = session
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.cluster.clone());
        let cluster = match cluster_name {
            Some(c) => {
                let clusters: Api<PracticeCluster> = Api::namespaced(ctx.client.clone(), &namespace);
                clusters.get_opt(&c).await.map_err(kube_err(
                    "get",
                    "PracticeCluster",
                    format!("{namespace}/{c}"),
                ))?
            }
            None => None,
        };
        let catalog = ctx.scenarios.as_ref().map(|s| s.catalog());
        let admitted = admit(
            &run.spec.session,
            &run.spec.task,
            session.as_ref(),
            cluster.as_ref(),
            catalog.as_deref(),
        );
        Ok(Self {
            ctx,
            run: run.clone(),
            namespace,
            session,
            cluster,
            catalog,
            admitted,
        })
    }

    fn name(&self) -> String {
        self.run.name_any()
    }

    fn api(&self) -> Api<ValidationRun> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn scenario(&self) -> Option<Arc<Scenario>> {
        let id = &self.session.as_ref()?.spec.scenario;
        self.catalog.as_ref()?.get(id).cloned()
    }

    /// [`task_label`] on a run's first reconcile (whatever label its creator set); after that
    /// the label it got, so a later catalog or Session change never moves a run to another
    /// pruning group.
    fn task_label(&self) -> String {
        match self.run.labels().get(labels::TASK) {
            Some(label) if self.run.status.is_some() => label.clone(),
            _ => task_label(&self.run.spec.task, self.scenario().as_deref()),
        }
    }

    async fn reconcile(mut self) -> Result<Action> {
        self.ensure_metadata().await?;
        let phase = self.run.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if !phase.is_finished() {
            match self.admitted.clone() {
                Err(rejection) => self.reject(&rejection).await?,
                Ok(admitted) => self.evaluate(&admitted).await?,
            }
        }
        self.settle().await?;
        Ok(Action::await_change())
    }

    /// Labels the run with its session and task and makes it owned by its Session (so it is
    /// garbage-collected with it). One metadata write, guarded by the resourceVersion read.
    async fn ensure_metadata(&mut self) -> Result<()> {
        let want_labels = [
            (labels::SESSION, self.run.spec.session.clone()),
            (labels::TASK, self.task_label()),
        ];
        let labels_ok = want_labels
            .iter()
            .all(|(k, v)| self.run.labels().get(*k) == Some(v));
        let mut owners = self.run.owner_references().to_vec();
        let mut owners_ok = true;
        if let Some(session) = &self.session
            && let Some(uid) = session.uid()
            && !owners.iter().any(|o| o.uid == uid)
        {
            let has_controller = owners.iter().any(|o| o.controller == Some(true));
            let owner: Option<OwnerReference> = if has_controller {
                session.owner_ref(&())
            } else {
                session.controller_owner_ref(&())
            };
            owners.extend(owner);
            owners_ok = false;
        }
        if labels_ok && owners_ok {
            return Ok(());
        }
        let labels: serde_json::Map<String, serde_json::Value> = want_labels
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        let patch = json!({"metadata": {
            "resourceVersion": self.run.resource_version(),
            "labels": labels,
            "ownerReferences": owners,
        }});
        self.run = self
            .api()
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err("label", "ValidationRun", self.name()))?;
        Ok(())
    }

    /// Writes the run's whole status (server-side apply, so the write is the same on retry;
    /// unguarded: only this controller writes a run's status, from the run read afresh).
    async fn write_status(&mut self, status: &ValidationRunStatus) -> Result<()> {
        if let Some(written) =
            status::apply(&self.api(), &self.run, managers::VALIDATION, status, Guard::None).await?
        {
            self.run = written;
        }
        Ok(())
    }

    async fn reject(&mut self, rejection: &Rejection) -> Result<()> {
        info!(reason = rejection.reason, message = %rejection.message, "run refused");
        let status = error_status(
            rejection.reason,
            &rejection.message,
            self.run.meta().generation,
            None,
            Timestamp::now(),
        );
        self.finish(status).await
    }

    async fn evaluate(&mut self, admitted: &Admitted) -> Result<()> {
        let generation = self.run.meta().generation;
        let start = Time(Timestamp::now());
        self.write_status(&ValidationRunStatus {
            observed_generation: generation,
            phase: ValidationRunPhase::Running,
            start_time: Some(start.clone()),
            ..ValidationRunStatus::default()
        })
        .await?;

        let unreachable = |cause: String| {
            error_status(
                reasons::CLUSTER_UNREACHABLE,
                &cause,
                generation,
                Some(start.clone()),
                Timestamp::now(),
            )
        };
        // Admission found the cluster held by the Session.
        let Some(pc) = self.cluster.clone() else {
            return self
                .finish(unreachable(format!(
                    "PracticeCluster {} is gone",
                    admitted.cluster
                )))
                .await;
        };
        let access = match PracticeAccess::load(self.ctx, &pc).await {
            Ok(a) => a,
            // The host API failing is ours to retry; anything else is the cluster's state.
            Err(e @ Error::Kube { .. }) => return Err(e),
            Err(e) => return self.finish(unreachable(e.to_string())).await,
        };
        let client = match access.client().await {
            Ok(c) => c,
            Err(e) => return self.finish(unreachable(e.to_string())).await,
        };
        let engine = Engine::new(access.targets.clone(), Some(client), access.ssh.clone());
        let deadline = engine.options().run_deadline + Duration::from_secs(10);
        let selector = TaskSelector::from_spec(&self.run.spec.task);
        let report = match tokio::time::timeout(deadline, engine.validate(&admitted.scenario, selector)).await
        {
            Ok(Ok(report)) => report,
            // The engine's only error is an unknown task, which admission already ruled out
            // for this same scenario.
            Ok(Err(e)) => {
                let status = error_status(
                    reasons::TASK_NOT_FOUND,
                    &e.to_string(),
                    generation,
                    Some(start.clone()),
                    Timestamp::now(),
                );
                return self.finish(status).await;
            }
            Err(_) => {
                let cause = format!("the validation did not finish within {}s", deadline.as_secs());
                return self.finish(unreachable(cause)).await;
            }
        };
        for outcome in &report.results {
            self.ctx
                .metrics
                .rule_duration
                .get_or_create(&RuleLabels {
                    rule_type: outcome.rule_type.as_str().to_owned(),
                })
                .observe(outcome.duration.as_secs_f64());
        }
        self.ctx
            .metrics
            .validation_duration
            .observe(report.duration.as_secs_f64());
        let status = evaluated_status(&report, generation, start, Timestamp::now());
        self.finish(status).await
    }

    /// Writes a finished status, counts it and tells the run (and its Session) with an event.
    async fn finish(&mut self, status: ValidationRunStatus) -> Result<()> {
        let phase = status.phase;
        let message = status.message.clone().unwrap_or_default();
        self.write_status(&status).await?;
        self.ctx
            .metrics
            .validation_runs
            .get_or_create(&RunLabels {
                phase: format!("{phase:?}"),
            })
            .inc();
        let (type_, reason) = match phase {
            ValidationRunPhase::Passed => (EventType::Normal, events::PASSED),
            ValidationRunPhase::Failed => (EventType::Warning, events::FAILED),
            _ => (EventType::Warning, events::ERROR),
        };
        info!(phase = ?phase, message = %message, "run finished");
        self.ctx
            .event(&self.run, type_, reason, "Validate", message.clone())
            .await;
        if let Some(session) = &self.session {
            let note = format!("{}: {message}", self.name());
            self.ctx.event(session, type_, reason, "Validate", note).await;
        }
        Ok(())
    }

    /// Bookkeeping of a finished run: record it in the Session's task status (once) and prune
    /// the oldest finished runs of its session and task.
    async fn settle(&mut self) -> Result<()> {
        let Some(status) = self.run.status.clone() else {
            return Ok(());
        };
        if !status.phase.is_finished() {
            return Ok(());
        }
        // Only runs that got as far as evaluating count as attempts; refusals do not.
        let recorded = find_condition(&status.conditions, TASKS_RECORDED).is_some();
        if status.start_time.is_some()
            && !recorded
            && let (Ok(admitted), Some(finished)) = (self.admitted.clone(), status.completion_time.clone())
        {
            self.record_in_session(&admitted, &status.results, &finished)
                .await?;
            let mut marked = status.clone();
            set_condition(
                &mut marked.conditions,
                new_condition(
                    TASKS_RECORDED,
                    ConditionStatus::True,
                    "Recorded",
                    format!("recorded in Session {}", self.run.spec.session),
                    self.run.meta().generation,
                    Timestamp::now(),
                ),
            );
            self.write_status(&marked).await?;
        }
        self.prune().await
    }

    /// Read-modify-write of the Session's `status.tasks` only, guarded by its resourceVersion
    /// and retried on conflicts (the Session controller writes the rest of its status; see
    /// [`apply_session_tasks`]).
    async fn record_in_session(
        &self,
        admitted: &Admitted,
        results: &[RuleResult],
        finished: &Time,
    ) -> Result<()> {
        let sessions: Api<Session> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let name = &self.run.spec.session;
        let mut attempt = 0;
        loop {
            let Some(session) =
                sessions
                    .get_opt(name)
                    .await
                    .map_err(kube_err("get", "Session", name.clone()))?
            else {
                return Ok(());
            };
            let mut tasks = session.status.clone().unwrap_or_default().tasks;
            if !record_run(
                &mut tasks,
                &admitted.scenario,
                &admitted.tasks,
                &self.name(),
                results,
                finished,
            ) {
                return Ok(());
            }
            if apply_session_tasks(&sessions, &session, &tasks).await?.is_some() {
                return Ok(());
            }
            if attempt >= 5 {
                return Err(Error::KeptChanging {
                    action: "record the run in",
                    kind: "Session",
                    name: format!("{}/{name}", self.namespace),
                });
            }
            attempt += 1;
        }
    }

    async fn prune(&self) -> Result<()> {
        let keep = usize::try_from(self.ctx.config.validation_runs_kept.max(1)).unwrap_or(usize::MAX);
        let task = self.run.labels().get(labels::TASK).cloned().unwrap_or_default();
        let name = &self.run.spec.session;
        let session = Api::<Session>::namespaced(self.ctx.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(kube_err("get", "Session", name.clone()))?;
        let shown: HashSet<String> = session
            .and_then(|s| s.status)
            .map(|st| st.tasks.into_iter().filter_map(|t| t.last_run).collect())
            .unwrap_or_default();
        let selector = format!("{}={}", labels::SESSION, self.run.spec.session);
        let runs = self
            .api()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("list", "ValidationRun", selector.clone()))?
            .items;
        for old in runs_to_prune(&runs, &task, keep, &shown) {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: old.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match self.api().delete(&old.name_any(), &params).await {
                Ok(_) => info!(pruned = %old.name_any(), "deleted an old run"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(kube_err("delete", "ValidationRun", old.name_any())(e)),
            }
        }
        Ok(())
    }
}

/// Writes a Session's `status.tasks` (the whole list: it is an atomic list in the CRD) by
/// server-side apply with the ValidationRun controller's field manager, guarded by the
/// resourceVersion `session` was read with; `None` when the Session changed since. The one
/// writer of the task list: the Session controller leaves `tasks` out of its own status and
/// writes initial entries through this function, so both never fight over the list.
pub async fn apply_session_tasks(
    sessions: &Api<Session>,
    session: &Session,
    tasks: &[TaskStatus],
) -> Result<Option<Session>> {
    status::apply(
        sessions,
        session,
        managers::VALIDATION,
        &json!({"tasks": tasks}),
        Guard::ResourceVersion,
    )
    .await
}

#[cfg(test)]
mod tests;
