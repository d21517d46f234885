//! KubeVirt and CDI simulator: the CRDs of the kinds cks-lab drives, a controller that moves
//! them through the real status transitions with configurable delays and injected faults, the
//! `subresources.kubevirt.io` start/stop/restart and portforward endpoints, and the simulated
//! machines behind running VMIs (disks, SSH, nested practice-cluster API).
//! See `docs/devcluster.md` for the behaviour and its limits.

mod admission;
mod controller;
pub mod crds;
mod disk;
mod guest;
mod machine;
pub mod portforward;
mod subresources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use admission::admit;
pub(crate) use controller::{install, run};
pub(crate) use subresources::route;

/// Annotation naming faults to inject on an object (comma-separated [`Fault`] names). On a
/// VirtualMachine it also applies to its DataVolumes, VMIs, snapshots and restores.
pub const FAULT_ANNOTATION: &str = "sim.cks.io/fault";

/// A failure the simulator can inject, each reported the way KubeVirt or CDI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// `clone-fail`: the DataVolume clone fails (phase `Failed`, `Running` condition `Error`).
    CloneFail,
    /// `never-ready`: the VMI cannot be scheduled (`ErrorUnschedulable`, `PodScheduled=False`).
    NeverReady,
    /// `crash-after-start`: the VMI fails shortly after `Running` (`CrashLoopBackOff`).
    CrashAfterStart,
    /// `snapshot-fail`: the snapshot fails (phase `Failed`, `error.message`, `Failure` condition).
    SnapshotFail,
    /// `restore-fail`: the restore fails (`Failure` condition, never `complete`).
    RestoreFail,
    /// `no-ip`: the VMI runs but its interface reports no IP address.
    NoIp,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 6] = [
        Fault::CloneFail,
        Fault::NeverReady,
        Fault::CrashAfterStart,
        Fault::SnapshotFail,
        Fault::RestoreFail,
        Fault::NoIp,
    ];

    /// The name used in the annotation and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::CloneFail => "clone-fail",
            Fault::NeverReady => "never-ready",
            Fault::CrashAfterStart => "crash-after-start",
            Fault::SnapshotFail => "snapshot-fail",
            Fault::RestoreFail => "restore-fail",
            Fault::NoIp => "no-ip",
        }
    }

    /// Parse a fault name.
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s.trim())
    }
}

/// Durations of the simulated steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    /// DataVolume `Pending` → `CloneScheduled` → `CloneInProgress`.
    pub clone_schedule: Duration,
    /// `CloneInProgress` (0%) → `Succeeded`.
    pub clone: Duration,
    /// VMI `Pending` → `Scheduling` → `Scheduled`, each.
    pub vmi_schedule: Duration,
    /// VMI `Scheduled` → `Running` (boot).
    pub vmi_start: Duration,
    /// VMI deletion → gone (guest shutdown).
    pub vmi_stop: Duration,
    /// `crash-after-start`: time `Running` before the VMI fails.
    pub crash_after: Duration,
    /// Back-off before a failed VMI of an `Always`/`RerunOnFailure` VM is replaced.
    pub crash_backoff: Duration,
    /// Snapshot `InProgress` → `Succeeded`.
    pub snapshot: Duration,
    /// Restore start → `complete`.
    pub restore: Duration,
    /// `targetReadinessPolicy: WaitGracePeriod`: how long a restore waits for the VM to stop.
    pub restore_grace: Duration,
}

impl Timings {
    /// Milliseconds per step, for tests.
    pub fn fast() -> Self {
        let ms = Duration::from_millis;
        Self {
            clone_schedule: ms(5),
            clone: ms(20),
            vmi_schedule: ms(5),
            vmi_start: ms(10),
            vmi_stop: ms(5),
            crash_after: ms(30),
            crash_backoff: ms(50),
            snapshot: ms(10),
            restore: ms(10),
            restore_grace: ms(300),
        }
    }

    /// Seconds per step, in proportion to the real ones (VM start ~15-20 s, clone ~1 min,
    /// snapshot and restore a few seconds), shortened so a demo stays watchable.
    pub fn realistic() -> Self {
        let s = Duration::from_secs;
        Self {
            clone_schedule: s(3),
            clone: s(30),
            vmi_schedule: s(2),
            vmi_start: s(12),
            vmi_stop: s(3),
            crash_after: s(20),
            crash_backoff: s(10),
            snapshot: s(2),
            restore: s(2),
            restore_grace: s(300),
        }
    }

    /// Timings by profile name (`fast` or `realistic`).
    pub fn profile(name: &str) -> Option<Self> {
        match name {
            "fast" => Some(Self::fast()),
            "realistic" => Some(Self::realistic()),
            _ => None,
        }
    }
}

/// How the KubeVirt simulator runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Step durations.
    pub timings: Timings,
    /// Probability (0..=1) that each object is hit by a fault, besides annotations.
    pub fault_rates: BTreeMap<Fault, f64>,
    /// Where simulated disks and snapshots live; `None`: `DATA_DIR/kubevirt` with a data
    /// directory, else a temporary directory removed at shutdown.
    pub disk_dir: Option<PathBuf>,
    /// PersistentVolumeClaims (`namespace/name`) created Bound at start, as golden images.
    pub golden_images: Vec<String>,
    /// Port of the simulated VMs' SSH servers, on each VMI's own IP.
    pub ssh_port: u16,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            timings: Timings::fast(),
            fault_rates: BTreeMap::new(),
            disk_dir: None,
            golden_images: Vec::new(),
            ssh_port: 2222,
        }
    }
}

impl SimOptions {
    /// Realistic timings (for demos and `make run`).
    pub fn realistic() -> Self {
        Self {
            timings: Timings::realistic(),
            ..Self::default()
        }
    }
}

/// Files of the host's `/etc` a simulated root filesystem starts with, so programs that look
/// up users or shared libraries work inside the sandbox.
const HOST_ETC: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "bash.bashrc",
    "profile",
    "inputrc",
    "hosts",
];

/// Seed the disk of a golden image: a small root filesystem whose `/usr` comes from the host
/// at run time (see `docs/devcluster.md`).
pub(crate) fn seed_golden_disk(disk: &std::path::Path) -> std::io::Result<()> {
    for dir in [
        "etc/kubernetes/manifests",
        "etc/kubernetes/pki",
        "home",
        "root",
        "tmp",
        "var/lib",
        "var/log",
        "opt",
    ] {
        std::fs::create_dir_all(disk.join(dir))?;
    }
    for f in HOST_ETC {
        let from = std::path::Path::new("/etc").join(f);
        if from.is_file() {
            std::fs::copy(&from, disk.join("etc").join(f))?;
        }
    }
    std::fs::write(
        disk.join("etc/os-release"),
        "PRETTY_NAME=\"Ubuntu 22.04 LTS (cks-devcluster simulated VM)\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\n",
    )?;
    std::fs::write(disk.join("etc/golden-image"), "cks-devcluster golden image\n")?;
    guest::seed(disk)
}
