//! The ValidationRun controller against the development control plane: refusals with a
//! reason, an unreachable cluster, pruning and idempotency on a plain server; and on the
//! KubeVirt simulator a student's work (through the practice cluster's API and over SSH)
//! turning Failed runs into Passed ones for every rule type and condition, a VM that drops
//! SSH in the middle of a rule, and a run end to end with the Session controller.

mod common;

use std::sync::Arc;

use cks_api::names::{condition_types, labels};
use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::session::{TaskState, TaskStatus};
use cks_api::validation_run::{RuleResult, ValidationRunPhase};
use cks_api::{ClusterPool, PracticeCluster, Session, ValidationRun};
use cks_operator::access::PracticeAccess;
use cks_operator::config::ControllerConfig;
use cks_operator::context::Context;
use cks_operator::validation_run::{self, reasons};
use common::vrun_fixtures::{
    SCENARIO, SLOW_SCENARIO, TempCatalog, catalog, create_run, finished_run, ready_session,
    set_session_status, ssh_exec, ssh_login,
};
use common::{NS, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::{Client, ResourceExt};
use serde_json::json;

/// Starts the ValidationRun controller with `ctx` plus the test catalog.
fn start_controller(mut ctx: Context, catalog: &TempCatalog) -> Arc<Context> {
    ctx.scenarios = Some(catalog.store.clone());
    let ctx = Arc::new(ctx);
    tokio::spawn(validation_run::run(ctx.clone(), Some(NS), std::future::pending()));
    ctx
}

/// A PracticeCluster no controller acts on (the plain server runs none), claimed by nobody.
async fn inert_cluster(client: &Client, name: &str) {
    let pc: PracticeCluster = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "PracticeCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"pool": "pool", "templateHash": "h", "template": common::template(1)},
    }))
    .unwrap();
    Api::<PracticeCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pc)
        .await
        .unwrap();
}

fn complete_reason(run: &ValidationRun) -> String {
    let status = run.status.as_ref().expect("status");
    status
        .conditions
        .iter()
        .find(|c| c.type_ == condition_types::COMPLETE)
        .map(|c| c.reason.clone())
        .expect("a Complete condition")
}

fn session_task(session: &Session, id: &str) -> TaskStatus {
    session
        .status
        .as_ref()
        .and_then(|s| s.tasks.iter().find(|t| t.id == id).cloned())
        .unwrap_or_else(|| panic!("task {id} in {:?}", session.status))
}

async fn get_session(client: &Client, name: &str) -> Session {
    Api::<Session>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap()
}

fn rule<'a>(run: &'a ValidationRun, id: &str) -> &'a RuleResult {
    let status = run.status.as_ref().expect("status");
    status
        .results
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("rule {id} in {:?}", status.results))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_cannot_be_evaluated_are_refused_with_a_reason() {
    let (_server, client) = common::start().await;
    let catalog = catalog();
    start_controller(Context::test(client.clone()), &catalog);
    inert_cluster(&client, "c-alice").await;
    inert_cluster(&client, "c-bob").await;

    ready_session(&client, "alice", SCENARIO, Some("c-alice"), &["task-1", "task-2"]).await;
    ready_session(&client, "bob", "no-such-scenario", Some("c-bob"), &[]).await;
    ready_session(&client, "carol", SCENARIO, None, &[]).await;
    set_session_status(
        &client,
        "carol",
        json!({"phase": "WaitingForCluster", "cluster": null}),
    )
    .await;
    ready_session(&client, "dave", SCENARIO, None, &[]).await;
    set_session_status(&client, "dave", json!({"phase": "Expired", "cluster": null})).await;

    // Run, session, task, reason, part of the message, and the task label: the scenario's id
    // for the task whenever the Session's scenario is known.
    let cases = [
        [
            "missing",
            "ghost",
            "01",
            reasons::SESSION_NOT_FOUND,
            "ghost does not exist",
            "01",
        ],
        [
            "expired",
            "dave",
            "01",
            reasons::SESSION_NOT_ACTIVE,
            "Expired",
            "task-1",
        ],
        [
            "waiting",
            "carol",
            "01",
            reasons::SESSION_NOT_READY,
            "WaitingForCluster",
            "task-1",
        ],
        [
            "unknown-scenario",
            "bob",
            "01",
            reasons::SCENARIO_NOT_FOUND,
            "no-such-scenario",
            "01",
        ],
        [
            "bad-task",
            "alice",
            "07",
            reasons::TASK_NOT_FOUND,
            "valid tasks: task-1, task-2",
            "07",
        ],
    ];
    for [run, session, task, ..] in cases {
        create_run(&client, run, session, task).await;
    }
    for [run_name, session, _, reason, text, task_label] in cases {
        let run = finished_run(&client, run_name).await;
        let status = run.status.clone().unwrap();
        assert_eq!(status.phase, ValidationRunPhase::Error, "{run_name}");
        assert_eq!(complete_reason(&run), reason, "{run_name}");
        let message = status.message.unwrap_or_default();
        assert!(message.contains(text), "{run_name}: {message}");
        assert!(
            status.start_time.is_none() && status.results.is_empty(),
            "{run_name}"
        );
        assert_eq!(
            run.labels().get(labels::SESSION).map(String::as_str),
            Some(session)
        );
        assert_eq!(
            run.labels().get(labels::TASK).map(String::as_str),
            Some(task_label)
        );
        let event = common::warning_event(&client, "ValidationError", run_name).await;
        assert!(event.message.unwrap_or_default().contains(text), "{run_name}");
        // Owned by its Session (garbage-collected with it) whenever that exists.
        let owned = run
            .owner_references()
            .iter()
            .any(|o| o.kind == "Session" && o.name == session);
        assert_eq!(owned, session != "ghost", "{run_name}");
    }
    // Refusals are not attempts.
    let alice = get_session(&client, "alice").await;
    assert_eq!(session_task(&alice, "task-1").attempts, 0);
    assert_eq!(session_task(&alice, "task-1").last_run, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_an_error_that_counts_and_old_runs_are_pruned() {
    let (_server, client) = common::start().await;
    let catalog = catalog();
    let config = ControllerConfig {
        validation_runs_kept: 2,
        ..ControllerConfig::test()
    };
    let ctx = start_controller(
        Context {
            config: Arc::new(config),
            ..Context::test(client.clone())
        },
        &catalog,
    );
    // Claimed, but never built: no namespace, no kubeconfig, no VM addresses.
    inert_cluster(&client, "c-erin").await;
    ready_session(&client, "erin", SCENARIO, Some("c-erin"), &["task-1", "task-2"]).await;

    create_run(&client, "erin-1", "erin", "01").await;
    let run = finished_run(&client, "erin-1").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, ValidationRunPhase::Error);
    assert_eq!(complete_reason(&run), reasons::CLUSTER_UNREACHABLE);
    assert!(
        status.message.as_deref().unwrap_or_default().contains("c-erin"),
        "{:?}",
        status.message
    );
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    // `01` is task-1's number: labelled (and pruned) as task-1.
    assert_eq!(run.labels().get(labels::TASK).map(String::as_str), Some("task-1"));
    common::warning_event(&client, "ValidationError", "erin-1").await;

    let erin = eventually("the attempt in the Session's task status", || async {
        let s = get_session(&client, "erin").await;
        (session_task(&s, "task-1").attempts == 1).then_some(s)
    })
    .await;
    let task1 = session_task(&erin, "task-1");
    assert_eq!(task1.state, TaskState::Pending, "an error leaves the state");
    assert_eq!(task1.last_run.as_deref(), Some("erin-1"));
    assert_eq!(task1.last_run_time, status.completion_time);
    assert_eq!(session_task(&erin, "task-2").attempts, 0);
    assert_eq!(
        erin.status.as_ref().unwrap().phase,
        cks_api::session::SessionPhase::Ready
    );

    // Three more runs of task 1 (as `task-1`, `1`, `01`; one created with a task label of its
    // own, which the controller replaces) and one of every task.
    let runs: Api<ValidationRun> = Api::namespaced(client.clone(), NS);
    for (name, task) in [
        ("erin-2", "task-1"),
        ("erin-3", "1"),
        ("erin-4", "01"),
        ("erin-all", ""),
    ] {
        let run: ValidationRun = serde_json::from_value(json!({
            "apiVersion": "cks.io/v1alpha1", "kind": "ValidationRun",
            "metadata": {"name": name, "namespace": NS, "labels": {"cks.io/task": task}},
            "spec": {"session": "erin", "task": task},
        }))
        .unwrap();
        runs.create(&PostParams::default(), &run).await.unwrap();
        finished_run(&client, name).await;
    }
    eventually(
        "the two newest runs of task 1 and the all-tasks run kept",
        || async {
            let mut names: Vec<String> = runs
                .list(&ListParams::default().labels("cks.io/session=erin"))
                .await
                .ok()?
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect();
            names.sort();
            (names == ["erin-3", "erin-4", "erin-all"]).then_some(())
        },
    )
    .await;
    let erin = eventually("every attempt counted", || async {
        let s = get_session(&client, "erin").await;
        (session_task(&s, "task-1").attempts == 5 && session_task(&s, "task-2").attempts == 1).then_some(s)
    })
    .await;
    assert_eq!(
        session_task(&erin, "task-1").last_run.as_deref(),
        Some("erin-all")
    );

    // Reconciling a finished run again changes nothing.
    let before = runs.get("erin-4").await.unwrap();
    let guarded: Api<DeserializeGuard<ValidationRun>> = Api::namespaced(client.clone(), NS);
    let guard = guarded.get("erin-4").await.unwrap();
    validation_run::reconcile(Arc::new(guard), ctx.clone())
        .await
        .expect("reconcile");
    let after = runs.get("erin-4").await.unwrap();
    assert_eq!(after.resource_version(), before.resource_version());
    assert_eq!(after.status, before.status);
    assert_eq!(
        get_session(&client, "erin").await.resource_version(),
        erin.resource_version()
    );
}

/// A simulator with one Available cluster of a control plane and a worker.
async fn sim_cluster() -> (cks_devcluster::DevCluster, Client, PracticeCluster) {
    let (server, client) = common::sim::start(&[], None).await;
    Api::<ClusterPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &common::pool("pool", 1, 1, 1))
        .await
        .unwrap();
    let pc = eventually("an Available cluster", || async {
        let pc = common::clusters(&client, "pool").await.into_iter().next()?;
        (pc.status.as_ref()?.phase == PracticeClusterPhase::Available).then_some(pc)
    })
    .await;
    (server, client, pc)
}

fn vm_ip(pc: &PracticeCluster, target: &str) -> String {
    pc.status
        .as_ref()
        .and_then(|s| s.vms.iter().find(|v| v.target == target))
        .and_then(|v| v.ip.clone())
        .unwrap_or_else(|| panic!("an IP for {target}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_students_work_turns_failed_runs_into_passed_ones() {
    let (_server, client, pc) = sim_cluster().await;
    let catalog = catalog();
    let ctx = start_controller(common::sim::context(&client), &catalog);
    let cluster = pc.name_any();
    ready_session(&client, "alice", SCENARIO, Some(&cluster), &["task-1", "task-2"]).await;

    // The student works through the practice cluster's API with its admin kubeconfig...
    let practice = PracticeAccess::load(&ctx, &pc)
        .await
        .unwrap()
        .client()
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(practice.clone());
    let ns = |label: &str| {
        serde_json::from_value::<Namespace>(json!({"metadata": {"name": "secure",
            "labels": {"pod-security.kubernetes.io/enforce": label}}}))
        .unwrap()
    };
    namespaces
        .create(&PostParams::default(), &ns("baseline"))
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(practice.clone(), "secure");
    let settings: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "settings"},
        "data": {"mode": "strict-v2", "replicas": "3", "owner": "alice", "password": "hunter2"}}))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &settings)
        .await
        .unwrap();

    create_run(&client, "t1-wrong", "alice", "01").await;
    let run = finished_run(&client, "t1-wrong").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, ValidationRunPhase::Failed, "{:?}", status.results);
    assert_eq!((status.passed_rules, status.total_rules), (7, 9));
    let label = rule(&run, "enforce-label");
    assert!(!label.passed && !label.error);
    assert_eq!(
        label.message,
        "Label namespace secure with pod-security.kubernetes.io/enforce=restricted."
    );
    assert_eq!(label.actual.as_deref(), Some("baseline"));
    assert_eq!(
        label.expected.as_deref().map(|e| e.contains("restricted")),
        Some(true)
    );
    let password = rule(&run, "no-password");
    assert_eq!(password.message, "Never keep a password in a ConfigMap.");
    assert!(password.actual.as_deref().unwrap_or_default().contains("hunter2"));
    assert_eq!(complete_reason(&run), "Failed");
    let failed_event = common::warning_event(&client, "ValidationFailed", "t1-wrong").await;
    assert!(failed_event.message.unwrap_or_default().contains("enforce-label"));

    // ...fixes it...
    namespaces
        .patch(
            "secure",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}),
            ),
        )
        .await
        .unwrap();
    config_maps
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "remove", "path": "/data/password"}])).unwrap(),
            ),
        )
        .await
        .unwrap();
    create_run(&client, "t1-right", "alice", "01").await;
    let run = finished_run(&client, "t1-right").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, ValidationRunPhase::Passed, "{:?}", status.results);
    assert_eq!((status.passed_rules, status.total_rules), (9, 9));
    assert!(status.results.iter().all(|r| r.passed && r.message.is_empty()));

    // ...and works on the VMs over SSH.
    let cp = ssh_login(&vm_ip(&pc, "control-plane")).await;
    let worker = ssh_login(&vm_ip(&pc, "worker-1")).await;
    let (_, code) = ssh_exec(
        &cp,
        "mkdir -p /etc/cks && echo audit > /etc/cks/mode && echo debug > /etc/cks/insecure",
    )
    .await;
    assert_eq!(code, 0);
    create_run(&client, "t2-wrong", "alice", "02").await;
    let run = finished_run(&client, "t2-wrong").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, ValidationRunPhase::Failed, "{:?}", status.results);
    let mode = rule(&run, "mode-is-enforce");
    assert!(!mode.passed && !mode.error);
    assert_eq!(mode.message, "/etc/cks/mode must say enforce.");
    assert_eq!(mode.actual.as_deref().map(str::trim), Some("audit"));
    let audit = rule(&run, "audit-script");
    assert!(!audit.passed && !audit.error);
    assert!(
        audit.actual.as_deref().unwrap_or_default().contains('4'),
        "{audit:?}"
    );
    for passing in ["mode-listed", "mode-readable", "mode-one-line", "mode-file"] {
        assert!(rule(&run, passing).passed, "{passing}: {:?}", rule(&run, passing));
    }
    for failing in [
        "no-insecure-marker",
        "insecure-file-gone",
        "mode-content",
        "mode-content-line",
        "mode-content-part",
        "insecure-content-gone",
        "worker-marked",
        "worker-kernel-args",
    ] {
        let r = rule(&run, failing);
        assert!(!r.passed && !r.error, "{failing}: {r:?}");
    }

    let (_, code) = ssh_exec(&cp, "echo enforce > /etc/cks/mode && rm /etc/cks/insecure").await;
    assert_eq!(code, 0);
    let (_, code) = ssh_exec(&worker, "mkdir -p /etc/cks && echo hardened > /etc/cks/worker-ok").await;
    assert_eq!(code, 0);
    create_run(&client, "t2-right", "alice", "02").await;
    let run = finished_run(&client, "t2-right").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, ValidationRunPhase::Passed, "{:?}", status.results);
    assert_eq!((status.passed_rules, status.total_rules), (14, 14));

    create_run(&client, "all-right", "alice", "").await;
    let run = finished_run(&client, "all-right").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, ValidationRunPhase::Passed, "{:?}", status.results);
    assert_eq!((status.passed_rules, status.total_rules), (23, 23));
    assert_eq!(run.labels().get(labels::TASK).map(String::as_str), Some(""));

    // The Session's task status followed every run.
    let session = eventually("both tasks recorded", || async {
        let s = get_session(&client, "alice").await;
        let done = ["task-1", "task-2"]
            .iter()
            .all(|t| session_task(&s, t).last_run.as_deref() == Some("all-right"));
        done.then_some(s)
    })
    .await;
    for task in ["task-1", "task-2"] {
        let t = session_task(&session, task);
        assert_eq!(t.state, TaskState::Passed, "{task}");
        assert_eq!(t.attempts, 3, "{task}");
        assert!(t.last_run_time.is_some());
    }

    // Metrics: every run counted by phase, every rule type timed.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &ctx.metrics.registry()).unwrap();
    for line in [
        r#"cks_operator_validation_runs_total{phase="Passed"} 3"#,
        r#"cks_operator_validation_runs_total{phase="Failed"} 2"#,
        "cks_operator_validation_duration_seconds_count 5",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    for rule_type in [
        "resource_exists",
        "resource_property",
        "command",
        "script",
        "file_exists",
        "file_content",
    ] {
        let name =
            format!(r#"cks_operator_validation_rule_duration_seconds_count{{rule_type="{rule_type}"}}"#);
        assert!(text.contains(&name), "{name} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_ssh_accepts_only_the_host_key_pinned_for_the_cluster() {
    use cks_kubevirt::naming::VmId;
    use cks_validation::{SshExecutor, VmExec, script_request};
    let (_server, client, pc) = sim_cluster().await;
    let ctx = common::sim::context(&client);
    let vm_namespace = pc.status.as_ref().and_then(|s| s.namespace.clone()).unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &vm_namespace);
    let secret_name = format!("{}-ssh-host-key", pc.name_any());
    let secret = secrets.get(&secret_name).await.unwrap();
    let pinned = String::from_utf8(secret.data.unwrap()["ssh_host_ed25519_key.pub"].0.clone()).unwrap();
    let pinned_fingerprint = russh::keys::PublicKey::from_openssh(&pinned)
        .unwrap()
        .fingerprint(russh::keys::HashAlg::Sha256)
        .to_string();

    // Every VM presents the key the cluster controller gave it through cloud-init.
    let access = PracticeAccess::load(&ctx, &pc).await.unwrap();
    let ssh = SshExecutor::new(access.targets.clone(), access.ssh.clone());
    for vm in [VmId::ControlPlane, VmId::Worker(1)] {
        let out = ssh.exec(vm, script_request("true")).await.unwrap();
        assert_eq!(out.code(), Some(0));
    }
    let seen = ssh.host_keys();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.values().all(|f| *f == pinned_fingerprint),
        "{seen:?} vs {pinned_fingerprint}"
    );

    // Another key pinned (the VMs are not who the operator thinks): nothing logs in.
    let other = cks_validation::generate_host_key().unwrap();
    secrets
        .patch(
            &secret_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"ssh_host_ed25519_key.pub": other.public_openssh}})),
        )
        .await
        .unwrap();
    let access = PracticeAccess::load(&ctx, &pc).await.unwrap();
    let ssh = SshExecutor::new(access.targets.clone(), access.ssh.clone());
    let err = ssh
        .exec(VmId::ControlPlane, script_request("true"))
        .await
        .unwrap_err();
    assert_eq!(err.category(), "ssh-host-key", "{err}");
    assert!(err.to_string().contains(&pinned_fingerprint), "{err}");

    // A cluster without a pinned key is not reached over SSH at all.
    secrets
        .delete(&secret_name, &DeleteParams::default())
        .await
        .unwrap();
    let err = PracticeAccess::load(&ctx, &pc).await.unwrap_err();
    assert!(err.to_string().contains("no pinned SSH host key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_drops_ssh_mid_rule_ends_the_run_in_error() {
    let (_server, client, pc) = sim_cluster().await;
    let catalog = catalog();
    start_controller(common::sim::context(&client), &catalog);
    let cluster = pc.name_any();
    ready_session(&client, "bob", SLOW_SCENARIO, Some(&cluster), &["task-1"]).await;

    let cp = ssh_login(&vm_ip(&pc, "control-plane")).await;
    create_run(&client, "slow-1", "bob", "01").await;
    let runs: Api<ValidationRun> = Api::namespaced(client.clone(), NS);
    eventually("the slow rule running on the VM", || async {
        let run = runs.get("slow-1").await.ok()?;
        let running = run.status.as_ref()?.phase == ValidationRunPhase::Running;
        (running && ssh_exec(&cp, "test -e /tmp/validation-started").await.1 == 0).then_some(())
    })
    .await;

    // The VM goes down under the rule.
    let vm_namespace = pc.status.as_ref().and_then(|s| s.namespace.clone()).unwrap();
    let vm = pc
        .status
        .as_ref()
        .and_then(|s| s.vms.iter().find(|v| v.target == "control-plane"))
        .map(|v| v.name.clone())
        .unwrap();
    let stop = http::Request::put(format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{vm_namespace}/virtualmachines/{vm}/stop"
    ))
    .body(Vec::new())
    .unwrap();
    client.request_text(stop).await.expect("stop the VM");

    let run = finished_run(&client, "slow-1").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, ValidationRunPhase::Error, "{:?}", status.results);
    assert_eq!(complete_reason(&run), reasons::RULE_ERROR);
    let slow = rule(&run, "slow-audit");
    assert!(slow.error && !slow.passed, "{slow:?}");
    assert!(
        slow.message.contains("control-plane"),
        "the cause names the VM: {}",
        slow.message
    );
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("slow-audit") && message.contains(&slow.message),
        "{message}"
    );
    common::warning_event(&client, "ValidationError", "slow-1").await;
    let session = eventually("the attempt recorded", || async {
        let s = get_session(&client, "bob").await;
        (session_task(&s, "task-1").attempts == 1).then_some(s)
    })
    .await;
    assert_eq!(session_task(&session, "task-1").state, TaskState::Pending);

    // Deleting the Session takes its runs with it.
    Api::<Session>::namespaced(client.clone(), NS)
        .delete("bob", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the run garbage-collected with its Session", || async {
        runs.get_opt("slow-1").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_evaluates_running_runs_again_and_records_finished_ones_once() {
    let (_server, client) = common::start().await;
    let catalog = catalog();
    inert_cluster(&client, "c-fay").await;
    ready_session(&client, "fay", SCENARIO, Some("c-fay"), &["task-1", "task-2"]).await;

    // What a previous operator left: a run stopped mid-evaluation, and a finished run whose
    // attempt never reached the Session.
    let runs: Api<ValidationRun> = Api::namespaced(client.clone(), NS);
    create_run(&client, "fay-running", "fay", "01").await;
    create_run(&client, "fay-finished", "fay", "02").await;
    let started = "2026-01-01T00:00:00Z";
    let running = json!({"status": {"phase": "Running", "startTime": started}});
    runs.patch_status("fay-running", &PatchParams::default(), &Patch::Merge(&running))
        .await
        .unwrap();
    let finished = json!({"status": {
        "phase": "Failed", "startTime": started, "completionTime": started,
        "message": "0 of 1 rules passed; failed: mode-is-enforce", "passedRules": 0, "totalRules": 1,
        "results": [{"task": "task-2", "id": "mode-is-enforce", "passed": false,
            "message": "/etc/cks/mode must say enforce.", "actual": "audit"}],
        "conditions": [{"type": "Complete", "status": "True", "reason": "Failed",
            "message": "0 of 1 rules passed", "lastTransitionTime": started}],
    }});
    runs.patch_status("fay-finished", &PatchParams::default(), &Patch::Merge(&finished))
        .await
        .unwrap();
    let before = runs.get("fay-finished").await.unwrap().status.unwrap();

    let ctx = start_controller(Context::test(client.clone()), &catalog);
    let run = eventually("the interrupted run evaluated again", || async {
        let run = runs.get("fay-running").await.ok()?;
        (run.status.as_ref()?.phase == ValidationRunPhase::Error).then_some(run)
    })
    .await;
    assert_eq!(complete_reason(&run), reasons::CLUSTER_UNREACHABLE);
    assert_ne!(
        run.status
            .as_ref()
            .unwrap()
            .start_time
            .as_ref()
            .map(|t| t.0.to_string()),
        Some(started.to_owned()),
        "a new evaluation has a new start"
    );

    let session = eventually("both attempts recorded", || async {
        let s = get_session(&client, "fay").await;
        (session_task(&s, "task-1").attempts == 1 && session_task(&s, "task-2").attempts == 1).then_some(s)
    })
    .await;
    let task2 = session_task(&session, "task-2");
    assert_eq!(task2.state, TaskState::Failed);
    assert_eq!(task2.last_run.as_deref(), Some("fay-finished"));
    let recorded = eventually("the finished run marked as recorded", || async {
        let run = runs.get("fay-finished").await.ok()?;
        let marked = run
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == validation_run::TASKS_RECORDED);
        marked.then_some(run)
    })
    .await;
    let after = recorded.status.clone().unwrap();
    assert_eq!(
        (after.phase, &after.results, &after.message),
        (before.phase, &before.results, &before.message),
        "a finished run is never evaluated again"
    );

    // Once recorded, reconciling it again touches neither the run nor the Session.
    let session = get_session(&client, "fay").await;
    let guarded: Api<DeserializeGuard<ValidationRun>> = Api::namespaced(client.clone(), NS);
    let guard = guarded.get("fay-finished").await.unwrap();
    validation_run::reconcile(Arc::new(guard), ctx)
        .await
        .expect("reconcile");
    assert_eq!(
        runs.get("fay-finished").await.unwrap().resource_version(),
        recorded.resource_version()
    );
    assert_eq!(
        get_session(&client, "fay").await.resource_version(),
        session.resource_version()
    );
    assert_eq!(session_task(&session, "task-2").attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_finishing_together_all_count_in_the_session() {
    let (_server, client) = common::start().await;
    let catalog = catalog();
    let ctx = start_controller(Context::test(client.clone()), &catalog);
    inert_cluster(&client, "c-gus").await;
    ready_session(&client, "gus", SCENARIO, Some("c-gus"), &["task-1", "task-2"]).await;

    // Created at once, evaluated concurrently: their Session writes conflict and are retried.
    let names: Vec<String> = (0..6).map(|i| format!("gus-{i}")).collect();
    futures::future::join_all(names.iter().enumerate().map(|(i, name)| {
        let client = client.clone();
        async move {
            let task = if i % 2 == 0 { "01" } else { "" };
            create_run(&client, name, "gus", task).await;
        }
    }))
    .await;
    for name in &names {
        finished_run(&client, name).await;
    }
    let session = eventually("six attempts on task 1 and three on task 2", || async {
        let s = get_session(&client, "gus").await;
        let counts = (
            session_task(&s, "task-1").attempts,
            session_task(&s, "task-2").attempts,
        );
        (counts == (6, 3)).then_some(s)
    })
    .await;
    let last = session_task(&session, "task-1").last_run.unwrap();
    assert!(names.contains(&last), "{last}");
    // Each run was evaluated exactly once, though its own writes queued more reconciles.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &ctx.metrics.registry()).unwrap();
    assert!(
        text.contains(r#"cks_operator_validation_runs_total{phase="Error"} 6"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_session_controller_a_student_validates_a_task_end_to_end() {
    let (_server, client) = common::sim::start(&[], None).await;
    let catalog = catalog();
    Api::<ClusterPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &common::pool("pool", 1, 1, 1))
        .await
        .unwrap();
    let ctx = start_controller(common::sim::context(&client), &catalog);
    let sessions_ctx = Arc::new(Context {
        scenarios: Some(catalog.store.clone()),
        ..common::sim::context(&client)
    });
    tokio::spawn(cks_operator::session::run(
        sessions_ctx,
        Some(NS),
        std::future::pending(),
    ));

    let session: Session = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "Session",
        "metadata": {"name": "hana", "namespace": NS},
        "spec": {"scenario": SCENARIO, "user": "hana", "pool": "pool", "durationMinutes": 60},
    }))
    .unwrap();
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    sessions.create(&PostParams::default(), &session).await.unwrap();
    let session = eventually("the Session Ready", || async {
        let s = sessions.get("hana").await.ok()?;
        (s.status.as_ref()?.phase == cks_api::session::SessionPhase::Ready).then_some(s)
    })
    .await;
    let cluster = session.status.as_ref().unwrap().cluster.clone().unwrap();
    let pc = Api::<PracticeCluster>::namespaced(client.clone(), NS)
        .get(&cluster)
        .await
        .unwrap();

    // The student solves task 1 through the practice API.
    let practice = PracticeAccess::load(&ctx, &pc)
        .await
        .unwrap()
        .client()
        .await
        .unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "secure",
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}))
    .unwrap();
    Api::<Namespace>::all(practice.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let settings: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "settings"},
        "data": {"mode": "strict-v1", "replicas": "5", "owner": "hana"}}))
    .unwrap();
    Api::<ConfigMap>::namespaced(practice, "secure")
        .create(&PostParams::default(), &settings)
        .await
        .unwrap();

    create_run(&client, "hana-1", "hana", "01").await;
    let run = finished_run(&client, "hana-1").await;
    assert_eq!(
        run.status.as_ref().unwrap().phase,
        ValidationRunPhase::Passed,
        "{:?}",
        run.status
    );
    let session = eventually("task 1 Passed in the Session", || async {
        let s = sessions.get("hana").await.ok()?;
        (session_task(&s, "task-1").state == TaskState::Passed).then_some(s)
    })
    .await;
    let task1 = session_task(&session, "task-1");
    assert_eq!((task1.attempts, task1.last_run.as_deref()), (1, Some("hana-1")));
    assert_eq!(session_task(&session, "task-2").attempts, 0);
    // The Session controller keeps its hands off the tasks: still recorded after it next
    // writes the Session (raising the duration makes it recompute the expiry).
    sessions
        .patch(
            "hana",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"durationMinutes": 90}})),
        )
        .await
        .unwrap();
    let session = eventually("the new expiry written", || async {
        let s = sessions.get("hana").await.ok()?;
        (s.status.as_ref()?.observed_generation == s.metadata.generation).then_some(s)
    })
    .await;
    assert_eq!(session_task(&session, "task-1").attempts, 1);
    assert_eq!(session_task(&session, "task-1").state, TaskState::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_port_forward_transport_vm_rules_run_through_the_host_api() {
    let (server, client, pc) = sim_cluster().await;
    let catalog = catalog();
    let host_config = kube::Config::from_custom_kubeconfig(
        server.kubeconfig().clone(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let config = ControllerConfig {
        ssh_transport: cks_operator::config::SshTransportKind::PortForward,
        ..common::sim::config()
    };
    let ctx = Context {
        config: Arc::new(config),
        host_config: Some(Arc::new(host_config)),
        ..common::sim::context(&client)
    };
    start_controller(ctx, &catalog);
    ready_session(
        &client,
        "pf",
        SCENARIO,
        Some(&pc.name_any()),
        &["task-1", "task-2"],
    )
    .await;

    let cp = ssh_login(&vm_ip(&pc, "control-plane")).await;
    let worker = ssh_login(&vm_ip(&pc, "worker-1")).await;
    let (_, code) = ssh_exec(&cp, "mkdir -p /etc/cks && echo enforce > /etc/cks/mode").await;
    assert_eq!(code, 0);
    let (_, code) = ssh_exec(&worker, "mkdir -p /etc/cks && echo hardened > /etc/cks/worker-ok").await;
    assert_eq!(code, 0);
    create_run(&client, "pf-1", "pf", "02").await;
    let run = finished_run(&client, "pf-1").await;
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, ValidationRunPhase::Passed, "{:?}", status.results);
    assert_eq!((status.passed_rules, status.total_rules), (14, 14));
}
