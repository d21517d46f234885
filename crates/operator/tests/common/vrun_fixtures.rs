//! Fixtures of the ValidationRun tests: a scenario catalog in a temporary directory whose
//! tasks use every rule type and condition, the Session controller's part (a Session that
//! holds a cluster, written by hand), and a student's SSH client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cks_api::{PracticeCluster, Session, ValidationRun};
use cks_scenarios::{CatalogStore, LoadOptions};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use russh::keys::PrivateKeyWithHashAlg;
use russh::{ChannelMsg, client};
use serde_json::json;

use super::{NS, eventually};

/// Scenario whose task 1 uses resource rules and task 2 command, script and file rules.
pub const SCENARIO: &str = "hardening";
/// Scenario whose only task runs a script that sleeps for a minute.
pub const SLOW_SCENARIO: &str = "slow";

/// A catalog directory removed when dropped.
#[derive(Debug)]
pub struct TempCatalog {
    /// The catalog root.
    pub dir: PathBuf,
    /// The loaded catalog.
    pub store: Arc<CatalogStore>,
}

impl Drop for TempCatalog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn task(dir: &Path, n: &str, title: &str, rules: &str) {
    write(
        &dir.join(format!("tasks/{n}-task.md")),
        &format!("# {title}\n\n## Description\n{title}.\n\n## Objectives\n- {title}\n"),
    );
    write(
        &dir.join(format!("validation/{n}-validation.yaml")),
        &format!("validation:\n{rules}"),
    );
}

const RESOURCE_RULES: &str = r#"
  - id: namespace-exists
    type: resource_exists
    resource: {kind: Namespace, name: secure}
    errorMessage: "Create the namespace secure."
  - id: enforce-label
    type: resource_property
    resource: {kind: Namespace, name: secure}
    property: .metadata.labels.pod-security\.kubernetes\.io/enforce
    condition: equals
    value: restricted
    errorMessage: "Label namespace secure with pod-security.kubernetes.io/enforce=restricted."
  - id: mode-strict
    type: resource_property
    resource: {kind: ConfigMap, name: settings, namespace: secure}
    property: .data.mode
    condition: contains
    value: strict
    errorMessage: "settings.mode must be a strict mode."
  - id: mode-versioned
    type: resource_property
    resource: {kind: ConfigMap, name: settings, namespace: secure}
    property: .data.mode
    condition: matches_regex
    value: "^strict-v[0-9]+$"
    errorMessage: "settings.mode must look like strict-vN."
  - id: replicas-at-least-three
    type: resource_property
    resource: {kind: ConfigMap, name: settings, namespace: secure}
    property: .data.replicas
    condition: greater_than
    value: 2
    errorMessage: "Run more than two replicas."
  - id: replicas-at-most-nine
    type: resource_property
    resource: {kind: ConfigMap, name: settings, namespace: secure}
    property: .data.replicas
    condition: less_than
    value: 10
    errorMessage: "Run fewer than ten replicas."
  - id: owner-set
    type: resource_property
    resource: {kind: ConfigMap, name: settings, namespace: secure}
    property: .data.owner
    condition: exists
    errorMessage: "Name an owner in settings."
  - id: no-password
    type: resource_property
    resource: {kind: ConfigMap, name: settings, namespace: secure}
    property: .data.password
    condition: not_exists
    errorMessage: "Never keep a password in a ConfigMap."
  - id: no-debug-configmap
    type: resource_exists
    resource: {kind: ConfigMap, name: debug, namespace: secure}
    condition: not_exists
    errorMessage: "Delete the debug ConfigMap."
"#;

const VM_RULES: &str = r#"
  - id: mode-is-enforce
    type: command
    command: "cat /etc/cks/mode"
    condition: output_equals
    value: enforce
    errorMessage: "/etc/cks/mode must say enforce."
  - id: mode-listed
    type: command
    command: {command: "ls /etc/cks", target: control-plane}
    condition: output_contains
    value: mode
    errorMessage: "Create /etc/cks/mode."
  - id: mode-readable
    type: command
    command: "test -r /etc/cks/mode"
    errorMessage: "/etc/cks/mode must be readable."
  - id: mode-one-line
    type: command
    command: "wc -l < /etc/cks/mode"
    condition: equals
    value: 1
    errorMessage: "/etc/cks/mode must have exactly one line."
  - id: audit-script
    type: script
    script: |
      #!/bin/bash
      if grep -qx enforce /etc/cks/mode; then echo "mode=enforce"; exit 0; fi
      echo "mode=$(cat /etc/cks/mode 2>/dev/null)"
      exit 4
    condition: matches_regex
    value: "^mode=enforce$"
    errorMessage: "The audit script must report mode=enforce."
  - id: no-insecure-marker
    type: script
    script:
      script: "test -e /etc/cks/insecure && exit 0; exit 3"
      target: control-plane
      successCode: 3
    errorMessage: "Remove /etc/cks/insecure."
  - id: mode-file
    type: file_exists
    file: {path: /etc/cks/mode, target: control-plane}
    errorMessage: "Create /etc/cks/mode."
  - id: insecure-file-gone
    type: file_exists
    path: /etc/cks/insecure
    condition: not_exists
    errorMessage: "Remove /etc/cks/insecure."
  - id: mode-content
    type: file_content
    path: /etc/cks/mode
    condition: equals
    value: enforce
    errorMessage: "/etc/cks/mode must contain enforce."
  - id: mode-content-part
    type: file_content
    path: /etc/cks/mode
    condition: contains
    value: enf
    errorMessage: "/etc/cks/mode must mention enf."
  - id: mode-content-line
    type: file_content
    path: /etc/cks/mode
    condition: matches_regex
    value: "^enforce$"
    errorMessage: "/etc/cks/mode must be the single word enforce."
  - id: insecure-content-gone
    type: file_content
    path: /etc/cks/insecure
    condition: not_exists
    errorMessage: "Remove /etc/cks/insecure."
  - id: worker-marked
    type: file_exists
    file: {path: /etc/cks/worker-ok, target: worker}
    errorMessage: "Create /etc/cks/worker-ok on the worker."
  - id: worker-kernel-args
    type: command
    command: {command: "cat /etc/cks/worker-ok", target: worker-1}
    condition: output_contains
    value: hardened
    errorMessage: "Mark the worker hardened."
"#;

const SLOW_RULES: &str = r#"
  - id: slow-audit
    type: script
    timeout: 100
    script: |
      #!/bin/bash
      touch /tmp/validation-started
      sleep 60
      echo done
    errorMessage: "The slow audit must finish."
"#;

fn scenario(root: &Path, id: &str, tasks: &[(&str, &str, &str)]) {
    let dir = root.join(id);
    write(
        &dir.join("metadata.yaml"),
        &format!("id: {id}\ntitle: {id}\ndescription: Test scenario {id}.\ncategory: cluster-setup\n"),
    );
    write(&dir.join("setup/init.yaml"), "steps: []\n");
    for (n, title, rules) in tasks {
        task(&dir, n, title, rules);
    }
}

/// Writes the test catalog ([`SCENARIO`] and [`SLOW_SCENARIO`]) and opens it.
pub fn catalog() -> TempCatalog {
    let dir = std::env::temp_dir().join(format!("cks-vrun-{}", uuid::Uuid::new_v4().simple()));
    write(
        &dir.join("categories.yaml"),
        "categories:\n  - id: cluster-setup\n    name: Cluster Setup\n    description: Test.\n",
    );
    scenario(
        &dir,
        SCENARIO,
        &[
            ("01", "Secure namespace", RESOURCE_RULES),
            ("02", "Node hardening", VM_RULES),
        ],
    );
    scenario(&dir, SLOW_SCENARIO, &[("01", "Slow audit", SLOW_RULES)]);
    let store = CatalogStore::open(&dir, LoadOptions::default()).expect("test catalog loads");
    let catalog = store.catalog();
    let errors: Vec<String> = catalog.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "test catalog: {errors:?}");
    assert_eq!(catalog.len(), 2);
    TempCatalog { dir, store }
}

/// Creates Session `name` for `scenario` and plays the Session controller: the Session is
/// Ready holding `cluster` (the cluster's `claimRef` names it), with Pending task entries.
pub async fn ready_session(
    client: &Client,
    name: &str,
    scenario: &str,
    cluster: Option<&str>,
    tasks: &[&str],
) -> Session {
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    let session: Session = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "Session",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"scenario": scenario, "user": format!("{name}-user"), "pool": "pool", "durationMinutes": 60},
    }))
    .unwrap();
    let session = sessions.create(&PostParams::default(), &session).await.unwrap();
    if let Some(cluster) = cluster {
        let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
        let claim = json!({"spec": {"claimRef": {"name": name, "uid": session.uid()}}});
        clusters
            .patch(cluster, &PatchParams::default(), &Patch::Merge(&claim))
            .await
            .unwrap();
    }
    let entries: Vec<_> = tasks
        .iter()
        .map(|t| json!({"id": t, "state": "Pending", "attempts": 0}))
        .collect();
    set_session_status(
        client,
        name,
        json!({"phase": "Ready", "cluster": cluster, "tasks": entries}),
    )
    .await
}

/// Merges `status` into Session `name`'s status.
pub async fn set_session_status(client: &Client, name: &str, status: serde_json::Value) -> Session {
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    sessions
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .unwrap()
}

/// Creates ValidationRun `name` of `session` and `task` (empty for all tasks).
pub async fn create_run(client: &Client, name: &str, session: &str, task: &str) {
    let runs: Api<ValidationRun> = Api::namespaced(client.clone(), NS);
    let run: ValidationRun = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ValidationRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"session": session, "task": task},
    }))
    .unwrap();
    runs.create(&PostParams::default(), &run).await.unwrap();
}

/// Waits until run `name` has finished and returns it.
pub async fn finished_run(client: &Client, name: &str) -> ValidationRun {
    let runs: Api<ValidationRun> = Api::namespaced(client.clone(), NS);
    eventually(&format!("ValidationRun {name} to finish"), || async {
        let run = runs.get_opt(name).await.ok()??;
        run.status.as_ref()?.phase.is_finished().then_some(run)
    })
    .await
}

/// Accepts any host key: the simulated VMs make a new one per boot.
#[derive(Debug)]
pub struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A student's SSH login to a simulated VM at `ip` (port [`super::sim::SSH_PORT`]) as
/// `ubuntu` with the pool's key.
pub async fn ssh_login(ip: &str) -> client::Handle<AnyHostKey> {
    eventually(&format!("an SSH login to {ip}"), || async {
        let config = Arc::new(client::Config::default());
        let mut handle = client::connect(config, (ip, super::sim::SSH_PORT), AnyHostKey)
            .await
            .ok()?;
        let key = PrivateKeyWithHashAlg::new(Arc::new(super::sim::ssh_key()), None);
        let auth = handle.authenticate_publickey("ubuntu", key).await.ok()?;
        auth.success().then_some(handle)
    })
    .await
}

/// Runs `command` over `ssh`, returning stdout and the exit status.
pub async fn ssh_exec(ssh: &client::Handle<AnyHostKey>, command: &str) -> (String, u32) {
    let mut channel = ssh.channel_open_session().await.expect("SSH channel");
    channel.exec(true, command).await.expect("SSH exec");
    let (mut stdout, mut code) = (Vec::new(), None);
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            _ => {}
        }
    }
    (
        String::from_utf8_lossy(&stdout).into_owned(),
        code.expect("an exit status"),
    )
}
