//! The simulator controller: one task that wakes on every stored change (and on its own step
//! timers) and moves DataVolumes, VirtualMachines, VMIs, snapshots and restores one step at a
//! time, level-triggered from what is stored, as KubeVirt's and CDI's controllers do.

// Each step is a match arm whose timer check stays inside it, which reads better than guards.
#![allow(clippy::collapsible_match)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{FAULT_ANNOTATION, Fault, SimOptions};
use crate::Shared;
use crate::registry::ResourceType;
use crate::state::{DeleteOpts, ListOpts, State, WriteOpts, now};

/// Annotation CDI puts on a DataVolume whose PVC already holds the data (restores use it).
const PRE_POPULATED: &str = "cdi.kubevirt.io/storage.prePopulated";
/// Finalizer that keeps a deleted VMI until its simulated guest has shut down.
const VMI_FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";
/// Node name every simulated VMI runs on.
const NODE_NAME: &str = "sim-node";

/// Per-process IP allocator: 127.x.y.z addresses, never reused while the process lives, so
/// VMIs of several simulators in one test process never share an address.
static NEXT_IP: AtomicU32 = AtomicU32::new(0);

fn allocate_ip() -> Ipv4Addr {
    // Start each process at a different /16 so concurrent test processes rarely collide.
    let _ = NEXT_IP.compare_exchange(
        0,
        (u32::from(Ipv4Addr::new(127, 20, 0, 0)) & 0x00ff_ffff) + ((std::process::id() % 200) << 16) + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let n = NEXT_IP.fetch_add(1, Ordering::SeqCst) & 0x00ff_ffff;
        let ip = Ipv4Addr::from(0x7f00_0000 | n);
        // Skip network/broadcast-looking addresses and 127.0.0.x (the host's own services).
        let last = ip.octets()[3];
        if last != 0 && last != 255 && ip.octets()[1] != 0 {
            return ip;
        }
    }
}

/// Step timers: when a step of an object started, and the earliest pending deadline.
#[derive(Default)]
struct Timers {
    started: HashMap<String, Instant>,
    next: Option<Instant>,
}

impl Timers {
    fn wake_at(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// Whether step `key` has lasted `after`; starts its clock on first call.
    fn due(&mut self, key: &str, after: Duration) -> bool {
        let now = Instant::now();
        let start = *self.started.entry(key.to_string()).or_insert(now);
        let deadline = start + after;
        if now >= deadline {
            true
        } else {
            self.wake_at(deadline);
            false
        }
    }

    /// Fraction of step `key` done, in tenths, waking at the next tenth.
    fn progress(&mut self, key: &str, total: Duration) -> (u32, bool) {
        let now = Instant::now();
        let start = *self.started.entry(key.to_string()).or_insert(now);
        let elapsed = now - start;
        if elapsed >= total {
            return (10, true);
        }
        let tenth = total / 10;
        let done = if tenth.is_zero() {
            0
        } else {
            u32::try_from(elapsed.as_nanos() / tenth.as_nanos().max(1))
                .unwrap_or(9)
                .min(9)
        };
        self.wake_at(start + tenth * (done + 1));
        (done, false)
    }
}

/// Resource types the controller works on.
struct Types {
    vm: Arc<ResourceType>,
    vmi: Arc<ResourceType>,
    dv: Arc<ResourceType>,
    pvc: Arc<ResourceType>,
    snap: Arc<ResourceType>,
    content: Arc<ResourceType>,
    restore: Arc<ResourceType>,
}

impl Types {
    fn lookup(st: &State) -> Option<Self> {
        let r = &st.registry;
        Some(Self {
            vm: r.get("kubevirt.io", "v1", "virtualmachines")?,
            vmi: r.get("kubevirt.io", "v1", "virtualmachineinstances")?,
            dv: r.get("cdi.kubevirt.io", "v1beta1", "datavolumes")?,
            pvc: r.get("", "v1", "persistentvolumeclaims")?,
            snap: r.get("snapshot.kubevirt.io", "v1beta1", "virtualmachinesnapshots")?,
            content: r.get(
                "snapshot.kubevirt.io",
                "v1beta1",
                "virtualmachinesnapshotcontents",
            )?,
            restore: r.get("snapshot.kubevirt.io", "v1beta1", "virtualmachinerestores")?,
        })
    }
}

/// Simulator state kept in memory: step clocks and the outcome of probabilistic faults.
pub(crate) struct Sim {
    opts: SimOptions,
    root: PathBuf,
    timers: Timers,
    rolled: HashMap<(String, Fault), bool>,
    wrote: bool,
    /// What the last disk collection saw, so directories are scanned only when something
    /// went away or a disk left for later is no longer in use.
    collected: Option<Collected>,
    /// Objects the last pass read from the store. A pass runs after every burst of changes,
    /// so it must stay linear in the stored objects: one that read every namespace's snapshots
    /// and restores per VM was quadratic, and made the simulator the bottleneck of a pool of
    /// 200 clusters (see the test).
    scanned: usize,
}

/// The PVCs and snapshot contents a disk collection saw, and the disks in use it skipped.
struct Collected {
    pvcs: BTreeSet<String>,
    contents: BTreeSet<String>,
    skipped: bool,
    busy: HashSet<PathBuf>,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn name_of(o: &Value) -> &str {
    s(&o["metadata"]["name"])
}

fn ns_of(o: &Value) -> &str {
    s(&o["metadata"]["namespace"])
}

fn uid_of(o: &Value) -> &str {
    s(&o["metadata"]["uid"])
}

fn owner_ref(o: &Value) -> Value {
    json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "name": o["metadata"]["name"],
        "uid": o["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true})
}

fn faults_of(o: &Value) -> Vec<Fault> {
    s(&o["metadata"]["annotations"][FAULT_ANNOTATION])
        .split(',')
        .filter_map(Fault::parse)
        .collect()
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" }, "reason": reason,
        "message": message, "lastTransitionTime": now()})
}

/// Keep `lastTransitionTime` of conditions whose status did not change, so repeated passes
/// write nothing.
fn keep_transition_times(old: &Value, new: &mut Value) {
    for key in ["creationTime", "restoreTime"] {
        if old[key].is_string() && new.get(key).is_some_and(Value::is_string) {
            new[key] = old[key].clone();
        }
    }
    let Some(conds) = new.get_mut("conditions").and_then(Value::as_array_mut) else {
        return;
    };
    for c in conds {
        if let Some(prev) = old["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["type"] == c["type"]))
            && prev["status"] == c["status"]
        {
            c["lastTransitionTime"] = prev["lastTransitionTime"].clone();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    if !from.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let target = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &target)?;
        } else {
            // A FIFO or socket made inside the VM: opening it to copy would block (a FIFO
            // without writer) or fail, and it holds no data a snapshot or clone must keep.
            tracing::debug!(path = %entry.path().display(), "not copying a special file");
        }
    }
    Ok(())
}

impl Sim {
    pub(crate) fn new(opts: SimOptions, root: PathBuf) -> Self {
        Self {
            opts,
            root,
            timers: Timers::default(),
            rolled: HashMap::new(),
            wrote: false,
            collected: None,
            scanned: 0,
        }
    }

    /// Directory holding the files of PVC `ns/name`.
    pub(crate) fn disk(root: &Path, ns: &str, name: &str) -> PathBuf {
        root.join("disks").join(ns).join(name)
    }

    fn snapshot_dir(&self, ns: &str, content: &str, volume: &str) -> PathBuf {
        self.root.join("snapshots").join(ns).join(content).join(volume)
    }

    /// Whether fault `f` hits object `o` (or the VM `vm` it belongs to).
    fn fault(&mut self, o: &Value, vm: Option<&Value>, f: Fault) -> bool {
        if faults_of(o).contains(&f) || vm.is_some_and(|v| faults_of(v).contains(&f)) {
            return true;
        }
        let rate = self.opts.fault_rates.get(&f).copied().unwrap_or(0.0);
        if rate <= 0.0 {
            return false;
        }
        *self.rolled.entry((uid_of(o).to_string(), f)).or_insert_with(|| {
            let r = uuid::Uuid::new_v4().as_u128() % 1_000_000;
            (r as f64) / 1_000_000.0 < rate
        })
    }

    fn set_status(&mut self, st: &mut State, rt: &Arc<ResourceType>, obj: &Value, mut status: Value) {
        keep_transition_times(&obj["status"], &mut status);
        if obj["status"] == status {
            return;
        }
        let mut new = obj.clone();
        new["status"] = status;
        match st.update(
            rt,
            Some(ns_of(obj)),
            name_of(obj),
            new,
            true,
            WriteOpts::default(),
        ) {
            // A write that changes nothing (e.g. fields the schema drops) keeps the version.
            Ok(o) => self.wrote |= o["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"],
            Err(e) => {
                tracing::warn!(kind = %rt.kind, name = name_of(obj), error = %e, "simulator status write")
            }
        }
    }

    fn write(&mut self, st: &mut State, rt: &Arc<ResourceType>, obj: Value) {
        match st.update(
            rt,
            Some(ns_of(&obj)),
            name_of(&obj),
            obj.clone(),
            false,
            WriteOpts::default(),
        ) {
            Ok(o) => self.wrote |= o["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"],
            Err(e) => tracing::warn!(kind = %rt.kind, name = name_of(&obj), error = %e, "simulator write"),
        }
    }

    fn create(&mut self, st: &mut State, rt: &Arc<ResourceType>, ns: &str, obj: Value) -> Option<Arc<Value>> {
        match st.create(rt, Some(ns), obj, WriteOpts::default()) {
            Ok(o) => {
                self.wrote = true;
                Some(o)
            }
            Err(e) => {
                tracing::warn!(kind = %rt.kind, error = %e, "simulator create");
                None
            }
        }
    }

    fn delete(&mut self, st: &mut State, rt: &Arc<ResourceType>, ns: &str, name: &str) {
        if st.delete(rt, Some(ns), name, &DeleteOpts::default()).is_ok() {
            self.wrote = true;
        }
    }

    /// The objects of a kind, in one namespace or all, counted in [`Sim::scanned`].
    fn list(&mut self, st: &State, rt: &ResourceType, ns: Option<&str>) -> Vec<Arc<Value>> {
        let items = st
            .list(rt, ns, &ListOpts::default())
            .map(|l| l.items)
            .unwrap_or_default();
        self.scanned += items.len();
        items
    }

    /// Create the golden-image PVCs given in the options (Bound, with a seeded disk).
    pub(crate) fn install_golden_images(&mut self, st: &mut State) {
        let Some(pvc) = st.registry.get("", "v1", "persistentvolumeclaims") else {
            return;
        };
        let ns_rt = st
            .registry
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        for full in self.opts.golden_images.clone() {
            let (ns, name) = full.split_once('/').unwrap_or(("default", full.as_str()));
            if st.get(&ns_rt, None, ns).is_err() {
                let _ = st.create(
                    &ns_rt,
                    None,
                    json!({"metadata": {"name": ns}}),
                    WriteOpts::default(),
                );
            }
            let disk = Self::disk(&self.root, ns, name);
            if !disk.exists()
                && let Err(e) = super::seed_golden_disk(&disk)
            {
                tracing::warn!(error = %e, disk = %disk.display(), "seeding golden image disk");
            }
            if st.get(&pvc, Some(ns), name).is_ok() {
                continue;
            }
            let obj = json!({"metadata": {"name": name, "namespace": ns,
                    "labels": {"cks.io/golden-image": "true"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                    "resources": {"requests": {"storage": "20Gi"}}}});
            if let Some(created) = self.create(st, &pvc, ns, obj) {
                let created = (*created).clone();
                self.set_status(
                    st,
                    &pvc,
                    &created,
                    json!({"phase": "Bound",
                    "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "20Gi"}}),
                );
            }
        }
    }

    /// One level-triggered pass over every simulated object.
    pub(crate) fn pass(&mut self, st: &mut State, machines: &mut super::machine::Machines) -> bool {
        self.wrote = false;
        self.scanned = 0;
        self.timers.next = None;
        let Some(t) = Types::lookup(st) else { return false };
        for dv in self.list(st, &t.dv, None) {
            self.data_volume(st, &t, &dv);
        }
        for vmi in self.list(st, &t.vmi, None) {
            self.vmi(st, &t, &vmi, machines);
        }
        for vm in self.list(st, &t.vm, None) {
            self.vm(st, &t, &vm);
        }
        for snap in self.list(st, &t.snap, None) {
            self.snapshot(st, &t, &snap);
        }
        for restore in self.list(st, &t.restore, None) {
            self.restore(st, &t, &restore);
        }
        if machines.sync(st, &t.vmi, &self.root) {
            self.timers.wake_at(Instant::now() + Duration::from_millis(20));
        }
        self.collect_disks(st, &t, machines);
        self.wrote
    }

    /// Remove the directories of PVCs and snapshot contents that no longer exist (deleted
    /// directly, by garbage collection of their VM, DataVolume or snapshot, or with their
    /// namespace), as the storage behind them would be released. A disk a machine still
    /// runs on (its VMI is shutting down) is left for a later pass.
    fn collect_disks(&mut self, st: &State, t: &Types, machines: &super::machine::Machines) {
        let mut keys = |rt: &ResourceType| -> BTreeSet<String> {
            self.list(st, rt, None)
                .iter()
                .map(|o| format!("{}/{}", ns_of(o), name_of(o)))
                .collect()
        };
        let (pvcs, contents) = (keys(&t.pvc), keys(&t.content));
        let busy = machines.disks();
        if let Some(c) = &self.collected
            && c.pvcs.is_subset(&pvcs)
            && c.contents.is_subset(&contents)
            && (!c.skipped || c.busy == busy)
        {
            let skipped = c.skipped;
            self.collected = Some(Collected {
                pvcs,
                contents,
                skipped,
                busy,
            });
            return;
        }
        let mut skipped = false;
        for (dir, live) in [("disks", &pvcs), ("snapshots", &contents)] {
            let Ok(namespaces) = std::fs::read_dir(self.root.join(dir)) else {
                continue;
            };
            for ns_dir in namespaces.flatten() {
                let ns = ns_dir.file_name().to_string_lossy().into_owned();
                for entry in std::fs::read_dir(ns_dir.path()).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if live.contains(&format!("{ns}/{name}")) {
                        continue;
                    }
                    if busy.contains(&entry.path()) {
                        skipped = true;
                        continue;
                    }
                    if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                        tracing::warn!(error = %e, dir = %entry.path().display(), "removing a simulated disk");
                    }
                }
                // Gone with its last volume (e.g. its namespace was deleted).
                let _ = std::fs::remove_dir(ns_dir.path());
            }
        }
        self.collected = Some(Collected {
            pvcs,
            contents,
            skipped,
            busy,
        });
    }

    fn data_volume(&mut self, st: &mut State, t: &Types, dv: &Value) {
        let phase = s(&dv["status"]["phase"]);
        if matches!(phase, "Succeeded" | "Failed") || dv["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let (ns, name, uid) = (ns_of(dv), name_of(dv), uid_of(dv).to_string());
        let owner_vm = dv["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|refs| refs.iter().find(|r| r["kind"] == "VirtualMachine"))
            .and_then(|r| st.get(&t.vm, Some(ns), s(&r["name"])).ok());
        let running = |reason: &str, message: &str| condition("Running", false, reason, message);
        // A restored DataVolume's PVC already holds the data: CDI marks it Succeeded.
        if let Some(claim) = dv["metadata"]["annotations"][PRE_POPULATED].as_str()
            && st.get(&t.pvc, Some(ns), claim).is_ok()
        {
            self.set_status(
                st,
                &t.dv,
                dv,
                json!({"phase": "Succeeded", "progress": "100.0%",
                "claimName": claim,
                "conditions": [condition("Bound", true, "Bound", &format!("PVC {claim} Bound")),
                    condition("Ready", true, "", ""), running("Completed", "")]}),
            );
            return;
        }
        let source = &dv["spec"]["source"]["pvc"];
        let blank = dv["spec"]["source"]["blank"].is_object();
        if !blank {
            let (src_ns, src_name) = (s(&source["namespace"]), s(&source["name"]));
            let present = !src_name.is_empty()
                && st
                    .get(
                        &t.pvc,
                        Some(if src_ns.is_empty() { ns } else { src_ns }),
                        src_name,
                    )
                    .is_ok();
            if !present {
                // CDI waits for the source to appear and says why.
                let message = if src_name.is_empty() {
                    "DataVolume has no supported source (simulator: spec.source.pvc or blank)".to_string()
                } else {
                    format!("The source pvc {src_name} doesn't exist")
                };
                self.set_status(
                    st,
                    &t.dv,
                    dv,
                    json!({"phase": "Pending", "progress": "N/A",
                    "conditions": [condition("Bound", false, "CloneWithoutSource", &message),
                        condition("Ready", false, "CloneWithoutSource", &message),
                        running("CloneWithoutSource", &message)]}),
                );
                return;
            }
        }
        // The target PVC exists from the start, Pending until the data is in.
        if st.get(&t.pvc, Some(ns), name).is_err() {
            let storage = if dv["spec"]["storage"].is_object() {
                &dv["spec"]["storage"]
            } else {
                &dv["spec"]["pvc"]
            };
            let mut spec = storage.clone();
            if !spec.is_object() {
                spec = json!({});
            }
            if spec["accessModes"].is_null() {
                spec["accessModes"] = json!(["ReadWriteOnce"]);
            }
            if spec["volumeMode"].is_null() {
                spec["volumeMode"] = json!("Filesystem");
            }
            let obj = json!({"metadata": {"name": name, "namespace": ns,
                    "labels": dv["metadata"]["labels"], "ownerReferences": [owner_ref(dv)]},
                "spec": spec});
            if let Some(p) = self.create(st, &t.pvc, ns, obj) {
                let p = (*p).clone();
                self.set_status(st, &t.pvc, &p, json!({"phase": "Pending"}));
            }
        }
        let pending_bound = condition("Bound", false, "Pending", &format!("PVC {name} Pending"));
        match phase {
            "" | "Pending" => {
                self.set_status(st, &t.dv, dv, json!({"phase": if blank { "ImportScheduled" } else { "CloneScheduled" },
                    "progress": "N/A", "claimName": name,
                    "conditions": [pending_bound, condition("Ready", false, "", ""), running("Pending", "")]}));
            }
            "CloneScheduled" | "ImportScheduled" => {
                if self
                    .timers
                    .due(&format!("{uid}/scheduled"), self.opts.timings.clone_schedule)
                {
                    self.set_status(
                        st,
                        &t.dv,
                        dv,
                        json!({"phase": if blank { "ImportInProgress" } else { "CloneInProgress" },
                        "progress": "0.00%", "claimName": name,
                        "conditions": [pending_bound, condition("Ready", false, "", ""),
                            condition("Running", true, "Pod is running", "")]}),
                    );
                }
            }
            "CloneInProgress" | "ImportInProgress" => {
                let (tenths, done) = self
                    .timers
                    .progress(&format!("{uid}/clone"), self.opts.timings.clone);
                if self.fault(dv, owner_vm.as_deref(), Fault::CloneFail) && tenths >= 5 {
                    let message = format!(
                        "Unable to clone: host-assisted clone pod failed (simulated fault {})",
                        Fault::CloneFail.name()
                    );
                    self.set_status(
                        st,
                        &t.dv,
                        dv,
                        json!({"phase": "Failed", "progress": format!("{}.00%", tenths * 10),
                        "claimName": name, "restartCount": 0,
                        "conditions": [pending_bound, condition("Ready", false, "Error", &message),
                            running("Error", &message)]}),
                    );
                    return;
                }
                if !done {
                    self.set_status(
                        st,
                        &t.dv,
                        dv,
                        json!({"phase": phase,
                        "progress": format!("{}.00%", tenths * 10), "claimName": name,
                        "conditions": dv["status"]["conditions"]}),
                    );
                    return;
                }
                if !blank {
                    let src_ns = match s(&source["namespace"]) {
                        "" => ns,
                        n => n,
                    };
                    let from = Self::disk(&self.root, src_ns, s(&source["name"]));
                    if let Err(e) = copy_dir(&from, &Self::disk(&self.root, ns, name)) {
                        tracing::warn!(error = %e, "copying simulated disk");
                    }
                } else if let Err(e) = std::fs::create_dir_all(Self::disk(&self.root, ns, name)) {
                    tracing::warn!(error = %e, "creating simulated disk");
                }
                if let Ok(p) = st.get(&t.pvc, Some(ns), name) {
                    let p = (*p).clone();
                    let size = p["spec"]["resources"]["requests"]["storage"].clone();
                    self.set_status(
                        st,
                        &t.pvc,
                        &p,
                        json!({"phase": "Bound",
                        "accessModes": p["spec"]["accessModes"], "capacity": {"storage": size}}),
                    );
                }
                self.set_status(
                    st,
                    &t.dv,
                    dv,
                    json!({"phase": "Succeeded", "progress": "100.0%",
                    "claimName": name,
                    "conditions": [condition("Bound", true, "Bound", &format!("PVC {name} Bound")),
                        condition("Ready", true, "", ""), running("Completed", "")]}),
                );
            }
            _ => {}
        }
    }

    fn vmi(&mut self, st: &mut State, t: &Types, vmi: &Value, machines: &mut super::machine::Machines) {
        let (ns, name, uid) = (ns_of(vmi), name_of(vmi), uid_of(vmi).to_string());
        let vm = st.get(&t.vm, Some(ns), name).ok();
        let vm = vm.as_deref();
        let timings = self.opts.timings.clone();
        if vmi["metadata"]["deletionTimestamp"].is_string() {
            // Guest shutdown, then KubeVirt drops its finalizer.
            machines.stop(ns, name);
            let shut_down = self.timers.due(&format!("{uid}/stop"), timings.vmi_stop);
            if shut_down && !machines.is_stopped(ns, name) {
                // The practice cluster API is writing its state to the disk; look again soon.
                self.timers.wake_at(Instant::now() + Duration::from_millis(10));
            }
            if shut_down && machines.is_stopped(ns, name) {
                let mut new = vmi.clone();
                if let Some(f) = new["metadata"]["finalizers"].as_array_mut() {
                    f.retain(|f| f != VMI_FINALIZER);
                }
                self.write(st, &t.vmi, new);
            }
            return;
        }
        let status = &vmi["status"];
        let phase = s(&status["phase"]);
        let ready = |ok: bool, reason: &str, message: &str| condition("Ready", ok, reason, message);
        match phase {
            "" => self.set_status(st, &t.vmi, vmi, json!({"phase": "Pending", "guestOSInfo": {},
                "conditions": [ready(false, "PodNotExists", "virt-launcher pod has not yet been scheduled")]})),
            "Pending" => {
                if self.timers.due(&format!("{uid}/pending"), timings.vmi_schedule) {
                    self.set_status(st, &t.vmi, vmi, json!({"phase": "Scheduling",
                        "conditions": [ready(false, "PodNotExists", "virt-launcher pod has not yet been scheduled")]}));
                }
            }
            "Scheduling" => {
                if self.fault(vmi, vm, Fault::NeverReady) {
                    let message = format!("0/1 nodes are available: 1 Insufficient memory. (simulated fault {})", Fault::NeverReady.name());
                    self.set_status(st, &t.vmi, vmi, json!({"phase": "Scheduling",
                        "conditions": [ready(false, "GuestNotRunning", "Guest VM is not reported as running"),
                            condition("PodScheduled", false, "Unschedulable", &message)]}));
                    return;
                }
                if self.timers.due(&format!("{uid}/scheduling"), timings.vmi_schedule) {
                    self.set_status(st, &t.vmi, vmi, json!({"phase": "Scheduled", "nodeName": NODE_NAME,
                        "conditions": [ready(false, "GuestNotRunning", "Guest VM is not reported as running"),
                            condition("PodScheduled", true, "", "")]}));
                }
            }
            "Scheduled" => {
                if self.timers.due(&format!("{uid}/boot"), timings.vmi_start) {
                    let no_ip = self.fault(vmi, vm, Fault::NoIp);
                    let mac = format!("02:{:02x}:{:02x}:00:00:01", uid.len() % 256, name.len() % 256);
                    let mut iface = json!({"name": "default", "mac": mac, "infoSource": "domain"});
                    if !no_ip {
                        let ip = allocate_ip().to_string();
                        iface["ipAddress"] = json!(ip);
                        iface["ipAddresses"] = json!([ip]);
                    }
                    self.set_status(st, &t.vmi, vmi, json!({"phase": "Running", "nodeName": NODE_NAME,
                        "interfaces": [iface], "launcherContainerImageVersion": "sim",
                        "conditions": [ready(true, "", ""), condition("PodScheduled", true, "", ""),
                            condition("LiveMigratable", false, "DisksNotLiveMigratable",
                                "cannot migrate VMI: PVC is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)")]}));
                }
            }
            "Running" => {
                if self.fault(vmi, vm, Fault::CrashAfterStart)
                    && self.timers.due(&format!("{uid}/crash"), timings.crash_after)
                {
                    machines.stop(ns, name);
                    let message = format!("virt-launcher pod failed: guest crashed (simulated fault {})", Fault::CrashAfterStart.name());
                    self.set_status(st, &t.vmi, vmi, json!({"phase": "Failed", "nodeName": NODE_NAME,
                        "reason": "GuestCrashed",
                        "conditions": [ready(false, "PodTerminating", &message)]}));
                }
            }
            _ => {}
        }
    }

    fn vm(&mut self, st: &mut State, t: &Types, vm: &Value) {
        let (ns, name, uid) = (ns_of(vm), name_of(vm).to_string(), uid_of(vm).to_string());
        let spec = &vm["spec"];
        let strategy = match (s(&spec["runStrategy"]), spec["running"].as_bool()) {
            ("", Some(true)) => "Always",
            ("", _) => "Halted",
            (st, _) => st,
        }
        .to_string();
        if vm["metadata"]["deletionTimestamp"].is_string() {
            let mut status = vm["status"].clone();
            if status.is_null() {
                status = json!({});
            }
            status["printableStatus"] = json!("Terminating");
            self.set_status(st, &t.vm, vm, status);
            return;
        }
        // DataVolumes declared by the VM are created with it and owned by it.
        let mut dvs_ready = true;
        let mut dv_error = None;
        // Read in place: this runs for every VM on every pass, so deep copies add up.
        for tpl in spec["dataVolumeTemplates"].as_array().into_iter().flatten() {
            let dv_name = name_of(tpl).to_string();
            match st.get(&t.dv, Some(ns), &dv_name) {
                Ok(dv) => match s(&dv["status"]["phase"]) {
                    "Succeeded" => {}
                    "Failed" => {
                        dvs_ready = false;
                        dv_error = Some(dv_name);
                    }
                    _ => dvs_ready = false,
                },
                Err(_) => {
                    dvs_ready = false;
                    let mut meta = tpl["metadata"].clone();
                    meta["namespace"] = json!(ns);
                    meta["ownerReferences"] = json!([owner_ref(vm)]);
                    let obj = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                        "metadata": meta, "spec": tpl["spec"]});
                    self.create(st, &t.dv, ns, obj);
                }
            }
        }
        let restoring = self.list(st, &t.restore, Some(ns)).into_iter().find(|r| {
            ns_of(r) == ns
                && s(&r["spec"]["target"]["name"]) == name
                && r["status"]["complete"] != json!(true)
                && !failed(&r["status"])
        });
        let snapshotting = self.list(st, &t.snap, Some(ns)).into_iter().find(|sn| {
            ns_of(sn) == ns
                && s(&sn["spec"]["source"]["name"]) == name
                && matches!(s(&sn["status"]["phase"]), "" | "InProgress")
        });
        let mut requests: Vec<Value> = vm["status"]["stateChangeRequests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut vmi = st.get(&t.vmi, Some(ns), &name).ok();
        let vmi_phase = vmi.as_ref().map(|v| s(&v["status"]["phase"]).to_string());
        let vmi_deleting = vmi
            .as_ref()
            .is_some_and(|v| v["metadata"]["deletionTimestamp"].is_string());
        let vmi_final = matches!(vmi_phase.as_deref(), Some("Failed" | "Succeeded"));
        let can_start = dvs_ready && restoring.is_none();

        // Explicit requests from the start/stop/restart subresources come first.
        let mut want_create = false;
        let mut want_delete = false;
        if let Some(req) = requests.first().cloned() {
            match s(&req["action"]) {
                "Stop" => {
                    if vmi.is_some() && !vmi_deleting {
                        want_delete = true;
                    } else if vmi.is_none() {
                        requests.remove(0);
                    }
                }
                "Start" if vmi.is_none() => {
                    if can_start {
                        want_create = true;
                        requests.remove(0);
                    }
                }
                _ if vmi.is_some() && !vmi_deleting => {
                    requests.remove(0);
                }
                _ => {}
            }
        } else {
            match strategy.as_str() {
                "Always" | "RerunOnFailure" => {
                    if vmi.is_none() {
                        want_create = can_start;
                    } else if (vmi_phase.as_deref() == Some("Failed")
                        || (strategy == "Always" && vmi_phase.as_deref() == Some("Succeeded")))
                        && !vmi_deleting
                        && self.timers.due(
                            &format!("{uid}/backoff/{}", vmi.as_ref().map_or("", |v| uid_of(v))),
                            self.opts.timings.crash_backoff,
                        )
                    {
                        want_delete = true;
                    }
                }
                "Halted" => want_delete = vmi.is_some() && !vmi_deleting,
                "Once" => {
                    // A finished Once VM is switched to Halted below, so no VMI means not yet run.
                    if vmi.is_none() {
                        want_create = can_start;
                    } else if vmi_final && !vmi_deleting {
                        // Once ran once: KubeVirt moves the VM to Halted.
                        let mut new = vm.clone();
                        new["spec"]["runStrategy"] = json!("Halted");
                        self.write(st, &t.vm, new);
                        return;
                    }
                }
                _ => {}
            }
        }
        if want_delete && let Some(v) = &vmi {
            self.delete(st, &t.vmi, ns, name_of(v).to_string().as_str());
            vmi = st.get(&t.vmi, Some(ns), &name).ok();
        }
        if want_create {
            let tpl = &spec["template"];
            let mut meta = tpl["metadata"].clone();
            if !meta.is_object() {
                meta = json!({});
            }
            meta["name"] = json!(name);
            meta["namespace"] = json!(ns);
            meta["ownerReferences"] = json!([owner_ref(vm)]);
            meta["finalizers"] = json!([VMI_FINALIZER]);
            if let Some(f) = vm["metadata"]["annotations"][FAULT_ANNOTATION].as_str() {
                meta["annotations"][FAULT_ANNOTATION] = json!(f);
            }
            let obj = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": meta, "spec": tpl["spec"]});
            vmi = self.create(st, &t.vmi, ns, obj);
        }

        // Status, as virt-controller derives it.
        let vmi_phase = vmi.as_ref().map(|v| s(&v["status"]["phase"]).to_string());
        let vmi_deleting = vmi
            .as_ref()
            .is_some_and(|v| v["metadata"]["deletionTimestamp"].is_string());
        let unschedulable = vmi.as_ref().is_some_and(|v| {
            v["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
            })
        });
        let vmi_ready = vmi.as_ref().is_some_and(|v| {
            !vmi_deleting
                && s(&v["status"]["phase"]) == "Running"
                && v["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        });
        let printable = if dv_error.is_some() {
            "DataVolumeError"
        } else if vmi.is_none() && !dvs_ready && restoring.is_none() {
            "Provisioning"
        } else if vmi.is_none() {
            "Stopped"
        } else if vmi_deleting {
            "Stopping"
        } else if unschedulable {
            "ErrorUnschedulable"
        } else {
            match vmi_phase.as_deref() {
                Some("Running") => "Running",
                Some("Failed") if matches!(strategy.as_str(), "Always" | "RerunOnFailure") => {
                    "CrashLoopBackOff"
                }
                Some("Failed" | "Succeeded") => "Stopped",
                _ => "Starting",
            }
        };
        let ready_cond = if vmi.is_none() {
            condition("Ready", false, "VMINotExists", "VMI does not exist")
        } else if vmi_ready {
            condition("Ready", true, "", "")
        } else {
            let vc = vmi.as_ref().and_then(|v| {
                v["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            });
            let reason = vc.as_ref().map_or("GuestNotRunning", |c| s(&c["reason"]));
            let message = vc.as_ref().map_or("", |c| s(&c["message"]));
            condition(
                "Ready",
                false,
                if reason.is_empty() {
                    "GuestNotRunning"
                } else {
                    reason
                },
                message,
            )
        };
        let mut conditions = vec![ready_cond];
        if let Some(dv) = &dv_error {
            conditions.push(condition(
                "Failure",
                true,
                "DataVolumeError",
                &format!("DataVolume {dv} failed"),
            ));
        }
        conditions.push(if dvs_ready {
            condition(
                "DataVolumesReady",
                true,
                "AllDVsReady",
                "All of the VMI's DVs are bound and ready",
            )
        } else {
            condition(
                "DataVolumesReady",
                false,
                "NotAllDVsReady",
                "Not all of the VMI's DVs are ready",
            )
        });
        let mut status = json!({"printableStatus": printable, "ready": vmi_ready, "created": vmi.is_some(),
            "runStrategy": strategy, "conditions": conditions,
            "volumeSnapshotStatuses": volume_snapshot_statuses(spec)});
        if !requests.is_empty() {
            status["stateChangeRequests"] = json!(requests);
        }
        if let Some(r) = &restoring {
            status["restoreInProgress"] = json!(name_of(r));
        }
        if let Some(sn) = &snapshotting {
            status["snapshotInProgress"] = json!(name_of(sn));
        }
        // Shared, not copied: set_status copies the VM only when its status changes.
        let current = st
            .get(&t.vm, Some(ns), &name)
            .unwrap_or_else(|_| Arc::new(vm.clone()));
        self.set_status(st, &t.vm, &current, status);
    }

    fn snapshot(&mut self, st: &mut State, t: &Types, snap: &Value) {
        let phase = s(&snap["status"]["phase"]);
        if matches!(phase, "Succeeded" | "Failed") || snap["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let (ns, name, uid) = (ns_of(snap), name_of(snap).to_string(), uid_of(snap).to_string());
        let vm_name = s(&snap["spec"]["source"]["name"]);
        let Ok(vm) = st.get(&t.vm, Some(ns), vm_name) else {
            let message = format!("VirtualMachine {vm_name:?} does not exist");
            self.set_status(
                st,
                &t.snap,
                snap,
                json!({"phase": "Pending", "readyToUse": false,
                "conditions": [condition("Progressing", false, "Source does not exist", &message),
                    condition("Ready", false, "Source does not exist", &message)]}),
            );
            return;
        };
        let online = st.get(&t.vmi, Some(ns), vm_name).is_ok();
        let mut indications = Vec::new();
        let mut source_indications = Vec::new();
        if online {
            indications = vec!["Online", "NoGuestAgent"];
            source_indications = vec![
                json!({"indication": "Online", "message": "Snapshot was taken while the VM was running"}),
                json!({"indication": "NoGuestAgent", "message": "Snapshot was taken without a guest agent: the filesystem was not frozen (crash-consistent)"}),
            ];
        }
        if phase.is_empty() {
            self.set_status(
                st,
                &t.snap,
                snap,
                json!({"phase": "InProgress", "readyToUse": false,
                "sourceUID": vm["metadata"]["uid"], "indications": indications,
                "sourceIndications": source_indications,
                "conditions": [condition("Progressing", true, "Source locked and operation in progress", ""),
                    condition("Ready", false, "Not ready", "")]}),
            );
            return;
        }
        if !self
            .timers
            .due(&format!("{uid}/snapshot"), self.opts.timings.snapshot)
        {
            return;
        }
        let mut status = snap["status"].clone();
        if self.fault(snap, Some(&vm), Fault::SnapshotFail) {
            let message = format!(
                "snapshot deadline exceeded (simulated fault {})",
                Fault::SnapshotFail.name()
            );
            status["phase"] = json!("Failed");
            status["readyToUse"] = json!(false);
            status["error"] = json!({"time": now(), "message": message});
            status["conditions"] = json!([
                condition("Progressing", false, "Operation failed", &message),
                condition("Ready", false, "Operation failed", &message),
                condition("Failure", true, "Operation failed", &message)
            ]);
            self.set_status(st, &t.snap, snap, status);
            return;
        }
        let content_name = format!("vmsnapshot-content-{uid}");
        let mut backups = Vec::new();
        for vol in vm["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let claim = vol["dataVolume"]["name"]
                .as_str()
                .or(vol["persistentVolumeClaim"]["claimName"].as_str());
            let Some(claim) = claim else { continue };
            let vol_name = s(&vol["name"]);
            let pvc_spec = st
                .get(&t.pvc, Some(ns), claim)
                .map(|p| p["spec"].clone())
                .unwrap_or(json!({}));
            let from = Self::disk(&self.root, ns, claim);
            if let Err(e) = copy_dir(&from, &self.snapshot_dir(ns, &content_name, vol_name)) {
                tracing::warn!(error = %e, "capturing simulated disk");
            }
            backups.push(json!({"volumeName": vol_name,
                "persistentVolumeClaim": {"metadata": {"name": claim}, "spec": pvc_spec},
                "volumeSnapshotName": format!("vmsnapshot-{uid}-volume-{vol_name}")}));
        }
        let mut meta = json!({"name": content_name, "namespace": ns});
        if s(&snap["spec"]["deletionPolicy"]) != "Retain" {
            meta["ownerReferences"] = json!([owner_ref(snap)]);
        }
        let content = json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent",
            "metadata": meta,
            "spec": {"virtualMachineSnapshotName": name,
                "source": {"virtualMachine": {"metadata": {"name": vm_name, "namespace": ns,
                    "labels": vm["metadata"]["labels"], "annotations": vm["metadata"]["annotations"]},
                    "spec": vm["spec"]}},
                "volumeBackups": backups}});
        if st.get(&t.content, Some(ns), &content_name).is_err()
            && let Some(c) = self.create(st, &t.content, ns, content)
        {
            let c = (*c).clone();
            self.set_status(
                st,
                &t.content,
                &c,
                json!({"readyToUse": true, "creationTime": now(),
                "volumeSnapshotStatus": []}),
            );
        }
        status["phase"] = json!("Succeeded");
        status["readyToUse"] = json!(true);
        status["creationTime"] = json!(now());
        status["virtualMachineSnapshotContentName"] = json!(content_name);
        status["snapshotVolumes"] =
            json!({"includedVolumes": backups.iter().map(|b| b["volumeName"].clone()).collect::<Vec<_>>()});
        status["conditions"] = json!([
            condition("Progressing", false, "Operation complete", ""),
            condition("Ready", true, "Operation complete", "")
        ]);
        self.set_status(st, &t.snap, snap, status);
    }

    fn restore(&mut self, st: &mut State, t: &Types, r: &Value) {
        let status = &r["status"];
        if status["complete"] == json!(true)
            || failed(status)
            || r["metadata"]["deletionTimestamp"].is_string()
        {
            return;
        }
        let (ns, uid) = (ns_of(r), uid_of(r).to_string());
        let vm_name = s(&r["spec"]["target"]["name"]);
        let snap_name = s(&r["spec"]["virtualMachineSnapshotName"]);
        let waiting = |reason: &str, message: &str| {
            json!({"complete": false, "conditions": [condition("Progressing", false, reason, message),
                condition("Ready", false, reason, message)]})
        };
        let Ok(vm) = st.get(&t.vm, Some(ns), vm_name) else {
            let m = format!("VirtualMachine {vm_name:?} does not exist");
            self.set_status(st, &t.restore, r, waiting("Target does not exist", &m));
            return;
        };
        let snap = st.get(&t.snap, Some(ns), snap_name).ok();
        let Some(snap) = snap.filter(|sn| sn["status"]["readyToUse"] == json!(true)) else {
            let m = format!("VirtualMachineSnapshot {snap_name:?} is not ready to use");
            self.set_status(st, &t.restore, r, waiting("VMSnapshot not ready", &m));
            return;
        };
        let fail = |message: &str| {
            json!({"complete": false, "conditions": [condition("Progressing", false, "Operation failed", message),
                condition("Ready", false, "Operation failed", message),
                condition("Failure", true, "Operation failed", message)]})
        };
        if let Ok(vmi) = st.get(&t.vmi, Some(ns), vm_name) {
            let policy = match s(&r["spec"]["targetReadinessPolicy"]) {
                "" => "WaitGracePeriod",
                p => p,
            };
            match policy {
                "FailImmediate" => {
                    self.set_status(
                        st,
                        &t.restore,
                        r,
                        fail("Restore target VM is running; targetReadinessPolicy FailImmediate"),
                    );
                    return;
                }
                "StopTarget" if vmi["metadata"]["deletionTimestamp"].is_null() => {
                    self.delete(st, &t.vmi, ns, vm_name);
                }
                "WaitGracePeriod"
                    if self
                        .timers
                        .due(&format!("{uid}/grace"), self.opts.timings.restore_grace) =>
                {
                    self.set_status(
                        st,
                        &t.restore,
                        r,
                        fail("Restore target failed to be ready within 5m0s"),
                    );
                    return;
                }
                _ => {}
            }
            self.set_status(st, &t.restore, r, json!({"complete": false,
                "conditions": [condition("Progressing", true, "Waiting for target to be ready", "Restore target VM must be stopped"),
                    condition("Ready", false, "Waiting for target to be ready", "Restore target VM must be stopped")]}));
            return;
        }
        if !self
            .timers
            .due(&format!("{uid}/restore"), self.opts.timings.restore)
        {
            self.set_status(
                st,
                &t.restore,
                r,
                json!({"complete": false,
                "conditions": [condition("Progressing", true, "Initializing VirtualMachineRestore", ""),
                    condition("Ready", false, "Initializing VirtualMachineRestore", "")]}),
            );
            return;
        }
        if self.fault(r, Some(&vm), Fault::RestoreFail) {
            let m = format!(
                "restore failed: volume restore did not complete (simulated fault {})",
                Fault::RestoreFail.name()
            );
            self.set_status(st, &t.restore, r, fail(&m));
            return;
        }
        let content_name = s(&snap["status"]["virtualMachineSnapshotContentName"]).to_string();
        let Ok(content) = st.get(&t.content, Some(ns), &content_name) else {
            self.set_status(
                st,
                &t.restore,
                r,
                fail(&format!(
                    "VirtualMachineSnapshotContent {content_name:?} not found"
                )),
            );
            return;
        };
        let in_place = s(&r["spec"]["volumeRestorePolicy"]) == "InPlace";
        let mut new_vm = (*vm).clone();
        // The VM spec comes back from the snapshot; the run strategy stays as it is now.
        let source = &content["spec"]["source"]["virtualMachine"]["spec"];
        if source.is_object() {
            let keep_strategy = vm["spec"]["runStrategy"].clone();
            let keep_running = vm["spec"]["running"].clone();
            new_vm["spec"] = source.clone();
            if let Some(m) = new_vm["spec"].as_object_mut() {
                m.remove("runStrategy");
                m.remove("running");
                if !keep_strategy.is_null() {
                    m.insert("runStrategy".into(), keep_strategy);
                }
                if !keep_running.is_null() {
                    m.insert("running".into(), keep_running);
                }
            }
        }
        let mut restores = Vec::new();
        let mut deleted = Vec::new();
        for b in content["spec"]["volumeBackups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let vol = s(&b["volumeName"]).to_string();
            let old = s(&b["persistentVolumeClaim"]["metadata"]["name"]).to_string();
            let claim = if in_place {
                old.clone()
            } else {
                format!("restore-{uid}-{vol}")
            };
            if let Err(e) = copy_dir(
                &self.snapshot_dir(ns, &content_name, &vol),
                &Self::disk(&self.root, ns, &claim),
            ) {
                tracing::warn!(error = %e, "restoring simulated disk");
            }
            if st.get(&t.pvc, Some(ns), &claim).is_err() {
                let obj = json!({"metadata": {"name": claim, "namespace": ns,
                        "labels": {"restore.kubevirt.io/source-vm-name": vm_name},
                        "annotations": {"restore.kubevirt.io/name": name_of(r)},
                        "ownerReferences": [owner_ref(&vm)]},
                    "spec": b["persistentVolumeClaim"]["spec"]});
                if let Some(p) = self.create(st, &t.pvc, ns, obj) {
                    let p = (*p).clone();
                    let size = p["spec"]["resources"]["requests"]["storage"].clone();
                    self.set_status(
                        st,
                        &t.pvc,
                        &p,
                        json!({"phase": "Bound",
                        "accessModes": p["spec"]["accessModes"], "capacity": {"storage": size}}),
                    );
                }
            }
            if let Some(vols) = new_vm["spec"]["template"]["spec"]["volumes"].as_array_mut() {
                for v in vols.iter_mut().filter(|v| v["name"] == json!(vol)) {
                    if v["dataVolume"].is_object() {
                        v["dataVolume"]["name"] = json!(claim);
                    } else if v["persistentVolumeClaim"].is_object() {
                        v["persistentVolumeClaim"]["claimName"] = json!(claim);
                    }
                }
            }
            if let Some(tpls) = new_vm["spec"]["dataVolumeTemplates"].as_array_mut() {
                for tpl in tpls
                    .iter_mut()
                    .filter(|tpl| tpl["metadata"]["name"] == json!(old))
                {
                    tpl["metadata"]["name"] = json!(claim);
                    tpl["metadata"]["annotations"][PRE_POPULATED] = json!(claim);
                }
            }
            if !in_place {
                // The DataVolume the VM used before is replaced by the restored one.
                let current_dv = vm["spec"]["template"]["spec"]["volumes"]
                    .as_array()
                    .and_then(|vs| vs.iter().find(|v| v["name"] == json!(vol)))
                    .and_then(|v| v["dataVolume"]["name"].as_str())
                    .map(str::to_string);
                if let Some(dv) = current_dv
                    && dv != claim
                    && st.get(&t.dv, Some(ns), &dv).is_ok()
                {
                    self.delete(st, &t.dv, ns, &dv);
                    deleted.push(dv);
                }
            }
            restores.push(json!({"volumeName": vol, "persistentVolumeClaim": claim,
                "volumeSnapshotName": b["volumeSnapshotName"], "dataVolumeName": claim}));
        }
        if new_vm != *vm {
            self.write(st, &t.vm, new_vm);
        }
        self.set_status(
            st,
            &t.restore,
            r,
            json!({"complete": true, "restoreTime": now(),
            "restores": restores, "deletedDataVolumes": deleted,
            "conditions": [condition("Progressing", false, "Operation complete", ""),
                condition("Ready", true, "Operation complete", "")]}),
        );
    }
}

fn failed(status: &Value) -> bool {
    status["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Failure" && c["status"] == "True"))
}

fn volume_snapshot_statuses(spec: &Value) -> Value {
    let vols = spec["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Value::Array(
        vols.iter()
            .map(|v| {
                let supported = v["dataVolume"].is_object() || v["persistentVolumeClaim"].is_object();
                let mut o = json!({"name": v["name"], "enabled": supported});
                if !supported {
                    o["reason"] = json!(format!(
                        "Snapshot is not supported for this volumeSource type [{}]",
                        v["name"].as_str().unwrap_or_default()
                    ));
                }
                o
            })
            .collect(),
    )
}

/// Create the golden-image PVCs of the options (before the server is handed out, so tests
/// can put files on their disks at once).
pub(crate) fn install(st: &mut State, opts: &SimOptions, root: &Path) {
    Sim::new(opts.clone(), root.to_path_buf()).install_golden_images(st);
}

/// Run the simulator until shutdown: reconcile on every change and step deadline.
pub(crate) async fn run(shared: Arc<Shared>, opts: SimOptions, root: PathBuf) {
    let mut shutdown = shared.shutdown.clone();
    let opts_ssh_port = opts.ssh_port;
    let mut sim = Sim::new(opts, root.clone());
    let mut machines = super::machine::Machines::new(opts_ssh_port);
    let mut rx = {
        let st = shared.lock();
        let rv = st.rv();
        match st.subscribe("", rv) {
            Ok((_, rx)) => rx,
            Err(e) => {
                tracing::error!(error = %e, "simulator cannot watch the store");
                return;
            }
        }
    };
    loop {
        let wrote = {
            let mut st = shared.lock();
            sim.pass(&mut st, &mut machines)
        };
        if wrote {
            shared.after_write(true);
            continue;
        }
        let sleep = sim.timers.next.map_or(Duration::from_secs(3600), |n| {
            n.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(sleep) => {}
            r = rx.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    break;
                }
                // Coalesce a burst of changes into one pass.
                while rx.try_recv().is_ok() {}
            }
        }
    }
    machines.stop_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with the simulator's kinds and `clusters` namespaces, each holding two halted
    /// VMs with a finished baseline snapshot apiece: a warm pool at rest.
    fn pool_at_rest(clusters: usize) -> State {
        let mut st = State::new(1024, 1024);
        let crd_rt = st
            .registry
            .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .expect("CRDs are built in");
        for crd in super::super::crds::all() {
            st.create(&crd_rt, None, crd, WriteOpts::default())
                .expect("a simulator CRD");
        }
        let types = Types::lookup(&st).expect("the simulator's kinds are registered");
        let ns_rt = st
            .registry
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        for c in 0..clusters {
            let ns = format!("c{c}");
            st.create(
                &ns_rt,
                None,
                json!({"metadata": {"name": ns}}),
                WriteOpts::default(),
            )
            .expect("a namespace");
            for vm in ["cp", "w1"] {
                let name = format!("{ns}-{vm}");
                st.create(
                    &types.vm,
                    Some(&ns),
                    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}}}),
                    WriteOpts::default(),
                )
                .expect("a VM");
                st.create(
                    &types.snap,
                    Some(&ns),
                    json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                        "metadata": {"name": format!("{name}-baseline"), "namespace": ns},
                        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name}},
                        "status": {"phase": "Succeeded", "readyToUse": true}}),
                    WriteOpts::default(),
                )
                .expect("a snapshot");
            }
        }
        st
    }

    #[test]
    fn a_pass_reads_each_namespace_once_not_once_per_vm() {
        let clusters = 25;
        let mut st = pool_at_rest(clusters);
        let disks = tempfile::tempdir().expect("a temp dir");
        let mut sim = Sim::new(SimOptions::default(), disks.path().to_path_buf());
        let mut machines = super::super::machine::Machines::new(0);
        sim.pass(&mut st, &mut machines);
        // 4 objects per cluster, read by the pass over their kind and once more by their
        // VM's lookup of its restores and snapshots: linear in the clusters. Scanning every
        // namespace per VM reads 2 × 50 snapshots per VM, 5 000 in all, and grows as the square.
        let stored = 4 * clusters;
        assert!(
            sim.scanned <= 3 * stored,
            "one pass over {clusters} clusters ({stored} objects) read {} objects",
            sim.scanned
        );
    }

    /// A FIFO made inside a simulated VM (`mkfifo ~/p`) is skipped: copying it used to open it
    /// and block forever waiting for a writer, hanging the snapshot or clone.
    #[test]
    fn copy_dir_skips_a_fifo_and_keeps_files_and_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        std::fs::create_dir_all(from.join("home")).expect("mkdir");
        std::fs::write(from.join("home/f"), "data").expect("write");
        std::os::unix::fs::symlink("f", from.join("home/l")).expect("symlink");
        let made = std::process::Command::new("mkfifo")
            .arg(from.join("home/p"))
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo failed");

        let (tx, rx) = std::sync::mpsc::channel();
        let (f, t) = (from.clone(), to.clone());
        std::thread::spawn(move || tx.send(copy_dir(&f, &t).map_err(|e| e.to_string())));
        // A hang detector, not a speed check: the copy takes milliseconds when it works.
        let done = rx.recv_timeout(Duration::from_secs(120));
        assert_eq!(done.expect("copy_dir blocked on the FIFO"), Ok(()));
        assert_eq!(
            std::fs::read_to_string(to.join("home/f")).expect("copied"),
            "data"
        );
        assert_eq!(
            std::fs::read_link(to.join("home/l")).expect("link"),
            Path::new("f")
        );
        assert!(
            std::fs::symlink_metadata(to.join("home/p")).is_err(),
            "FIFO not skipped"
        );
    }
}
