//! The Session controller against the development control plane.
//!
//! Fast tests use hand-made Available PracticeClusters and a stand-in for the cluster
//! controller (claimed → Assigned, released → Available; `common::session_env::reset_loop`):
//! allocation, FIFO queueing with positions, 500 Sessions against 100 clusters with one and
//! with two controllers, every Failed reason, expiry, extension, force-release, deletion and
//! idempotency. Simulator tests run the real pool and cluster controllers on simulated VMs:
//! setup steps over SSH and through the practice API, a reset between students, and a
//! failing setup step.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cks_api::PracticeCluster;
use cks_api::conditions::find_condition;
use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::session::{Session, SessionPhase};
use cks_operator::access::PracticeAccess;
use cks_operator::context::Context;
use cks_operator::session::reasons;
use cks_validation::ssh::vm_of;
use cks_validation::{ExecRequest, SshExecutor, VmExec};
use common::session_env::{
    ScenarioDef, all_clusters, available_cluster, catalog, context, create_pool, create_session, phase,
    reset_loop, run_controller, session, sessions, wait_session,
};
use common::{NS, eventually};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

fn condition(s: &Session, type_: &str) -> Option<(String, String, String)> {
    let c = find_condition(&s.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn holder(pc: &PracticeCluster) -> Option<String> {
    pc.spec.claim_ref.as_ref().map(|c| c.name.clone())
}

fn reconciles(ctx: &Context) -> u64 {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &ctx.metrics.registry()).unwrap();
    out.lines()
        .find(|l| l.starts_with("cks_operator_reconciles_total{controller=\"session\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_gets_a_cluster_with_terminals_and_tasks_and_a_second_reconcile_writes_nothing() {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    let _resets = reset_loop(&client);
    let ctx = Arc::new(context(&client, Some(scenarios)));
    let (_stop, _handle) = run_controller(ctx.clone());

    create_session(&client, &session("alice", "alice", "p", "basics")).await;
    let s = wait_session(&client, "alice", "Ready", |s| phase(s) == SessionPhase::Ready).await;
    let status = s.status.clone().unwrap();
    assert_eq!(status.cluster.as_deref(), Some("p-one"));
    assert!(s.finalizers().iter().any(|f| f == "cks.io/session-release"));
    let started = status.started_at.clone().unwrap().0;
    let expires = status.expires_at.clone().unwrap().0;
    assert_eq!(expires.duration_since(started).as_secs(), 60 * 60);
    let terminals: Vec<(String, Option<String>, Option<i32>)> = status
        .terminals
        .iter()
        .map(|t| (t.id.clone(), t.host.clone(), t.port))
        .collect();
    assert_eq!(
        terminals,
        vec![
            (
                "alice-control-plane".to_owned(),
                Some("10.0.2.1".to_owned()),
                Some(22)
            ),
            ("alice-worker-1".to_owned(), Some("10.0.2.2".to_owned()), Some(22)),
        ]
    );
    let tasks: Vec<&str> = status.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(tasks, ["task-1", "task-2"]);
    assert!(status.tasks.iter().all(|t| t.attempts == 0));
    assert_eq!(condition(&s, "ClusterAssigned").unwrap().0, "True");
    assert_eq!(condition(&s, "ScenarioReady").unwrap().0, "True");
    assert_eq!(condition(&s, "Ready").unwrap().0, "True");
    assert!(status.queue_position.is_none());
    // The allocator recorded its intent (with the finalizer) before it claimed.
    assert!(s.annotations().contains_key("cks.io/claim-intent"));

    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let pc = eventually("the cluster Assigned to alice", || async {
        let pc = clusters.get("p-one").await.ok()?;
        (pc.status.as_ref()?.phase == PracticeClusterPhase::Assigned).then_some(pc)
    })
    .await;
    assert_eq!(holder(&pc).as_deref(), Some("alice"));
    assert_eq!(pc.spec.claim_ref.as_ref().unwrap().uid, s.uid());

    // A change that needs nothing new: the reconcile it triggers writes nothing.
    let sessions_api: Api<Session> = Api::namespaced(client.clone(), NS);
    let before = reconciles(&ctx);
    let touched = sessions_api
        .patch(
            "alice",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/touch": "1"}}})),
        )
        .await
        .unwrap();
    eventually("a reconcile after the touch", || async {
        (reconciles(&ctx) > before).then_some(())
    })
    .await;
    let again = sessions_api.get("alice").await.unwrap();
    assert_eq!(again.resource_version(), touched.resource_version());
    assert_eq!(
        clusters.get("p-one").await.unwrap().resource_version(),
        pc.resource_version()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_is_capped_by_the_pool_and_expiry_releases_the_cluster() {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    let _resets = reset_loop(&client);
    let (_stop, _handle) = run_controller(Arc::new(context(&client, Some(scenarios))));
    create_session(&client, &session("bob", "bob", "p", "basics")).await;
    let s = wait_session(&client, "bob", "Ready", |s| phase(s) == SessionPhase::Ready).await;
    let started = s.status.unwrap().started_at.unwrap().0;
    let minutes = |s: &Session| {
        let st = s.status.as_ref().unwrap();
        st.expires_at
            .as_ref()
            .unwrap()
            .0
            .duration_since(started)
            .as_secs()
            / 60
    };

    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    let extend = |m: i32| Patch::Merge(json!({"spec": {"durationMinutes": m}}));
    api.patch("bob", &PatchParams::default(), &extend(90))
        .await
        .unwrap();
    wait_session(&client, "bob", "expiry moved to 90 minutes", |s| minutes(s) == 90).await;
    api.patch("bob", &PatchParams::default(), &extend(200))
        .await
        .unwrap();
    let s = wait_session(&client, "bob", "expiry capped at the pool's 120 minutes", |s| {
        minutes(s) == 120 && s.status.as_ref().unwrap().observed_generation == s.metadata.generation
    })
    .await;
    let message = s.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("at most 120"), "{message}");
    common::session_env::event(&client, "Normal", reasons::EXTENDED, "bob").await;
    let capped = common::session_env::event(&client, "Normal", reasons::DURATION_CAPPED, "bob").await;
    assert!(
        capped
            .message
            .unwrap_or_default()
            .contains("200 minutes requested")
    );

    // startedAt is the source of truth: moved into the past, the session is over.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3);
    api.patch_status(
        "bob",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"startedAt": past.to_string()}})),
    )
    .await
    .unwrap();
    let s = wait_session(&client, "bob", "Expired", |s| phase(s) == SessionPhase::Expired).await;
    let status = s.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some(reasons::EXPIRED));
    assert!(status.ended_at.is_some());
    common::session_env::event(&client, "Normal", reasons::EXPIRED, "bob").await;
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    eventually("the cluster released and Available again", || async {
        let pc = clusters.get("p-one").await.ok()?;
        let st = pc.status.as_ref()?;
        (pc.spec.claim_ref.is_none()
            && st.phase == PracticeClusterPhase::Available
            && st.sessions_served == 1)
            .then_some(())
    })
    .await;
    // Terminal phases never change again.
    api.patch("bob", &PatchParams::default(), &extend(300))
        .await
        .unwrap();
    create_session(&client, &session("bob-2", "bob", "p", "basics")).await;
    wait_session(&client, "bob-2", "Ready on the reset cluster", |s| {
        phase(s) == SessionPhase::Ready && s.status.as_ref().unwrap().cluster.as_deref() == Some("p-one")
    })
    .await;
    assert_eq!(phase(&api.get("bob").await.unwrap()), SessionPhase::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_release_ends_and_delete_releases_and_the_cluster_serves_the_next_session() {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    let _resets = reset_loop(&client);
    let (_stop, _handle) = run_controller(Arc::new(context(&client, Some(scenarios))));
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);

    // Asking for more than the pool allows from the start: capped at the claim.
    let mut carol = session("carol", "carol", "p", "basics");
    carol.spec.duration_minutes = 200;
    create_session(&client, &carol).await;
    let s = wait_session(&client, "carol", "Ready", |s| phase(s) == SessionPhase::Ready).await;
    let st = s.status.unwrap();
    let granted = st.expires_at.unwrap().0.duration_since(st.started_at.unwrap().0);
    assert_eq!(granted.as_secs(), 120 * 60);
    common::session_env::event(&client, "Normal", reasons::DURATION_CAPPED, "carol").await;
    api.patch(
        "carol",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"cks.io/force-release": "admin"}}})),
    )
    .await
    .unwrap();
    let s = wait_session(&client, "carol", "Ended", |s| phase(s) == SessionPhase::Ended).await;
    assert_eq!(s.status.unwrap().reason.as_deref(), Some(reasons::FORCE_RELEASED));

    create_session(&client, &session("dan", "dan", "p", "basics")).await;
    let dan = wait_session(&client, "dan", "Ready on p-one", |s| {
        phase(s) == SessionPhase::Ready && s.status.as_ref().unwrap().cluster.as_deref() == Some("p-one")
    })
    .await;
    create_session(&client, &session("erin", "erin", "p", "basics")).await;
    wait_session(&client, "erin", "waiting first in the queue", |s| {
        phase(s) == SessionPhase::WaitingForCluster && s.status.as_ref().unwrap().queue_position == Some(1)
    })
    .await;

    api.delete("dan", &DeleteParams::default()).await.unwrap();
    eventually("dan gone", || async {
        api.get_opt("dan").await.ok()?.is_none().then_some(())
    })
    .await;
    let erin = wait_session(&client, "erin", "Ready on p-one", |s| {
        phase(s) == SessionPhase::Ready && s.status.as_ref().unwrap().cluster.as_deref() == Some("p-one")
    })
    .await;
    let pc = clusters.get("p-one").await.unwrap();
    assert_eq!(pc.spec.claim_ref.as_ref().unwrap().uid, erin.uid());
    assert_ne!(erin.uid(), dan.uid());
    assert!(
        pc.status.unwrap().sessions_served >= 2,
        "two resets before erin's claim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_sessions_are_served_in_creation_order_with_their_queue_positions() {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    let _resets = reset_loop(&client);
    let (_stop, _handle) = run_controller(Arc::new(context(&client, Some(scenarios))));
    let names = ["q0", "q1", "q2", "q3", "q4"];
    for name in names {
        create_session(&client, &session(name, name, "p", "basics")).await;
    }
    wait_session(&client, "q0", "Ready", |s| phase(s) == SessionPhase::Ready).await;
    for (i, name) in names.iter().enumerate().skip(1) {
        let want = i32::try_from(i).unwrap();
        wait_session(&client, name, &format!("queue position {want}"), |s| {
            phase(s) == SessionPhase::WaitingForCluster
                && s.status.as_ref().unwrap().queue_position == Some(want)
        })
        .await;
    }
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    for (i, name) in names.iter().enumerate().take(names.len() - 1) {
        api.delete(name, &DeleteParams::default()).await.unwrap();
        let next = names[i + 1];
        wait_session(&client, next, "Ready", |s| phase(s) == SessionPhase::Ready).await;
        for (j, later) in names.iter().enumerate().skip(i + 2) {
            let want = i32::try_from(j - i - 1).unwrap();
            wait_session(&client, later, &format!("moved up to {want}"), |s| {
                phase(s) == SessionPhase::WaitingForCluster
                    && s.status.as_ref().unwrap().queue_position == Some(want)
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_controller_carries_on_from_the_status_alone() {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    let _resets = reset_loop(&client);
    let (stop, handle) = run_controller(Arc::new(context(&client, Some(scenarios.clone()))));
    create_session(&client, &session("kim", "kim", "p", "basics")).await;
    create_session(&client, &session("lou", "lou", "p", "basics")).await;
    wait_session(&client, "kim", "Ready", |s| phase(s) == SessionPhase::Ready).await;
    wait_session(&client, "lou", "queued first", |s| {
        s.status.as_ref().and_then(|st| st.queue_position) == Some(1)
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    // Nothing runs: the deletion waits on the finalizer.
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    api.delete("kim", &DeleteParams::default()).await.unwrap();
    assert!(
        api.get("kim")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    let (_stop, _handle) = run_controller(Arc::new(context(&client, Some(scenarios))));
    eventually("kim gone", || async {
        api.get_opt("kim").await.ok()?.is_none().then_some(())
    })
    .await;
    let lou = wait_session(&client, "lou", "Ready on p-one", |s| {
        phase(s) == SessionPhase::Ready && s.status.as_ref().unwrap().cluster.as_deref() == Some("p-one")
    })
    .await;
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    assert_eq!(
        clusters.get("p-one").await.unwrap().spec.claim_ref.unwrap().uid,
        lou.uid()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_in_other_case_or_with_spaces_is_still_one_user() {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    available_cluster(&client, "p-two", "p", 2).await;
    let _resets = reset_loop(&client);
    let (_stop, _handle) = run_controller(Arc::new(context(&client, Some(scenarios))));
    create_session(&client, &session("first", "Alice@Example.com", "p", "basics")).await;
    wait_session(&client, "first", "Ready", |s| phase(s) == SessionPhase::Ready).await;
    create_session(&client, &session("second", " alice@example.com ", "p", "basics")).await;
    let s = wait_session(&client, "second", "Failed", |s| phase(s).is_terminal()).await;
    let status = s.status.unwrap();
    assert_eq!(status.phase, SessionPhase::Failed);
    assert_eq!(status.reason.as_deref(), Some(reasons::USER_LIMIT_REACHED));
    assert!(status.cluster.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_in_the_future_is_clamped_to_now_so_the_session_still_expires() {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    let _resets = reset_loop(&client);
    let (_stop, _handle) = run_controller(Arc::new(context(&client, Some(scenarios))));
    create_session(&client, &session("gil", "gil", "p", "basics")).await;
    wait_session(&client, "gil", "Ready", |s| phase(s) == SessionPhase::Ready).await;

    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365 * 10);
    let before = jiff::Timestamp::now();
    api.patch_status(
        "gil",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"startedAt": future.to_string()}})),
    )
    .await
    .unwrap();
    let s = wait_session(&client, "gil", "startedAt no longer in the future", |s| {
        s.status
            .as_ref()
            .and_then(|st| st.started_at.as_ref())
            .is_some_and(|t| t.0 < future)
    })
    .await;
    let st = s.status.unwrap();
    let (started, expires) = (st.started_at.unwrap().0, st.expires_at.unwrap().0);
    let after = jiff::Timestamp::now();
    // Times are stored to the second.
    assert!(
        started >= before - jiff::SignedDuration::from_secs(1) && started <= after,
        "{started} not between {before} and {after}"
    );
    assert_eq!(expires.duration_since(started).as_secs(), 60 * 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sessions_fail_with_a_reason_and_an_event_and_claim_nothing() {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let two_workers = ScenarioDef {
        workers: 2,
        ..ScenarioDef::simple("big")
    };
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics"), two_workers]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    available_cluster(&client, "p-two", "p", 2).await;
    let _resets = reset_loop(&client);
    let (_stop, _handle) = run_controller(Arc::new(context(&client, Some(scenarios))));

    let cases = [
        (
            session("unknown", "u1", "p", "no-such-scenario"),
            reasons::SCENARIO_NOT_FOUND,
            "no-such-scenario",
        ),
        (
            session("nopool", "u2", "nowhere", "basics"),
            reasons::POOL_NOT_FOUND,
            "nowhere",
        ),
        (
            session("toobig", "u3", "p", "big"),
            reasons::REQUIREMENTS_NOT_MET,
            "2 worker nodes",
        ),
    ];
    for (s, _, _) in &cases {
        create_session(&client, s).await;
    }
    for (s, reason, needle) in &cases {
        let name = s.name_any();
        let failed = wait_session(&client, &name, "Failed", |s| phase(s) == SessionPhase::Failed).await;
        let status = failed.status.unwrap();
        assert_eq!(status.reason.as_deref(), Some(*reason), "{name}");
        assert!(
            status.message.as_deref().unwrap_or_default().contains(needle),
            "{name}: {status:?}"
        );
        assert!(status.cluster.is_none(), "{name} holds a cluster");
        common::warning_event(&client, reason, &name).await;
    }

    // Two Sessions of one user at once: the older wins, deterministically.
    let (first, second) = (
        session("dup-a", "frank", "p", "basics"),
        session("dup-b", "frank", "p", "basics"),
    );
    let (a, b) = tokio::join!(create_session(&client, &first), create_session(&client, &second));
    let ((), ()) = (a, b);
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    let (a, b) = (api.get("dup-a").await.unwrap(), api.get("dup-b").await.unwrap());
    let key = |s: &Session| (s.metadata.creation_timestamp.clone().unwrap().0, s.name_any());
    let (older, newer) = if key(&a) < key(&b) {
        ("dup-a", "dup-b")
    } else {
        ("dup-b", "dup-a")
    };
    let failed = wait_session(&client, newer, "Failed", |s| phase(s) == SessionPhase::Failed).await;
    assert_eq!(
        failed.status.unwrap().reason.as_deref(),
        Some(reasons::USER_LIMIT_REACHED)
    );
    common::warning_event(&client, reasons::USER_LIMIT_REACHED, newer).await;
    wait_session(&client, older, "Ready", |s| phase(s) == SessionPhase::Ready).await;

    // Only frank's older session holds a cluster.
    let held: Vec<String> = all_clusters(&client).await.iter().filter_map(holder).collect();
    assert_eq!(held, vec![older.to_owned()]);

    // The cluster failing under an active session loses it.
    let pc_name = api.get(older).await.unwrap().status.unwrap().cluster.unwrap();
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    clusters
        .patch_status(
            &pc_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed", "failureMessage": "disk on fire"}})),
        )
        .await
        .unwrap();
    let lost = wait_session(&client, older, "Failed", |s| phase(s) == SessionPhase::Failed).await;
    let status = lost.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some(reasons::CLUSTER_LOST));
    assert!(status.message.unwrap().contains("disk on fire"));
    common::warning_event(&client, reasons::CLUSTER_LOST, older).await;

    // A pool deleted under a waiting session: it would never get a cluster.
    create_pool(&client, &common::session_env::pool("empty", 1, 120)).await;
    create_session(&client, &session("stranded", "u4", "empty", "basics")).await;
    wait_session(&client, "stranded", "waiting", |s| {
        phase(s) == SessionPhase::WaitingForCluster
    })
    .await;
    let pools: Api<cks_api::ClusterPool> = Api::namespaced(client.clone(), NS);
    pools.delete("empty", &DeleteParams::default()).await.unwrap();
    let failed = wait_session(&client, "stranded", "Failed", |s| {
        phase(s) == SessionPhase::Failed
    })
    .await;
    assert_eq!(
        failed.status.unwrap().reason.as_deref(),
        Some(reasons::POOL_NOT_FOUND)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_catalog_every_session_fails_with_scenario_not_found() {
    let (_server, client) = common::start().await;
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    available_cluster(&client, "p-one", "p", 1).await;
    let (_stop, _handle) = run_controller(Arc::new(context(&client, None)));
    create_session(&client, &session("jo", "jo", "p", "basics")).await;
    let s = wait_session(&client, "jo", "Failed", |s| phase(s) == SessionPhase::Failed).await;
    let status = s.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some(reasons::SCENARIO_NOT_FOUND));
    assert!(status.message.unwrap().contains("no scenario catalog"));
    common::warning_event(&client, reasons::SCENARIO_NOT_FOUND, "jo").await;
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    assert!(clusters.get("p-one").await.unwrap().spec.claim_ref.is_none());
}

/// Watches every cluster's claimRef and records any moment a Session held two clusters,
/// or a claim moved from one Session to another without a release in between.
fn claim_watchdog(client: &Client) -> Arc<Mutex<Vec<String>>> {
    let violations = Arc::new(Mutex::new(Vec::new()));
    let out = violations.clone();
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    tokio::spawn(async move {
        let mut holders: HashMap<String, String> = HashMap::new();
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let Ok(pc) = event else { continue };
            let name = pc.name_any();
            let uid = pc.spec.claim_ref.as_ref().and_then(|c| c.uid.clone());
            match (holders.get(&name), &uid) {
                (Some(old), Some(new)) if old != new => {
                    out.lock()
                        .unwrap()
                        .push(format!("{name} moved from {old} to {new}"));
                }
                _ => {}
            }
            match uid {
                Some(uid) => {
                    if holders.iter().any(|(c, u)| *u == uid && *c != name) {
                        out.lock()
                            .unwrap()
                            .push(format!("session {uid} holds {name} and another cluster"));
                    }
                    holders.insert(name, uid);
                }
                None => {
                    holders.remove(&name);
                }
            }
        }
    });
    violations
}

/// Assigned Sessions (in creation order) and waiting ones with their positions, or `None`
/// while an assigned Session's cluster does not name it back or two Sessions name one
/// cluster (the two lists are read one after the other, so a moment may separate them).
async fn assigned_in_order(client: &Client) -> Option<(Vec<String>, Vec<(String, i32)>)> {
    let all = sessions(client).await;
    let clusters: BTreeMap<String, PracticeCluster> = all_clusters(client)
        .await
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    let mut seen = HashSet::new();
    let mut assigned = Vec::new();
    let mut waiting = Vec::new();
    let mut ordered: Vec<&Session> = all
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    ordered.sort_by_key(|s| (s.metadata.creation_timestamp.clone().unwrap().0, s.name_any()));
    for s in ordered {
        let st = s.status.clone().unwrap_or_default();
        match st.phase {
            SessionPhase::Initializing | SessionPhase::Ready => {
                let c = st.cluster.clone()?;
                let holder = clusters.get(&c)?.spec.claim_ref.as_ref()?.uid.clone();
                if !seen.insert(c) || holder != s.uid() {
                    return None;
                }
                assigned.push(s.name_any());
            }
            SessionPhase::WaitingForCluster => waiting.push((s.name_any(), st.queue_position.unwrap_or(0))),
            _ => {}
        }
    }
    Some((assigned, waiting))
}

async fn five_hundred_sessions_against_a_hundred_clusters(controllers: usize) {
    let (_server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
    futures::stream::iter(0..100u32)
        .for_each_concurrent(16, |i| {
            let client = client.clone();
            async move { available_cluster(&client, &format!("p-{i:03}"), "p", i).await }
        })
        .await;
    let violations = claim_watchdog(&client);
    let _resets = reset_loop(&client);
    // The queue stands before the controllers start: creates running 16 at once finish out of
    // name order within a second, and an allocator cannot know of a Session before its create
    // has finished (a burst racing allocation is tests/allocation.rs's, judged by what the
    // watches had shown at each claim).
    futures::stream::iter(0..500u32)
        .for_each_concurrent(16, |i| {
            let client = client.clone();
            async move {
                let name = format!("s-{i:03}");
                create_session(&client, &session(&name, &name, "p", "basics")).await;
            }
        })
        .await;
    let mut running = Vec::new();
    for _ in 0..controllers {
        running.push(run_controller(Arc::new(context(
            &client,
            Some(scenarios.clone()),
        ))));
    }

    let mut ordered: Vec<Session> = sessions(&client).await;
    ordered.sort_by_key(|s| (s.metadata.creation_timestamp.clone().unwrap().0, s.name_any()));
    let order: Vec<String> = ordered.iter().map(ResourceExt::name_any).collect();
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    let mut served_in_rounds = Vec::new();
    let last = Mutex::new(String::new());
    for round in 0..5 {
        let served = 100 * (round + 1);
        let expected: Vec<String> = order[100 * round..served].to_vec();
        let waiting_left = 500 - served;
        let (assigned, waiting) = common::session_env::eventually_long(
            &format!("round {round}: the next 100 in creation order assigned, the rest queued in order"),
            &last,
            || async {
                let Some((assigned, waiting)) = assigned_in_order(&client).await else {
                    *last.lock().unwrap() = "an assigned session's cluster does not name it".to_owned();
                    return None;
                };
                let phases = sessions(&client).await.iter().fold(BTreeMap::new(), |mut m, s| {
                    *m.entry(format!("{:?}", phase(s))).or_insert(0) += 1;
                    m
                });
                let misplaced: Vec<_> = waiting
                    .iter()
                    .enumerate()
                    .filter(|(i, (_, p))| usize::try_from(*p).ok() != Some(i + 1))
                    .take(3)
                    .map(|(i, (n, p))| format!("{n} at {p}, expected {}", i + 1))
                    .collect();
                *last.lock().unwrap() = format!(
                    "{} assigned, {} waiting, phases {phases:?}, misplaced {misplaced:?}",
                    assigned.len(),
                    waiting.len()
                );
                let positions_ok = waiting.len() == waiting_left
                    && waiting
                        .iter()
                        .enumerate()
                        .all(|(i, (_, p))| usize::try_from(*p).ok() == Some(i + 1));
                (assigned.len() == 100 && positions_ok).then_some((assigned, waiting))
            },
        )
        .await;
        assert_eq!(assigned, expected, "round {round}: served out of order");
        served_in_rounds.extend(assigned.iter().cloned());
        let waiting_names: Vec<String> = waiting.into_iter().map(|(n, _)| n).collect();
        assert_eq!(waiting_names, order[served..].to_vec());
        // The students of this round leave; their clusters come back for the next 100.
        futures::stream::iter(assigned)
            .for_each_concurrent(16, |name| {
                let api = api.clone();
                async move {
                    api.delete(&name, &DeleteParams::default()).await.unwrap();
                }
            })
            .await;
    }
    common::session_env::eventually_long(
        "every session served and gone, every cluster Available",
        &last,
        || async {
            let left = sessions(&client).await.len();
            let clusters = all_clusters(&client).await;
            let available = clusters
                .iter()
                .filter(|c| {
                    c.spec.claim_ref.is_none()
                        && c.status.as_ref().unwrap().phase == PracticeClusterPhase::Available
                })
                .count();
            (left == 0 && available == 100).then_some(())
        },
    )
    .await;
    let distinct: HashSet<&String> = served_in_rounds.iter().collect();
    assert_eq!(distinct.len(), 500, "every session was served once");
    let violations = violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:?}");
    for (stop, handle) in running {
        stop.send(true).unwrap();
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sessions_share_a_hundred_clusters_in_fifo_order() {
    five_hundred_sessions_against_a_hundred_clusters(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_at_once_never_share_a_cluster_or_give_a_session_two() {
    five_hundred_sessions_against_a_hundred_clusters(2).await;
}

// ---- on the KubeVirt simulator ------------------------------------------------------------

const GOOD_SETUP: &str = r#"steps:
  - id: shop
    type: kubectl_apply
    description: a namespace and a ConfigMap in the practice cluster
    retryCount: 2
    manifest: |
      apiVersion: v1
      kind: Namespace
      metadata:
        name: shop
      ---
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: settings
        namespace: shop
      data:
        mode: insecure
    # The reference system's conditions: checked after the step, through the practice API
    # and over SSH.
    conditions:
      - type: resource_exists
        resource: {kind: ConfigMap, name: settings, namespace: shop}
        timeout: 30s
  - id: marker
    type: script
    target: control-plane
    timeout: 30
    script: |
      #!/bin/bash
      mkdir -p /opt/cks
      echo "set up by ${USER:-root}" > /opt/cks/setup-marker
    conditions:
      - type: command
        command: test -s /opt/cks/setup-marker
        timeout: 30s
"#;

const BAD_SETUP: &str = r#"steps:
  - id: breaks
    type: script
    target: worker-1
    retryCount: 1
    script: |
      echo "the step went wrong here"
      exit 3
"#;

const RESUMABLE_SETUP: &str = r#"steps:
  - id: count
    type: command
    command: "mkdir -p /opt/cks && echo run >> /opt/cks/count"
  - id: wait-for-go
    type: script
    timeout: 300
    script: |
      while [ ! -e /opt/cks/go ]; do sleep 0.2; done
"#;

async fn ssh(ctx: &Context, pc: &PracticeCluster, command: &str) -> (Option<u32>, String) {
    let access = PracticeAccess::load(ctx, pc).await.unwrap();
    let exec = SshExecutor::new(access.targets.clone(), access.ssh.clone());
    let out = exec
        .exec(
            vm_of(cks_scenarios::Target::ControlPlane),
            ExecRequest {
                command: command.to_owned(),
                stdin: None,
            },
        )
        .await
        .unwrap();
    (out.code(), out.stdout.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_runs_on_a_real_cluster_and_the_next_student_gets_it_clean() {
    let (_server, client) = common::sim::start(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let good = ScenarioDef {
        setup: Some(GOOD_SETUP),
        ..ScenarioDef::simple("shop")
    };
    let bad = ScenarioDef {
        setup: Some(BAD_SETUP),
        ..ScenarioDef::simple("broken")
    };
    let scenarios = catalog(dir.path(), &[good, bad]);
    let pools: Api<cks_api::ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("sim", 1, 1, 1))
        .await
        .unwrap();
    let ctx = Arc::new(Context {
        scenarios: Some(scenarios),
        ..common::sim::context(&client)
    });
    let (_stop, _handle) = run_controller(ctx.clone());
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let sessions_api: Api<Session> = Api::namespaced(client.clone(), NS);

    create_session(&client, &session("gina", "gina", "sim", "shop")).await;
    let s = wait_session(&client, "gina", "Ready after setup", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let status = s.status.unwrap();
    let setup = status.setup.clone().unwrap();
    assert_eq!((setup.total, setup.completed), (2, 2));
    assert_eq!(status.terminals[0].port, Some(i32::from(common::sim::SSH_PORT)));
    let pc = clusters.get(status.cluster.as_deref().unwrap()).await.unwrap();

    // The setup's effects, through the practice API and over SSH.
    let access = PracticeAccess::load(&ctx, &pc).await.unwrap();
    let practice = access.client().await.unwrap();
    let shop: Api<ConfigMap> = Api::namespaced(practice.clone(), "shop");
    let settings = shop.get("settings").await.unwrap();
    assert_eq!(settings.data.unwrap()["mode"], "insecure");
    let (code, out) = ssh(&ctx, &pc, "cat /opt/cks/setup-marker").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("set up by"), "{out}");

    // The student's work.
    let student: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "student-work"}, "data": {"who": "gina"}}))
            .unwrap();
    let default_cms: Api<ConfigMap> = Api::namespaced(practice, "default");
    default_cms
        .create(&PostParams::default(), &student)
        .await
        .unwrap();
    let (code, _) = ssh(&ctx, &pc, "echo gina > /opt/cks/student-file").await;
    assert_eq!(code, Some(0));

    sessions_api
        .delete("gina", &DeleteParams::default())
        .await
        .unwrap();
    create_session(&client, &session("hank", "hank", "sim", "shop")).await;
    let s = wait_session(&client, "hank", "Ready on the reset cluster", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let status = s.status.unwrap();
    assert_eq!(
        status.cluster.as_deref(),
        Some(pc.name_any().as_str()),
        "the pool has one cluster"
    );
    let pc = clusters.get(&pc.name_any()).await.unwrap();
    assert_eq!(pc.status.as_ref().unwrap().sessions_served, 1);
    let access = PracticeAccess::load(&ctx, &pc).await.unwrap();
    let practice = access.client().await.unwrap();
    let default_cms: Api<ConfigMap> = Api::namespaced(practice.clone(), "default");
    assert!(
        default_cms.get_opt("student-work").await.unwrap().is_none(),
        "gina's ConfigMap survived"
    );
    let (code, _) = ssh(&ctx, &pc, "test -e /opt/cks/student-file").await;
    assert_eq!(code, Some(1), "gina's file survived the reset");
    let shop: Api<ConfigMap> = Api::namespaced(practice, "shop");
    assert!(
        shop.get_opt("settings").await.unwrap().is_some(),
        "hank's setup ran"
    );

    // A failing step: ScenarioReady False with its output; the session stays usable.
    sessions_api
        .delete("hank", &DeleteParams::default())
        .await
        .unwrap();
    create_session(&client, &session("ivy", "ivy", "sim", "broken")).await;
    let s = wait_session(&client, "ivy", "ScenarioReady False", |s| {
        condition(s, "ScenarioReady").is_some_and(|(_, reason, _)| reason == reasons::SETUP_FAILED)
    })
    .await;
    let (status_value, _, message) = condition(&s, "ScenarioReady").unwrap();
    assert_eq!(status_value, "False");
    assert!(
        message.contains("breaks") && message.contains("the step went wrong here"),
        "{message}"
    );
    assert!(message.contains("2 attempt"), "{message}");
    assert_eq!(phase(&s), SessionPhase::Initializing);
    assert_eq!(s.status.unwrap().setup.unwrap().step.as_deref(), Some("breaks"));
    common::warning_event(&client, reasons::SETUP_FAILED, "ivy").await;
    let _ = clusters.list(&ListParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_resumes_setup_after_the_last_completed_step() {
    let (_server, client) = common::sim::start(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let resumable = ScenarioDef {
        setup: Some(RESUMABLE_SETUP),
        ..ScenarioDef::simple("resumable")
    };
    let scenarios = catalog(dir.path(), &[resumable]);
    let pools: Api<cks_api::ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("sim", 1, 1, 1))
        .await
        .unwrap();
    let ctx = Arc::new(Context {
        scenarios: Some(scenarios),
        ..common::sim::context(&client)
    });
    let (stop, handle) = run_controller(ctx.clone());
    create_session(&client, &session("max", "max", "sim", "resumable")).await;
    let s = wait_session(&client, "max", "the second step running", |s| {
        s.status
            .as_ref()
            .and_then(|st| st.setup.as_ref())
            .is_some_and(|p| p.completed == 1 && p.step.as_deref() == Some("wait-for-go"))
    })
    .await;
    stop.send(true).unwrap();
    handle.await.unwrap();

    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let pc = clusters
        .get(s.status.unwrap().cluster.as_deref().unwrap())
        .await
        .unwrap();
    let (code, _) = ssh(&ctx, &pc, "touch /opt/cks/go").await;
    assert_eq!(code, Some(0));
    let (_stop, _handle) = run_controller(ctx.clone());
    let s = wait_session(&client, "max", "Ready", |s| phase(s) == SessionPhase::Ready).await;
    assert_eq!(s.status.unwrap().setup.unwrap().completed, 2);
    let (code, out) = ssh(&ctx, &pc, "cat /opt/cks/count").await;
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 1, "the first step ran again: {out:?}");
}
