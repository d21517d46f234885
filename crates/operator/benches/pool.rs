//! Pool benchmark on the KubeVirt simulator: time from pool creation to N Available
//! clusters (N = 1, 10, 50), one reset against 20 concurrent resets, and the peak RSS of the
//! process with 200 PracticeClusters. `CKS_BENCH_PROFILE=fast` (default `realistic`) runs the
//! same with millisecond timings. The simulator serves no practice-cluster API yet, so the
//! readiness check is the always-ready probe, and control-plane Services get their ClusterIP
//! from a stand-in allocator (the development control plane has none). The RSS includes the
//! in-process development control plane.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::{ClusterPool, PracticeCluster};
use cks_devcluster::kubevirt::{SimOptions, Timings};
use cks_devcluster::{DevCluster, Options};
use cks_operator::context::Context;
use cks_operator::{cluster, pool};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const NS: &str = "bench";

async fn start(timings: Timings) -> (DevCluster, Client) {
    let server = DevCluster::start(Options {
        kubevirt: Some(SimOptions {
            timings,
            golden_images: vec!["vm-templates/golden".into()],
            ..SimOptions::default()
        }),
        ..Options::default()
    })
    .await
    .expect("devcluster starts");
    let mut manifests = cks_devcluster::apply::read_manifests(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds"),
    )
    .unwrap();
    cks_devcluster::apply::order(&mut manifests);
    server.apply(&manifests).unwrap();
    let client = server.client().await.unwrap();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    let key: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ssh-key"},
        "stringData": {"ssh-publickey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa5c2Pf0b6y6k3c cks@lab"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &key)
        .await
        .unwrap();
    let c = client.clone();
    tokio::spawn(async move {
        let services: Api<Service> = Api::all(c.clone());
        let mut n: u32 = 10;
        loop {
            if let Ok(list) = services
                .list(&ListParams::default().labels("cks.io/role=control-plane"))
                .await
            {
                for svc in list
                    .items
                    .iter()
                    .filter(|s| s.spec.as_ref().and_then(|s| s.cluster_ip.as_ref()).is_none())
                {
                    let api: Api<Service> = Api::namespaced(c.clone(), &svc.namespace().unwrap_or_default());
                    let ip = format!("10.96.{}.{}", n / 250, n % 250 + 1);
                    n += 1;
                    let patch = Patch::Merge(json!({"spec": {"clusterIP": ip}}));
                    let _ = api.patch(&svc.name_any(), &PatchParams::default(), &patch).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut ctx = Context::test(client.clone());
    let mut config = cks_operator::config::ControllerConfig::test();
    config.poll = Duration::from_millis(500);
    config.retry_base = Duration::from_secs(1);
    ctx.config = Arc::new(config);
    let ctx = Arc::new(ctx);
    tokio::spawn(pool::run(ctx.clone(), Some(NS), std::future::pending()));
    tokio::spawn(cluster::run(ctx, Some(NS), std::future::pending()));
    (server, client)
}

fn pool_spec(name: &str, n: i32) -> ClusterPool {
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ClusterPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "minAvailable": n, "maxClusters": n.max(1), "maxConcurrentProvisioning": n.clamp(1, 100),
            "template": {
                "kubernetesVersion": "1.33.0",
                "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
                "workers": {"count": 1, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
                "goldenImage": {"namespace": "vm-templates", "name": "golden"},
                "sshKeySecretRef": {"name": "ssh-key"},
            },
        },
    }))
    .unwrap()
}

async fn clusters(client: &Client, pool: &str) -> Vec<PracticeCluster> {
    Api::<PracticeCluster>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("cks.io/pool={pool}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn available(pc: &PracticeCluster) -> bool {
    pc.status
        .as_ref()
        .is_some_and(|s| s.phase == PracticeClusterPhase::Available)
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pool_to_available(client: &Client, name: &str, n: i32) -> Duration {
    let started = Instant::now();
    Api::<ClusterPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pool_spec(name, n))
        .await
        .unwrap();
    wait_until(&format!("{n} Available"), Duration::from_secs(1800), async || {
        let list = clusters(client, name).await;
        list.len() == n as usize && list.iter().all(available)
    })
    .await;
    started.elapsed()
}

async fn reset(client: &Client, names: &[String]) -> Duration {
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    for name in names {
        let claim = Patch::Merge(json!({"spec": {"claimRef": {"name": format!("s-{name}")}}}));
        api.patch(name, &PatchParams::default(), &claim).await.unwrap();
    }
    wait_until("Assigned", Duration::from_secs(600), async || {
        let mut all = true;
        for name in names {
            let pc = api.get(name).await.unwrap();
            all &= pc
                .status
                .is_some_and(|s| s.phase == PracticeClusterPhase::Assigned);
        }
        all
    })
    .await;
    let started = Instant::now();
    for name in names {
        let release = Patch::Merge(json!({"spec": {"claimRef": null}}));
        api.patch(name, &PatchParams::default(), &release).await.unwrap();
    }
    wait_until("resets", Duration::from_secs(1800), async || {
        let mut all = true;
        for name in names {
            let pc = api.get(name).await.unwrap();
            all &= pc
                .status
                .is_some_and(|s| s.phase == PracticeClusterPhase::Available && s.sessions_served >= 1);
        }
        all
    })
    .await;
    started.elapsed()
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let profile = std::env::var("CKS_BENCH_PROFILE").unwrap_or_else(|_| "realistic".to_owned());
    let timings = Timings::profile(&profile).expect("CKS_BENCH_PROFILE is fast or realistic");
    println!("cks-operator pool benchmark, simulator profile {profile}");
    for n in [1, 10, 50] {
        let (server, client) = start(timings.clone()).await;
        let took = pool_to_available(&client, &format!("p{n}"), n).await;
        println!(
            "pool of {n:>3}: created -> all Available in {:>8.1} s",
            took.as_secs_f64()
        );
        server.shutdown().await;
    }
    {
        let (server, client) = start(timings.clone()).await;
        pool_to_available(&client, "r", 20).await;
        let names: Vec<String> = clusters(&client, "r")
            .await
            .iter()
            .map(|c| c.name_any())
            .collect();
        let one = reset(&client, &names[..1]).await;
        println!("1 reset:                         {:>8.1} s", one.as_secs_f64());
        let twenty = reset(
            &client,
            &names[1..].iter().chain(&names[..1]).cloned().collect::<Vec<_>>(),
        )
        .await;
        println!("20 concurrent resets:            {:>8.1} s", twenty.as_secs_f64());
        server.shutdown().await;
    }
    {
        let (server, client) = start(Timings::fast()).await;
        pool_to_available(&client, "big", 200).await;
        println!(
            "peak RSS with 200 PracticeClusters (operator + in-process control plane): {} MiB",
            peak_rss_kib().unwrap_or(0) / 1024
        );
        server.shutdown().await;
    }
}
