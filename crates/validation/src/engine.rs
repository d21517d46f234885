//! The engine: runs the rules of one task (or all tasks) of a scenario concurrently, each under
//! its timeout and all under the run's deadline, and turns what they observed into one result
//! per rule.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cks_api::validation_run::{RuleResult, ValidationRunPhase};
use cks_scenarios::{Check, Condition, Rule, RuleType, Scenario, Task};
use futures::StreamExt;
use kube::Client;
use tokio::time::Instant;
use tracing::Instrument;

use crate::cluster::{ClusterApi, DEFAULT_NAMESPACE, KubeCluster};
use crate::condition::{Observed, Verdict, describe, judge};
use crate::error::Error;
use crate::output::shorten;
use crate::ssh::{
    ExecOutput, ExecRequest, FILE_MISSING_CODE, SshConfig, SshExecutor, TargetResolver, VmExec,
    file_content_request, file_exists_request, script_request, vm_of,
};

/// Longest `actual` (in bytes) copied into a [`RuleResult`]; the ValidationRun status holds up
/// to 500 results and must stay far below the API server's object size limit.
pub const RESULT_ACTUAL_LIMIT: usize = 2048;

/// Which tasks to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSelector {
    /// One task, by id (`task-1`) or number (`1`, `01`).
    One(String),
    /// Every task, in order.
    All,
}

impl TaskSelector {
    /// The selector a ValidationRun's `spec.task` stands for: empty means all tasks.
    pub fn from_spec(task: &str) -> Self {
        if task.is_empty() {
            TaskSelector::All
        } else {
            TaskSelector::One(task.to_owned())
        }
    }
}

/// Limits of a run.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Timeout of a rule that sets none.
    pub default_timeout: Duration,
    /// Bound on a whole run; rules still running when it passes end with an error.
    pub run_deadline: Duration,
    /// Rules evaluated at once.
    pub max_concurrent_rules: usize,
    /// Namespace of namespaced objects whose rule names none.
    pub default_namespace: String,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(30),
            run_deadline: Duration::from_secs(120),
            max_concurrent_rules: 16,
            default_namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

enum Backends {
    /// Built fresh for every run, so discovery and SSH connections live for one run.
    Live {
        targets: TargetResolver,
        kube: Option<Client>,
        ssh: SshConfig,
    },
    /// Shared by every run (fakes in tests, or callers managing their own executors).
    Fixed {
        cluster: Option<Arc<dyn ClusterApi>>,
        vms: Option<Arc<dyn VmExec>>,
    },
}

/// Evaluates scenario rules against one practice cluster.
pub struct Engine {
    backends: Backends,
    options: EngineOptions,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Engine");
        match &self.backends {
            Backends::Live { targets, kube, ssh } => d
                .field("targets", targets)
                .field("kube", &kube.is_some())
                .field("ssh", ssh),
            Backends::Fixed { cluster, vms } => d
                .field("cluster", &cluster.is_some())
                .field("vms", &vms.is_some()),
        };
        d.field("options", &self.options).finish()
    }
}

impl Engine {
    /// An engine for a practice cluster: its API through `kube` (resource rules error without
    /// it) and its VMs at `targets` over SSH.
    pub fn new(targets: TargetResolver, kube: Option<Client>, ssh: SshConfig) -> Self {
        Self {
            backends: Backends::Live { targets, kube, ssh },
            options: EngineOptions::default(),
        }
    }

    /// An engine over given executors, shared by all runs.
    pub fn with_backends(cluster: Option<Arc<dyn ClusterApi>>, vms: Option<Arc<dyn VmExec>>) -> Self {
        Self {
            backends: Backends::Fixed { cluster, vms },
            options: EngineOptions::default(),
        }
    }

    pub fn with_options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Evaluates the selected tasks' rules. Fails only when the selection names no task; every
    /// problem with a rule is reported in that rule's result.
    pub async fn validate(
        &self,
        scenario: &Scenario,
        tasks: TaskSelector,
    ) -> Result<ValidationReport, Error> {
        let selected: Vec<&Task> = match &tasks {
            TaskSelector::All => scenario.tasks.iter().collect(),
            TaskSelector::One(id) => vec![scenario.task(id).ok_or_else(|| Error::UnknownTask {
                scenario: scenario.id().to_owned(),
                task: id.clone(),
            })?],
        };
        let run = self.start_run();
        let started = Instant::now();
        let deadline = started + self.options.run_deadline;
        let span = tracing::info_span!("validate", scenario = %scenario.id(), tasks = ?tasks);
        // The evaluations are built before the stream so that no closure over borrowed tasks
        // lives across an await: that keeps the returned future provably `Send`.
        let mut evaluations = Vec::new();
        for task in &selected {
            for rule in &task.rules {
                evaluations.push(self.evaluate(task, rule, &run, deadline));
            }
        }
        let results: Vec<RuleOutcome> = futures::stream::iter(evaluations)
            .buffered(self.options.max_concurrent_rules.max(1))
            .collect()
            .instrument(span)
            .await;
        let host_keys = run.vms.as_ref().map(|v| v.host_keys()).unwrap_or_default();
        Ok(ValidationReport {
            scenario: scenario.id().to_owned(),
            results,
            duration: started.elapsed(),
            host_keys,
        })
    }

    fn start_run(&self) -> Run {
        match &self.backends {
            Backends::Live { targets, kube, ssh } => Run {
                cluster: kube.clone().map(|c| {
                    Arc::new(KubeCluster::new(c, self.options.default_namespace.clone()))
                        as Arc<dyn ClusterApi>
                }),
                vms: Some(Arc::new(SshExecutor::new(targets.clone(), ssh.clone()))),
            },
            Backends::Fixed { cluster, vms } => Run {
                cluster: cluster.clone(),
                vms: vms.clone(),
            },
        }
    }

    async fn evaluate(&self, task: &Task, rule: &Rule, run: &Run, deadline: Instant) -> RuleOutcome {
        let started = Instant::now();
        let budget = rule.timeout.unwrap_or(self.options.default_timeout);
        let remaining = deadline.saturating_duration_since(started);
        let (limit, late) = if budget <= remaining {
            (budget, Error::Timeout(budget))
        } else {
            (remaining, Error::Deadline(self.options.run_deadline))
        };
        let result = match tokio::time::timeout(limit, check(rule, run)).await {
            Ok(r) => r,
            Err(_) => Err(late),
        };
        let outcome = RuleOutcome::new(task, rule, result, started.elapsed());
        tracing::debug!(
            task = %outcome.task,
            rule = %outcome.rule,
            passed = outcome.passed,
            error = outcome.error.as_ref().map(Error::category),
            millis = outcome.duration.as_millis() as u64,
            "rule evaluated"
        );
        outcome
    }
}

/// The executors of one run.
struct Run {
    cluster: Option<Arc<dyn ClusterApi>>,
    vms: Option<Arc<dyn VmExec>>,
}

impl Run {
    fn cluster(&self) -> Result<&dyn ClusterApi, Error> {
        self.cluster.as_deref().ok_or(Error::NoCluster)
    }

    async fn exec(&self, target: cks_scenarios::Target, request: ExecRequest) -> Result<ExecOutput, Error> {
        let vms = self.vms.as_deref().ok_or(Error::NoVms)?;
        vms.exec(vm_of(target), request).await
    }
}

async fn check(rule: &Rule, run: &Run) -> Result<Verdict, Error> {
    let condition = rule.condition.as_ref();
    let exists = Condition::Exists;
    match &rule.check {
        Check::ResourceExists { resource } => {
            let found = run.cluster()?.find(resource).await?;
            let observed = Observed::Presence {
                found: !found.objects.is_empty(),
                what: found.what,
            };
            judge(condition.unwrap_or(&exists), &observed)
        }
        Check::ResourceProperty { resource, property } => {
            let found = run.cluster()?.find(resource).await?;
            let observed = if found.objects.is_empty() {
                Observed::Values {
                    values: Vec::new(),
                    missing: Some(found.what),
                }
            } else {
                Observed::Values {
                    values: found
                        .objects
                        .iter()
                        .flat_map(|o| property.query(o))
                        .cloned()
                        .collect(),
                    missing: None,
                }
            };
            judge(condition.unwrap_or(&exists), &observed)
        }
        Check::Command { command, target } => {
            let request = ExecRequest {
                command: command.clone(),
                stdin: None,
            };
            let out = run.exec(*target, request).await?;
            match condition {
                Some(c) => judge(c, &Observed::Text(out.stdout)),
                None => Ok(exit_verdict(&out, 0)),
            }
        }
        Check::Script {
            script,
            target,
            success_code,
        } => {
            let out = run.exec(*target, script_request(script)).await?;
            let exit = exit_verdict(&out, *success_code as u32);
            match condition {
                Some(c) if exit.passed => judge(c, &Observed::Text(out.stdout)),
                Some(c) => Ok(Verdict {
                    expected: format!("{} and output {}", exit.expected, describe(c)),
                    ..exit
                }),
                None => Ok(exit),
            }
        }
        Check::FileExists { path, target } => {
            let out = run.exec(*target, file_exists_request(path)?).await?;
            let found = match out.code() {
                Some(0) => true,
                Some(1) => false,
                _ => return Err(file_error(*target, path, &out)),
            };
            let observed = Observed::Presence {
                found,
                what: path.clone(),
            };
            judge(condition.unwrap_or(&exists), &observed)
        }
        Check::FileContent { path, target } => {
            let out = run.exec(*target, file_content_request(path)?).await?;
            let observed = match out.code() {
                Some(0) => Observed::Text(out.stdout),
                Some(FILE_MISSING_CODE) => Observed::MissingFile(path.clone()),
                _ => return Err(file_error(*target, path, &out)),
            };
            judge(condition.unwrap_or(&exists), &observed)
        }
    }
}

/// Passes when the command exited with `want`; on failure the reason quotes stderr.
fn exit_verdict(out: &ExecOutput, want: u32) -> Verdict {
    let passed = out.code() == Some(want);
    let stderr = out.stderr.text.trim();
    Verdict {
        passed,
        expected: format!("exit code {want}"),
        actual: out.status.to_string(),
        reason: (!passed && !stderr.is_empty()).then(|| format!("stderr: {}", shorten(stderr, 512))),
    }
}

fn file_error(target: cks_scenarios::Target, path: &str, out: &ExecOutput) -> Error {
    let stderr = out.stderr.text.trim();
    Error::File {
        target: target.to_string(),
        path: path.to_owned(),
        cause: if stderr.is_empty() {
            out.status.to_string()
        } else {
            shorten(stderr, 512)
        },
    }
}

/// The outcome of one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOutcome {
    /// Id of the task the rule belongs to (`task-1`).
    pub task: String,
    /// The rule's id.
    pub rule: String,
    pub rule_type: RuleType,
    /// The rule was evaluated and its condition held.
    pub passed: bool,
    /// Set when the rule could not be evaluated; `passed` is then false.
    pub error: Option<Error>,
    /// Empty when passed; the author's `errorMessage` (or a generated one) on failure, with the
    /// engine's reason where it adds something; the cause on error.
    pub message: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub duration: Duration,
}

impl RuleOutcome {
    fn new(task: &Task, rule: &Rule, result: Result<Verdict, Error>, duration: Duration) -> Self {
        let base = RuleOutcome {
            task: task.id.clone(),
            rule: rule.id.clone(),
            rule_type: rule.rule_type(),
            passed: false,
            error: None,
            message: String::new(),
            expected: None,
            actual: None,
            duration,
        };
        match result {
            Ok(v) => {
                let message = if v.passed {
                    String::new()
                } else {
                    let author = rule
                        .error_message
                        .as_deref()
                        .map(str::trim)
                        .filter(|m| !m.is_empty());
                    let headline = match author {
                        Some(m) => m.to_owned(),
                        None => format!("rule `{}` failed: expected {}", rule.id, v.expected),
                    };
                    match v.reason {
                        Some(r) => format!("{headline} ({r})"),
                        None => headline,
                    }
                };
                RuleOutcome {
                    passed: v.passed,
                    message,
                    expected: Some(v.expected),
                    actual: Some(v.actual),
                    ..base
                }
            }
            Err(e) => RuleOutcome {
                message: e.to_string(),
                expected: rule.condition.as_ref().map(describe),
                error: Some(e),
                ..base
            },
        }
    }

    /// True when the rule could not be evaluated.
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

impl From<&RuleOutcome> for RuleResult {
    fn from(o: &RuleOutcome) -> Self {
        RuleResult {
            task: o.task.clone(),
            id: o.rule.clone(),
            passed: o.passed,
            message: o.message.clone(),
            expected: o.expected.clone(),
            actual: o.actual.as_deref().map(|a| shorten(a, RESULT_ACTUAL_LIMIT)),
            error: o.is_error(),
            duration_millis: i64::try_from(o.duration.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// The results of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationReport {
    pub scenario: String,
    /// One per rule, in task order and then file order.
    pub results: Vec<RuleOutcome>,
    pub duration: Duration,
    /// SHA-256 fingerprints of the SSH host keys accepted during the run, by target.
    pub host_keys: BTreeMap<String, String>,
}

impl ValidationReport {
    /// Every rule passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    pub fn passed_count(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    /// The first rule that could not be evaluated.
    pub fn first_error(&self) -> Option<&RuleOutcome> {
        self.results.iter().find(|r| r.is_error())
    }

    /// `Error` when a rule could not be evaluated, else `Passed` or `Failed`.
    pub fn phase(&self) -> ValidationRunPhase {
        if self.first_error().is_some() {
            ValidationRunPhase::Error
        } else if self.passed() {
            ValidationRunPhase::Passed
        } else {
            ValidationRunPhase::Failed
        }
    }

    /// The results as written to a ValidationRun's status.
    pub fn rule_results(&self) -> Vec<RuleResult> {
        self.results.iter().map(RuleResult::from).collect()
    }
}
