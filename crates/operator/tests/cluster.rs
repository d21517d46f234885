//! The PracticeCluster controller against the development control plane with a small fake
//! KubeVirt (see `common/fake_kubevirt.rs`): provisioning to Available, claim and reset,
//! retries ending in Failed, restart in the middle of a reset, and finalizer teardown.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cks_api::PracticeCluster;
use cks_api::practice_cluster::PracticeClusterPhase;
use cks_operator::cluster;
use cks_operator::config::ControllerConfig;
use cks_operator::context::Context;
use cks_operator::probe::{ClusterProbe, ProbeTarget};
use common::fake_kubevirt::{self, Faults};
use common::{NS, eventually, start};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

fn run_cluster_controller(client: &Client) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    run_cluster_controller_with(Context::test(client.clone()))
}

fn run_cluster_controller_with(ctx: Context) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = watch::channel(false);
    let ctx = Arc::new(ctx);
    let handle = tokio::spawn(async move {
        cluster::run(ctx, Some(NS), async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await;
    });
    (tx, handle)
}

async fn setup() -> (
    cks_devcluster::DevCluster,
    Client,
    Arc<Faults>,
    tokio::task::JoinHandle<()>,
) {
    let (server, client) = start().await;
    fake_kubevirt::install_crds(&server);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let key: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ssh-key"},
        "stringData": {"ssh-publickey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa5c2Pf0b6y6k3c cks@lab"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &key).await.unwrap();
    let faults = Arc::new(Faults::default());
    let fake = fake_kubevirt::run(client.clone(), faults.clone());
    (server, client, faults, fake)
}

fn practice_cluster(name: &str, max_retries: i32) -> PracticeCluster {
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "PracticeCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "pool": "lab", "templateHash": "h1", "template": common::template(1),
            "provisioning": {"timeoutSeconds": 600, "maxRetries": max_retries},
            "reset": {"timeoutSeconds": 600, "maxRetries": max_retries},
            "isolation": {"egress": [{"cidr": "0.0.0.0/0", "ports": [443]}], "resourceQuota": {"pods": 10}},
        },
    }))
    .unwrap()
}

async fn wait_phase(client: &Client, name: &str, phase: PracticeClusterPhase) -> PracticeCluster {
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    eventually(&format!("{name} to be {phase:?}"), || async {
        let pc = api.get(name).await.ok()?;
        (pc.status.as_ref()?.phase == phase).then_some(pc)
    })
    .await
}

fn restores(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.kubevirt.io", "v1beta1", "VirtualMachineRestore"),
        "virtualmachinerestores",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

#[tokio::test]
async fn cluster_provisions_serves_resets_and_tears_down_its_namespace() {
    let (_server, client, _faults, fake) = setup().await;
    let (_stop, _controller) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-a1b2c", 2))
        .await
        .unwrap();

    let pc = wait_phase(&client, "lab-a1b2c", PracticeClusterPhase::Available).await;
    let status = pc.status.unwrap();
    assert!(
        pc.metadata
            .finalizers
            .unwrap()
            .contains(&"cks.io/cluster-cleanup".to_owned())
    );
    assert_eq!(status.namespace.as_deref(), Some("lab-a1b2c"));
    assert_eq!(status.vms.len(), 2);
    assert!(
        status
            .vms
            .iter()
            .all(|v| v.ready && v.snapshot_ready && v.ip.is_some())
    );
    assert_eq!(status.attempts, 0);
    assert!(status.provision_duration_seconds.is_some());
    assert_eq!(
        status.admin_kubeconfig_secret.as_deref(),
        Some("lab-a1b2c-admin-kubeconfig")
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "SnapshotsReady" && c.status == "True")
    );

    // The namespace holds the isolation objects and the cluster's Secrets.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "lab-a1b2c");
    assert_eq!(
        policies.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "lab-a1b2c");
    let names: Vec<String> = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.name_any())
        .collect();
    for want in [
        "lab-a1b2c-pki",
        "lab-a1b2c-cp-cloudinit",
        "lab-a1b2c-w1-cloudinit",
    ] {
        assert!(names.contains(&want.to_owned()), "{want} in {names:?}");
    }

    // Claim, then release: the cluster is restored from its snapshots and served again.
    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "alice"}}}));
    api.patch("lab-a1b2c", &PatchParams::default(), &claim)
        .await
        .unwrap();
    wait_phase(&client, "lab-a1b2c", PracticeClusterPhase::Assigned).await;
    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    api.patch("lab-a1b2c", &PatchParams::default(), &release)
        .await
        .unwrap();
    let pc = eventually("the reset to finish", || async {
        let pc = api.get("lab-a1b2c").await.ok()?;
        let s = pc.status.as_ref()?;
        (s.phase == PracticeClusterPhase::Available && s.sessions_served == 1).then_some(pc)
    })
    .await;
    let status = pc.status.unwrap();
    assert!(status.last_reset_time.is_some() && status.last_reset_duration_seconds.is_some());
    let names: Vec<String> = restores(&client, "lab-a1b2c")
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert_eq!(names.len(), 2, "one restore per VM: {names:?}");
    assert!(names.iter().all(|n| n.ends_with("-reset-100")), "{names:?}");

    // Deleting the cluster deletes its namespace first, then lets the object go.
    api.delete("lab-a1b2c", &DeleteParams::default()).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("the cluster and its namespace to be gone", || async {
        let ns_gone = namespaces.get_opt("lab-a1b2c").await.unwrap().is_none();
        let pc_gone = api.get_opt("lab-a1b2c").await.unwrap().is_none();
        (ns_gone && pc_gone).then_some(())
    })
    .await;
    fake.abort();
}

#[tokio::test]
async fn failing_clones_are_retried_then_the_cluster_fails_with_the_reason() {
    let (_server, client, faults, fake) = setup().await;
    faults.clone_fails.store(true, Ordering::Relaxed);
    let (_stop, _controller) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-f4il0", 1))
        .await
        .unwrap();
    let pc = wait_phase(&client, "lab-f4il0", PracticeClusterPhase::Failed).await;
    let status = pc.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("CloneFailed"));
    let message = status.failure_message.unwrap();
    assert!(
        message.contains("source PVC vm-templates/golden not found"),
        "{message}"
    );
    assert!(message.contains("gave up after 2 attempts"), "{message}");
    fake.abort();
}

#[tokio::test]
async fn a_new_operator_finishes_a_reset_the_old_one_started() {
    let (_server, client, faults, fake) = setup().await;
    let (stop, controller) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-r3st4", 2))
        .await
        .unwrap();
    wait_phase(&client, "lab-r3st4", PracticeClusterPhase::Available).await;
    faults.hold_restores.store(true, Ordering::Relaxed);
    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "bob"}}}));
    api.patch("lab-r3st4", &PatchParams::default(), &claim)
        .await
        .unwrap();
    wait_phase(&client, "lab-r3st4", PracticeClusterPhase::Assigned).await;
    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    api.patch("lab-r3st4", &PatchParams::default(), &release)
        .await
        .unwrap();
    let restores = restores(&client, "lab-r3st4");
    eventually("the restores to be created", || async {
        (restores.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;

    // The operator goes away mid-reset; a fresh one picks the reset up from the world.
    stop.send(true).unwrap();
    controller.await.unwrap();
    faults.hold_restores.store(false, Ordering::Relaxed);
    let (_stop, _controller) = run_cluster_controller(&client);
    let pc = eventually("the reset to finish", || async {
        let pc = api.get("lab-r3st4").await.ok()?;
        let s = pc.status.as_ref()?;
        (s.phase == PracticeClusterPhase::Available && s.sessions_served == 1).then_some(pc)
    })
    .await;
    assert_eq!(pc.status.unwrap().attempts, 0);
    assert_eq!(
        restores.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    fake.abort();
}

#[tokio::test]
async fn a_failed_restore_is_retried_under_a_new_name_and_the_reset_completes() {
    let (_server, client, faults, fake) = setup().await;
    let (_stop, _controller) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-rf4il", 2))
        .await
        .unwrap();
    wait_phase(&client, "lab-rf4il", PracticeClusterPhase::Available).await;
    faults.failing_restores.store(1, Ordering::Relaxed);
    let request = Patch::Merge(json!({"metadata": {"annotations": {"cks.io/reset-requested": "true"}}}));
    api.patch("lab-rf4il", &PatchParams::default(), &request)
        .await
        .unwrap();

    let pc = eventually("the retried reset to finish", || async {
        let pc = api.get("lab-rf4il").await.ok()?;
        let s = pc.status.as_ref()?;
        (s.phase == PracticeClusterPhase::Available && s.resets == 1 && s.last_reset_time.is_some())
            .then_some(pc)
    })
    .await;
    assert!(!pc.annotations().contains_key("cks.io/reset-requested"));
    let status = pc.status.unwrap();
    assert_eq!((status.attempts, status.failure_reason), (0, None));
    assert_eq!(status.sessions_served, 0, "a requested reset serves no session");
    let mut names: Vec<String> = restores(&client, "lab-rf4il")
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.name_any())
        .collect();
    names.sort();
    // The failed attempt's restore (-100) was deleted before the retry (-101) was created.
    assert_eq!(names, ["lab-rf4il-cp-reset-101", "lab-rf4il-w1-reset-101"]);
    fake.abort();
}

#[tokio::test]
async fn recreate_strategy_deletes_a_released_cluster_with_its_namespace() {
    let (_server, client, _faults, fake) = setup().await;
    let (_stop, _controller) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let mut pc = practice_cluster("lab-rcr8t", 2);
    pc.spec.reset.strategy = cks_api::cluster_pool::ResetStrategy::Recreate;
    api.create(&PostParams::default(), &pc).await.unwrap();
    wait_phase(&client, "lab-rcr8t", PracticeClusterPhase::Available).await;
    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "carol"}}}));
    api.patch("lab-rcr8t", &PatchParams::default(), &claim)
        .await
        .unwrap();
    wait_phase(&client, "lab-rcr8t", PracticeClusterPhase::Assigned).await;
    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    api.patch("lab-rcr8t", &PatchParams::default(), &release)
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("the released cluster and its namespace to be gone", || async {
        let ns_gone = namespaces.get_opt("lab-rcr8t").await.unwrap().is_none();
        let pc_gone = api.get_opt("lab-rcr8t").await.unwrap().is_none();
        (ns_gone && pc_gone).then_some(())
    })
    .await;
    fake.abort();
}

#[tokio::test]
async fn a_new_operator_finishes_provisioning_the_old_one_started() {
    let (_server, client, faults, fake) = setup().await;
    faults.hold_clones.store(true, Ordering::Relaxed);
    let (stop, controller) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-p4use", 2))
        .await
        .unwrap();
    let pc = eventually("provisioning to wait on the disk clones", || async {
        let pc = api.get("lab-p4use").await.ok()?;
        let ready = pc
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?;
        ready.message.contains("disk clones").then_some(pc)
    })
    .await;
    assert_eq!(pc.status.unwrap().phase, PracticeClusterPhase::Provisioning);
    let pki_before = Api::<Secret>::namespaced(client.clone(), "lab-p4use")
        .get("lab-p4use-pki")
        .await
        .unwrap()
        .data;

    stop.send(true).unwrap();
    controller.await.unwrap();
    faults.hold_clones.store(false, Ordering::Relaxed);
    let (_stop, _controller) = run_cluster_controller(&client);
    let pc = wait_phase(&client, "lab-p4use", PracticeClusterPhase::Available).await;
    assert_eq!(pc.status.unwrap().attempts, 0);
    // The new operator reused the stored PKI instead of generating another one.
    let pki_after = Api::<Secret>::namespaced(client.clone(), "lab-p4use")
        .get("lab-p4use-pki")
        .await
        .unwrap()
        .data;
    assert_eq!(pki_before, pki_after);
    fake.abort();
}

#[tokio::test]
async fn deleting_a_pool_leaves_no_clusters_namespaces_or_vms() {
    let (_server, client, _faults, fake) = setup().await;
    let (_stop, _controller) = run_cluster_controller(&client);
    let (stop_pool, mut rx) = watch::channel(false);
    let ctx = Arc::new(Context::test(client.clone()));
    tokio::spawn(async move {
        cks_operator::pool::run(ctx, Some(NS), async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await;
    });
    let pools: Api<cks_api::ClusterPool> = Api::namespaced(client.clone(), NS);
    let pool = common::pool("gone", 2, 3, 2);
    pools.create(&PostParams::default(), &pool).await.unwrap();
    eventually("two Available clusters", || async {
        let list = common::clusters(&client, "gone").await;
        let available = list
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.phase == PracticeClusterPhase::Available)
            })
            .count();
        (available == 2).then_some(())
    })
    .await;
    pools.delete("gone", &DeleteParams::default()).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let vms = {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
            "virtualmachines",
        );
        Api::<DynamicObject>::all_with(client.clone(), &ar)
    };
    eventually(
        "every cluster, namespace and VM of the pool to be gone",
        || async {
            let clusters = common::clusters(&client, "gone").await.len();
            let namespaces = namespaces
                .list(&ListParams::default().labels("cks.io/pool=gone"))
                .await
                .ok()?
                .items
                .len();
            let vms = vms.list(&ListParams::default()).await.ok()?.items.len();
            (clusters + namespaces + vms == 0).then_some(())
        },
    )
    .await;
    stop_pool.send(true).unwrap();
    fake.abort();
}

#[tokio::test]
async fn a_cluster_named_like_a_foreign_namespace_neither_adopts_nor_deletes_it() {
    let (_server, client, _faults, _fake) = setup().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let foreign: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "team-payments", "labels": {"team": "payments"}}}),
    )
    .unwrap();
    namespaces.create(&PostParams::default(), &foreign).await.unwrap();
    let (stop, handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("team-payments", 3))
        .await
        .unwrap();

    common::warning_event(&client, "ForeignNamespace", "team-payments").await;
    // The name cannot change, so waiting would be forever: the cluster fails for good.
    let pc = wait_phase(&client, "team-payments", PracticeClusterPhase::Failed).await;
    assert_eq!(
        pc.status.unwrap().failure_reason.as_deref(),
        Some("ForeignNamespace")
    );
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "team-payments");
    assert!(
        policies
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let ns = namespaces.get("team-payments").await.unwrap();
    assert!(
        !ns.labels().contains_key("cks.io/cluster"),
        "the namespace was adopted"
    );

    api.delete("team-payments", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the PracticeCluster to go", || async {
        api.get_opt("team-payments").await.ok()?.is_none().then_some(())
    })
    .await;
    let ns = namespaces
        .get("team-payments")
        .await
        .expect("the foreign namespace survives");
    assert!(ns.metadata.deletion_timestamp.is_none());
    stop.send(true).unwrap();
    handle.await.unwrap();
}

async fn stop_controller(stop: watch::Sender<bool>, handle: tokio::task::JoinHandle<()>) {
    stop.send(true).unwrap();
    handle.await.unwrap();
}

fn condition(
    pc: &PracticeCluster,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    pc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Reads the cluster (as a controller would), then lets a Session claim it before the
/// controller acts on what it read.
async fn read_then_claim(api: &Api<PracticeCluster>, name: &str, session: &str) -> PracticeCluster {
    let request = Patch::Merge(json!({"metadata": {"annotations": {"cks.io/reset-requested": "true"}}}));
    api.patch(name, &PatchParams::default(), &request).await.unwrap();
    let read = api.get(name).await.unwrap();
    let claim = Patch::Merge(
        json!({"spec": {"claimRef": {"name": session, "uid": "0b7c6f4e-5a1d-4c3b-9e2f-1a2b3c4d5e6f"}}}),
    );
    api.patch(name, &PatchParams::default(), &claim).await.unwrap();
    read
}

#[tokio::test]
async fn a_claim_written_after_the_read_wins_over_a_requested_reset() {
    let (_server, client, _faults, fake) = setup().await;
    let (stop, handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-r4ce1", 2))
        .await
        .unwrap();
    wait_phase(&client, "lab-r4ce1", PracticeClusterPhase::Available).await;
    stop_controller(stop, handle).await;

    let read = read_then_claim(&api, "lab-r4ce1", "alice").await;
    let ctx = Context::test(client.clone());
    cluster::reconcile_object(&read, &ctx)
        .await
        .expect("a conflict is not an error");
    let pc = api.get("lab-r4ce1").await.unwrap();
    let status = pc.status.as_ref().unwrap();
    assert_eq!(
        status.phase,
        PracticeClusterPhase::Available,
        "no reset under the claim"
    );
    assert_eq!(status.resets, 0);
    assert!(
        pc.annotations().contains_key("cks.io/reset-requested"),
        "the request is kept"
    );

    // The next reconcile sees the claim; the request waits for the release.
    let (_stop, _handle) = run_cluster_controller(&client);
    let pc = wait_phase(&client, "lab-r4ce1", PracticeClusterPhase::Assigned).await;
    assert_eq!(pc.status.unwrap().resets, 0);
    assert!(
        restores(&client, "lab-r4ce1")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing was restored under the claim"
    );
    fake.abort();
}

#[tokio::test]
async fn a_claim_written_after_the_read_keeps_a_recreate_cluster_alive() {
    let (_server, client, _faults, fake) = setup().await;
    let (stop, handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let mut pc = practice_cluster("lab-r4ce2", 2);
    pc.spec.reset.strategy = cks_api::cluster_pool::ResetStrategy::Recreate;
    api.create(&PostParams::default(), &pc).await.unwrap();
    wait_phase(&client, "lab-r4ce2", PracticeClusterPhase::Available).await;
    stop_controller(stop, handle).await;

    let read = read_then_claim(&api, "lab-r4ce2", "bob").await;
    cluster::reconcile_object(&read, &Context::test(client.clone()))
        .await
        .expect("a conflict is not an error");
    let pc = api.get("lab-r4ce2").await.unwrap();
    assert!(
        pc.metadata.deletion_timestamp.is_none(),
        "deleted under its Session"
    );

    let (_stop, _handle) = run_cluster_controller(&client);
    let pc = wait_phase(&client, "lab-r4ce2", PracticeClusterPhase::Assigned).await;
    assert!(pc.metadata.deletion_timestamp.is_none());
    fake.abort();
}

#[tokio::test]
async fn a_claim_made_during_a_reset_holds_the_reset_until_released() {
    let (_server, client, faults, fake) = setup().await;
    let (_stop, _handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-h0ld1", 2))
        .await
        .unwrap();
    wait_phase(&client, "lab-h0ld1", PracticeClusterPhase::Available).await;
    faults.hold_restores.store(true, Ordering::Relaxed);
    let request = Patch::Merge(json!({"metadata": {"annotations": {"cks.io/reset-requested": "true"}}}));
    api.patch("lab-h0ld1", &PatchParams::default(), &request)
        .await
        .unwrap();
    let restores = restores(&client, "lab-h0ld1");
    eventually("the restores to be created", || async {
        (restores.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;

    // A claim by hand on a cluster that is not Available: the reset must not go on (and the
    // cluster must not turn Available) under it.
    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "mallory"}}}));
    api.patch("lab-h0ld1", &PatchParams::default(), &claim)
        .await
        .unwrap();
    common::warning_event(&client, "ClaimedWhileResetting", "lab-h0ld1").await;
    faults.hold_restores.store(false, Ordering::Relaxed);
    let vms = {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
            "virtualmachines",
        );
        Api::<DynamicObject>::namespaced_with(client.clone(), "lab-h0ld1", &ar)
    };
    // The restores complete, yet nothing starts the VMs while the claim is on.
    eventually("the restores to complete", || async {
        let list = restores.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .all(|r| r.data["status"]["complete"] == true)
            .then_some(())
    })
    .await;
    let pc = api.get("lab-h0ld1").await.unwrap();
    assert_eq!(pc.status.as_ref().unwrap().phase, PracticeClusterPhase::Resetting);
    assert_eq!(
        condition(&pc, "Ready").map(|c| c.reason),
        Some("ClaimedWhileResetting".to_owned())
    );
    for vm in vms.list(&ListParams::default()).await.unwrap() {
        assert_eq!(
            vm.data["spec"]["runStrategy"],
            "Halted",
            "{} started",
            vm.name_any()
        );
    }

    // However long the hold lasted, the reset's timeout counts from the release.
    let long_ago = Patch::Merge(json!({"status": {"phaseSince": minutes_ago(120)}}));
    api.patch_status("lab-h0ld1", &PatchParams::default(), &long_ago)
        .await
        .unwrap();
    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    api.patch("lab-h0ld1", &PatchParams::default(), &release)
        .await
        .unwrap();
    let pc = wait_phase(&client, "lab-h0ld1", PracticeClusterPhase::Available).await;
    let status = pc.status.unwrap();
    assert_eq!((status.sessions_served, status.attempts), (0, 0));
    let names: Vec<String> = restores
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert!(
        names.iter().all(|n| n.ends_with("-reset-100")),
        "the reset was retried: {names:?}"
    );
    fake.abort();
}

fn minutes_ago(minutes: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes)).to_string()
}

/// Moves the start of the cluster's current phase into the past, as if its timeout had
/// passed, until the cluster is in `phase` (the controller acted on it).
async fn outlive_the_phase_timeout(
    api: &Api<PracticeCluster>,
    name: &str,
    phase: PracticeClusterPhase,
) -> PracticeCluster {
    eventually(&format!("{name} to be {phase:?} after its timeout"), || async {
        let pc = api.get(name).await.ok()?;
        let status = pc.status.as_ref()?;
        if status.phase == phase {
            return Some(pc);
        }
        let since = status.phase_since.as_ref()?.0;
        if jiff::Timestamp::now().duration_since(since).as_secs() < 3600 {
            let patch = Patch::Merge(json!({"status": {"phaseSince": minutes_ago(120)}}));
            let _ = api.patch_status(name, &PatchParams::default(), &patch).await;
        }
        None
    })
    .await
}

#[tokio::test]
async fn a_step_that_keeps_erroring_fails_once_its_phase_times_out() {
    let (_server, client, _faults, fake) = setup().await;
    let (_stop, _handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let mut pc = practice_cluster("lab-n0key", 0);
    pc.spec.template.ssh_key_secret_ref.name = "no-such-key".into();
    api.create(&PostParams::default(), &pc).await.unwrap();

    // The error is said in the status while the phase clock runs.
    let pc = eventually("the missing key to be reported", || async {
        let pc = api.get("lab-n0key").await.ok()?;
        (condition(&pc, "Ready")?.reason == "SshKeyMissing").then_some(pc)
    })
    .await;
    assert_eq!(pc.status.unwrap().phase, PracticeClusterPhase::Provisioning);

    let pc = outlive_the_phase_timeout(&api, "lab-n0key", PracticeClusterPhase::Failed).await;
    let status = pc.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("Timeout"));
    let message = status.failure_message.unwrap();
    assert!(message.contains("Provisioning did not finish"), "{message}");
    assert!(message.contains("no-such-key"), "{message}");
    fake.abort();
}

#[tokio::test]
async fn a_reset_whose_vm_is_gone_fails_instead_of_erroring_forever() {
    let (_server, client, _faults, fake) = setup().await;
    let (_stop, _handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-v4n1s", 0))
        .await
        .unwrap();
    wait_phase(&client, "lab-v4n1s", PracticeClusterPhase::Available).await;
    let vms = {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
            "virtualmachines",
        );
        Api::<DynamicObject>::namespaced_with(client.clone(), "lab-v4n1s", &ar)
    };
    vms.delete("lab-v4n1s-w1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the VM to be gone", || async {
        vms.get_opt("lab-v4n1s-w1").await.ok()?.is_none().then_some(())
    })
    .await;
    let request = Patch::Merge(json!({"metadata": {"annotations": {"cks.io/reset-requested": "true"}}}));
    api.patch("lab-v4n1s", &PatchParams::default(), &request)
        .await
        .unwrap();
    let pc = wait_phase(&client, "lab-v4n1s", PracticeClusterPhase::Failed).await;
    let status = pc.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("VmMissing"));
    assert!(
        status.failure_message.unwrap().contains("lab-v4n1s-w1"),
        "the message names the VM"
    );
    fake.abort();
}

#[tokio::test]
async fn a_template_that_cannot_build_fails_the_cluster_at_once() {
    // Admission refuses most unbuildable templates (a Kubernetes version below 1.22, say), and
    // a pool builds nothing from one it can tell is unbuildable; a PracticeCluster written by
    // hand with an `extraCloudInit` the merge rules refuse still reaches the controller.
    let (_server, client, _faults, fake) = setup().await;
    let (_stop, _handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let mut pc = practice_cluster("lab-b4dci", 3);
    pc.spec.template.extra_cloud_init = Some("users: [{name: ubuntu}]".into());
    api.create(&PostParams::default(), &pc).await.unwrap();

    let failed = wait_phase(&client, "lab-b4dci", PracticeClusterPhase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("InvalidExtraCloudInit"));
    assert_eq!(status.attempts, 0, "failed at once, without retries");
    common::warning_event(&client, "InvalidExtraCloudInit", "lab-b4dci").await;
    fake.abort();
}

/// A readiness check that can be switched off, counting checks per cluster.
#[derive(Debug, Default)]
struct SwitchableProbe {
    down: std::sync::atomic::AtomicBool,
    checks: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl SwitchableProbe {
    fn checks_of(&self, cluster: &str) -> usize {
        self.checks.lock().unwrap().get(cluster).copied().unwrap_or(0)
    }
}

impl ClusterProbe for SwitchableProbe {
    fn check<'a>(&'a self, target: &'a ProbeTarget) -> BoxFuture<'a, Result<Option<String>, String>> {
        let down = self.down.load(Ordering::SeqCst);
        if down {
            // The URL names the control-plane Service `{cluster}-cp...`.
            let host = target.api.url.split("//").nth(1).unwrap_or_default();
            let cluster = host.split("-cp").next().unwrap_or_default().to_owned();
            *self.checks.lock().unwrap().entry(cluster).or_default() += 1;
        }
        Box::pin(async move {
            if down {
                Err("connection refused".to_owned())
            } else {
                Ok(None)
            }
        })
    }
}

#[tokio::test]
async fn an_available_cluster_whose_api_stops_answering_fails_unless_claimed() {
    let (_server, client, _faults, fake) = setup().await;
    let probe = Arc::new(SwitchableProbe::default());
    let ctx = Context {
        probe: probe.clone(),
        config: Arc::new(ControllerConfig {
            // Settled clusters are checked on every resync.
            resync: std::time::Duration::from_millis(200),
            unreachable_grace: std::time::Duration::ZERO,
            ..ControllerConfig::test()
        }),
        ..Context::test(client.clone())
    };
    let (_stop, _handle) = run_cluster_controller_with(ctx);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    for name in ["lab-fr33a", "lab-us3db"] {
        api.create(&PostParams::default(), &practice_cluster(name, 2))
            .await
            .unwrap();
    }
    for name in ["lab-fr33a", "lab-us3db"] {
        let pc = wait_phase(&client, name, PracticeClusterPhase::Available).await;
        assert_eq!(
            condition(&pc, "ApiReachable").map(|c| c.status),
            Some("True".to_owned())
        );
    }
    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "frank"}}}));
    api.patch("lab-us3db", &PatchParams::default(), &claim)
        .await
        .unwrap();
    wait_phase(&client, "lab-us3db", PracticeClusterPhase::Assigned).await;

    probe.down.store(true, Ordering::SeqCst);
    let pc = wait_phase(&client, "lab-fr33a", PracticeClusterPhase::Failed).await;
    let status = pc.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("PracticeApiUnreachable"));
    assert!(status.failure_message.unwrap().contains("connection refused"));

    // The claimed one is checked as often, and only says so.
    let checks = probe.checks_of("lab-fr33a");
    let pc = eventually("the claimed cluster to be checked as often", || async {
        let pc = api.get("lab-us3db").await.ok()?;
        (probe.checks_of("lab-us3db") > checks
            && condition(&pc, "ApiReachable").is_some_and(|c| c.status == "False"))
        .then_some(pc)
    })
    .await;
    assert_eq!(pc.status.unwrap().phase, PracticeClusterPhase::Assigned);

    probe.down.store(false, Ordering::SeqCst);
    eventually("the claimed cluster's API to be reachable again", || async {
        let pc = api.get("lab-us3db").await.ok()?;
        condition(&pc, "ApiReachable")
            .is_some_and(|c| c.status == "True")
            .then_some(())
    })
    .await;
    fake.abort();
}

/// A practice API that always answers, counting the checks of each cluster.
#[derive(Debug, Default)]
struct CountingProbe {
    checks: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl CountingProbe {
    fn checks_of(&self, cluster: &str) -> usize {
        self.checks.lock().unwrap().get(cluster).copied().unwrap_or(0)
    }
}

impl ClusterProbe for CountingProbe {
    fn check<'a>(&'a self, target: &'a ProbeTarget) -> BoxFuture<'a, Result<Option<String>, String>> {
        // The URL names the control-plane Service `{cluster}-cp...`.
        let host = target.api.url.split("//").nth(1).unwrap_or_default();
        let cluster = host.split("-cp").next().unwrap_or_default().to_owned();
        *self.checks.lock().unwrap().entry(cluster).or_default() += 1;
        Box::pin(async { Ok(None) })
    }
}

/// A cluster built before host keys were pinned has no `{cluster}-ssh-host-key` Secret, and
/// every Session on it would fail SSH setup: an idle one is failed (so the pool replaces it),
/// a claimed one is left under its student.
#[tokio::test]
async fn an_available_cluster_without_its_host_key_secret_fails_unless_claimed() {
    let (_server, client, _faults, fake) = setup().await;
    let probe = Arc::new(CountingProbe::default());
    let ctx = Context {
        probe: probe.clone(),
        config: Arc::new(ControllerConfig {
            // Settled clusters are checked on every resync.
            resync: std::time::Duration::from_millis(200),
            ..ControllerConfig::test()
        }),
        ..Context::test(client.clone())
    };
    let (_stop, _handle) = run_cluster_controller_with(ctx);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    for name in ["lab-n0k3y", "lab-h3ld1"] {
        api.create(&PostParams::default(), &practice_cluster(name, 2))
            .await
            .unwrap();
    }
    for name in ["lab-n0k3y", "lab-h3ld1"] {
        wait_phase(&client, name, PracticeClusterPhase::Available).await;
    }
    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "grace"}}}));
    api.patch("lab-h3ld1", &PatchParams::default(), &claim)
        .await
        .unwrap();
    wait_phase(&client, "lab-h3ld1", PracticeClusterPhase::Assigned).await;

    // As if both had been built before host keys were pinned.
    for name in ["lab-n0k3y", "lab-h3ld1"] {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), name);
        secrets
            .delete(&format!("{name}-ssh-host-key"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let checks = probe.checks_of("lab-h3ld1");

    let pc = wait_phase(&client, "lab-n0k3y", PracticeClusterPhase::Failed).await;
    let status = pc.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("NoPinnedHostKey"));
    let message = status.failure_message.unwrap();
    assert!(message.contains("lab-n0k3y/lab-n0k3y-ssh-host-key"), "{message}");
    assert!(message.contains("predates SSH host key pinning"), "{message}");

    // The claimed one goes on being checked after the delete, and stays Assigned.
    eventually("the claimed cluster to be checked again", || async {
        (probe.checks_of("lab-h3ld1") > checks + 1).then_some(())
    })
    .await;
    let pc = api.get("lab-h3ld1").await.unwrap();
    assert_eq!(pc.status.unwrap().phase, PracticeClusterPhase::Assigned);
    fake.abort();
}

#[tokio::test]
async fn a_cluster_that_no_longer_deserializes_can_still_be_deleted() {
    let (_server, client, _faults, fake) = setup().await;
    let (_stop, _handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-br0k3", 2))
        .await
        .unwrap();
    wait_phase(&client, "lab-br0k3", PracticeClusterPhase::Available).await;

    // Valid for the schema, unreadable for the operator (as after an incompatible change).
    let raw = {
        let ar = ApiResource::erase::<PracticeCluster>(&());
        Api::<DynamicObject>::namespaced_with(client.clone(), NS, &ar)
    };
    let patch = Patch::Merge(json!({"status": {"phaseSince": "yesterday"}}));
    raw.patch_status("lab-br0k3", &PatchParams::default(), &patch)
        .await
        .unwrap();
    common::warning_event(&client, "InvalidObject", "lab-br0k3").await;

    raw.delete("lab-br0k3", &DeleteParams::default()).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("the cluster and its namespace to be gone", || async {
        let ns_gone = namespaces.get_opt("lab-br0k3").await.ok()?.is_none();
        let pc_gone = raw.get_opt("lab-br0k3").await.ok()?.is_none();
        (ns_gone && pc_gone).then_some(())
    })
    .await;
    fake.abort();
}

#[tokio::test]
async fn a_missing_ssh_key_secret_is_retried_until_it_appears() {
    let (_server, client, _faults, fake) = setup().await;
    let (_stop, _handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let mut pc = practice_cluster("lab-l4tek", 2);
    pc.spec.template.ssh_key_secret_ref.name = "late-key".into();
    api.create(&PostParams::default(), &pc).await.unwrap();
    eventually("the missing key to be reported", || async {
        let pc = api.get("lab-l4tek").await.ok()?;
        (condition(&pc, "Ready")?.reason == "SshKeyMissing").then_some(())
    })
    .await;

    // Not a reason to give up: the Secret can still come, and the retries find it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let key: Secret = serde_json::from_value(json!({
        "metadata": {"name": "late-key"},
        "stringData": {"ssh-publickey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa5c2Pf0b6y6k3c cks@lab"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &key).await.unwrap();
    let pc = wait_phase(&client, "lab-l4tek", PracticeClusterPhase::Available).await;
    assert_eq!(pc.status.unwrap().attempts, 0);
    fake.abort();
}

/// A Session named `name` held back by the release finalizer, as the session controller leaves
/// an active one (no session controller runs in these tests).
async fn finalized_session(client: &Client, name: &str) -> cks_api::Session {
    let api: Api<cks_api::Session> = Api::namespaced(client.clone(), NS);
    let session: cks_api::Session = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "Session",
        "metadata": {"name": name, "namespace": NS, "finalizers": ["cks.io/session-release"]},
        "spec": {"scenario": "basics", "user": name, "pool": "lab", "durationMinutes": 60},
    }))
    .unwrap();
    api.create(&PostParams::default(), &session).await.unwrap()
}

/// Claims `cluster` for `session` the way the session controller does (name and uid).
async fn claim_for(api: &Api<PracticeCluster>, cluster: &str, session: &cks_api::Session) {
    let claim =
        Patch::Merge(json!({"spec": {"claimRef": {"name": session.name_any(), "uid": session.uid()}}}));
    api.patch(cluster, &PatchParams::default(), &claim).await.unwrap();
}

/// Deletes a Session past its finalizer: what a person with delete rights does when the
/// operator is not there to release.
async fn delete_past_finalizer(client: &Client, name: &str) {
    let api: Api<cks_api::Session> = Api::namespaced(client.clone(), NS);
    let unfinalized = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    api.patch(name, &PatchParams::default(), &unfinalized)
        .await
        .unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(&format!("Session {name} gone"), || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

fn with_orphan_grace(client: &Client, grace: std::time::Duration) -> Context {
    Context {
        config: Arc::new(ControllerConfig {
            orphaned_claim_grace: grace,
            ..ControllerConfig::test()
        }),
        ..Context::test(client.clone())
    }
}

#[tokio::test]
async fn a_claim_whose_session_was_deleted_while_the_operator_was_down_is_released_and_reset() {
    let (_server, client, _faults, fake) = setup().await;
    let grace = std::time::Duration::from_secs(1);
    let (stop, handle) = run_cluster_controller_with(with_orphan_grace(&client, grace));
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-0rph1", 2))
        .await
        .unwrap();
    wait_phase(&client, "lab-0rph1", PracticeClusterPhase::Available).await;
    let alice = finalized_session(&client, "alice").await;
    claim_for(&api, "lab-0rph1", &alice).await;
    let pc = wait_phase(&client, "lab-0rph1", PracticeClusterPhase::Assigned).await;
    let seen = pc.status.unwrap().claim.expect("the claim is recorded");
    assert_eq!((seen.name.as_str(), seen.uid.clone()), ("alice", alice.uid()));

    // The claim cannot be handed to another Session by editing its uid.
    let moved = Patch::Merge(json!({"spec": {"claimRef": {"uid": "0b7c6f4e-5a1d-4c3b-9e2f-1a2b3c4d5e6f"}}}));
    let refused = api
        .patch("lab-0rph1", &PatchParams::default(), &moved)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("claimRef cannot move"), "{refused}");

    stop_controller(stop, handle).await;
    delete_past_finalizer(&client, "alice").await;
    let (_stop, _handle) = run_cluster_controller_with(with_orphan_grace(&client, grace));
    let pc = eventually("the orphaned claim released and the cluster reset", || async {
        let pc = api.get("lab-0rph1").await.ok()?;
        let s = pc.status.as_ref()?;
        (pc.spec.claim_ref.is_none() && s.phase == PracticeClusterPhase::Available && s.sessions_served == 1)
            .then_some(pc)
    })
    .await;
    assert_eq!(pc.status.unwrap().claim, None);
    let event = common::warning_event(&client, "OrphanedClaimReleased", "lab-0rph1").await;
    assert!(event.message.unwrap_or_default().contains("alice"));
    fake.abort();
}

#[tokio::test]
async fn a_session_deleted_past_its_finalizer_while_the_operator_runs_releases_its_cluster() {
    let (_server, client, _faults, fake) = setup().await;
    let grace = std::time::Duration::from_secs(1);
    let ctx = with_orphan_grace(&client, grace);
    let ctx = Context {
        // No resync within the test: only the Session's watch can bring the release.
        config: Arc::new(ControllerConfig {
            resync: std::time::Duration::from_secs(600),
            ..ctx.config.as_ref().clone()
        }),
        ..ctx
    };
    let (_stop, _handle) = run_cluster_controller_with(ctx);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-0rph2", 2))
        .await
        .unwrap();
    wait_phase(&client, "lab-0rph2", PracticeClusterPhase::Available).await;
    let bob = finalized_session(&client, "bob").await;
    claim_for(&api, "lab-0rph2", &bob).await;
    // Past the grace, with the Session there: the claim is checked and kept.
    eventually("the claim recorded longer ago than the grace", || async {
        let pc = api.get("lab-0rph2").await.ok()?;
        let since = pc.status?.claim?.since.0;
        let age = jiff::Timestamp::now().duration_since(since);
        (age.as_secs_f64() > 2.0 * grace.as_secs_f64()).then_some(())
    })
    .await;
    let pc = wait_phase(&client, "lab-0rph2", PracticeClusterPhase::Assigned).await;
    assert_eq!(
        pc.spec.claim_ref.unwrap().uid,
        bob.uid(),
        "a live Session's claim is kept"
    );

    delete_past_finalizer(&client, "bob").await;
    eventually("the orphaned claim released and the cluster reset", || async {
        let pc = api.get("lab-0rph2").await.ok()?;
        let s = pc.status.as_ref()?;
        (pc.spec.claim_ref.is_none() && s.phase == PracticeClusterPhase::Available && s.sessions_served == 1)
            .then_some(())
    })
    .await;
    fake.abort();
}

#[tokio::test]
async fn a_claim_is_kept_while_its_session_exists_and_released_when_the_uid_names_none() {
    let (_server, client, _faults, fake) = setup().await;
    let (stop, handle) = run_cluster_controller(&client);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &practice_cluster("lab-0rph3", 2))
        .await
        .unwrap();
    wait_phase(&client, "lab-0rph3", PracticeClusterPhase::Available).await;
    stop_controller(stop, handle).await;

    // No grace at all, so every reconcile checks the Session: a fresh claim by a Session that
    // exists is never released.
    let ctx = with_orphan_grace(&client, std::time::Duration::ZERO);
    let carol = finalized_session(&client, "carol").await;
    claim_for(&api, "lab-0rph3", &carol).await;
    for _ in 0..3 {
        let pc = api.get("lab-0rph3").await.unwrap();
        cluster::reconcile_object(&pc, &ctx).await.unwrap();
    }
    let pc = api.get("lab-0rph3").await.unwrap();
    assert_eq!(pc.spec.claim_ref.as_ref().unwrap().uid, carol.uid());
    assert_eq!(pc.status.unwrap().phase, PracticeClusterPhase::Assigned);

    // Released, then claimed under carol's name with a uid no Session has (a recreated
    // Session's claim, or one written by hand): that Session is gone.
    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    api.patch("lab-0rph3", &PatchParams::default(), &release)
        .await
        .unwrap();
    let stale = Patch::Merge(
        json!({"spec": {"claimRef": {"name": "carol", "uid": "0b7c6f4e-5a1d-4c3b-9e2f-1a2b3c4d5e6f"}}}),
    );
    api.patch("lab-0rph3", &PatchParams::default(), &stale)
        .await
        .unwrap();
    let pc = api.get("lab-0rph3").await.unwrap();
    cluster::reconcile_object(&pc, &ctx).await.unwrap();
    let pc = api.get("lab-0rph3").await.unwrap();
    assert_eq!(
        pc.spec.claim_ref, None,
        "the claim of a Session that does not exist"
    );
    fake.abort();
}
