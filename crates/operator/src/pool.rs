//! The ClusterPool controller: keeps the pool's PracticeClusters in line with its spec
//! (what to create and delete comes from [`crate::pool_plan`]) and reports counts and
//! conditions in the pool's status. Clusters are owned by their pool (owner reference), so
//! deleting a pool deletes its clusters, whose finalizers tear down their VMs.
//!
//! A template the operator cannot build is refused before any cluster is made from it, and
//! clusters that fail for good are replaced with an exponential backoff kept in the pool's
//! status, so a broken template or storage never turns into a create-fail-delete loop.

use std::sync::Arc;
use std::time::Duration;

use cks_api::cluster_pool::{ClusterPool, ClusterPoolStatus, ClusterTemplate};
use cks_api::conditions::{ConditionStatus, find_condition, new_condition, set_condition};
use cks_api::names::{condition_types, labels};
use cks_api::practice_cluster::{PracticeCluster, PracticeClusterPhase, PracticeClusterSpec};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::info;

use crate::context::Context;
use crate::controller::{Runner, lean_controller};
use crate::error::{Error, Result, kube_err};
use crate::isolation;
use crate::pool_plan::{self, Backoff, ClusterInfo, Failures, Plan};
use crate::status::{self, Guard, managers};

/// Controller name in metrics and events.
pub const CONTROLLER: &str = "clusterpool";

const PHASES: [PracticeClusterPhase; 8] = [
    PracticeClusterPhase::Pending,
    PracticeClusterPhase::Provisioning,
    PracticeClusterPhase::Bootstrapping,
    PracticeClusterPhase::Snapshotting,
    PracticeClusterPhase::Available,
    PracticeClusterPhase::Assigned,
    PracticeClusterPhase::Resetting,
    PracticeClusterPhase::Failed,
];

/// Longest wait between two clusters while clusters keep failing.
const MAX_CREATE_BACKOFF: Duration = Duration::from_secs(600);

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (pools, clusters): (
        Api<DeserializeGuard<ClusterPool>>,
        Api<DeserializeGuard<PracticeCluster>>,
    ) = match namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let metrics = ctx.metrics.clone();
    let controller =
        lean_controller(pools, watcher::Config::default()).owns(clusters, watcher::Config::default());
    Runner::new(CONTROLLER, ctx)
        // A pool that is gone (its clusters' deletion, or a requeue, still woke it): its
        // labelled series go with it.
        .on_gone(move |pool| {
            let phases: Vec<String> = PHASES.iter().map(|p| format!("{p:?}")).collect();
            metrics.forget_pool(
                pool.namespace.as_deref().unwrap_or_default(),
                &pool.name,
                phases.iter().map(String::as_str),
            );
        })
        .run(controller, shutdown, reconcile)
        .await;
}

/// Hash of a template: clusters labelled with another hash are outdated. Stable across
/// operator versions as long as the template's JSON form is (FNV-1a over it).
pub fn template_hash(template: &ClusterTemplate) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

/// `{pool}-{5 random [a-z0-9]}`.
pub fn cluster_name(pool: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("{pool}-{suffix}")
}

/// The PracticeCluster a pool creates: a copy of its template and policies, owned by it.
pub fn new_cluster(pool: &ClusterPool, name: &str, hash: &str) -> PracticeCluster {
    let pool_name = pool.name_any();
    let mut pc = PracticeCluster::new(
        name,
        PracticeClusterSpec {
            pool: pool_name.clone(),
            template: pool.spec.template.clone(),
            template_hash: hash.to_owned(),
            provisioning: pool.spec.provisioning.clone(),
            reset: pool.spec.reset.clone(),
            isolation: pool.spec.isolation.clone(),
            claim_ref: None,
        },
    );
    pc.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: pool.namespace(),
        labels: Some(
            [
                (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
                (labels::POOL, pool_name.as_str()),
                (labels::TEMPLATE_HASH, hash),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ),
        owner_references: pool.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    pc
}

/// What the planner needs from a cluster.
pub fn cluster_info(pc: &PracticeCluster, hash: &str, now: Timestamp) -> ClusterInfo {
    let status = pc.status.clone().unwrap_or_default();
    let failure = (status.phase == PracticeClusterPhase::Failed).then(|| {
        (
            status.failure_reason.clone().unwrap_or_default(),
            status.failure_message.clone().unwrap_or_default(),
        )
    });
    ClusterInfo {
        available_since: status.available_since.as_ref().map(|t| t.0),
        failure,
        name: pc.name_any(),
        phase: status.phase,
        assigned: pc.spec.claim_ref.is_some(),
        updated: pc.spec.template_hash == hash,
        sessions_served: status.sessions_served,
        created: pc.meta().creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now),
        deleting: pc.meta().deletion_timestamp.is_some(),
    }
}

/// The failure record kept in a pool's status.
pub fn failures_of(status: Option<&ClusterPoolStatus>) -> Failures {
    let Some(status) = status else {
        return Failures::default();
    };
    Failures {
        consecutive: u32::try_from(status.consecutive_failures).unwrap_or(0),
        last_time: status.last_failure_time.as_ref().map(|t| t.0),
        last: status.last_failure_reason.as_ref().map(|reason| {
            let message = status.last_failure_message.clone().unwrap_or_default();
            // The message is stored as `<cluster>: <message>`.
            let (cluster, message) = message
                .split_once(": ")
                .map(|(c, m)| (c.to_owned(), m.to_owned()))
                .unwrap_or((String::new(), message));
            (cluster, reason.clone(), message)
        }),
        next_create: status.next_create_time.as_ref().map(|t| t.0),
        counted: status.counted_failures.clone(),
    }
}

/// A condition reason must be CamelCase-ish (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`);
/// a cluster's failure reason is one, but is not trusted blindly.
fn condition_reason(reason: &str, fallback: &'static str) -> String {
    let ok = reason.starts_with(|c: char| c.is_ascii_alphabetic())
        && reason.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && reason
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_,:".contains(c))
        && reason.len() <= 1024;
    if ok {
        reason.to_owned()
    } else {
        fallback.to_owned()
    }
}

/// What a reconcile learnt besides the clusters and the plan.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Clusters failed in a row, and when the next may be created.
    pub failures: Failures,
    /// Why the template cannot be built at all (reason, message), if it cannot.
    pub template_error: Option<(String, String)>,
    /// Whether the ResourceQuota holds a cluster; `None` without a quota.
    pub quota: Option<isolation::QuotaCheck>,
}

/// The pool's status from the clusters observed and the plan just carried out.
pub fn pool_status(
    pool: &ClusterPool,
    clusters: &[ClusterInfo],
    hash: &str,
    plan: &Plan,
    findings: &Findings,
    scale_event: Option<String>,
    now: Timestamp,
) -> ClusterPoolStatus {
    let mut status = pool.status.clone().unwrap_or_default();
    let count = |f: &dyn Fn(&ClusterInfo) -> bool| clusters.iter().filter(|c| f(c)).count() as i32;
    status.observed_generation = pool.meta().generation;
    status.total = clusters.len() as i32;
    status.provisioning = count(&|c| c.phase.is_provisioning());
    status.available = count(&|c| c.phase == PracticeClusterPhase::Available && !c.assigned);
    status.assigned = count(&|c| c.assigned || c.phase == PracticeClusterPhase::Assigned);
    status.resetting = count(&|c| c.phase == PracticeClusterPhase::Resetting);
    status.failed = count(&|c| c.phase == PracticeClusterPhase::Failed);
    status.updated = count(&|c| c.updated);
    status.template_hash = Some(hash.to_owned());
    if let Some(event) = scale_event {
        status.last_scale_time = Some(Time(now));
        status.last_scale_event = Some(event);
    }
    let min = pool.spec.min_available;
    let ready = status.available >= min;
    let generation = pool.meta().generation;
    set_condition(
        &mut status.conditions,
        new_condition(
            condition_types::READY,
            ConditionStatus::from(ready),
            if ready { "BufferMet" } else { "BufferShort" },
            format!("{}/{min} clusters Available", status.available),
            generation,
            now,
        ),
    );
    let failures = &findings.failures;
    status.consecutive_failures = i32::try_from(failures.consecutive).unwrap_or(i32::MAX);
    status.last_failure_time = failures.last_time.map(Time);
    status.last_failure_reason = failures.last.as_ref().map(|(_, reason, _)| reason.clone());
    status.last_failure_message = failures
        .last
        .as_ref()
        .map(|(cluster, _, message)| format!("{cluster}: {message}"));
    status.next_create_time = failures.next_create.map(Time);
    status.counted_failures = failures.counted.clone();
    let (degraded, reason, message) = if let Some((reason, message)) = &findings.template_error {
        (
            true,
            condition_reason(reason, "InvalidTemplate"),
            format!("the template cannot be built, so no cluster is created until it changes: {message}"),
        )
    } else if let (true, Some((cluster, reason, message))) = (failures.consecutive > 0, &failures.last) {
        let next = match failures.next_create {
            Some(t) => format!("; the next cluster is created at {t} at the earliest"),
            None => String::new(),
        };
        (
            true,
            condition_reason(reason, "ClustersFailed"),
            format!(
                "{} clusters failed in a row; the last, {cluster}: {message}{next}",
                failures.consecutive
            ),
        )
    } else if status.failed > 0 {
        (
            true,
            "ClustersFailed".to_owned(),
            format!("{} clusters Failed", status.failed),
        )
    } else if plan.capped {
        (
            true,
            "MaxClustersReached".to_owned(),
            format!(
                "the buffer of {min} cannot be met within maxClusters {}",
                pool.spec.max_clusters
            ),
        )
    } else {
        (false, "Healthy".to_owned(), "no failed clusters".to_owned())
    };
    set_condition(
        &mut status.conditions,
        new_condition(
            condition_types::DEGRADED,
            ConditionStatus::from(degraded),
            &reason,
            message,
            generation,
            now,
        ),
    );
    let (sufficient, reason, message) = match &findings.quota {
        None => (true, "NoQuota", "the pool sets no ResourceQuota".to_owned()),
        Some(check) if check.sufficient => (true, "QuotaCoversCluster", check.message.clone()),
        Some(check) => (false, "QuotaTooSmall", check.message.clone()),
    };
    set_condition(
        &mut status.conditions,
        new_condition(
            condition_types::QUOTA_SUFFICIENT,
            ConditionStatus::from(sufficient),
            reason,
            message,
            generation,
            now,
        ),
    );
    status
}

/// Why a cluster of `pool` could never be built from its template, checked the way the
/// cluster controller builds one (names, Kubernetes version, `extraCloudInit`), or `None`.
/// Admission refuses most of this already; `extraCloudInit` rules cannot be written as CEL.
pub fn template_error(pool: &ClusterPool) -> Option<(String, String)> {
    // The longest name the pool gives a cluster, which also names its namespace.
    let probe = format!("{}-xxxxx", pool.name_any());
    match cks_kubevirt::objects::ClusterLayout::new(&probe, &pool.name_any(), &probe, &pool.spec.template) {
        Err(e) => {
            let message = e.to_string();
            let err = Error::Layout {
                cluster: probe,
                source: e,
            };
            err.needs_spec_change()
                .then(|| (err.category().to_owned(), message))
        }
        Ok(_) => None,
    }
}

/// True when `pool` (as read) is still the live object: not deleted, not replaced by a new
/// pool of the same name. A fresh read, not the cache: a pool deleted a moment ago must not
/// get new clusters, which no garbage collection would ever come for on some servers.
async fn still_there(pools: &Api<ClusterPool>, pool: &ClusterPool) -> Result<bool> {
    let name = pool.name_any();
    let live = pools
        .get_opt(&name)
        .await
        .map_err(kube_err("get", "ClusterPool", name.clone()))?;
    Ok(live.is_some_and(|p| p.uid() == pool.uid() && p.meta().deletion_timestamp.is_none()))
}

/// Deletes `observed` only if it is unchanged since it was read: the delete carries its
/// resourceVersion as a precondition, so a cluster a Session claimed in the meantime (a write
/// that bumps the version) is never deleted under the student. Returns false when the cluster
/// changed or is already gone.
pub async fn delete_if_unchanged(api: &Api<PracticeCluster>, observed: &PracticeCluster) -> Result<bool> {
    delete_on(api, observed, observed.resource_version()).await
}

/// Deletes a cluster this reconcile has just created, whatever has been written to it since
/// (the cluster controller's finalizer changes its resourceVersion within milliseconds; no
/// Session can have claimed a cluster that new). Only its uid is a precondition, so a newer
/// object of the same name is never hit.
async fn delete_created(api: &Api<PracticeCluster>, created: &PracticeCluster) -> Result<()> {
    delete_on(api, created, None).await.map(drop)
}

/// Deletes `pc` if it still has its uid and, when given, `resource_version`; false when it
/// is gone or does not match.
async fn delete_on(
    api: &Api<PracticeCluster>,
    pc: &PracticeCluster,
    resource_version: Option<String>,
) -> Result<bool> {
    let name = pc.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version,
            uid: pc.uid(),
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(kube_err("delete", "PracticeCluster", name)(e)),
    }
}

/// Reconciles one ClusterPool.
pub async fn reconcile(guard: Arc<DeserializeGuard<ClusterPool>>, ctx: Arc<Context>) -> Result<Action> {
    let name = guard.name_any();
    let namespace = guard.namespace().unwrap_or_default();
    let pool = ctx.accept(guard.as_ref(), "ClusterPool").await?;
    if pool.meta().deletion_timestamp.is_some() {
        // Owner references take the clusters with it.
        return Ok(Action::await_change());
    }
    // Decide on the pool as it is now, not as the watch cache last saw it: the failure
    // record and creation hold in its status were written by the previous reconcile, and
    // one started by that reconcile's own events could otherwise act without them.
    let pools: Api<ClusterPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(live) = pools
        .get_opt(&name)
        .await
        .map_err(kube_err("get", "ClusterPool", name.clone()))?
    else {
        return Ok(Action::await_change());
    };
    if live.uid() != pool.uid() || live.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    reconcile_pool(&live, &ctx, &namespace).await
}

async fn reconcile_pool(pool: &ClusterPool, ctx: &Context, namespace: &str) -> Result<Action> {
    let now = Timestamp::now();
    let name = pool.name_any();
    let hash = template_hash(&pool.spec.template);
    let api: Api<PracticeCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let pools: Api<ClusterPool> = Api::namespaced(ctx.client.clone(), namespace);
    // Read from the API, not a cache: a cluster created by the previous reconcile must be
    // counted, or a burst of events would overshoot the buffer.
    let lp = ListParams::default().labels(&format!("{}={name}", labels::POOL));
    let uid = pool.uid();
    let (clusters, others): (Vec<PracticeCluster>, Vec<PracticeCluster>) = api
        .list(&lp)
        .await
        .map_err(kube_err(
            "list",
            "PracticeCluster",
            format!("{namespace} pool={name}"),
        ))?
        .items
        .into_iter()
        .partition(|pc| pc.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()));
    let infos: Vec<ClusterInfo> = clusters.iter().map(|pc| cluster_info(pc, &hash, now)).collect();
    // Clusters of an earlier pool of the same name (garbage collection is tearing them
    // down) are never touched, but their VMs still use the capacity `maxClusters` caps.
    let planned: Vec<ClusterInfo> = infos
        .iter()
        .cloned()
        .chain(others.iter().map(|pc| ClusterInfo {
            deleting: true,
            ..cluster_info(pc, &hash, now)
        }))
        .collect();

    let previous = failures_of(pool.status.as_ref());
    let template_changed = pool
        .status
        .as_ref()
        .and_then(|s| s.template_hash.as_deref())
        .is_some_and(|h| h != hash);
    let backoff = Backoff {
        base: ctx.config.retry_base,
        max: MAX_CREATE_BACKOFF,
    };
    let failures = pool_plan::track_failures(&previous, &infos, template_changed, backoff, now);
    let findings = Findings {
        template_error: template_error(pool),
        quota: isolation::quota_check(
            &pool.spec.template,
            pool.spec.reset.strategy,
            &pool.spec.isolation,
        ),
        failures,
    };
    let mut plan = pool_plan::plan(&pool.spec, &planned, findings.failures.next_create, now);
    if findings.template_error.is_some() {
        plan.create = 0;
    }

    let mut events = Vec::new();
    for (victim, reason) in &plan.delete {
        let Some(observed) = clusters.iter().find(|pc| pc.name_any() == *victim) else {
            continue;
        };
        if !delete_if_unchanged(&api, observed).await? {
            info!(cluster = %victim, "cluster changed since it was listed; re-planning");
            continue;
        }
        info!(cluster = %victim, reason = reason.as_str(), "deleted cluster");
        let note = format!("deleted cluster {victim} ({})", reason.as_str());
        ctx.event(pool, EventType::Normal, reason.as_str(), "Delete", note.clone())
            .await;
        events.push(note);
    }
    if plan.create > 0 && !still_there(&pools, pool).await? {
        info!("pool is being deleted; creating nothing");
        return Ok(Action::await_change());
    }
    let mut created = Vec::new();
    for _ in 0..plan.create {
        let cluster = new_cluster(pool, &cluster_name(&name), &hash);
        let pc = api
            .create(&PostParams::default(), &cluster)
            .await
            .map_err(kube_err("create", "PracticeCluster", cluster.name_any()))?;
        info!(cluster = %pc.name_any(), "created cluster");
        created.push(pc);
    }
    // Deleted between the check and the creates: garbage collection may have run before the
    // new clusters existed, so they are removed here rather than left without an owner.
    if !created.is_empty() && !still_there(&pools, pool).await? {
        for pc in &created {
            delete_created(&api, pc).await?;
        }
        info!("pool was deleted while creating clusters; removed them");
        return Ok(Action::await_change());
    }
    for pc in &created {
        let note = format!(
            "created cluster {} (buffer {}/{})",
            pc.name_any(),
            plan.warm,
            pool.spec.min_available
        );
        ctx.event(pool, EventType::Normal, "ScaledUp", "Create", note.clone())
            .await;
        events.push(note);
    }

    let counts: Vec<(String, usize)> = PHASES
        .iter()
        .map(|phase| {
            (
                format!("{phase:?}"),
                infos.iter().filter(|c| c.phase == *phase).count(),
            )
        })
        .collect();
    ctx.metrics.set_pool_clusters(namespace, &name, &counts);

    let scale_event = (!events.is_empty()).then(|| events.join("; "));
    let status = pool_status(pool, &infos, &hash, &plan, &findings, scale_event, now);
    warn_on_news(pool, &status, &findings, ctx).await;
    // The whole status, guarded by the resourceVersion the decisions were made on: a status
    // written in between (another writer) is not overwritten; the pool is looked at again at
    // once.
    if pool.status.as_ref() != Some(&status)
        && status::apply(&pools, pool, managers::POOL, &status, Guard::ResourceVersion)
            .await?
            .is_none()
    {
        info!("pool changed while it was reconciled; looking again");
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    // Clusters of an earlier pool are not owned by this one, so their going away triggers no
    // reconcile: look again soon while any are left. A held creation is looked at again
    // when the hold ends.
    let mut next = if plan.is_empty() && others.is_empty() {
        ctx.config.resync
    } else {
        ctx.config.poll
    };
    if let Some(until) = plan.held_until {
        let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default();
        next = next.min(wait + Duration::from_millis(10));
    }
    Ok(Action::requeue(next))
}

/// Warning events for what just went wrong: a template that cannot be built, a quota too
/// small, more clusters failed in a row. Each once, when it appears, not on every reconcile.
async fn warn_on_news(pool: &ClusterPool, status: &ClusterPoolStatus, findings: &Findings, ctx: &Context) {
    let before = pool.status.clone().unwrap_or_default();
    let changed_to = |type_: &str, value: &str| {
        let now = find_condition(&status.conditions, type_)?;
        let then = find_condition(&before.conditions, type_);
        let news =
            now.status == value && then.is_none_or(|t| t.status != now.status || t.reason != now.reason);
        news.then(|| now.clone())
    };
    if findings.template_error.is_some()
        && let Some(c) = changed_to(condition_types::DEGRADED, "True")
    {
        ctx.event(pool, EventType::Warning, &c.reason, "Plan", c.message)
            .await;
    } else if status.consecutive_failures > before.consecutive_failures
        && let Some(c) = find_condition(&status.conditions, condition_types::DEGRADED)
    {
        ctx.event(
            pool,
            EventType::Warning,
            "BackingOff",
            "Create",
            c.message.clone(),
        )
        .await;
    }
    if let Some(c) = changed_to(condition_types::QUOTA_SUFFICIENT, "False") {
        ctx.event(pool, EventType::Warning, &c.reason, "Plan", c.message)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool() -> ClusterPool {
        serde_json::from_value(json!({
            "apiVersion": "cks.io/v1alpha1", "kind": "ClusterPool",
            "metadata": {"name": "intro", "namespace": "cks", "uid": "u-1", "generation": 3},
            "spec": {
                "minAvailable": 2, "maxClusters": 4,
                "template": {
                    "kubernetesVersion": "1.33.0",
                    "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
                    "workers": {"count": 1, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
                    "goldenImage": {"namespace": "vm-templates", "name": "img"},
                    "sshKeySecretRef": {"name": "key"},
                },
            },
        }))
        .unwrap()
    }

    #[test]
    fn template_hash_changes_with_the_template_only() {
        let p = pool();
        let a = template_hash(&p.spec.template);
        assert_eq!(a.len(), 10);
        assert_eq!(a, template_hash(&p.spec.template));
        let mut t = p.spec.template.clone();
        t.workers.count = 2;
        assert_ne!(a, template_hash(&t));
    }

    #[test]
    fn cluster_names_are_dns_labels_under_the_pool() {
        let name = cluster_name("intro");
        assert!(
            name.starts_with("intro-") && name.len() == "intro-".len() + 5,
            "{name}"
        );
        assert!(cks_api::common::is_dns1123_label(&name));
        assert_ne!(cluster_name("intro"), cluster_name("intro"));
    }

    #[test]
    fn new_clusters_copy_the_template_and_are_owned_by_the_pool() {
        let p = pool();
        let pc = new_cluster(&p, "intro-abcde", "h1");
        assert_eq!(pc.spec.template, p.spec.template);
        assert_eq!(pc.spec.pool, "intro");
        assert_eq!(pc.metadata.namespace.as_deref(), Some("cks"));
        let l = pc.metadata.labels.unwrap();
        assert_eq!(l["cks.io/pool"], "intro");
        assert_eq!(l["cks.io/template-hash"], "h1");
        let owner = &pc.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u-1", Some(true)));
    }

    #[test]
    fn status_counts_phases_and_sets_conditions() {
        let p = pool();
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let info = |name: &str, phase, assigned, updated| ClusterInfo {
            name: name.into(),
            phase,
            assigned,
            updated,
            sessions_served: 0,
            created: at,
            deleting: false,
            available_since: None,
            failure: None,
        };
        use PracticeClusterPhase::*;
        let clusters = [
            info("a", Available, false, true),
            info("b", Assigned, true, true),
            info("c", Provisioning, false, false),
            info("d", Failed, false, true),
        ];
        let s = pool_status(
            &p,
            &clusters,
            "h",
            &Plan::default(),
            &Findings::default(),
            Some("created x".into()),
            at,
        );
        assert_eq!(
            (
                s.total,
                s.available,
                s.assigned,
                s.provisioning,
                s.failed,
                s.updated
            ),
            (4, 1, 1, 1, 1, 3)
        );
        assert_eq!(s.last_scale_event.as_deref(), Some("created x"));
        assert_eq!(s.observed_generation, Some(3));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.message.as_str()),
            ("False", "1/2 clusters Available")
        );
        let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ClustersFailed")
        );
    }

    #[test]
    fn clusters_failing_in_a_row_degrade_the_pool_with_the_last_failure_whatever_keep_failed() {
        let mut p = pool();
        p.spec.keep_failed = 0;
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let failures = Failures {
            consecutive: 3,
            last_time: Some(at),
            last: Some((
                "intro-abcde".into(),
                "UnsupportedKubernetesVersion".into(),
                "kubernetes version too old".into(),
            )),
            next_create: Some(at + jiff::SignedDuration::from_secs(40)),
            counted: vec![],
        };
        let findings = Findings {
            failures: failures.clone(),
            ..Findings::default()
        };
        // No Failed cluster is left (keepFailed 0 deleted them all).
        let s = pool_status(&p, &[], "h", &Plan::default(), &findings, None, at);
        let degraded = find_condition(&s.conditions, "Degraded").unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "UnsupportedKubernetesVersion")
        );
        assert!(
            degraded
                .message
                .contains("3 clusters failed in a row; the last, intro-abcde: kubernetes version too old"),
            "{}",
            degraded.message
        );
        assert_eq!(s.consecutive_failures, 3);
        assert_eq!(failures_of(Some(&s)), failures, "the status round-trips");

        let mut odd = failures;
        odd.last = Some(("c".into(), "not a reason!".into(), "m".into()));
        let findings = Findings {
            failures: odd,
            ..Findings::default()
        };
        let s = pool_status(&p, &[], "h", &Plan::default(), &findings, None, at);
        assert_eq!(
            find_condition(&s.conditions, "Degraded").unwrap().reason,
            "ClustersFailed"
        );
    }

    #[test]
    fn a_template_the_cluster_controller_would_refuse_is_found_before_any_cluster() {
        let mut p = pool();
        assert_eq!(template_error(&p), None);
        p.spec.template.extra_cloud_init = Some(
            "runcmd: [kubeadm reset -f]\nwrite_files: [{path: /usr/local/sbin/cks-reip, content: x}]".into(),
        );
        let (reason, message) = template_error(&p).unwrap();
        assert_eq!(reason, "InvalidExtraCloudInit");
        assert!(
            message.contains("cks-reip") || message.contains("refused"),
            "{message}"
        );
        let s = pool_status(
            &p,
            &[],
            "h",
            &Plan::default(),
            &Findings {
                template_error: Some((reason, message)),
                ..Findings::default()
            },
            None,
            Timestamp::from_second(1_800_000_000).unwrap(),
        );
        let degraded = find_condition(&s.conditions, "Degraded").unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidExtraCloudInit")
        );
    }
}
