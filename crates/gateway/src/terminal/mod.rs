//! Terminals: a WebSocket from the browser bridged to an SSH PTY on one VM of the session's
//! practice cluster. `POST /api/v1/sessions/{id}/terminals` mints a URL carrying a signed
//! [`capability`]; the page at that URL opens `…/ws`, and [`bridge`] connects it to a shell
//! over the same SSH access the operator uses (`cks-ssh`: the pool's key, the cluster's
//! pinned host key, direct or port-forward transport). No address of a VM ever appears in a
//! URL, and nothing but a live session's own capability reaches SSH.
//!
//! Bounds: terminals per session on this replica ([`Terminals::acquire`]), an idle timeout,
//! and memory per terminal (small SSH channel buffers, WebSocket messages capped, each
//! output frame written before the next is read, so a flood in the VM waits in TCP, not
//! here). The protocol is in `docs/gateway.md`.

pub mod bridge;
pub mod capability;
mod page;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cks_api::Session;
use cks_api::practice_cluster::PracticeCluster;
use cks_api::session::SessionPhase;
use kube::ResourceExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

pub use capability::{Claims, Signer};
pub use page::{FALLBACK_SCRIPT, page_response};

use crate::state::Caches;

/// Why a terminal closed: the `reason` of the last control message and the close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The session ended, expired or was deleted.
    SessionEnded,
    /// No keystroke or resize for the idle timeout.
    Idle,
    /// The capability was malformed, forged or expired when the socket opened.
    Expired,
    /// The session has as many terminals open as allowed.
    Limit,
    /// The shell on the VM exited.
    ShellExited,
    /// SSH to the VM failed.
    Unreachable,
    /// The gateway is shutting down.
    Shutdown,
    /// The browser closed the socket (no control message is sent).
    ClientClosed,
}

impl CloseReason {
    /// The `reason` string of the protocol (and the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionEnded => "session-ended",
            Self::Idle => "idle",
            Self::Expired => "expired",
            Self::Limit => "limit",
            Self::ShellExited => "shell-exited",
            Self::Unreachable => "unreachable",
            Self::Shutdown => "shutdown",
            Self::ClientClosed => "client-closed",
        }
    }

    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Self::ShellExited | Self::ClientClosed => 1000,
            Self::Shutdown => 1001,
            Self::Unreachable => 1011,
            Self::Expired => 4001,
            Self::SessionEnded => 4003,
            Self::Idle => 4008,
            Self::Limit => 4029,
        }
    }
}

/// Labels of the closed-terminals counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CloseLabels {
    /// [`CloseReason::as_str`].
    pub reason: &'static str,
}

/// Terminal bookkeeping shared by the handlers of one replica.
pub struct Terminals {
    /// Signs and verifies terminal URLs.
    pub signer: Signer,
    /// How SSH reaches the VMs.
    pub ssh: cks_ssh::AccessOptions,
    /// Open terminals per Session uid.
    per_session: Mutex<HashMap<String, u32>>,
    /// Open terminals (a metric).
    pub open: Gauge,
    /// Terminals closed, by reason (a metric).
    pub closed: Family<CloseLabels, Counter>,
}

impl std::fmt::Debug for Terminals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminals")
            .field("ssh", &self.ssh)
            .field("open", &self.open.get())
            .finish_non_exhaustive()
    }
}

/// One open terminal's place in its session's count; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    terminals: Arc<Terminals>,
    uid: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .terminals
            .per_session
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
        self.terminals.open.dec();
    }
}

impl Terminals {
    pub fn new(
        signer: Signer,
        ssh: cks_ssh::AccessOptions,
        open: Gauge,
        closed: Family<CloseLabels, Counter>,
    ) -> Self {
        Self {
            signer,
            ssh,
            per_session: Mutex::default(),
            open,
            closed,
        }
    }

    /// A place for one more terminal of session `uid`, unless `limit` are open.
    pub fn acquire(self: &Arc<Self>, uid: &str, limit: u32) -> Option<Slot> {
        let mut map = self.per_session.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(uid.to_owned()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        self.open.inc();
        Some(Slot {
            terminals: self.clone(),
            uid: uid.to_owned(),
        })
    }

    /// Open terminals of session `uid` on this replica.
    pub fn open_for(&self, uid: &str) -> u32 {
        let map = self.per_session.lock().unwrap_or_else(|e| e.into_inner());
        map.get(uid).copied().unwrap_or(0)
    }
}

/// The session and cluster a capability's terminal runs on, while that session is live: not
/// being deleted, `Initializing` or `Ready` (terminals work during setup), still the uid and
/// user the capability names, and its cluster still claimed by it.
pub fn live_target(caches: &Caches, claims: &Claims) -> Option<(Session, PracticeCluster)> {
    let session = caches.session(&claims.session)?;
    let status = session.status.as_ref()?;
    let running = matches!(status.phase, SessionPhase::Initializing | SessionPhase::Ready);
    if !running
        || session.metadata.deletion_timestamp.is_some()
        || session.uid().as_deref() != Some(claims.uid.as_str())
        || session.spec.user != claims.user
    {
        return None;
    }
    let cluster = caches.cluster(status.cluster.as_deref()?)?;
    let claimed = cluster
        .spec
        .claim_ref
        .as_ref()
        .is_some_and(|c| c.name == claims.session && c.uid.as_deref().is_none_or(|u| u == claims.uid));
    claimed.then_some((session, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_session_and_given_back() {
        let terminals = Arc::new(Terminals::new(
            Signer::new(&[[7u8; 32]]),
            cks_ssh::AccessOptions::default(),
            Gauge::default(),
            Family::default(),
        ));
        let a1 = terminals.acquire("a", 2).unwrap();
        let a2 = terminals.acquire("a", 2).unwrap();
        assert!(terminals.acquire("a", 2).is_none());
        let b1 = terminals.acquire("b", 2).unwrap();
        assert_eq!(terminals.open.get(), 3);
        drop(a1);
        assert_eq!(terminals.open_for("a"), 1);
        let _a3 = terminals.acquire("a", 2).unwrap();
        drop((a2, b1));
        assert_eq!(terminals.open_for("b"), 0);
        assert_eq!(terminals.open.get(), 1);
    }

    #[test]
    fn close_codes_follow_the_protocol() {
        assert_eq!(CloseReason::ShellExited.code(), 1000);
        assert_eq!(CloseReason::Expired.code(), 4001);
        assert_eq!(CloseReason::SessionEnded.code(), 4003);
        assert_eq!(CloseReason::Idle.code(), 4008);
        assert_eq!(CloseReason::Limit.code(), 4029);
        assert_eq!(CloseReason::Unreachable.code(), 1011);
        assert_eq!(CloseReason::Shutdown.code(), 1001);
    }
}
