//! Helpers of the Session controller tests: a scenario catalog written into a temporary
//! directory, hand-made Available PracticeClusters, a stand-in for the cluster controller's
//! claim and reset transitions, and Session builders.

use std::path::Path;
use std::sync::Arc;

use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::session::{Session, SessionPhase};
use cks_api::{ClusterPool, PracticeCluster};
use cks_operator::context::Context;
use cks_operator::session;
use cks_scenarios::{CatalogStore, LoadOptions};
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::{NS, eventually, template};

/// One scenario of a test catalog.
pub struct ScenarioDef<'a> {
    /// Scenario id (directory name).
    pub id: &'a str,
    /// Worker nodes it needs.
    pub workers: u32,
    /// Number of tasks.
    pub tasks: usize,
    /// Content of `setup/init.yaml`, if any.
    pub setup: Option<&'a str>,
}

impl<'a> ScenarioDef<'a> {
    /// A scenario with one worker, two tasks and no setup.
    pub fn simple(id: &'a str) -> Self {
        Self {
            id,
            workers: 1,
            tasks: 2,
            setup: None,
        }
    }
}

/// Writes a catalog with `scenarios` into `dir` (the reference format) and opens it.
pub fn catalog(dir: &Path, scenarios: &[ScenarioDef<'_>]) -> Arc<CatalogStore> {
    std::fs::write(
        dir.join("categories.yaml"),
        "categories:\n  - id: cluster-setup\n    name: Cluster Setup\n    description: Tests.\n",
    )
    .unwrap();
    for s in scenarios {
        let root = dir.join(s.id);
        for sub in ["tasks", "validation", "setup"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("metadata.yaml"),
            format!(
                "id: {id}\ntitle: Test {id}\ndescription: A scenario of the session tests.\ndifficulty: beginner\n\
                 timeEstimate: \"10m\"\ntopics: [test]\ncategory: cluster-setup\n\
                 requirements:\n  nodes:\n    controlPlane: 1\n    workers: {workers}\n",
                id = s.id,
                workers = s.workers
            ),
        )
        .unwrap();
        for n in 1..=s.tasks {
            std::fs::write(
                root.join(format!("tasks/0{n}-task.md")),
                format!("# Task {n}\n\n## Description\n\nCreate the namespace task-{n}.\n"),
            )
            .unwrap();
            std::fs::write(
                root.join(format!("validation/0{n}-validation.yaml")),
                format!(
                    "validation:\n  - id: ns-{n}\n    type: resource_exists\n    resource:\n      kind: Namespace\n      name: task-{n}\n    errorMessage: \"Namespace task-{n} is missing.\"\n"
                ),
            )
            .unwrap();
        }
        if let Some(setup) = s.setup {
            std::fs::write(root.join("setup/init.yaml"), setup).unwrap();
        }
    }
    let store = CatalogStore::open(dir, LoadOptions::default()).unwrap();
    let catalog = store.catalog();
    let errors: Vec<String> = catalog.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "test catalog has errors: {errors:?}");
    assert_eq!(catalog.len(), scenarios.len());
    store
}

/// A pool whose clusters have `workers` workers and whose sessions may last `max_minutes`.
pub fn pool(name: &str, workers: i32, max_minutes: i32) -> ClusterPool {
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ClusterPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "minAvailable": 0, "maxClusters": 1000, "maxConcurrentProvisioning": 1,
            "template": template(workers),
            "sessions": {"defaultDurationMinutes": 30, "maxDurationMinutes": max_minutes},
        },
    }))
    .unwrap()
}

/// Creates the pool (no pool controller runs in the fast tests).
pub async fn create_pool(client: &Client, pool: &ClusterPool) {
    let api: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), pool).await.unwrap();
}

/// Creates a PracticeCluster of `pool` and makes it Available with a control plane and a
/// worker at made-up IPs, as the cluster controller would after provisioning.
pub async fn available_cluster(client: &Client, name: &str, pool: &str, ip_suffix: u32) {
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let pc: PracticeCluster = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "PracticeCluster",
        "metadata": {"name": name, "namespace": NS, "labels": {"cks.io/pool": pool}},
        "spec": {"pool": pool, "template": template(1), "templateHash": "h"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &pc).await.unwrap();
    make_available(client, name, ip_suffix).await;
}

/// Makes the PracticeCluster `name` Available with a control plane and a worker at made-up
/// IPs (told apart by `ip_suffix`), as the cluster controller would after provisioning.
pub async fn make_available(client: &Client, name: &str, ip_suffix: u32) {
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let a = ip_suffix / 250;
    let b = ip_suffix % 250 + 1;
    let status = json!({"status": {
        "phase": "Available",
        "namespace": name,
        "vms": [
            {"name": format!("{name}-cp"), "role": "control-plane", "target": "control-plane",
             "ip": format!("10.{a}.{b}.1"), "ready": true},
            {"name": format!("{name}-w1"), "role": "worker", "target": "worker-1",
             "ip": format!("10.{a}.{b}.2"), "ready": true},
        ],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Stands in for the cluster controller: a claimed Available cluster becomes Assigned; a
/// released Assigned one becomes Available again (its "reset"), one more session served.
/// Runs until the returned sender is dropped or sends.
pub fn reset_loop(client: &Client) -> watch::Sender<bool> {
    let (tx, mut rx) = watch::channel(false);
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    tokio::spawn(async move {
        let events = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(events);
        loop {
            let pc = tokio::select! {
                _ = rx.wait_for(|stop| *stop) => return,
                next = events.next() => match next {
                    Some(Ok(pc)) => pc,
                    Some(Err(_)) => continue,
                    None => return,
                },
            };
            let status = pc.status.clone().unwrap_or_default();
            let patch = match (status.phase, pc.spec.claim_ref.is_some()) {
                (PracticeClusterPhase::Available, true) => json!({"status": {"phase": "Assigned"}}),
                (PracticeClusterPhase::Assigned, false) => json!({"status": {
                    "phase": "Available", "sessionsServed": status.sessions_served + 1,
                }}),
                _ => continue,
            };
            let guarded =
                json!({"metadata": {"resourceVersion": pc.resource_version()}, "status": patch["status"]});
            // A conflict means the cluster changed again; its next event brings it back here.
            let _ = api
                .patch_status(&pc.name_any(), &PatchParams::default(), &Patch::Merge(&guarded))
                .await;
        }
    });
    tx
}

/// A Session of `user` for `scenario` on `pool`.
pub fn session(name: &str, user: &str, pool: &str, scenario: &str) -> Session {
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "Session",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"scenario": scenario, "user": user, "pool": pool, "durationMinutes": 60},
    }))
    .unwrap()
}

/// Creates a Session.
pub async fn create_session(client: &Client, s: &Session) {
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), s).await.unwrap();
}

/// Runs a Session controller with `ctx` until the returned sender sends `true`.
pub fn run_controller(ctx: Arc<Context>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        session::run(ctx, Some(NS), async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await;
    });
    (tx, handle)
}

/// A test context with the catalog.
pub fn context(client: &Client, catalog: Option<Arc<CatalogStore>>) -> Context {
    Context {
        scenarios: catalog,
        ..Context::test(client.clone())
    }
}

/// The phase of a Session (Pending when it has no status).
pub fn phase(s: &Session) -> SessionPhase {
    s.status.as_ref().map(|st| st.phase).unwrap_or_default()
}

/// Waits until the Session `name` satisfies `check` and returns it.
pub async fn wait_session(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&Session) -> bool,
) -> Session {
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    eventually(&format!("Session {name}: {what}"), || async {
        api.get_opt(name).await.ok().flatten().filter(|s| check(s))
    })
    .await
}

/// Every Session in [`NS`].
pub async fn sessions(client: &Client) -> Vec<Session> {
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default()).await.unwrap().items
}

/// Every PracticeCluster in [`NS`].
pub async fn all_clusters(client: &Client) -> Vec<PracticeCluster> {
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default()).await.unwrap().items
}

/// Like [`eventually`] with a longer deadline, for the tests that move hundreds of objects
/// on a shared, busy machine. `last` is what the check saw last (it goes into the failure
/// message, so a stall can be diagnosed).
pub async fn eventually_long<T, F, Fut>(what: &str, last: &std::sync::Mutex<String>, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {}",
            last.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits for an Event of `type_` (`Normal` or `Warning`) with `reason` on the object named
/// `object` in [`NS`].
pub async fn event(
    client: &Client,
    type_: &str,
    reason: &str,
    object: &str,
) -> k8s_openapi::api::core::v1::Event {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
    eventually(&format!("a {reason} {type_} event on {object}"), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.type_.as_deref() == Some(type_)
                && e.reason.as_deref() == Some(reason)
                && e.involved_object.name.as_deref() == Some(object)
        })
    })
    .await
}
