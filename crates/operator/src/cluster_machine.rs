//! The PracticeCluster state machine as pure functions of what was observed: whether a step
//! is done, must wait, or failed; what each VM needs next while snapshotting and resetting;
//! timeouts, backoff and the retry-or-fail decision. The controller only executes what these
//! return, so every step is re-derived from the world after a restart.

use std::time::Duration;

use cks_api::conditions::{ConditionStatus, new_condition, set_condition};
use cks_api::names::condition_types;
use cks_api::practice_cluster::{ClaimRef, ObservedClaim, PracticeClusterPhase, PracticeClusterStatus};
use cks_kubevirt::cdi::{DataVolume, DataVolumePhase};
use cks_kubevirt::common::find_condition;
use cks_kubevirt::kubevirt::{RunStrategy, VirtualMachine, VirtualMachineInstance, VmiPhase};
use cks_kubevirt::naming::VmId;
use cks_kubevirt::snapshot::{VirtualMachineRestore, VirtualMachineSnapshot};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Everything observed of one VM of the cluster.
#[derive(Clone, Debug)]
pub struct VmObs {
    /// Which VM.
    pub id: VmId,
    /// Its VirtualMachine name.
    pub name: String,
    /// The VirtualMachine.
    pub vm: Option<VirtualMachine>,
    /// Its instance, while one exists.
    pub vmi: Option<VirtualMachineInstance>,
    /// Its root-disk DataVolume.
    pub dv: Option<DataVolume>,
    /// Its baseline snapshot.
    pub snapshot: Option<VirtualMachineSnapshot>,
    /// Restores targeting it.
    pub restores: Vec<VirtualMachineRestore>,
}

impl VmObs {
    /// An unobserved VM.
    pub fn new(id: VmId, cluster: &str) -> Self {
        Self {
            id,
            name: id.vm_name(cluster),
            vm: None,
            vmi: None,
            dv: None,
            snapshot: None,
            restores: Vec::new(),
        }
    }

    fn run_strategy(&self) -> Option<RunStrategy> {
        self.vm.as_ref().and_then(|vm| vm.spec.run_strategy)
    }

    fn ready(&self) -> bool {
        self.vm
            .as_ref()
            .and_then(|vm| vm.status.as_ref())
            .is_some_and(|s| s.ready)
            && self
                .vmi
                .as_ref()
                .and_then(|vmi| vmi.status.as_ref())
                .is_some_and(|s| s.is_ready())
    }

    /// Why the VM cannot run, when KubeVirt says so.
    fn error(&self) -> Option<(&'static str, String)> {
        if let Some(dv) = &self.dv
            && let Some(status) = &dv.status
            && status.phase == Some(DataVolumePhase::Failed)
        {
            let detail = ["Running", "Ready"]
                .iter()
                .filter_map(|t| find_condition(&status.conditions, t))
                .find_map(|c| c.message.clone().filter(|m| !m.is_empty()))
                .unwrap_or_else(|| "clone failed".to_owned());
            return Some(("CloneFailed", format!("DataVolume of {}: {detail}", self.name)));
        }
        if let Some(status) = self.vm.as_ref().and_then(|vm| vm.status.as_ref())
            && let Some(printable) = status.printable_status
            && printable.is_error()
        {
            let detail = find_condition(&status.conditions, "Failure")
                .and_then(|c| c.message.clone())
                .unwrap_or_default();
            return Some((
                "VmError",
                format!("VM {} is {printable:?} {detail}", self.name)
                    .trim()
                    .to_owned(),
            ));
        }
        if let Some(status) = self.vmi.as_ref().and_then(|vmi| vmi.status.as_ref())
            && status.phase == Some(VmiPhase::Failed)
        {
            return Some(("VmFailed", format!("VM {} stopped with phase Failed", self.name)));
        }
        None
    }
}

/// Outcome of looking at a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The step is complete.
    Done,
    /// Still waiting, for the reason given.
    Wait(String),
    /// The step failed.
    Fail {
        /// Short stable reason (`CloneFailed`, `VmError`, ...).
        reason: &'static str,
        /// What failed.
        message: String,
    },
}

fn first_error(vms: &[VmObs]) -> Option<Progress> {
    vms.iter()
        .find_map(VmObs::error)
        .map(|(reason, message)| Progress::Fail { reason, message })
}

fn waiting_for(what: &str, names: &[&str]) -> Progress {
    Progress::Wait(format!("{what}: {}", names.join(", ")))
}

/// Provisioning is done once every VM exists and its disk clone succeeded.
pub fn provisioning(vms: &[VmObs]) -> Progress {
    if let Some(fail) = first_error(vms) {
        return fail;
    }
    let missing: Vec<&str> = vms
        .iter()
        .filter(|v| v.vm.is_none())
        .map(|v| v.name.as_str())
        .collect();
    if !missing.is_empty() {
        return waiting_for("VMs to be created", &missing);
    }
    let cloning: Vec<&str> = vms
        .iter()
        .filter(|v| {
            !v.dv
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.is_ready())
        })
        .map(|v| v.name.as_str())
        .collect();
    if cloning.is_empty() {
        Progress::Done
    } else {
        waiting_for("disk clones of", &cloning)
    }
}

/// Bootstrapping (as far as KubeVirt can tell) is done once every VM runs and is ready;
/// the practice cluster's own API is checked after that.
pub fn vms_running(vms: &[VmObs]) -> Progress {
    if let Some(fail) = first_error(vms) {
        return fail;
    }
    let booting: Vec<&str> = vms
        .iter()
        .filter(|v| !v.ready())
        .map(|v| v.name.as_str())
        .collect();
    if booting.is_empty() {
        Progress::Done
    } else {
        waiting_for("VMs to be ready", &booting)
    }
}

/// What the baseline snapshot step needs next.
///
/// Snapshots are taken of stopped VMs: every reset boots from the baseline disks anyway
/// (a restore needs the VM stopped), so a clean shutdown before the snapshot gives
/// filesystem-consistent disks (etcd, containerd) without depending on a guest agent, at the
/// price of one extra reboot per cluster lifetime, off the session's critical path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotStep {
    /// Halt these VMs.
    Stop(Vec<String>),
    /// Wait for the VMIs to go away.
    WaitStopped(Vec<String>),
    /// Create the baseline snapshots of these VMs.
    Create(Vec<VmId>),
    /// Wait for the snapshots to be ready.
    WaitSnapshots(Vec<String>),
    /// Start these VMs again.
    Start(Vec<String>),
    /// Wait for the VMs to be ready again.
    WaitReady(Vec<String>),
    /// Snapshots ready and VMs running: check the practice API, then Available.
    Done,
    /// A snapshot failed.
    Fail(String),
}

/// The next snapshot step.
pub fn snapshot_step(vms: &[VmObs]) -> SnapshotStep {
    let names = |f: &dyn Fn(&VmObs) -> bool| -> Vec<String> {
        vms.iter().filter(|v| f(v)).map(|v| v.name.clone()).collect()
    };
    if let Some((vm, status)) = vms.iter().find_map(|v| {
        v.snapshot
            .as_ref()?
            .status
            .as_ref()
            .filter(|s| s.is_failed())
            .map(|s| (v, s))
    }) {
        let detail = status
            .error
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| "snapshot failed".to_owned());
        return SnapshotStep::Fail(format!("snapshot of {}: {detail}", vm.name));
    }
    let snapshot_ready = |v: &VmObs| {
        v.snapshot
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some_and(|s| s.ready_to_use)
    };
    if vms.iter().all(snapshot_ready) {
        let halted = names(&|v| v.run_strategy() != Some(RunStrategy::Always));
        if !halted.is_empty() {
            return SnapshotStep::Start(halted);
        }
        let booting = names(&|v| !v.ready());
        return if booting.is_empty() {
            SnapshotStep::Done
        } else {
            SnapshotStep::WaitReady(booting)
        };
    }
    let running = names(&|v| v.snapshot.is_none() && v.run_strategy() != Some(RunStrategy::Halted));
    if !running.is_empty() {
        return SnapshotStep::Stop(running);
    }
    let stopping = names(&|v| v.snapshot.is_none() && v.vmi.is_some());
    if !stopping.is_empty() {
        return SnapshotStep::WaitStopped(stopping);
    }
    let missing: Vec<VmId> = vms
        .iter()
        .filter(|v| v.snapshot.is_none())
        .map(|v| v.id)
        .collect();
    if !missing.is_empty() {
        return SnapshotStep::Create(missing);
    }
    SnapshotStep::WaitSnapshots(names(&|v| !snapshot_ready(v)))
}

/// What one VM needs next during a reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetStep {
    /// Halt the VM (a restore needs it stopped).
    Stop,
    /// Wait for its VMI to go away.
    WaitStopped,
    /// Delete restores of earlier resets or failed attempts (one incomplete restore per VM).
    DeleteRestores(Vec<String>),
    /// Wait for those deletions to finish.
    WaitRestoresGone,
    /// Create the restore of this reset.
    CreateRestore,
    /// Wait for the restore to complete.
    WaitRestore,
    /// Restored: start the VM.
    Start,
    /// Wait for the VM to be ready.
    WaitReady,
    /// Restored and ready.
    Done,
    /// The restore or the VM failed.
    Fail(&'static str, String),
}

/// The next reset step of one VM; `current` names the restore of this reset attempt.
pub fn reset_step(vm: &VmObs, current: &str) -> ResetStep {
    if vm.vm.is_none() {
        // Nothing to restore into: waiting would only run into the timeout.
        return ResetStep::Fail("VmMissing", format!("VM {} no longer exists", vm.name));
    }
    let restore = vm
        .restores
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(current));
    let status = restore.and_then(|r| r.status.as_ref());
    if status.is_some_and(|s| s.complete) {
        if vm.run_strategy() != Some(RunStrategy::Always) {
            return ResetStep::Start;
        }
        if let Some((reason, message)) = vm.error() {
            return ResetStep::Fail(reason, message);
        }
        return if vm.ready() {
            ResetStep::Done
        } else {
            ResetStep::WaitReady
        };
    }
    if let Some(failure) = status.and_then(|s| s.failure()) {
        return ResetStep::Fail(
            "RestoreFailed",
            format!("restore {current} of {}: {failure}", vm.name),
        );
    }
    if vm.run_strategy() != Some(RunStrategy::Halted) {
        return ResetStep::Stop;
    }
    if vm.vmi.is_some() {
        return ResetStep::WaitStopped;
    }
    let old: Vec<&VirtualMachineRestore> = vm
        .restores
        .iter()
        .filter(|r| r.metadata.name.as_deref() != Some(current))
        .collect();
    if !old.is_empty() {
        let live: Vec<String> = old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        return if live.is_empty() {
            ResetStep::WaitRestoresGone
        } else {
            ResetStep::DeleteRestores(live)
        };
    }
    if restore.is_none() {
        ResetStep::CreateRestore
    } else {
        ResetStep::WaitRestore
    }
}

/// Restore PVCs (`restore-…`) no VM uses any more: left by earlier resets. Only call once
/// every restore of the current reset is complete, since a restore in progress creates PVCs
/// its VM does not reference yet.
pub fn leftover_restore_pvcs(pvcs: &[String], vms: &[VmObs]) -> Vec<String> {
    let used: Vec<&str> = vms
        .iter()
        .filter_map(|v| v.vm.as_ref())
        .flat_map(VirtualMachine::claim_names)
        .collect();
    pvcs.iter()
        .filter(|p| p.starts_with("restore-") && !used.contains(&p.as_str()))
        .cloned()
        .collect()
}

/// Number used in restore names for this reset attempt: a new one per reset and per retry,
/// so an attempt never meets a restore of an earlier one under its own name.
pub fn restore_number(status: &PracticeClusterStatus) -> u32 {
    u32::try_from(status.resets.max(1)).unwrap_or(1) * 100
        + u32::try_from(status.attempts.max(0)).unwrap_or(0)
}

/// The status of a settled cluster entering Resetting: one more reset, and one more session
/// served when a claim was released (an administrator's reset request is no session).
pub fn start_reset(status: &PracticeClusterStatus, released: bool) -> PracticeClusterStatus {
    let mut next = status.clone();
    // Every release is a reset, so `resets >= sessionsServed`, except in clusters last reset
    // by an operator that numbered restores by sessions served: counting on from there keeps
    // the new names clear of their last restore's.
    next.resets = status.resets.max(status.sessions_served) + 1;
    if released {
        next.sessions_served = status.sessions_served + 1;
    }
    next
}

/// True when the condition `type_` has been `False` for longer than `grace`.
pub fn false_for_longer_than(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    grace: Duration,
    now: Timestamp,
) -> bool {
    conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "False")
        .is_some_and(|c| now.duration_since(c.last_transition_time.0).as_secs_f64() > grace.as_secs_f64())
}

/// Delay before retry number `attempts` (counted from 1): `base`, doubling, at most 5 min.
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    base.saturating_mul(2u32.saturating_pow(exp))
        .min(Duration::from_secs(300))
}

fn since(status: &PracticeClusterStatus) -> Option<Timestamp> {
    status.phase_since.as_ref().map(|t| t.0)
}

/// How long to wait before acting on a retried step, if its backoff has not passed.
pub fn backoff_remaining(status: &PracticeClusterStatus, base: Duration, now: Timestamp) -> Option<Duration> {
    if status.attempts <= 0 {
        return None;
    }
    let start = since(status)?;
    let due = start + backoff(base, status.attempts);
    let left = due.duration_since(now);
    (left.is_positive()).then(|| Duration::try_from(left).unwrap_or_default())
}

/// True when the current phase has lasted longer than `timeout_seconds` plus its backoff.
pub fn timed_out(
    status: &PracticeClusterStatus,
    timeout_seconds: i32,
    base: Duration,
    now: Timestamp,
) -> bool {
    let Some(start) = since(status) else {
        return false;
    };
    let pause = if status.attempts > 0 {
        backoff(base, status.attempts)
    } else {
        Duration::ZERO
    };
    let limit = Duration::from_secs(u64::try_from(timeout_seconds.max(1)).unwrap_or(1)) + pause;
    now.duration_since(start).as_secs_f64() > limit.as_secs_f64()
}

/// The phase a failed step retries from: a provisioning failure rebuilds the VMs, a
/// snapshot or reset failure repeats that step.
pub fn retry_phase(phase: PracticeClusterPhase) -> PracticeClusterPhase {
    match phase {
        PracticeClusterPhase::Pending
        | PracticeClusterPhase::Provisioning
        | PracticeClusterPhase::Bootstrapping => PracticeClusterPhase::Provisioning,
        other => other,
    }
}

/// The status after a failed step: the same step again with one more attempt, or Failed
/// once `max_retries` retries are used up.
pub fn after_failure(
    status: &PracticeClusterStatus,
    max_retries: i32,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> PracticeClusterStatus {
    let mut next = status.clone();
    next.attempts = status.attempts + 1;
    next.phase_since = Some(Time(now));
    if next.attempts > max_retries {
        next.phase = PracticeClusterPhase::Failed;
        next.failure_reason = Some(reason.to_owned());
        next.failure_message = Some(format!("{message} (gave up after {} attempts)", next.attempts));
    } else {
        next.phase = retry_phase(status.phase);
        next.failure_reason = Some(reason.to_owned());
        next.failure_message = Some(format!("attempt {} failed: {message}", next.attempts));
    }
    next
}

/// The status of a cluster that failed for good, without retries (a template that cannot
/// build VMs, a namespace that is not its own, a practice API that stopped answering).
pub fn given_up(
    status: &PracticeClusterStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> PracticeClusterStatus {
    let mut next = status.clone();
    next.phase = PracticeClusterPhase::Failed;
    next.phase_since = Some(Time(now));
    next.failure_reason = Some(reason.to_owned());
    next.failure_message = Some(message.to_owned());
    set_condition(
        &mut next.conditions,
        new_condition(
            condition_types::READY,
            ConditionStatus::False,
            reason,
            message.to_owned(),
            generation,
            now,
        ),
    );
    next
}

/// The phase a settled cluster moves to because of its claim or a reset request.
pub fn claim_transition(
    phase: PracticeClusterPhase,
    claimed: bool,
    reset_requested: bool,
) -> Option<PracticeClusterPhase> {
    use PracticeClusterPhase::*;
    match phase {
        Available if claimed => Some(Assigned),
        Available if reset_requested => Some(Resetting),
        Assigned if !claimed => Some(Resetting),
        _ => None,
    }
}

/// The record of `claim` as of `now`: kept while the claim stays the same (name and uid),
/// started anew when it changed, gone without a claim.
pub fn observe_claim(
    seen: Option<&ObservedClaim>,
    claim: Option<&ClaimRef>,
    now: Timestamp,
) -> Option<ObservedClaim> {
    let claim = claim?;
    match seen {
        Some(seen) if seen.is_of(claim) => Some(seen.clone()),
        _ => Some(ObservedClaim {
            name: claim.name.clone(),
            uid: claim.uid.clone(),
            since: Time(now),
        }),
    }
}

/// How long until the claim's Session may be checked for existence; `None` once the claim
/// has been seen for `grace`. The grace covers a claim written by a Session that some cache
/// (or API server) does not show yet.
pub fn orphan_check_in(seen: &ObservedClaim, grace: Duration, now: Timestamp) -> Option<Duration> {
    let age = now.duration_since(seen.since.0);
    let age = Duration::try_from(age).unwrap_or_default();
    grace.checked_sub(age).filter(|left| !left.is_zero())
}

/// True when the Session `claim` names still exists: `session_uid` is the uid of the Session
/// of that name read from the API (`None` when there is none). A claim without a uid (made by
/// hand) is held by any Session of its name.
pub fn claim_holder_exists(claim: &ClaimRef, session_uid: Option<&str>) -> bool {
    match (claim.uid.as_deref(), session_uid) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(want), Some(uid)) => want == uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn vm(name: &str, strategy: &str, ready: bool, printable: &str) -> VirtualMachine {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {"runStrategy": strategy, "template": {"spec": {"volumes": [
                {"name": "rootdisk", "persistentVolumeClaim": {"claimName": "restore-1-rootdisk"}}
            ]}}},
            "status": {"ready": ready, "printableStatus": printable},
        }))
        .unwrap()
    }

    fn vmi(name: &str, phase: &str, ready: bool) -> VirtualMachineInstance {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name},
            "spec": {"domain": {"devices": {}}},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    fn dv(name: &str, status: Value) -> DataVolume {
        serde_json::from_value(json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": name}, "spec": {}, "status": status,
        }))
        .unwrap()
    }

    fn snapshot(name: &str, status: Value) -> VirtualMachineSnapshot {
        serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "x"}},
            "status": status,
        }))
        .unwrap()
    }

    fn restore(name: &str, status: Value, deleting: bool) -> VirtualMachineRestore {
        let mut meta = json!({"name": name});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-11-21T10:00:00Z");
        }
        serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
            "metadata": meta,
            "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "x"},
                     "virtualMachineSnapshotName": "x-baseline"},
            "status": status,
        }))
        .unwrap()
    }

    fn running(id: VmId) -> VmObs {
        let mut o = VmObs::new(id, "c1");
        o.vm = Some(vm(&o.name, "Always", true, "Running"));
        o.vmi = Some(vmi(&o.name, "Running", true));
        o.dv = Some(dv("d", json!({"phase": "Succeeded"})));
        o
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn provisioning_waits_for_vms_and_clones_then_is_done() {
        let mut a = VmObs::new(VmId::ControlPlane, "c1");
        let b = running(VmId::Worker(1));
        assert_eq!(
            provisioning(&[a.clone(), b.clone()]),
            Progress::Wait("VMs to be created: c1-cp".into())
        );
        a.vm = Some(vm("c1-cp", "Always", false, "Provisioning"));
        a.dv = Some(dv(
            "c1-cp-root",
            json!({"phase": "CloneInProgress", "progress": "40%"}),
        ));
        assert_eq!(
            provisioning(&[a.clone(), b.clone()]),
            Progress::Wait("disk clones of: c1-cp".into())
        );
        a.dv = Some(dv("c1-cp-root", json!({"phase": "Succeeded"})));
        assert_eq!(provisioning(&[a, b]), Progress::Done);
    }

    #[test]
    fn failed_clone_fails_provisioning_with_cdi_message() {
        let mut a = running(VmId::ControlPlane);
        a.dv = Some(dv(
            "c1-cp-root",
            json!({"phase": "Failed", "conditions": [
                {"type": "Running", "status": "False", "message": "source PVC vm-templates/img not found"}
            ]}),
        ));
        let Progress::Fail { reason, message } = provisioning(&[a]) else {
            panic!("expected failure")
        };
        assert_eq!(reason, "CloneFailed");
        assert!(
            message.contains("source PVC vm-templates/img not found"),
            "{message}"
        );
    }

    #[test]
    fn vms_running_needs_every_vm_ready_and_reports_errors() {
        let mut a = running(VmId::ControlPlane);
        let b = running(VmId::Worker(1));
        assert_eq!(vms_running(&[a.clone(), b.clone()]), Progress::Done);
        a.vmi = Some(vmi("c1-cp", "Running", false));
        assert_eq!(
            vms_running(&[a.clone(), b.clone()]),
            Progress::Wait("VMs to be ready: c1-cp".into())
        );
        a.vm = Some(vm("c1-cp", "Always", false, "CrashLoopBackOff"));
        assert!(matches!(
            vms_running(&[a, b]),
            Progress::Fail {
                reason: "VmError",
                ..
            }
        ));
    }

    #[test]
    fn snapshot_step_stops_snapshots_and_restarts_in_order() {
        let a = running(VmId::ControlPlane);
        assert_eq!(
            snapshot_step(std::slice::from_ref(&a)),
            SnapshotStep::Stop(vec!["c1-cp".into()])
        );

        let mut halted = a.clone();
        halted.vm = Some(vm("c1-cp", "Halted", false, "Stopping"));
        assert_eq!(
            snapshot_step(&[halted.clone()]),
            SnapshotStep::WaitStopped(vec!["c1-cp".into()])
        );

        halted.vmi = None;
        assert_eq!(
            snapshot_step(&[halted.clone()]),
            SnapshotStep::Create(vec![VmId::ControlPlane])
        );

        halted.snapshot = Some(snapshot("c1-cp-baseline", json!({"phase": "InProgress"})));
        assert_eq!(
            snapshot_step(&[halted.clone()]),
            SnapshotStep::WaitSnapshots(vec!["c1-cp".into()])
        );

        halted.snapshot = Some(snapshot(
            "c1-cp-baseline",
            json!({"phase": "Succeeded", "readyToUse": true}),
        ));
        assert_eq!(
            snapshot_step(&[halted.clone()]),
            SnapshotStep::Start(vec!["c1-cp".into()])
        );

        let mut started = halted.clone();
        started.vm = Some(vm("c1-cp", "Always", false, "Starting"));
        assert_eq!(
            snapshot_step(&[started.clone()]),
            SnapshotStep::WaitReady(vec!["c1-cp".into()])
        );

        started.vm = Some(vm("c1-cp", "Always", true, "Running"));
        started.vmi = Some(vmi("c1-cp", "Running", true));
        assert_eq!(snapshot_step(&[started]), SnapshotStep::Done);

        halted.snapshot = Some(snapshot(
            "c1-cp-baseline",
            json!({"phase": "Failed", "error": {"message": "VolumeSnapshotClass missing"}}),
        ));
        let SnapshotStep::Fail(msg) = snapshot_step(&[halted]) else {
            panic!("expected failure")
        };
        assert!(msg.contains("VolumeSnapshotClass missing"), "{msg}");
    }

    #[test]
    fn reset_step_walks_stop_cleanup_restore_start_ready() {
        let current = "c1-cp-reset-201";
        let mut o = running(VmId::ControlPlane);
        o.restores = vec![restore("c1-cp-reset-100", json!({"complete": true}), false)];
        assert_eq!(reset_step(&o, current), ResetStep::Stop);

        o.vm = Some(vm("c1-cp", "Halted", false, "Stopping"));
        assert_eq!(reset_step(&o, current), ResetStep::WaitStopped);

        o.vmi = None;
        assert_eq!(
            reset_step(&o, current),
            ResetStep::DeleteRestores(vec!["c1-cp-reset-100".into()])
        );
        o.restores = vec![restore("c1-cp-reset-100", json!({"complete": true}), true)];
        assert_eq!(reset_step(&o, current), ResetStep::WaitRestoresGone);

        o.restores.clear();
        assert_eq!(reset_step(&o, current), ResetStep::CreateRestore);

        o.restores = vec![restore(current, json!({"complete": false}), false)];
        assert_eq!(reset_step(&o, current), ResetStep::WaitRestore);

        o.restores = vec![restore(current, json!({"complete": true}), false)];
        assert_eq!(reset_step(&o, current), ResetStep::Start);

        o.vm = Some(vm("c1-cp", "Always", false, "Starting"));
        assert_eq!(reset_step(&o, current), ResetStep::WaitReady);

        o.vm = Some(vm("c1-cp", "Always", true, "Running"));
        o.vmi = Some(vmi("c1-cp", "Running", true));
        assert_eq!(reset_step(&o, current), ResetStep::Done);
    }

    #[test]
    fn failed_restore_fails_the_reset_step() {
        let current = "c1-cp-reset-201";
        let mut o = VmObs::new(VmId::ControlPlane, "c1");
        o.vm = Some(vm("c1-cp", "Halted", false, "Stopped"));
        o.restores = vec![restore(
            current,
            json!({"complete": false, "conditions": [{"type": "Failure", "status": "True", "message": "volume snapshot gone"}]}),
            false,
        )];
        let ResetStep::Fail(reason, msg) = reset_step(&o, current) else {
            panic!("expected failure")
        };
        assert_eq!(reason, "RestoreFailed");
        assert!(msg.contains("volume snapshot gone"), "{msg}");
    }

    #[test]
    fn leftover_restore_pvcs_are_those_no_vm_uses() {
        let o = running(VmId::ControlPlane);
        let pvcs = vec![
            "restore-1-rootdisk".to_owned(),
            "restore-0-rootdisk".to_owned(),
            "c1-cp-root".to_owned(),
        ];
        assert_eq!(leftover_restore_pvcs(&pvcs, &[o]), ["restore-0-rootdisk"]);
    }

    #[test]
    fn restore_numbers_differ_per_reset_and_per_attempt() {
        let mut s = start_reset(&PracticeClusterStatus::default(), false);
        let first = restore_number(&s);
        assert_eq!(first, 100);
        s.attempts = 1;
        let retry = restore_number(&s);
        s.attempts = 0;
        // A second reset requested by an administrator serves no session, yet gets new names.
        let s = start_reset(&s, false);
        let next = restore_number(&s);
        assert!(first != retry && retry != next && first != next);
    }

    #[test]
    fn restore_numbers_stay_clear_of_those_numbered_by_sessions_served() {
        // Last reset by an operator that named restores 100 × (served + 1): `-reset-200`.
        let before = PracticeClusterStatus {
            sessions_served: 2,
            ..PracticeClusterStatus::default()
        };
        assert!(restore_number(&start_reset(&before, false)) > 200);
    }

    #[test]
    fn only_released_claims_count_as_sessions_served() {
        let requested = start_reset(&PracticeClusterStatus::default(), false);
        assert_eq!((requested.resets, requested.sessions_served), (1, 0));
        let released = start_reset(&requested, true);
        assert_eq!((released.resets, released.sessions_served), (2, 1));
    }

    #[test]
    fn a_missing_vm_fails_the_reset_at_once() {
        let o = VmObs::new(VmId::Worker(1), "c1");
        assert!(matches!(
            reset_step(&o, "c1-w1-reset-100"),
            ResetStep::Fail("VmMissing", _)
        ));
    }

    #[test]
    fn a_condition_counts_as_false_too_long_only_after_the_grace() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let cond = |status: &str| Condition {
            type_: "ApiReachable".into(),
            status: status.into(),
            reason: "x".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at(0)),
        };
        let grace = Duration::from_secs(60);
        assert!(!false_for_longer_than(
            &[cond("False")],
            "ApiReachable",
            grace,
            at(60)
        ));
        assert!(false_for_longer_than(
            &[cond("False")],
            "ApiReachable",
            grace,
            at(61)
        ));
        assert!(!false_for_longer_than(
            &[cond("True")],
            "ApiReachable",
            grace,
            at(600)
        ));
        assert!(!false_for_longer_than(&[], "ApiReachable", grace, at(600)));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, 3), Duration::from_secs(20));
        assert_eq!(backoff(base, 30), Duration::from_secs(300));
    }

    #[test]
    fn timeouts_and_backoff_count_from_phase_start() {
        let base = Duration::from_secs(10);
        let mut s = PracticeClusterStatus {
            phase_since: Some(Time(at(0))),
            ..PracticeClusterStatus::default()
        };
        assert!(!timed_out(&s, 60, base, at(60)));
        assert!(timed_out(&s, 60, base, at(61)));
        assert_eq!(backoff_remaining(&s, base, at(1)), None);
        s.attempts = 2;
        assert_eq!(backoff_remaining(&s, base, at(5)), Some(Duration::from_secs(15)));
        assert_eq!(backoff_remaining(&s, base, at(20)), None);
        assert!(
            !timed_out(&s, 60, base, at(80)),
            "the backoff pause does not count"
        );
    }

    #[test]
    fn failures_retry_until_max_retries_then_fail_with_reason() {
        let s = PracticeClusterStatus {
            phase: PracticeClusterPhase::Bootstrapping,
            ..PracticeClusterStatus::default()
        };
        let once = after_failure(&s, 1, "VmError", "boom", at(5));
        assert_eq!(once.phase, PracticeClusterPhase::Provisioning);
        assert_eq!(once.attempts, 1);
        assert_eq!(once.phase_since, Some(Time(at(5))));
        let twice = after_failure(&once, 1, "CloneFailed", "no source", at(9));
        assert_eq!(twice.phase, PracticeClusterPhase::Failed);
        assert_eq!(twice.failure_reason.as_deref(), Some("CloneFailed"));
        assert!(twice.failure_message.unwrap().contains("no source"));

        let resetting = PracticeClusterStatus {
            phase: PracticeClusterPhase::Resetting,
            ..PracticeClusterStatus::default()
        };
        assert_eq!(
            after_failure(&resetting, 3, "RestoreFailed", "x", at(1)).phase,
            PracticeClusterPhase::Resetting
        );
    }

    #[test]
    fn giving_up_fails_at_once_with_the_reason() {
        let s = PracticeClusterStatus {
            phase: PracticeClusterPhase::Provisioning,
            attempts: 1,
            ..PracticeClusterStatus::default()
        };
        let failed = given_up(&s, "ForeignNamespace", "namespace x is not ours", Some(2), at(7));
        assert_eq!(failed.phase, PracticeClusterPhase::Failed);
        assert_eq!(failed.failure_reason.as_deref(), Some("ForeignNamespace"));
        assert_eq!(failed.phase_since, Some(Time(at(7))));
        let ready = failed.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ForeignNamespace")
        );
    }

    #[test]
    fn claims_and_reset_requests_move_settled_clusters() {
        use PracticeClusterPhase::*;
        assert_eq!(claim_transition(Available, true, false), Some(Assigned));
        assert_eq!(claim_transition(Available, false, true), Some(Resetting));
        assert_eq!(claim_transition(Available, false, false), None);
        assert_eq!(claim_transition(Assigned, false, false), Some(Resetting));
        assert_eq!(
            claim_transition(Assigned, true, true),
            None,
            "reset waits for release"
        );
        assert_eq!(claim_transition(Provisioning, true, false), None);
    }
    fn claim(name: &str, uid: Option<&str>) -> ClaimRef {
        ClaimRef {
            name: name.to_owned(),
            uid: uid.map(str::to_owned),
        }
    }

    #[test]
    fn a_claim_is_timed_from_when_it_was_first_seen_and_anew_when_it_changes() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(1_100).unwrap();
        let alice = claim("alice", Some("u1"));
        let seen = observe_claim(None, Some(&alice), t0).unwrap();
        assert_eq!(seen.since.0, t0);
        assert_eq!(observe_claim(Some(&seen), Some(&alice), t1), Some(seen.clone()));
        // Same name, another uid: another claim, timed from now.
        let other = observe_claim(Some(&seen), Some(&claim("alice", Some("u2"))), t1).unwrap();
        assert_eq!((other.uid.as_deref(), other.since.0), (Some("u2"), t1));
        assert_eq!(observe_claim(Some(&seen), None, t1), None);
    }

    #[test]
    fn an_orphan_check_waits_for_the_grace() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let seen = observe_claim(None, Some(&claim("a", None)), t0).unwrap();
        let grace = Duration::from_secs(30);
        assert_eq!(orphan_check_in(&seen, grace, t0), Some(grace));
        let later = Timestamp::from_second(1_020).unwrap();
        assert_eq!(
            orphan_check_in(&seen, grace, later),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            orphan_check_in(&seen, grace, Timestamp::from_second(1_030).unwrap()),
            None
        );
        assert_eq!(
            orphan_check_in(&seen, grace, Timestamp::from_second(9_000).unwrap()),
            None
        );
        // A clock that went back never makes the check due early.
        assert_eq!(
            orphan_check_in(&seen, grace, Timestamp::from_second(900).unwrap()),
            Some(grace)
        );
    }

    #[test]
    fn a_claim_is_held_only_by_a_session_of_its_name_and_uid() {
        assert!(claim_holder_exists(&claim("a", Some("u1")), Some("u1")));
        assert!(!claim_holder_exists(&claim("a", Some("u1")), Some("u2")));
        assert!(!claim_holder_exists(&claim("a", Some("u1")), None));
        assert!(claim_holder_exists(&claim("a", None), Some("anything")));
        assert!(!claim_holder_exists(&claim("a", None), None));
    }
}
