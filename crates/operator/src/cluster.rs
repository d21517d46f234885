//! The PracticeCluster controller: builds a practice cluster's namespace, secrets, Service
//! and VMs, waits for them, checks the practice cluster's API, takes baseline snapshots,
//! follows claims, resets from the snapshots, and tears everything down on deletion.
//!
//! Each reconcile reads the cluster afresh from the API and the objects in its namespace, asks
//! [`crate::cluster_machine`] what the current phase needs, does that, and writes the whole
//! status by server-side apply (field manager [`managers::CLUSTER`]) guarded by the
//! resourceVersion it read: a claim written meanwhile wins, and the next reconcile decides
//! again. Children are server-side applied with the operator's field manager
//! (`cks_api::names::FIELD_MANAGER`). Nothing is kept in memory between reconciles.

use std::sync::Arc;
use std::time::Duration;

use cks_api::cluster_pool::ResetStrategy;
use cks_api::conditions::{ConditionStatus, new_condition, set_condition};
use cks_api::names::{FIELD_MANAGER, annotations, condition_types, finalizers, labels};
use cks_api::practice_cluster::{PracticeCluster, PracticeClusterPhase, PracticeClusterStatus};
use cks_api::session::Session;
use cks_kubevirt::cdi::DataVolume;
use cks_kubevirt::kubevirt::{RunStrategy, VirtualMachine, VirtualMachineInstance};
use cks_kubevirt::naming::{self, VmId};
use cks_kubevirt::objects::{
    Bootstrap, ClusterLayout, Observed, SSH_HOST_KEY_PRIVATE, SSH_HOST_KEY_PUBLIC, SshHostKey,
};
use cks_kubevirt::pki::ClusterPki;
use cks_kubevirt::snapshot::{VirtualMachineRestore, VirtualMachineSnapshot};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use crate::access;
use crate::cluster_machine::{self as machine, Progress, ResetStep, SnapshotStep, VmObs};
use crate::context::Context;
use crate::controller::{Runner, lean_controller};
use crate::error::{Error, Result, kube_err};
use crate::isolation;
use crate::probe::{ApiTarget, ProbeTarget};
use crate::status::{self, Guard, managers};

/// Controller name in metrics and events.
pub const CONTROLLER: &str = "practicecluster";

/// `Ready` reason of a Resetting cluster on which a claim was written: the reset waits.
const CLAIMED_WHILE_RESETTING: &str = "ClaimedWhileResetting";

/// Event reason: a claim whose Session no longer exists was released.
pub const ORPHANED_CLAIM_RELEASED: &str = "OrphanedClaimReleased";

/// Failure reason of an unclaimed cluster without its SSH host key Secret (built before host
/// keys were pinned): no Session could reach it, so it is failed and the pool replaces it.
pub const NO_PINNED_HOST_KEY: &str = "NoPinnedHostKey";

/// Key of the SSH public key in the pool's SSH key Secret.
pub const SSH_PUBLIC_KEY: &str = "ssh-publickey";

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let clusters: Api<DeserializeGuard<PracticeCluster>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let managed =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE));
    let controller = lean_controller(clusters, watcher::Config::default());
    let store = controller.store();
    // Children live in the cluster's own namespace, so they cannot carry an owner reference
    // to the PracticeCluster; they are mapped back through the `cks.io/cluster` label.
    let map = move |store: Store<DeserializeGuard<PracticeCluster>>| {
        move |obj: &dyn HasLabels| -> Vec<ObjectRef<DeserializeGuard<PracticeCluster>>> {
            let Some(cluster) = obj.cluster_label() else {
                return Vec::new();
            };
            store
                .state()
                .iter()
                .filter(|pc| pc.meta().name.as_deref() == Some(cluster.as_str()))
                .map(|pc| ObjectRef::from_obj(pc.as_ref()))
                .collect()
        }
    };
    let (m1, m2, m3, m4, m5) = (
        map(store.clone()),
        map(store.clone()),
        map(store.clone()),
        map(store.clone()),
        map(store.clone()),
    );
    let sessions: Api<DeserializeGuard<Session>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let claims = store.clone();
    let controller = controller
        .watches(sessions, watcher::Config::default(), move |s| {
            claims_of_gone_session(&claims, &s)
        })
        .watches(
            Api::<DeserializeGuard<VirtualMachine>>::all(client.clone()),
            managed.clone(),
            move |o| m1(&o),
        )
        .watches(
            Api::<DeserializeGuard<VirtualMachineInstance>>::all(client.clone()),
            managed.clone(),
            move |o| m2(&o),
        )
        .watches(
            Api::<DeserializeGuard<DataVolume>>::all(client.clone()),
            managed.clone(),
            move |o| m3(&o),
        )
        .watches(
            Api::<DeserializeGuard<VirtualMachineSnapshot>>::all(client.clone()),
            managed.clone(),
            move |o| m4(&o),
        )
        .watches(
            Api::<DeserializeGuard<VirtualMachineRestore>>::all(client.clone()),
            managed,
            move |o| m5(&o),
        );
    Runner::new(CONTROLLER, ctx)
        .run(controller, shutdown, reconcile)
        .await;
}

/// The clusters whose claim names `session`, when the Session is on its way out without its
/// release (its finalizer removed, or deleted): their claims may be orphaned, so they are
/// checked now rather than at the next resync. Other Session changes (status updates above
/// all) concern no cluster.
fn claims_of_gone_session(
    store: &Store<DeserializeGuard<PracticeCluster>>,
    session: &DeserializeGuard<Session>,
) -> Vec<ObjectRef<DeserializeGuard<PracticeCluster>>> {
    let meta = session.meta();
    let releasing = meta
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizers::SESSION_RELEASE);
    if releasing && meta.deletion_timestamp.is_none() {
        return Vec::new();
    }
    store
        .state()
        .iter()
        .filter(|pc| {
            pc.meta().namespace == meta.namespace
                && pc.0.as_ref().is_ok_and(|pc| {
                    pc.spec
                        .claim_ref
                        .as_ref()
                        .is_some_and(|c| Some(&c.name) == meta.name.as_ref())
                })
        })
        .map(|pc| ObjectRef::from_obj(pc.as_ref()))
        .collect()
}

/// Objects whose `cks.io/cluster` label names their PracticeCluster.
trait HasLabels {
    fn cluster_label(&self) -> Option<String>;
}

impl<K: Resource> HasLabels for DeserializeGuard<K> {
    fn cluster_label(&self) -> Option<String> {
        self.meta().labels.as_ref()?.get(labels::CLUSTER).cloned()
    }
}

/// Reconciles one PracticeCluster.
///
/// The object is read again from the API first: the watch cache may not have seen this
/// controller's last status write yet, or a claim, and every status write below is guarded
/// by the resourceVersion read here.
pub async fn reconcile(guard: Arc<DeserializeGuard<PracticeCluster>>, ctx: Arc<Context>) -> Result<Action> {
    let name = guard.name_any();
    let namespace = guard.namespace().unwrap_or_default();
    let api: Api<DeserializeGuard<PracticeCluster>> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(fresh) = api
        .get_opt(&name)
        .await
        .map_err(kube_err("get", "PracticeCluster", &name))?
    else {
        return Ok(Action::await_change());
    };
    match ctx.accept(&fresh, "PracticeCluster").await {
        Ok(pc) => reconcile_object(pc, &ctx).await,
        // Its spec is unreadable, but its namespace is found by name and labels, so its
        // deletion still cleans up and completes.
        Err(_) if fresh.meta().deletion_timestamp.is_some() => cleanup(&fresh, &ctx).await,
        Err(e) => Err(e),
    }
}

/// Reconciles a PracticeCluster as it was read at some moment. Every write it makes (status,
/// finalizers, the reset request, the `Recreate` delete) is guarded by that read's
/// resourceVersion, so anything written since (a Session's claim above all) wins: the write
/// fails and the next reconcile decides from the new object.
pub async fn reconcile_object(pc: &PracticeCluster, ctx: &Context) -> Result<Action> {
    if pc.meta().deletion_timestamp.is_some() {
        return cleanup(pc, ctx).await;
    }
    if !pc.finalizers().iter().any(|f| f == finalizers::CLUSTER_CLEANUP) {
        let mut list = pc.finalizers().to_vec();
        list.push(finalizers::CLUSTER_CLEANUP.to_owned());
        set_finalizers(pc, ctx, list).await?;
        // The write triggers the next reconcile.
        return Ok(Action::await_change());
    }
    match Reconciler::new(pc, ctx) {
        Ok(reconciler) => reconciler.reconcile().await,
        // The template is immutable: no change will ever make it build.
        Err(e) if e.needs_spec_change() => fail_for_good(pc, ctx, e.category(), e.to_string()).await,
        Err(e) => Err(e),
    }
}

/// Writes the finalizer list guarded by the resourceVersion read, so a concurrent change
/// is a conflict (retried) rather than lost. Works on objects that do not deserialize.
async fn set_finalizers<K: Resource>(obj: &K, ctx: &Context, list: Vec<String>) -> Result<()> {
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<DeserializeGuard<PracticeCluster>> = Api::namespaced(
        ctx.client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    let patch = json!({"metadata": {"finalizers": list, "resourceVersion": obj.meta().resource_version}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("patch finalizers of", "PracticeCluster", name))?;
    Ok(())
}

/// True when `ns` was created for the cluster named `cluster`: the operator labels each
/// cluster's namespace with the cluster's name and itself as manager.
pub fn namespace_belongs_to(ns: &Namespace, cluster: &str) -> bool {
    let labels = ns.labels();
    labels.get(labels::CLUSTER).map(String::as_str) == Some(cluster)
        && labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE)
}

async fn remove_cleanup_finalizer<K: Resource>(obj: &K, ctx: &Context) -> Result<Action> {
    let list: Vec<String> = obj
        .meta()
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizers::CLUSTER_CLEANUP)
        .cloned()
        .collect();
    set_finalizers(obj, ctx, list).await?;
    Ok(Action::await_change())
}

/// Deletes the cluster's namespace (and with it every VM, disk, snapshot and Secret) and
/// releases the finalizer once the namespace is gone. Reads only the object's metadata, so
/// a PracticeCluster whose spec no longer deserializes is cleaned up the same way.
async fn cleanup<K: Resource<DynamicType = ()>>(pc: &K, ctx: &Context) -> Result<Action> {
    if !pc
        .meta()
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizers::CLUSTER_CLEANUP)
    {
        return Ok(Action::await_change());
    }
    let ns_name = pc.meta().name.clone().unwrap_or_default();
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    match namespaces
        .get_opt(&ns_name)
        .await
        .map_err(kube_err("get", "Namespace", &ns_name))?
    {
        Some(ns) if !namespace_belongs_to(&ns, &ns_name) => {
            // Never delete a namespace this cluster did not create (a hand-made PracticeCluster
            // named like an existing namespace); just let the PracticeCluster go.
            warn!(namespace = %ns_name, "namespace is not the cluster's own; leaving it");
            ctx.event(
                pc,
                EventType::Warning,
                "ForeignNamespace",
                "Delete",
                format!("namespace {ns_name} was not created for this cluster and is left in place"),
            )
            .await;
            remove_cleanup_finalizer(pc, ctx).await
        }
        Some(ns) => {
            if ns.metadata.deletion_timestamp.is_none() {
                info!(namespace = %ns_name, "deleting the cluster's namespace");
                match namespaces.delete(&ns_name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(kube_err("delete", "Namespace", &ns_name)(e)),
                }
                ctx.event(
                    pc,
                    EventType::Normal,
                    "TearingDown",
                    "Delete",
                    format!("deleting namespace {ns_name} with the cluster's VMs and disks"),
                )
                .await;
            }
            Ok(Action::requeue(ctx.config.poll))
        }
        None => remove_cleanup_finalizer(pc, ctx).await,
    }
}

/// Applies `status` as the whole status of `pc`, guarded by the resourceVersion `pc` was read
/// with: a claim (or any other write) since then fails the write, and the next reconcile
/// decides again from the new object. `Ok(false)` when that happened.
async fn replace_status(pc: &PracticeCluster, status: &PracticeClusterStatus, ctx: &Context) -> Result<bool> {
    let api: Api<PracticeCluster> = Api::namespaced(ctx.client.clone(), &pc.namespace().unwrap_or_default());
    let written = status::apply(&api, pc, managers::CLUSTER, status, Guard::ResourceVersion).await?;
    if written.is_none() {
        info!("the cluster changed since it was read; deciding again");
    }
    Ok(written.is_some())
}

/// Marks a cluster Failed without retries (its template cannot build VMs): the pool
/// replaces it and reports Degraded.
async fn fail_for_good(
    pc: &PracticeCluster,
    ctx: &Context,
    reason: &'static str,
    message: String,
) -> Result<Action> {
    let status = pc.status.clone().unwrap_or_default();
    if status.phase == PracticeClusterPhase::Failed {
        return Ok(Action::requeue(ctx.config.resync));
    }
    let now = Timestamp::now();
    let failed = machine::given_up(&status, reason, &message, pc.meta().generation, now);
    record_give_up(pc, ctx, status.phase, reason, &message).await;
    Ok(if replace_status(pc, &failed, ctx).await? {
        Action::requeue(ctx.config.resync)
    } else {
        Action::requeue(ctx.config.retry_base)
    })
}

async fn record_give_up(
    pc: &PracticeCluster,
    ctx: &Context,
    phase: PracticeClusterPhase,
    reason: &'static str,
    message: &str,
) {
    ctx.metrics
        .step_failures
        .get_or_create(&crate::metrics::FailureLabels {
            phase: format!("{phase:?}"),
            reason: reason.to_owned(),
        })
        .inc();
    warn!(reason, message = %message, "giving up on the cluster");
    ctx.event(
        pc,
        EventType::Warning,
        reason,
        "GiveUp",
        format!("{message} (not retried)"),
    )
    .await;
}

/// One reconcile of one cluster.
struct Reconciler<'a> {
    pc: &'a PracticeCluster,
    ctx: &'a Context,
    layout: ClusterLayout,
    /// Namespace holding the cluster's VMs (named like the cluster).
    vm_ns: String,
    now: Timestamp,
    status: PracticeClusterStatus,
    /// When the claim's Session is due to be checked, if sooner than the phase looks again.
    recheck_claim: Option<Duration>,
}

/// What a phase handler decided.
enum Outcome {
    /// Stay in the phase; look again after this long.
    Wait(Duration),
    /// Stay in the phase without acting and without its timeout running (a claim is on a
    /// Resetting cluster); look again after this long.
    Hold(Duration),
    /// Move to the phase (attempts reset, phase clock restarted).
    Enter(PracticeClusterPhase),
    /// The step failed.
    Fail(&'static str, String),
    /// Failed without retries: retrying cannot help.
    GiveUp {
        /// Short stable reason.
        reason: &'static str,
        /// What failed.
        message: String,
        /// Halt the VMs (they exist and are the cluster's own).
        halt: bool,
    },
    /// The handler changed the object itself (or deleted it): the status read is stale, so
    /// nothing more is written; the action says when to look again.
    Written(Action),
}

impl<'a> Reconciler<'a> {
    fn new(pc: &'a PracticeCluster, ctx: &'a Context) -> Result<Self> {
        let vm_ns = pc.name_any();
        let layout = ClusterLayout::from_practice_cluster(pc, &vm_ns)
            .map_err(|source| Error::Layout {
                cluster: pc.name_any(),
                source,
            })?
            .with_host_cluster_domain(&ctx.config.host_cluster_domain);
        Ok(Self {
            pc,
            ctx,
            layout,
            vm_ns,
            now: Timestamp::now(),
            status: pc.status.clone().unwrap_or_default(),
            recheck_claim: None,
        })
    }

    fn name(&self) -> String {
        self.pc.name_any()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), &self.vm_ns)
    }

    /// The timeout of the current phase, for the phases that have one.
    fn phase_timeout(&self) -> Option<i32> {
        use PracticeClusterPhase::*;
        match self.status.phase {
            Resetting => Some(self.pc.spec.reset.timeout_seconds),
            Provisioning | Bootstrapping | Snapshotting => Some(self.pc.spec.provisioning.timeout_seconds),
            _ => None,
        }
    }

    fn timed_out(&self) -> bool {
        self.phase_timeout().is_some_and(|timeout| {
            machine::timed_out(&self.status, timeout, self.ctx.config.retry_base, self.now)
        })
    }

    fn timeout_message(&self, error: Option<&Error>) -> String {
        let phase = self.status.phase;
        let timeout = self.phase_timeout().unwrap_or_default();
        let detail = match error {
            Some(e) => e.to_string(),
            None => self
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == condition_types::READY)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        };
        format!("{phase:?} did not finish within {timeout}s: {detail}")
    }

    async fn reconcile(mut self) -> Result<Action> {
        use PracticeClusterPhase::*;
        self.status.claim = machine::observe_claim(
            self.status.claim.as_ref(),
            self.pc.spec.claim_ref.as_ref(),
            self.now,
        );
        if let Some(released) = self.release_orphaned_claim().await? {
            return Ok(released);
        }
        let handled = match self.status.phase {
            Pending => Ok(Outcome::Enter(Provisioning)),
            Provisioning => self.provisioning().await,
            Bootstrapping => self.bootstrapping().await,
            Snapshotting => self.snapshotting().await,
            Available | Assigned => self.settled().await,
            Resetting => self.resetting().await,
            Failed => Ok(Outcome::Wait(self.ctx.config.resync)),
        };
        let outcome = match handled {
            Ok(outcome) => outcome,
            Err(e) if e.needs_spec_change() => Outcome::GiveUp {
                reason: e.category(),
                message: e.to_string(),
                // Nothing of this cluster's is running: the template never rendered, or
                // the namespace is someone else's.
                halt: false,
            },
            // A step that keeps erroring ends like one that keeps waiting.
            Err(e) if self.timed_out() => Outcome::Fail("Timeout", self.timeout_message(Some(&e))),
            Err(e) => {
                if self.phase_timeout().is_some() {
                    // Say what the step is stuck on; the error policy backs off.
                    self.set_ready(false, e.category(), e.to_string());
                    if let Err(write) = self.write_status().await {
                        warn!(error = %write, "recording the error in the status failed");
                    }
                }
                return Err(e);
            }
        };
        let action = match outcome {
            Outcome::Wait(_) if self.timed_out() => {
                let message = self.timeout_message(None);
                self.fail("Timeout", message).await?
            }
            Outcome::Wait(after) | Outcome::Hold(after) => {
                Action::requeue(self.recheck_claim.map_or(after, |recheck| after.min(recheck)))
            }
            Outcome::Enter(next) => self.enter(next).await,
            Outcome::Fail(reason, message) => self.fail(reason, message).await?,
            Outcome::GiveUp {
                reason,
                message,
                halt,
            } => self.give_up(reason, message, halt).await?,
            Outcome::Written(action) => return Ok(action),
        };
        if !self.write_status().await? {
            return Ok(Action::requeue(self.ctx.config.retry_base));
        }
        Ok(action)
    }

    async fn enter(&mut self, next: PracticeClusterPhase) -> Action {
        let from = self.status.phase;
        // A claim written on a cluster that was not Available (only possible by hand) is
        // still a claim: never report such a cluster as free.
        let next = if next == PracticeClusterPhase::Available && self.pc.spec.claim_ref.is_some() {
            self.set_ready(false, "Assigned", self.claim_message());
            PracticeClusterPhase::Assigned
        } else {
            next
        };
        info!(from = ?from, to = ?next, "phase change");
        self.status.phase = next;
        self.status.phase_since = Some(Time(self.now));
        self.status.attempts = 0;
        self.status.failure_reason = None;
        self.status.failure_message = None;
        self.ctx
            .event(
                self.pc,
                EventType::Normal,
                &format!("{next:?}"),
                "PhaseChange",
                format!("{from:?} -> {next:?}"),
            )
            .await;
        Action::requeue(Duration::ZERO)
    }

    /// Releases a claim whose Session (name and uid) no longer exists, as read from the API
    /// (a cache may not show a Session that just claimed), once the claim has been seen for
    /// the orphaned-claim grace. A Session deleted past its finalizer, or a claim edited by
    /// hand, would otherwise hold the cluster forever. The release is guarded by the
    /// resourceVersion read, like a Session's own; the next reconcile resets the cluster.
    /// `Some(action)` when it released (or lost a race); else `None`.
    async fn release_orphaned_claim(&mut self) -> Result<Option<Action>> {
        let (Some(claim), Some(seen)) = (&self.pc.spec.claim_ref, &self.status.claim) else {
            return Ok(None);
        };
        if let Some(left) = machine::orphan_check_in(seen, self.ctx.config.orphaned_claim_grace, self.now) {
            self.recheck_claim = Some(left);
            return Ok(None);
        }
        let namespace = self.pc.namespace().unwrap_or_default();
        let sessions: Api<DeserializeGuard<Session>> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let session = sessions.get_opt(&claim.name).await.map_err(kube_err(
            "get",
            "Session",
            format!("{namespace}/{}", claim.name),
        ))?;
        let uid = session.as_ref().and_then(|s| s.meta().uid.clone());
        if machine::claim_holder_exists(claim, uid.as_deref()) {
            return Ok(None);
        }
        let api: Api<PracticeCluster> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let patch = json!({
            "metadata": {"resourceVersion": self.pc.resource_version()},
            "spec": {"claimRef": null},
        });
        match api
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {
                info!("the cluster changed since it was read; deciding again");
                return Ok(Some(Action::requeue(self.ctx.config.retry_base)));
            }
            Err(e) => return Err(kube_err("release", "PracticeCluster", self.name())(e)),
        }
        let who = match &claim.uid {
            Some(uid) => format!("Session {} (uid {uid})", claim.name),
            None => format!("Session {}", claim.name),
        };
        let message = format!("released the claim of {who}, which no longer exists; resetting");
        warn!(session = %claim.name, "{message}");
        self.ctx
            .event(
                self.pc,
                EventType::Warning,
                ORPHANED_CLAIM_RELEASED,
                "Release",
                message,
            )
            .await;
        Ok(Some(Action::requeue(Duration::ZERO)))
    }

    fn claim_message(&self) -> String {
        match &self.pc.spec.claim_ref {
            Some(c) => format!("claimed by Session {}", c.name),
            None => "ready to be claimed".to_owned(),
        }
    }

    async fn give_up(&mut self, reason: &'static str, message: String, halt: bool) -> Result<Action> {
        record_give_up(self.pc, self.ctx, self.status.phase, reason, &message).await;
        if halt {
            self.halt_all().await?;
        }
        self.status = machine::given_up(
            &self.status,
            reason,
            &message,
            self.pc.meta().generation,
            self.now,
        );
        Ok(Action::requeue(self.ctx.config.resync))
    }

    async fn fail(&mut self, reason: &'static str, message: String) -> Result<Action> {
        let phase = self.status.phase;
        self.ctx
            .metrics
            .step_failures
            .get_or_create(&crate::metrics::FailureLabels {
                phase: format!("{phase:?}"),
                reason: reason.to_owned(),
            })
            .inc();
        let retry_max = if phase == PracticeClusterPhase::Resetting {
            self.pc.spec.reset.max_retries
        } else {
            self.pc.spec.provisioning.max_retries
        };
        let next = machine::after_failure(&self.status, retry_max, reason, &message, self.now);
        warn!(reason, message = %message, attempts = next.attempts, next = ?next.phase, "step failed");
        self.ctx
            .event(
                self.pc,
                EventType::Warning,
                reason,
                if next.phase == PracticeClusterPhase::Failed {
                    "GiveUp"
                } else {
                    "Retry"
                },
                next.failure_message.clone().unwrap_or_default(),
            )
            .await;
        // Start the retry from a clean slate: rebuild VMs, or retake the snapshots. A reset
        // retry needs nothing here: the next attempt's restores have new names, and the
        // failed ones are deleted as leftovers.
        match (phase, next.phase) {
            (_, PracticeClusterPhase::Failed) => self.halt_all().await?,
            (_, PracticeClusterPhase::Provisioning) => {
                self.delete_all::<VirtualMachine>().await?;
                self.delete_all::<VirtualMachineSnapshot>().await?;
            }
            (_, PracticeClusterPhase::Snapshotting) => self.delete_all::<VirtualMachineSnapshot>().await?,
            _ => {}
        }
        self.status = next;
        Ok(Action::requeue(machine::backoff(
            self.ctx.config.retry_base,
            self.status.attempts,
        )))
    }

    /// Stops every VM of a Failed cluster: kept for inspection, it should not burn CPU.
    async fn halt_all(&self) -> Result<()> {
        let vms: Api<VirtualMachine> = self.api();
        for id in self.layout.vms() {
            match self
                .set_run_strategy(&vms, &self.layout.vm_name(id), RunStrategy::Halted)
                .await
            {
                Err(Error::Kube { source, .. }) if is_status(&source, 404) => {}
                other => other?,
            }
        }
        Ok(())
    }

    async fn delete_all<K>(&self) -> Result<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = self.api();
        let lp = ListParams::default().labels(&format!("{}={}", labels::CLUSTER, self.name()));
        api.delete_collection(&DeleteParams::background(), &lp)
            .await
            .map_err(kube_err("delete", K::kind(&()).into_owned(), &self.vm_ns))?;
        Ok(())
    }

    fn waiting(&mut self, why: String) -> Outcome {
        self.set_ready(false, "Waiting", why);
        Outcome::Wait(self.ctx.config.poll)
    }

    fn set_ready(&mut self, ready: bool, reason: &str, message: String) {
        let generation = self.pc.meta().generation;
        set_condition(
            &mut self.status.conditions,
            new_condition(
                condition_types::READY,
                ConditionStatus::from(ready),
                reason,
                message,
                generation,
                self.now,
            ),
        );
    }

    // ---- observation ----------------------------------------------------------------------

    async fn list<K>(&self) -> Result<Vec<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = self.api();
        let lp = ListParams::default().labels(&format!("{}={}", labels::CLUSTER, self.name()));
        match api.list(&lp).await {
            Ok(list) => Ok(list.items),
            Err(e) if is_status(&e, 404) => Ok(Vec::new()),
            Err(e) => Err(kube_err("list", "objects of", &self.vm_ns)(e)),
        }
    }

    async fn observe(&mut self) -> Result<Vec<VmObs>> {
        let (vms, vmis, dvs, snapshots, restores) = futures::try_join!(
            self.list::<VirtualMachine>(),
            self.list::<VirtualMachineInstance>(),
            self.list::<DataVolume>(),
            self.list::<VirtualMachineSnapshot>(),
            self.list::<VirtualMachineRestore>(),
        )?;
        let cluster = self.name();
        let named = |n: &Option<String>, want: &str| n.as_deref() == Some(want);
        let obs: Vec<VmObs> = self
            .layout
            .vms()
            .into_iter()
            .map(|id| {
                let mut o = VmObs::new(id, &cluster);
                o.vm = vms.iter().find(|v| named(&v.metadata.name, &o.name)).cloned();
                o.vmi = vmis.iter().find(|v| named(&v.metadata.name, &o.name)).cloned();
                let dv_name = naming::root_disk_name(&o.name);
                o.dv = dvs.iter().find(|d| named(&d.metadata.name, &dv_name)).cloned();
                let snap = naming::snapshot_name(&o.name);
                o.snapshot = snapshots.iter().find(|s| named(&s.metadata.name, &snap)).cloned();
                o.restores = restores
                    .iter()
                    .filter(|r| r.spec.target.name == o.name)
                    .cloned()
                    .collect();
                o
            })
            .collect();
        self.status.vms = obs
            .iter()
            .map(|o| {
                self.layout.vm_status(
                    o.id,
                    &Observed {
                        vm: o.vm.as_ref(),
                        vmi: o.vmi.as_ref(),
                        snapshot: o.snapshot.as_ref(),
                    },
                )
            })
            .collect();
        let snapshots_ready = !self.status.vms.is_empty() && self.status.vms.iter().all(|v| v.snapshot_ready);
        let generation = self.pc.meta().generation;
        set_condition(
            &mut self.status.conditions,
            new_condition(
                condition_types::SNAPSHOTS_READY,
                ConditionStatus::from(snapshots_ready),
                if snapshots_ready {
                    "SnapshotsReady"
                } else {
                    "NoBaseline"
                },
                if snapshots_ready {
                    "every VM has a baseline snapshot ready to restore"
                } else {
                    "baseline snapshots are missing or not ready"
                },
                generation,
                self.now,
            ),
        );
        Ok(obs)
    }

    // ---- phases ---------------------------------------------------------------------------

    async fn provisioning(&mut self) -> Result<Outcome> {
        if let Some(wait) = machine::backoff_remaining(&self.status, self.ctx.config.retry_base, self.now) {
            return Ok(Outcome::Wait(wait));
        }
        let Some((pki, api_ip)) = self.ensure_foundation().await? else {
            return Ok(self.waiting("control plane Service has no ClusterIP yet".to_owned()));
        };
        let obs = self.observe().await?;
        let going: Vec<&str> = obs
            .iter()
            .filter(|o| {
                o.vm.as_ref()
                    .is_some_and(|v| v.metadata.deletion_timestamp.is_some())
            })
            .map(|o| o.name.as_str())
            .collect();
        if !going.is_empty() {
            return Ok(self.waiting(format!(
                "VMs of the previous attempt to go away: {}",
                going.join(", ")
            )));
        }
        self.ensure_vm_secrets(&pki, &api_ip).await?;
        let vms: Api<VirtualMachine> = self.api();
        for o in obs.iter().filter(|o| o.vm.is_none()) {
            let vm = self.layout.virtual_machine(o.id, RunStrategy::Always);
            match vms.create(&PostParams::default(), &vm).await {
                Ok(_) => info!(vm = %o.name, "created VirtualMachine"),
                Err(e) if is_status(&e, 409) => {}
                Err(e) => {
                    return Err(kube_err(
                        "create",
                        "VirtualMachine",
                        format!("{}/{}", self.vm_ns, o.name),
                    )(e));
                }
            }
        }
        Ok(match machine::provisioning(&obs) {
            Progress::Done => Outcome::Enter(PracticeClusterPhase::Bootstrapping),
            Progress::Wait(why) => self.waiting(why),
            Progress::Fail { reason, message } => Outcome::Fail(reason, message),
        })
    }

    async fn bootstrapping(&mut self) -> Result<Outcome> {
        let obs = self.observe().await?;
        Ok(match machine::vms_running(&obs) {
            Progress::Done => match self.probe().await? {
                None => Outcome::Enter(PracticeClusterPhase::Snapshotting),
                Some(why) => self.waiting(why),
            },
            Progress::Wait(why) => self.waiting(why),
            Progress::Fail { reason, message } => Outcome::Fail(reason, message),
        })
    }

    async fn snapshotting(&mut self) -> Result<Outcome> {
        if let Some(wait) = machine::backoff_remaining(&self.status, self.ctx.config.retry_base, self.now) {
            return Ok(Outcome::Wait(wait));
        }
        let obs = self.observe().await?;
        let vms: Api<VirtualMachine> = self.api();
        Ok(match machine::snapshot_step(&obs) {
            SnapshotStep::Stop(names) => {
                for name in &names {
                    self.set_run_strategy(&vms, name, RunStrategy::Halted).await?;
                }
                self.waiting(format!(
                    "stopping VMs for their baseline snapshots: {}",
                    names.join(", ")
                ))
            }
            SnapshotStep::WaitStopped(names) => self.waiting(format!("VMs to stop: {}", names.join(", "))),
            SnapshotStep::Create(ids) => {
                let snapshots: Api<VirtualMachineSnapshot> = self.api();
                for id in &ids {
                    match snapshots
                        .create(&PostParams::default(), &self.layout.snapshot(*id))
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_status(&e, 409) => {}
                        Err(e) => {
                            return Err(kube_err(
                                "create",
                                "VirtualMachineSnapshot",
                                self.layout.vm_name(*id),
                            )(e));
                        }
                    }
                }
                self.waiting("baseline snapshots being taken".to_owned())
            }
            SnapshotStep::WaitSnapshots(names) => self.waiting(format!("snapshots of: {}", names.join(", "))),
            SnapshotStep::Start(names) => {
                for name in &names {
                    self.set_run_strategy(&vms, name, RunStrategy::Always).await?;
                }
                self.waiting(format!(
                    "starting VMs after their snapshots: {}",
                    names.join(", ")
                ))
            }
            SnapshotStep::WaitReady(names) => self.waiting(format!("VMs to be ready: {}", names.join(", "))),
            SnapshotStep::Done => match self.probe().await? {
                None => {
                    self.became_available(false);
                    Outcome::Enter(PracticeClusterPhase::Available)
                }
                Some(why) => self.waiting(why),
            },
            SnapshotStep::Fail(message) => Outcome::Fail("SnapshotFailed", message),
        })
    }

    /// Available or Assigned: follow the claim and reset requests, and check that the
    /// practice API still answers.
    async fn settled(&mut self) -> Result<Outcome> {
        self.observe().await?;
        let phase = self.status.phase;
        let claimed = self.pc.spec.claim_ref.is_some();
        let reset_requested = self.pc.annotations().contains_key(annotations::RESET_REQUESTED);
        let available = phase == PracticeClusterPhase::Available;
        self.set_ready(
            available && !claimed,
            if available { "Available" } else { "Assigned" },
            self.claim_message(),
        );
        if let Some(next) = machine::claim_transition(phase, claimed, reset_requested) {
            if next == PracticeClusterPhase::Resetting {
                if self.pc.spec.reset.strategy == ResetStrategy::Recreate {
                    return self.delete_for_recreate().await;
                }
                self.status = machine::start_reset(&self.status, phase == PracticeClusterPhase::Assigned);
            }
            // The status write that makes this so is guarded by the resourceVersion read: a
            // claim written since then wins, and the next reconcile sees it.
            return Ok(Outcome::Enter(next));
        }
        if !claimed && let Some(why) = self.missing_host_key().await? {
            // Every Session on it would fail SSH setup (the access layer refuses a cluster
            // without a pinned key), and nothing else rolls it: its template is unchanged.
            // The VMs are not halted first: the Failed status is the only write, guarded by
            // the resourceVersion read, so a claim written meanwhile wins and nothing of the
            // cluster was touched; the pool deletes the Failed cluster.
            return Ok(Outcome::GiveUp {
                reason: NO_PINNED_HOST_KEY,
                message: format!(
                    "{why}: the cluster predates SSH host key pinning and cannot be reached by Sessions; it will be replaced"
                ),
                halt: false,
            });
        }
        let Some(why) = self.check_api().await? else {
            return Ok(Outcome::Wait(self.ctx.config.resync));
        };
        if claimed {
            // Never fail a cluster under a student; the condition tells the Session and the
            // administrator.
            return Ok(Outcome::Wait(self.ctx.config.poll));
        }
        self.set_ready(false, "ApiUnreachable", why.clone());
        let grace = self.ctx.config.unreachable_grace;
        if machine::false_for_longer_than(
            &self.status.conditions,
            condition_types::API_REACHABLE,
            grace,
            self.now,
        ) {
            return Ok(Outcome::GiveUp {
                reason: "PracticeApiUnreachable",
                message: format!(
                    "the practice API stopped answering for longer than {}s: {why}",
                    grace.as_secs()
                ),
                halt: true,
            });
        }
        Ok(Outcome::Wait(self.ctx.config.poll))
    }

    /// Runs the readiness check of a settled cluster and records it in `ApiReachable`.
    /// `None` when the practice API answered; else why not.
    async fn check_api(&mut self) -> Result<Option<String>> {
        let verdict = self.probe().await?;
        self.set_api_reachable(verdict.as_deref());
        Ok(verdict)
    }

    fn set_api_reachable(&mut self, why_not: Option<&str>) {
        let generation = self.pc.meta().generation;
        set_condition(
            &mut self.status.conditions,
            new_condition(
                condition_types::API_REACHABLE,
                ConditionStatus::from(why_not.is_none()),
                if why_not.is_none() {
                    "Answering"
                } else {
                    "NotAnswering"
                },
                why_not
                    .unwrap_or("the practice API is ready with every node")
                    .to_owned(),
                generation,
                self.now,
            ),
        );
    }

    /// Strategy Recreate: the released cluster deletes itself and the pool builds a fresh one.
    /// The delete is guarded by the resourceVersion and uid read, so a cluster claimed in the
    /// meantime is never deleted under its Session.
    async fn delete_for_recreate(&mut self) -> Result<Outcome> {
        let api: Api<PracticeCluster> =
            Api::namespaced(self.ctx.client.clone(), &self.pc.namespace().unwrap_or_default());
        if !crate::pool::delete_if_unchanged(&api, self.pc).await? {
            info!("the cluster changed since it was read; deciding again");
            return Ok(Outcome::Written(Action::requeue(self.ctx.config.retry_base)));
        }
        self.ctx
            .event(
                self.pc,
                EventType::Normal,
                "Recreating",
                "Delete",
                "released; reset strategy Recreate deletes the cluster".to_owned(),
            )
            .await;
        Ok(Outcome::Written(Action::await_change()))
    }

    async fn resetting(&mut self) -> Result<Outcome> {
        let held = self
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == condition_types::READY && c.reason == CLAIMED_WHILE_RESETTING);
        if let Some(claim) = &self.pc.spec.claim_ref {
            // Only a claim made by hand lands here (Sessions claim Available clusters, guarded
            // by their resourceVersion). Touch nothing under it; the reset goes on once the
            // claim is gone.
            let message = format!(
                "Session {} claimed the cluster during its reset; the reset waits for the claim to go",
                claim.name
            );
            if !held {
                self.ctx
                    .event(
                        self.pc,
                        EventType::Warning,
                        CLAIMED_WHILE_RESETTING,
                        "Reset",
                        message.clone(),
                    )
                    .await;
            }
            self.set_ready(false, CLAIMED_WHILE_RESETTING, message);
            return Ok(Outcome::Hold(self.ctx.config.resync));
        }
        if held {
            // The claim went: the reset's timeout counts from now, not from before the hold.
            self.status.phase_since = Some(Time(self.now));
        }
        if self.pc.annotations().contains_key(annotations::RESET_REQUESTED) {
            // The request is taken (this reset); clear it so the next Available does not
            // reset again. Guarded like every write here.
            let api: Api<PracticeCluster> =
                Api::namespaced(self.ctx.client.clone(), &self.pc.namespace().unwrap_or_default());
            let patch = json!({"metadata": {
                "resourceVersion": self.pc.resource_version(),
                "annotations": {annotations::RESET_REQUESTED: null},
            }});
            return match api
                .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(Outcome::Written(Action::requeue(Duration::ZERO))),
                Err(e) if is_status(&e, 409) => {
                    Ok(Outcome::Written(Action::requeue(self.ctx.config.retry_base)))
                }
                Err(e) => Err(kube_err("patch", "PracticeCluster", self.name())(e)),
            };
        }
        if let Some(wait) = machine::backoff_remaining(&self.status, self.ctx.config.retry_base, self.now) {
            return Ok(Outcome::Wait(wait));
        }
        self.set_ready(false, "Resetting", "restoring the baseline snapshots".to_owned());
        let obs = self.observe().await?;
        let number = machine::restore_number(&self.status);
        let vms: Api<VirtualMachine> = self.api();
        let restores: Api<VirtualMachineRestore> = self.api();
        let mut waiting = Vec::new();
        let mut done = 0;
        for o in &obs {
            let current = naming::restore_name(&o.name, number);
            match machine::reset_step(o, &current) {
                ResetStep::Stop => {
                    self.set_run_strategy(&vms, &o.name, RunStrategy::Halted).await?;
                    waiting.push(format!("{} stopping", o.name));
                }
                ResetStep::WaitStopped => waiting.push(format!("{} stopping", o.name)),
                ResetStep::DeleteRestores(names) => {
                    for name in names {
                        match restores.delete(&name, &DeleteParams::background()).await {
                            Ok(_) => {}
                            Err(e) if is_status(&e, 404) => {}
                            Err(e) => return Err(kube_err("delete", "VirtualMachineRestore", name)(e)),
                        }
                    }
                    waiting.push(format!("{} old restores going", o.name));
                }
                ResetStep::WaitRestoresGone => waiting.push(format!("{} old restores going", o.name)),
                ResetStep::CreateRestore => {
                    // The default volume policy (new PVC names) works on every KubeVirt
                    // version; the PVCs it leaves are cleaned up below.
                    let restore = self.layout.restore(o.id, number, None);
                    match restores.create(&PostParams::default(), &restore).await {
                        Ok(_) => info!(restore = %current, "created VirtualMachineRestore"),
                        Err(e) if is_status(&e, 409) => {}
                        Err(e) => return Err(kube_err("create", "VirtualMachineRestore", current)(e)),
                    }
                    waiting.push(format!("{} restoring", o.name));
                }
                ResetStep::WaitRestore => waiting.push(format!("{} restoring", o.name)),
                ResetStep::Start => {
                    self.set_run_strategy(&vms, &o.name, RunStrategy::Always).await?;
                    waiting.push(format!("{} starting", o.name));
                }
                ResetStep::WaitReady => waiting.push(format!("{} starting", o.name)),
                ResetStep::Done => done += 1,
                ResetStep::Fail(reason, message) => return Ok(Outcome::Fail(reason, message)),
            }
        }
        if done < obs.len() {
            return Ok(self.waiting(format!("reset: {}", waiting.join(", "))));
        }
        self.delete_leftover_pvcs(&obs).await?;
        if let Some(why) = self.probe().await? {
            return Ok(self.waiting(why));
        }
        self.became_available(true);
        Ok(Outcome::Enter(PracticeClusterPhase::Available))
    }

    fn became_available(&mut self, after_reset: bool) {
        let started = self.status.phase_since.as_ref().map(|t| t.0).unwrap_or(self.now);
        if after_reset {
            let seconds = self.now.duration_since(started).as_secs_f64().max(0.0);
            self.status.last_reset_time = Some(Time(self.now));
            self.status.last_reset_duration_seconds = Some(seconds);
            self.ctx.metrics.reset_duration.observe(seconds);
        } else {
            let created = self
                .pc
                .meta()
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(started);
            let seconds = self.now.duration_since(created).as_secs_f64().max(0.0);
            self.status.available_since = Some(Time(self.now));
            self.status.provision_duration_seconds = Some(seconds);
            self.ctx.metrics.provision_duration.observe(seconds);
        }
        self.set_api_reachable(None);
        self.set_ready(true, "Available", "ready to be claimed".to_owned());
    }

    // ---- actions --------------------------------------------------------------------------

    async fn set_run_strategy(
        &self,
        vms: &Api<VirtualMachine>,
        name: &str,
        strategy: RunStrategy,
    ) -> Result<()> {
        // VMs are created once and afterwards only their runStrategy changes: a restore
        // repoints their volumes, which re-applying the whole VM would undo.
        let patch = json!({"spec": {"runStrategy": strategy}});
        vms.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err(
                "patch runStrategy of",
                "VirtualMachine",
                format!("{}/{name}", self.vm_ns),
            ))?;
        Ok(())
    }

    async fn apply<K>(&self, obj: &K) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
        K::Scope: ApiScope,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let api: Api<K> = K::Scope::api(self.ctx.client.clone(), obj.meta().namespace.as_deref());
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(kube_err("apply", K::kind(&()).into_owned(), name))
    }

    /// Namespace, quota, NetworkPolicies, PKI Secret and control plane Service. Returns the
    /// PKI and the Service's ClusterIP, or `None` while the Service has no ClusterIP.
    async fn ensure_foundation(&mut self) -> Result<Option<(ClusterPki, String)>> {
        let labels = self.layout.labels(None);
        let namespaces: Api<Namespace> = Api::all(self.ctx.client.clone());
        if let Some(ns) =
            namespaces
                .get_opt(&self.vm_ns)
                .await
                .map_err(kube_err("get", "Namespace", &self.vm_ns))?
            && !namespace_belongs_to(&ns, &self.vm_ns)
        {
            // Fails the cluster for good (with a Warning event) in `reconcile`.
            return Err(Error::ForeignNamespace {
                namespace: self.vm_ns.clone(),
                cluster: self.name(),
            });
        }
        self.apply(&isolation::namespace(&self.vm_ns, &labels)).await?;
        self.status.namespace = Some(self.vm_ns.clone());
        let isolation = &self.pc.spec.isolation;
        if let Some(quota) = isolation::resource_quota(&self.vm_ns, &labels, isolation) {
            self.apply(&quota).await?;
        }
        let policies: Vec<NetworkPolicy> = isolation::network_policies(
            &self.vm_ns,
            &labels,
            isolation,
            &self.ctx.config.operator_namespace,
        );
        for policy in &policies {
            self.apply(policy).await?;
        }
        let pki = self.ensure_pki().await?;
        let services: Api<Service> = self.api();
        let svc_name = naming::control_plane_service_name(&self.name());
        // Keep an allocated ClusterIP: it is baked into the VMs' cloud-init.
        let existing_ip = services
            .get_opt(&svc_name)
            .await
            .map_err(kube_err("get", "Service", &svc_name))?
            .and_then(|s| s.spec?.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None");
        let svc = self
            .apply(&self.layout.control_plane_service(existing_ip.as_deref()))
            .await?;
        let ip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None");
        self.status.api_endpoint = Some(self.layout.api_server_url());
        Ok(ip.map(|ip| (pki, ip)))
    }

    /// The cluster's PKI: generated once, then always read back from its Secret.
    async fn ensure_pki(&mut self) -> Result<ClusterPki> {
        let secrets: Api<Secret> = self.api();
        let name = naming::pki_secret_name(&self.name());
        if let Some(secret) = secrets
            .get_opt(&name)
            .await
            .map_err(kube_err("get", "Secret", &name))?
        {
            return ClusterPki::from_secret_data(&secret.data.unwrap_or_default()).map_err(|source| {
                Error::Layout {
                    cluster: self.name(),
                    source,
                }
            });
        }
        let pki = ClusterPki::generate().map_err(|source| Error::Layout {
            cluster: self.name(),
            source,
        })?;
        match secrets
            .create(&PostParams::default(), &self.layout.pki_secret(&pki))
            .await
        {
            Ok(_) => Ok(pki),
            // Another writer got there first (a previous leader): use theirs.
            Err(e) if is_status(&e, 409) => {
                let secret = secrets
                    .get(&name)
                    .await
                    .map_err(kube_err("get", "Secret", &name))?;
                ClusterPki::from_secret_data(&secret.data.unwrap_or_default()).map_err(|source| {
                    Error::Layout {
                        cluster: self.name(),
                        source,
                    }
                })
            }
            Err(e) => Err(kube_err("create", "Secret", name)(e)),
        }
    }

    async fn read_pki(&self) -> Result<ClusterPki> {
        let secrets: Api<Secret> = self.api();
        let name = naming::pki_secret_name(&self.name());
        let secret = secrets
            .get(&name)
            .await
            .map_err(kube_err("get", "Secret", &name))?;
        ClusterPki::from_secret_data(&secret.data.unwrap_or_default()).map_err(|source| Error::Layout {
            cluster: self.name(),
            source,
        })
    }

    async fn ssh_public_key(&self) -> Result<String> {
        let ns = self.pc.namespace().unwrap_or_default();
        let name = self.pc.spec.template.ssh_key_secret_ref.name.clone();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(kube_err("get", "Secret", &name))?;
        let err = |reason: &str| Error::SshKey {
            namespace: ns.clone(),
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let secret = secret.ok_or_else(|| err("not found"))?;
        let key = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SSH_PUBLIC_KEY))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(SSH_PUBLIC_KEY))
                    .cloned()
            })
            .filter(|k| !k.is_empty())
            .ok_or_else(|| err(&format!("no {SSH_PUBLIC_KEY:?} key")))?;
        Ok(key)
    }

    /// The cluster's SSH host key pair: generated once, then always read back from its
    /// Secret, so every VM (first attempt, retry, after a restart) gets the same key and the
    /// key pinned by the SSH client is the one the VMs present.
    async fn ensure_ssh_host_key(&self) -> Result<cks_validation::HostKeyPair> {
        let secrets: Api<Secret> = self.api();
        let name = naming::ssh_host_key_secret_name(&self.name());
        let read = |secret: Secret| -> Result<cks_validation::HostKeyPair> {
            let data = secret.data.unwrap_or_default();
            let field = |key: &str| {
                data.get(key)
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| Error::Access {
                        cluster: self.name(),
                        reason: format!("Secret {}/{name} has no {key}", self.vm_ns),
                    })
            };
            Ok(cks_validation::HostKeyPair {
                private_openssh: field(SSH_HOST_KEY_PRIVATE)?,
                public_openssh: field(SSH_HOST_KEY_PUBLIC)?,
            })
        };
        if let Some(secret) = secrets
            .get_opt(&name)
            .await
            .map_err(kube_err("get", "Secret", &name))?
        {
            return read(secret);
        }
        let pair = cks_validation::generate_host_key().map_err(|e| Error::Access {
            cluster: self.name(),
            reason: format!("generating the SSH host key: {e}"),
        })?;
        let secret = self.layout.ssh_host_key_secret(SshHostKey {
            private_openssh: &pair.private_openssh,
            public_openssh: &pair.public_openssh,
        });
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(pair),
            // Another writer got there first (a previous leader): use theirs.
            Err(e) if is_status(&e, 409) => read(
                secrets
                    .get(&name)
                    .await
                    .map_err(kube_err("get", "Secret", &name))?,
            ),
            Err(e) => Err(kube_err("create", "Secret", name)(e)),
        }
    }

    /// `None` when the cluster's SSH host key Secret holds the public key the access layer
    /// pins (the same test as `PracticeAccess`); else what is missing. Read from the API.
    async fn missing_host_key(&self) -> Result<Option<String>> {
        let name = naming::ssh_host_key_secret_name(&self.name());
        let key = access::secret_value(self.ctx, &self.vm_ns, &name, SSH_HOST_KEY_PUBLIC).await?;
        Ok(key.filter(|k| !k.trim().is_empty()).is_none().then(|| {
            format!(
                "Secret {}/{name} is missing or has no {SSH_HOST_KEY_PUBLIC}",
                self.vm_ns
            )
        }))
    }

    /// Cloud-init Secrets of every VM and the admin kubeconfig Secret.
    async fn ensure_vm_secrets(&mut self, pki: &ClusterPki, api_ip: &str) -> Result<()> {
        let key = self.ssh_public_key().await?;
        let host_key = self.ensure_ssh_host_key().await?;
        let layout_err = |source| Error::Layout {
            cluster: self.name(),
            source,
        };
        let bootstrap = Bootstrap::new(pki, &key, api_ip)
            .map_err(layout_err)?
            .with_ssh_host_key(SshHostKey {
                private_openssh: &host_key.private_openssh,
                public_openssh: &host_key.public_openssh,
            });
        for id in self.layout.vms() {
            let secret = self
                .layout
                .cloud_init_secret(id, &bootstrap)
                .map_err(|source| Error::Layout {
                    cluster: self.name(),
                    source,
                })?;
            self.apply(&secret).await?;
        }
        let kubeconfig = self
            .layout
            .admin_kubeconfig_secret(pki)
            .map_err(|source| Error::Layout {
                cluster: self.name(),
                source,
            })?;
        self.apply(&kubeconfig).await?;
        self.status.admin_kubeconfig_secret = Some(naming::admin_kubeconfig_secret_name(&self.name()));
        Ok(())
    }

    async fn delete_leftover_pvcs(&self, obs: &[VmObs]) -> Result<()> {
        let pvcs: Api<PersistentVolumeClaim> = self.api();
        let names: Vec<String> = match pvcs.list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.name)
                .collect(),
            Err(e) => return Err(kube_err("list", "PersistentVolumeClaim", &self.vm_ns)(e)),
        };
        for name in machine::leftover_restore_pvcs(&names, obs) {
            info!(pvc = %name, "deleting a restore PVC left by an earlier reset");
            match pvcs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(kube_err("delete", "PersistentVolumeClaim", name)(e)),
            }
        }
        Ok(())
    }

    /// `None` when the practice cluster's API is ready with every node; else why not.
    async fn probe(&self) -> Result<Option<String>> {
        let pki = self.read_pki().await?;
        let kubeconfig = pki
            .admin_kubeconfig(&self.name(), &self.layout.api_server_url())
            .map_err(|source| Error::Layout {
                cluster: self.name(),
                source,
            })?;
        let cp = self.layout.vm_name(VmId::ControlPlane);
        let cp_ip = self
            .status
            .vms
            .iter()
            .find(|v| v.name == cp)
            .and_then(|v| v.ip.as_deref());
        let Some((url, tls_server_name)) = access::api_url(
            self.ctx.config.practice_api,
            &self.layout.api_server_url(),
            &self.layout.control_plane_dns_name(),
            cp_ip,
        ) else {
            return Ok(Some("control plane VM has no IP yet".to_owned()));
        };
        let target = ProbeTarget {
            api: ApiTarget {
                kubeconfig,
                url,
                tls_server_name,
            },
            nodes: self.layout.vms().into_iter().map(VmId::target).collect(),
        };
        Ok(match self.ctx.probe.check(&target).await {
            Ok(verdict) => verdict.map(|why| format!("practice cluster API: {why}")),
            Err(e) => Some(format!("practice cluster API not reachable: {e}")),
        })
    }

    /// Writes the status when it changed, guarded by the resourceVersion read (see
    /// [`replace_status`]); `Ok(false)` when the cluster changed meanwhile.
    async fn write_status(&mut self) -> Result<bool> {
        self.status.observed_generation = self.pc.meta().generation;
        if self.pc.status.as_ref() == Some(&self.status) {
            return Ok(true);
        }
        replace_status(self.pc, &self.status, self.ctx).await
    }
}

/// Builds an `Api` for a namespaced or cluster-scoped kind.
trait ApiScope {
    fn api<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>;
}

impl ApiScope for k8s_openapi::NamespaceResourceScope {
    fn api<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>,
    {
        Api::namespaced(client, namespace.unwrap_or("default"))
    }
}

impl ApiScope for k8s_openapi::ClusterResourceScope {
    fn api<K>(client: kube::Client, _namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>,
    {
        Api::all(client)
    }
}
