//! Validation latency per rule type, on the development control plane with the KubeVirt
//! simulator: one simulated control-plane VM serving SSH and a nested practice-cluster API.
//!
//! For each rule type (resource rules through the practice API; command, script and file
//! rules over SSH, directly to the VMI's IP and through the VMI `portforward` WebSocket, on
//! the control plane's shared client and on the transport's own `TCP_NODELAY` client) it
//! prints p50/p99/max of one-rule runs, with the connection of an earlier run reused (as for
//! every rule but the first within a run) and with a fresh connection each time (the first
//! rule of a run: TCP, TLS or SSH handshake, and API discovery for resource rules). The floor
//! is one ValidationRun status patch against the same control plane, the write every run
//! ends with. No thresholds: the figures are for reading.
//!
//! `cargo bench -p cks-validation --bench rules`; `CKS_BENCH_ITERATIONS` (default 200) sets
//! the evaluations per row.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cks_api::ValidationRun;
use cks_devcluster::kubevirt::SimOptions;
use cks_devcluster::{DevCluster, Options};
use cks_kubevirt::cloud_init::{self, ControlPlaneInput, WriteFile};
use cks_kubevirt::kubeadm::{self, InitParams, KubernetesVersion};
use cks_kubevirt::naming::VmId;
use cks_kubevirt::pki::ClusterPki;
use cks_scenarios::Scenario;
use cks_validation::{
    ClusterApi, Endpoint, Engine, KubeCluster, PortForward, SshConfig, SshExecutor, TargetResolver,
    TaskSelector, VmExec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use serde_json::json;

const NS: &str = "bench";
const VM: &str = "lab-cp";
const USER: &str = "cks";
const SSH_PORT: u16 = 2222;

/// Polls `check` until it returns `Some`; panics after a generous bound so a broken setup
/// fails the bench instead of hanging it.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dynamic_api(client: &kube::Client, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// The development control plane with one simulated control-plane VM of a practice cluster.
struct Lab {
    _server: DevCluster,
    _disks: tempfile::TempDir,
    host: kube::Client,
    host_config: kube::Config,
    practice: kube::Config,
    key: PrivateKey,
    ip: String,
}

impl Lab {
    async fn start() -> Lab {
        let disks = tempfile::tempdir().expect("temp dir");
        let server = DevCluster::start(Options {
            kubevirt: Some(SimOptions {
                disk_dir: Some(disks.path().to_path_buf()),
                golden_images: vec!["vm-templates/golden".into()],
                ssh_port: SSH_PORT,
                ..SimOptions::default()
            }),
            ..Options::default()
        })
        .await
        .expect("devcluster starts");
        let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
        let mut manifests = cks_devcluster::apply::read_manifests(&crds).expect("CRD manifests");
        cks_devcluster::apply::order(&mut manifests);
        server.apply(&manifests).expect("CRDs apply");
        let host = server.client().await.expect("client");
        let host_config =
            kube::Config::from_custom_kubeconfig(server.kubeconfig().clone(), &KubeConfigOptions::default())
                .await
                .expect("client config");
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
        Api::<Namespace>::all(host.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");

        let pki = ClusterPki::generate().expect("cluster PKI");
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&[23; 32]));
        let public = key.public_key().to_openssh().expect("public key");
        let version = KubernetesVersion::parse("1.33.1").expect("version");
        let init = kubeadm::init_configuration(&InitParams {
            version: &version,
            node_name: "control-plane",
            token: &pki.token().expose(),
            control_plane_endpoint: "10.96.0.10:6443",
            cert_sans: &[],
            pod_subnet: "10.244.0.0/16",
            service_subnet: "10.97.0.0/16",
            ignore_preflight_errors: &[],
        })
        .expect("kubeadm config");
        let mut cp = cloud_init::control_plane(&ControlPlaneInput {
            hostname: "control-plane",
            ssh_user: USER,
            ssh_public_key: &public,
            ca_cert_pem: pki.ca_cert_pem(),
            ca_key_pem: pki.ca_key_pem(),
            kubeadm_config: &init,
        })
        .expect("cloud-init");
        cp.write_files.push(WriteFile {
            path: "/etc/kubernetes/audit-policy.yaml".into(),
            content: "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n".into(),
            permissions: "0644".into(),
            owner: "root:root".into(),
        });
        let user_data = cloud_init::render(&cp, None).expect("render cloud-init");
        let secret: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{VM}-cloudinit")}, "stringData": {"userdata": user_data}}))
        .expect("secret");
        dynamic_api(&host, "", "Secret", "secrets")
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
        let vm: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": VM},
            "spec": {"runStrategy": "Always",
                "dataVolumeTemplates": [{"metadata": {"name": format!("{VM}-rootdisk")},
                    "spec": {"source": {"pvc": {"namespace": "vm-templates", "name": "golden"}},
                        "storage": {"resources": {"requests": {"storage": "10Gi"}}}}}],
                "template": {"spec": {"hostname": "control-plane", "domain": {"devices": {}}, "volumes": [
                    {"name": "rootdisk", "dataVolume": {"name": format!("{VM}-rootdisk")}},
                    {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": format!("{VM}-cloudinit")}}}]}}}
        }))
        .expect("vm");
        dynamic_api(&host, "kubevirt.io", "VirtualMachine", "virtualmachines")
            .create(&PostParams::default(), &vm)
            .await
            .expect("create vm");
        let vmis = dynamic_api(
            &host,
            "kubevirt.io",
            "VirtualMachineInstance",
            "virtualmachineinstances",
        );
        let ip = wait_for("the VMI running with an IP", || async {
            let v = serde_json::to_value(vmis.get_opt(VM).await.ok()??).ok()?;
            let ip = v["status"]["interfaces"][0]["ipAddress"].as_str()?.to_owned();
            (v["status"]["phase"] == "Running").then_some(ip)
        })
        .await;

        let yaml = pki
            .admin_kubeconfig("lab", &format!("https://{ip}:6443"))
            .expect("admin kubeconfig");
        let kubeconfig = Kubeconfig::from_yaml(&yaml).expect("kubeconfig parses");
        let practice = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("practice config");
        let client = kube::Client::try_from(practice.clone()).expect("practice client");
        wait_for("the practice API ready", || async {
            let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
            client.request_text(req).await.ok().filter(|t| t == "ok")
        })
        .await;
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "audit"}, "data": {"mode": "strict"}}))
                .expect("configmap");
        Api::<ConfigMap>::namespaced(client, "default")
            .create(&PostParams::default(), &cm)
            .await
            .expect("create configmap in the practice cluster");
        wait_for("the VM's SSH server listening", || async {
            let connect = tokio::net::TcpStream::connect((ip.as_str(), SSH_PORT));
            tokio::time::timeout(Duration::from_secs(2), connect)
                .await
                .ok()?
                .ok()
        })
        .await;
        Lab {
            _server: server,
            _disks: disks,
            host,
            host_config,
            practice,
            key,
            ip,
        }
    }

    fn targets(&self) -> TargetResolver {
        TargetResolver::new().with(VmId::ControlPlane, Endpoint::new(VM, &self.ip, SSH_PORT))
    }

    fn ssh(&self, transport: Transport) -> SshConfig {
        let config = SshConfig::new(USER, self.key.clone());
        match transport {
            Transport::Direct => config,
            Transport::PortForward => {
                config.with_transport(Arc::new(PortForward::new(self.host.clone(), NS)))
            }
            Transport::PortForwardOwnClient => config.with_transport(Arc::new(
                PortForward::from_config(&self.host_config, NS).expect("port-forward client"),
            )),
            Transport::PracticeApi => unreachable!("resource rules use no SSH"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    PracticeApi,
    Direct,
    PortForward,
    PortForwardOwnClient,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::PracticeApi => "practice API",
            Transport::Direct => "SSH direct",
            Transport::PortForward => "SSH port-forward",
            Transport::PortForwardOwnClient => "SSH pf own client",
        }
    }
}

/// One rule of each type, each of which passes on the lab.
const RULES: &[(&str, Transport, &str)] = &[
    (
        "resource_exists",
        Transport::PracticeApi,
        "- id: r\n  type: resource_exists\n  resource: {kind: ConfigMap, name: audit, namespace: default}\n",
    ),
    (
        "resource_property",
        Transport::PracticeApi,
        "- id: r\n  type: resource_property\n  resource: {kind: ConfigMap, name: audit, namespace: default}\n  property: .data.mode\n  condition: equals\n  value: strict\n",
    ),
    (
        "command",
        Transport::Direct,
        "- id: r\n  type: command\n  command: \"hostname\"\n  condition: output_equals\n  value: control-plane\n",
    ),
    (
        "script",
        Transport::Direct,
        "- id: r\n  type: script\n  script: \"test -d /etc/kubernetes && echo ok\"\n  condition: output_equals\n  value: ok\n",
    ),
    (
        "file_exists",
        Transport::Direct,
        "- id: r\n  type: file_exists\n  path: /etc/kubernetes/audit-policy.yaml\n",
    ),
    (
        "file_content",
        Transport::Direct,
        "- id: r\n  type: file_content\n  path: /etc/kubernetes/audit-policy.yaml\n  condition: contains\n  value: \"level: Metadata\"\n",
    ),
];

/// A scenario with one task holding `rules` (YAML list items).
fn scenario(rules: &str) -> Scenario {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("bench");
    let write = |path: &str, content: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
        std::fs::write(path, content).expect("write");
    };
    write(
        "metadata.yaml",
        "id: bench\ntitle: Bench\ndescription: One rule\ncategory: cluster-hardening\n",
    );
    write("tasks/01-task.md", "# Task 1\n## Description\nBench.\n");
    write("validation/01-validation.yaml", &format!("validation:\n{rules}"));
    let catalog = cks_scenarios::Catalog::load_scenario_dir(&dir, &cks_scenarios::LoadOptions::default())
        .expect("catalog loads");
    let errors: Vec<String> = catalog.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "bench scenario does not load: {errors:?}");
    Scenario::clone(catalog.get("bench").expect("scenario"))
}

/// Runs `engine` on `s` once and returns how long it took; panics unless the rule passed.
async fn timed(engine: &Engine, s: &Scenario) -> Duration {
    let started = Instant::now();
    let report = engine.validate(s, TaskSelector::All).await.expect("run");
    let took = started.elapsed();
    assert!(report.passed(), "{:#?}", report.results);
    took
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| {
        let rank = (q * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        max: *samples.last().expect("samples"),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn row(rule: &str, transport: &str, connection: &str, s: &Stats) {
    println!(
        "{rule:<18} {transport:<17} {connection:<7} {:>9} {:>9} {:>9}",
        ms(s.p50),
        ms(s.p99),
        ms(s.max)
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and then nothing runs.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let iterations: usize = std::env::var("CKS_BENCH_ITERATIONS")
        .ok()
        .map(|v| v.parse().expect("CKS_BENCH_ITERATIONS is a number"))
        .unwrap_or(200);
    let lab = Lab::start().await;
    println!("validation latency per rule type: {iterations} one-rule runs per row, in milliseconds");
    println!("(development control plane with the KubeVirt simulator, one simulated control-plane VM)");
    println!(
        "{:<18} {:<17} {:<7} {:>9} {:>9} {:>9}",
        "rule type", "via", "conn", "p50", "p99", "max"
    );

    for &(rule_type, via, rules) in RULES {
        let s = scenario(rules);
        let transports: &[Transport] = if via == Transport::PracticeApi {
            &[Transport::PracticeApi]
        } else {
            &[
                Transport::Direct,
                Transport::PortForward,
                Transport::PortForwardOwnClient,
            ]
        };
        for &transport in transports {
            // Reused: executors shared by every run, opened by a warm-up run.
            let reused = if transport == Transport::PracticeApi {
                let client = kube::Client::try_from(lab.practice.clone()).expect("practice client");
                let cluster: Arc<dyn ClusterApi> = Arc::new(KubeCluster::new(client, "default"));
                Engine::with_backends(Some(cluster), None)
            } else {
                let vms: Arc<dyn VmExec> = Arc::new(SshExecutor::new(lab.targets(), lab.ssh(transport)));
                Engine::with_backends(None, Some(vms))
            };
            timed(&reused, &s).await;
            let mut samples = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                samples.push(timed(&reused, &s).await);
            }
            row(rule_type, transport.label(), "reused", &stats(samples));

            // Fresh: what the first rule of a ValidationRun pays. For resource rules that is a
            // new client (TCP + TLS) and API discovery, as the operator builds per run.
            let mut samples = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let took = if transport == Transport::PracticeApi {
                    let started = Instant::now();
                    let client = kube::Client::try_from(lab.practice.clone()).expect("practice client");
                    let engine =
                        Engine::new(lab.targets(), Some(client), SshConfig::new(USER, lab.key.clone()));
                    let report = engine.validate(&s, TaskSelector::All).await.expect("run");
                    let took = started.elapsed();
                    assert!(report.passed(), "{:#?}", report.results);
                    took
                } else {
                    timed(&Engine::new(lab.targets(), None, lab.ssh(transport)), &s).await
                };
                samples.push(took);
            }
            row(rule_type, transport.label(), "fresh", &stats(samples));
        }
    }

    // Floor: one status write on the host control plane, as every ValidationRun ends with.
    let runs: Api<ValidationRun> = Api::namespaced(lab.host.clone(), NS);
    let run: ValidationRun = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ValidationRun",
        "metadata": {"name": "floor"}, "spec": {"session": "bench", "task": "01"},
    }))
    .expect("validation run");
    runs.create(&PostParams::default(), &run)
        .await
        .expect("create ValidationRun");
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let patch = json!({"status": {"phase": "Running", "message": format!("patch {i}")}});
        let started = Instant::now();
        runs.patch_status("floor", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch status");
        samples.push(started.elapsed());
    }
    row("floor: status patch", "host API", "reused", &stats(samples));
}
