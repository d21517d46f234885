//! The `cks-devcluster` binary as `make run` uses it, and state persistence with a data dir.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn state_survives_a_restart_with_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || cks_devcluster::Options {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let cluster = common::start_with(opts()).await;
    let manifests = cks_devcluster::apply::read_manifests(&repo_root().join("crds")).unwrap();
    cluster.apply(&manifests).unwrap();
    let client = cluster.client().await.unwrap();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "kept"}, "data": {"a": "1"}})).unwrap();
    let before = Api::<ConfigMap>::default_namespaced(client)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let old_kubeconfig = cluster.kubeconfig().clone();
    cluster.shutdown().await;

    let cluster = common::start_with(opts()).await;
    // A kubeconfig from before the restart still works (same CA key and token), once pointed
    // at the new port.
    let mut reused = old_kubeconfig;
    reused.clusters[0].cluster.as_mut().unwrap().server = Some(format!("https://{}", cluster.addr()));
    let config = kube::Config::from_custom_kubeconfig(reused, &Default::default())
        .await
        .unwrap();
    let old_client = kube::Client::try_from(config).unwrap();
    Api::<ConfigMap>::default_namespaced(old_client)
        .get("kept")
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let cms = Api::<ConfigMap>::default_namespaced(client.clone());
    let after = cms.get("kept").await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(after.data, before.data);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(crds.get_opt("sessions.cks.io").await.unwrap().is_some());
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cks.io", "v1alpha1", "Session"),
        "sessions",
    );
    let sessions: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    assert!(
        sessions.list(&Default::default()).await.unwrap().items.is_empty(),
        "restored CRDs are served"
    );
    let newer = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "new"}})).unwrap(),
        )
        .await
        .unwrap();
    let rv = |c: &ConfigMap| {
        c.metadata
            .resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(
        rv(&newer) > rv(&before),
        "resourceVersions keep increasing across restarts"
    );
}

/// Kills the child if the test fails before stopping it.
struct Reap(Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn binary_applies_manifests_prints_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cks-devcluster"))
        .current_dir(repo_root())
        .args([
            "--addr",
            "127.0.0.1:0",
            "--apply",
            "crds",
            "--apply",
            "config/samples",
            "--log",
            "warn",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut guard = Reap(Some(child));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("try: ")) {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the binary reports readiness");
        lines.push(line);
    }
    let text = lines.join("\n");
    assert!(
        text.contains("applied customresourcedefinition/sessions.cks.io"),
        "{text}"
    );
    assert!(text.contains("applied clusterpool/cks-standard"), "{text}");
    assert!(
        text.contains(&format!("kubeconfig: {}", kubeconfig.display())),
        "{text}"
    );
    assert!(text.contains("kubectl get"), "{text}");

    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cks.io", "v1alpha1", "ClusterPool"),
        "clusterpools",
    );
    let pools: Api<DynamicObject> = Api::namespaced_with(client, "cks-lab", &ar);
    assert!(pools.get_opt("cks-standard").await.unwrap().is_some());

    let child = guard.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");
}
