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
use cks_api::session::{Session, SessionPhase};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::NS;

/// One claim: the cluster's claimRef came to name the Session `uid` at `version`.
#[derive(Clone, Debug)]
pub struct Claim {
    pub version: u64,
    pub cluster: String,
    pub uid: String,
}

/// What the Session watch showed of one Session.
#[derive(Clone, Debug)]
pub struct Seen {
    pub name: String,
    pub pool: String,
    /// The queue order: `(creationTimestamp, name)`.
    pub key: (Timestamp, String),
    /// First version at which it was WaitingForCluster (queued by the operator).
    pub queued: Option<u64>,
    /// First version at which it showed ClusterAssigned, and the cluster its status named.
    pub assigned: Option<(u64, String)>,
    /// Version of its deletion (deletionTimestamp set or gone).
    pub deleted: Option<u64>,
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
}

impl State {
    /// Sessions (by name) whose status shows a cluster assigned.
    pub fn assigned(&self) -> usize {
        self.sessions.values().filter(|s| s.assigned.is_some()).count()
    }

    /// Claims that broke FIFO: a Session of the same pool, older by `(creationTimestamp,
    /// name)`, was already queued (WaitingForCluster) and still unclaimed (and not deleted)
    /// when a younger one's claim was written. At most `limit`, each with its versions.
    pub fn fifo_violations(&self, limit: usize) -> Vec<String> {
        let first_claim: HashMap<&str, u64> = self.claims.iter().fold(HashMap::new(), |mut m, c| {
            m.entry(c.uid.as_str()).or_insert(c.version);
            m
        });
        let mut out = Vec::new();
        for (uid, &at) in &first_claim {
            let Some(young) = self.sessions.get(*uid) else {
                continue;
            };
            for (other_uid, old) in &self.sessions {
                let passed_over = old.pool == young.pool
                    && old.key < young.key
                    && old.queued.is_some_and(|q| q < at)
                    && first_claim.get(other_uid.as_str()).is_none_or(|&c| c > at)
                    && old.deleted.is_none_or(|d| d > at);
                if passed_over && out.len() < limit {
                    out.push(format!(
                        "{} claimed at version {at} while the older {} (queued at {:?}) waited until {:?}",
                        young.name,
                        old.name,
                        old.queued,
                        first_claim.get(other_uid.as_str())
                    ));
                }
            }
        }
        out
    }

    fn cluster_event(&mut self, pc: &PracticeCluster) {
        let name = pc.name_any();
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
                self.claims.push(Claim {
                    version,
                    cluster: name,
                    uid,
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
                queued: None,
                assigned: None,
                deleted: None,
            });
        if gone || s.metadata.deletion_timestamp.is_some() {
            seen.deleted.get_or_insert(version);
        }
        let Some(st) = &s.status else { return };
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
        let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
        let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
        let (c_listed, c_ready) = tokio::sync::oneshot::channel();
        let (s_listed, s_ready) = tokio::sync::oneshot::channel();
        let cluster_task = {
            let (state, tx) = (state.clone(), tx.clone());
            tokio::spawn(async move {
                let mut listed = Some(c_listed);
                // No backoff wrapper: a watch error is a failure of the record, not a reason
                // to relist and miss the events in between.
                let mut events = std::pin::pin!(watcher(clusters, watcher::Config::default()));
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(pc) | watcher::Event::InitApply(pc)) => {
                            state.lock().unwrap().cluster_event(&pc);
                        }
                        Ok(watcher::Event::Delete(pc)) => {
                            state.lock().unwrap().holders.remove(&pc.name_any());
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(l) = listed.take() {
                                let _ = l.send(());
                            }
                        }
                        Ok(watcher::Event::Init) => {}
                        Err(e) => state
                            .lock()
                            .unwrap()
                            .violations
                            .push(format!("the cluster watch failed: {e}")),
                    }
                    tx.send_modify(|n| *n += 1);
                }
            })
        };
        let session_task = {
            let (state, tx) = (state.clone(), tx.clone());
            tokio::spawn(async move {
                let mut listed = Some(s_listed);
                let mut events = std::pin::pin!(watcher(sessions, watcher::Config::default()));
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                            state.lock().unwrap().session_event(&s, false);
                        }
                        Ok(watcher::Event::Delete(s)) => state.lock().unwrap().session_event(&s, true),
                        Ok(watcher::Event::InitDone) => {
                            if let Some(l) = listed.take() {
                                let _ = l.send(());
                            }
                        }
                        Ok(watcher::Event::Init) => {}
                        Err(e) => state
                            .lock()
                            .unwrap()
                            .violations
                            .push(format!("the Session watch failed: {e}")),
                    }
                    tx.send_modify(|n| *n += 1);
                }
            })
        };
        c_ready.await.expect("the cluster watch lists");
        s_ready.await.expect("the Session watch lists");
        Self {
            state,
            changed,
            tasks: vec![cluster_task, session_task],
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
