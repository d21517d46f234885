//! The ClusterPool controller against the development control plane. No PracticeCluster
//! controller runs: a fake backend moves the clusters' phases the way it would, so these
//! tests exercise the pool arithmetic through real writes and watches.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::{ClusterPool, PracticeCluster};
use cks_operator::context::Context;
use cks_operator::pool;
use common::{NS, clusters, eventually, start, warning_event};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

fn phase(pc: &PracticeCluster) -> PracticeClusterPhase {
    pc.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

async fn set_phase(client: &Client, name: &str, phase: PracticeClusterPhase) {
    try_set_phase(client, name, phase).await.unwrap();
}

async fn try_set_phase(client: &Client, name: &str, phase: PracticeClusterPhase) -> Result<(), kube::Error> {
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let patch = json!({"status": {"phase": phase}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // The pool may delete a cluster while the fake backend moves it along.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs the pool controller until the returned sender is dropped or set.
fn run_pool_controller(client: &Client) -> watch::Sender<bool> {
    run_pool_controller_with(Arc::new(Context::test(client.clone())))
}

fn run_pool_controller_with(ctx: Arc<Context>) -> watch::Sender<bool> {
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(async move {
        pool::run(ctx, Some(NS), async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await;
    });
    tx
}

/// Fake backend: every new cluster starts Provisioning.
async fn start_new_clusters(client: &Client, pool: &str) {
    for pc in clusters(client, pool).await {
        if pc.status.is_none() {
            try_set_phase(client, &pc.name_any(), PracticeClusterPhase::Provisioning)
                .await
                .unwrap();
        }
    }
}

async fn finish_provisioning(client: &Client, pool: &str) {
    for pc in clusters(client, pool).await {
        if phase(&pc).is_provisioning() {
            try_set_phase(client, &pc.name_any(), PracticeClusterPhase::Available)
                .await
                .unwrap();
        }
    }
}

async fn wait_phases(client: &Client, pool: &str, want: &[(PracticeClusterPhase, usize)], total: usize) {
    eventually(&format!("pool {pool}: {want:?}, {total} in all"), || async {
        start_new_clusters(client, pool).await;
        let list = clusters(client, pool).await;
        let ok = list.len() == total
            && want
                .iter()
                .all(|(p, n)| list.iter().filter(|c| phase(c) == *p).count() == *n);
        ok.then_some(())
    })
    .await;
}

#[tokio::test]
async fn pool_of_three_becomes_three_available_building_at_most_two_at_once() {
    let (_server, client) = start().await;
    let _stop = run_pool_controller(&client);
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("intro", 3, 5, 2))
        .await
        .unwrap();

    // Two in flight fill the concurrency limit; the third waits.
    wait_phases(&client, "intro", &[(PracticeClusterPhase::Provisioning, 2)], 2).await;
    let list = clusters(&client, "intro").await;
    for pc in &list {
        assert!(pc.name_any().starts_with("intro-"));
        let owner = &pc.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ClusterPool", "intro")
        );
        assert_eq!(pc.labels()["cks.io/template-hash"], pc.spec.template_hash);
    }

    finish_provisioning(&client, "intro").await;
    wait_phases(
        &client,
        "intro",
        &[
            (PracticeClusterPhase::Available, 2),
            (PracticeClusterPhase::Provisioning, 1),
        ],
        3,
    )
    .await;
    finish_provisioning(&client, "intro").await;
    wait_phases(&client, "intro", &[(PracticeClusterPhase::Available, 3)], 3).await;

    let status = eventually("pool status counts 3 Available and Ready", || async {
        let p = pools.get("intro").await.unwrap();
        let s = p.status?;
        let ready = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (s.available == 3 && ready).then_some(s)
    })
    .await;
    assert_eq!((status.total, status.updated, status.failed), (3, 3, 0));
    assert!(status.last_scale_event.unwrap().contains("created cluster"));
}

#[tokio::test]
async fn scaling_min_available_up_and_down_follows_the_spec_and_spares_assigned_clusters() {
    let (_server, client) = start().await;
    let _stop = run_pool_controller(&client);
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("scale", 2, 6, 3))
        .await
        .unwrap();
    wait_phases(&client, "scale", &[(PracticeClusterPhase::Provisioning, 2)], 2).await;
    finish_provisioning(&client, "scale").await;
    wait_phases(&client, "scale", &[(PracticeClusterPhase::Available, 2)], 2).await;

    // A session claims one: the buffer is short by one, so a third is built.
    let claimed = clusters(&client, "scale").await[0].name_any();
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.patch(
        &claimed,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"claimRef": {"name": "alice"}}})),
    )
    .await
    .unwrap();
    set_phase(&client, &claimed, PracticeClusterPhase::Assigned).await;
    wait_phases(&client, "scale", &[(PracticeClusterPhase::Provisioning, 1)], 3).await;
    finish_provisioning(&client, "scale").await;

    // Up to 4: two more.
    let patch = Patch::Merge(json!({"spec": {"minAvailable": 4}}));
    pools
        .patch("scale", &PatchParams::default(), &patch)
        .await
        .unwrap();
    wait_phases(&client, "scale", &[(PracticeClusterPhase::Provisioning, 2)], 5).await;
    finish_provisioning(&client, "scale").await;
    wait_phases(&client, "scale", &[(PracticeClusterPhase::Available, 4)], 5).await;

    // Down to 1: three idle clusters go, the assigned one stays.
    let patch = Patch::Merge(json!({"spec": {"minAvailable": 1}}));
    pools
        .patch("scale", &PatchParams::default(), &patch)
        .await
        .unwrap();
    wait_phases(
        &client,
        "scale",
        &[
            (PracticeClusterPhase::Available, 1),
            (PracticeClusterPhase::Assigned, 1),
        ],
        2,
    )
    .await;
    assert!(
        clusters(&client, "scale")
            .await
            .iter()
            .any(|c| c.name_any() == claimed)
    );
}

#[tokio::test]
async fn failed_clusters_are_replaced_keeping_one_for_inspection() {
    let (_server, client) = start().await;
    let _stop = run_pool_controller(&client);
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let mut p = common::pool("flaky", 1, 4, 2);
    p.spec.keep_failed = 1;
    pools.create(&PostParams::default(), &p).await.unwrap();
    wait_phases(&client, "flaky", &[(PracticeClusterPhase::Provisioning, 1)], 1).await;
    let first = clusters(&client, "flaky").await[0].name_any();
    set_phase(&client, &first, PracticeClusterPhase::Failed).await;

    // Kept (keepFailed 1) and replaced.
    wait_phases(
        &client,
        "flaky",
        &[
            (PracticeClusterPhase::Failed, 1),
            (PracticeClusterPhase::Provisioning, 1),
        ],
        2,
    )
    .await;
    let degraded = eventually("Degraded condition", || async {
        let s = pools.get("flaky").await.unwrap().status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
    })
    .await;
    assert_eq!(degraded.reason, "ClustersFailed");

    // A second failure: only one failed cluster is kept, and a replacement is built.
    let second = clusters(&client, "flaky")
        .await
        .into_iter()
        .find(|c| c.name_any() != first)
        .unwrap()
        .name_any();
    set_phase(&client, &second, PracticeClusterPhase::Failed).await;
    wait_phases(
        &client,
        "flaky",
        &[
            (PracticeClusterPhase::Failed, 1),
            (PracticeClusterPhase::Provisioning, 1),
        ],
        2,
    )
    .await;
    let names: Vec<String> = clusters(&client, "flaky")
        .await
        .iter()
        .map(|c| c.name_any())
        .collect();
    // Creation times have one-second resolution, so which of the two counts as newer is
    // the planner's tie-break (unit-tested); here exactly one of them must remain.
    let kept = [&first, &second].iter().filter(|n| names.contains(n)).count();
    assert_eq!(kept, 1, "{names:?}");
}

#[tokio::test]
async fn template_change_rolls_only_unassigned_clusters() {
    let (_server, client) = start().await;
    let _stop = run_pool_controller(&client);
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("roll", 2, 5, 2))
        .await
        .unwrap();
    wait_phases(&client, "roll", &[(PracticeClusterPhase::Provisioning, 2)], 2).await;
    finish_provisioning(&client, "roll").await;
    wait_phases(&client, "roll", &[(PracticeClusterPhase::Available, 2)], 2).await;
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let busy = clusters(&client, "roll").await[0].clone();
    let old_hash = busy.spec.template_hash.clone();
    api.patch(
        &busy.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"claimRef": {"name": "bob"}}})),
    )
    .await
    .unwrap();
    set_phase(&client, &busy.name_any(), PracticeClusterPhase::Assigned).await;

    let patch = Patch::Merge(json!({"spec": {"template": common::template(2)}}));
    pools
        .patch("roll", &PatchParams::default(), &patch)
        .await
        .unwrap();

    // Keep finishing builds until every unassigned cluster runs the new template.
    let new_hash = eventually("every unassigned cluster on the new template", || async {
        start_new_clusters(&client, "roll").await;
        finish_provisioning(&client, "roll").await;
        let list = clusters(&client, "roll").await;
        let idle: Vec<&PracticeCluster> = list.iter().filter(|c| c.spec.claim_ref.is_none()).collect();
        let hash = idle.first()?.spec.template_hash.clone();
        let done = hash != old_hash
            && idle.len() == 2
            && idle
                .iter()
                .all(|c| c.spec.template_hash == hash && phase(c) == PracticeClusterPhase::Available);
        done.then_some(hash)
    })
    .await;
    let list = clusters(&client, "roll").await;
    let kept = list
        .iter()
        .find(|c| c.name_any() == busy.name_any())
        .expect("assigned cluster kept");
    assert_eq!(kept.spec.template_hash, old_hash);
    assert_eq!(kept.spec.template.workers.count, 1);
    assert!(
        list.iter()
            .filter(|c| c.spec.template_hash == new_hash)
            .all(|c| c.spec.template.workers.count == 2)
    );
    let status = eventually("pool status with the new hash", || async {
        let s = pools.get("roll").await.unwrap().status?;
        (s.template_hash.as_deref() == Some(new_hash.as_str()) && s.updated == 2).then_some(s)
    })
    .await;
    assert_eq!((status.total, status.assigned), (3, 1));
}

#[tokio::test]
async fn a_cluster_claimed_after_it_was_listed_is_not_deleted() {
    let (_server, client) = common::start().await;
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let cluster: PracticeCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "PracticeCluster",
        "metadata": {"name": "p-abcde", "namespace": NS},
        "spec": {"pool": "p", "templateHash": "h", "template": common::template(1)},
    }))
    .unwrap();
    let listed = api.create(&PostParams::default(), &cluster).await.unwrap();

    // A Session claims the cluster between the pool's list and its delete.
    api.patch(
        "p-abcde",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"claimRef": {"name": "alice"}}})),
    )
    .await
    .unwrap();

    assert!(!pool::delete_if_unchanged(&api, &listed).await.unwrap());
    let still_there = api.get("p-abcde").await.expect("the claimed cluster survives");
    assert_eq!(still_there.spec.claim_ref.unwrap().name, "alice");

    let current = api.get("p-abcde").await.unwrap();
    assert!(pool::delete_if_unchanged(&api, &current).await.unwrap());
    assert!(
        !pool::delete_if_unchanged(&api, &current).await.unwrap(),
        "gone is not an error"
    );
}

#[tokio::test]
async fn clusters_of_a_deleted_pool_still_tearing_down_count_against_max_clusters() {
    let (_server, client) = start().await;
    let _stop = run_pool_controller(&client);
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("again", 2, 3, 3))
        .await
        .unwrap();
    wait_phases(&client, "again", &[(PracticeClusterPhase::Provisioning, 2)], 2).await;

    // Their teardown takes a while (a finalizer, like the cluster controller's).
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let hold = Patch::Merge(json!({"metadata": {"finalizers": ["test.cks.io/hold"]}}));
    let old: Vec<String> = clusters(&client, "again")
        .await
        .iter()
        .map(|c| c.name_any())
        .collect();
    for name in &old {
        api.patch(name, &PatchParams::default(), &hold).await.unwrap();
    }
    pools.delete("again", &Default::default()).await.unwrap();
    eventually("the old pool's clusters to be tearing down", || async {
        let list = clusters(&client, "again").await;
        (list.len() == 2 && list.iter().all(|c| c.metadata.deletion_timestamp.is_some())).then_some(())
    })
    .await;

    // The new pool of the same name has one slot left under maxClusters 3.
    pools
        .create(&PostParams::default(), &common::pool("again", 2, 3, 3))
        .await
        .unwrap();
    let status = eventually("the new pool to report the cap", || async {
        let s = pools.get("again").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.reason == "MaxClustersReached")
            .then_some(s)
    })
    .await;
    let new: Vec<PracticeCluster> = clusters(&client, "again")
        .await
        .into_iter()
        .filter(|c| !old.contains(&c.name_any()))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "{:?}",
        new.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    );
    assert!(status.total <= 1, "the old pool's clusters are not this pool's");

    // Once they are gone, the buffer is completed.
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    for name in &old {
        api.patch(name, &PatchParams::default(), &release).await.unwrap();
    }
    wait_phases(&client, "again", &[(PracticeClusterPhase::Provisioning, 2)], 2).await;
}

/// An edit of a pool's JSON form.
type Edit = fn(&mut serde_json::Value);

fn pool_json(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut pool = serde_json::to_value(common::pool(name, 1, 3, 1)).unwrap();
    edit(&mut pool);
    pool
}

#[tokio::test]
async fn templates_the_operator_cannot_build_are_refused_at_admission() {
    let (_server, client) = start().await;
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<ClusterPool>(&()));
    let cases: [(&str, Edit); 4] = [
        ("kubernetesVersion 1.12.0", |p| {
            p["spec"]["template"]["kubernetesVersion"] = json!("1.12.0")
        }),
        ("controlPlane.memory lots", |p| {
            p["spec"]["template"]["controlPlane"]["memory"] = json!("lots")
        }),
        ("resourceQuota.memory -5Gi", |p| {
            p["spec"]["isolation"] = json!({"resourceQuota": {"memory": "-5Gi"}})
        }),
        ("workers.diskSize -20", |p| {
            p["spec"]["template"]["workers"]["diskSize"] = json!(-20)
        }),
    ];
    for (what, edit) in cases {
        let object: DynamicObject = serde_json::from_value(pool_json("bad", edit)).unwrap();
        match raw.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(s)) if s.code == 422 => {}
            other => panic!("{what}: expected 422 Invalid, got {other:?}"),
        }
    }
    let good: DynamicObject = serde_json::from_value(pool_json("good", |_| {})).unwrap();
    raw.create(&PostParams::default(), &good)
        .await
        .expect("the valid pool is admitted");
}

/// What a watch of the pool's clusters saw: every cluster ever created, and the most that
/// were ever being built (Pending to Snapshotting, not being deleted) at once.
#[derive(Debug, Default)]
struct Seen {
    created: HashSet<String>,
    max_in_flight: usize,
}

/// Fake backend of a template that can never be built: every new cluster of `pool` fails
/// at once, as the cluster controller fails one it cannot lay out. Records what it saw.
fn fail_every_cluster(client: &Client, pool: &str) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    let client = client.clone();
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let config = watcher::Config::default().labels(&format!("cks.io/pool={pool}"));
    tokio::spawn(async move {
        let mut state: HashMap<String, (PracticeClusterPhase, bool)> = HashMap::new();
        let events = watcher(api.clone(), config).default_backoff();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            let (pc, gone) = match event {
                watcher::Event::Apply(pc) | watcher::Event::InitApply(pc) => (pc, false),
                watcher::Event::Delete(pc) => (pc, true),
                _ => continue,
            };
            let name = pc.name_any();
            if gone {
                state.remove(&name);
            } else {
                state.insert(
                    name.clone(),
                    (phase(&pc), pc.metadata.deletion_timestamp.is_some()),
                );
            }
            {
                let mut seen = out.lock().unwrap();
                seen.created.insert(name.clone());
                let in_flight = state
                    .values()
                    .filter(|(p, deleting)| p.is_provisioning() && !deleting)
                    .count();
                seen.max_in_flight = seen.max_in_flight.max(in_flight);
            }
            if !gone && pc.status.is_none() && pc.metadata.deletion_timestamp.is_none() {
                let patch = json!({"status": {
                    "phase": "Failed",
                    "failureReason": "UnsupportedKubernetesVersion",
                    "failureMessage": "kubernetes version \"1.12.0\": kubeadm configuration v1beta3 needs Kubernetes 1.22 or later",
                }});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        }
    });
    seen
}

#[tokio::test]
async fn clusters_that_always_fail_are_replaced_with_backoff_within_limits_and_a_deleted_pool_leaves_nothing()
{
    let (_server, client) = start().await;
    let ctx = Arc::new(Context::test(client.clone()));
    let base = ctx.config.retry_base;
    let _stop = run_pool_controller_with(ctx.clone());
    let seen = fail_every_cluster(&client, "churn");
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let mut p = common::pool("churn", 3, 6, 2);
    p.spec.keep_failed = 0;
    let started = tokio::time::Instant::now();
    pools.create(&PostParams::default(), &p).await.unwrap();

    // The window ends with six failures in a row on record, or once the pool has obviously
    // run away (then the bound below fails with the figures).
    let status = eventually("six failures in a row on record", || async {
        if seen.lock().unwrap().created.len() > 50 {
            return Some(None);
        }
        let s = pools.get("churn").await.ok()?.status?;
        (s.consecutive_failures >= 6).then_some(Some(s))
    })
    .await;
    let elapsed = started.elapsed();
    let created = seen.lock().unwrap().created.len();
    // Each round of creations waits base * 2^(n-1) after the n-th failure in a row, and
    // every round adds at least one failure, so within `elapsed` at most
    // 1 + log2(elapsed / base + 1) rounds of at most maxConcurrentProvisioning clusters
    // can start. A slower machine only lowers the count; without backoff it is hundreds.
    let rounds = 1.0 + (elapsed.as_secs_f64() / base.as_secs_f64() + 1.0).log2();
    let bound = (2.0 * rounds).floor() as usize;
    println!("{created} clusters created in {elapsed:?} (bound {bound})");
    assert!(
        created <= bound,
        "{created} clusters created in {elapsed:?}; backoff allows {bound}"
    );
    let status = status.expect("failures on record");
    assert!(status.next_create_time.is_some(), "{status:?}");

    // keepFailed 0: no Failed cluster is left, yet the pool says why it is degraded.
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded condition");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "UnsupportedKubernetesVersion")
    );
    assert!(
        degraded.message.contains("needs Kubernetes 1.22 or later"),
        "{}",
        degraded.message
    );
    assert!(
        status
            .last_failure_message
            .as_deref()
            .is_some_and(|m| m.contains("1.22")),
        "{status:?}"
    );
    warning_event(&client, "BackingOff", "churn").await;

    // Deleted while it churns: every cluster goes, and none is created afterwards.
    pools.delete("churn", &Default::default()).await.unwrap();
    eventually("the pool and its clusters gone", || async {
        let gone = pools.get_opt("churn").await.unwrap().is_none();
        (gone && clusters(&client, "churn").await.is_empty()).then_some(())
    })
    .await;
    let seen = seen.lock().unwrap();
    assert!(
        seen.max_in_flight <= 2,
        "{} clusters were in flight at once (maxConcurrentProvisioning 2)",
        seen.max_in_flight
    );
}

#[tokio::test]
async fn a_pool_read_before_its_deletion_creates_no_cluster() {
    let (_server, client) = start().await;
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("gone", 2, 3, 2))
        .await
        .unwrap();
    // The controller's cache still holds the pool when the deletion lands.
    let stale = pools.get("gone").await.unwrap();
    pools.delete("gone", &Default::default()).await.unwrap();
    let ctx = Arc::new(Context::test(client.clone()));
    // Whether the reconcile reports an error (its status write finds no pool) matters less
    // than what it left behind.
    let result = pool::reconcile(Arc::new(DeserializeGuard(Ok(stale))), ctx).await;
    let left: Vec<String> = clusters(&client, "gone")
        .await
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert!(left.is_empty(), "clusters without a pool: {left:?}");
    assert!(result.is_ok(), "{result:?}");
}

fn pool_series(ctx: &Context, pool: &str) -> usize {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &ctx.metrics.registry()).unwrap();
    out.lines()
        .filter(|l| {
            l.starts_with("cks_operator_practice_clusters{") && l.contains(&format!("pool=\"{pool}\""))
        })
        .count()
}

#[tokio::test]
async fn a_deleted_pools_metric_series_are_removed() {
    let (_server, client) = start().await;
    let ctx = Arc::new(Context::test(client.clone()));
    let _stop = run_pool_controller_with(ctx.clone());
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("metered", 1, 2, 1))
        .await
        .unwrap();
    wait_phases(&client, "metered", &[(PracticeClusterPhase::Provisioning, 1)], 1).await;
    eventually("the pool's series", || async {
        (pool_series(&ctx, "metered") > 0).then_some(())
    })
    .await;
    pools.delete("metered", &Default::default()).await.unwrap();
    eventually("the deleted pool's series gone", || async {
        (pool_series(&ctx, "metered") == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_template_the_operator_would_refuse_builds_no_cluster_and_degrades_the_pool() {
    let (_server, client) = start().await;
    let _stop = run_pool_controller(&client);
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let mut p = common::pool("refused", 1, 3, 1);
    // Valid YAML the schema cannot judge, which the cloud-init merge rules refuse.
    p.spec.template.extra_cloud_init = Some("users: [{name: ubuntu}]".into());
    pools.create(&PostParams::default(), &p).await.unwrap();
    let degraded = eventually("Degraded for the template", || async {
        let s = pools.get("refused").await.ok()?.status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
    })
    .await;
    assert_eq!(degraded.reason, "InvalidExtraCloudInit", "{degraded:?}");
    // The status is written after the reconcile's creates, so a cluster would be here now.
    assert!(clusters(&client, "refused").await.is_empty());
    warning_event(&client, "InvalidExtraCloudInit", "refused").await;
}

#[tokio::test]
async fn a_quota_too_small_for_a_reset_is_reported_with_the_arithmetic() {
    let (_server, client) = start().await;
    let _stop = run_pool_controller(&client);
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let mut p: ClusterPool = serde_json::from_value(pool_json("tight", |p| {
        p["spec"]["template"] = common::template(2);
        p["spec"]["isolation"] = json!({"resourceQuota": {"memory": "12Gi", "storage": "100Gi", "pods": 20}});
    }))
    .unwrap();
    p.metadata.namespace = Some(NS.into());
    pools.create(&PostParams::default(), &p).await.unwrap();
    let quota = eventually("QuotaSufficient=False", || async {
        let s = pools.get("tight").await.ok()?.status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "QuotaSufficient" && c.status == "False")
    })
    .await;
    assert_eq!(quota.reason, "QuotaTooSmall");
    assert!(
        quota
            .message
            .contains("2 × (20Gi + 2 × 20Gi) = 120Gi > quota 100Gi"),
        "{}",
        quota.message
    );
    let event = warning_event(&client, "QuotaTooSmall", "tight").await;
    assert!(event.message.unwrap_or_default().contains("120Gi"));
}

#[tokio::test]
async fn a_reconcile_from_a_stale_cache_keeps_the_creation_hold_in_the_pools_status() {
    let (_server, client) = start().await;
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("held", 2, 3, 2))
        .await
        .unwrap();
    // The cache still holds the pool as it was before the last reconcile recorded failures
    // and a hold on creating clusters.
    let stale = pools.get("held").await.unwrap();
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let patch = json!({"status": {
        "consecutiveFailures": 3,
        "lastFailureTime": jiff::Timestamp::now().to_string(),
        "lastFailureReason": "UnsupportedKubernetesVersion",
        "lastFailureMessage": "refused",
        "nextCreateTime": until.to_string(),
    }});
    pools
        .patch_status("held", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let ctx = Arc::new(Context::test(client.clone()));
    pool::reconcile(Arc::new(DeserializeGuard(Ok(stale))), ctx)
        .await
        .unwrap();
    let made = clusters(&client, "held").await.len();
    assert_eq!(made, 0, "clusters created during the hold");
    let status = pools.get("held").await.unwrap().status.unwrap();
    assert_eq!(
        status.consecutive_failures, 3,
        "the failure record was overwritten"
    );
    assert!(status.next_create_time.is_some(), "the hold was dropped");
}
