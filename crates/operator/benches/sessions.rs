//! Session allocation benchmark: latency from just before a Session's create call to the
//! watch event that shows it `ClusterAssigned`, with a warm pool, for 1, 50 and 200
//! concurrent Sessions (p50/p99/max), next to the round trip of a single status patch on the
//! same server as the floor.
//!
//! The `cks-devcluster` binary runs as its own process without the KubeVirt simulator; the
//! warm pool is N PracticeClusters created the way the pool controller creates them and
//! patched to Available (no VMs: allocation never touches them). Only the Session controller
//! runs, in this process, with the operator's default settings and a one-task scenario
//! without setup steps; every Session has its own user. `CKS_BENCH_SESSIONS` (default
//! `1,50,200`) picks the batch sizes; each batch gets a fresh server and controller.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cks_api::names::condition_types;
use cks_api::{ClusterPool, PracticeCluster, Session};
use cks_operator::config::{Args, ControllerConfig, PracticeApiAccess};
use cks_operator::context::Context;
use cks_operator::metrics::Metrics;
use cks_operator::{pool, session};
use cks_scenarios::{CatalogStore, LoadOptions};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{DevClusterProcess, Latencies, NS, Scratch};
use tokio::sync::{oneshot, watch};

const POOL: &str = "warm";
const SCENARIO: &str = "bench-noop";
/// Sequential status patches measured for the floor.
const FLOOR_SAMPLES: usize = 200;
/// Bound on a batch's wait for ClusterAssigned; a missing or broken controller fails the
/// bench with the Sessions' phases instead of hanging.
const ASSIGN_LIMIT: Duration = Duration::from_secs(300);
/// Concurrent requests while building the warm pool.
const SETUP_CONCURRENCY: usize = 16;

/// A catalog of one scenario: one task, one rule, no setup steps, 1 worker.
fn write_catalog(root: &std::path::Path) {
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("catalog directory");
        std::fs::write(path, text).expect("catalog file");
    };
    write(
        "categories.yaml",
        "categories:\n  - id: cluster-hardening\n    name: Cluster Hardening\n    description: Bench.\n",
    );
    write(
        &format!("{SCENARIO}/metadata.yaml"),
        &format!(
            "id: {SCENARIO}\ntitle: Benchmark no-op\ndescription: A scenario without setup steps.\n\
             version: \"1.0.0\"\ndifficulty: beginner\ntimeEstimate: 5m\ntopics: [benchmark]\n\
             category: cluster-hardening\nrequirements:\n  nodes:\n    controlPlane: 1\n    workers: 1\n"
        ),
    );
    write(
        &format!("{SCENARIO}/tasks/01-look.md"),
        "# Look around\n## Description\nNothing to do.\n## Objectives\n- Look\n## Hints\n\
         <details>\n<summary>Where to start</summary>\nkubectl get namespaces\n</details>\n",
    );
    write(
        &format!("{SCENARIO}/validation/01-validation.yaml"),
        "validation:\n- id: default-namespace\n  type: resource_exists\n  resource:\n    kind: Namespace\n    \
         name: default\n  errorMessage: \"Namespace default not found\"\n",
    );
}

fn pool_spec(n: usize) -> ClusterPool {
    let n = i32::try_from(n).expect("batch size fits i32");
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ClusterPool",
        "metadata": {"name": POOL, "namespace": NS},
        "spec": {
            "minAvailable": n, "maxClusters": n, "maxConcurrentProvisioning": n.min(100),
            "template": {
                "kubernetesVersion": "1.33.0",
                "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
                "workers": {"count": 1, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
                "goldenImage": {"namespace": "vm-templates", "name": "golden"},
                "sshKeySecretRef": {"name": "ssh-key"},
            },
        },
    }))
    .expect("a ClusterPool")
}

/// The status a cluster has once the cluster controller made it Available.
fn available_status(name: &str, i: usize) -> serde_json::Value {
    let ip = |vm: usize| format!("10.{}.{}.{}", 100 + i / 250, i % 250, vm + 1);
    let now = jiff::Timestamp::now().to_string();
    json!({
        "phase": "Available",
        "phaseSince": now,
        "availableSince": now,
        "namespace": name,
        "adminKubeconfigSecret": format!("{name}-admin-kubeconfig"),
        "apiEndpoint": format!("https://{}:6443", ip(0)),
        "sessionsServed": 0,
        "vms": [
            {"name": format!("{name}-control-plane"), "role": "control-plane", "target": "control-plane",
             "ip": ip(0), "ready": true, "snapshot": format!("{name}-control-plane-baseline"), "snapshotReady": true},
            {"name": format!("{name}-worker-1"), "role": "worker", "target": "worker-1",
             "ip": ip(1), "ready": true, "snapshot": format!("{name}-worker-1-baseline"), "snapshotReady": true},
        ],
    })
}

/// Creates the pool and `n` Available clusters of it; returns the clusters' names.
async fn warm_pool(client: &Client, n: usize) -> Vec<String> {
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let pool_obj = pools
        .create(&PostParams::default(), &pool_spec(n))
        .await
        .expect("creating the pool");
    let hash = pool::template_hash(&pool_obj.spec.template);
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = (0..n).map(|i| format!("{POOL}-{i:04}")).collect();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let (clusters, pool_obj, hash) = (&clusters, &pool_obj, &hash);
            async move {
                clusters
                    .create(&PostParams::default(), &pool::new_cluster(pool_obj, name, hash))
                    .await?;
                let status = Patch::Merge(json!({"status": available_status(name, i)}));
                clusters
                    .patch_status(name, &PatchParams::default(), &status)
                    .await
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("creating the warm pool");
    names
}

/// Round trips of merge patches to the status of `names` (one object per request), `parallel`
/// requests at a time.
async fn status_patches(client: &Client, names: &[String], parallel: usize) -> Latencies {
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let samples = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let clusters = &clusters;
            async move {
                // A value the controllers ignore, different each time so every patch writes.
                let patch = Patch::Merge(json!({"status": {"lastResetDurationSeconds": i as f64 / 1e3}}));
                let started = Instant::now();
                clusters
                    .patch_status(name, &PatchParams::default(), &patch)
                    .await
                    .expect("patching a cluster's status");
                started.elapsed()
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    Latencies(samples)
}

fn cluster_assigned(s: &Session) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == condition_types::CLUSTER_ASSIGNED && c.status == "True")
    })
}

/// The operator's default controller settings (flags unset, `CKS_*` environment honoured),
/// reaching practice clusters as on the development control plane.
fn controller_config() -> ControllerConfig {
    let args = Args::parse_from(["cks-operator"]);
    ControllerConfig {
        practice_api: PracticeApiAccess::VmiIp,
        ssh_port: support::SSH_PORT,
        ..ControllerConfig::from(&args)
    }
}

/// One batch: a fresh server with `n` warm clusters, the status-patch floors, then `n`
/// Sessions created at once with the Session controller running.
async fn batch(n: usize, catalog: &Arc<CatalogStore>) {
    let mut server = DevClusterProcess::start(None);
    let client = server.client().await;
    support::bench_namespace(&client).await;
    let names = warm_pool(&client, n).await;

    let floor_names: Vec<String> = names.iter().cycle().take(FLOOR_SAMPLES).cloned().collect();
    let floor = status_patches(&client, &floor_names, 1).await;
    println!("{n} concurrent Sessions, {n} warm clusters:");
    println!("  {:<38} {}", "floor: 1 status patch at a time", floor.summary());
    if n > 1 {
        let parallel = status_patches(&client, &names, n).await;
        println!(
            "  {:<38} {}",
            format!("floor: {n} concurrent status patches"),
            parallel.summary()
        );
    }

    let mut ctx = Context::new(
        client.clone(),
        session::CONTROLLER,
        "bench",
        Arc::new(Metrics::default()),
        Arc::new(controller_config()),
    );
    ctx.scenarios = Some(catalog.clone());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let controller = tokio::spawn(session::run(Arc::new(ctx), Some(NS), async move {
        let _ = stop_rx.await;
    }));

    // Creation instants by Session, and the instant the watch first showed it assigned.
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (assigned_tx, mut assigned_rx) = watch::channel(HashMap::<String, (Instant, String)>::new());
    let (listed_tx, listed_rx) = oneshot::channel::<()>();
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    let watching = tokio::spawn({
        let sessions = sessions.clone();
        async move {
            let mut listed_tx = Some(listed_tx);
            let mut events = std::pin::pin!(watcher(sessions, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let seen = Instant::now();
                let session = match event {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                if cluster_assigned(&session) {
                    let cluster = session
                        .status
                        .as_ref()
                        .and_then(|s| s.cluster.clone())
                        .unwrap_or_default();
                    assigned_tx.send_if_modified(|assigned| {
                        if assigned.contains_key(&session.name_any()) {
                            return false;
                        }
                        assigned.insert(session.name_any(), (seen, cluster));
                        true
                    });
                }
            }
        }
    });
    listed_rx.await.expect("the Session watch lists");

    let session_names: Vec<String> = (0..n).map(|i| format!("s-{i:04}")).collect();
    futures::future::try_join_all(session_names.iter().enumerate().map(|(i, name)| {
        let (sessions, created) = (&sessions, &created);
        let session: Session = serde_json::from_value(json!({
            "apiVersion": "cks.io/v1alpha1", "kind": "Session",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"scenario": SCENARIO, "user": format!("user-{i:04}"), "pool": POOL, "durationMinutes": 60},
        }))
        .expect("a Session");
        async move {
            created
                .lock()
                .expect("created map")
                .insert(name.clone(), Instant::now());
            sessions.create(&PostParams::default(), &session).await
        }
    }))
    .await
    .expect("creating the Sessions");

    let all_assigned = tokio::time::timeout(ASSIGN_LIMIT, assigned_rx.wait_for(|a| a.len() >= n))
        .await
        .is_ok_and(|r| r.is_ok());
    if !all_assigned {
        let assigned = assigned_rx.borrow().len();
        let mut phases: HashMap<String, usize> = HashMap::new();
        for s in sessions
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let st = s.status.unwrap_or_default();
            let key = format!("{:?} {}", st.phase, st.reason.unwrap_or_default());
            *phases.entry(key).or_default() += 1;
        }
        server.assert_running();
        panic!(
            "only {assigned} of {n} Sessions were ClusterAssigned within {ASSIGN_LIMIT:?} \
             (is the Session controller in place?); phases: {phases:?}"
        );
    }
    let assigned = assigned_rx.borrow().clone();
    let created = created.lock().expect("created map").clone();
    let latencies = Latencies(
        assigned
            .iter()
            .map(|(name, (seen, _))| seen.saturating_duration_since(created[name]))
            .collect(),
    );
    let mut clusters: Vec<&String> = assigned.values().map(|(_, cluster)| cluster).collect();
    clusters.sort();
    clusters.dedup();
    assert_eq!(clusters.len(), n, "{n} Sessions must hold {n} different clusters");

    println!(
        "  {:<38} {}",
        "Session created -> ClusterAssigned",
        latencies.summary()
    );

    watching.abort();
    let _ = stop_tx.send(());
    let _ = controller.await;
    server.assert_running();
}

#[tokio::main]
async fn main() {
    if !support::under_cargo_bench() {
        support::self_check();
        return;
    }
    let batches = support::sizes("CKS_BENCH_SESSIONS", &[1, 50, 200]);
    let catalog_dir = Scratch::new("catalog");
    write_catalog(catalog_dir.path());
    let catalog =
        CatalogStore::open(catalog_dir.path(), LoadOptions::default()).expect("the bench catalog loads");
    assert!(
        catalog.catalog().get(SCENARIO).is_some(),
        "the bench scenario is in the catalog: {:?} {:?}",
        catalog.catalog().catalog_errors(),
        catalog.catalog().scenario_errors()
    );
    println!("cks-operator session allocation benchmark");
    println!(
        "  control plane: {} (no simulator)",
        support::describe_bin(&support::devcluster_bin())
    );
    println!("  Session controller in this process, operator default settings");
    for n in batches {
        batch(n, &catalog).await;
    }
}
