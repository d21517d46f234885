//! API benchmark of the development cluster through kube-rs over loopback HTTPS: create, get,
//! list (10k objects) and watch-event latency (p50/p99) and throughput, and the memory that
//! 10k stored ConfigMaps take (VmRSS/VmHWM delta of this process). Prints figures; asserts
//! nothing. Run with `cargo bench -p cks-devcluster --bench api`.

use std::time::{Duration, Instant};

use cks_devcluster::{DevCluster, Options};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const OBJECTS: usize = 10_000;
const SAMPLES: usize = 2_000;
const LISTS: usize = 20;
const WATCH_EVENTS: usize = 1_000;
const CONCURRENCY: usize = 16;
const WATCHERS: usize = 300;
const WATCH_BURST: usize = 5_000;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench", "shard": format!("{}", name.bytes().map(u32::from).sum::<u32>() % 4)}},
        "data": {"key": "value", "config.yaml": "replicas: 3\nimage: example/app:1.2.3\n"}
    }))
    .expect("valid ConfigMap")
}

/// VmRSS and VmHWM of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
    total: Duration,
    ops: usize,
}

impl Stats {
    fn print(mut self) {
        self.samples.sort();
        let pct = |p: f64| {
            let i = ((self.samples.len() as f64 * p).ceil() as usize).clamp(1, self.samples.len()) - 1;
            self.samples[i]
        };
        println!(
            "{:<34} p50 {:>9.3} ms   p99 {:>9.3} ms   {:>10.0} ops/s",
            self.name,
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            self.ops as f64 / self.total.as_secs_f64()
        );
    }
}

async fn timed<F, Fut>(name: &'static str, n: usize, mut f: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed());
    }
    Stats {
        name,
        samples,
        total: start.elapsed(),
        ops: n,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a full benchmark in a debug test run would only cost CI time.
    if !std::env::args().any(|a| a == "--bench") {
        println!("api benchmark: skipped outside `cargo bench`");
        return Ok(());
    }
    let cluster = DevCluster::start(Options::default()).await?;
    let client = cluster.client().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    // Warm up connections and code paths.
    api.create(&pp, &cm("warmup")).await?;
    api.get("warmup").await?;

    println!("cks-devcluster API benchmark (kube-rs over loopback HTTPS)");
    let (rss0, hwm0) = memory_kib();
    let create = timed("create (sequential)", SAMPLES, |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &cm(&format!("seq-{i:05}")))
                .await
                .expect("create");
        }
    })
    .await;
    create.print();

    // Concurrent creates up to OBJECTS stored objects.
    let remaining = OBJECTS - SAMPLES;
    let start = Instant::now();
    let per_task = remaining / CONCURRENCY;
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let s = Instant::now();
                api.create(&PostParams::default(), &cm(&format!("par-{t:02}-{i:05}")))
                    .await
                    .expect("create");
                samples.push(s.elapsed());
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await?);
    }
    Stats {
        name: "create (16 concurrent clients)",
        ops: samples.len(),
        samples,
        total: start.elapsed(),
    }
    .print();
    let stored = cluster.object_count();
    let (rss1, hwm1) = memory_kib();

    timed("get", SAMPLES, |i| {
        let api = api.clone();
        async move {
            api.get(&format!("seq-{:05}", i % SAMPLES)).await.expect("get");
        }
    })
    .await
    .print();

    let mut list_stats = timed("list (10k objects)", LISTS, |_| {
        let api = api.clone();
        async move {
            let l = api.list(&ListParams::default()).await.expect("list");
            assert!(l.items.len() >= OBJECTS - CONCURRENCY);
        }
    })
    .await;
    list_stats.ops = LISTS * OBJECTS;
    list_stats.name = "list (10k objects; objects/s)";
    list_stats.print();
    timed("list with label selector (1/4)", LISTS, |_| {
        let api = api.clone();
        async move {
            api.list(&ListParams::default().labels("shard=1"))
                .await
                .expect("list");
        }
    })
    .await
    .print();

    // Watch-event latency: time from issuing a write to receiving its event on an open watch.
    let rv = api
        .get("warmup")
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = api
        .watch(&WatchParams::default().fields("metadata.name=warmup"), &rv)
        .await?
        .boxed();
    let mut samples = Vec::with_capacity(WATCH_EVENTS);
    let begin = Instant::now();
    for i in 0..WATCH_EVENTS {
        let t = Instant::now();
        let patch = Patch::Merge(json!({"data": {"n": i.to_string()}}));
        api.patch("warmup", &PatchParams::default(), &patch).await?;
        loop {
            match stream.next().await.expect("watch open")? {
                WatchEvent::Modified(o)
                    if o.data.as_ref().and_then(|d| d.get("n")) == Some(&i.to_string()) =>
                {
                    break;
                }
                _ => continue,
            }
        }
        samples.push(t.elapsed());
    }
    let watch = Stats {
        name: "watch event (write → event)",
        samples,
        total: begin.elapsed(),
        ops: WATCH_EVENTS,
    };
    watch.print();

    println!(
        "memory: {stored} stored objects; VmRSS +{} KiB ({} → {} KiB), VmHWM +{} KiB; ≈ {:.1} MiB per 10k objects",
        rss1.saturating_sub(rss0),
        rss0,
        rss1,
        hwm1.saturating_sub(hwm0),
        rss1.saturating_sub(rss0) as f64 / 1024.0 * (10_000.0 / (stored.max(1) as f64))
    );

    // Many idle watchers, then a burst of writes none of them reads: memory must stay flat
    // (shared broadcast buffer, bounded per-watcher queues; laggards are cut off with 410).
    let (rss_w0, _) = memory_kib();
    let watch_api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let mut idle = Vec::new();
    for _ in 0..WATCHERS {
        idle.push(watch_api.watch(&WatchParams::default(), "0").await?.boxed());
    }
    let (rss_w1, _) = memory_kib();
    let burst = Instant::now();
    for i in 0..WATCH_BURST {
        let patch = Patch::Merge(json!({"data": {"burst": i.to_string()}}));
        api.patch("warmup", &PatchParams::default(), &patch).await?;
    }
    let burst_time = burst.elapsed();
    let (rss_w2, _) = memory_kib();
    println!(
        "watchers: {WATCHERS} open watches +{} KiB (≈ {:.1} KiB each); {WATCH_BURST} writes while they idle: \
         +{} KiB, {:.0} writes/s",
        rss_w1.saturating_sub(rss_w0),
        rss_w1.saturating_sub(rss_w0) as f64 / WATCHERS as f64,
        rss_w2.saturating_sub(rss_w1),
        WATCH_BURST as f64 / burst_time.as_secs_f64()
    );
    drop(idle);
    cluster.shutdown().await;
    Ok(())
}
