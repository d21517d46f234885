//! SSH rules against a simulated KubeVirt VM of cks-devcluster, over both transports: `Direct`
//! (TCP to the VMI's IP) and `PortForward` (the VMI's `portforward` subresource WebSocket
//! through the API server). One scenario with every SSH rule type and condition must give the
//! same verdicts both ways; a missing VMI and a VM stopped mid-rule must end in clear errors.

mod common;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cks_devcluster::kubevirt::SimOptions;
use cks_devcluster::{DevCluster, Options};
use cks_kubevirt::naming::VmId;
use cks_validation::{Endpoint, Engine, EngineOptions, PortForward, SshConfig, TargetResolver, TaskSelector};
use common::{assert_error, outcome, scenario};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use serde_json::json;

const NS: &str = "default";
const VM: &str = "lab-cp";
const USER: &str = "cks";
const SSH_PORT: u16 = 2222;

/// Polls `check` until it returns `Some`, failing the test after a generous deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn dynamic_api(client: &kube::Client, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// A control plane with the KubeVirt simulator and one running VM whose cloud-init authorises
/// the test key for [`USER`] and writes an audit policy.
struct Lab {
    _server: DevCluster,
    client: kube::Client,
    config: kube::Config,
    disks: tempfile::TempDir,
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
        let client = server.client().await.expect("client");
        let config = kube::Config::from_custom_kubeconfig(server.kubeconfig().clone(), &Default::default())
            .await
            .expect("client config");
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&[11; 32]));
        let public = key.public_key().to_openssh().expect("public key");
        let user_data = format!(
            "#cloud-config\nhostname: control-plane\nusers:\n  - name: {USER}\n    ssh_authorized_keys:\n      - {public}\n\
             write_files:\n  - path: /etc/kubernetes/audit-policy.yaml\n    permissions: '0644'\n    content: |\n      \
             apiVersion: audit.k8s.io/v1\n      kind: Policy\n      rules:\n      - level: Metadata\n"
        );
        let secret: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{VM}-cloudinit")}, "stringData": {"userdata": user_data}}))
        .expect("secret");
        dynamic_api(&client, "", "Secret", "secrets")
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
        dynamic_api(&client, "kubevirt.io", "VirtualMachine", "virtualmachines")
            .create(&PostParams::default(), &vm)
            .await
            .expect("create vm");
        let vmis = dynamic_api(
            &client,
            "kubevirt.io",
            "VirtualMachineInstance",
            "virtualmachineinstances",
        );
        let ip = eventually("the VMI running with an IP", || async {
            let v = serde_json::to_value(vmis.get_opt(VM).await.ok()??).ok()?;
            let ip = v["status"]["interfaces"][0]["ipAddress"].as_str()?.to_owned();
            (v["status"]["phase"] == "Running").then_some(ip)
        })
        .await;
        // The VMI turns Running a moment before its SSH server listens.
        eventually("the VM's SSH server listening", || async {
            let connect = tokio::net::TcpStream::connect((ip.as_str(), SSH_PORT));
            tokio::time::timeout(Duration::from_secs(2), connect)
                .await
                .ok()?
                .ok()
        })
        .await;
        Lab {
            _server: server,
            client,
            config,
            disks,
            key,
            ip,
        }
    }

    /// A path on the VM's root disk, as the host sees it.
    fn disk_path(&self, path: &str) -> PathBuf {
        self.disks
            .path()
            .join(format!("disks/{NS}/{VM}-rootdisk"))
            .join(path.trim_start_matches('/'))
    }

    fn direct(&self) -> Engine {
        let targets = TargetResolver::new().with(VmId::ControlPlane, Endpoint::new(VM, &self.ip, SSH_PORT));
        Engine::new(targets, None, SshConfig::new(USER, self.key.clone()))
    }

    /// An engine reaching VM `vmi` only through the API server: the host is unusable, so a
    /// rule passes only if the tunnel carried it.
    fn tunnelled_with(&self, vmi: &str, transport: PortForward) -> Engine {
        let targets = TargetResolver::new().with(
            VmId::ControlPlane,
            Endpoint::new(vmi, "unreachable.invalid", SSH_PORT),
        );
        let ssh = SshConfig::new(USER, self.key.clone()).with_transport(Arc::new(transport));
        Engine::new(targets, None, ssh)
    }

    /// Through the server's shared client.
    fn tunnelled(&self, vmi: &str) -> Engine {
        self.tunnelled_with(vmi, PortForward::new(self.client.clone(), NS))
    }

    /// Through a client of the transport's own (`TCP_NODELAY`).
    fn tunnelled_own_client(&self, vmi: &str) -> Engine {
        let transport = PortForward::from_config(&self.config, NS).expect("port-forward client");
        self.tunnelled_with(vmi, transport)
    }
}

/// Every SSH rule type with every condition that applies to it, each rule id ending in the
/// verdict it must get: `-pass` or `-fail`.
const RULES: &str = r#"
- id: cmd-exit-zero-pass
  type: command
  command: "test -d /etc"
- id: cmd-exit-nonzero-fail
  type: command
  command: "echo denied >&2; exit 3"
- id: cmd-equals-pass
  type: command
  command: "hostname"
  condition: equals
  value: control-plane
- id: cmd-equals-fail
  type: command
  command: "echo 1.32"
  condition: equals
  value: "1.33"
- id: cmd-contains-pass
  type: command
  command: "echo $HOME"
  condition: contains
  value: cks
- id: cmd-contains-fail
  type: command
  command: "echo --profiling=true"
  condition: contains
  value: "--profiling=false"
- id: cmd-exists-pass
  type: command
  command: "echo something"
  condition: exists
- id: cmd-exists-fail
  type: command
  command: "printf '  \n'"
  condition: exists
- id: cmd-not-exists-pass
  type: command
  command: "true"
  condition: not_exists
- id: cmd-not-exists-fail
  type: command
  command: "echo leftover"
  condition: not_exists
- id: cmd-greater-than-pass
  type: command
  command: "seq 1 20000 | wc -l"
  condition: greater_than
  value: 19999
- id: cmd-greater-than-fail
  type: command
  command: "echo abc"
  condition: greater_than
  value: 1
- id: cmd-less-than-pass
  type: command
  command: "echo 2.5"
  condition: less_than
  value: 3
- id: cmd-less-than-fail
  type: command
  command: "echo 7"
  condition: less_than
  value: 3
- id: cmd-regex-pass
  type: command
  command: "echo v1.33.2"
  condition: matches_regex
  value: '^v1\.33\.\d+$'
- id: cmd-regex-fail
  type: command
  command: "echo v1.32.0"
  condition: matches_regex
  value: '^v1\.33\.\d+$'
- id: cmd-output-equals-pass
  type: command
  command: "cd && pwd"
  condition: output_equals
  value: /home/cks
- id: cmd-output-equals-fail
  type: command
  command: "echo enabled"
  condition: output_equals
  value: disabled
- id: cmd-output-contains-pass
  type: command
  command: "seq 1 12000"
  condition: output_contains
  value: "11999\n12000"
- id: cmd-output-contains-fail
  type: command
  command: "head -c 200000 /dev/zero | tr '\\0' a; echo END"
  condition: output_contains
  value: END
- id: script-success-code-pass
  type: script
  script:
    script: |
      name='it'"'"'s'
      printf '%s %s\n' "$name" "$(echo sub)"
      exit 4
    successCode: 4
  condition: output_equals
  value: "it's sub"
- id: script-wrong-code-fail
  type: script
  script: "exit 1"
- id: script-contains-pass
  type: script
  script: |
    grep -c level: /etc/kubernetes/audit-policy.yaml
  condition: contains
  value: "1"
- id: file-exists-pass
  type: file_exists
  path: /etc/kubernetes/audit-policy.yaml
- id: file-exists-fail
  type: file_exists
  path: /etc/kubernetes/missing.yaml
- id: file-not-exists-pass
  type: file_exists
  path: /etc/kubernetes/missing.yaml
  condition: not_exists
- id: file-not-exists-fail
  type: file_exists
  path: /etc/kubernetes/audit-policy.yaml
  condition: not_exists
- id: content-equals-pass
  type: file_content
  path: /etc/hostname
  condition: equals
  value: control-plane
- id: content-contains-pass
  type: file_content
  path: /etc/kubernetes/audit-policy.yaml
  condition: contains
  value: "level: Metadata"
- id: content-contains-fail
  type: file_content
  path: /etc/kubernetes/audit-policy.yaml
  condition: contains
  value: "level: RequestResponse"
- id: content-regex-pass
  type: file_content
  path: /etc/kubernetes/audit-policy.yaml
  condition: matches_regex
  value: '(?m)^kind: Policy$'
- id: content-missing-fail
  type: file_content
  path: /etc/kubernetes/missing.yaml
  condition: contains
  value: x
- id: content-not-exists-pass
  type: file_content
  path: /etc/kubernetes/missing.yaml
  condition: not_exists
"#;

/// A large script on stdin and large output, so both directions span many WebSocket frames.
fn bulk_rule() -> String {
    let padding = "# padding line to make the script larger than one frame\n".repeat(3000);
    let script = format!("{padding}head -c 150000 /dev/zero | tr '\\0' b | wc -c\n");
    let indented: String = script.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "- id: script-bulk-pass\n  type: script\n  script:\n    script: |\n{indented}  condition: equals\n  value: 150000\n"
    )
}

#[tokio::test]
async fn every_ssh_rule_type_and_condition_gives_the_same_verdicts_over_both_transports() {
    let lab = Lab::start().await;
    let s = scenario(&[&format!("{RULES}{}", bulk_rule())]);
    let direct = lab.direct().validate(&s, TaskSelector::All).await.unwrap();
    let tunnelled = lab.tunnelled(VM).validate(&s, TaskSelector::All).await.unwrap();
    let own_client = lab
        .tunnelled_own_client(VM)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert_eq!(direct.results.len(), 34);
    for (report, via) in [
        (&tunnelled, "port-forward"),
        (&own_client, "port-forward, own client"),
    ] {
        for (d, t) in direct.results.iter().zip(&report.results) {
            let want = d.rule.ends_with("-pass");
            assert!(d.error.is_none() && d.passed == want, "direct: {d:#?}");
            assert!(t.error.is_none() && t.passed == want, "{via}: {t:#?}");
            assert_eq!(
                (&d.rule, &d.message, &d.expected, &d.actual),
                (&t.rule, &t.message, &t.expected, &t.actual),
                "direct and {via} disagree"
            );
        }
        assert_eq!(
            direct.host_keys, report.host_keys,
            "{via} reached another SSH server"
        );
    }
    // The message of a failed exit status quotes stderr, which came through the tunnel too.
    assert_eq!(
        outcome(&tunnelled, "cmd-exit-nonzero-fail").message,
        "rule `cmd-exit-nonzero-fail` failed: expected exit code 0 (stderr: denied)"
    );
    assert_eq!(direct.host_keys.len(), 1);
}

#[tokio::test]
async fn a_vmi_that_does_not_exist_is_a_connect_error_naming_it() {
    let lab = Lab::start().await;
    let s = scenario(&[
        "- id: a\n  type: command\n  command: \"true\"\n- id: b\n  type: file_exists\n  path: /etc/hostname\n",
    ]);
    let report = lab
        .tunnelled_own_client("lab-gone")
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    let a = assert_error(&report, "a", "ssh-connect");
    assert!(
        a.message.contains(
            "KubeVirt port-forward to VirtualMachineInstance default/lab-gone port 2222: \
             the API server answered 404 Not Found: "
        ) && a.message.ends_with("\"lab-gone\" not found"),
        "{}",
        a.message
    );
    assert_eq!(assert_error(&report, "b", "ssh-connect").message, a.message);
}

#[tokio::test]
async fn a_vm_stopped_mid_rule_ends_the_rule_with_an_error_on_both_transports() {
    let lab = Lab::start().await;
    let rule = |marker: &str| {
        // The rule's own timeout is far beyond the test: only the connection ending stops it.
        format!("- id: long\n  type: command\n  command: \"touch {marker}; sleep 300\"\n  timeout: 600\n")
    };
    let options = EngineOptions {
        run_deadline: Duration::from_secs(900),
        ..EngineOptions::default()
    };
    let (direct_s, tunnelled_s) = (
        scenario(&[&rule("/home/cks/direct")]),
        scenario(&[&rule("/home/cks/tunnel")]),
    );
    let direct = lab.direct().with_options(options.clone());
    let tunnelled = lab.tunnelled(VM).with_options(options);
    let runs = async {
        tokio::join!(
            direct.validate(&direct_s, TaskSelector::All),
            tunnelled.validate(&tunnelled_s, TaskSelector::All)
        )
    };
    let stop = async {
        let (a, b) = (
            lab.disk_path("/home/cks/direct"),
            lab.disk_path("/home/cks/tunnel"),
        );
        eventually("both commands running", || async {
            (a.exists() && b.exists()).then_some(())
        })
        .await;
        let request = http::Request::put(format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{NS}/virtualmachines/{VM}/stop"
        ))
        .body(Vec::new())
        .unwrap();
        lab.client.request_text(request).await.expect("stop the VM");
    };
    let ((direct, tunnelled), ()) = tokio::join!(runs, stop);
    for report in [direct.unwrap(), tunnelled.unwrap()] {
        let o = assert_error(&report, "long", "ssh");
        assert_eq!(
            o.message,
            "SSH session with control-plane: the connection closed before the command finished"
        );
    }
}
