//! `cks-devcluster`: a local, in-memory Kubernetes-API-compatible server for development and
//! tests. It serves the built-in kinds cks-lab uses plus any CustomResourceDefinition, over
//! HTTPS on loopback with a generated CA and bearer token, and writes a kubeconfig that kube-rs
//! and kubectl use unchanged. It is not a production API server; see `docs/devcluster.md`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cluster = cks_devcluster::DevCluster::start(cks_devcluster::Options::default()).await?;
//! let client = cluster.client().await?;
//! # drop(client);
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod apply;
pub mod audit;
pub mod builtin;
pub mod error;
pub mod kubevirt;
mod openapi;
pub mod patch;
mod protobuf;
mod rbac;
pub mod registry;
pub mod schema;
pub mod selector;
mod server;
pub mod state;
pub mod table;
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::state::State;
pub use crate::tls::ExternalCa;

/// Errors starting or stopping a development cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating TLS material: {0}")]
    Tls(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("writing kubeconfig {path}: {source}")]
    Kubeconfig { path: PathBuf, source: std::io::Error },
    #[error("reading state from {path}: {message}")]
    Restore { path: PathBuf, message: String },
    #[error("building a client: {0}")]
    Client(String),
    #[error("rendering the kubeconfig: {0}")]
    RenderKubeconfig(String),
    #[error("installing the KubeVirt simulator: {0}")]
    Simulator(String),
    #[error("opening the audit log {path}: {source}")]
    AuditLog { path: PathBuf, source: std::io::Error },
}

/// How to start a development cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Where to write the kubeconfig; `None` keeps it in memory only.
    pub kubeconfig: Option<PathBuf>,
    /// Directory whose `state.json` is loaded at start and written on change and at shutdown.
    pub data_dir: Option<PathBuf>,
    /// Changes kept for watches resuming from an older resourceVersion.
    pub history: usize,
    /// Changes a watcher may fall behind before it is closed with 410 Gone.
    pub watch_buffer: usize,
    /// Interval of watch bookmarks, for watches that allow them.
    pub bookmark_interval: Duration,
    /// Watch duration when the client sets no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Run the KubeVirt/CDI simulator (CRDs, controller, subresources, simulated VMs).
    pub kubevirt: Option<kubevirt::SimOptions>,
    /// Serve with a certificate signed by this CA instead of a generated one, and accept
    /// client certificates it signed (a practice cluster's API uses its cluster CA).
    pub ca: Option<ExternalCa>,
    /// Act as the kubelet, simply: Pods are marked Running, Deployments rolled out.
    pub kubelet: bool,
    /// More bearer tokens, each with the user it authenticates (token → user): callers of their
    /// own identity in the audit log. The server's own token is the user `admin`.
    pub identities: BTreeMap<String, String>,
    /// Append every authenticated request's attributes to this file (`audit` module).
    pub audit_log: Option<PathBuf>,
    /// Refuse (403) requests of the `identities` that the stored Roles, ClusterRoles and
    /// bindings do not allow (`rbac` module); the server's own token is never checked.
    pub enforce_rbac: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            data_dir: None,
            history: 10_000,
            watch_buffer: 4096,
            bookmark_interval: Duration::from_secs(30),
            default_watch_timeout: Duration::from_secs(1800),
            kubevirt: None,
            ca: None,
            kubelet: false,
            identities: BTreeMap::new(),
            audit_log: None,
            enforce_rbac: false,
        }
    }
}

/// State shared by the HTTP handlers and background tasks of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub token: String,
    pub gc: Notify,
    pub persist: Notify,
    pub shutdown: watch::Receiver<bool>,
    pub opts: Options,
    pub audit: Option<audit::AuditLog>,
}

impl Shared {
    /// Lock the state; a panic in another handler must not wedge the server.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the background tasks after a write.
    pub fn after_write(&self, gc_needed: bool) {
        if gc_needed {
            self.gc.notify_one();
        }
        if self.opts.data_dir.is_some() {
            self.persist.notify_one();
        }
    }
}

/// A running development cluster. Dropping it stops the server too; [`DevCluster::shutdown`]
/// additionally waits for the tasks and writes the final state.
#[derive(Debug)]
pub struct DevCluster {
    addr: SocketAddr,
    kubeconfig: kube::config::Kubeconfig,
    kubeconfig_yaml: String,
    kubeconfig_path: Option<PathBuf>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Temporary directory of simulated disks, removed when the cluster stops.
    temp_disks: Option<PathBuf>,
}

impl DevCluster {
    /// Start a server; it is ready to serve when this returns.
    pub async fn start(opts: Options) -> Result<Self, Error> {
        // With a data directory, the CA key and token survive restarts, so kubeconfigs handed
        // out earlier (and processes using them) keep working.
        let saved = |file: &str| {
            opts.data_dir
                .as_ref()
                .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        };
        let tls = tls::generate(opts.addr.ip(), saved("ca.key").as_deref(), opts.ca.as_ref())
            .map_err(|e| Error::Tls(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: opts.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: opts.addr,
            source,
        })?;
        let token = saved("token")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if let Some(dir) = &opts.data_dir {
            let save = |file: &str, text: &str| {
                std::fs::create_dir_all(dir).and_then(|()| write_private(&dir.join(file), text))
            };
            save("ca.key", &tls.ca_key_pem)
                .and_then(|()| save("token", &token))
                .map_err(|e| Error::Restore {
                    path: dir.clone(),
                    message: e.to_string(),
                })?;
        }

        let mut state = State::new(opts.history, opts.watch_buffer);
        if let Some(dir) = &opts.data_dir {
            let path = dir.join("state.json");
            if path.exists() {
                let text = std::fs::read_to_string(&path).map_err(|e| Error::Restore {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                let snap: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Restore {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                state.restore(&snap).map_err(|message| Error::Restore {
                    path: path.clone(),
                    message,
                })?;
            }
        }
        let audit = match &opts.audit_log {
            Some(path) => Some(audit::AuditLog::open(path).map_err(|source| Error::AuditLog {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            token: token.clone(),
            gc: Notify::new(),
            persist: Notify::new(),
            shutdown,
            opts: opts.clone(),
            audit,
        });

        let server = format!("https://{addr}");
        let ca_data = base64::engine::general_purpose::STANDARD.encode(&tls.ca_pem);
        let kc_json = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cks-dev", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
            "users": [{"name": "cks-dev", "user": {"token": token}}],
            "contexts": [{"name": "cks-dev", "context": {"cluster": "cks-dev", "user": "cks-dev", "namespace": "default"}}],
            "current-context": "cks-dev",
        });
        let kubeconfig: kube::config::Kubeconfig =
            serde_json::from_value(kc_json.clone()).map_err(|e| Error::RenderKubeconfig(e.to_string()))?;
        let kubeconfig_yaml =
            serde_saphyr::to_string(&kc_json).map_err(|e| Error::RenderKubeconfig(e.to_string()))?;
        if let Some(path) = &opts.kubeconfig {
            write_private(path, &kubeconfig_yaml).map_err(|source| Error::Kubeconfig {
                path: path.clone(),
                source,
            })?;
        }

        let mut tasks = vec![tokio::spawn(server::serve(
            listener,
            tls.server_config,
            shared.clone(),
        ))];
        tasks.push(tokio::spawn(gc_loop(shared.clone())));
        if opts.kubelet {
            tasks.push(tokio::spawn(kubelet_loop(shared.clone())));
        }
        let mut temp_disks = None;
        if let Some(sim) = opts.kubevirt.clone() {
            let root = match (&sim.disk_dir, &opts.data_dir) {
                (Some(d), _) => d.clone(),
                (None, Some(d)) => d.join("kubevirt"),
                (None, None) => {
                    let d = std::env::temp_dir()
                        .join(format!("cks-devcluster-{}", uuid::Uuid::new_v4().simple()));
                    temp_disks = Some(d.clone());
                    d
                }
            };
            std::fs::create_dir_all(&root)
                .map_err(|e| Error::Simulator(format!("{}: {e}", root.display())))?;
            {
                let mut st = shared.lock();
                st.kubevirt_webhooks = true;
                let crd_rt = st
                    .registry
                    .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                    .expect("CRDs are built in");
                for crd in kubevirt::crds::all() {
                    let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    if st.get(&crd_rt, None, &name).is_ok() {
                        continue;
                    }
                    st.create(&crd_rt, None, crd, state::WriteOpts::default())
                        .map_err(|e| Error::Simulator(format!("CRD {name}: {e}")))?;
                }
                kubevirt::install(&mut st, &sim, &root);
            }
            tasks.push(tokio::spawn(kubevirt::run(shared.clone(), sim, root)));
        }
        if let Some(dir) = opts.data_dir.clone() {
            tasks.push(tokio::spawn(persist_loop(shared.clone(), dir)));
        }
        tracing::info!(%addr, "development cluster serving");
        Ok(Self {
            addr,
            kubeconfig,
            kubeconfig_yaml,
            kubeconfig_path: opts.kubeconfig,
            shared,
            stop,
            tasks,
            temp_disks,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig for this server.
    pub fn kubeconfig(&self) -> &kube::config::Kubeconfig {
        &self.kubeconfig
    }

    /// The kubeconfig as YAML text.
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig_yaml
    }

    /// Where the kubeconfig was written, if anywhere.
    pub fn kubeconfig_path(&self) -> Option<&Path> {
        self.kubeconfig_path.as_deref()
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let config = kube::Config::from_custom_kubeconfig(self.kubeconfig.clone(), &Default::default())
            .await
            .map_err(|e| Error::Client(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
    }

    /// Server-side apply manifests (field manager `cks-devcluster`) in the given order; returns
    /// `kind/name` of each applied object. Objects without a namespace go to `default`; missing
    /// namespaces are created.
    pub fn apply(&self, manifests: &[apply::Manifest]) -> Result<Vec<String>, apply::ApplyError> {
        let mut applied = Vec::new();
        let result = (|| {
            let mut st = self.shared.lock();
            for m in manifests {
                let kind = m.object["kind"].as_str().unwrap_or_default().to_string();
                let name = m.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let api_version = m.object["apiVersion"].as_str().unwrap_or_default().to_string();
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version.as_str()));
                let rt = st.registry.by_kind(group, version, &kind).ok_or_else(|| {
                    apply::ApplyError::UnknownKind {
                        path: m.path.clone(),
                        kind: kind.clone(),
                        name: name.clone(),
                        api_version: api_version.clone(),
                    }
                })?;
                let ns = m.object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string();
                let ns_rt = st
                    .registry
                    .get("", "v1", "namespaces")
                    .expect("namespaces are built in");
                if rt.namespaced && st.get(&ns_rt, None, &ns).is_err() {
                    // Manifests for a fresh cluster may assume their namespace exists; create it.
                    let obj = serde_json::json!({"metadata": {"name": ns}});
                    st.create(&ns_rt, None, obj, state::WriteOpts::default())
                        .map_err(|e| apply::ApplyError::Apply {
                            path: m.path.clone(),
                            kind: "Namespace".into(),
                            name: ns.clone(),
                            message: e.message,
                        })?;
                    applied.push(format!("namespace/{ns}"));
                }
                st.patch(
                    &rt,
                    Some(&ns),
                    &name,
                    patch::PatchType::Apply,
                    m.object.clone(),
                    false,
                    Some("cks-devcluster"),
                    true,
                    state::WriteOpts::default(),
                )
                .map_err(|e| apply::ApplyError::Apply {
                    path: m.path.clone(),
                    kind: kind.clone(),
                    name: name.clone(),
                    message: e.message,
                })?;
                applied.push(format!("{}/{name}", kind.to_lowercase()));
            }
            Ok(())
        })();
        self.shared.after_write(true);
        result.map(|()| applied)
    }

    /// Number of stored objects (for tests and benchmarks).
    pub fn object_count(&self) -> usize {
        self.shared.lock().len()
    }

    /// Stop serving, close watches, and write the final state when a data directory is set.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(dir) = &self.shared.opts.data_dir
            && let Err(e) = write_snapshot(&self.shared, dir)
        {
            tracing::warn!(error = %e, "writing final state");
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(dir) = self.temp_disks.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn write_snapshot(shared: &Shared, dir: &Path) -> std::io::Result<()> {
    let snap = shared.lock().snapshot();
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&snap)?)?;
    std::fs::rename(tmp, dir.join("state.json"))
}

async fn gc_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = shared.gc.notified() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            let changed = shared.lock().gc_pass();
            if !changed {
                break;
            }
            shared.after_write(false);
        }
    }
}

async fn persist_loop(shared: Arc<Shared>, dir: PathBuf) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = shared.persist.notified() => {}
            _ = shutdown.changed() => return,
        }
        // Coalesce bursts of writes into one snapshot.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = write_snapshot(&shared, &dir) {
            tracing::warn!(error = %e, dir = %dir.display(), "writing state");
        }
    }
}

/// With a kubelet, a Deployment gets its Pods (labels of its template plus
/// `pod-template-hash`, owned by it; no ReplicaSets) and reports every replica updated, ready
/// and available, so `kubectl rollout status` finishes as on a cluster whose images pull and
/// `kubectl exec deploy/NAME` finds a Pod (the exec itself is not served).
fn rollout_deployments(st: &mut state::State) -> bool {
    let (Some(rt), Some(pods)) = (
        st.registry.get("apps", "v1", "deployments"),
        st.registry.get("", "v1", "pods"),
    ) else {
        return false;
    };
    let items = st
        .list(&rt, None, &state::ListOpts::default())
        .map(|l| l.items)
        .unwrap_or_default();
    let mut wrote = false;
    for d in &items {
        wrote |= deployment_pods(st, &pods, d);
    }
    for d in items {
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let generation = d["metadata"]["generation"].clone();
        let now = state::now();
        let mut status = json!({"observedGeneration": generation, "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                    "message": "ReplicaSet has successfully progressed.", "lastUpdateTime": now, "lastTransitionTime": now}]});
        if replicas == 0 {
            for k in ["readyReplicas", "availableReplicas", "updatedReplicas"] {
                status.as_object_mut().expect("object").remove(k);
            }
        }
        let old = &d["status"];
        if old["observedGeneration"] == status["observedGeneration"]
            && old["replicas"] == status["replicas"]
            && old["availableReplicas"] == status["availableReplicas"]
        {
            continue;
        }
        let mut new = (*d).clone();
        new["status"] = status;
        let ns = d["metadata"]["namespace"].as_str().map(str::to_string);
        let name = d["metadata"]["name"].as_str().unwrap_or_default().to_string();
        wrote |= st
            .update(&rt, ns.as_deref(), &name, new, true, state::WriteOpts::default())
            .is_ok();
    }
    wrote
}

/// Make the Pods of Deployment `d` match its template and replica count.
fn deployment_pods(st: &mut state::State, pods: &Arc<registry::ResourceType>, d: &serde_json::Value) -> bool {
    use std::hash::{Hash, Hasher};
    if d["metadata"]["deletionTimestamp"].is_string() {
        return false;
    }
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = d["metadata"]["name"].as_str().unwrap_or_default();
    let uid = d["metadata"]["uid"].as_str().unwrap_or_default();
    let template = &d["spec"]["template"];
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    let hash = format!("{:010x}", hasher.finish() & 0xff_ffff_ffff);
    let owned: Vec<Arc<serde_json::Value>> = st
        .list(pods, Some(&ns), &state::ListOpts::default())
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid))
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .collect();
    let want = usize::try_from(d["spec"]["replicas"].as_i64().unwrap_or(1).max(0)).unwrap_or(0);
    let mut wrote = false;
    let mut current = 0;
    for p in &owned {
        let pod_name = p["metadata"]["name"].as_str().unwrap_or_default();
        if p["metadata"]["labels"]["pod-template-hash"] == hash.as_str() && current < want {
            current += 1;
        } else {
            wrote |= st
                .delete(pods, Some(&ns), pod_name, &state::DeleteOpts::default())
                .is_ok();
        }
    }
    for _ in current..want {
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["pod-template-hash"] = json!(hash);
        let pod = json!({"metadata": {"generateName": format!("{name}-{hash}-"), "namespace": ns,
                "labels": labels, "annotations": template["metadata"]["annotations"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                    "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": template["spec"]});
        match st.create(pods, Some(&ns), pod, state::WriteOpts::default()) {
            Ok(_) => wrote = true,
            Err(e) => tracing::warn!(deployment = %name, error = %e, "creating a Deployment's Pod"),
        }
    }
    wrote
}

/// Mark Pods Running and Ready, as a kubelet would once their containers started.
async fn kubelet_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut rx = {
        let st = shared.lock();
        match st.subscribe("", st.rv()) {
            Ok((_, rx)) => rx,
            Err(_) => return,
        }
    };
    loop {
        let wrote = {
            let mut st = shared.lock();
            let Some(rt) = st.registry.get("", "v1", "pods") else {
                return;
            };
            let pods = st
                .list(&rt, None, &state::ListOpts::default())
                .map(|l| l.items)
                .unwrap_or_default();
            let mut wrote = rollout_deployments(&mut st);
            for pod in pods {
                if pod["status"]["phase"] == "Running" || pod["metadata"]["deletionTimestamp"].is_string() {
                    continue;
                }
                let now = state::now();
                let ready = json!({"type": "Ready", "status": "True", "lastTransitionTime": now});
                let containers: Vec<serde_json::Value> = pod["spec"]["containers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        json!({"name": c["name"], "image": c["image"], "ready": true, "restartCount": 0,
                        "started": true, "state": {"running": {"startedAt": now}}})
                    })
                    .collect();
                let mut new = (*pod).clone();
                new["status"] = json!({"phase": "Running", "startTime": now, "podIP": "10.244.0.10",
                    "hostIP": shared.opts.addr.ip().to_string(),
                    "conditions": [ready, {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
                    "containerStatuses": containers});
                let ns = pod["metadata"]["namespace"].as_str().map(str::to_string);
                let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
                wrote |= st
                    .update(&rt, ns.as_deref(), &name, new, true, state::WriteOpts::default())
                    .is_ok();
            }
            wrote
        };
        if wrote {
            shared.after_write(false);
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            r = rx.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return;
                }
                while rx.try_recv().is_ok() {}
            }
        }
    }
}
