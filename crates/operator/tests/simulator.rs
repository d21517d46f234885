//! Both controllers against the development control plane's KubeVirt simulator: real
//! DataVolume clones, VM run strategies, snapshots and restores with their status
//! transitions and injected faults, Services with ClusterIPs, and on each control-plane VM
//! the simulator's nested practice-cluster API. Readiness is the operator's own check in
//! `vmi-ip` mode: the admin client certificate against `VMI_IP:6443`, the serving
//! certificate verified for the control-plane Service's DNS name.

mod common;

use std::path::{Path, PathBuf};

use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::{ClusterPool, PracticeCluster};
use cks_devcluster::DevCluster;
use cks_devcluster::kubevirt::Fault;
use cks_kubevirt::kubevirt::VirtualMachine;
use cks_kubevirt::naming::{API_SERVER_PORT, VmId};
use common::{NS, clusters, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::json;

async fn start(faults: &[(Fault, f64)]) -> (DevCluster, Client) {
    common::sim::start(faults, None).await
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
    // The pool names the last failure, whatever it keeps for inspection.
    assert_eq!(degraded.reason, "CloneFailed");
    assert!(
        degraded.message.contains("failed in a row"),
        "{}",
        degraded.message
    );

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

/// A client of the practice cluster's nested API, as the operator's `vmi-ip` probe reaches
/// it: the admin kubeconfig from the cluster's Secret, the control-plane VMI's IP as the
/// URL, and the serving certificate verified for the Service DNS name the kubeconfig names.
async fn practice_client(client: &Client, pc: &PracticeCluster) -> Option<Client> {
    let status = pc.status.as_ref()?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), status.namespace.as_deref()?);
    let secret = secrets
        .get(status.admin_kubeconfig_secret.as_deref()?)
        .await
        .ok()?;
    let yaml = secret.data?.remove("kubeconfig")?;
    let kubeconfig = Kubeconfig::from_yaml(std::str::from_utf8(&yaml.0).ok()?).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let cp = status
        .vms
        .iter()
        .find(|v| v.target == VmId::ControlPlane.target())?;
    config.tls_server_name = config.cluster_url.host().map(str::to_owned);
    config.cluster_url = format!("https://{}:{API_SERVER_PORT}", cp.ip.as_deref()?)
        .parse()
        .unwrap();
    Some(Client::try_from(config).unwrap())
}

/// Directories of the control-plane VM's disks, as they are now.
async fn control_plane_disks(client: &Client, disks: &Path, pc: &PracticeCluster) -> Vec<PathBuf> {
    let status = pc.status.as_ref().unwrap();
    let vm_ns = status.namespace.as_deref().unwrap();
    let cp = status
        .vms
        .iter()
        .find(|v| v.target == VmId::ControlPlane.target())
        .unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), vm_ns);
    let vm = vms.get(&cp.name).await.unwrap();
    let dirs: Vec<PathBuf> = vm
        .claim_names()
        .into_iter()
        .map(|claim| disks.join("disks").join(vm_ns).join(claim))
        .collect();
    assert!(!dirs.is_empty(), "the control plane VM has no disks");
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reverts_changes_made_inside_the_practice_cluster() {
    let disks = std::env::temp_dir().join(format!("cks-operator-reset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&disks);
    let (_server, client) = common::sim::start(&[], Some(disks.clone())).await;
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("rev", 1, 2, 1))
        .await
        .unwrap();
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let pc = eventually("an Available cluster", || async {
        let list = clusters(&client, "rev").await;
        list.into_iter()
            .find(|c| phase(c) == PracticeClusterPhase::Available)
    })
    .await;
    let name = pc.name_any();

    let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": "erin"}}}));
    api.patch(&name, &PatchParams::default(), &claim).await.unwrap();
    let pc = eventually("Assigned", || async {
        let pc = api.get(&name).await.ok()?;
        (phase(&pc) == PracticeClusterPhase::Assigned).then_some(pc)
    })
    .await;

    // What a session leaves behind: an object in the practice cluster and a file on the
    // control plane's disk.
    let practice = practice_client(&client, &pc)
        .await
        .expect("the practice cluster's admin kubeconfig and control-plane IP");
    let configmaps: Api<ConfigMap> = Api::namespaced(practice, "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "left-by-session"},
        "data": {"who": "erin"},
    }))
    .unwrap();
    configmaps.create(&PostParams::default(), &cm).await.unwrap();
    for dir in control_plane_disks(&client, &disks, &pc).await {
        std::fs::write(dir.join("left-by-session"), "erin").unwrap();
    }

    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    api.patch(&name, &PatchParams::default(), &release).await.unwrap();
    let pc = eventually("the reset to finish", || async {
        let pc = api.get(&name).await.ok()?;
        let s = pc.status.as_ref()?;
        (s.phase == PracticeClusterPhase::Available && s.sessions_served == 1).then_some(pc)
    })
    .await;

    let practice = practice_client(&client, &pc)
        .await
        .expect("the practice cluster's admin kubeconfig and control-plane IP");
    let configmaps: Api<ConfigMap> = Api::namespaced(practice, "default");
    assert!(
        configmaps.get_opt("left-by-session").await.unwrap().is_none(),
        "the ConfigMap survived the reset"
    );
    for dir in control_plane_disks(&client, &disks, &pc).await {
        assert!(dir.is_dir(), "{} is not a disk directory", dir.display());
        assert!(
            !dir.join("left-by-session").exists(),
            "the file survived the reset in {}",
            dir.display()
        );
    }

    pools.delete("rev", &DeleteParams::default()).await.unwrap();
    nothing_left(&client, "rev").await;
    let _ = std::fs::remove_dir_all(&disks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_never_gets_an_ip_fails_its_cluster_at_the_timeout() {
    let (_server, client) = start(&[(Fault::NoIp, 1.0)]).await;
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let mut p = common::pool("noip", 1, 2, 1);
    p.spec.keep_failed = 1;
    p.spec.provisioning.max_retries = 0;
    pools.create(&PostParams::default(), &p).await.unwrap();
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let name = eventually("a cluster waiting for its control plane's IP", || async {
        let list = clusters(&client, "noip").await;
        list.iter()
            .find(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.phase == PracticeClusterPhase::Bootstrapping
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.message.contains("no IP"))
                })
            })
            .map(ResourceExt::name_any)
    })
    .await;

    // The CRD's minimum timeout is a minute; instead of waiting it out, the phase is made to
    // have started two hours ago.
    let pc = eventually("the cluster to fail on its timeout", || async {
        let pc = api.get(&name).await.ok()?;
        let status = pc.status.as_ref()?;
        if status.phase == PracticeClusterPhase::Failed {
            return Some(pc);
        }
        let since = status.phase_since.as_ref()?.0;
        if jiff::Timestamp::now().duration_since(since).as_secs() < 3600 {
            let two_hours_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
            let patch = Patch::Merge(json!({"status": {"phaseSince": two_hours_ago.to_string()}}));
            let _ = api.patch_status(&name, &PatchParams::default(), &patch).await;
        }
        None
    })
    .await;
    let status = pc.status.unwrap();
    assert_eq!(status.failure_reason.as_deref(), Some("Timeout"));
    let message = status.failure_message.unwrap();
    assert!(message.contains("Bootstrapping did not finish"), "{message}");
    assert!(message.contains("no IP"), "{message}");
    let degraded = eventually("pool Degraded", || async {
        let s = pools.get("noip").await.ok()?.status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
    })
    .await;
    assert_eq!(degraded.reason, "Timeout");
    assert!(degraded.message.contains("no IP"), "{}", degraded.message);

    pools.delete("noip", &DeleteParams::default()).await.unwrap();
    nothing_left(&client, "noip").await;
}
