//! KubeVirt/CDI simulator: CRDs, DataVolume clones, run strategies, the start/stop/restart
//! subresources with virt-api's 409s, snapshots, restores and every injected fault.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cks_devcluster::kubevirt::{FAULT_ANNOTATION, Fault, SimOptions};
use cks_devcluster::{DevCluster, Options};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use common::eventually;

const GOLDEN: &str = "vm-templates/golden";

struct Sim {
    _cluster: DevCluster,
    client: kube::Client,
    disks: tempfile::TempDir,
}

async fn start_sim(fault_rates: BTreeMap<Fault, f64>) -> Sim {
    let disks = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        kubevirt: Some(SimOptions {
            fault_rates,
            disk_dir: Some(disks.path().to_path_buf()),
            golden_images: vec![GOLDEN.to_string()],
            ..SimOptions::default()
        }),
        ..Options::default()
    };
    let cluster = common::start_with(opts).await;
    let client = cluster.client().await.expect("client");
    Sim {
        _cluster: cluster,
        client,
        disks,
    }
}

fn api(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), "default", &ar)
}

impl Sim {
    fn vms(&self) -> Api<DynamicObject> {
        api(
            &self.client,
            "kubevirt.io",
            "v1",
            "VirtualMachine",
            "virtualmachines",
        )
    }
    fn vmis(&self) -> Api<DynamicObject> {
        api(
            &self.client,
            "kubevirt.io",
            "v1",
            "VirtualMachineInstance",
            "virtualmachineinstances",
        )
    }
    fn dvs(&self) -> Api<DynamicObject> {
        api(
            &self.client,
            "cdi.kubevirt.io",
            "v1beta1",
            "DataVolume",
            "datavolumes",
        )
    }
    fn pvcs(&self) -> Api<DynamicObject> {
        api(
            &self.client,
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
        )
    }
    fn snapshots(&self) -> Api<DynamicObject> {
        api(
            &self.client,
            "snapshot.kubevirt.io",
            "v1beta1",
            "VirtualMachineSnapshot",
            "virtualmachinesnapshots",
        )
    }
    fn contents(&self) -> Api<DynamicObject> {
        api(
            &self.client,
            "snapshot.kubevirt.io",
            "v1beta1",
            "VirtualMachineSnapshotContent",
            "virtualmachinesnapshotcontents",
        )
    }
    fn restores(&self) -> Api<DynamicObject> {
        api(
            &self.client,
            "snapshot.kubevirt.io",
            "v1beta1",
            "VirtualMachineRestore",
            "virtualmachinerestores",
        )
    }

    async fn create(&self, api: &Api<DynamicObject>, obj: Value) -> Value {
        let obj: DynamicObject = serde_json::from_value(obj).expect("object");
        let created = api.create(&PostParams::default(), &obj).await.expect("create");
        serde_json::to_value(created).expect("json")
    }

    /// Wait until `path` (JSON pointer) of object `name` satisfies `pred`; returns the object.
    async fn wait(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, || async {
            let o = api.get_opt(name).await.ok().flatten()?;
            let v = serde_json::to_value(o).ok()?;
            pred(&v).then_some(v)
        })
        .await
    }

    async fn wait_gone(&self, api: &Api<DynamicObject>, name: &str, what: &str) {
        eventually(what, || async {
            api.get_opt(name).await.ok().flatten().is_none().then_some(())
        })
        .await;
    }

    /// PUT a subresource; returns the HTTP status and the Status message on failure.
    async fn action(&self, vm: &str, action: &str) -> Result<(), (u16, String)> {
        let req = http::Request::put(format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{vm}/{action}"
        ))
        .body(b"{}".to_vec())
        .expect("request");
        match self.client.request_text(req).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) => Err((s.code, s.message)),
            Err(e) => panic!("{action}: {e}"),
        }
    }

    fn disk(&self, name: &str) -> std::path::PathBuf {
        self.disks.path().join("disks/default").join(name)
    }
}

fn vm(name: &str, strategy: &str, faults: &[Fault]) -> Value {
    let mut v = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "sim"}},
        "spec": {
            "runStrategy": strategy,
            "dataVolumeTemplates": [{"metadata": {"name": format!("{name}-rootdisk")},
                "spec": {"source": {"pvc": {"namespace": "vm-templates", "name": "golden"}},
                    "storage": {"resources": {"requests": {"storage": "10Gi"}}}}}],
            "template": {"metadata": {"labels": {"app": "sim"}}, "spec": {
                "domain": {"devices": {"disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}]}},
                "volumes": [{"name": "rootdisk", "dataVolume": {"name": format!("{name}-rootdisk")}}]}},
        },
    });
    if !faults.is_empty() {
        let names: Vec<_> = faults.iter().map(|f| f.name()).collect();
        v["metadata"]["annotations"] = json!({FAULT_ANNOTATION: names.join(",")});
    }
    v
}

fn printable(v: &Value) -> &str {
    v["status"]["printableStatus"].as_str().unwrap_or_default()
}

fn phase(v: &Value) -> &str {
    v["status"]["phase"].as_str().unwrap_or_default()
}

fn cond<'a>(v: &'a Value, ty: &str) -> Option<&'a Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// Record every distinct value of `status.phase` of an object from a watch started before it
/// exists, until `last` is seen.
async fn phases(api: &Api<DynamicObject>, name: &str, last: &str, field: &str) -> (Vec<String>, Vec<String>) {
    let mut stream = api
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            "0",
        )
        .await
        .expect("watch")
        .boxed();
    let mut seen: Vec<String> = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) = ev {
            let v = serde_json::to_value(o).expect("json");
            let p = v["status"][field].as_str().unwrap_or_default().to_string();
            if let Some(x) = v["status"]["progress"].as_str()
                && extra.last().map(String::as_str) != Some(x)
            {
                extra.push(x.to_string());
            }
            if !p.is_empty() && seen.last() != Some(&p) {
                seen.push(p.clone());
            }
            if p == last {
                break;
            }
        }
    }
    (seen, extra)
}

#[tokio::test]
async fn crds_are_served_and_running_with_run_strategy_is_rejected() {
    let sim = start_sim(BTreeMap::new()).await;
    let discovery = kube::Discovery::new(sim.client.clone())
        .run()
        .await
        .expect("discovery");
    for (group, kind) in [
        ("kubevirt.io", "VirtualMachine"),
        ("kubevirt.io", "VirtualMachineInstance"),
        ("cdi.kubevirt.io", "DataVolume"),
        ("snapshot.kubevirt.io", "VirtualMachineSnapshot"),
        ("snapshot.kubevirt.io", "VirtualMachineSnapshotContent"),
        ("snapshot.kubevirt.io", "VirtualMachineRestore"),
    ] {
        let found = discovery
            .groups()
            .flat_map(|g| g.recommended_resources())
            .any(|(ar, caps)| {
                ar.group == group
                    && ar.kind == kind
                    && caps.subresources.iter().any(|(s, _)| s.plural == "status")
            });
        assert!(found, "{group} {kind} with a status subresource");
    }
    let mut both = vm("both", "Always", &[]);
    both["spec"]["running"] = json!(true);
    let obj: DynamicObject = serde_json::from_value(both).expect("object");
    let err = sim
        .vms()
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("rejected");
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("Running and RunStrategy are mutually exclusive"),
        "{}",
        status.message
    );
    // Unknown fields are kept, as KubeVirt's schemas preserve them.
    let mut extra = vm("extra", "Halted", &[]);
    extra["spec"]["template"]["spec"]["evictionStrategy"] = json!("None");
    let created = sim.create(&sim.vms(), extra).await;
    assert_eq!(created["spec"]["template"]["spec"]["evictionStrategy"], "None");
}

#[tokio::test]
async fn data_volume_clones_the_source_pvc_through_the_cdi_phases() {
    let sim = start_sim(BTreeMap::new()).await;
    let golden = sim.disks.path().join("disks/vm-templates/golden");
    std::fs::write(golden.join("etc/marker"), "from golden").expect("write golden file");
    let dvs = sim.dvs();
    let watch = tokio::spawn({
        let dvs = dvs.clone();
        async move { phases(&dvs, "disk", "Succeeded", "phase").await }
    });
    // Let the watch start first so it sees every transition.
    eventually("watch registered", || async { Some(()) }).await;
    tokio::task::yield_now().await;
    sim.create(
        &dvs,
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "disk"},
        "spec": {"source": {"pvc": {"namespace": "vm-templates", "name": "golden"}},
            "storage": {"resources": {"requests": {"storage": "10Gi"}}}}}),
    )
    .await;
    let (seen, progress) = watch.await.expect("watch task");
    let want = ["CloneScheduled", "CloneInProgress", "Succeeded"];
    assert!(seen.ends_with(&want.map(String::from)), "phases {seen:?}");
    assert!(progress.iter().any(|p| p == "0.00%"), "progress {progress:?}");
    assert_eq!(progress.last().map(String::as_str), Some("100.0%"));
    let dv = sim
        .wait(&dvs, "disk", "dv ready", |v| phase(v) == "Succeeded")
        .await;
    assert_eq!(cond(&dv, "Ready").unwrap()["status"], "True");
    assert_eq!(cond(&dv, "Bound").unwrap()["status"], "True");
    let pvc = sim
        .wait(&sim.pvcs(), "disk", "pvc bound", |v| phase(v) == "Bound")
        .await;
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "DataVolume");
    assert_eq!(
        std::fs::read_to_string(sim.disk("disk").join("etc/marker")).unwrap(),
        "from golden"
    );
}

#[tokio::test]
async fn data_volume_without_source_waits_with_clone_without_source_until_it_appears() {
    let sim = start_sim(BTreeMap::new()).await;
    sim.create(
        &sim.dvs(),
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "orphan"},
        "spec": {"source": {"pvc": {"namespace": "default", "name": "missing"}},
            "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}),
    )
    .await;
    let dv = sim
        .wait(&sim.dvs(), "orphan", "CloneWithoutSource", |v| {
            cond(v, "Bound").is_some_and(|c| c["reason"] == "CloneWithoutSource")
        })
        .await;
    assert_eq!(phase(&dv), "Pending");
    assert_eq!(
        cond(&dv, "Bound").unwrap()["message"],
        "The source pvc missing doesn't exist"
    );
    sim.create(
        &sim.pvcs(),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "missing"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    sim.wait(&sim.dvs(), "orphan", "clone after the source appears", |v| {
        phase(v) == "Succeeded"
    })
    .await;
}

async fn running_vm(sim: &Sim, name: &str, strategy: &str, faults: &[Fault]) -> Value {
    sim.create(&sim.vms(), vm(name, strategy, faults)).await;
    sim.wait(&sim.vms(), name, "vm running and ready", |v| {
        printable(v) == "Running" && v["status"]["ready"] == true
    })
    .await
}

#[tokio::test]
async fn always_vm_provisions_its_disk_then_runs_with_a_unique_loopback_ip() {
    let sim = start_sim(BTreeMap::new()).await;
    let watch = tokio::spawn({
        let vms = sim.vms();
        async move { phases(&vms, "a", "Running", "printableStatus").await }
    });
    tokio::task::yield_now().await;
    sim.create(&sim.vms(), vm("a", "Always", &[])).await;
    let (seen, _) = watch.await.expect("watch task");
    assert_eq!(seen.first().map(String::as_str), Some("Provisioning"), "{seen:?}");
    assert!(
        seen.ends_with(&["Starting".to_string(), "Running".to_string()]),
        "{seen:?}"
    );
    let vm_a = sim
        .wait(&sim.vms(), "a", "ready", |v| v["status"]["ready"] == true)
        .await;
    assert_eq!(cond(&vm_a, "Ready").unwrap()["status"], "True");
    assert_eq!(vm_a["status"]["created"], true);
    running_vm(&sim, "b", "Always", &[]).await;
    let ip = |v: &Value| {
        v["status"]["interfaces"][0]["ipAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let a = sim
        .wait(&sim.vmis(), "a", "vmi a running", |v| phase(v) == "Running")
        .await;
    let b = sim
        .wait(&sim.vmis(), "b", "vmi b running", |v| phase(v) == "Running")
        .await;
    let (ip_a, ip_b) = (ip(&a), ip(&b));
    assert!(
        ip_a.starts_with("127.") && ip_b.starts_with("127."),
        "{ip_a} {ip_b}"
    );
    assert_ne!(ip_a, ip_b);
    assert_eq!(a["metadata"]["ownerReferences"][0]["kind"], "VirtualMachine");
    assert_eq!(
        a["metadata"]["labels"]["app"], "sim",
        "template labels reach the VMI"
    );
    assert_eq!(cond(&a, "Ready").unwrap()["status"], "True");
    // The DataVolume template is owned by the VM and deleted with it.
    let dv = sim.dvs().get("a-rootdisk").await.expect("dv");
    assert_eq!(dv.metadata.owner_references.unwrap()[0].kind, "VirtualMachine");
    sim.vms()
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete vm");
    sim.wait_gone(&sim.vmis(), "a", "vmi deleted with the vm").await;
    sim.wait_gone(&sim.dvs(), "a-rootdisk", "dv deleted with the vm")
        .await;
}

#[tokio::test]
async fn halted_vm_stays_stopped_and_start_stop_restart_follow_virt_api() {
    let sim = start_sim(BTreeMap::new()).await;
    sim.create(&sim.vms(), vm("h", "Halted", &[])).await;
    let v = sim
        .wait(&sim.vms(), "h", "stopped", |v| printable(v) == "Stopped")
        .await;
    assert_eq!(cond(&v, "Ready").unwrap()["reason"], "VMINotExists");
    assert!(sim.vmis().get_opt("h").await.unwrap().is_none());
    assert_eq!(
        sim.action("h", "stop").await.unwrap_err().0,
        409,
        "stop of a stopped VM"
    );
    let (code, message) = sim.action("h", "restart").await.unwrap_err();
    assert_eq!(
        (
            code,
            message.contains("Halted does not support manual restart requests")
        ),
        (409, true),
        "{message}"
    );

    sim.action("h", "start").await.expect("start a Halted VM");
    let v = sim
        .wait(&sim.vms(), "h", "running after start", |v| {
            printable(v) == "Running"
        })
        .await;
    assert_eq!(v["spec"]["runStrategy"], "Always");
    let (code, message) = sim.action("h", "start").await.unwrap_err();
    assert_eq!(code, 409);
    assert!(
        message.contains("Always does not support manual start requests"),
        "{message}"
    );

    let first = sim.wait(&sim.vmis(), "h", "vmi", |v| phase(v) == "Running").await;
    sim.action("h", "restart").await.expect("restart");
    let second = sim
        .wait(&sim.vmis(), "h", "a new vmi after restart", |v| {
            v["metadata"]["uid"] != first["metadata"]["uid"] && phase(v) == "Running"
        })
        .await;
    assert_ne!(second["metadata"]["uid"], first["metadata"]["uid"]);

    sim.action("h", "stop").await.expect("stop");
    let v = sim
        .wait(&sim.vms(), "h", "stopped after stop", |v| {
            printable(v) == "Stopped"
        })
        .await;
    assert_eq!(v["spec"]["runStrategy"], "Halted");
    sim.wait_gone(&sim.vmis(), "h", "vmi gone after stop").await;
}

#[tokio::test]
async fn manual_vm_runs_only_on_request_and_refuses_a_second_start() {
    let sim = start_sim(BTreeMap::new()).await;
    sim.create(&sim.vms(), vm("m", "Manual", &[])).await;
    sim.wait(&sim.vms(), "m", "stopped", |v| printable(v) == "Stopped")
        .await;
    let (code, message) = sim.action("m", "stop").await.unwrap_err();
    assert_eq!(
        (code, message.as_str().contains("VM is not running")),
        (409, true),
        "{message}"
    );
    sim.action("m", "start").await.expect("start");
    sim.wait(&sim.vms(), "m", "running", |v| printable(v) == "Running")
        .await;
    let (code, message) = sim.action("m", "start").await.unwrap_err();
    assert_eq!(
        (code, message.contains("VM is already running")),
        (409, true),
        "{message}"
    );
    sim.action("m", "stop").await.expect("stop");
    let v = sim
        .wait(&sim.vms(), "m", "stopped again", |v| printable(v) == "Stopped")
        .await;
    assert_eq!(v["spec"]["runStrategy"], "Manual");
    let missing = sim.action("nope", "start").await.unwrap_err();
    assert_eq!(missing.0, 404);
}

#[tokio::test]
async fn crash_after_start_loops_for_always_reruns_for_rerun_on_failure_and_halts_once() {
    let sim = start_sim(BTreeMap::new()).await;
    for (name, strategy) in [
        ("crashy", "Always"),
        ("rerun", "RerunOnFailure"),
        ("once", "Once"),
    ] {
        // Watch from before the VM exists: a failed VMI is replaced within milliseconds.
        let watch = tokio::spawn({
            let vmis = sim.vmis();
            async move { phases(&vmis, name, "Failed", "phase").await }
        });
        tokio::task::yield_now().await;
        sim.create(&sim.vms(), vm(name, strategy, &[Fault::CrashAfterStart]))
            .await;
        let (seen, _) = watch.await.expect("watch task");
        assert!(
            seen.ends_with(&["Running".to_string(), "Failed".to_string()]),
            "{name}: {seen:?}"
        );
    }
    sim.wait(&sim.vms(), "crashy", "crash loop", |v| {
        printable(v) == "CrashLoopBackOff"
    })
    .await;
    for name in ["crashy", "rerun"] {
        let first = sim.wait(&sim.vmis(), name, "a vmi", |_| true).await;
        sim.wait(&sim.vmis(), name, "a replacement vmi", |v| {
            v["metadata"]["uid"] != first["metadata"]["uid"]
        })
        .await;
    }
    let v = sim
        .wait(&sim.vms(), "once", "halted after one run", |v| {
            v["spec"]["runStrategy"] == "Halted" && printable(v) == "Stopped"
        })
        .await;
    assert_eq!(v["status"]["created"], false);
}

#[tokio::test]
async fn never_ready_vm_is_unschedulable_and_no_ip_vm_runs_without_an_address() {
    let sim = start_sim(BTreeMap::new()).await;
    sim.create(&sim.vms(), vm("stuck", "Always", &[Fault::NeverReady]))
        .await;
    let v = sim
        .wait(&sim.vms(), "stuck", "unschedulable", |v| {
            printable(v) == "ErrorUnschedulable"
        })
        .await;
    assert_eq!(v["status"]["ready"], false);
    let vmi = sim.vmis().get("stuck").await.expect("vmi");
    let vmi = serde_json::to_value(vmi).unwrap();
    assert_eq!(phase(&vmi), "Scheduling");
    assert_eq!(cond(&vmi, "PodScheduled").unwrap()["reason"], "Unschedulable");

    running_vm(&sim, "dark", "Always", &[Fault::NoIp]).await;
    let vmi = sim
        .wait(&sim.vmis(), "dark", "running", |v| phase(v) == "Running")
        .await;
    assert!(vmi["status"]["interfaces"][0]["ipAddress"].is_null(), "{vmi}");
    assert_eq!(vmi["status"]["interfaces"][0]["name"], "default");
}

#[tokio::test]
async fn clone_fault_fails_the_data_volume_and_the_vm_shows_data_volume_error() {
    let sim = start_sim(BTreeMap::new()).await;
    sim.create(&sim.vms(), vm("broken", "Always", &[Fault::CloneFail]))
        .await;
    let dv = sim
        .wait(&sim.dvs(), "broken-rootdisk", "failed clone", |v| {
            phase(v) == "Failed"
        })
        .await;
    assert_eq!(cond(&dv, "Running").unwrap()["reason"], "Error");
    let v = sim
        .wait(&sim.vms(), "broken", "dv error", |v| {
            printable(v) == "DataVolumeError"
        })
        .await;
    assert_eq!(cond(&v, "Failure").unwrap()["status"], "True");
    assert!(
        sim.vmis().get_opt("broken").await.unwrap().is_none(),
        "no VMI without its disk"
    );
}

#[tokio::test]
async fn fault_rate_flag_injects_faults_without_annotations() {
    let sim = start_sim(BTreeMap::from([(Fault::CloneFail, 1.0)])).await;
    sim.create(&sim.vms(), vm("unlucky", "Always", &[])).await;
    sim.wait(&sim.dvs(), "unlucky-rootdisk", "failed clone", |v| {
        phase(v) == "Failed"
    })
    .await;
}

fn snapshot(name: &str, vm: &str, faults: &[Fault]) -> Value {
    let mut v = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm},
            "deletionPolicy": "Delete"}});
    if !faults.is_empty() {
        v["metadata"]["annotations"] = json!({FAULT_ANNOTATION: faults[0].name()});
    }
    v
}

fn restore(name: &str, vm: &str, snap: &str, policy: &str, faults: &[Fault]) -> Value {
    let mut v = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
        "metadata": {"name": name},
        "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm},
            "virtualMachineSnapshotName": snap, "targetReadinessPolicy": "WaitEventually"}});
    if !policy.is_empty() {
        v["spec"]["volumeRestorePolicy"] = json!(policy);
    }
    if !faults.is_empty() {
        v["metadata"]["annotations"] = json!({FAULT_ANNOTATION: faults[0].name()});
    }
    v
}

fn file(dir: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(rel)).ok()
}

#[tokio::test]
async fn snapshot_of_a_running_vm_and_restore_bring_back_its_disk() {
    let sim = start_sim(BTreeMap::new()).await;
    running_vm(&sim, "v", "Always", &[]).await;
    std::fs::write(sim.disk("v-rootdisk").join("etc/baseline"), "1").unwrap();
    sim.create(&sim.snapshots(), snapshot("v-base", "v", &[])).await;
    let snap = sim
        .wait(&sim.snapshots(), "v-base", "snapshot ready", |v| {
            phase(v) == "Succeeded"
        })
        .await;
    assert_eq!(snap["status"]["readyToUse"], true);
    assert_eq!(snap["status"]["indications"], json!(["Online", "NoGuestAgent"]));
    assert_eq!(cond(&snap, "Ready").unwrap()["status"], "True");
    let content_name = snap["status"]["virtualMachineSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let content = serde_json::to_value(sim.contents().get(&content_name).await.unwrap()).unwrap();
    assert_eq!(content["status"]["readyToUse"], true);
    assert_eq!(content["spec"]["volumeBackups"][0]["volumeName"], "rootdisk");

    // A student changes the disk.
    std::fs::write(sim.disk("v-rootdisk").join("etc/baseline"), "changed").unwrap();
    std::fs::write(sim.disk("v-rootdisk").join("etc/new"), "x").unwrap();

    // The restore waits while the VM runs.
    sim.create(&sim.restores(), restore("v-reset-1", "v", "v-base", "", &[]))
        .await;
    let r = sim
        .wait(&sim.restores(), "v-reset-1", "waiting", |v| {
            cond(v, "Progressing").is_some_and(|c| c["reason"] == "Waiting for target to be ready")
        })
        .await;
    assert_eq!(r["status"]["complete"], false);
    let v = sim
        .wait(&sim.vms(), "v", "restoreInProgress", |v| {
            v["status"]["restoreInProgress"] == "v-reset-1"
        })
        .await;
    assert_eq!(printable(&v), "Running");
    // Only one incomplete restore per target, as the webhook enforces.
    let second: DynamicObject = serde_json::from_value(restore("v-reset-2", "v", "v-base", "", &[])).unwrap();
    let kube::Error::Api(status) = sim
        .restores()
        .create(&PostParams::default(), &second)
        .await
        .unwrap_err()
    else {
        panic!("expected an API error")
    };
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("VirtualMachineRestore \"v-reset-1\" in progress"),
        "{}",
        status.message
    );

    sim.action("v", "stop").await.expect("stop");
    let r = sim
        .wait(&sim.restores(), "v-reset-1", "complete", |v| {
            v["status"]["complete"] == true
        })
        .await;
    assert!(r["status"]["restoreTime"].is_string());
    let uid = r["metadata"]["uid"].as_str().unwrap();
    let claim = format!("restore-{uid}-rootdisk");
    assert_eq!(r["status"]["restores"][0]["persistentVolumeClaim"], json!(claim));
    assert_eq!(r["status"]["deletedDataVolumes"], json!(["v-rootdisk"]));
    let pvc = sim.pvcs().get(&claim).await.expect("restore pvc");
    assert_eq!(pvc.metadata.owner_references.unwrap()[0].kind, "VirtualMachine");
    let v = sim
        .wait(&sim.vms(), "v", "restore done", |v| {
            v["status"]["restoreInProgress"].is_null()
        })
        .await;
    assert_eq!(
        v["spec"]["runStrategy"], "Halted",
        "the restore keeps the run strategy"
    );
    assert_eq!(
        v["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"],
        json!(claim)
    );
    assert_eq!(file(&sim.disk(&claim), "etc/baseline").as_deref(), Some("1"));
    assert!(file(&sim.disk(&claim), "etc/new").is_none());

    sim.action("v", "start").await.expect("start after restore");
    sim.wait(&sim.vms(), "v", "running on the restored disk", |v| {
        printable(v) == "Running"
    })
    .await;
    sim.wait(&sim.dvs(), &claim, "restored dv", |v| phase(v) == "Succeeded")
        .await;
}

#[tokio::test]
async fn in_place_restore_keeps_the_claim_names() {
    let sim = start_sim(BTreeMap::new()).await;
    sim.create(&sim.vms(), vm("p", "Halted", &[])).await;
    sim.wait(&sim.dvs(), "p-rootdisk", "disk", |v| phase(v) == "Succeeded")
        .await;
    std::fs::write(sim.disk("p-rootdisk").join("etc/state"), "base").unwrap();
    sim.create(&sim.snapshots(), snapshot("p-base", "p", &[])).await;
    let snap = sim
        .wait(&sim.snapshots(), "p-base", "ready", |v| phase(v) == "Succeeded")
        .await;
    assert_eq!(snap["status"]["indications"], json!([]), "offline snapshot");
    std::fs::write(sim.disk("p-rootdisk").join("etc/state"), "dirty").unwrap();
    sim.create(&sim.restores(), restore("p-r", "p", "p-base", "InPlace", &[]))
        .await;
    let r = sim
        .wait(&sim.restores(), "p-r", "complete", |v| {
            v["status"]["complete"] == true
        })
        .await;
    assert_eq!(r["status"]["restores"][0]["persistentVolumeClaim"], "p-rootdisk");
    assert_eq!(
        file(&sim.disk("p-rootdisk"), "etc/state").as_deref(),
        Some("base")
    );
}

#[tokio::test]
async fn snapshot_and_restore_faults_fail_like_kubevirt_and_a_failed_restore_blocks_the_next() {
    let sim = start_sim(BTreeMap::new()).await;
    sim.create(&sim.vms(), vm("f", "Halted", &[])).await;
    sim.wait(&sim.dvs(), "f-rootdisk", "disk", |v| phase(v) == "Succeeded")
        .await;
    sim.create(&sim.snapshots(), snapshot("f-bad", "f", &[Fault::SnapshotFail]))
        .await;
    let s = sim
        .wait(&sim.snapshots(), "f-bad", "failed", |v| phase(v) == "Failed")
        .await;
    assert_eq!(s["status"]["readyToUse"], false);
    assert!(
        s["status"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline exceeded")
    );
    assert_eq!(cond(&s, "Failure").unwrap()["status"], "True");

    sim.create(&sim.snapshots(), snapshot("f-good", "f", &[])).await;
    sim.wait(&sim.snapshots(), "f-good", "ready", |v| phase(v) == "Succeeded")
        .await;
    sim.create(
        &sim.restores(),
        restore("f-r1", "f", "f-good", "", &[Fault::RestoreFail]),
    )
    .await;
    let r = sim
        .wait(&sim.restores(), "f-r1", "failed restore", |v| {
            cond(v, "Failure").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert_eq!(r["status"]["complete"], false);
    let next: DynamicObject = serde_json::from_value(restore("f-r2", "f", "f-good", "", &[])).unwrap();
    let kube::Error::Api(status) = sim
        .restores()
        .create(&PostParams::default(), &next)
        .await
        .unwrap_err()
    else {
        panic!("expected an API error")
    };
    assert_eq!(status.code, 422, "a failed restore counts as incomplete");
    sim.restores()
        .delete("f-r1", &DeleteParams::default())
        .await
        .expect("delete failed restore");
    sim.wait_gone(&sim.restores(), "f-r1", "restore deleted").await;
    sim.create(&sim.restores(), restore("f-r2", "f", "f-good", "", &[]))
        .await;
    sim.wait(&sim.restores(), "f-r2", "complete", |v| {
        v["status"]["complete"] == true
    })
    .await;
}

#[tokio::test]
async fn deleted_vms_data_volumes_snapshots_and_namespaces_free_their_disk_directories() {
    let sim = start_sim(BTreeMap::new()).await;
    let gone = |path: std::path::PathBuf, what: &'static str| async move {
        eventually(what, || async { (!path.exists()).then_some(()) }).await;
    };
    // A running VM with a snapshot: its disk and the snapshot's copy are on disk.
    running_vm(&sim, "v", "Always", &[]).await;
    sim.create(&sim.snapshots(), snapshot("v-base", "v", &[])).await;
    let snap = sim
        .wait(&sim.snapshots(), "v-base", "snapshot ready", |v| {
            phase(v) == "Succeeded"
        })
        .await;
    let content = snap["status"]["virtualMachineSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let snap_dir = sim.disks.path().join("snapshots/default").join(&content);
    assert!(snap_dir.join("rootdisk/etc/golden-image").exists());
    assert!(sim.disk("v-rootdisk").join("etc/golden-image").exists());

    // Deleting the snapshot deletes its content, and the copy goes with it.
    sim.snapshots()
        .delete("v-base", &DeleteParams::default())
        .await
        .expect("delete snapshot");
    gone(snap_dir, "snapshot directory removed").await;

    // Deleting the VM deletes its DataVolume and PVC, and the disk goes once the VM is down.
    sim.vms()
        .delete("v", &DeleteParams::default())
        .await
        .expect("delete vm");
    gone(sim.disk("v-rootdisk"), "VM disk removed").await;

    // A standalone DataVolume.
    sim.create(
        &sim.dvs(),
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "scratch"},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}),
    )
    .await;
    sim.wait(&sim.dvs(), "scratch", "dv ready", |v| phase(v) == "Succeeded")
        .await;
    assert!(sim.disk("scratch").exists());
    sim.dvs()
        .delete("scratch", &DeleteParams::default())
        .await
        .expect("delete dv");
    gone(sim.disk("scratch"), "DataVolume disk removed").await;

    // Everything in a deleted namespace: disks, snapshots and the namespace's directories.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(sim.client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "lab"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let in_lab = |plural: &str, kind: &str, group: &str, version: &str| {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        Api::<DynamicObject>::namespaced_with(sim.client.clone(), "lab", &ar)
    };
    let lab_vms = in_lab("virtualmachines", "VirtualMachine", "kubevirt.io", "v1");
    let lab_snaps = in_lab(
        "virtualmachinesnapshots",
        "VirtualMachineSnapshot",
        "snapshot.kubevirt.io",
        "v1beta1",
    );
    sim.create(&lab_vms, vm("w", "Halted", &[])).await;
    sim.wait(&lab_vms, "w", "lab vm provisioned", |v| printable(v) == "Stopped")
        .await;
    sim.create(&lab_snaps, snapshot("w-base", "w", &[])).await;
    sim.wait(&lab_snaps, "w-base", "lab snapshot ready", |v| {
        phase(v) == "Succeeded"
    })
    .await;
    assert!(sim.disks.path().join("disks/lab/w-rootdisk").exists());
    assert!(sim.disks.path().join("snapshots/lab").exists());
    namespaces
        .delete("lab", &DeleteParams::default())
        .await
        .expect("delete namespace");
    gone(sim.disks.path().join("disks/lab"), "namespace disks removed").await;
    gone(
        sim.disks.path().join("snapshots/lab"),
        "namespace snapshots removed",
    )
    .await;
    // The golden image keeps its disk.
    assert!(
        sim.disks
            .path()
            .join("disks/vm-templates/golden/etc/golden-image")
            .exists()
    );
}

/// The message of a refused create.
async fn refused(api: &Api<DynamicObject>, obj: Value) -> String {
    let obj: DynamicObject = serde_json::from_value(obj).expect("object");
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{}", s.message);
            s.message
        }
        other => panic!("expected a 422, got {other:?}"),
    }
}

#[tokio::test]
async fn objects_that_kubevirt_schemas_and_webhooks_refuse_are_refused() {
    let sim = start_sim(BTreeMap::new()).await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = vm("bad", "Halted", &[]);
        f(&mut v);
        v
    };
    // KubeVirt's CRD schema: quantities match the quantity pattern, a VMI spec has a domain.
    let m = refused(
        &sim.vms(),
        with(&|v| {
            v["spec"]["template"]["spec"]["domain"]["resources"] = json!({"requests": {"memory": "lots"}})
        }),
    )
    .await;
    assert!(
        m.contains("spec.template.spec.domain.resources.requests[memory]: Invalid value: \"lots\""),
        "{m}"
    );
    let m = refused(
        &sim.vms(),
        with(&|v| v["spec"]["template"]["spec"]["domain"]["memory"] = json!({"guest": "2 GB"})),
    )
    .await;
    assert!(m.contains("spec.template.spec.domain.memory.guest"), "{m}");
    let m = refused(
        &sim.vms(),
        with(&|v| {
            v["spec"]["template"]["spec"]
                .as_object_mut()
                .unwrap()
                .remove("domain");
        }),
    )
    .await;
    assert!(m.contains("spec.template.spec.domain: Required value"), "{m}");
    // virt-api's VM admitter.
    let m = refused(
        &sim.vms(),
        with(&|v| {
            v["spec"]["template"]["spec"]["domain"]["resources"] = json!({"requests": {"memory": "-5Gi"}})
        }),
    )
    .await;
    assert_eq!(
        m,
        "admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: \
         spec.template.spec.domain.resources.requests.memory '-5Gi': must be greater than or equal to 0."
    );
    let m = refused(
        &sim.vms(),
        with(&|v| v["spec"]["runStrategy"] = json!("Sometimes")),
    )
    .await;
    assert!(
        m.ends_with("denied the request: Invalid RunStrategy (Sometimes)"),
        "{m}"
    );
    let m = refused(
        &sim.vms(),
        with(&|v| v["spec"]["template"]["spec"]["volumes"] = json!([])),
    )
    .await;
    assert!(
        m.contains("must be referenced in the VMI template's 'volumes' list"),
        "{m}"
    );
    // An update is admitted too.
    sim.create(&sim.vms(), vm("good", "Halted", &[])).await;
    let err = sim
        .vms()
        .patch(
            "good",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"runStrategy": "Never"}})),
        )
        .await
        .expect_err("invalid run strategy");
    assert!(err.to_string().contains("Invalid RunStrategy (Never)"), "{err}");

    // DataVolumes: storage quantities and a storage definition.
    let dv = |spec: Value| {
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "d"}, "spec": spec})
    };
    let m = refused(
        &sim.dvs(),
        dv(json!({"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "big"}}}})),
    )
    .await;
    assert!(m.contains("spec.storage.resources.requests[storage]"), "{m}");
    let m = refused(&sim.dvs(), dv(json!({"source": {"blank": {}}}))).await;
    assert!(m.ends_with("Missing Data volume PVC or Storage"), "{m}");

    // Snapshots name a kubevirt.io VirtualMachine and their spec is immutable.
    let mut snap = snapshot("s", "good", &[]);
    snap["spec"]["source"]["kind"] = json!("Pod");
    let m = refused(&sim.snapshots(), snap).await;
    assert!(m.ends_with("denied the request: invalid kind"), "{m}");
    sim.create(&sim.snapshots(), snapshot("s", "good", &[])).await;
    let err = sim
        .snapshots()
        .patch(
            "s",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"source": {"name": "other"}}})),
        )
        .await
        .expect_err("immutable");
    assert!(
        err.to_string().contains("spec in immutable after creation"),
        "{err}"
    );
    let mut r = restore("r", "good", "s", "", &[]);
    r["spec"]["target"].as_object_mut().unwrap().remove("apiGroup");
    let m = refused(&sim.restores(), r).await;
    assert!(m.ends_with("denied the request: missing apiGroup"), "{m}");
}
