//! Running a scenario's setup steps on a claimed cluster: commands and scripts on the step's
//! VM over SSH (a script goes to `bash -s` on stdin, never into a command line), manifests
//! server-side applied to the practice cluster's API. Each attempt of a step is bounded by
//! the step's timeout; a failed step is tried `retryCount` more times after a short backoff.
//! After the action of an attempt succeeded, the step's `conditions` are checked in order,
//! each until it holds or its own timeout passes; one that never holds fails the attempt.
//!
//! [`StepExec`] separates what a step does from the retry logic, so the logic is unit-tested
//! with a fake.

use std::time::Duration;

use cks_scenarios::{SetupAction, SetupCondition, SetupStep, Target, WaitFor};
use cks_validation::cluster::DEFAULT_NAMESPACE;
use cks_validation::ssh::vm_of;
use cks_validation::{ClusterApi, ExecRequest, KubeCluster, SshExecutor, VmExec};
use futures::future::BoxFuture;

use super::apply;
use crate::access::PracticeAccess;

/// Timeout of a step attempt whose scenario states none.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of a failing step's output kept in the Session's status.
pub const OUTPUT_LIMIT: usize = 2048;

/// Carries out one attempt of a step: `Ok(output)` when it succeeded, `Err(output)` with
/// what went wrong when not.
pub trait StepExec: Send + Sync {
    /// One attempt of `step`.
    fn attempt<'a>(&'a self, step: &'a SetupStep) -> BoxFuture<'a, Result<String, String>>;

    /// One check of a condition of `step`: `Ok` when it holds now, `Err` saying why not.
    fn holds<'a>(
        &'a self,
        step: &'a SetupStep,
        condition: &'a SetupCondition,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Longest pause between two checks of a condition.
const CONDITION_POLL_MAX: Duration = Duration::from_secs(2);

/// How a step ended after its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    /// Whether an attempt succeeded.
    pub ok: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Output of the last attempt (truncated to [`OUTPUT_LIMIT`]).
    pub output: String,
}

/// Runs `step` until an attempt succeeds or `1 + retry_count` attempts failed; each attempt's
/// action is cut off after the step's timeout, and then its conditions must hold. `backoff` is
/// the pause after the first failure and doubles per attempt; conditions are checked again
/// every `backoff` (at most every 2 s).
pub async fn run_step(exec: &dyn StepExec, step: &SetupStep, backoff: Duration) -> StepResult {
    let timeout = step.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT);
    let max_attempts = step.retry_count.saturating_add(1);
    let poll = backoff.min(CONDITION_POLL_MAX);
    let mut pause = backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = match tokio::time::timeout(timeout, exec.attempt(step)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f64())),
        };
        let result = match result {
            Ok(output) => wait_for_conditions(exec, step, poll).await.map(|()| output),
            failed => failed,
        };
        match result {
            Ok(output) => {
                return StepResult {
                    ok: true,
                    attempts,
                    output: truncate(&output),
                };
            }
            Err(output) if attempts >= max_attempts => {
                return StepResult {
                    ok: false,
                    attempts,
                    output: truncate(&output),
                };
            }
            Err(output) => {
                tracing::info!(step = %step.id, attempt = attempts, output = %truncate(&output), "setup step failed; retrying");
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Checks each condition of `step` in order until it holds, for at most its timeout (else the
/// step's, else [`DEFAULT_STEP_TIMEOUT`]).
async fn wait_for_conditions(exec: &dyn StepExec, step: &SetupStep, poll: Duration) -> Result<(), String> {
    for (index, condition) in step.conditions.iter().enumerate() {
        let limit = condition.timeout.or(step.timeout).unwrap_or(DEFAULT_STEP_TIMEOUT);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let why = match tokio::time::timeout_at(deadline, exec.holds(step, condition)).await {
                Ok(Ok(())) => break,
                Ok(Err(why)) => why,
                Err(_) => "the check did not finish in time".to_owned(),
            };
            if tokio::time::Instant::now() + poll >= deadline {
                return Err(format!(
                    "condition {} ({}) did not hold within {}s: {why}",
                    index + 1,
                    condition.wait_for,
                    limit.as_secs_f64()
                ));
            }
            // Never a busy loop, even with a zero backoff.
            tokio::time::sleep(poll.max(Duration::from_millis(10))).await;
        }
    }
    Ok(())
}

/// The last [`OUTPUT_LIMIT`] bytes of `s` (the end of an output says most about a failure),
/// cut at a character boundary.
pub fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() <= OUTPUT_LIMIT {
        return s.to_owned();
    }
    let mut start = s.len() - OUTPUT_LIMIT;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Steps carried out on a real practice cluster.
#[derive(Debug)]
pub struct ClusterSteps {
    access: PracticeAccess,
}

impl ClusterSteps {
    /// Steps on the cluster `access` reaches.
    pub fn new(access: PracticeAccess) -> Self {
        Self { access }
    }

    async fn exec(&self, target: Target, request: ExecRequest, success: u32) -> Result<String, String> {
        // A fresh executor per attempt: a failed connection is remembered by an executor,
        // and a retry should dial again.
        let exec = SshExecutor::new(self.access.targets.clone(), self.access.ssh.clone());
        let out = exec
            .exec(vm_of(target), request)
            .await
            .map_err(|e| e.to_string())?;
        let text = [out.stdout.text.trim(), out.stderr.text.trim()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
        if out.code() == Some(success) {
            Ok(text)
        } else {
            Err(format!("{} (expected exit code {success})\n{text}", out.status))
        }
    }
}

impl StepExec for ClusterSteps {
    fn attempt<'a>(&'a self, step: &'a SetupStep) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match &step.action {
                SetupAction::Command { command } => {
                    let request = ExecRequest {
                        command: command.clone(),
                        stdin: None,
                    };
                    self.exec(step.target, request, 0).await
                }
                SetupAction::Script { script, success_code } => {
                    let request = cks_validation::script_request(script);
                    self.exec(step.target, request, u32::try_from(*success_code).unwrap_or(0))
                        .await
                }
                SetupAction::KubectlApply { manifest } => {
                    let client = self.access.client().await.map_err(|e| e.to_string())?;
                    apply::apply_manifest(&client, manifest).await
                }
            }
        })
    }

    fn holds<'a>(
        &'a self,
        _step: &'a SetupStep,
        condition: &'a SetupCondition,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match &condition.wait_for {
                WaitFor::ResourceExists { resource } => {
                    let client = self.access.client().await.map_err(|e| e.to_string())?;
                    // Fresh discovery per check: the step may just have created the kind.
                    let found = KubeCluster::new(client, DEFAULT_NAMESPACE)
                        .find(resource)
                        .await
                        .map_err(|e| e.to_string())?;
                    if found.objects.is_empty() {
                        Err(format!("{} not found", found.what))
                    } else {
                        Ok(())
                    }
                }
                WaitFor::Command { command, target } => {
                    let request = ExecRequest {
                        command: command.clone(),
                        stdin: None,
                    };
                    self.exec(*target, request, 0).await.map(drop)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use cks_scenarios::Target;

    struct Fake {
        results: Mutex<Vec<Result<String, String>>>,
        hang: bool,
        /// What successive condition checks find; holds once these run out.
        checks: Mutex<Vec<Result<(), String>>>,
        checked: Mutex<u32>,
        /// A condition that never holds.
        never: bool,
    }

    impl StepExec for Fake {
        fn attempt<'a>(&'a self, _step: &'a SetupStep) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async move {
                if self.hang {
                    std::future::pending::<()>().await;
                }
                self.results.lock().unwrap().remove(0)
            })
        }

        fn holds<'a>(
            &'a self,
            _step: &'a SetupStep,
            _condition: &'a SetupCondition,
        ) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                *self.checked.lock().unwrap() += 1;
                if self.never {
                    return Err("Deployment httpd in namespace default not found".into());
                }
                let mut checks = self.checks.lock().unwrap();
                if checks.is_empty() {
                    Ok(())
                } else {
                    checks.remove(0)
                }
            })
        }
    }

    fn step(retries: u32, timeout: Option<Duration>) -> SetupStep {
        SetupStep {
            id: "s".into(),
            description: None,
            action: SetupAction::Command {
                command: "true".into(),
            },
            target: Target::ControlPlane,
            timeout,
            retry_count: retries,
            conditions: Vec::new(),
            location: cks_scenarios::SourceLocation::file("init.yaml"),
        }
    }

    fn fake(results: Vec<Result<String, String>>) -> Fake {
        Fake {
            results: Mutex::new(results),
            hang: false,
            checks: Mutex::new(Vec::new()),
            checked: Mutex::new(0),
            never: false,
        }
    }

    /// A step that waits for Deployment default/httpd, for at most `timeout`.
    fn step_with_condition(retries: u32, timeout: Duration) -> SetupStep {
        let resource: cks_scenarios::ResourceRef = serde_json::from_value(
            serde_json::json!({"kind": "Deployment", "name": "httpd", "namespace": "default"}),
        )
        .unwrap();
        SetupStep {
            conditions: vec![SetupCondition {
                wait_for: WaitFor::ResourceExists { resource },
                timeout: Some(timeout),
                location: cks_scenarios::SourceLocation::file("init.yaml"),
            }],
            ..step(retries, None)
        }
    }

    #[tokio::test]
    async fn a_step_is_done_only_once_its_conditions_hold() {
        let exec = fake(vec![Ok("created".into())]);
        *exec.checks.lock().unwrap() = vec![Err("not yet".into()), Err("not yet".into())];
        let r = run_step(
            &exec,
            &step_with_condition(0, Duration::from_secs(30)),
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            r,
            StepResult {
                ok: true,
                attempts: 1,
                output: "created".into()
            }
        );
        assert_eq!(*exec.checked.lock().unwrap(), 3, "checked until it held");
    }

    #[tokio::test]
    async fn a_condition_that_never_holds_fails_the_attempt_which_is_retried() {
        let exec = Fake {
            never: true,
            ..fake(vec![Ok("created".into()), Ok("created again".into())])
        };
        let r = run_step(
            &exec,
            &step_with_condition(1, Duration::from_millis(50)),
            Duration::ZERO,
        )
        .await;
        assert!(!r.ok);
        assert_eq!(r.attempts, 2);
        assert_eq!(
            r.output,
            "condition 1 (Deployment default/httpd exists) did not hold within 0.05s: \
             Deployment httpd in namespace default not found"
        );
    }

    #[tokio::test]
    async fn a_step_is_retried_until_it_succeeds() {
        let exec = fake(vec![Err("boom".into()), Err("boom".into()), Ok("done".into())]);
        let r = run_step(&exec, &step(2, None), Duration::ZERO).await;
        assert_eq!(
            r,
            StepResult {
                ok: true,
                attempts: 3,
                output: "done".into()
            }
        );
    }

    #[tokio::test]
    async fn a_step_fails_after_its_retries_with_the_last_output() {
        let exec = fake(vec![Err("first".into()), Err("second".into()), Ok("late".into())]);
        let r = run_step(&exec, &step(1, None), Duration::ZERO).await;
        assert!(!r.ok);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.output, "second");
    }

    #[tokio::test]
    async fn an_attempt_that_hangs_is_cut_off_by_the_timeout() {
        let exec = Fake {
            hang: true,
            ..fake(Vec::new())
        };
        let r = run_step(&exec, &step(0, Some(Duration::from_millis(20))), Duration::ZERO).await;
        assert!(!r.ok);
        assert!(r.output.contains("timed out after 0.02s"), "{}", r.output);
    }

    #[test]
    fn truncation_keeps_the_end() {
        let long = format!("{}END", "é".repeat(OUTPUT_LIMIT));
        let t = truncate(&long);
        assert!(t.ends_with("END") && t.starts_with('…'));
        assert!(t.len() <= OUTPUT_LIMIT + '…'.len_utf8());
        assert_eq!(truncate(" short \n"), "short");
    }
}
