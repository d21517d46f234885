//! Both controllers against the development control plane's KubeVirt simulator: real
//! DataVolume clones, VM run strategies, snapshots and restores with their status
//! transitions and injected faults. The simulator serves no practice-cluster API yet, so
//! readiness uses the always-ready probe, and Services get no ClusterIP there, so a small
//! loop plays the API server's allocator for control-plane Services.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::{ClusterPool, PracticeCluster};
use cks_devcluster::kubevirt::{Fault, SimOptions};
use cks_devcluster::{DevCluster, Options};
use cks_operator::context::Context;
use cks_operator::{cluster, pool};
use common::{NS, clusters, eventually};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

async fn start(faults: &[(Fault, f64)]) -> (DevCluster, Client) {
    let opts = Options {
        kubevirt: Some(SimOptions {
            golden_images: vec!["vm-templates/golden".into()],
            fault_rates: faults.iter().copied().collect(),
            ..SimOptions::default()
        }),
        ..Options::default()
    };
    let server = DevCluster::start(opts).await.expect("devcluster starts");
    let mut manifests = cks_devcluster::apply::read_manifests(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds"),
    )
    .unwrap();
    cks_devcluster::apply::order(&mut manifests);
    server.apply(&manifests).expect("CRDs apply");
    let client = server.client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let key: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ssh-key"},
        "stringData": {"ssh-publickey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa5c2Pf0b6y6k3c cks@lab"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &key).await.unwrap();
    allocate_cluster_ips(client.clone());
    let ctx = Arc::new(Context::test(client.clone()));
    tokio::spawn(pool::run(ctx.clone(), Some(NS), std::future::pending()));
    tokio::spawn(cluster::run(ctx, Some(NS), std::future::pending()));
    (server, client)
}

fn allocate_cluster_ips(client: Client) {
    tokio::spawn(async move {
        let services: Api<Service> = Api::all(client.clone());
        let mut next = 10u8;
        loop {
            if let Ok(list) = services
                .list(&ListParams::default().labels("cks.io/role=control-plane"))
                .await
            {
                for svc in list {
                    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_ref()).is_none() {
                        let api: Api<Service> =
                            Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
                        let ip = format!("10.96.0.{next}");
                        next = next.wrapping_add(1);
                        let patch = Patch::Merge(json!({"spec": {"clusterIP": ip}}));
                        let _ = api.patch(&svc.name_any(), &PatchParams::default(), &patch).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

fn phase(pc: &PracticeCluster) -> PracticeClusterPhase {
    pc.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

async fn nothing_left(client: &Client, pool_name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let vms: Api<cks_kubevirt::kubevirt::VirtualMachine> = Api::all(client.clone());
    let dvs: Api<cks_kubevirt::cdi::DataVolume> = Api::all(client.clone());
    eventually(
        "no clusters, namespaces, VMs, DataVolumes or cluster PVCs left",
        || async {
            let left = clusters(client, pool_name).await.len()
                + namespaces
                    .list(&ListParams::default().labels(&format!("cks.io/pool={pool_name}")))
                    .await
                    .ok()?
                    .items
                    .len()
                + vms.list(&ListParams::default()).await.ok()?.items.len()
                + dvs.list(&ListParams::default()).await.ok()?.items.len()
                + pvcs
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .filter(|p| p.namespace().as_deref() != Some("vm-templates"))
                    .count();
            (left == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_of_three_becomes_available_resets_a_released_cluster_and_leaves_nothing() {
    let (_server, client) = start(&[]).await;
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("sim", 3, 5, 3))
        .await
        .unwrap();
    eventually("three Available clusters", || async {
        let list = clusters(&client, "sim").await;
        (list.len() == 3 && list.iter().all(|c| phase(c) == PracticeClusterPhase::Available)).then_some(())
    })
    .await;

    // A session uses one; after release it is restored from its snapshots.
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let name = clusters(&client, "sim").await[0].name_any();
    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "alice"}}}));
    api.patch(&name, &PatchParams::default(), &claim).await.unwrap();
    eventually("Assigned", || async {
        (phase(&api.get(&name).await.ok()?) == PracticeClusterPhase::Assigned).then_some(())
    })
    .await;
    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    api.patch(&name, &PatchParams::default(), &release).await.unwrap();
    let pc = eventually("the reset to finish", || async {
        let pc = api.get(&name).await.ok()?;
        let s = pc.status.as_ref()?;
        (s.phase == PracticeClusterPhase::Available && s.sessions_served == 1).then_some(pc)
    })
    .await;
    let status = pc.status.unwrap();
    assert!(
        status.vms.iter().all(|v| v.ready && v.snapshot_ready),
        "{:?}",
        status.vms
    );

    pools.delete("sim", &DeleteParams::default()).await.unwrap();
    nothing_left(&client, "sim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_clones_end_in_failed_clusters_that_the_pool_replaces() {
    let (_server, client) = start(&[(Fault::CloneFail, 1.0)]).await;
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let mut p = common::pool("bad", 1, 3, 1);
    p.spec.keep_failed = 1;
    p.spec.provisioning.max_retries = 1;
    pools.create(&PostParams::default(), &p).await.unwrap();

    let failed = eventually("a Failed cluster kept and a replacement being built", || async {
        let list = clusters(&client, "bad").await;
        let failed: Vec<PracticeCluster> = list
            .iter()
            .filter(|c| phase(c) == PracticeClusterPhase::Failed)
            .cloned()
            .collect();
        let building = list.iter().any(|c| phase(c).is_provisioning());
        (failed.len() == 1 && building).then(|| failed[0].clone())
    })
    .await;
    let status = failed.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("CloneFailed"));
    assert!(
        status
            .failure_message
            .unwrap()
            .contains("gave up after 2 attempts")
    );
    let degraded = eventually("pool Degraded", || async {
        let s = pools.get("bad").await.ok()?.status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
    })
    .await;
    assert_eq!(degraded.reason, "ClustersFailed");

    pools.delete("bad", &DeleteParams::default()).await.unwrap();
    nothing_left(&client, "bad").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_restores_fail_the_reset_and_the_pool_replaces_the_cluster() {
    let (_server, client) = start(&[(Fault::RestoreFail, 1.0)]).await;
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let mut p = common::pool("rst", 1, 3, 1);
    p.spec.keep_failed = 1;
    p.spec.reset.max_retries = 1;
    pools.create(&PostParams::default(), &p).await.unwrap();
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let name = eventually("an Available cluster", || async {
        let list = clusters(&client, "rst").await;
        let c = list
            .iter()
            .find(|c| phase(c) == PracticeClusterPhase::Available)?;
        Some(c.name_any())
    })
    .await;
    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "dave"}}}));
    api.patch(&name, &PatchParams::default(), &claim).await.unwrap();
    eventually("Assigned", || async {
        (phase(&api.get(&name).await.ok()?) == PracticeClusterPhase::Assigned).then_some(())
    })
    .await;
    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    api.patch(&name, &PatchParams::default(), &release).await.unwrap();

    let pc = eventually("the reset to give up", || async {
        let pc = api.get(&name).await.ok()?;
        (phase(&pc) == PracticeClusterPhase::Failed).then_some(pc)
    })
    .await;
    let status = pc.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("RestoreFailed"));
    assert!(
        status
            .failure_message
            .unwrap()
            .contains("gave up after 2 attempts")
    );
    eventually("a replacement Available", || async {
        let list = clusters(&client, "rst").await;
        list.iter()
            .any(|c| c.name_any() != name && phase(c) == PracticeClusterPhase::Available)
            .then_some(())
    })
    .await;
    pools.delete("rst", &DeleteParams::default()).await.unwrap();
    nothing_left(&client, "rst").await;
}
