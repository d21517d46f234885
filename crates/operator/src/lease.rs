//! Leader election with a `coordination.k8s.io/v1` Lease, written directly through the API:
//! the holder renews `renewTime` every third of the lease duration; anyone may take the
//! Lease once it has not been renewed for a whole duration. Every write is guarded by the
//! resourceVersion just read, so two candidates can never both win.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// A candidate for the leadership held in one Lease.
#[derive(Clone, Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// Whether a Lease as read may be taken by `identity` at `now`.
pub fn can_take(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    now.duration_since(renewed.0).as_secs() >= duration
}

impl LeaseLock {
    /// A candidate `identity` for Lease `namespace/name` with the given duration.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
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

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One round: acquires or renews the Lease. `Ok(true)` while this candidate holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
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
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if !can_take(&spec, &self.identity, now) {
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
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so a standby takes over at once instead of after a duration.
    pub async fn release(&self) -> Result<(), kube::Error> {
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

    /// Renews until a renewal has not succeeded for a whole lease duration (someone else may
    /// hold it by now), then returns: the caller must stop writing.
    pub async fn keep_renewing(&self) {
        let mut last_success = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_interval()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_success = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "another replica holds the lease");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, lease = %self.name, "renewing the lease failed"),
            }
            if last_success.elapsed() >= self.duration {
                tracing::error!(lease = %self.name, "could not renew the lease in time");
                return;
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
    fn a_lease_is_free_when_unheld_ours_or_expired() {
        let now = Timestamp::from_second(1000).unwrap();
        assert!(can_take(&spec(None, None), "b", now));
        assert!(can_take(&spec(Some("b"), Some(999)), "b", now));
        assert!(
            !can_take(&spec(Some("a"), Some(990)), "b", now),
            "renewed 10s ago"
        );
        assert!(can_take(&spec(Some("a"), Some(985)), "b", now), "expired");
        assert!(can_take(&spec(Some(""), Some(999)), "b", now));
    }
}
