//! The engine over fake executors: task selection, messages, phases, timeouts, the run
//! deadline and concurrency. Time is paused, so timeouts are exact and cost no wall-clock time.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cks_api::validation_run::{RuleResult, ValidationRunPhase};
use cks_kubevirt::naming::VmId;
use cks_scenarios::ResourceRef;
use cks_validation::cluster::describe_unscoped;
use cks_validation::{
    Captured, ClusterApi, Engine, EngineOptions, Error, ExecOutput, ExecRequest, ExitStatus, Found,
    TaskSelector, VmExec,
};
use common::{assert_error, assert_failed, assert_passed, outcome, scenario};
use futures::future::BoxFuture;
use serde_json::{Value, json};

/// Objects by `kind/name`.
#[derive(Default)]
struct FakeCluster {
    objects: HashMap<String, Value>,
}

impl FakeCluster {
    fn with(mut self, kind: &str, name: &str, object: Value) -> Self {
        self.objects.insert(format!("{kind}/{name}"), object);
        self
    }
}

impl ClusterApi for FakeCluster {
    fn find<'a>(&'a self, r: &'a ResourceRef) -> BoxFuture<'a, Result<Found, Error>> {
        let key = format!("{}/{}", r.kind, r.name.as_deref().unwrap_or_default());
        let objects = self.objects.get(&key).cloned().into_iter().collect();
        Box::pin(async move {
            Ok(Found {
                objects,
                what: describe_unscoped(r),
            })
        })
    }
}

type Script = dyn Fn(VmId, &ExecRequest) -> Reply + Send + Sync;

/// What a fake VM does with a command.
enum Reply {
    Exit(u32, &'static str, &'static str),
    /// Never finishes.
    Hang,
    Fail(Error),
}

struct FakeVms {
    script: Box<Script>,
    seen: Mutex<Vec<(VmId, ExecRequest)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FakeVms {
    fn new(script: impl Fn(VmId, &ExecRequest) -> Reply + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(script),
            seen: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }
}

impl VmExec for FakeVms {
    fn exec<'a>(&'a self, vm: VmId, request: ExecRequest) -> BoxFuture<'a, Result<ExecOutput, Error>> {
        Box::pin(async move {
            let reply = (self.script)(vm, &request);
            self.seen.lock().unwrap().push((vm, request));
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            // Let the other rules in flight get polled while this one is "running".
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match reply {
                Reply::Exit(code, stdout, stderr) => Ok(ExecOutput {
                    stdout: Captured::new(stdout),
                    stderr: Captured::new(stderr),
                    status: ExitStatus::Code(code),
                }),
                Reply::Hang => std::future::pending().await,
                Reply::Fail(e) => Err(e),
            }
        })
    }
}

fn engine(cluster: FakeCluster, vms: Arc<FakeVms>) -> Engine {
    Engine::with_backends(Some(Arc::new(cluster)), Some(vms))
}

const NAMESPACE_RULES: &str = r#"
- id: ns
  type: resource_exists
  resource: {kind: Namespace, name: test-pods}
  errorMessage: Namespace test-pods not found
- id: enforce
  type: resource_property
  resource: {kind: Namespace, name: test-pods}
  property: .metadata.labels.pod-security\.kubernetes\.io/enforce
  condition: equals
  value: restricted
  errorMessage: Set the enforce label to restricted
"#;

const COMMAND_RULES: &str = r#"
- id: version
  type: command
  command: kubectl version --client -o json | jq -r .clientVersion.minor
  condition: greater_than
  value: 30
  errorMessage: kubectl is too old
"#;

fn namespace(enforce: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "test-pods", "labels": {"pod-security.kubernetes.io/enforce": enforce}}})
}

#[tokio::test]
async fn one_task_is_selected_by_number_and_all_tasks_run_in_order() {
    let s = scenario(&[NAMESPACE_RULES, COMMAND_RULES]);
    let vms = FakeVms::new(|_, _| Reply::Exit(0, "33\n", ""));
    let e = engine(
        FakeCluster::default().with("Namespace", "test-pods", namespace("restricted")),
        vms,
    );

    let one = e.validate(&s, TaskSelector::One("01".into())).await.unwrap();
    let ids: Vec<_> = one
        .results
        .iter()
        .map(|r| (r.task.as_str(), r.rule.as_str()))
        .collect();
    assert_eq!(ids, [("task-1", "ns"), ("task-1", "enforce")]);
    assert_eq!(one.phase(), ValidationRunPhase::Passed);

    let two = e.validate(&s, TaskSelector::One("task-2".into())).await.unwrap();
    assert_eq!(two.results.len(), 1);
    assert_passed(&two, "version");

    let all = e.validate(&s, TaskSelector::from_spec("")).await.unwrap();
    let ids: Vec<_> = all.results.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(ids, ["ns", "enforce", "version"]);
    assert_eq!((all.passed_count(), all.passed()), (3, true));
}

#[tokio::test]
async fn an_unknown_task_is_an_error_of_the_run() {
    let s = scenario(&[NAMESPACE_RULES]);
    let e = engine(FakeCluster::default(), FakeVms::new(|_, _| Reply::Hang));
    let err = e.validate(&s, TaskSelector::One("07".into())).await.unwrap_err();
    assert_eq!(
        err,
        Error::UnknownTask {
            scenario: "engine-test".into(),
            task: "07".into()
        }
    );
    assert_eq!(err.category(), "unknown-task");
}

#[tokio::test]
async fn a_failure_carries_the_authors_message_expected_and_actual() {
    let s = scenario(&[NAMESPACE_RULES]);
    let e = engine(
        FakeCluster::default().with("Namespace", "test-pods", namespace("baseline")),
        FakeVms::new(|_, _| Reply::Hang),
    );
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    assert_passed(&report, "ns");
    let o = assert_failed(&report, "enforce");
    assert_eq!(o.message, "Set the enforce label to restricted");
    assert_eq!(o.expected.as_deref(), Some("restricted"));
    assert_eq!(o.actual.as_deref(), Some("baseline"));
    assert_eq!(report.phase(), ValidationRunPhase::Failed);

    let results = report.rule_results();
    assert_eq!(
        results[1],
        RuleResult {
            task: "task-1".into(),
            id: "enforce".into(),
            passed: false,
            message: "Set the enforce label to restricted".into(),
            expected: Some("restricted".into()),
            actual: Some("baseline".into()),
            error: false,
            duration_millis: results[1].duration_millis,
        }
    );
    assert!(results[0].passed && results[0].message.is_empty());
}

#[tokio::test]
async fn a_missing_object_fails_existence_and_property_rules() {
    let s = scenario(&[NAMESPACE_RULES]);
    let e = engine(FakeCluster::default(), FakeVms::new(|_, _| Reply::Hang));
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let ns = assert_failed(&report, "ns");
    assert_eq!(ns.message, "Namespace test-pods not found");
    assert_eq!(ns.actual.as_deref(), Some("Namespace test-pods does not exist"));
    let enforce = assert_failed(&report, "enforce");
    assert_eq!(enforce.actual.as_deref(), Some("Namespace test-pods not found"));
}

#[tokio::test]
async fn non_numeric_output_fails_greater_than_with_a_clear_message() {
    let s = scenario(&[COMMAND_RULES]);
    let e = engine(
        FakeCluster::default(),
        FakeVms::new(|_, _| Reply::Exit(0, "thirty-three\n", "")),
    );
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_failed(&report, "version");
    assert_eq!(
        o.message,
        r#"kubectl is too old ("thirty-three" is not a number)"#
    );
    assert_eq!(o.expected.as_deref(), Some("> 30"));
}

#[tokio::test]
async fn commands_scripts_and_files_reach_the_right_vm_with_safe_requests() {
    let s = scenario(&[r#"
- id: cmd
  type: command
  command: {command: "crictl ps", target: worker}
  errorMessage: crictl failed
- id: script
  type: script
  script: {script: "echo hi\nexit 3\n", target: worker-2, successCode: 3}
  condition: output_equals
  value: hi
- id: file
  type: file_content
  path: "/etc/it's here.yaml"
  condition: contains
  value: "level: Metadata"
- id: gone
  type: file_exists
  file: {path: /etc/backdoor, target: control-plane}
  condition: not_exists
"#]);
    let vms = FakeVms::new(|vm, req| match (vm, req.command.as_str()) {
        (VmId::Worker(1), "crictl ps") => Reply::Exit(1, "", "connect: permission denied\n"),
        (VmId::Worker(2), "bash -s") => Reply::Exit(3, "hi\n", ""),
        (VmId::ControlPlane, c) if c.starts_with("sh -c") => {
            Reply::Exit(0, "rules:\n- level: Metadata\n", "")
        }
        (VmId::ControlPlane, "test -e /etc/backdoor") => Reply::Exit(1, "", ""),
        other => panic!("unexpected request {other:?}"),
    });
    let e = engine(FakeCluster::default(), vms.clone());
    let report = e.validate(&s, TaskSelector::All).await.unwrap();

    let cmd = assert_failed(&report, "cmd");
    assert_eq!(cmd.message, "crictl failed (stderr: connect: permission denied)");
    assert_eq!(
        (cmd.expected.as_deref(), cmd.actual.as_deref()),
        (Some("exit code 0"), Some("exit code 1"))
    );
    assert_passed(&report, "script");
    assert_passed(&report, "file");
    assert_passed(&report, "gone");

    let seen = vms.seen.lock().unwrap();
    let script = seen.iter().find(|(_, r)| r.command == "bash -s").unwrap();
    assert_eq!(script.1.stdin.as_deref(), Some(&b"echo hi\nexit 3\n"[..]));
    let file = seen.iter().find(|(_, r)| r.command.starts_with("sh -c")).unwrap();
    assert_eq!(
        shlex::split(&file.1.command).unwrap().last().map(String::as_str),
        Some("/etc/it's here.yaml")
    );
}

#[tokio::test]
async fn a_script_with_the_wrong_exit_code_fails_even_when_its_output_matches() {
    let s = scenario(&[r#"
- id: s
  type: script
  script: "echo ok"
  condition: output_contains
  value: ok
  errorMessage: the check script failed
"#]);
    let e = engine(
        FakeCluster::default(),
        FakeVms::new(|_, _| Reply::Exit(2, "ok\n", "")),
    );
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_failed(&report, "s");
    assert_eq!(
        o.expected.as_deref(),
        Some(r#"exit code 0 and output contains "ok""#)
    );
    assert_eq!(o.actual.as_deref(), Some("exit code 2"));
}

#[tokio::test]
async fn an_unreadable_file_is_an_evaluation_error_not_a_failure() {
    let s = scenario(&[r#"
- id: f
  type: file_content
  path: /root/secret
  condition: contains
  value: x
"#]);
    let e = engine(
        FakeCluster::default(),
        FakeVms::new(|_, _| Reply::Exit(1, "", "cat: /root/secret: Permission denied\n")),
    );
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_error(&report, "f", "file");
    assert_eq!(
        o.message,
        "reading /root/secret on control-plane: cat: /root/secret: Permission denied"
    );
    assert_eq!(report.phase(), ValidationRunPhase::Error);
    assert!(report.rule_results()[0].error);
}

#[tokio::test]
async fn without_a_cluster_client_resource_rules_are_errors_and_vm_rules_still_run() {
    let s = scenario(&[NAMESPACE_RULES, COMMAND_RULES]);
    let e = Engine::with_backends(None, Some(FakeVms::new(|_, _| Reply::Exit(0, "33", ""))));
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_error(&report, "ns", "no-cluster");
    assert_eq!(o.expected.as_deref(), Some("exists"));
    assert_passed(&report, "version");
    assert_eq!(report.first_error().map(|o| o.rule.as_str()), Some("ns"));
}

#[tokio::test]
async fn an_executor_error_is_reported_on_the_rule() {
    let s = scenario(&[COMMAND_RULES]);
    let e = engine(
        FakeCluster::default(),
        FakeVms::new(|_, _| {
            Reply::Fail(Error::Ssh {
                target: "control-plane".into(),
                cause: "connection reset".into(),
            })
        }),
    );
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_error(&report, "version", "ssh");
    assert_eq!(o.message, "SSH session with control-plane: connection reset");
}

#[tokio::test(start_paused = true)]
async fn a_rule_that_hangs_times_out_at_its_own_timeout_or_the_default() {
    let s = scenario(&[r#"
- id: own
  type: command
  command: sleep infinity
  timeout: 5s
- id: default
  type: command
  command: sleep forever
- id: quick
  type: command
  command: "true"
"#]);
    let vms = FakeVms::new(|_, req| match req.command.as_str() {
        "true" => Reply::Exit(0, "", ""),
        _ => Reply::Hang,
    });
    let e = engine(FakeCluster::default(), vms).with_options(EngineOptions {
        default_timeout: Duration::from_secs(7),
        ..EngineOptions::default()
    });
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let own = assert_error(&report, "own", "timeout");
    assert_eq!(own.error, Some(Error::Timeout(Duration::from_secs(5))));
    assert_eq!(own.duration, Duration::from_secs(5));
    let default = assert_error(&report, "default", "timeout");
    assert_eq!(default.error, Some(Error::Timeout(Duration::from_secs(7))));
    assert_passed(&report, "quick");
    // Concurrent: the run takes as long as its slowest rule, not the sum.
    assert_eq!(report.duration, Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn the_run_deadline_bounds_rules_with_longer_timeouts() {
    let s = scenario(&[r#"
- id: slow
  type: command
  command: sleep infinity
  timeout: 10m
"#]);
    let e = engine(FakeCluster::default(), FakeVms::new(|_, _| Reply::Hang)).with_options(EngineOptions {
        run_deadline: Duration::from_secs(60),
        ..EngineOptions::default()
    });
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_error(&report, "slow", "deadline");
    assert_eq!(o.duration, Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn rules_run_concurrently_up_to_the_bound() {
    let rules: String = (0..6)
        .map(|i| format!("- id: r{i}\n  type: command\n  command: \"echo {i}\"\n"))
        .collect();
    let s = scenario(&[&rules]);
    let vms = FakeVms::new(|_, _| Reply::Exit(0, "", ""));
    let e = engine(FakeCluster::default(), vms.clone()).with_options(EngineOptions {
        max_concurrent_rules: 4,
        ..EngineOptions::default()
    });
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    assert!(report.passed(), "{report:#?}");
    assert_eq!(vms.max_in_flight.load(Ordering::SeqCst), 4);
    // Results keep file order whatever order rules finish in.
    let ids: Vec<_> = report.results.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(ids, ["r0", "r1", "r2", "r3", "r4", "r5"]);
    assert_eq!(outcome(&report, "r5").task, "task-1");
}

#[tokio::test]
async fn long_actual_values_are_shortened_in_rule_results_only() {
    let s = scenario(&[r#"
- id: big
  type: command
  command: cat /var/log/big
  condition: output_contains
  value: needle
"#]);
    static BIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let big: &'static str = BIG.get_or_init(|| "x".repeat(10_000));
    let e = engine(
        FakeCluster::default(),
        FakeVms::new(move |_, _| Reply::Exit(0, big, "")),
    );
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_failed(&report, "big");
    assert_eq!(o.actual.as_ref().map(String::len), Some(10_000));
    let r = &report.rule_results()[0];
    let actual = r.actual.as_deref().unwrap();
    assert!(actual.starts_with(&"x".repeat(2048)), "{actual}");
    assert!(
        actual.ends_with("[shortened: 2048 of 10000 bytes shown]"),
        "{actual}"
    );
}

#[tokio::test]
async fn validation_runs_can_be_spawned_on_the_runtime() {
    let s = Arc::new(scenario(&[COMMAND_RULES]));
    let e = Arc::new(engine(
        FakeCluster::default(),
        FakeVms::new(|_, _| Reply::Exit(0, "31", "")),
    ));
    // The controller runs validations as tasks: the future must be Send and 'static-able.
    let task = tokio::spawn({
        let (s, e) = (s.clone(), e.clone());
        async move { e.validate(&s, TaskSelector::All).await }
    });
    let report = task.await.unwrap().unwrap();
    assert!(report.passed(), "{report:#?}");
}
