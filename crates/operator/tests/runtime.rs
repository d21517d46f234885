//! The operator runtime against the development control plane: leader election between two
//! replicas (only the leader writes; a standby takes over when the leader dies) and the
//! metrics and health endpoints.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use cks_api::ClusterPool;
use cks_operator::http::{self, HttpState};
use cks_operator::lease::LeaseLock;
use cks_operator::metrics::Metrics;
use common::{NS, clusters, eventually, lease_holder, replica, run_replica, start};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Identities that published a `ScaledUp` event on the pool.
async fn scalers(client: &Client) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let mut who: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScaledUp"))
        .filter_map(|e| e.reporting_instance)
        .collect();
    who.sort();
    who.dedup();
    who
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_when_it_dies() {
    let (_server, client) = start().await;
    let a = replica(&client, "replica-a", None);
    eventually("replica-a to lead", || async {
        (lease_holder(&client).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = replica(&client, "replica-b", None);

    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("ha", 1, 4, 3))
        .await
        .unwrap();
    eventually("the leader to build the first cluster", || async {
        (clusters(&client, "ha").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(scalers(&client).await, ["replica-a"]);
    assert_eq!(lease_holder(&client).await.as_deref(), Some("replica-a"));

    // The leader dies without releasing the lease; the standby waits out the lease and leads.
    a.abort();
    let _ = a.await;
    eventually("replica-b to take over", || async {
        (lease_holder(&client).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let patch = Patch::Merge(json!({"spec": {"minAvailable": 2}}));
    pools.patch("ha", &PatchParams::default(), &patch).await.unwrap();
    eventually("the new leader to build the second cluster", || async {
        (clusters(&client, "ha").await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(scalers(&client).await, ["replica-a", "replica-b"]);
    b.abort();
}

#[tokio::test]
async fn a_stopped_leader_releases_the_lease() {
    let (_server, client) = start().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_replica(client.clone(), "solo".to_owned(), None, async move {
        let _ = rx.await;
    }));
    eventually("solo to lead", || async {
        (lease_holder(&client).await.as_deref() == Some("solo")).then_some(())
    })
    .await;
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(lease_holder(&client).await, None);
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_and_health_endpoints_answer() {
    let metrics = Metrics::default();
    metrics.reconcile_failed("clusterpool", "Conflict");
    let ready = Arc::new(AtomicBool::new(false));
    let state = HttpState {
        registry: Arc::new(metrics.registry()),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http::serve(listener, state, std::future::pending()));

    let body = get(addr, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(r#"cks_operator_reconcile_errors_total{controller="clusterpool",reason="Conflict"} 1"#),
        "{body}"
    );
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_object_that_does_not_deserialize_is_refused_with_a_warning_event() {
    use cks_operator::context::Context;
    use kube::core::DeserializeGuard;

    let (_server, client) = common::start().await;
    let guard: DeserializeGuard<cks_api::ClusterPool> = serde_json::from_value(serde_json::json!({
        "apiVersion": "cks.io/v1alpha1",
        "kind": "ClusterPool",
        "metadata": {"name": "broken", "namespace": common::NS, "uid": "0f3c6d2e-1111-4222-8333-944455556666"},
        "spec": {"maxClusters": "many"}
    }))
    .expect("a guard holds the failure instead of failing");
    let ctx = Context::test(client.clone());

    let err = ctx
        .accept(&guard, "ClusterPool")
        .await
        .expect_err("a malformed pool is refused");
    assert_eq!(err.category(), "InvalidObject");
    assert!(
        err.to_string().contains(&format!("{}/broken", common::NS)),
        "{err}"
    );

    common::warning_event(&client, "InvalidObject", "broken").await;
}

fn candidate(client: &Client, lease: &str, identity: &str) -> LeaseLock {
    LeaseLock::new(client.clone(), NS, lease, identity, Duration::from_secs(1))
}

#[tokio::test]
async fn a_standby_never_takes_a_live_lease_whose_holder_clock_is_behind() {
    let (_server, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let an_hour_ago = || MicroTime(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1));
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "skew"},
        "spec": {"holderIdentity": "behind", "leaseDurationSeconds": 2},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let standby = LeaseLock::new(client.clone(), NS, "skew", "standby", Duration::from_secs(2));

    // The holder keeps renewing, but its clock is an hour behind: every renewTime it writes
    // looks long expired to a wall-clock comparison. A lease duration and a half of renewals.
    let mut renewals = tokio::time::interval(Duration::from_millis(100));
    for round in 0..30 {
        renewals.tick().await;
        let mut lease = leases.get("skew").await.unwrap();
        lease.spec.as_mut().unwrap().renew_time = Some(an_hour_ago());
        leases
            .replace("skew", &PostParams::default(), &lease)
            .await
            .unwrap();
        assert!(
            !standby.try_acquire_or_renew().await.unwrap(),
            "the standby took a live lease (round {round})"
        );
        assert!(!standby.is_leading());
    }

    // The holder stops: once the standby has seen the lease unchanged for a duration, it leads.
    eventually("the standby to take the abandoned lease", || async {
        standby.try_acquire_or_renew().await.ok()?.then_some(())
    })
    .await;
    assert!(standby.is_leading());
    assert_eq!(
        leases
            .get("skew")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("standby")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_never_both_believe_they_lead() {
    let (_server, client) = start().await;
    let candidates = [
        Arc::new(candidate(&client, "duo", "a")),
        Arc::new(candidate(&client, "duo", "b")),
    ];
    // Each leads for a few renewals, then stalls (stops renewing, as a paused or partitioned
    // process would) for longer than the lease, and comes back as a candidate.
    let loops: Vec<_> = candidates
        .iter()
        .map(|lock| {
            let lock = lock.clone();
            tokio::spawn(async move {
                loop {
                    lock.acquire().await;
                    for _ in 0..3 {
                        tokio::time::sleep(lock.renew_interval()).await;
                        let _ = lock.try_acquire_or_renew().await;
                    }
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
            })
        })
        .collect();

    let both = Arc::new(AtomicBool::new(false));
    let terms = Arc::new(std::sync::Mutex::new([0usize; 2]));
    let checker = {
        let (candidates, both, terms) = (candidates.clone(), both.clone(), terms.clone());
        tokio::spawn(async move {
            let mut was = [false; 2];
            loop {
                // Read a, b, a, b: both leading at once shows as a leader read true on both
                // sides of the other's true read, which a preemption between two reads cannot
                // fake.
                let reads = [
                    candidates[0].is_leading(),
                    candidates[1].is_leading(),
                    candidates[0].is_leading(),
                    candidates[1].is_leading(),
                ];
                if reads.windows(3).any(|w| w.iter().all(|leading| *leading)) {
                    both.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                let now = [reads[2], reads[3]];
                for i in 0..2 {
                    if now[i] && !was[i] {
                        terms.lock().unwrap()[i] += 1;
                    }
                }
                was = now;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    eventually("each candidate to lead twice", || async {
        let terms = *terms.lock().unwrap();
        (terms[0] >= 2 && terms[1] >= 2).then_some(())
    })
    .await;
    checker.abort();
    for l in loops {
        l.abort();
    }
    assert!(
        !both.load(std::sync::atomic::Ordering::SeqCst),
        "both candidates believed they led at once"
    );
}

/// The value of the sample `name` in a Prometheus text exposition, if present.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn every_controller_reports_its_reconcile_durations_on_metrics() {
    use cks_operator::context::Context;
    use cks_operator::{cluster, pool, validation_run};

    let (server, client) = start().await;
    // The cluster controller watches KubeVirt's kinds.
    common::fake_kubevirt::install_crds(&server);
    let metrics = Arc::new(Metrics::default());
    let ctx = || {
        let mut ctx = Context::test(client.clone());
        ctx.metrics = metrics.clone();
        Arc::new(ctx)
    };
    tokio::spawn(pool::run(ctx(), Some(NS), std::future::pending()));
    tokio::spawn(cluster::run(ctx(), Some(NS), std::future::pending()));
    tokio::spawn(validation_run::run(ctx(), Some(NS), std::future::pending()));
    // A pool that makes a cluster, and a run whose Session does not exist (refused).
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("p", 1, 1, 1))
        .await
        .unwrap();
    common::vrun_fixtures::create_run(&client, "r", "gone", "").await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = HttpState {
        registry: Arc::new(metrics.registry()),
        ready: Arc::new(AtomicBool::new(true)),
    };
    tokio::spawn(http::serve(listener, state, std::future::pending()));

    for controller in [pool::CONTROLLER, cluster::CONTROLLER, validation_run::CONTROLLER] {
        let count = format!(r#"cks_operator_reconcile_duration_seconds_count{{controller="{controller}"}}"#);
        let body = eventually(
            &format!("{controller} reconcile durations on /metrics"),
            || async {
                let body = get(addr, "/metrics").await;
                sample(&body, &count).is_some_and(|n| n >= 1.0).then_some(body)
            },
        )
        .await;
        let total = format!(r#"cks_operator_reconciles_total{{controller="{controller}"}}"#);
        assert!(sample(&body, &total).is_some_and(|n| n >= 1.0), "{body}");
        let le = format!(
            r#"cks_operator_reconcile_duration_seconds_bucket{{le="300.0",controller="{controller}"}}"#
        );
        let in_buckets = sample(&body, &le);
        assert!(in_buckets.is_some_and(|n| n >= 1.0), "{le} in {body}");
    }
}
