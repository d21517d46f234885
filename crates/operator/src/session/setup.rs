//! Running a scenario's setup steps on a claimed cluster: commands and scripts on the step's
//! VM over SSH (a script goes to `bash -s` on stdin, never into a command line), manifests
//! server-side applied to the practice cluster's API. Each attempt of a step is bounded by
//! the step's timeout; a failed step is tried `retryCount` more times after a short backoff.
//!
//! [`StepExec`] separates what a step does from the retry logic, so the logic is unit-tested
//! with a fake.

use std::time::Duration;

use cks_scenarios::{SetupAction, SetupStep};
use cks_validation::ssh::vm_of;
use cks_validation::{ExecRequest, SshExecutor, VmExec};
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
}

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

/// Runs `step` until an attempt succeeds or `1 + retry_count` attempts failed; each attempt
/// is cut off after the step's timeout. `backoff` is the pause after the first failure and
/// doubles per attempt.
pub async fn run_step(exec: &dyn StepExec, step: &SetupStep, backoff: Duration) -> StepResult {
    let timeout = step.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT);
    let max_attempts = step.retry_count.saturating_add(1);
    let mut pause = backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = match tokio::time::timeout(timeout, exec.attempt(step)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f64())),
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

    async fn exec(&self, step: &SetupStep, request: ExecRequest, success: u32) -> Result<String, String> {
        // A fresh executor per attempt: a failed connection is remembered by an executor,
        // and a retry should dial again.
        let exec = SshExecutor::new(self.access.targets.clone(), self.access.ssh.clone());
        let out = exec
            .exec(vm_of(step.target), request)
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
                    self.exec(step, request, 0).await
                }
                SetupAction::Script { script, success_code } => {
                    let request = cks_validation::script_request(script);
                    self.exec(step, request, u32::try_from(*success_code).unwrap_or(0))
                        .await
                }
                SetupAction::KubectlApply { manifest } => {
                    let client = self.access.client().await.map_err(|e| e.to_string())?;
                    apply::apply_manifest(&client, manifest).await
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
            location: cks_scenarios::SourceLocation::file("init.yaml"),
        }
    }

    fn fake(results: Vec<Result<String, String>>) -> Fake {
        Fake {
            results: Mutex::new(results),
            hang: false,
        }
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
            results: Mutex::new(Vec::new()),
            hang: true,
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
