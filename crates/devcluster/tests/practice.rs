//! The practice cluster a simulated control plane serves: cloud-init rendered by cks-kubevirt
//! (CA, kubeadm Init/JoinConfiguration, SSH key) boots a nested API server on the VM's IP:6443
//! with a certificate of the cluster CA; workers join only with a matching token and CA hash;
//! Pods run; snapshot and restore bring back the disk and the API state.

mod common;

use cks_devcluster::kubevirt::SimOptions;
use cks_devcluster::{DevCluster, Options};
use cks_kubevirt::cloud_init::{self, ControlPlaneInput, WorkerInput};
use cks_kubevirt::kubeadm::{self, InitParams, JoinParams, KubernetesVersion};
use cks_kubevirt::pki::{BootstrapToken, ClusterPki};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use common::eventually;

fn api(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn vm(name: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
        "spec": {"runStrategy": "Always",
            "dataVolumeTemplates": [{"metadata": {"name": format!("{name}-rootdisk")},
                "spec": {"source": {"pvc": {"namespace": "vm-templates", "name": "golden"}},
                    "storage": {"resources": {"requests": {"storage": "10Gi"}}}}}],
            "template": {"spec": {"domain": {"devices": {}}, "volumes": [
                {"name": "rootdisk", "dataVolume": {"name": format!("{name}-rootdisk")}},
                {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": format!("{name}-cloudinit")}}}]}}}
    })
}

struct Lab {
    _cluster: DevCluster,
    client: kube::Client,
    pki: ClusterPki,
    disks: tempfile::TempDir,
}

impl Lab {
    async fn create(&self, group: &str, version: &str, kind: &str, plural: &str, obj: Value) {
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        api(&self.client, group, version, kind, plural)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
    }

    async fn ip(&self, vm: &str, not: Option<&str>) -> String {
        let vmis = api(
            &self.client,
            "kubevirt.io",
            "v1",
            "VirtualMachineInstance",
            "virtualmachineinstances",
        );
        eventually("vmi running", || async {
            let v = serde_json::to_value(vmis.get_opt(vm).await.ok()??).ok()?;
            let ip = v["status"]["interfaces"][0]["ipAddress"].as_str()?.to_string();
            (v["status"]["phase"] == "Running" && Some(ip.as_str()) != not).then_some(ip)
        })
        .await
    }

    /// The practice cluster's admin client, as the operator builds it from the PKI Secret.
    async fn practice(&self, ip: &str) -> kube::Client {
        let yaml = self
            .pki
            .admin_kubeconfig("lab", &format!("https://{ip}:6443"))
            .unwrap();
        let kc: kube::config::Kubeconfig = serde_saphyr::from_str(&yaml).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let probe = client.clone();
        eventually("practice API /readyz", || async {
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            probe.request_text(req).await.ok().filter(|t| t == "ok")
        })
        .await;
        client
    }
}

async fn lab() -> Lab {
    let disks = tempfile::tempdir().unwrap();
    let opts = Options {
        kubevirt: Some(SimOptions {
            disk_dir: Some(disks.path().to_path_buf()),
            golden_images: vec!["vm-templates/golden".into()],
            ..SimOptions::default()
        }),
        ..Options::default()
    };
    let cluster = common::start_with(opts).await;
    let client = cluster.client().await.unwrap();
    let lab = Lab {
        _cluster: cluster,
        client,
        pki: ClusterPki::generate().unwrap(),
        disks,
    };
    let version = KubernetesVersion::parse("1.33.1").unwrap();
    let token = lab.pki.token().expose();
    let init = kubeadm::init_configuration(&InitParams {
        version: &version,
        node_name: "control-plane",
        token: &token,
        control_plane_endpoint: "10.96.0.10:6443",
        cert_sans: &["lab-cp.default.svc.cluster.local".to_string()],
        pod_subnet: "10.244.0.0/16",
        service_subnet: "10.97.0.0/16",
        ignore_preflight_errors: &[],
    })
    .unwrap();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVzdGtleWZvcnRlc3RzMDEyMzQ1Njc4OWFiY2RlZmdo test";
    let cp = cloud_init::control_plane(&ControlPlaneInput {
        hostname: "control-plane",
        ssh_user: "cks",
        ssh_public_key: key,
        ca_cert_pem: lab.pki.ca_cert_pem(),
        ca_key_pem: lab.pki.ca_key_pem(),
        kubeadm_config: &init,
    })
    .unwrap();
    let wrong = BootstrapToken::generate().unwrap().expose();
    let mut user_data = vec![("lab-cp", cloud_init::render(&cp, None).unwrap())];
    for (name, token) in [("worker-1", token.as_str()), ("worker-2", wrong.as_str())] {
        let join = kubeadm::join_configuration(&JoinParams {
            version: &version,
            node_name: name,
            token,
            ca_cert_hash: lab.pki.ca_cert_hash(),
            control_plane_endpoint: "10.96.0.10:6443",
        })
        .unwrap();
        let w = cloud_init::worker(&WorkerInput {
            hostname: name,
            ssh_user: "cks",
            ssh_public_key: key,
            kubeadm_config: &join,
        })
        .unwrap();
        user_data.push((
            if name == "worker-1" { "lab-w1" } else { "lab-w2" },
            cloud_init::render(&w, None).unwrap(),
        ));
    }
    for (vm_name, data) in user_data {
        lab.create(
            "",
            "v1",
            "Secret",
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{vm_name}-cloudinit")}, "stringData": {"userdata": data}}),
        )
        .await;
        lab.create(
            "kubevirt.io",
            "v1",
            "VirtualMachine",
            "virtualmachines",
            vm(vm_name),
        )
        .await;
    }
    lab
}

fn ready_nodes(nodes: &[Node]) -> Vec<String> {
    let mut names: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn control_plane_serves_the_practice_api_and_only_workers_with_the_right_token_join() {
    let lab = lab().await;
    let ip = lab.ip("lab-cp", None).await;
    lab.ip("lab-w1", None).await;
    lab.ip("lab-w2", None).await;
    let practice = lab.practice(&ip).await;
    let nodes: Api<Node> = Api::all(practice.clone());
    let names = eventually("control plane and worker-1 Ready", || async {
        let n = ready_nodes(&nodes.list(&Default::default()).await.ok()?.items);
        (n.len() >= 2).then_some(n)
    })
    .await;
    assert_eq!(names, ["control-plane", "worker-1"], "worker-2 has a wrong token");

    // Reached by IP, the certificate also holds kubeadm's certSANs (the operator checks the
    // Service's DNS name while dialling the VMI's IP).
    let yaml = lab
        .pki
        .admin_kubeconfig("lab", &format!("https://{ip}:6443"))
        .unwrap();
    let mut kc: kube::config::Kubeconfig = serde_saphyr::from_str(&yaml).unwrap();
    if let Some(c) = kc.clusters[0].cluster.as_mut() {
        c.tls_server_name = Some("lab-cp.default.svc.cluster.local".into());
    }
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let by_name = kube::Client::try_from(config).unwrap();
    by_name
        .apiserver_version()
        .await
        .expect("certificate valid for the certSAN");

    let pods: Api<Pod> = Api::namespaced(practice.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("pod running", || async {
        let p = pods.get("web").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn restore_from_snapshot_undoes_student_changes_to_files_and_api_objects() {
    let lab = lab().await;
    let ip = lab.ip("lab-cp", None).await;
    let practice = lab.practice(&ip).await;
    let nodes: Api<Node> = Api::all(practice.clone());
    eventually("control plane Ready", || async {
        (!ready_nodes(&nodes.list(&Default::default()).await.ok()?.items).is_empty()).then_some(())
    })
    .await;
    // Baseline snapshot, taken offline as the operator does after bootstrap.
    let put = |action: &str| {
        http::Request::put(format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/lab-cp/{action}"
        ))
        .body(Vec::new())
        .unwrap()
    };
    let vmis = api(
        &lab.client,
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    );
    lab.client.request_text(put("stop")).await.unwrap();
    eventually("stopped", || async {
        vmis.get_opt("lab-cp").await.ok()?.is_none().then_some(())
    })
    .await;
    lab.create(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineSnapshot",
        "virtualmachinesnapshots",
        json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "lab-cp-baseline"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "lab-cp"}}}),
    )
    .await;
    let snaps = api(
        &lab.client,
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineSnapshot",
        "virtualmachinesnapshots",
    );
    eventually("snapshot ready", || async {
        let s = serde_json::to_value(snaps.get("lab-cp-baseline").await.ok()?).ok()?;
        (s["status"]["readyToUse"] == true).then_some(())
    })
    .await;
    lab.client.request_text(put("start")).await.unwrap();
    let ip = lab.ip("lab-cp", None).await;
    let practice = lab.practice(&ip).await;

    // The student's changes: an API object and a static pod manifest on the disk.
    let cms: Api<ConfigMap> = Api::namespaced(practice.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "student"}, "data": {"k": "v"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let manifests = lab
        .disks
        .path()
        .join("disks/default/lab-cp-rootdisk/etc/kubernetes/manifests");
    std::fs::write(manifests.join("evil.yaml"), "kind: Pod\n").unwrap();
    lab.client.request_text(put("stop")).await.unwrap();
    eventually("stopped", || async {
        vmis.get_opt("lab-cp").await.ok()?.is_none().then_some(())
    })
    .await;

    lab.create(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineRestore",
        "virtualmachinerestores",
        json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
            "metadata": {"name": "lab-cp-reset-1"},
            "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "lab-cp"},
                "virtualMachineSnapshotName": "lab-cp-baseline"}}),
    )
    .await;
    let restores = api(
        &lab.client,
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineRestore",
        "virtualmachinerestores",
    );
    let uid = eventually("restore complete", || async {
        let r = serde_json::to_value(restores.get("lab-cp-reset-1").await.ok()?).ok()?;
        (r["status"]["complete"] == true)
            .then(|| r["metadata"]["uid"].as_str().unwrap_or_default().to_string())
    })
    .await;
    let restored = lab
        .disks
        .path()
        .join(format!("disks/default/restore-{uid}-rootdisk"));
    assert!(
        restored.join("etc/kubernetes/pki/ca.crt").exists(),
        "the restored disk has the baseline"
    );
    assert!(
        !restored.join("etc/kubernetes/manifests/evil.yaml").exists(),
        "the file change is gone"
    );
    lab.client.request_text(put("start")).await.unwrap();
    let ip = lab.ip("lab-cp", Some(&ip)).await;
    let practice = lab.practice(&ip).await;
    let cms: Api<ConfigMap> = Api::namespaced(practice.clone(), "default");
    assert!(
        cms.get_opt("student").await.unwrap().is_none(),
        "the API change is gone"
    );
    let nodes: Api<Node> = Api::all(practice);
    eventually("control plane Ready after restore", || async {
        (!ready_nodes(&nodes.list(&Default::default()).await.ok()?.items).is_empty()).then_some(())
    })
    .await;
}

fn kubectl_binary() -> std::path::PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL").filter(|k| !k.is_empty()) {
        return k.into();
    }
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/kubectl/usr/bin/kubectl");
    if tools.is_file() {
        return tools;
    }
    "kubectl".into()
}

#[tokio::test]
async fn kubectl_with_the_admin_kubeconfig_sees_the_practice_cluster_and_the_vms() {
    let lab = lab().await;
    let ip = lab.ip("lab-cp", None).await;
    let practice = lab.practice(&ip).await;
    let nodes: Api<Node> = Api::all(practice);
    eventually("control plane Ready", || async {
        (!ready_nodes(&nodes.list(&Default::default()).await.ok()?.items).is_empty()).then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.conf");
    std::fs::write(
        &admin,
        lab.pki
            .admin_kubeconfig("lab", &format!("https://{ip}:6443"))
            .unwrap(),
    )
    .unwrap();
    let run = |kubeconfig: std::path::PathBuf, args: &'static [&'static str]| async move {
        let out = tokio::process::Command::new(kubectl_binary())
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .output()
            .await
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = run(admin.clone(), &["get", "nodes"]).await;
    assert!(out.lines().any(|l| l.starts_with("control-plane")), "{out}");
    let ready = run(
        admin,
        &[
            "get",
            "node",
            "control-plane",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    )
    .await;
    assert_eq!(ready, "True");
    // The host cluster's VMs, as `kubectl get vm,vmi` shows them.
    let host = dir.path().join("host.conf");
    std::fs::write(&host, lab._cluster.kubeconfig_yaml()).unwrap();
    let out = run(host, &["get", "vm,vmi"]).await;
    assert!(
        out.lines().any(|l| l.contains("lab-cp") && l.contains("Running")),
        "{out}"
    );
    assert!(out.contains(&ip), "{out}");
}

#[tokio::test]
async fn the_guest_kubelet_mirrors_static_pods_serves_its_read_only_port_and_deployments_get_pods() {
    let lab = lab().await;
    let ip = lab.ip("lab-cp", None).await;
    let w1 = lab.ip("lab-w1", None).await;
    let practice = lab.practice(&ip).await;
    let system: Api<Pod> = Api::namespaced(practice.clone(), "kube-system");
    let command = |p: &Pod| -> String {
        p.spec.as_ref().unwrap().containers[0]
            .command
            .clone()
            .unwrap_or_default()
            .join(" ")
    };
    // kubeadm's static pods, mirrored and Running.
    let apiserver = eventually("the kube-apiserver mirror pod Running", || async {
        let p = system.get_opt("kube-apiserver-control-plane").await.ok()??;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    assert!(command(&apiserver).contains("--authorization-mode=Node,RBAC"));
    for name in ["etcd", "kube-controller-manager", "kube-scheduler"] {
        eventually(&format!("{name} mirror pod"), || async {
            system.get_opt(&format!("{name}-control-plane")).await.ok()?
        })
        .await;
    }
    // Editing a manifest changes its Pod; removing one removes it.
    let disk = lab.disks.path().join("disks/default");
    let manifests = disk.join("lab-cp-rootdisk/etc/kubernetes/manifests");
    let text = std::fs::read_to_string(manifests.join("kube-apiserver.yaml")).unwrap();
    std::fs::write(
        manifests.join("kube-apiserver.yaml"),
        text.replace(
            "--authorization-mode=Node,RBAC",
            "--authorization-mode=AlwaysAllow",
        ),
    )
    .unwrap();
    std::fs::remove_file(manifests.join("etcd.yaml")).unwrap();
    eventually("the edited manifest in the Pod", || async {
        let p = system.get_opt("kube-apiserver-control-plane").await.ok()??;
        command(&p)
            .contains("--authorization-mode=AlwaysAllow")
            .then_some(())
    })
    .await;
    eventually("the etcd mirror pod gone", || async {
        system
            .get_opt("etcd-control-plane")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // The worker's kubelet opens its read-only port once its configuration sets one.
    let config = disk.join("lab-w1-rootdisk/var/lib/kubelet/config.yaml");
    let mut cfg = std::fs::read_to_string(&config).expect("kubeadm join's kubelet config");
    assert!(
        tokio::net::TcpStream::connect((w1.as_str(), 10255))
            .await
            .is_err()
    );
    cfg.push_str("readOnlyPort: 10255\n");
    std::fs::write(&config, cfg).unwrap();
    let body = eventually("the read-only port", || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect((w1.as_str(), 10255)).await.ok()?;
        s.write_all(b"GET /pods HTTP/1.1\r\nHost: x\r\n\r\n").await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    })
    .await;
    assert!(body.contains("\"kind\":\"PodList\""), "{body}");

    // A Deployment gets its Pods and reports them available.
    let deployments = api(&practice, "apps", "v1", "Deployment", "deployments");
    let d: DynamicObject = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}))
    .unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(practice, "default");
    eventually("two Running pods of web", || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == 2).then_some(())
    })
    .await;
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.data["status"]["availableReplicas"], 2);
    assert_eq!(web.data["status"]["observedGeneration"], 1);
}
