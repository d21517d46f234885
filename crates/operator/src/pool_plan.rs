//! What a ClusterPool should create and delete, as a pure function of its spec and the
//! clusters observed: the warm buffer, the caps, failed-cluster replacement, recycling,
//! template rollout and idle scale-down. The controller applies the [`Plan`] as it is.
//! [`track_failures`] keeps the count of clusters failed in a row that backs off creation.

use cks_api::cluster_pool::{ClusterPoolSpec, RolloutStrategy};
use cks_api::practice_cluster::PracticeClusterPhase;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// What the planner needs to know about one cluster of the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterInfo {
    /// PracticeCluster name.
    pub name: String,
    /// Its phase.
    pub phase: PracticeClusterPhase,
    /// Claimed by a Session.
    pub assigned: bool,
    /// Built from the pool's current template.
    pub updated: bool,
    /// Sessions served so far.
    pub sessions_served: i32,
    /// Creation time.
    pub created: Timestamp,
    /// Already being deleted (finalizer still running). Counts towards `maxClusters`, since
    /// its VMs still exist, but is neither warm nor deletable.
    pub deleting: bool,
    /// When it first became Available.
    pub available_since: Option<Timestamp>,
    /// `failureReason` and `failureMessage`, when Failed.
    pub failure: Option<(String, String)>,
}

impl ClusterInfo {
    fn idle_available(&self) -> bool {
        !self.deleting && !self.assigned && self.phase == PracticeClusterPhase::Available
    }
}

/// Why the planner deletes a cluster; the stable reason goes into events and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// A Failed cluster beyond the `keepFailed` newest.
    Failed,
    /// Served `recycle.afterSessions` sessions.
    RecycledSessions,
    /// Older than `recycle.maxAgeMinutes`.
    RecycledAge,
    /// Built from an outdated template (rollout).
    Outdated,
    /// More idle clusters than `minAvailable`.
    Surplus,
}

impl DeleteReason {
    /// Short stable reason for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "ReplacingFailed",
            Self::RecycledSessions => "RecycledAfterSessions",
            Self::RecycledAge => "RecycledMaxAge",
            Self::Outdated => "RollingOutTemplate",
            Self::Surplus => "ScaledDown",
        }
    }
}

/// The decision of one reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// New clusters to create now.
    pub create: u32,
    /// Clusters to delete now, with the reason.
    pub delete: Vec<(String, DeleteReason)>,
    /// Unassigned clusters Available or on their way (Pending to Snapshotting, or Resetting)
    /// after the plan, on the current template.
    pub warm: u32,
    /// The buffer cannot be met because of `maxClusters` (assigned and failed clusters
    /// take every slot).
    pub capped: bool,
    /// Clusters are wanted but none is created before this time: recent ones kept failing.
    pub held_until: Option<Timestamp>,
}

impl Plan {
    /// True when the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.create == 0 && self.delete.is_empty()
    }
}

fn doomed(name: &str, reason: DeleteReason, delete: &mut Vec<(String, DeleteReason)>) {
    if !delete.iter().any(|(n, _)| n == name) {
        delete.push((name.to_owned(), reason));
    }
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// Decides what to create and delete.
///
/// Resetting clusters count towards the warm buffer: they return to Available within a
/// reset, and counting them avoids building a cluster at every session end only to scale
/// one down a few minutes later. Clusters being deleted count towards `maxClusters` until
/// they are gone, because their VMs and disks still use the capacity the cap protects.
///
/// While `hold_until` is in the future (see [`track_failures`]), nothing is created: a
/// template that fails every cluster would otherwise be rebuilt as fast as it fails.
pub fn plan(
    spec: &ClusterPoolSpec,
    clusters: &[ClusterInfo],
    hold_until: Option<Timestamp>,
    now: Timestamp,
) -> Plan {
    let min_available = to_u32(spec.min_available);
    let max_clusters = to_u32(spec.max_clusters);
    let max_in_flight = to_u32(spec.max_concurrent_provisioning).max(1);
    let rolling = spec.rollout.strategy == RolloutStrategy::Rolling;
    let mut delete: Vec<(String, DeleteReason)> = Vec::new();

    // Failed clusters: keep the newest `keepFailed` for inspection, replace the rest. One
    // still claimed is left to its Session, which releases it.
    let mut failed: Vec<&ClusterInfo> = clusters
        .iter()
        .filter(|c| !c.deleting && !c.assigned && c.phase == PracticeClusterPhase::Failed)
        .collect();
    failed.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
    for c in failed.iter().skip(to_u32(spec.keep_failed) as usize) {
        doomed(&c.name, DeleteReason::Failed, &mut delete);
    }

    // Recycling and release-time rollout only ever touch unassigned clusters that are not
    // being built: Available ones and released ones (Resetting).
    let recyclable = |c: &ClusterInfo| {
        !c.deleting
            && !c.assigned
            && matches!(
                c.phase,
                PracticeClusterPhase::Available | PracticeClusterPhase::Resetting
            )
    };
    let recycle = spec.recycle.clone().unwrap_or_default();
    for c in clusters.iter().filter(|c| recyclable(c)) {
        if recycle.after_sessions.is_some_and(|n| c.sessions_served >= n) {
            doomed(&c.name, DeleteReason::RecycledSessions, &mut delete);
        } else if recycle
            .max_age_minutes
            .is_some_and(|m| now.duration_since(c.created).as_secs() >= i64::from(m) * 60)
        {
            doomed(&c.name, DeleteReason::RecycledAge, &mut delete);
        } else if !c.updated && c.phase == PracticeClusterPhase::Resetting {
            // Released from an outdated template: replace rather than reset (both strategies).
            doomed(&c.name, DeleteReason::Outdated, &mut delete);
        }
    }
    if rolling {
        // An outdated cluster still being built will never be wanted.
        for c in clusters
            .iter()
            .filter(|c| !c.deleting && !c.updated && c.phase.is_provisioning())
        {
            doomed(&c.name, DeleteReason::Outdated, &mut delete);
        }
    }

    let gone = |c: &ClusterInfo, delete: &[(String, DeleteReason)]| {
        c.deleting || delete.iter().any(|(n, _)| *n == c.name)
    };
    let total = clusters.len() as u32;
    let in_flight = clusters
        .iter()
        .filter(|c| !gone(c, &delete) && c.phase.is_provisioning())
        .count() as u32;
    let fresh_available = clusters
        .iter()
        .filter(|c| !gone(c, &delete) && c.idle_available() && c.updated)
        .count() as u32;
    let coming = clusters
        .iter()
        .filter(|c| {
            !gone(c, &delete)
                && !c.assigned
                && (c.phase.is_provisioning() || c.phase == PracticeClusterPhase::Resetting)
        })
        .count() as u32;
    let mut outdated: Vec<&ClusterInfo> = clusters
        .iter()
        .filter(|c| !gone(c, &delete) && c.idle_available() && !c.updated)
        .collect();
    outdated.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));

    // With Rolling, outdated idle clusters do not count as warm: replacements are built for
    // them, and each is deleted only once the Available buffer holds without it.
    let outdated_warm = if rolling { 0 } else { outdated.len() as u32 };
    let warm = fresh_available + coming + outdated_warm;
    let room = max_clusters.saturating_sub(total);
    let slots = max_in_flight.saturating_sub(in_flight);
    let wanted = min_available.saturating_sub(warm);
    let held_until = hold_until.filter(|t| *t > now && wanted.min(room).min(slots) > 0);
    let create = if held_until.is_some() {
        0
    } else {
        wanted.min(room).min(slots)
    };
    let capped = wanted > room;

    if rolling && !outdated.is_empty() {
        let available_without = fresh_available;
        let mut deletable = (available_without + outdated.len() as u32).saturating_sub(min_available);
        // At the cap with nothing being built, a replacement can only start once an outdated
        // cluster is gone: give up one warm cluster at a time rather than never rolling out.
        if room == 0 && in_flight == 0 && create == 0 {
            deletable = deletable.max(1);
        }
        for c in outdated.iter().take(deletable as usize) {
            doomed(&c.name, DeleteReason::Outdated, &mut delete);
        }
    }

    // Idle surplus: more warm clusters than the buffer asks for. Only Available clusters are
    // deleted (outdated first, then oldest), and never below `minAvailable` of them, so a
    // ready cluster is not traded for one still being built; builds in flight finish and
    // are trimmed later.
    let warm_after = warm + create;
    let mut idle: Vec<&ClusterInfo> = clusters
        .iter()
        .filter(|c| !gone(c, &delete) && c.idle_available())
        .collect();
    let idle_spare = (idle.len() as u32).saturating_sub(min_available);
    if warm_after > min_available && idle_spare > 0 {
        let mut surplus = (warm_after - min_available).min(idle_spare);
        idle.sort_by(|a, b| {
            a.updated
                .cmp(&b.updated)
                .then_with(|| a.created.cmp(&b.created))
                .then_with(|| a.name.cmp(&b.name))
        });
        for c in idle {
            if surplus == 0 {
                break;
            }
            doomed(&c.name, DeleteReason::Surplus, &mut delete);
            surplus -= 1;
        }
    }

    let warm = clusters
        .iter()
        .filter(|c| {
            !gone(c, &delete)
                && !c.assigned
                && c.updated
                && (c.phase.is_provisioning()
                    || matches!(
                        c.phase,
                        PracticeClusterPhase::Available | PracticeClusterPhase::Resetting
                    ))
        })
        .count() as u32
        + create;
    Plan {
        create,
        delete,
        warm,
        capped,
        held_until,
    }
}

/// Exponential backoff of cluster creation after failures: `base` doubling per failure in a
/// row, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// Wait after `failures` failures in a row (none after zero).
    pub fn delay(self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow((failures - 1).min(30));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Failures of a pool's clusters, as kept in the pool's status between reconciles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    /// Clusters on the current template failed since one last became Available.
    pub consecutive: u32,
    /// When the pool last saw a cluster fail.
    pub last_time: Option<Timestamp>,
    /// Name, reason and message of the cluster that failed last.
    pub last: Option<(String, String, String)>,
    /// No cluster is created before this time.
    pub next_create: Option<Timestamp>,
    /// Failed clusters already counted.
    pub counted: Vec<String>,
}

fn whole_second(t: Timestamp, up: bool) -> Timestamp {
    let second = t.as_second() + i64::from(up && t.subsec_nanosecond() > 0);
    Timestamp::from_second(second).unwrap_or(t)
}

/// Counts the clusters that failed since the last reconcile and derives when the next cluster
/// may be created. Each Failed cluster is counted once: its name stays in `counted` while it
/// exists undeleted. A cluster that became Available after the last failure resets the count
/// (the template builds), and so does a new template (`template_changed`). Failures of
/// clusters on an outdated template say nothing about the current one and are not counted.
pub fn track_failures(
    previous: &Failures,
    clusters: &[ClusterInfo],
    template_changed: bool,
    backoff: Backoff,
    now: Timestamp,
) -> Failures {
    let mut next = if template_changed {
        Failures::default()
    } else {
        previous.clone()
    };
    let recovered = next.last_time.is_some_and(|last| {
        clusters
            .iter()
            .any(|c| c.updated && c.available_since.is_some_and(|t| t > last))
    });
    if recovered {
        next.consecutive = 0;
        next.next_create = None;
    }
    let failed: Vec<&ClusterInfo> = clusters
        .iter()
        .filter(|c| !c.deleting && c.phase == PracticeClusterPhase::Failed)
        .collect();
    let mut new: Vec<&ClusterInfo> = failed
        .iter()
        .copied()
        .filter(|c| c.updated && !next.counted.contains(&c.name))
        .collect();
    new.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    next.counted = failed
        .iter()
        .filter(|c| next.counted.contains(&c.name) || new.iter().any(|n| n.name == c.name))
        .map(|c| c.name.clone())
        .collect();
    next.counted.sort();
    if let Some(last) = new.last() {
        next.consecutive = next
            .consecutive
            .saturating_add(u32::try_from(new.len()).unwrap_or(u32::MAX));
        // Status times have whole seconds: the last failure is rounded down, the end of
        // the wait up, so what is read back is what was decided and no wait is cut short.
        next.last_time = Some(whole_second(now, false));
        let (reason, message) = last.failure.clone().unwrap_or_default();
        next.last = Some((last.name.clone(), reason, message));
        let delay = SignedDuration::try_from(backoff.delay(next.consecutive)).unwrap_or(SignedDuration::MAX);
        next.next_create = now.checked_add(delay).ok().map(|t| whole_second(t, true));
    }
    if next.next_create.is_some_and(|t| t <= now) {
        next.next_create = None;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use PracticeClusterPhase::*;
    use cks_api::cluster_pool::RecyclePolicy;

    fn spec(min: i32, max: i32, in_flight: i32) -> ClusterPoolSpec {
        serde_json::from_value(serde_json::json!({
            "minAvailable": min,
            "maxClusters": max,
            "maxConcurrentProvisioning": in_flight,
            "template": {
                "kubernetesVersion": "1.33.0",
                "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
                "workers": {"count": 1, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
                "goldenImage": {"namespace": "vm-templates", "name": "img"},
                "sshKeySecretRef": {"name": "key"},
            },
        }))
        .unwrap()
    }

    fn at(minutes: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minutes * 60).unwrap()
    }

    fn cluster(name: &str, phase: PracticeClusterPhase) -> ClusterInfo {
        ClusterInfo {
            name: name.to_owned(),
            phase,
            assigned: phase == Assigned,
            updated: true,
            sessions_served: 0,
            created: at(0),
            deleting: false,
            available_since: None,
            failure: None,
        }
    }

    fn deleted(plan: &Plan) -> Vec<(&str, DeleteReason)> {
        plan.delete.iter().map(|(n, r)| (n.as_str(), *r)).collect()
    }

    #[test]
    fn empty_pool_builds_the_buffer_up_to_the_concurrency_limit() {
        let p = plan(&spec(3, 6, 2), &[], None, at(1));
        assert_eq!((p.create, p.delete.len(), p.capped), (2, 0, false));
        let p = plan(&spec(3, 6, 5), &[], None, at(1));
        assert_eq!(p.create, 3);
        assert_eq!(p.warm, 3);
    }

    #[test]
    fn clusters_in_flight_count_as_warm_and_against_concurrency() {
        let clusters = [cluster("a", Provisioning), cluster("b", Bootstrapping)];
        let p = plan(&spec(3, 6, 2), &clusters, None, at(1));
        assert_eq!(p.create, 0, "two in flight use both slots");
        let p = plan(&spec(3, 6, 3), &clusters, None, at(1));
        assert_eq!(p.create, 1);
    }

    #[test]
    fn assigned_clusters_do_not_count_as_warm_but_count_towards_the_cap() {
        let clusters = [
            cluster("a", Assigned),
            cluster("b", Assigned),
            cluster("c", Available),
        ];
        let p = plan(&spec(2, 3, 2), &clusters, None, at(1));
        assert_eq!(p.create, 0);
        assert!(p.capped, "buffer 1/2 with the cap reached");
        let p = plan(&spec(2, 6, 2), &clusters, None, at(1));
        assert_eq!((p.create, p.capped), (1, false));
    }

    #[test]
    fn a_failed_cluster_still_claimed_is_left_to_its_session() {
        let mut claimed = cluster("a", Failed);
        claimed.assigned = true;
        let clusters = [claimed, cluster("b", Failed)];
        let mut s = spec(1, 6, 2);
        s.keep_failed = 0;
        let p = plan(&s, &clusters, None, at(1));
        assert_eq!(deleted(&p), [("b", DeleteReason::Failed)]);
    }

    #[test]
    fn clusters_torn_down_count_towards_the_cap() {
        let mut old = cluster("old", Available);
        old.deleting = true;
        let p = plan(&spec(2, 2, 2), &[old], None, at(1));
        assert_eq!((p.create, p.capped), (1, true));
    }

    #[test]
    fn resetting_clusters_count_as_warm() {
        let clusters = [cluster("a", Resetting), cluster("b", Available)];
        let p = plan(&spec(2, 6, 2), &clusters, None, at(1));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn failed_clusters_beyond_keep_failed_are_replaced_newest_kept() {
        let mut old = cluster("old", Failed);
        old.created = at(0);
        let mut new = cluster("new", Failed);
        new.created = at(5);
        let clusters = [old, new, cluster("ok", Available)];
        let mut s = spec(2, 6, 2);
        s.keep_failed = 1;
        let p = plan(&s, &clusters, None, at(10));
        assert_eq!(deleted(&p), [("old", DeleteReason::Failed)]);
        assert_eq!(p.create, 1, "failed clusters are not warm");
        s.keep_failed = 0;
        let p = plan(&s, &clusters, None, at(10));
        assert_eq!(p.delete.len(), 2);
    }

    #[test]
    fn deleting_clusters_hold_their_slot_until_gone() {
        let mut going = cluster("going", Failed);
        going.deleting = true;
        let clusters = [going, cluster("a", Available)];
        let p = plan(&spec(2, 2, 2), &clusters, None, at(1));
        assert_eq!(p.create, 0);
        assert!(p.delete.is_empty(), "already deleting");
        assert!(p.capped);
    }

    #[test]
    fn recycling_retires_idle_clusters_after_sessions_or_age_but_never_assigned_ones() {
        let mut s = spec(1, 6, 2);
        s.recycle = Some(RecyclePolicy {
            after_sessions: Some(3),
            max_age_minutes: Some(60),
        });
        let mut worn = cluster("worn", Available);
        worn.sessions_served = 3;
        let mut old = cluster("old", Resetting);
        old.created = at(0);
        let mut busy = cluster("busy", Assigned);
        busy.sessions_served = 9;
        let mut young = cluster("young", Available);
        young.created = at(50);
        let p = plan(&s, &[worn, old, busy, young], None, at(61));
        assert_eq!(
            deleted(&p),
            [
                ("worn", DeleteReason::RecycledSessions),
                ("old", DeleteReason::RecycledAge)
            ]
        );
        assert_eq!(p.create, 0, "young is warm");
    }

    #[test]
    fn rolling_builds_replacements_before_deleting_outdated_clusters() {
        let mut a = cluster("a", Available);
        a.updated = false;
        let mut b = cluster("b", Available);
        b.updated = false;
        b.created = at(1);
        let s = spec(2, 6, 1);
        let p = plan(&s, &[a.clone(), b.clone()], None, at(5));
        assert_eq!(p.create, 1, "one replacement at a time");
        assert!(
            p.delete.is_empty(),
            "nothing deleted before a replacement is Available"
        );

        let p = plan(&s, &[a.clone(), b.clone(), cluster("n1", Available)], None, at(5));
        assert_eq!(deleted(&p), [("a", DeleteReason::Outdated)], "oldest first");
        assert_eq!(p.create, 1);
    }

    #[test]
    fn rolling_never_touches_assigned_clusters() {
        let mut busy = cluster("busy", Assigned);
        busy.updated = false;
        let p = plan(&spec(1, 6, 2), &[busy, cluster("n", Available)], None, at(5));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn rolling_at_the_cap_gives_up_one_outdated_cluster_at_a_time() {
        let mut a = cluster("a", Available);
        a.updated = false;
        let mut b = cluster("b", Available);
        b.updated = false;
        b.created = at(1);
        let p = plan(&spec(2, 2, 2), &[a, b], None, at(5));
        assert_eq!(deleted(&p), [("a", DeleteReason::Outdated)]);
        assert_eq!(p.create, 0, "its slot frees once it is gone");
    }

    #[test]
    fn on_release_keeps_outdated_idle_clusters_and_replaces_released_ones() {
        let mut s = spec(2, 6, 2);
        s.rollout.strategy = RolloutStrategy::OnRelease;
        let mut idle = cluster("idle", Available);
        idle.updated = false;
        let mut released = cluster("released", Resetting);
        released.updated = false;
        let p = plan(&s, &[idle, released], None, at(5));
        assert_eq!(deleted(&p), [("released", DeleteReason::Outdated)]);
        assert_eq!(p.create, 1, "the outdated idle cluster still counts as warm");
    }

    #[test]
    fn rolling_deletes_outdated_clusters_still_being_built() {
        let mut building = cluster("building", Bootstrapping);
        building.updated = false;
        let p = plan(&spec(1, 6, 2), &[building], None, at(5));
        assert_eq!(deleted(&p), [("building", DeleteReason::Outdated)]);
        assert_eq!(p.create, 1);
    }

    #[test]
    fn idle_surplus_is_scaled_down_outdated_then_oldest_first() {
        let mut s = spec(1, 6, 2);
        s.rollout.strategy = RolloutStrategy::OnRelease;
        let mut old = cluster("old", Available);
        old.created = at(0);
        let mut outdated = cluster("outdated", Available);
        outdated.updated = false;
        outdated.created = at(3);
        let mut newer = cluster("newer", Available);
        newer.created = at(2);
        let p = plan(
            &s,
            &[newer, outdated, old, cluster("busy", Assigned)],
            None,
            at(5),
        );
        assert_eq!(
            deleted(&p),
            [
                ("outdated", DeleteReason::Surplus),
                ("old", DeleteReason::Surplus)
            ]
        );
        assert_eq!(p.create, 0);
    }

    #[test]
    fn scale_down_leaves_clusters_in_flight_alone() {
        let clusters = [cluster("a", Available), cluster("b", Provisioning)];
        let p = plan(&spec(0, 6, 2), &clusters, None, at(1));
        assert_eq!(deleted(&p), [("a", DeleteReason::Surplus)]);
        let p = plan(&spec(1, 6, 2), &clusters, None, at(1));
        assert!(
            p.is_empty(),
            "the ready cluster stays; b is trimmed once Available: {p:?}"
        );
    }

    #[test]
    fn steady_state_pool_plans_nothing() {
        let clusters = [
            cluster("a", Available),
            cluster("b", Available),
            cluster("c", Assigned),
        ];
        let p = plan(&spec(2, 6, 2), &clusters, None, at(1));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.warm, 2);
    }

    fn failed(name: &str, created: i64) -> ClusterInfo {
        let mut c = cluster(name, Failed);
        c.created = at(created);
        c.failure = Some((
            "UnsupportedKubernetesVersion".to_owned(),
            format!("{name}: kubernetes version too old"),
        ));
        c
    }

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(10),
        max: Duration::from_secs(300),
    };

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap() {
        let delays: Vec<u64> = (0..8).map(|n| BACKOFF.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(BACKOFF.delay(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn each_failed_cluster_is_counted_once_and_holds_creation_back() {
        let clusters = [failed("a", 0), failed("b", 1)];
        let first = track_failures(&Failures::default(), &clusters, false, BACKOFF, at(2));
        assert_eq!(first.consecutive, 2);
        assert_eq!(first.counted, ["a", "b"]);
        assert_eq!(first.last_time, Some(at(2)));
        let (name, reason, message) = first.last.clone().unwrap();
        assert_eq!(
            (name.as_str(), reason.as_str()),
            ("b", "UnsupportedKubernetesVersion")
        );
        assert!(message.contains("too old"));
        let hold = at(2) + SignedDuration::from_secs(20);
        assert_eq!(first.next_create, Some(hold), "two failures: 10 s doubled once");

        // Seen again (and again): nothing more is counted.
        let soon = at(2) + SignedDuration::from_secs(1);
        let again = track_failures(&first, &clusters, false, BACKOFF, soon);
        assert_eq!(again, first);

        // Deleted (keepFailed 0): they leave the list but are not counted again.
        let mut gone = clusters.clone();
        gone.iter_mut().for_each(|c| c.deleting = true);
        let after = track_failures(&first, &gone, false, BACKOFF, soon);
        assert_eq!((after.consecutive, after.counted.len()), (2, 0));

        // The replacement fails too: three in a row, 40 s.
        let third = track_failures(&after, &[failed("c", 4)], false, BACKOFF, at(5));
        let late = track_failures(
            &after,
            &[failed("c", 4)],
            false,
            BACKOFF,
            at(5) + SignedDuration::from_millis(1),
        );
        assert_eq!(
            late.next_create,
            Some(at(5) + SignedDuration::from_secs(41)),
            "rounded up to the whole second a status can hold"
        );
        assert_eq!(late.last_time, Some(at(5)), "rounded down");
        assert_eq!(third.consecutive, 3);
        assert_eq!(third.counted, ["c"]);
        assert_eq!(third.next_create, Some(at(5) + SignedDuration::from_secs(40)));
    }

    #[test]
    fn plan_creates_nothing_while_held_and_says_until_when() {
        let s = spec(2, 6, 2);
        let hold = at(5);
        let p = plan(&s, &[], Some(hold), at(4));
        assert_eq!((p.create, p.held_until), (0, Some(hold)));
        let p = plan(&s, &[], Some(hold), at(5));
        assert_eq!(
            (p.create, p.held_until),
            (2, None),
            "held up to, not including, the time"
        );
        let p = plan(
            &s,
            &[cluster("a", Available), cluster("b", Available)],
            Some(hold),
            at(4),
        );
        assert_eq!(p.held_until, None, "nothing wanted, nothing held");
        let p = plan(&s, &[failed("a", 0), failed("b", 0)], Some(hold), at(4));
        assert_eq!(
            deleted(&p).len(),
            2,
            "failed clusters are still removed while held"
        );
        assert_eq!(p.create, 0);
    }

    #[test]
    fn a_cluster_available_after_the_last_failure_resets_the_count() {
        let first = track_failures(&Failures::default(), &[failed("a", 0)], false, BACKOFF, at(2));
        // Available before the failure was seen: no reset (an older template's cluster, say).
        let mut old = cluster("old", Available);
        old.available_since = Some(at(1));
        let still = track_failures(&first, &[old.clone()], false, BACKOFF, at(3));
        assert_eq!(still.consecutive, 1);
        let mut fresh = cluster("fresh", Available);
        fresh.available_since = Some(at(3));
        let reset = track_failures(&first, &[old, fresh], false, BACKOFF, at(4));
        assert_eq!((reset.consecutive, reset.next_create), (0, None));
        assert!(reset.last.is_some(), "the last failure stays on record");
    }

    #[test]
    fn a_new_template_starts_a_clean_slate_and_outdated_failures_do_not_count() {
        let first = track_failures(&Failures::default(), &[failed("a", 0)], false, BACKOFF, at(2));
        let mut outdated = failed("b", 1);
        outdated.updated = false;
        let next = track_failures(&first, &[outdated], true, BACKOFF, at(3));
        assert_eq!(next, Failures::default());
    }
}
