//! Session allocation benchmark: bursts of N Sessions (default 1, 50, 200 and 1 000) against
//! a warm pool, each burst on a fresh `cks-devcluster` process without the KubeVirt simulator
//! and a fresh `cks-operator` process (both the binaries, so the operator's memory is its
//! own). Per burst it prints:
//! - the floor: round trips of status patches on the same server, 1 at a time and N at once
//!   (p50/p99);
//! - latency from just before each Session's create call to the watch event that shows it
//!   `ClusterAssigned` (p50/p99/max), and its p99 over the floor's p99 (target ≤ 3);
//! - allocations per second: N / (last ClusterAssigned seen − first create sent) (target
//!   ≥ 2 000 at 1 000), next to Session creates acknowledged per second: N / (last create
//!   answered − first create sent), while the operator is already allocating — no allocator
//!   can assign Sessions faster than the server takes them in;
//! - double allocations seen while it happened, on a watch of the clusters' claims and the
//!   Sessions' statuses: a claim moved between Sessions without a release, a Session named by
//!   two claims at once, two Sessions naming one cluster, a Session changing cluster (target
//!   0; the bench exits non-zero otherwise);
//! - the operator's resident memory (now and peak) with N + 1 Sessions and clusters in
//!   its caches (target ≤ 64 MiB at 1 000).
//!
//! The warm pool is N PracticeClusters created the way the pool controller creates them
//! and patched to Available (no VMs: allocation never touches them); the pool asks for exactly
//! that many, so the pool controller has nothing to do; the warm-up Session has a pool of
//! one such cluster of its own (a pool holds at most 1 000). The operator runs every controller
//! with its default settings and no leader election; without KubeVirt types on the server,
//! its cluster controller cannot observe VMs and retries with backoff (its warnings are
//! counted below the figures). One warm-up Session, assigned before the burst, shows that the
//! operator's caches are synced. The scenario has one task and no setup steps; every Session
//! has its own user. `CKS_BENCH_SESSIONS` picks the burst sizes.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cks_api::names::condition_types;
use cks_api::{ClusterPool, PracticeCluster, Session};
use cks_operator::pool;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{DevClusterProcess, Latencies, NS, OperatorProcess, POOL, SCENARIO, Scratch, pool_spec};
use tokio::sync::{oneshot, watch};

/// The pool of the warm-up Session.
const WARMUP: &str = "warmup";
/// Sequential status patches measured for the floor.
const FLOOR_SAMPLES: usize = 200;
/// Bound on a burst's wait for ClusterAssigned; a missing or broken controller fails the
/// bench with the Sessions' phases instead of hanging.
const ASSIGN_LIMIT: Duration = Duration::from_secs(600);
/// Concurrent requests while building the warm pool.
const SETUP_CONCURRENCY: usize = 16;
/// Targets of issue #15, printed next to the figures.
const TARGET_RATIO: f64 = 3.0;
const TARGET_RATE_AT_1000: f64 = 2000.0;
const TARGET_RSS_MIB_AT_1000: f64 = 64.0;

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

/// Creates the pool `pool` and `n` Available clusters of it (IPs told apart from `first` on);
/// returns the clusters' names.
async fn warm_pool(client: &Client, pool: &str, n: usize, first: usize) -> Vec<String> {
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let pool_obj = pools
        .create(&PostParams::default(), &pool_spec(pool, n, n.min(100)))
        .await
        .expect("creating the pool");
    let hash = pool::template_hash(&pool_obj.spec.template);
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = (0..n).map(|i| format!("{pool}-{i:04}")).collect();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| (first + i, name))
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

fn cluster_assigned(s: &Session) -> Option<String> {
    let st = s.status.as_ref()?;
    st.conditions
        .iter()
        .any(|c| c.type_ == condition_types::CLUSTER_ASSIGNED && c.status == "True")
        .then(|| st.cluster.clone().unwrap_or_default())
}

/// What the watches saw: when each Session was first shown assigned and to which cluster,
/// and every double allocation.
#[derive(Debug, Default)]
struct Record {
    assigned: HashMap<String, (Instant, String)>,
    holders: HashMap<String, String>,
    doubles: Vec<String>,
}

impl Record {
    fn session(&mut self, s: &Session, seen: Instant) -> bool {
        let Some(cluster) = cluster_assigned(s) else {
            return false;
        };
        match self.assigned.get(&s.name_any()) {
            None => {
                self.assigned.insert(s.name_any(), (seen, cluster));
                true
            }
            Some((_, first)) if *first != cluster => {
                self.doubles.push(format!(
                    "Session {} moved from {first} to {cluster}",
                    s.name_any()
                ));
                false
            }
            Some(_) => false,
        }
    }

    fn cluster(&mut self, pc: &PracticeCluster) {
        let name = pc.name_any();
        let Some(uid) = pc.spec.claim_ref.as_ref().and_then(|c| c.uid.clone()) else {
            self.holders.remove(&name);
            return;
        };
        match self.holders.get(&name) {
            Some(old) if *old != uid => self.doubles.push(format!(
                "{name}'s claim moved from {old} to {uid} without a release"
            )),
            _ => {}
        }
        if let Some((other, _)) = self.holders.iter().find(|(c, u)| **u == uid && **c != name) {
            self.doubles
                .push(format!("Session {uid} holds {other} and {name} at once"));
        }
        self.holders.insert(name, uid);
    }
}

/// Watches Sessions and clusters into `record`, bumping `tx` on each new assignment; returns
/// once both watches have listed.
async fn watch_allocation(
    client: &Client,
    record: Arc<Mutex<Record>>,
    tx: watch::Sender<usize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (s_listed, s_ready) = oneshot::channel::<()>();
    let (c_listed, c_ready) = oneshot::channel::<()>();
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let session_task = tokio::spawn({
        let record = record.clone();
        async move {
            let mut listed = Some(s_listed);
            let mut events = std::pin::pin!(watcher(sessions, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let seen = Instant::now();
                match event {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                        let mut record = record.lock().expect("record");
                        if record.session(&s, seen) {
                            tx.send_replace(record.assigned.len());
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(l) = listed.take() {
                            let _ = l.send(());
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    let cluster_task = tokio::spawn(async move {
        let mut listed = Some(c_listed);
        let mut events = std::pin::pin!(watcher(clusters, watcher::Config::default()));
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(pc) | watcher::Event::InitApply(pc)) => {
                    record.lock().expect("record").cluster(&pc);
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(l) = listed.take() {
                        let _ = l.send(());
                    }
                }
                _ => {}
            }
        }
    });
    s_ready.await.expect("the Session watch lists");
    c_ready.await.expect("the cluster watch lists");
    vec![session_task, cluster_task]
}

fn new_session(name: &str, user: &str, pool: &str) -> Session {
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "Session",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"scenario": SCENARIO, "user": user, "pool": pool, "durationMinutes": 60},
    }))
    .expect("a Session")
}

/// Waits until `count` reaches `n`, or fails after [`ASSIGN_LIMIT`] with the Sessions' phases.
async fn wait_assigned(
    rx: &mut watch::Receiver<usize>,
    n: usize,
    sessions: &Api<Session>,
    server: &mut DevClusterProcess,
    operator: &mut OperatorProcess,
) {
    if tokio::time::timeout(ASSIGN_LIMIT, rx.wait_for(|a| *a >= n))
        .await
        .is_ok_and(|r| r.is_ok())
    {
        return;
    }
    let assigned = *rx.borrow();
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
    operator.assert_running();
    panic!(
        "only {assigned} of {n} Sessions were ClusterAssigned within {ASSIGN_LIMIT:?}; phases: {phases:?}; \
         operator problems: {:?}",
        operator.top_problems(3)
    );
}

/// One burst: a fresh server with `n` warm clusters (and one more for the warm-up Session in a
/// pool of its own), the status-patch floors, the
/// operator, a warm-up Session, then `n` Sessions created at once. Returns the double
/// allocations seen.
async fn burst(n: usize, catalog: &std::path::Path) -> usize {
    let mut server = DevClusterProcess::start(None);
    let client = server.client().await;
    support::bench_namespace(&client).await;
    // The pool's maximum is 1 000: the warm-up Session has a pool of its own.
    let names = warm_pool(&client, POOL, n, 0).await;
    warm_pool(&client, WARMUP, 1, n).await;

    let floor_names: Vec<String> = names.iter().cycle().take(FLOOR_SAMPLES).cloned().collect();
    let floor_1 = status_patches(&client, &floor_names, 1).await;
    let floor = if n > 1 {
        status_patches(&client, &names, n).await
    } else {
        floor_1.clone()
    };
    println!("burst of {n} Sessions, {n} warm clusters (and one for a warm-up Session):");
    println!(
        "  {:<40} {}",
        "floor: 1 status patch at a time",
        floor_1.summary()
    );
    if n > 1 {
        println!(
            "  {:<40} {}",
            format!("floor: {n} concurrent status patches"),
            floor.summary()
        );
    }

    let record: Arc<Mutex<Record>> = Arc::default();
    let (assigned_tx, mut assigned_rx) = watch::channel(0usize);
    let watching = watch_allocation(&client, record.clone(), assigned_tx).await;
    let mut operator = OperatorProcess::start_with_catalog(&server, catalog);
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    sessions
        .create(&PostParams::default(), &new_session("warmup", "warmup", WARMUP))
        .await
        .expect("creating the warm-up Session");
    wait_assigned(&mut assigned_rx, 1, &sessions, &mut server, &mut operator).await;

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let session_names: Vec<String> = (0..n).map(|i| format!("s-{i:04}")).collect();
    futures::future::try_join_all(session_names.iter().enumerate().map(|(i, name)| {
        let (sessions, created) = (&sessions, &created);
        let session = new_session(name, &format!("user-{i:04}"), POOL);
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
    let creates_done = Instant::now();
    wait_assigned(&mut assigned_rx, n + 1, &sessions, &mut server, &mut operator).await;
    let (peak_mib, rss_mib) = support::memory_mib(operator.pid());

    let record = record.lock().expect("record");
    let created = created.lock().expect("created map").clone();
    let latencies = Latencies(
        session_names
            .iter()
            .map(|name| record.assigned[name].0.saturating_duration_since(created[name]))
            .collect(),
    );
    let first_created = created.values().min().copied().expect("a Session");
    let last_assigned = session_names
        .iter()
        .map(|name| record.assigned[name].0)
        .max()
        .expect("a Session");
    let rate = n as f64
        / last_assigned
            .duration_since(first_created)
            .as_secs_f64()
            .max(1e-9);
    // The server's own bound on the rate: no allocator assigns Sessions faster than they
    // can be created.
    let create_rate = n as f64 / creates_done.duration_since(first_created).as_secs_f64().max(1e-9);
    let mut clusters: Vec<&String> = record.assigned.values().map(|(_, c)| c).collect();
    clusters.sort();
    clusters.dedup();
    let shared = n + 1 - clusters.len();
    let doubles = record.doubles.len() + shared;
    let ratio = latencies.quantile(0.99).as_secs_f64() / floor.quantile(0.99).as_secs_f64().max(1e-9);

    println!(
        "  {:<40} {}",
        "Session created -> ClusterAssigned",
        latencies.summary()
    );
    println!(
        "  {:<40} {ratio:>8.2}   (target <= {TARGET_RATIO})",
        "p99 / floor p99"
    );
    let rate_target = if n >= 1000 {
        format!("   (target >= {TARGET_RATE_AT_1000} at 1000)")
    } else {
        String::new()
    };
    println!("  {:<40} {rate:>8.0}{rate_target}", "allocations/s");
    println!(
        "  {:<40} {create_rate:>8.0}   (the server's bound on allocations/s)",
        "Session creates acknowledged/s"
    );
    println!("  {:<40} {doubles:>8}   (target 0)", "double allocations");
    for d in record.doubles.iter().take(5) {
        println!("    {d}");
    }
    let rss_target = if n >= 1000 {
        format!("   (target <= {TARGET_RSS_MIB_AT_1000} MiB at 1000)")
    } else {
        String::new()
    };
    println!(
        "  {:<40} {rss_mib:>8.1} MiB now, {peak_mib:.1} MiB peak{rss_target}",
        format!("operator RSS, {} Sessions and clusters cached", n + 1)
    );
    println!(
        "  {:<40} {:>8}   {:?}",
        "operator warnings logged",
        operator.problems_logged(),
        operator.top_problems(2)
    );

    for task in watching {
        task.abort();
    }
    operator.assert_running();
    server.assert_running();
    doubles
}

#[tokio::main]
async fn main() {
    if !support::under_cargo_bench() {
        support::self_check();
        return;
    }
    let bursts = support::sizes("CKS_BENCH_SESSIONS", &[1, 50, 200, 1000]);
    let catalog = Scratch::new("catalog");
    support::write_catalog(catalog.path());
    println!("cks-operator session allocation benchmark");
    println!(
        "  control plane: {} (no simulator)",
        support::describe_bin(&support::devcluster_bin())
    );
    println!(
        "  operator: {} (every controller, default settings, no leader election, MALLOC_ARENA_MAX={} as in the image)",
        support::describe_bin(&support::operator_bin()),
        support::malloc_arena_max()
    );
    let mut doubles = 0;
    for n in bursts {
        doubles += burst(n, catalog.path()).await;
    }
    if doubles > 0 {
        eprintln!("{doubles} double allocations: a cluster was shared or a Session held two");
        std::process::exit(1);
    }
}
