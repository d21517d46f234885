//! Leader election with a `coordination.k8s.io/v1` Lease, written directly through the API.
//!
//! The holder renews `renewTime` every third of the lease duration and believes it leads only
//! until a renew deadline (two thirds of the duration) after its last successful renewal was
//! sent. A standby never compares `renewTime` with its own wall clock: it takes the Lease
//! once it has seen the same Lease record unchanged for a whole duration by its own
//! monotonic clock, so clock skew between replicas cannot make two of them lead. Every write
//! is guarded by the resourceVersion just read, so two candidates can never both win.

use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;

/// A candidate for the leadership held in one Lease.
#[derive(Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    state: Mutex<Observation>,
}

/// What this candidate saw of the Lease, by its own clock.
#[derive(Debug, Default)]
struct Observation {
    /// resourceVersion of the Lease record last read, and when it was first seen.
    record: Option<(String, Instant)>,
    /// When the last successful acquire or renewal was sent.
    renewed: Option<Instant>,
}

/// Whether a Lease as read may be taken by `identity`, given how long this candidate has
/// seen that same record unchanged (`unchanged_for`, by its own monotonic clock). The
/// Lease's `renewTime` is never compared with the local wall clock: the holder's clock may
/// be skewed.
pub fn can_take(spec: &LeaseSpec, identity: &str, unchanged_for: Duration) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let seconds = u64::try_from(spec.lease_duration_seconds.unwrap_or(15).max(1)).unwrap_or(15);
    unchanged_for >= Duration::from_secs(seconds)
}

/// The renew deadline for a lease `duration`: two thirds of it, so a holder whose renewals
/// fail stops writing a third of a duration before any standby can take over.
pub fn renew_deadline(duration: Duration) -> Duration {
    duration * 2 / 3
}

impl LeaseLock {
    /// A candidate `identity` for Lease `namespace/name` with the given duration.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            state: Mutex::new(Observation::default()),
        }
    }

    /// The identity this candidate writes.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often the holder renews (a third of the lease duration).
    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    fn retry_interval(&self) -> Duration {
        self.duration / 10
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn observation(&self) -> std::sync::MutexGuard<'_, Observation> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How much longer this candidate may act as the leader: `None` unless a renewal sent
    /// less than the renew deadline ago succeeded.
    pub fn leading_for(&self) -> Option<Duration> {
        let renewed = self.observation().renewed?;
        renew_deadline(self.duration)
            .checked_sub(renewed.elapsed())
            .filter(|left| !left.is_zero())
    }

    /// True while this candidate may act as the leader (see [`Self::leading_for`]).
    pub fn is_leading(&self) -> bool {
        self.leading_for().is_some()
    }

    /// Notes the record read and returns how long it has been seen unchanged.
    fn observe(&self, lease: &Lease) -> Duration {
        let rv = lease.resource_version().unwrap_or_default();
        let mut state = self.observation();
        match &state.record {
            Some((seen, since)) if *seen == rv => since.elapsed(),
            _ => {
                state.record = Some((rv, Instant::now()));
                Duration::ZERO
            }
        }
    }

    fn won(&self, written: &Lease, sent: Instant) {
        let mut state = self.observation();
        state.renewed = Some(sent);
        state.record = Some((written.resource_version().unwrap_or_default(), sent));
    }

    fn lost(&self) {
        self.observation().renewed = None;
    }

    /// One round: acquires or renews the Lease. `Ok(true)` while this candidate holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        // Leadership counts from before the request: the standby's clock for this record
        // starts only after the write is stored, so the holder's belief ends first.
        let sent = Instant::now();
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(written) => {
                    self.won(&written, sent);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let unchanged_for = self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        if !can_take(&spec, &self.identity, unchanged_for) {
            self.lost();
            return Ok(false);
        }
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let mut next = spec.clone();
        if !ours {
            next.holder_identity = Some(self.identity.clone());
            next.acquire_time = Some(MicroTime(now));
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next.renew_time = Some(MicroTime(now));
        next.lease_duration_seconds = Some(self.seconds());
        lease.spec = Some(next);
        // `replace` sends the resourceVersion read above: a concurrent writer makes this a 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                self.won(&written, sent);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.lost();
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so a standby takes over at once instead of after a duration.
    pub async fn release(&self) -> Result<(), kube::Error> {
        self.lost();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// The current holder, if any.
    pub async fn holder(&self) -> Result<Option<String>, kube::Error> {
        Ok(self
            .api
            .get_opt(&self.name)
            .await?
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty()))
    }

    /// Waits until this candidate holds the Lease (retrying every renew interval).
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, lease = %self.name, "leader election round failed"),
            }
            tokio::time::sleep(self.renew_interval()).await;
        }
    }

    /// Renews while leading and returns as soon as this candidate may no longer act as the
    /// leader: another replica holds the Lease, or no renewal succeeded within the renew
    /// deadline (a renewal still in flight then is abandoned). The caller must stop writing.
    pub async fn keep_renewing(&self) {
        let mut wait = self.renew_interval();
        loop {
            let Some(left) = self.leading_for() else {
                tracing::error!(lease = %self.name, "could not renew the lease within the renew deadline");
                return;
            };
            tokio::time::sleep(wait.min(left)).await;
            let Some(left) = self.leading_for() else {
                continue;
            };
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => wait = self.renew_interval(),
                Ok(Ok(false)) => {
                    tracing::error!(lease = %self.name, "another replica holds the lease");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.name, "renewing the lease failed");
                    wait = self.retry_interval();
                }
                Err(_) => wait = Duration::ZERO,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: Option<i64>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_free_when_unheld_ours_or_unchanged_for_a_duration() {
        let secs = Duration::from_secs;
        assert!(can_take(&spec(None, None), "b", secs(0)));
        assert!(can_take(&spec(Some("b"), Some(999)), "b", secs(0)));
        assert!(can_take(&spec(Some(""), Some(999)), "b", secs(0)));
        assert!(
            !can_take(&spec(Some("a"), Some(990)), "b", secs(10)),
            "seen unchanged for 10s of 15"
        );
        assert!(can_take(&spec(Some("a"), Some(985)), "b", secs(15)));
    }

    #[test]
    fn a_renew_time_far_in_the_past_is_not_expiry() {
        // The holder's clock is an hour behind: its renewTime looks ancient, but the record
        // just changed, so it is alive.
        assert!(!can_take(&spec(Some("a"), Some(1)), "b", Duration::ZERO));
    }

    #[test]
    fn the_renew_deadline_ends_before_the_lease_expires() {
        let duration = Duration::from_secs(15);
        assert_eq!(renew_deadline(duration), Duration::from_secs(10));
        assert!(renew_deadline(duration) < duration);
    }
}
