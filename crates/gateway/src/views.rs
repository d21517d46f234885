//! JSON shapes of the API, built from custom resources and the catalog by pure functions.
//!
//! Each view carries the fields the reference system's frontend reads (names and types exact,
//! see `http-contract.md` §4 and §7) plus our own. Rules that matter: lists are bare arrays,
//! `topics` is never `null`, times are RFC 3339 and a missing time is the zero time
//! `0001-01-01T00:00:00Z` (what the reference frontend treats as "never"), and no VM address
//! appears anywhere.

use std::collections::BTreeMap;

use cks_api::conditions::find_condition;
use cks_api::names::condition_types;
use cks_api::practice_cluster::{PracticeClusterPhase, VmRole};
use cks_api::session::{SessionPhase, TaskState};
use cks_api::{ClusterPool, PracticeCluster, Session, ValidationRun, ValidationRunPhase};
use cks_scenarios::{Catalog, Rule, Scenario};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// How Go renders a zero `time.Time`; the reference frontend shows it as "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn time(t: Option<&Time>) -> String {
    t.map_or_else(|| ZERO_TIME.to_owned(), |t| t.0.to_string())
}

fn opt_time(t: Option<&Time>) -> Option<String> {
    t.map(|t| t.0.to_string())
}

// ---------------------------------------------------------------- scenarios

/// Query filters of `GET /scenarios`.
#[derive(Debug, Default, Clone, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScenarioFilter {
    /// Category id, or a topic.
    pub category: Option<String>,
    /// `beginner`, `intermediate` or `advanced`.
    pub difficulty: Option<String>,
    /// Case-insensitive text in title, description or topics.
    pub search: Option<String>,
}

fn difficulty(s: &Scenario) -> String {
    s.metadata
        .difficulty
        .and_then(|d| serde_json::to_value(d).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl ScenarioFilter {
    /// True when `s` passes every given filter (empty values are ignored, as the
    /// reference frontend only sends non-empty ones anyway).
    pub fn matches(&self, s: &Scenario) -> bool {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        if let Some(c) = given(&self.category)
            && s.metadata.category.as_deref() != Some(c.as_str())
            && !s.metadata.topics.contains(&c)
        {
            return false;
        }
        if let Some(d) = given(&self.difficulty)
            && !difficulty(s).eq_ignore_ascii_case(&d)
        {
            return false;
        }
        if let Some(q) = given(&self.search) {
            let q = q.to_lowercase();
            let hit = s.metadata.title.to_lowercase().contains(&q)
                || s.metadata.description.to_lowercase().contains(&q)
                || s.metadata.topics.iter().any(|t| t.to_lowercase().contains(&q));
            if !hit {
                return false;
            }
        }
        true
    }
}

/// A scenario as the reference frontend reads it (§4.3), plus `category`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioView {
    /// Scenario id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Short description.
    pub description: String,
    /// `beginner`, `intermediate`, `advanced`, or `""` when not given.
    pub difficulty: String,
    /// Human time estimate such as `30 min`; `""` when not given.
    pub time_estimate: String,
    /// Topics; always an array (`null` crashes the reference frontend).
    pub topics: Vec<String>,
    /// Category id (see `/scenarios/categories`); absent when the scenario is filed under no
    /// category (a catalog without `categories.yaml`, or no topic naming one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Tasks in order.
    pub tasks: Vec<TaskView>,
    /// What the practice cluster needs: `k8sVersion`, `resources`, `nodes`.
    #[schema(value_type = Object)]
    pub requirements: Value,
    /// Setup steps, without their commands.
    pub setup_steps: Vec<SetupStepView>,
    /// Scenario version, `""` when not given.
    pub version: String,
}

/// A task of a scenario.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// Task id; the same string as in a Session's `tasks[].id` and the validate URL.
    pub id: String,
    /// Title.
    pub title: String,
    /// Markdown description.
    pub description: String,
    /// Hints as plain strings (summary, then body).
    pub hints: Vec<String>,
    /// Objectives as Markdown, one per line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub objective: String,
    /// Step-by-step guide.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// Background section, Markdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<String>,
    /// The whole task file, Markdown.
    pub markdown: String,
    /// The rules that check the task, without what they compare against (that would be the
    /// answer).
    pub validation: Vec<RuleView>,
}

/// What a student may know about a rule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    /// Rule id.
    pub id: String,
    /// Rule type, for example `file_exists`.
    #[serde(rename = "type")]
    pub type_: String,
    /// What it checks, when the author said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// VM the rule runs on; absent for Kubernetes API checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A setup step, without its command or script.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetupStepView {
    /// Step id.
    pub id: String,
    /// What it does.
    pub description: String,
    /// VM it runs on.
    pub target: String,
}

fn format_estimate(d: std::time::Duration) -> String {
    let minutes = d.as_secs().div_ceil(60);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

fn rule_view(rule: &Rule) -> RuleView {
    RuleView {
        id: rule.id.clone(),
        type_: rule.rule_type().as_str().to_owned(),
        description: rule.description.clone(),
        target: rule.check.target().map(|t| t.to_string()),
    }
}

/// The view of a scenario.
pub fn scenario_view(s: &Scenario) -> ScenarioView {
    let m = &s.metadata;
    ScenarioView {
        id: m.id.clone(),
        title: m.title.clone(),
        description: m.description.clone(),
        difficulty: difficulty(s),
        time_estimate: m.time_estimate.map(format_estimate).unwrap_or_default(),
        topics: m.topics.clone(),
        category: m.category.clone(),
        tasks: s
            .tasks
            .iter()
            .map(|t| TaskView {
                id: t.id.clone(),
                title: t.title.clone(),
                description: t.description.clone().unwrap_or_default(),
                hints: t
                    .hints
                    .iter()
                    .map(|h| format!("{} {}", h.summary, h.body).trim().to_owned())
                    .collect(),
                objective: t.objectives.join("\n"),
                steps: t.steps.clone(),
                background: t.background.clone(),
                markdown: t.markdown.clone(),
                validation: t.rules.iter().map(rule_view).collect(),
            })
            .collect(),
        requirements: serde_json::json!({
            "k8sVersion": m.requirements.kubernetes_version.clone().unwrap_or_default(),
            "resources": m.requirements.resources,
            "nodes": m.requirements.nodes,
        }),
        setup_steps: s
            .setup
            .iter()
            .map(|st| SetupStepView {
                id: st.id.clone(),
                description: st.description.clone().unwrap_or_default(),
                target: st.target.to_string(),
            })
            .collect(),
        version: m.version.clone().unwrap_or_default(),
    }
}

/// `GET /scenarios/categories`: a flat object id → display name.
pub fn categories(catalog: &Catalog) -> BTreeMap<String, String> {
    catalog
        .categories()
        .iter()
        .map(|c| (c.id.clone(), c.name.clone()))
        .collect()
}

// ---------------------------------------------------------------- sessions

/// The reference's session `status` for a phase: `running` as soon as a cluster is
/// assigned (setup may still run; `phase` says which).
pub fn reference_status(phase: SessionPhase) -> &'static str {
    match phase {
        SessionPhase::Pending | SessionPhase::WaitingForCluster => "pending",
        SessionPhase::Initializing | SessionPhase::Ready => "running",
        SessionPhase::Expired => "expired",
        SessionPhase::Ended => "ended",
        SessionPhase::Failed => "failed",
    }
}

/// The reference's task status: only `completed` counts as done in its UI.
pub fn reference_task_status(state: TaskState) -> &'static str {
    match state {
        TaskState::Pending => "pending",
        TaskState::Passed => "completed",
        TaskState::Failed => "failed",
    }
}

/// One task of a session.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionTaskView {
    /// Task id, equal to the scenario's `tasks[].id`.
    pub id: String,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// When it was last validated; the zero time if never.
    pub validation_time: String,
    /// Validations run.
    pub attempts: i32,
    /// Name of the last ValidationRun (`GET .../validations/{run}` shows its results).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
}

/// A condition's gist.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
pub struct ConditionView {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// For people.
    pub message: String,
}

/// Setup progress.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetupView {
    /// Steps in all.
    pub total: i32,
    /// Steps done.
    pub completed: i32,
    /// Step running now, or the one that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// When setup finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// A terminal target of the session (no address: terminals are opened through the gateway).
#[derive(Debug, Serialize, PartialEq, ToSchema)]
pub struct TerminalTargetView {
    /// `control-plane`, `worker-1`, ...
    pub target: String,
    /// Stable terminal id.
    pub id: String,
}

/// A session: the reference's fields (§4.1) first, then the full view.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// Session id (the Session's name).
    pub id: String,
    /// Also the id, under the name the reference's create answer uses.
    pub session_id: String,
    /// Namespace of the assigned practice cluster's VMs; `""` before assignment.
    pub namespace: String,
    /// Scenario id.
    pub scenario_id: String,
    /// `pending`, `running`, `expired`, `ended` or `failed`.
    pub status: String,
    /// Why the session is not (or no longer) running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// When the cluster was assigned; zero time before.
    pub start_time: String,
    /// When the session expires; zero time before assignment.
    pub expiration_time: String,
    /// Name of the control-plane VM.
    #[serde(rename = "controlPlaneVM")]
    pub control_plane_vm: String,
    /// Name of the (first) worker VM.
    #[serde(rename = "workerNodeVM")]
    pub worker_node_vm: String,
    /// Task progress, in the scenario's order.
    pub tasks: Vec<SessionTaskView>,
    /// Always empty (reference compatibility).
    pub terminal_sessions: BTreeMap<String, String>,
    /// Always empty (reference compatibility; terminals are not built yet).
    #[schema(value_type = BTreeMap<String, Object>)]
    pub active_terminals: BTreeMap<String, Value>,
    /// Name of the assigned PracticeCluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_cluster: Option<String>,
    /// When the cluster was assigned; zero time before.
    pub cluster_lock_time: String,
    // ---- beyond the reference
    /// Owner.
    pub user: String,
    /// ClusterPool.
    pub pool: String,
    /// Exact lifecycle phase of the Session resource: `Pending`, `WaitingForCluster`,
    /// `Initializing`, `Ready`, `Expired`, `Ended` or `Failed`.
    #[schema(value_type = String)]
    pub phase: SessionPhase,
    /// Reason of the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Message of the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Place in the pool's queue (1 = next) while waiting for a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// Requested length in minutes.
    pub duration_minutes: i32,
    /// When the session was created.
    pub created_at: String,
    /// When it ended, expired or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Scenario setup progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<SetupView>,
    /// Terminal targets of the assigned cluster.
    pub terminals: Vec<TerminalTargetView>,
    /// Conditions of the Session resource.
    pub conditions: Vec<ConditionView>,
}

/// The view of a session; `scenario` orders and completes its tasks, `cluster` names its VMs.
pub fn session_view(
    s: &Session,
    scenario: Option<&Scenario>,
    cluster: Option<&PracticeCluster>,
) -> SessionView {
    let status = s.status.clone().unwrap_or_default();
    let name = s.name_any();
    let task_view = |t: &cks_api::session::TaskStatus, id: String| SessionTaskView {
        id,
        status: reference_task_status(t.state).to_owned(),
        validation_time: time(t.last_run_time.as_ref()),
        attempts: t.attempts,
        last_run: t.last_run.clone(),
    };
    let pending_task = |id: &str| SessionTaskView {
        id: id.to_owned(),
        status: "pending".to_owned(),
        validation_time: ZERO_TIME.to_owned(),
        attempts: 0,
        last_run: None,
    };
    // The scenario's task ids, in its order, so they match `scenario.tasks[].id` exactly;
    // status entries the scenario no longer has come last.
    let mut tasks: Vec<SessionTaskView> = Vec::new();
    let mut used = vec![false; status.tasks.len()];
    if let Some(sc) = scenario {
        for t in &sc.tasks {
            let entry = status
                .tasks
                .iter()
                .position(|e| e.id == t.id || sc.task(&e.id).is_some_and(|x| x.id == t.id));
            match entry {
                Some(i) => {
                    used[i] = true;
                    tasks.push(task_view(&status.tasks[i], t.id.clone()));
                }
                None => tasks.push(pending_task(&t.id)),
            }
        }
    }
    for (i, e) in status.tasks.iter().enumerate() {
        if !used[i] {
            tasks.push(task_view(e, e.id.clone()));
        }
    }
    let vm = |role: VmRole| {
        cluster
            .and_then(|c| c.status.as_ref())
            .and_then(|st| st.vms.iter().find(|v| v.role == role))
            .map(|v| v.name.clone())
            .unwrap_or_default()
    };
    let status_message = match status.phase {
        SessionPhase::Initializing | SessionPhase::Ready => None,
        _ => status.message.clone(),
    };
    SessionView {
        id: name.clone(),
        session_id: name,
        namespace: cluster
            .and_then(|c| c.status.as_ref())
            .and_then(|st| st.namespace.clone())
            .unwrap_or_default(),
        scenario_id: s.spec.scenario.clone(),
        status: reference_status(status.phase).to_owned(),
        status_message,
        start_time: time(status.started_at.as_ref()),
        expiration_time: time(status.expires_at.as_ref()),
        control_plane_vm: vm(VmRole::ControlPlane),
        worker_node_vm: vm(VmRole::Worker),
        tasks,
        terminal_sessions: BTreeMap::new(),
        active_terminals: BTreeMap::new(),
        assigned_cluster: status.cluster.clone(),
        cluster_lock_time: time(status.started_at.as_ref()),
        user: s.spec.user.clone(),
        pool: s.spec.pool.clone(),
        phase: status.phase,
        reason: status.reason.clone(),
        message: status.message.clone(),
        queue_position: status.queue_position,
        duration_minutes: s.spec.duration_minutes,
        created_at: time(s.metadata.creation_timestamp.as_ref()),
        ended_at: opt_time(status.ended_at.as_ref()),
        setup: status.setup.as_ref().map(|p| SetupView {
            total: p.total,
            completed: p.completed,
            step: p.step.clone(),
            finished_at: opt_time(p.finished_at.as_ref()),
        }),
        terminals: status
            .terminals
            .iter()
            .map(|t| TerminalTargetView {
                target: t.target.clone(),
                id: t.id.clone(),
            })
            .collect(),
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
    }
}

/// Counts of `GET /admin/sessions` (§3.11).
#[derive(Debug, Serialize, PartialEq, Eq, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStats {
    /// Active sessions.
    pub total_sessions: usize,
    /// Sessions holding a cluster.
    pub running_sessions: usize,
    /// Sessions waiting for one.
    pub provisioning_sessions: usize,
}

/// The stats over `sessions`.
pub fn session_stats<'a>(sessions: impl IntoIterator<Item = &'a Session>) -> SessionStats {
    let mut stats = SessionStats::default();
    for s in sessions {
        let phase = s.status.as_ref().map(|st| st.phase).unwrap_or_default();
        if phase.is_active() {
            stats.total_sessions += 1;
        }
        match reference_status(phase) {
            "running" => stats.running_sessions += 1,
            "pending" => stats.provisioning_sessions += 1,
            _ => {}
        }
    }
    stats
}

// ---------------------------------------------------------------- validation

/// One rule's result (§4.5).
#[derive(Debug, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleResultView {
    /// Rule id.
    pub rule_id: String,
    /// Rule type, `""` when the scenario no longer has the rule.
    pub rule_type: String,
    /// Whether it passed.
    pub passed: bool,
    /// What to do (on failure) or what was found.
    pub message: String,
    /// What the rule expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// `CHECK_FAILED` or `RULE_ERROR` when not passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Rule description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Task the rule belongs to.
    pub task_id: String,
    /// How long it took.
    pub duration_millis: i64,
}

/// A validation answer (§4.5) plus the run's identity.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationView {
    /// All rules passed.
    pub success: bool,
    /// Summary for people.
    pub message: String,
    /// One per rule.
    pub results: Vec<RuleResultView>,
    /// When the run finished (or was created, while it runs).
    pub timestamp: String,
    /// The ValidationRun's name.
    pub run_id: String,
    /// Its phase: `Pending`, `Running`, `Passed`, `Failed` or `Error`.
    #[schema(value_type = String)]
    pub phase: ValidationRunPhase,
    /// Task checked.
    pub task_id: String,
    /// True once the run has finished.
    pub finished: bool,
    /// Where to poll for the result (only in a 202 answer, while the run goes on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

fn find_rule<'a>(scenario: Option<&'a Scenario>, task: &str, id: &str) -> Option<&'a Rule> {
    let sc = scenario?;
    sc.task(task)
        .and_then(|t| t.rules.iter().find(|r| r.id == id))
        .or_else(|| sc.tasks.iter().flat_map(|t| &t.rules).find(|r| r.id == id))
}

/// The view of a run.
pub fn validation_view(run: &ValidationRun, scenario: Option<&Scenario>) -> ValidationView {
    let status = run.status.clone().unwrap_or_default();
    let results: Vec<RuleResultView> = status
        .results
        .iter()
        .map(|r| {
            let rule = find_rule(scenario, &r.task, &r.id);
            let message = if !r.message.is_empty() {
                r.message.clone()
            } else if r.passed {
                "Check passed".to_owned()
            } else {
                "Check failed".to_owned()
            };
            RuleResultView {
                rule_id: r.id.clone(),
                rule_type: rule
                    .map(|x| x.rule_type().as_str().to_owned())
                    .unwrap_or_default(),
                passed: r.passed,
                message,
                expected: r.expected.clone(),
                actual: r.actual.clone(),
                error_code: match (r.passed, r.error) {
                    (true, _) => None,
                    (false, true) => Some("RULE_ERROR".to_owned()),
                    (false, false) => Some("CHECK_FAILED".to_owned()),
                },
                description: rule.and_then(|x| x.description.clone()),
                task_id: r.task.clone(),
                duration_millis: r.duration_millis,
            }
        })
        .collect();
    let message = match status.phase {
        ValidationRunPhase::Passed if results.is_empty() => {
            "No validation rules defined for this task".to_owned()
        }
        ValidationRunPhase::Passed => "All validations passed".to_owned(),
        ValidationRunPhase::Failed => "One or more validations failed".to_owned(),
        ValidationRunPhase::Error => status
            .message
            .clone()
            .unwrap_or_else(|| "The checks could not be run; try again.".to_owned()),
        ValidationRunPhase::Pending | ValidationRunPhase::Running => "Validation is running".to_owned(),
    };
    ValidationView {
        success: status.phase == ValidationRunPhase::Passed,
        message,
        results,
        timestamp: time(
            status
                .completion_time
                .as_ref()
                .or(run.metadata.creation_timestamp.as_ref()),
        ),
        run_id: run.name_any(),
        phase: status.phase,
        task_id: run.spec.task.clone(),
        finished: status.phase.is_finished(),
        url: None,
    }
}

// ---------------------------------------------------------------- clusters

/// The reference's cluster status for a phase.
pub fn reference_cluster_status(phase: PracticeClusterPhase) -> &'static str {
    match phase {
        PracticeClusterPhase::Available => "available",
        PracticeClusterPhase::Assigned => "locked",
        PracticeClusterPhase::Resetting => "resetting",
        PracticeClusterPhase::Failed => "error",
        PracticeClusterPhase::Pending
        | PracticeClusterPhase::Provisioning
        | PracticeClusterPhase::Bootstrapping
        | PracticeClusterPhase::Snapshotting => "creating",
    }
}

/// One cluster of `GET /admin/clusters` (§4.6) plus ours.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// PracticeCluster name (the id in the admin cluster URLs).
    pub cluster_id: String,
    /// Namespace of its VMs.
    pub namespace: String,
    /// `available`, `locked`, `resetting`, `error` or `creating`.
    pub status: String,
    /// Session holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_session: Option<String>,
    /// When the holding session got it; zero time when free.
    pub lock_time: String,
    /// Last reset; zero time if never.
    pub last_reset: String,
    /// Control-plane VM name.
    #[serde(rename = "controlPlaneVM")]
    pub control_plane_vm: String,
    /// Worker VM name.
    #[serde(rename = "workerNodeVM")]
    pub worker_node_vm: String,
    /// Creation time.
    pub created_at: String,
    /// Last change of the practice-API reachability check; zero time if never.
    pub last_health_check: String,
    // ---- beyond the reference
    /// ClusterPool.
    pub pool: String,
    /// Exact phase of the PracticeCluster.
    #[schema(value_type = String)]
    pub phase: PracticeClusterPhase,
    /// Sessions served since built.
    pub sessions_served: i32,
    /// How long the last reset took, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reset_duration_seconds: Option<f64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// True when an admin asked for a reset that has not started yet.
    pub reset_requested: bool,
}

/// The view of a cluster; `holder` is the Session its claim names, if cached.
pub fn cluster_view(pc: &PracticeCluster, holder: Option<&Session>) -> ClusterView {
    let st = pc.status.clone().unwrap_or_default();
    let vm = |role: VmRole| {
        st.vms
            .iter()
            .find(|v| v.role == role)
            .map(|v| v.name.clone())
            .unwrap_or_default()
    };
    let claim = pc.spec.claim_ref.as_ref().map(|c| c.name.clone());
    ClusterView {
        cluster_id: pc.name_any(),
        namespace: st.namespace.clone().unwrap_or_default(),
        status: reference_cluster_status(st.phase).to_owned(),
        lock_time: time(
            claim
                .as_ref()
                .and(holder)
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.started_at.as_ref()),
        ),
        assigned_session: claim,
        last_reset: time(st.last_reset_time.as_ref()),
        control_plane_vm: vm(VmRole::ControlPlane),
        worker_node_vm: vm(VmRole::Worker),
        created_at: time(pc.metadata.creation_timestamp.as_ref()),
        last_health_check: time(
            find_condition(&st.conditions, condition_types::API_REACHABLE).map(|c| &c.last_transition_time),
        ),
        pool: pc.spec.pool.clone(),
        phase: st.phase,
        sessions_served: st.sessions_served,
        last_reset_duration_seconds: st.last_reset_duration_seconds,
        failure_message: st.failure_message.clone(),
        reset_requested: pc
            .annotations()
            .contains_key(cks_api::names::annotations::RESET_REQUESTED),
    }
}

/// A pool's gist.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    /// ClusterPool name.
    pub name: String,
    /// Warm buffer.
    pub min_available: i32,
    /// Hard cap.
    pub max_clusters: i32,
    /// Longest session, minutes.
    pub max_session_minutes: i32,
    /// Counts by phase, as the pool controller last wrote them.
    #[schema(value_type = BTreeMap<String, i32>)]
    pub status: Value,
    /// Pool conditions.
    pub conditions: Vec<ConditionView>,
}

/// The view of a pool.
pub fn pool_view(p: &ClusterPool) -> PoolView {
    let st = p.status.clone().unwrap_or_default();
    PoolView {
        name: p.name_any(),
        min_available: p.spec.min_available,
        max_clusters: p.spec.max_clusters,
        max_session_minutes: p.spec.sessions.max_duration_minutes,
        status: serde_json::json!({
            "total": st.total, "provisioning": st.provisioning, "available": st.available,
            "assigned": st.assigned, "resetting": st.resetting, "failed": st.failed,
        }),
        conditions: st
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
    }
}

/// `GET /admin/clusters` (§4.6): counts, per-cluster status and details, plus the pools.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatusView {
    /// Every cluster.
    pub total_clusters: usize,
    /// `available` ones.
    pub available_clusters: usize,
    /// `locked` ones.
    pub locked_clusters: usize,
    /// `resetting` ones.
    pub resetting_clusters: usize,
    /// `error` ones.
    pub error_clusters: usize,
    /// Status by cluster id.
    pub status_by_cluster: BTreeMap<String, String>,
    /// Details by cluster id (omitted in the release-all answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detailed_clusters: Option<BTreeMap<String, ClusterView>>,
    /// The pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<PoolView>>,
}

/// The pool status over `clusters`; `holder` finds the Session a claim names.
pub fn pool_status<'a>(
    clusters: &[PracticeCluster],
    pools: &[ClusterPool],
    holder: impl Fn(&str) -> Option<&'a Session>,
    detailed: bool,
) -> PoolStatusView {
    let views: BTreeMap<String, ClusterView> = clusters
        .iter()
        .map(|pc| {
            let h = pc.spec.claim_ref.as_ref().and_then(|c| holder(&c.name));
            (pc.name_any(), cluster_view(pc, h))
        })
        .collect();
    let count = |s: &str| views.values().filter(|v| v.status == s).count();
    let mut pools: Vec<PoolView> = pools.iter().map(pool_view).collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    PoolStatusView {
        total_clusters: views.len(),
        available_clusters: count("available"),
        locked_clusters: count("locked"),
        resetting_clusters: count("resetting"),
        error_clusters: count("error"),
        status_by_cluster: views.iter().map(|(k, v)| (k.clone(), v.status.clone())).collect(),
        detailed_clusters: detailed.then_some(views),
        pools: detailed.then_some(pools),
    }
}

// ---------------------------------------------------------------- answers of actions

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: String,
}

/// `POST /scenarios/reload`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadView {
    /// Summary for people.
    pub message: String,
    /// Scenarios loaded.
    pub scenarios: usize,
    /// Catalog errors, one sentence each.
    pub errors: Vec<String>,
    /// Scenarios kept at their previous version because the new one is broken.
    pub stale: Vec<String>,
    /// Catalog warnings.
    pub warnings: usize,
}

/// `DELETE /sessions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedView {
    /// Summary for people.
    pub message: String,
    /// The session.
    pub session_id: String,
}

/// `PUT /sessions/{id}/extend`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedView {
    /// Summary for people (says when the pool's maximum cut the extension short).
    pub message: String,
    /// The session.
    pub session_id: String,
    /// Minutes actually added.
    pub added_minutes: i32,
    /// The session's new length.
    pub duration_minutes: i32,
    /// The new expiry; the zero time while the session has no cluster.
    pub expiration_time: String,
}

/// `GET /admin/sessions` (§3.11).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSessionsView {
    /// The sessions matching the query.
    pub sessions: Vec<SessionView>,
    /// Counts over every session.
    pub stats: SessionStats,
}

/// What an admin action did, mapped to the nearest declarative change.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionView {
    /// What happened, for people.
    pub message: String,
    /// The declarative action taken: `force-release`, `reset-requested`, `recreate` or
    /// `recreate-failed`.
    pub action: String,
    /// The session acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The cluster acted on (the reference's spelling).
    #[serde(rename = "clusterID", skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Sessions released (release-all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<Vec<String>>,
    /// Clusters recreated (bootstrap-pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<String>>,
    /// The pool status before the action (release-all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_status: Option<PoolStatusView>,
}

impl ActionView {
    /// An action with only its message and name.
    pub fn new(action: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            action: action.to_owned(),
            session_id: None,
            cluster_id: None,
            released: None,
            clusters: None,
            pool_status: None,
        }
    }
}

#[cfg(test)]
mod tests;
