//! A deliberately small stand-in for KubeVirt and CDI on the plain development control
//! plane, for controller tests that must not depend on the simulator: minimal CRDs, and a
//! loop that gives every VM a cloned DataVolume, runs or stops its VMI per runStrategy,
//! completes snapshots and restores (a restore only once its VM has no VMI, as KubeVirt
//! requires), and gives control-plane Services a ClusterIP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cks_devcluster::DevCluster;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const KINDS: [(&str, &str, &str, &str); 5] = [
    ("kubevirt.io", "v1", "VirtualMachine", "virtualmachines"),
    (
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    ),
    ("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes"),
    (
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineSnapshot",
        "virtualmachinesnapshots",
    ),
    (
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineRestore",
        "virtualmachinerestores",
    ),
];

/// Registers schema-less CRDs for the KubeVirt kinds the operator uses.
pub fn install_crds(server: &DevCluster) {
    let manifests: Vec<cks_devcluster::apply::Manifest> = KINDS
        .iter()
        .map(|(group, version, kind, plural)| cks_devcluster::apply::Manifest {
            path: "fake-kubevirt".into(),
            object: json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.{group}")},
                "spec": {
                    "group": group, "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                    "versions": [{"name": version, "served": true, "storage": true,
                                  "subresources": {"status": {}},
                                  "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
                },
            }),
        })
        .collect();
    server.apply(&manifests).expect("fake KubeVirt CRDs apply");
}

fn api(client: &Client, kind: &str) -> Api<DynamicObject> {
    let (group, version, kind, plural) = KINDS.iter().find(|k| k.2 == kind).unwrap();
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::all_with(client.clone(), &ar)
}

fn ns_api(client: &Client, kind: &str, ns: &str) -> Api<DynamicObject> {
    let (group, version, kind, plural) = KINDS.iter().find(|k| k.2 == kind).unwrap();
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Switches of the fake.
#[derive(Debug, Default)]
pub struct Faults {
    /// New DataVolumes fail their clone.
    pub clone_fails: AtomicBool,
    /// Clones stay in progress.
    pub hold_clones: AtomicBool,
    /// Restores stay incomplete.
    pub hold_restores: AtomicBool,
    /// This many restores fail (like KubeVirt: a `Failure` condition, never complete).
    pub failing_restores: AtomicUsize,
}

/// Runs the fake until the returned handle is aborted.
pub fn run(client: Client, faults: Arc<Faults>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Objects vanish under the fake while namespaces are deleted; just go round again.
            let _ = step(&client, &faults).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn set_status(api: &Api<DynamicObject>, name: &str, status: Value) -> Result<(), kube::Error> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
}

fn owner(vm: &DynamicObject) -> Value {
    json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": vm.name_any(),
            "uid": vm.uid().unwrap_or_default(), "controller": true}])
}

async fn step(client: &Client, faults: &Faults) -> Result<(), kube::Error> {
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::all(client.clone());
    for svc in services
        .list(&ListParams::default().labels("cks.io/role=control-plane"))
        .await?
    {
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_ref()).is_none() {
            let api: Api<k8s_openapi::api::core::v1::Service> =
                Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
            api.patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"clusterIP": "10.96.0.10"}})),
            )
            .await?;
        }
    }
    let vmis_all = api(client, "VirtualMachineInstance")
        .list(&ListParams::default())
        .await?
        .items;
    for vm in api(client, "VirtualMachine").list(&ListParams::default()).await? {
        let ns = vm.namespace().unwrap_or_default();
        let name = vm.name_any();
        if vm.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let vms = ns_api(client, "VirtualMachine", &ns);
        let dvs = ns_api(client, "DataVolume", &ns);
        let vmis = ns_api(client, "VirtualMachineInstance", &ns);
        let dv_name = format!("{name}-root");
        let dv = match dvs.get_opt(&dv_name).await? {
            Some(mut dv) => {
                if dv.data["status"]["phase"] == "CloneInProgress"
                    && !faults.hold_clones.load(Ordering::Relaxed)
                {
                    let status = json!({"phase": "Succeeded", "progress": "100.0%"});
                    set_status(&dvs, &dv_name, status.clone()).await?;
                    dv.data["status"] = status;
                }
                dv
            }
            None => {
                let mut dv: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                    "metadata": {"name": dv_name, "namespace": ns, "labels": vm.labels(), "ownerReferences": owner(&vm)},
                    "spec": {},
                }))
                .unwrap();
                dv = dvs.create(&PostParams::default(), &dv).await?;
                let status = if faults.clone_fails.load(Ordering::Relaxed) {
                    json!({"phase": "Failed", "conditions": [{"type": "Running", "status": "False",
                            "message": "source PVC vm-templates/golden not found"}]})
                } else if faults.hold_clones.load(Ordering::Relaxed) {
                    json!({"phase": "CloneInProgress", "progress": "42.00%"})
                } else {
                    json!({"phase": "Succeeded", "progress": "100.0%"})
                };
                set_status(&dvs, &dv_name, status.clone()).await?;
                dv.data["status"] = status;
                dv
            }
        };
        let cloned = dv.data["status"]["phase"] == "Succeeded";
        let strategy = vm.data["spec"]["runStrategy"]
            .as_str()
            .unwrap_or("Halted")
            .to_owned();
        let vmi = vmis_all
            .iter()
            .find(|v| v.namespace().as_deref() == Some(&ns) && v.name_any() == name);
        if strategy == "Always" && cloned {
            if vmi.is_none() {
                let mut new: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": {"name": name, "namespace": ns, "labels": vm.labels(), "ownerReferences": owner(&vm)},
                    "spec": {"domain": {"devices": {}}},
                }))
                .unwrap();
                new = vmis.create(&PostParams::default(), &new).await?;
                drop(new);
                set_status(
                    &vmis,
                    &name,
                    json!({"phase": "Running",
                    "interfaces": [{"name": "default", "ipAddress": "127.0.0.1"}],
                    "conditions": [{"type": "Ready", "status": "True"}]}),
                )
                .await?;
            }
            if vm.data["status"]["ready"] != true {
                set_status(
                    &vms,
                    &name,
                    json!({"ready": true, "created": true, "printableStatus": "Running"}),
                )
                .await?;
            }
        } else {
            if let Some(v) = vmi
                && v.metadata.deletion_timestamp.is_none()
            {
                vmis.delete(&name, &Default::default()).await?;
            }
            let printable = match dv.data["status"]["phase"].as_str() {
                Some("Failed") => "DataVolumeError",
                Some("Succeeded") => "Stopped",
                _ => "Provisioning",
            };
            if vm.data["status"]["printableStatus"] != printable {
                set_status(
                    &vms,
                    &name,
                    json!({"ready": false, "created": false, "printableStatus": printable}),
                )
                .await?;
            }
        }
    }
    for snap in api(client, "VirtualMachineSnapshot")
        .list(&ListParams::default())
        .await?
    {
        if snap.data.get("status").is_none() || snap.data["status"]["readyToUse"] != true {
            let snaps = ns_api(
                client,
                "VirtualMachineSnapshot",
                &snap.namespace().unwrap_or_default(),
            );
            set_status(
                &snaps,
                &snap.name_any(),
                json!({"phase": "Succeeded", "readyToUse": true}),
            )
            .await?;
        }
    }
    if !faults.hold_restores.load(Ordering::Relaxed) {
        for restore in api(client, "VirtualMachineRestore")
            .list(&ListParams::default())
            .await?
        {
            let ns = restore.namespace().unwrap_or_default();
            let target = restore.data["spec"]["target"]["name"]
                .as_str()
                .unwrap_or_default();
            let stopped = !vmis_all
                .iter()
                .any(|v| v.namespace().as_deref() == Some(&ns) && v.name_any() == target);
            let settled = restore.data["status"]["complete"] == true
                || restore.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty());
            if stopped && !settled {
                let restores = ns_api(client, "VirtualMachineRestore", &ns);
                let fail = faults
                    .failing_restores
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
                let status = if fail {
                    json!({"complete": false, "conditions": [{"type": "Failure", "status": "True",
                            "reason": "RestoreFailed", "message": "VolumeSnapshot content is gone"}]})
                } else {
                    json!({"complete": true})
                };
                set_status(&restores, &restore.name_any(), status).await?;
            }
        }
    }
    Ok(())
}
