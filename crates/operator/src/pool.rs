//! The ClusterPool controller: keeps the pool's PracticeClusters in line with its spec
//! (what to create and delete comes from [`crate::pool_plan`]) and reports counts and
//! conditions in the pool's status. Clusters are owned by their pool (owner reference), so
//! deleting a pool deletes its clusters, whose finalizers tear down their VMs.

use std::sync::Arc;
use std::time::Duration;

use cks_api::cluster_pool::{ClusterPool, ClusterPoolStatus, ClusterTemplate};
use cks_api::conditions::{ConditionStatus, new_condition, set_condition};
use cks_api::names::{FIELD_MANAGER, condition_types, labels};
use cks_api::practice_cluster::{PracticeCluster, PracticeClusterPhase, PracticeClusterSpec};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::context::Context;
use crate::error::{Error, ErrorBackoff, Result, kube_err};
use crate::metrics::PhaseLabels;
use crate::pool_plan::{self, ClusterInfo, Plan};

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
    let backoff = Arc::new(ErrorBackoff::default());
    let on_error = backoff.clone();
    Controller::new(pools, watcher::Config::default())
        .owns(clusters, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(
            move |guard, ctx| {
                let backoff = backoff.clone();
                async move {
                    let key = backoff_key(&guard);
                    let result = reconcile(guard, ctx).await;
                    if result.is_ok() {
                        backoff.succeeded(&key);
                    }
                    result
                }
            },
            move |guard, error, ctx| error_policy(guard, error, ctx, &on_error),
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "clusterpool controller event");
            }
        })
        .await;
}

fn backoff_key(guard: &DeserializeGuard<ClusterPool>) -> String {
    format!("{}/{}", guard.namespace().unwrap_or_default(), guard.name_any())
}

/// Requeue by kind of error: an object that cannot be read waits for a change; anything
/// else retries after a delay that doubles with each consecutive failure of the pool.
pub fn error_policy(
    guard: Arc<DeserializeGuard<ClusterPool>>,
    error: &Error,
    ctx: Arc<Context>,
    backoff: &ErrorBackoff,
) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, error.category());
    warn!(pool = %guard.name_any(), error = %error, reason = error.category(), "reconcile failed");
    if error.needs_spec_change() {
        Action::await_change()
    } else {
        let base = ctx.config.retry_base.max(Duration::from_millis(200));
        Action::requeue(backoff.failed(&backoff_key(&guard), base))
    }
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
    ClusterInfo {
        name: pc.name_any(),
        phase: status.phase,
        assigned: pc.spec.claim_ref.is_some(),
        updated: pc.spec.template_hash == hash,
        sessions_served: status.sessions_served,
        created: pc.meta().creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now),
        deleting: pc.meta().deletion_timestamp.is_some(),
    }
}

/// The pool's status from the clusters observed and the plan just carried out.
pub fn pool_status(
    pool: &ClusterPool,
    clusters: &[ClusterInfo],
    hash: &str,
    plan: &Plan,
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
    let (degraded, reason, message) = if status.failed > 0 {
        (
            true,
            "ClustersFailed",
            format!("{} clusters Failed", status.failed),
        )
    } else if plan.capped {
        (
            true,
            "MaxClustersReached",
            format!(
                "the buffer of {min} cannot be met within maxClusters {}",
                pool.spec.max_clusters
            ),
        )
    } else {
        (false, "Healthy", "no failed clusters".to_owned())
    };
    set_condition(
        &mut status.conditions,
        new_condition(
            condition_types::DEGRADED,
            ConditionStatus::from(degraded),
            reason,
            message,
            generation,
            now,
        ),
    );
    status
}

/// Deletes `observed` only if it is unchanged since it was read: the delete carries its
/// resourceVersion as a precondition, so a cluster a Session claimed in the meantime (a write
/// that bumps the version) is never deleted under the student. Returns false when the cluster
/// changed or is already gone.
pub async fn delete_if_unchanged(api: &Api<PracticeCluster>, observed: &PracticeCluster) -> Result<bool> {
    let name = observed.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: observed.resource_version(),
            uid: observed.uid(),
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
    let span = info_span!("reconcile", controller = CONTROLLER, pool = %name, namespace = %namespace);
    async move {
        ctx.metrics.reconciled(CONTROLLER);
        let pool = ctx.accept(guard.as_ref(), "ClusterPool").await?;
        if pool.meta().deletion_timestamp.is_some() {
            // Owner references take the clusters with it.
            return Ok(Action::await_change());
        }
        reconcile_pool(pool, &ctx, &namespace).await
    }
    .instrument(span)
    .await
}

async fn reconcile_pool(pool: &ClusterPool, ctx: &Context, namespace: &str) -> Result<Action> {
    let now = Timestamp::now();
    let name = pool.name_any();
    let hash = template_hash(&pool.spec.template);
    let api: Api<PracticeCluster> = Api::namespaced(ctx.client.clone(), namespace);
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
    let plan = pool_plan::plan(&pool.spec, &planned, now);

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
    for _ in 0..plan.create {
        let cluster = new_cluster(pool, &cluster_name(&name), &hash);
        let created = api
            .create(&PostParams::default(), &cluster)
            .await
            .map_err(kube_err("create", "PracticeCluster", cluster.name_any()))?;
        info!(cluster = %created.name_any(), "created cluster");
        let note = format!(
            "created cluster {} (buffer {}/{})",
            created.name_any(),
            plan.warm,
            pool.spec.min_available
        );
        ctx.event(pool, EventType::Normal, "ScaledUp", "Create", note.clone())
            .await;
        events.push(note);
    }

    for phase in PHASES {
        let n = infos.iter().filter(|c| c.phase == phase).count();
        ctx.metrics
            .clusters
            .get_or_create(&PhaseLabels {
                namespace: namespace.to_owned(),
                pool: name.clone(),
                phase: format!("{phase:?}"),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    let scale_event = (!events.is_empty()).then(|| events.join("; "));
    let status = pool_status(pool, &infos, &hash, &plan, scale_event, now);
    if pool.status.as_ref() != Some(&status) {
        let pools: Api<ClusterPool> = Api::namespaced(ctx.client.clone(), namespace);
        let patch = json!({
            "apiVersion": ClusterPool::api_version(&()),
            "kind": ClusterPool::kind(&()),
            "status": status,
        });
        pools
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(kube_err("apply status of", "ClusterPool", name.clone()))?;
    }
    // Clusters of an earlier pool are not owned by this one, so their going away triggers no
    // reconcile: look again soon while any are left.
    Ok(if plan.is_empty() && others.is_empty() {
        Action::requeue(ctx.config.resync)
    } else {
        Action::requeue(ctx.config.poll)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        use PracticeClusterPhase::*;
        let clusters = [
            info("a", Available, false, true),
            info("b", Assigned, true, true),
            info("c", Provisioning, false, false),
            info("d", Failed, false, true),
        ];
        let s = pool_status(&p, &clusters, "h", &Plan::default(), Some("created x".into()), at);
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
}
