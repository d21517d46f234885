//! kubectl against the development cluster: apply, get (server-side tables), describe, delete,
//! wait, explain, label and patch, including the repository's CRDs and samples.
//!
//! kubectl is found through `$KUBECTL`, then `<repo>/.tools/kubectl/usr/bin/kubectl`, then
//! `kubectl` on PATH. These tests fail (never skip) when none is found: CI must provide one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cks_devcluster::{DevCluster, Options};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn kubectl_binary() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL").filter(|k| !k.is_empty()) {
        return PathBuf::from(k);
    }
    let tools = repo_root().join(".tools/kubectl/usr/bin/kubectl");
    if tools.is_file() {
        return tools;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "kubectl not found: set KUBECTL, extract Debian's kubernetes-client into .tools/kubectl \
             (apt-get download kubernetes-client && dpkg -x kubernetes-client_*.deb .tools/kubectl), \
             or put kubectl on PATH"
        )
    })
}

/// A server with its kubeconfig in a temp dir; kubectl runs with HOME there too (its cache).
struct Env {
    cluster: DevCluster,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cluster = common::start_with(Options {
            kubeconfig: Some(dir.path().join("kubeconfig")),
            ..Default::default()
        })
        .await;
        Env { cluster, dir }
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubeconfig = self.dir.path().join("kubeconfig");
        let home = self.dir.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        // kubectl blocks; the server keeps serving on the runtime's other threads.
        tokio::task::spawn_blocking(move || run_kubectl(&kubeconfig, &home, &args, stdin.as_deref()))
            .await
            .unwrap()
    }

    /// Run and require success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None).await
    }

    async fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nstdout: {stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Run and require failure; returns stderr.
    async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

fn run_kubectl(kubeconfig: &Path, home: &Path, args: &[String], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(kubectl_binary())
        .args(args)
        .arg("--request-timeout=30s")
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: default
data:
  mode: one
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_describe_label_patch_delete_builtin() {
    let env = Env::start().await;
    assert!(
        env.ok_stdin(&["apply", "-f", "-"], Some(CONFIGMAP))
            .await
            .contains("configmap/settings created")
    );
    assert!(
        env.ok_stdin(&["apply", "-f", "-"], Some(CONFIGMAP))
            .await
            .contains("configmap/settings unchanged")
    );
    let changed = CONFIGMAP.replace("mode: one", "mode: two");
    assert!(
        env.ok_stdin(&["apply", "-f", "-"], Some(&changed))
            .await
            .contains("configmap/settings configured")
    );
    let obj: Value =
        serde_json::from_str(&env.ok(&["get", "configmap", "settings", "-o", "json"]).await).unwrap();
    assert_eq!(obj["data"]["mode"], "two");
    let table = env.ok(&["get", "cm"]).await;
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(table.contains("settings"), "{table}");
    env.ok(&["label", "configmap", "settings", "tier=backend"]).await;
    assert!(
        env.ok(&["get", "cm", "-l", "tier=backend", "-o", "name"])
            .await
            .contains("configmap/settings")
    );
    env.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"extra":"x"}}"#,
    ])
    .await;
    env.ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"strategic":"y"}}"#,
    ])
    .await;
    env.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/extra"}]"#,
    ])
    .await;
    let obj: Value =
        serde_json::from_str(&env.ok(&["get", "configmap", "settings", "-o", "json"]).await).unwrap();
    assert_eq!(obj["data"], json!({"mode": "two", "strategic": "y"}));
    let described = env.ok(&["describe", "configmap", "settings"]).await;
    assert!(
        described.contains("Name:") && described.contains("tier=backend"),
        "{described}"
    );
    assert!(
        env.ok(&["delete", "configmap", "settings"])
            .await
            .contains("deleted")
    );
    let err = env.fails(&["get", "configmap", "settings"], None).await;
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cks-lab\n";

async fn with_repo_crds(env: &Env) {
    let crds = repo_root().join("crds");
    let out = env.ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/sessions.cks.io created"),
        "{out}"
    );
    env.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        "crd/sessions.cks.io",
        "crd/clusterpools.cks.io",
    ])
    .await;
    env.ok_stdin(&["apply", "-f", "-"], Some(NAMESPACE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_repository_crds_and_samples() {
    let env = Env::start().await;
    with_repo_crds(&env).await;
    let samples = repo_root().join("config/samples");
    let out = env.ok(&["apply", "-f", samples.to_str().unwrap()]).await;
    assert!(out.contains("clusterpool.cks.io/cks-standard created"), "{out}");
    // Re-applying is a no-op; editing the spec is a change.
    let again = env.ok(&["apply", "-f", samples.to_str().unwrap()]).await;
    assert!(
        again.contains("clusterpool.cks.io/cks-standard unchanged"),
        "{again}"
    );
    let pools = env.ok(&["get", "clusterpools", "-n", "cks-lab"]).await;
    let header = pools.lines().next().unwrap();
    assert!(
        header.contains("MIN") && header.contains("MAX") && header.contains("AGE"),
        "{pools}"
    );
    assert!(pools.contains("cks-standard"), "{pools}");
    // Category and short names resolve through discovery.
    assert!(
        env.ok(&["get", "cks", "-n", "cks-lab", "-o", "name"])
            .await
            .contains("session.cks.io/alice-pod-security")
    );
    env.ok(&["get", "cpool", "-n", "cks-lab"]).await;
    let described = env
        .ok(&["describe", "session", "alice-pod-security", "-n", "cks-lab"])
        .await;
    assert!(described.contains("pod-security-admission"), "{described}");
    env.ok(&[
        "patch",
        "session",
        "alice-pod-security",
        "-n",
        "cks-lab",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"durationMinutes":90}}"#,
    ])
    .await;
    let s: Value = serde_json::from_str(
        &env.ok(&[
            "get",
            "session",
            "alice-pod-security",
            "-n",
            "cks-lab",
            "-o",
            "json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(s["spec"]["durationMinutes"], 90);
    assert_eq!(s["metadata"]["generation"], 2);
    env.ok(&[
        "label",
        "session",
        "alice-pod-security",
        "-n",
        "cks-lab",
        "team=blue",
    ])
    .await;
    // The samples' namespace sorts first, and deleting it takes the other samples with it
    // (here at once, on a real cluster a little later): they may be gone by their turn.
    assert!(
        env.ok(&["delete", "--ignore-not-found", "-f", samples.to_str().unwrap()])
            .await
            .contains("deleted")
    );
    assert!(
        env.ok(&["get", "sessions", "-n", "cks-lab", "-o", "name"])
            .await
            .trim()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_shows_crd_field_docs() {
    let env = Env::start().await;
    with_repo_crds(&env).await;
    let out = env.ok(&["explain", "clusterpool.spec"]).await;
    assert!(out.contains("minAvailable"), "{out}");
    assert!(
        out.contains("Desired state of a pool of practice clusters"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_readable_schema_errors() {
    let env = Env::start().await;
    with_repo_crds(&env).await;
    let bad = "apiVersion: cks.io/v1alpha1
kind: Session
metadata:
  name: broken
  namespace: cks-lab
spec:
  scenario: x
";
    let err = env
        .fails(&["apply", "--validate=false", "-f", "-"], Some(bad))
        .await;
    assert!(
        err.contains("is invalid") && err.contains("Required value"),
        "{err}"
    );
    // A typo is reported, not silently dropped: older kubectl validates against /openapi/v2,
    // newer kubectl asks the server for strict field validation.
    let typo = "apiVersion: cks.io/v1alpha1
kind: Session
metadata:
  name: typo
  namespace: cks-lab
spec:
  scenario: x
  user: u
  pool: p
  durationMinuts: 30
";
    let err = env.fails(&["apply", "-f", "-"], Some(typo)).await;
    assert!(
        err.contains("unknown field") && err.contains("durationMinuts"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_sees_a_condition_set_by_a_controller() {
    let env = Env::start().await;
    with_repo_crds(&env).await;
    let samples = repo_root().join("config/samples/session.yaml");
    env.ok(&["apply", "-f", samples.to_str().unwrap()]).await;
    let client = env.cluster.client().await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cks.io", "v1alpha1", "Session"),
        "sessions",
    );
    let sessions: Api<DynamicObject> = Api::namespaced_with(client, "cks-lab", &ar);
    let waiter = env.run(
        &[
            "wait",
            "--for=condition=ClusterAssigned",
            "--timeout=30s",
            "session/alice-pod-security",
            "-n",
            "cks-lab",
        ],
        None,
    );
    let setter = async {
        let status = json!({"status": {"conditions": [{"type": "ClusterAssigned", "status": "True", "reason": "Test",
            "message": "assigned", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        sessions
            .patch_status(
                "alice-pod-security",
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(waiter, setter);
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_waits_for_finalizers() {
    let env = Env::start().await;
    let held = CONFIGMAP.replace(
        "  namespace: default\n",
        "  namespace: default\n  finalizers: [example.com/hold]\n",
    );
    env.ok_stdin(&["apply", "-f", "-"], Some(&held)).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::default_namespaced(env.cluster.client().await.unwrap());
    let deleter = env.run(
        &["delete", "configmap", "settings", "--wait=true", "--timeout=30s"],
        None,
    );
    let releaser = async {
        // Release only once kubectl's delete has marked the object.
        common::eventually("deletionTimestamp", || async {
            cms.get("settings")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .map(|_| ())
        })
        .await;
        let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        cms.patch("settings", &PatchParams::default(), &patch)
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(deleter, releaser);
    assert!(
        out.status.success(),
        "kubectl delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cms.get_opt("settings").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_work() {
    // Recent kubectl sends these as protobuf, older ones as JSON.
    let env = Env::start().await;
    env.ok(&["create", "namespace", "dev"]).await;
    env.ok(&["create", "configmap", "c", "-n", "dev", "--from-literal=a=b"])
        .await;
    env.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "dev",
        "--from-literal=p=q",
    ])
    .await;
    env.ok(&["create", "serviceaccount", "robot", "-n", "dev"]).await;
    let out = env
        .ok(&[
            "get",
            "configmap,secret,serviceaccount",
            "-n",
            "dev",
            "-o",
            "name",
        ])
        .await;
    for want in ["configmap/c", "secret/s", "serviceaccount/robot"] {
        assert!(out.contains(want), "{want} missing in {out}");
    }
    let data = env
        .ok(&["get", "secret", "s", "-n", "dev", "-o", "jsonpath={.data.p}"])
        .await;
    assert_eq!(data, "cQ==");
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: app:1
        env:
        - {name: A, value: \"1\"}
      - name: sidecar
        image: side:1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reapplies_a_deployment_with_strategic_merge_patches() {
    let env = Env::start().await;
    env.ok_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT)).await;
    // Change one container, drop an env var and the sidecar: kubectl sends a strategic merge
    // patch with $setElementOrder and $patch: delete directives.
    let changed = DEPLOYMENT
        .replace("image: app:1", "image: app:2")
        .replace("        env:\n        - {name: A, value: \"1\"}\n", "")
        .replace("      - name: sidecar\n        image: side:1\n", "")
        .replace("replicas: 2", "replicas: 3");
    assert!(
        env.ok_stdin(&["apply", "-f", "-"], Some(&changed))
            .await
            .contains("configured")
    );
    let d: Value = serde_json::from_str(&env.ok(&["get", "deployment", "web", "-o", "json"]).await).unwrap();
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0]["image"], "app:2");
    assert!(containers[0].get("env").is_none(), "{:?}", containers[0]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(
        env.ok_stdin(&["apply", "-f", "-"], Some(&changed))
            .await
            .contains("unchanged")
    );
}
