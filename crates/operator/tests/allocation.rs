//! Allocation at scale, black-box: Sessions and PracticeClusters on the development control
//! plane, judged only by what the API shows. A thousand Sessions against a thousand Available
//! clusters in one burst; a thousand against a hundred clusters released and re-claimed in
//! rounds, in FIFO order; and two leader-elected operators handing over in the middle of a
//! burst. `common::ledger` watches every claim and every Session while it happens, so a
//! shared cluster or a Session holding two fails the test even if it was repaired later.
//!
//! Clusters are hand-made and Available (no VMs: allocation never touches them), with
//! `common::session_env::reset_loop` standing in for the cluster controller's claim and
//! reset transitions, as in `tests/session.rs`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cks_api::conditions::find_condition;
use cks_api::names::condition_types;
use cks_api::session::Session;
use cks_api::{ClusterPool, PracticeCluster};
use cks_operator::pool;
use common::ledger::{Ledger, State};
use common::session_env::{
    ScenarioDef, all_clusters, available_cluster, catalog, context, create_pool, create_session,
    eventually_long, make_available, reset_loop, run_controller, session, sessions,
};
use common::{NS, lease_holder, supervised_replica};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

/// Bound on each wait: generous, CI machines are slow and the current design is slow at the
/// tail; speed is measured by `benches/sessions.rs`, not here.
const LIMIT: Duration = Duration::from_secs(1200);
/// Each test loads the whole two-core machine (a control plane, 1 000 objects, watches): they
/// take turns rather than starve each other's leases and watches.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests in flight while creating or deleting objects.
const CONCURRENCY: usize = 64;

fn name(i: usize) -> String {
    format!("s-{i:04}")
}

/// Creates `n` Available clusters `p-0000`… of pool `p` (the pool must exist).
async fn clusters(client: &Client, n: usize) {
    futures::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let client = client.clone();
            async move {
                let ip = u32::try_from(i).unwrap();
                available_cluster(&client, &format!("p-{i:04}"), "p", ip).await;
            }
        })
        .await;
}

/// Creates Sessions `s-{from}`… `s-{to - 1}` of pool `p`, each of its own user, in name order
/// with [`CONCURRENCY`] in flight.
async fn burst(client: &Client, from: usize, to: usize) {
    futures::stream::iter(from..to)
        .for_each_concurrent(CONCURRENCY, |i| {
            let client = client.clone();
            async move {
                let n = name(i);
                create_session(&client, &session(&n, &n, "p", "basics")).await;
            }
        })
        .await;
}

/// A server with pool `p` of `clusters` Available clusters, the ledger watching, the stand-in
/// for the cluster controller and one Session controller.
struct Fleet {
    client: Client,
    ledger: Ledger,
    stop: tokio::sync::watch::Sender<bool>,
    controller: tokio::task::JoinHandle<()>,
    _resets: tokio::sync::watch::Sender<bool>,
    _catalog: tempfile::TempDir,
    _server: cks_devcluster::DevCluster,
}

impl Fleet {
    async fn start(n: usize) -> Self {
        let (server, client) = common::start().await;
        let dir = tempfile::tempdir().unwrap();
        let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
        create_pool(&client, &common::session_env::pool("p", 1, 120)).await;
        clusters(&client, n).await;
        let ledger = Ledger::start(&client).await;
        let resets = reset_loop(&client);
        let (stop, controller) = run_controller(Arc::new(context(&client, Some(scenarios))));
        Self {
            client,
            ledger,
            stop,
            controller,
            _resets: resets,
            _catalog: dir,
            _server: server,
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.controller.await.unwrap();
    }
}

fn progress(st: &State) -> String {
    let queued = st
        .sessions
        .values()
        .filter(|s| s.assigned.is_none() && s.queued.is_some())
        .count();
    format!(
        "{} Sessions seen, {} assigned, {} more queued; {} clusters claimed now, {} claims in all; \
         Sessions by phase: {:?}",
        st.sessions.len(),
        st.assigned(),
        queued,
        st.holders.len(),
        st.claims.len(),
        st.phases_seen()
    )
}

/// Every claim the ledger saw named a different Session: none was given a second cluster,
/// not even after losing the first.
fn each_claimed_once(st: &State) {
    let mut by_uid: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in &st.claims {
        by_uid.entry(&c.uid).or_default().push(&c.cluster);
    }
    let twice: Vec<_> = by_uid
        .iter()
        .filter(|(_, clusters)| clusters.len() > 1)
        .take(5)
        .map(|(uid, clusters)| format!("{uid}: {clusters:?}"))
        .collect();
    assert!(twice.is_empty(), "Sessions claimed more than once: {twice:?}");
}

/// From the API: each of the `n` Sessions names one cluster and shows ClusterAssigned; that
/// cluster's claimRef names it back (name and uid); no two Sessions name one cluster; and no
/// cluster's claimRef names a Session that does not name it.
async fn one_to_one(client: &Client, n: usize) {
    let sessions = sessions(client).await;
    assert_eq!(sessions.len(), n);
    let clusters: BTreeMap<String, PracticeCluster> = all_clusters(client)
        .await
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    let mut named: HashMap<String, String> = HashMap::new();
    for s in &sessions {
        let st = s.status.clone().unwrap_or_default();
        let assigned = find_condition(&st.conditions, condition_types::CLUSTER_ASSIGNED)
            .is_some_and(|c| c.status == "True");
        let cluster = st
            .cluster
            .unwrap_or_else(|| panic!("{} has no cluster: {:?}", s.name_any(), st.phase));
        assert!(
            assigned,
            "{} names {cluster} without ClusterAssigned",
            s.name_any()
        );
        let claim = clusters[&cluster].spec.claim_ref.clone();
        assert_eq!(
            claim.as_ref().map(|c| (c.name.clone(), c.uid.clone())),
            Some((s.name_any(), s.uid())),
            "{cluster}'s claim does not name {}",
            s.name_any()
        );
        if let Some(other) = named.insert(cluster.clone(), s.name_any()) {
            panic!("{other} and {} both name {cluster}", s.name_any());
        }
    }
    for (cluster, pc) in &clusters {
        if let Some(claim) = &pc.spec.claim_ref {
            assert_eq!(
                named.get(cluster),
                Some(&claim.name),
                "{cluster} is claimed by {} which does not name it",
                claim.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_in_one_burst_take_a_thousand_clusters() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fleet = Fleet::start(1000).await;
    let (client, ledger) = (&fleet.client, &fleet.ledger);
    let started = Instant::now();
    burst(client, 0, 1000).await;
    let created = started.elapsed();
    ledger
        // Both watches: the Sessions' statuses may arrive before the clusters' claims.
        .wait(
            "1000 Sessions assigned and 1000 claims seen",
            LIMIT,
            progress,
            |st| st.assigned() == 1000 && st.claims.len() >= 1000,
        )
        .await;
    eprintln!(
        "1000 Sessions created in {created:?}, all assigned after {:?}",
        started.elapsed()
    );
    one_to_one(client, 1000).await;
    ledger.read(|st| {
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        each_claimed_once(st);
        assert_eq!(st.claims.len(), 1000);
        assert_eq!(st.holders.len(), 1000);
    });
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_share_a_hundred_clusters_in_rounds_in_fifo_order() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fleet = Fleet::start(100).await;
    let (client, ledger) = (&fleet.client, &fleet.ledger);

    let started = Instant::now();
    burst(client, 0, 1000).await;
    let mut ordered = sessions(client).await;
    ordered.sort_by_key(|s| (s.metadata.creation_timestamp.clone().unwrap().0, s.name_any()));
    let order: Vec<String> = ordered.iter().map(ResourceExt::name_any).collect();
    let api: Api<Session> = Api::namespaced(client.clone(), NS);
    let mut served: Vec<String> = Vec::new();
    for round in 0..10 {
        let total = 100 * (round + 1);
        // The round is settled when 100 more are assigned and every other one is queued.
        ledger
            .wait(
                &format!("round {round}: {total} assigned in all, the rest queued"),
                LIMIT,
                progress,
                |st| {
                    st.sessions.len() == 1000
                        && st.assigned() == total
                        && st
                            .sessions
                            .values()
                            .all(|s| s.assigned.is_some() || s.queued.is_some())
                },
            )
            .await;
        let this_round: Vec<String> = ledger.read(|st| {
            let mut names: Vec<(&(jiff::Timestamp, String), &String)> = st
                .sessions
                .values()
                .filter(|s| s.assigned.is_some() && !served.contains(&s.name))
                .map(|s| (&s.key, &s.name))
                .collect();
            names.sort();
            names.into_iter().map(|(_, n)| n.clone()).collect()
        });
        eprintln!("round {round} settled after {:?}", started.elapsed());
        // Round 0 raced the creation: a Session could be claimed before an older one existed
        // (the ledger's FIFO check below judges that); from round 1 on, every waiting Session
        // was queued before the clusters came back, so each round serves
        // exactly the 100 oldest of those not served yet (round 0 may have served a younger
        // Session before an older one's create had finished: not yet served, that one is
        // among the oldest waiting now).
        if round > 0 {
            let next: Vec<String> = order
                .iter()
                .filter(|n| !served.contains(n))
                .take(100)
                .cloned()
                .collect();
            assert_eq!(this_round, next, "round {round}: served out of order");
        }
        served.extend(this_round.iter().cloned());
        // The students of this round leave; their clusters come back for the next round.
        futures::stream::iter(this_round)
            .for_each_concurrent(CONCURRENCY, |n| {
                let api = api.clone();
                async move {
                    api.delete(&n, &DeleteParams::default()).await.unwrap();
                }
            })
            .await;
    }
    ledger
        .wait(
            "every Session gone, every cluster Available",
            LIMIT,
            progress,
            State::all_released,
        )
        .await;
    eprintln!("1000 Sessions served in rounds in {:?}", started.elapsed());
    let distinct: HashSet<&String> = served.iter().collect();
    assert_eq!(distinct.len(), 1000, "every Session was served once");
    ledger.read(|st| {
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        each_claimed_once(st);
        assert_eq!(st.claims.len(), 1000);
        assert!(st.peak_claimed <= 100);
        let fifo = st.fifo_violations(5);
        assert!(fifo.is_empty(), "FIFO broken: {fifo:#?}");
    });
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_hand_over_in_the_middle_of_a_burst() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const N: usize = 300;
    let (server, client) = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scenarios = catalog(dir.path(), &[ScenarioDef::simple("basics")]);
    // The pool controller runs here: a pool whose clusters are all there (minAvailable =
    // maxClusters) and of its current template leaves them alone.
    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    let mut spec = common::session_env::pool("p", 1, 120);
    spec.spec.min_available = i32::try_from(N).unwrap();
    spec.spec.max_clusters = i32::try_from(N).unwrap();
    let pool_obj = pools.create(&PostParams::default(), &spec).await.unwrap();
    let hash = pool::template_hash(&pool_obj.spec.template);
    let cluster_api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(0..N)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (client, cluster_api, pool_obj, hash) = (&client, &cluster_api, &pool_obj, &hash);
            async move {
                let name = format!("p-{i:04}");
                cluster_api
                    .create(&PostParams::default(), &pool::new_cluster(pool_obj, &name, hash))
                    .await
                    .unwrap();
                make_available(client, &name, u32::try_from(i).unwrap()).await;
            }
        })
        .await;
    let ledger = Ledger::start(&client).await;
    let _resets = reset_loop(&client);

    // Each replica has its own client (connections), as two processes would. Each is started
    // again when it exits, as its Deployment would: on a loaded machine a 2 s lease can be
    // lost, and a replica that lost it exits (the other may then lead for a while).
    let a = supervised_replica(
        &server.client().await.unwrap(),
        "replica-a",
        Some(scenarios.clone()),
    );
    let last = Mutex::new(String::new());
    eventually_long("replica-a to lead", &last, || async {
        (lease_holder(&client).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = supervised_replica(&server.client().await.unwrap(), "replica-b", Some(scenarios));

    // Half the burst; the leader dies (without releasing the lease) once it has made a
    // third of the claims; the other half is created while nobody leads.
    burst(&client, 0, N / 2).await;
    ledger
        .wait("the first claims", LIMIT, progress, |st| st.claims.len() >= N / 3)
        .await;
    a.abort();
    let _ = a.await;
    let at_abort = ledger.read(|st| st.claims.len());
    burst(&client, N / 2, N).await;
    eventually_long("replica-b to take over", &last, || async {
        (lease_holder(&client).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let all = format!("{N} Sessions assigned and {N} claims seen");
    let served = ledger.wait(&all, 2 * LIMIT, progress, |st| {
        st.assigned() == N && st.claims.len() >= N
    });
    tokio::select! {
        () = served => {}
        () = tokio::time::sleep(LIMIT) => {
            // What the API says, next to what the watches saw: tells a stalled operator from
            // a stalled watch.
            let by_api = sessions(&client).await.iter().fold(BTreeMap::new(), |mut m, s| {
                let st = s.status.clone().unwrap_or_default();
                *m.entry(format!("{:?} {}", st.phase, st.reason.unwrap_or_default())).or_insert(0) += 1;
                m
            });
            panic!(
                "timed out after {LIMIT:?} waiting for {all}; the API shows {by_api:?}; the watches: {}",
                ledger.read(progress)
            );
        }
    }
    eprintln!(
        "{at_abort} claims were made before replica-a died, replica-b made the other {}",
        N - at_abort
    );
    assert!(
        at_abort <= N / 2,
        "claims before any Session of the second half existed"
    );
    one_to_one(&client, N).await;
    ledger.read(|st| {
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        each_claimed_once(st);
        assert_eq!(st.claims.len(), N);
    });
    assert_eq!(lease_holder(&client).await.as_deref(), Some("replica-b"));
    b.abort();
}
