//! A record of allocation as the server saw it, for the allocation tests: one watch of the
//! PracticeClusters (every claimRef) and one of the Sessions (when each was first queued and
//! first shown assigned), both in [`NS`]. It flags at every event, not only at the end, a
//! cluster whose claim moves from one Session to another without a release, a Session named
//! by two clusters' claims at once, and a Session whose status changes cluster; and it checks
//! FIFO against the order in which claims and queueing happened.
//!
//! The development control plane counts one resourceVersion across all kinds (as etcd's
//! revision), so the versions of Session and PracticeCluster events order them against each
//! other: the claim of a cluster at version `r` happened after every event below `r`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cks_api::PracticeCluster;
use cks_api::conditions::find_condition;
use cks_api::names::condition_types;
use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::session::{Session, SessionPhase};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};

use super::NS;

/// One claim: the cluster's claimRef came to name the Session `uid` at `version`; the
/// cluster had been free (Available, unclaimed) since `free_since`.
#[derive(Clone, Debug)]
pub struct Claim {
    pub version: u64,
    pub cluster: String,
    pub uid: String,
    pub free_since: u64,
}

/// What the Session watch showed of one Session.
#[derive(Clone, Debug)]
pub struct Seen {
    pub name: String,
    pub pool: String,
    /// The queue order: `(creationTimestamp, name)`.
    pub key: (Timestamp, String),
    /// Version of the first event seen: its creation (the ledger watches from before).
    pub created: u64,
    /// First version at which it was WaitingForCluster (queued by the operator).
    pub queued: Option<u64>,
    /// Version of its latest claim intent (`cks.io/claim-intent` written or changed): when
    /// an allocator committed to claim for it.
    pub intent: Option<(u64, String)>,
    /// First version at which it showed ClusterAssigned, and the cluster its status named.
    pub assigned: Option<(u64, String)>,
    /// Version of its deletion (deletionTimestamp set or gone).
    pub deleted: Option<u64>,
    /// Gone from the server (past its finalizers).
    pub gone: bool,
    /// Its last phase and reason, for messages.
    pub last: String,
}

/// Everything recorded so far.
#[derive(Debug, Default)]
pub struct State {
    /// Current claimRef uid by cluster.
    pub holders: HashMap<String, String>,
    /// Every claim in the order the server made them.
    pub claims: Vec<Claim>,
    /// Sessions by uid.
    pub sessions: HashMap<String, Seen>,
    /// Broken guarantees, as they were seen.
    pub violations: Vec<String>,
    /// The most clusters claimed at once.
    pub peak_claimed: usize,
    /// Current phase by cluster.
    pub phases: HashMap<String, PracticeClusterPhase>,
    /// Since which version each free cluster (Available, unclaimed) has been free.
    pub free_since: HashMap<String, u64>,
}

impl State {
    /// Sessions (by name) whose status shows a cluster assigned.
    pub fn assigned(&self) -> usize {
        self.sessions.values().filter(|s| s.assigned.is_some()).count()
    }

    /// How many Sessions are in each last-seen phase (and reason), for messages.
    pub fn phases_seen(&self) -> std::collections::BTreeMap<&str, usize> {
        let mut out = std::collections::BTreeMap::new();
        for s in self.sessions.values() {
            *out.entry(s.last.as_str()).or_insert(0) += 1;
        }
        out
    }

    /// Every Session seen is gone and every cluster Available and unclaimed.
    pub fn all_released(&self) -> bool {
        self.sessions.values().all(|s| s.gone)
            && self.holders.is_empty()
            && self
                .phases
                .values()
                .all(|p| *p == PracticeClusterPhase::Available)
    }

    /// Claims that broke FIFO: a younger Session was claimed for while an older Session of
    /// the same pool, which the allocator had already queued, stayed unclaimed and then got a
    /// cluster that became free only after the younger one's claim (or none at all): it had
    /// to wait for a later release while a younger one was served.
    ///
    /// When the allocator planned the younger claim is not in the API: somewhere between the
    /// younger Session's creation and its claim intent. Only an older Session queued
    /// (WaitingForCluster, which only the allocator writes, from the same cache it plans
    /// from) before the younger one was even created was certainly in the allocator's view
    /// when it planned; one queued later may have appeared after the plan, its position
    /// written before the planned claim's first write landed. Claims of one allocation pass
    /// land in any order (concurrent writes), so an older Session claimed a little later from
    /// the same supply of free clusters is no violation either. At most `limit`, each with
    /// its versions.
    pub fn fifo_violations(&self, limit: usize) -> Vec<String> {
        let mut first_claim: HashMap<&str, &Claim> = HashMap::new();
        for c in &self.claims {
            first_claim.entry(c.uid.as_str()).or_insert(c);
        }
        let mut out = Vec::new();
        for (uid, young_claim) in &first_claim {
            let Some(young) = self.sessions.get(*uid) else {
                continue;
            };
            // The claim committed with its intent (else with the claim itself).
            let at = young
                .intent
                .as_ref()
                .map_or(young_claim.version, |(v, _)| (*v).min(young_claim.version));
            for (other_uid, old) in &self.sessions {
                let later = first_claim.get(other_uid.as_str());
                let passed_over = old.pool == young.pool
                    && old.key < young.key
                    && old.queued.is_some_and(|q| q < young.created)
                    && old.deleted.is_none_or(|d| d > at)
                    && later.is_none_or(|c| c.version > at && c.free_since > at);
                if passed_over && out.len() < limit {
                    out.push(format!(
                        "{} (created at version {}) claimed {} at version {at} while the older {} (queued at {:?}) waited for {:?}",
                        young.name,
                        young.created,
                        young_claim.cluster,
                        old.name,
                        old.queued,
                        later.map(|c| (&c.cluster, c.free_since, c.version)),
                    ));
                }
            }
        }
        out
    }

    fn cluster_event(&mut self, pc: &PracticeCluster, gone: bool) {
        let name = pc.name_any();
        if gone {
            self.holders.remove(&name);
            self.phases.remove(&name);
            self.free_since.remove(&name);
            return;
        }
        if let Some(st) = &pc.status {
            self.phases.insert(name.clone(), st.phase);
        }
        let free = pc.spec.claim_ref.is_none()
            && pc.metadata.deletion_timestamp.is_none()
            && pc
                .status
                .as_ref()
                .is_some_and(|st| st.phase == PracticeClusterPhase::Available);
        if free {
            self.free_since
                .entry(name.clone())
                .or_insert_with(|| version(pc.resource_version()));
        } else if pc.spec.claim_ref.is_none() {
            self.free_since.remove(&name);
        }
        let version = version(pc.resource_version());
        match pc.spec.claim_ref.as_ref().and_then(|c| c.uid.clone()) {
            Some(uid) => {
                match self.holders.get(&name) {
                    Some(old) if *old == uid => return,
                    Some(old) => self.violations.push(format!(
                        "{name} moved from Session {old} to {uid} without a release (version {version})"
                    )),
                    None => {}
                }
                if let Some((other, _)) = self.holders.iter().find(|(c, u)| **u == uid && **c != name) {
                    self.violations.push(format!(
                        "Session {uid} holds {other} and {name} at once (version {version})"
                    ));
                }
                self.holders.insert(name.clone(), uid.clone());
                self.peak_claimed = self.peak_claimed.max(self.holders.len());
                // A claim on a cluster not seen free counts as free since the claim.
                let free_since = self.free_since.remove(&name).unwrap_or(version);
                self.claims.push(Claim {
                    version,
                    cluster: name,
                    uid,
                    free_since,
                });
            }
            None => {
                self.holders.remove(&name);
            }
        }
    }

    fn session_event(&mut self, s: &Session, gone: bool) {
        let version = version(s.resource_version());
        let Some(created) = s.metadata.creation_timestamp.clone() else {
            return;
        };
        let seen = self
            .sessions
            .entry(s.uid().unwrap_or_default())
            .or_insert_with(|| Seen {
                name: s.name_any(),
                pool: s.spec.pool.clone(),
                key: (created.0, s.name_any()),
                created: version,
                queued: None,
                intent: None,
                assigned: None,
                deleted: None,
                gone: false,
                last: String::new(),
            });
        if gone || s.metadata.deletion_timestamp.is_some() {
            seen.deleted.get_or_insert(version);
        }
        seen.gone |= gone;
        if let Some(intent) = s.annotations().get("cks.io/claim-intent")
            && seen.intent.as_ref().is_none_or(|(_, v)| v != intent)
        {
            seen.intent = Some((version, intent.clone()));
        }
        let Some(st) = &s.status else { return };
        seen.last = format!("{:?} {}", st.phase, st.reason.as_deref().unwrap_or_default());
        if st.phase == SessionPhase::WaitingForCluster {
            seen.queued.get_or_insert(version);
        }
        let assigned = find_condition(&st.conditions, condition_types::CLUSTER_ASSIGNED)
            .is_some_and(|c| c.status == "True");
        if let (true, Some(cluster)) = (assigned, &st.cluster) {
            match &seen.assigned {
                None => seen.assigned = Some((version, cluster.clone())),
                Some((_, first)) if first != cluster => self.violations.push(format!(
                    "Session {} moved from cluster {first} to {cluster} (version {version})",
                    seen.name
                )),
                Some(_) => {}
            }
        }
    }
}

/// Watches `api`, recording each object (and whether it is gone) with `record`; returns the
/// task and a receiver that resolves once the watch has listed.
fn follow<K>(
    api: Api<K>,
    state: &Arc<Mutex<State>>,
    tx: &Arc<watch::Sender<u64>>,
    record: fn(&mut State, &K, bool),
) -> (tokio::task::JoinHandle<()>, oneshot::Receiver<()>)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (listed_tx, listed) = oneshot::channel();
    let (state, tx) = (state.clone(), tx.clone());
    let task = tokio::spawn(async move {
        let mut listed_tx = Some(listed_tx);
        // No backoff and no relist: an error would leave a gap in the record, so it counts
        // as a violation.
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    record(&mut state.lock().unwrap(), &o, false);
                }
                Ok(watcher::Event::Delete(o)) => record(&mut state.lock().unwrap(), &o, true),
                Ok(watcher::Event::InitDone) => {
                    if let Some(l) = listed_tx.take() {
                        let _ = l.send(());
                    }
                }
                Ok(watcher::Event::Init) => {}
                Err(e) => state
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("a watch failed, the record has a gap: {e}")),
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    (task, listed)
}

fn version(rv: Option<String>) -> u64 {
    rv.and_then(|v| v.parse().ok())
        .expect("the development control plane's resourceVersions are numbers")
}

/// The two watches and what they recorded.
pub struct Ledger {
    state: Arc<Mutex<State>>,
    changed: watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Ledger {
    /// Starts both watches and returns once both have listed.
    pub async fn start(client: &Client) -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let (tx, changed) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let (clusters, clusters_listed) = follow(
            Api::<PracticeCluster>::namespaced(client.clone(), NS),
            &state,
            &tx,
            State::cluster_event,
        );
        let (sessions, sessions_listed) = follow(
            Api::<Session>::namespaced(client.clone(), NS),
            &state,
            &tx,
            State::session_event,
        );
        clusters_listed.await.expect("the cluster watch lists");
        sessions_listed.await.expect("the Session watch lists");
        Self {
            state,
            changed,
            tasks: vec![clusters, sessions],
        }
    }

    /// Runs `f` on what was recorded so far.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    /// Waits (on watch events, no polling) until `done` holds, failing the test after
    /// `limit` with `what` and `progress` of the last state; fails at once on a violation.
    pub async fn wait(
        &self,
        what: &str,
        limit: Duration,
        progress: impl Fn(&State) -> String,
        done: impl Fn(&State) -> bool,
    ) {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            {
                let state = self.state.lock().unwrap();
                assert!(state.violations.is_empty(), "{:?}", state.violations);
                if done(&state) {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                let state = self.state.lock().unwrap();
                panic!(
                    "timed out after {limit:?} waiting for {what}; {}",
                    progress(&state)
                );
            }
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
