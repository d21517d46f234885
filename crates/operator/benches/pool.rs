//! Pool benchmark: the `cks-operator` binary against the `cks-devcluster` binary with the
//! KubeVirt simulator, each its own process, so each one's memory is its own. Prints the time
//! from pool creation to N Available clusters, one reset against many concurrent resets, and
//! the peak RSS of the operator and of the control plane with 200 PracticeClusters.
//!
//! `CKS_BENCH_PROFILE` (default `realistic`) picks the simulator timings for the pool and
//! reset figures; the 200-cluster memory run always uses `fast`. Sizes:
//! `CKS_BENCH_POOL_SIZES` (default `1,10,50`), `CKS_BENCH_RESETS` (default `20`; `0` skips),
//! `CKS_BENCH_RSS_CLUSTERS` (default `200`; `0` skips). `cks-devcluster` must be built first
//! (`cargo build --release -p cks-devcluster`), see `support::devcluster_bin`.

mod support;

use std::time::{Duration, Instant};

use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::{ClusterPool, PracticeCluster};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{DevClusterProcess, NS, OperatorProcess};

/// Generous bound on any one wait; a stuck run fails instead of hanging `make bench`.
const LIMIT: Duration = Duration::from_secs(3600);

/// A control plane with the simulator and an operator against it.
struct Stack {
    server: DevClusterProcess,
    operator: OperatorProcess,
    client: Client,
}

impl Stack {
    async fn start(profile: &str) -> Self {
        let server = DevClusterProcess::start(Some(profile));
        let client = server.client().await;
        support::bench_namespace(&client).await;
        let operator = OperatorProcess::start(&server);
        Self {
            server,
            operator,
            client,
        }
    }

    fn clusters(&self) -> Api<PracticeCluster> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn assert_running(&mut self) {
        self.server.assert_running();
        self.operator.assert_running();
    }

    /// `peak RSS operator … MiB, control plane … MiB; operator warnings …`.
    fn memory(&self) -> String {
        let (op, _) = support::memory_mib(self.operator.pid());
        let (cp, _) = support::memory_mib(self.server.pid());
        format!(
            "peak RSS operator {op:>5.1} MiB, control plane {cp:>6.1} MiB; operator warnings {}",
            self.operator.problems_logged()
        )
    }
}

fn phase(pc: &PracticeCluster) -> Option<PracticeClusterPhase> {
    pc.status.as_ref().map(|s| s.phase)
}

fn sessions_served(pc: &PracticeCluster) -> i32 {
    pc.status.as_ref().map_or(0, |s| s.sessions_served)
}

/// Time from pool creation until the first, half and all of its clusters were Available.
struct Provisioned {
    first: Duration,
    half: Duration,
    all: Duration,
}

impl Provisioned {
    fn summary(&self) -> String {
        format!(
            "{:>7.1} s (first {:.1} s, half {:.1} s)",
            self.all.as_secs_f64(),
            self.first.as_secs_f64(),
            self.half.as_secs_f64()
        )
    }
}

/// Creates a pool of `n` and times it from just before the create call until the watch
/// shows the first, half and all `n` clusters Available.
async fn pool_to_available(stack: &mut Stack, name: &str, n: usize) -> Provisioned {
    stack.assert_running();
    let (mut first, mut half) = (None, None);
    let started = Instant::now();
    Api::<ClusterPool>::namespaced(stack.client.clone(), NS)
        .create(&PostParams::default(), &support::pool_spec(name, n, n.min(100)))
        .await
        .expect("creating the pool");
    support::wait_for(
        stack.clusters(),
        &format!("cks.io/pool={name}"),
        &format!("{n} Available clusters in pool {name}"),
        LIMIT,
        || stack.assert_running(),
        |clusters| {
            let available = clusters
                .values()
                .filter(|pc| phase(pc) == Some(PracticeClusterPhase::Available))
                .count();
            if available >= 1 {
                first.get_or_insert_with(|| started.elapsed());
            }
            if available >= n.div_ceil(2) {
                half.get_or_insert_with(|| started.elapsed());
            }
            clusters.len() == n && available == n
        },
    )
    .await;
    let all = started.elapsed();
    stack.assert_running();
    Provisioned {
        first: first.unwrap_or(all),
        half: half.unwrap_or(all),
        all,
    }
}

/// Claims `names` (as a Session would), waits until they are Assigned, then releases them
/// all at once and returns the time from the first release until every one is Available
/// again with one more session served.
async fn reset(stack: &mut Stack, pool: &str, names: &[String]) -> Duration {
    let api = stack.clusters();
    let selector = format!("cks.io/pool={pool}");
    let before: Vec<i32> = {
        let mut served = Vec::new();
        for name in names {
            served.push(sessions_served(&api.get(name).await.expect("reading a cluster")));
        }
        served
    };
    for name in names {
        let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": format!("s-{name}")}}}));
        api.patch(name, &PatchParams::default(), &claim)
            .await
            .expect("claiming a cluster");
    }
    support::wait_for(
        api.clone(),
        &selector,
        "claimed clusters Assigned",
        LIMIT,
        || stack.assert_running(),
        |all| {
            names
                .iter()
                .all(|n| all.get(n).and_then(phase) == Some(PracticeClusterPhase::Assigned))
        },
    )
    .await;
    let started = Instant::now();
    let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
    let params = PatchParams::default();
    futures::future::try_join_all(names.iter().map(|name| api.patch(name, &params, &release)))
        .await
        .expect("releasing the clusters");
    support::wait_for(
        api,
        &selector,
        "released clusters Available again",
        LIMIT,
        || stack.assert_running(),
        |all| {
            names.iter().zip(&before).all(|(n, served)| {
                all.get(n).is_some_and(|pc| {
                    phase(pc) == Some(PracticeClusterPhase::Available) && sessions_served(pc) > *served
                })
            })
        },
    )
    .await;
    let took = started.elapsed();
    stack.assert_running();
    took
}

#[tokio::main]
async fn main() {
    if !support::under_cargo_bench() {
        support::self_check();
        return;
    }
    let profile = std::env::var("CKS_BENCH_PROFILE").unwrap_or_else(|_| "realistic".to_owned());
    assert!(
        matches!(profile.as_str(), "fast" | "realistic"),
        "CKS_BENCH_PROFILE is fast or realistic, not {profile:?}"
    );
    let pool_sizes = support::sizes("CKS_BENCH_POOL_SIZES", &[1, 10, 50]);
    let resets = support::sizes("CKS_BENCH_RESETS", &[20])
        .first()
        .copied()
        .unwrap_or(0);
    let rss_clusters = support::sizes("CKS_BENCH_RSS_CLUSTERS", &[200])
        .first()
        .copied()
        .unwrap_or(0);
    println!("cks-operator pool benchmark (operator and control plane as separate processes)");
    println!(
        "  control plane: {}",
        support::describe_bin(&support::devcluster_bin())
    );
    println!(
        "  operator:      {}",
        support::describe_bin(&support::operator_bin())
    );
    println!(
        "  operator poll {} s, retry base {} s (CKS_POLL_SECONDS / CKS_RETRY_BASE_SECONDS, else defaults)",
        std::env::var("CKS_POLL_SECONDS").unwrap_or_else(|_| "5".into()),
        std::env::var("CKS_RETRY_BASE_SECONDS").unwrap_or_else(|_| "5".into()),
    );
    if !pool_sizes.is_empty() || resets > 0 {
        println!("simulator profile {profile}:");
    }
    for n in pool_sizes {
        let mut stack = Stack::start(&profile).await;
        let took = pool_to_available(&mut stack, &format!("p{n}"), n).await;
        println!(
            "  pool of {n:>3}: created -> all Available {}   ({})",
            took.summary(),
            stack.memory()
        );
    }
    if resets > 0 {
        let mut stack = Stack::start(&profile).await;
        pool_to_available(&mut stack, "r", resets).await;
        let names: Vec<String> = stack
            .clusters()
            .list(&kube::api::ListParams::default().labels("cks.io/pool=r"))
            .await
            .expect("listing the pool's clusters")
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        let one = reset(&mut stack, "r", &names[..1]).await;
        println!("  1 reset:                        {:>8.1} s", one.as_secs_f64());
        let all = reset(&mut stack, "r", &names).await;
        println!(
            "  {resets:>3} concurrent resets:           {:>8.1} s   ({})",
            all.as_secs_f64(),
            stack.memory()
        );
    }
    if rss_clusters > 0 {
        let mut stack = Stack::start("fast").await;
        let took = pool_to_available(&mut stack, "big", rss_clusters).await;
        let (op_peak, op_now) = support::memory_mib(stack.operator.pid());
        let (cp_peak, cp_now) = support::memory_mib(stack.server.pid());
        println!("simulator profile fast, {rss_clusters} PracticeClusters:");
        println!("  pool created -> all Available {}", took.summary());
        println!("  operator warnings logged {}", stack.operator.problems_logged());
        for problem in stack.operator.top_problems(3) {
            println!("    {problem}");
        }
        println!("  operator      peak RSS {op_peak:>7.1} MiB (now {op_now:.1} MiB)");
        println!("  control plane peak RSS {cp_peak:>7.1} MiB (now {cp_now:.1} MiB)");
    }
}
