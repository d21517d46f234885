//! The in-memory object store and the API semantics on top of it: one global resourceVersion
//! counter, a bounded history of changes for watch resumption, and create / update / patch /
//! delete with the metadata rules, finalizers, garbage collection and CRD registration.
//!
//! Everything here is synchronous and runs under one lock, which keeps each write atomic with
//! respect to resourceVersion order and watch delivery.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult, Cause};
use crate::patch::{self, PatchType};
use crate::registry::{Registry, ResourceType};
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector};

const CRD_STORAGE: &str = "apiextensions.k8s.io/customresourcedefinitions";
const NAMESPACE_STORAGE: &str = "/namespaces";

/// Kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The wire name of the event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub storage: String,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The object before the change, so selector-filtered watches can see transitions.
    pub old: Option<Arc<Value>>,
}

/// How dependents are treated when an owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    /// Parse `propagationPolicy`.
    pub fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "Background" => Ok(Self::Background),
            "Foreground" => Ok(Self::Foreground),
            "Orphan" => Ok(Self::Orphan),
            other => Err(ApiError::bad_request(format!(
                "unknown propagationPolicy {other:?}"
            ))),
        }
    }
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: validate and return the result without storing it.
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources fail the write instead of
    /// being pruned.
    pub strict: bool,
}

/// Parameters of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<Propagation>,
    pub precondition_rv: Option<String>,
    pub precondition_uid: Option<String>,
    pub dry_run: bool,
}

/// Parameters of a list (and the filter of a watch).
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

impl ListOpts {
    /// Whether an object passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// A list response; items stay shared with the store until serialized (outside the lock).
#[derive(Debug, Clone)]
pub struct ListResult {
    pub kind: String,
    pub api_version: String,
    pub metadata: Value,
    pub items: Vec<Arc<Value>>,
}

impl ListResult {
    /// The list as JSON text.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            kind: &'a str,
            api_version: &'a str,
            metadata: &'a Value,
            items: Vec<&'a Value>,
        }
        let wire = Wire {
            kind: &self.kind,
            api_version: &self.api_version,
            metadata: &self.metadata,
            items: self.items.iter().map(|o| &**o).collect(),
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

/// The whole server state.
#[derive(Debug)]
pub struct State {
    pub registry: Registry,
    rv: u64,
    objects: HashMap<String, BTreeMap<String, Arc<Value>>>,
    /// uid → (storage, key), for owner-reference lookups.
    uids: HashMap<String, (String, String)>,
    history: VecDeque<Arc<Change>>,
    history_cap: usize,
    /// Highest resourceVersion whose event has left the history (watch from at or below → 410).
    evicted_rv: u64,
    tx: broadcast::Sender<Arc<Change>>,
    /// Last config each field manager applied, by object uid then manager.
    applied: HashMap<String, HashMap<String, Value>>,
    /// Latest resourceVersion, readable without the lock (watch bookmarks).
    pub current_rv: Arc<AtomicU64>,
    /// Set when a deletion may have left work for the garbage collector.
    pub gc_needed: bool,
    /// Whether KubeVirt's and CDI's admission webhooks are simulated (with the simulator).
    pub kubevirt_webhooks: bool,
}

/// Timestamp in the RFC 3339 second precision Kubernetes uses.
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn object_key(ns: Option<&str>, name: &str) -> String {
    format!("{}/{name}", ns.unwrap_or_default())
}

fn meta(obj: &Value) -> &Value {
    &obj["metadata"]
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn random_suffix() -> String {
    // The alphabet the real server uses for generateName, which avoids vowels and look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && dns_subdomain(name)
}

/// `fieldValidation=Strict` turns pruned unknown fields into a 400, as the real server does.
fn strict_check(rt: &ResourceType, opts: WriteOpts, pruned: &[String]) -> ApiResult<()> {
    if !opts.strict || pruned.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> = pruned.iter().map(|p| format!("unknown field \"{p}\"")).collect();
    Err(ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
        fields.join(", "),
        kind = rt.kind,
        version = rt.version,
    )))
}

/// Services of type ClusterIP (the default), NodePort and LoadBalancer get a cluster IP from
/// 10.96.0.0/12 on create, like the real allocator; an update without one keeps the old one.
fn allocate_cluster_ip(st: &State, rt: &ResourceType, obj: &mut Value, old: Option<&Value>) {
    if !(rt.group.is_empty() && rt.plural == "services") {
        return;
    }
    let spec = &obj["spec"];
    if spec["type"].as_str() == Some("ExternalName")
        || spec["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty())
    {
        return;
    }
    if let Some(old_ip) = old
        .and_then(|o| o["spec"]["clusterIP"].as_str())
        .filter(|ip| !ip.is_empty())
    {
        obj["spec"]["clusterIP"] = json!(old_ip);
        obj["spec"]["clusterIPs"] = json!([old_ip]);
        return;
    }
    let used: std::collections::HashSet<String> = st
        .objects
        .get(&rt.storage)
        .map(|b| {
            b.values()
                .filter_map(|s| s["spec"]["clusterIP"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // 10.96.0.1 is the kubernetes Service's; start after it.
    let ip = (2u32..(1 << 20))
        .map(|n| std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) + n).to_string())
        .find(|ip| !used.contains(ip));
    if let Some(ip) = ip {
        if !obj["spec"].is_object() {
            obj["spec"] = json!({});
        }
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    }
}

/// Secrets store `stringData` as base64 `data` and default their type to `Opaque`, like the
/// real server's Secret strategy.
fn normalize_secret(rt: &ResourceType, obj: &mut Value) {
    if !(rt.group.is_empty() && rt.plural == "secrets") {
        return;
    }
    if obj.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        obj["type"] = json!("Opaque");
    }
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(entries) = string_data.as_object() else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in entries {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// The part of an object whose change bumps `metadata.generation`.
fn generation_part(rt: &ResourceType, obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if rt.status_subresource {
            m.remove("status");
        }
    }
    v
}

fn same_ignoring_rv(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// An object as a given resource type presents it (versions share storage).
pub fn present(rt: &ResourceType, obj: &Arc<Value>) -> Arc<Value> {
    let api_version = rt.api_version();
    if obj["apiVersion"].as_str() == Some(api_version.as_str())
        && obj["kind"].as_str() == Some(rt.kind.as_str())
    {
        return obj.clone();
    }
    let mut v = (**obj).clone();
    if rt.storage == "/events" {
        convert_event(&mut v, rt.group.is_empty());
    }
    v["apiVersion"] = Value::String(api_version);
    v["kind"] = Value::String(rt.kind.clone());
    Arc::new(v)
}

/// Field correspondence of core/v1 and events.k8s.io/v1 Events (the real server's conversion).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Rename an Event's fields to the core/v1 (`to_core`) or the events.k8s.io/v1 form.
fn convert_event(v: &mut Value, to_core: bool) {
    let Some(m) = v.as_object_mut() else { return };
    for (core, events) in EVENT_FIELDS {
        let (from, to) = if to_core { (events, core) } else { (core, events) };
        if from != to
            && let Some(value) = m.remove(*from)
        {
            m.insert((*to).to_string(), value);
        }
    }
}

impl State {
    /// An empty store with the default namespaces.
    pub fn new(history_cap: usize, channel_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(channel_cap.max(16));
        let mut s = Self {
            registry: Registry::default(),
            rv: 0,
            objects: HashMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(16),
            evicted_rv: 0,
            tx,
            applied: HashMap::new(),
            current_rv: Arc::new(AtomicU64::new(0)),
            gc_needed: false,
            kubevirt_webhooks: false,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = s
                .registry
                .get("", "v1", "namespaces")
                .expect("namespaces are built in");
            s.create(&rt, None, json!({"metadata": {"name": ns}}), WriteOpts::default())
                .expect("default namespace");
        }
        s
    }

    /// The latest resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn commit(&mut self, storage: &str, key: &str, mut obj: Value, kind: EventType) -> Arc<Value> {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let obj = Arc::new(obj);
        let bucket = self.objects.entry(storage.to_string()).or_default();
        let old = match kind {
            EventType::Deleted => bucket.remove(key),
            _ => bucket.insert(key.to_string(), obj.clone()),
        };
        if let Some(uid) = meta_str(&obj, "uid") {
            if kind == EventType::Deleted {
                self.uids.remove(uid);
                self.applied.remove(uid);
            } else {
                self.uids
                    .insert(uid.to_string(), (storage.to_string(), key.to_string()));
            }
        }
        let change = Arc::new(Change {
            rv: self.rv,
            storage: storage.to_string(),
            kind,
            object: obj.clone(),
            old,
        });
        if self.history.len() >= self.history_cap
            && let Some(ev) = self.history.pop_front()
        {
            self.evicted_rv = ev.rv;
        }
        self.history.push_back(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(change);
        self.current_rv.store(self.rv, Ordering::Release);
        obj
    }

    fn lookup(&self, storage: &str, key: &str) -> Option<Arc<Value>> {
        self.objects.get(storage).and_then(|b| b.get(key)).cloned()
    }

    /// The namespace of a new object must exist and not be terminating.
    fn check_namespace(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns =
            ns.ok_or_else(|| ApiError::bad_request("a namespace is required for namespaced resources"))?;
        let Some(nsobj) = self.lookup(NAMESPACE_STORAGE, &object_key(None, ns)) else {
            return Err(ApiError::not_found("", "namespaces", ns));
        };
        if meta(&nsobj).get("deletionTimestamp").is_some() {
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                crate::error::qualified(&rt.group, &rt.plural),
            )));
        }
        Ok(())
    }

    /// Get one object.
    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Arc<Value>> {
        self.lookup(&rt.storage, &object_key(ns.filter(|_| rt.namespaced), name))
            .map(|o| present(rt, &o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::invalid(&rt.group, &rt.kind, name, causes)
    }

    /// Create an object.
    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        mut obj: Value,
        opts: WriteOpts,
    ) -> ApiResult<Arc<Value>> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        self.check_type(rt, &obj)?;
        obj["apiVersion"] = Value::String(rt.api_version());
        obj["kind"] = Value::String(rt.kind.clone());
        let m = meta_mut(&mut obj);
        if m.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            match m.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", random_suffix());
                    m.insert("name".into(), Value::String(name));
                }
                _ => {
                    return Err(Self::invalid(
                        rt,
                        "",
                        vec![Cause::new(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )],
                    ));
                }
            }
        }
        let name = m["name"].as_str().unwrap_or_default().to_string();
        let ns = if rt.namespaced {
            let body_ns = m.get("namespace").and_then(Value::as_str).map(str::to_string);
            match (ns, body_ns) {
                (Some(p), Some(b)) if p != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(p), _) => Some(p.to_string()),
                (None, b) => b,
            }
        } else {
            None
        };
        let label_name = rt.plural == "namespaces" || rt.plural == "services";
        // RBAC objects only need a valid path segment (e.g. `system:controller:x`).
        let path_segment = rt.group == "rbac.authorization.k8s.io";
        let valid = if path_segment {
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
        } else if label_name {
            dns_label(&name)
        } else {
            dns_subdomain(&name)
        };
        if !valid {
            return Err(Self::invalid(
                rt,
                &name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "metadata.name",
                    format!(
                        "Invalid value: \"{name}\": a lowercase RFC 1123 {} must consist of lower case alphanumeric \
                         characters, '-' or '.', and must start and end with an alphanumeric character",
                        if label_name { "label" } else { "subdomain" }
                    ),
                )],
            ));
        }
        self.check_namespace(rt, ns.as_deref(), &name)?;
        let m = meta_mut(&mut obj);
        match &ns {
            Some(n) => m.insert("namespace".into(), Value::String(n.clone())),
            None => m.remove("namespace"),
        };
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "resourceVersion",
        ] {
            m.remove(f);
        }
        m.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), Value::String(now()));
        if rt.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        normalize_secret(rt, &mut obj);
        allocate_cluster_ip(self, rt, &mut obj, None);
        let key = object_key(ns.as_deref(), &name);
        if self.lookup(&rt.storage, &key).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        let mut crd_types = None;
        // Like the real strategies, status is not settable on create where it is a subresource
        // (Nodes keep theirs; Namespaces get theirs below).
        if rt.status_subresource && rt.plural != "nodes" {
            obj.as_object_mut().expect("object").remove("status");
            if rt.group.is_empty() && matches!(rt.plural.as_str(), "pods" | "persistentvolumeclaims") {
                obj["status"] = json!({"phase": "Pending"});
            }
        }
        if let Some(crd) = &rt.crd {
            let mut pruned = Vec::new();
            let causes = crd.admit(&mut obj, None, &mut pruned);
            strict_check(rt, opts, &pruned)?;
            if !causes.is_empty() {
                return Err(Self::invalid(rt, &name, causes));
            }
        } else if rt.storage == NAMESPACE_STORAGE {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        } else if rt.storage == CRD_STORAGE {
            crd_types = Some(self.check_crd(rt, &name, &obj)?);
            obj["status"] = schema::crd_status(&obj, &now());
        }
        self.admit(rt, ns.as_deref(), &name, &obj, None)?;
        if opts.dry_run {
            return Ok(Arc::new(obj));
        }
        let stored = self.commit(&rt.storage, &key, obj, EventType::Added);
        if let Some(types) = crd_types {
            self.registry.set_crd(&name, types);
        }
        Ok(present(rt, &stored))
    }

    /// What the real server checks after the schema: built-in kinds' own validation, then
    /// (with the simulator) KubeVirt's and CDI's validating webhooks.
    fn admit(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let causes = crate::builtin::validate(rt, obj, old)?;
        if !causes.is_empty() {
            return Err(Self::invalid(rt, name, causes));
        }
        if self.kubevirt_webhooks {
            crate::kubevirt::admit(self, rt, ns, obj, old)?;
        }
        Ok(())
    }

    fn check_type(&self, rt: &ResourceType, obj: &Value) -> ApiResult<()> {
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the resource ({})",
                rt.kind
            )));
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
            let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
            if group != rt.group && !(rt.plural == "events" && (group.is_empty() || group == "events.k8s.io"))
            {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
        }
        Ok(())
    }

    fn check_crd(&self, rt: &ResourceType, name: &str, obj: &Value) -> ApiResult<Vec<Arc<ResourceType>>> {
        let types = schema::crd_resource_types(obj).map_err(|c| Self::invalid(rt, name, c))?;
        // The real server reports this as NamesAccepted=False; refusing is clearer here.
        if let Some(t) = types
            .iter()
            .find(|t| self.registry.conflicts(name, &t.group, &t.plural))
        {
            return Err(Self::invalid(
                rt,
                name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "spec.names.plural",
                    format!(
                        "Invalid value: \"{}\": {}/{} is already served by another resource",
                        t.plural, t.group, t.version
                    ),
                )],
            ));
        }
        Ok(types.into_iter().map(Arc::new).collect())
    }

    /// Replace an object (PUT), or only its status when `status` is set.
    pub fn update(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        new: Value,
        status: bool,
        opts: WriteOpts,
    ) -> ApiResult<Arc<Value>> {
        let ns = ns.filter(|_| rt.namespaced);
        let key = object_key(ns, name);
        // Work on the object as this version shows it, so a write through another version (or
        // the other Event API) compares and merges like-for-like.
        let old = self
            .lookup(&rt.storage, &key)
            .map(|o| present(rt, &o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        self.check_type(rt, &new)?;
        if let Some(n) = meta_str(&new, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|r| !r.is_empty())
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(&rt.group, &rt.plural, name));
        }
        if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty())
            && Some(uid) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(&rt.group, &rt.plural, name));
        }
        let mut next = if status {
            let mut n = (*old).clone();
            match new.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    n.as_object_mut().expect("object").remove("status");
                }
            }
            n
        } else {
            let mut n = new;
            if rt.status_subresource {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().expect("object").remove("status");
                    }
                }
            }
            n
        };
        next["apiVersion"] = old["apiVersion"].clone();
        next["kind"] = old["kind"].clone();
        let om = meta(&old).as_object().cloned().unwrap_or_default();
        let m = meta_mut(&mut next);
        m.remove("managedFields");
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
        ] {
            match om.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        normalize_secret(rt, &mut next);
        allocate_cluster_ip(self, rt, &mut next, Some(&old));
        if let Some(crd) = &rt.crd {
            let mut pruned = Vec::new();
            let causes = crd.admit(&mut next, Some(&old), &mut pruned);
            strict_check(rt, opts, &pruned)?;
            if !causes.is_empty() {
                return Err(Self::invalid(rt, name, causes));
            }
        }
        if !status {
            self.admit(rt, ns, name, &next, Some(&old))?;
        }
        let mut crd_types = None;
        if rt.storage == CRD_STORAGE && !status {
            crd_types = Some(self.check_crd(rt, name, &next)?);
            next["status"] = schema::crd_status(&next, &now());
            if let Some(conds) = old.pointer("/status/conditions") {
                next["status"]["conditions"] = conds.clone();
            }
        }
        if rt.generation && generation_part(rt, &old) != generation_part(rt, &next) {
            let g = meta(&old)["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut next).insert("generation".into(), json!(g));
        }
        if same_ignoring_rv(&old, &next) {
            return Ok(present(rt, &old));
        }
        if opts.dry_run {
            return Ok(Arc::new(next));
        }
        if meta(&next).get("deletionTimestamp").is_some()
            && finalizers(&next).is_empty()
            && rt.storage != NAMESPACE_STORAGE
        {
            self.gc_needed = true;
            let gone = self.remove(&rt.storage, &key, next);
            return Ok(present(rt, &gone));
        }
        let stored = self.commit(&rt.storage, &key, next, EventType::Modified);
        if let Some(types) = crd_types {
            self.registry.set_crd(name, types);
        }
        Ok(present(rt, &stored))
    }

    /// Patch an object (or its status); server-side apply creates it when missing.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        body: Value,
        status: bool,
        field_manager: Option<&str>,
        force: bool,
        opts: WriteOpts,
    ) -> ApiResult<Arc<Value>> {
        let dry_run = opts.dry_run;
        let key = object_key(ns.filter(|_| rt.namespaced), name);
        let current = self.lookup(&rt.storage, &key).map(|o| present(rt, &o));
        if ptype == PatchType::Strategic && rt.crd.is_some() {
            return Err(ApiError::unsupported_media_type(
                "strategic merge patch is not supported for custom resources; use a merge or JSON patch",
            ));
        }
        if ptype == PatchType::Apply {
            let manager = field_manager
                .filter(|m| !m.is_empty())
                .ok_or_else(|| ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"))?
                .to_string();
            if !body.is_object() {
                return Err(ApiError::bad_request("an apply patch must be an object"));
            }
            if let Some(n) = meta_str(&body, "name")
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            let Some(old) = current else {
                if status {
                    return Err(ApiError::not_found(&rt.group, &rt.plural, name));
                }
                let mut obj = body.clone();
                meta_mut(&mut obj).insert("name".into(), Value::String(name.to_string()));
                let created = self.create(rt, ns, obj, opts)?;
                if let Some(uid) = meta_str(&created, "uid").filter(|_| !dry_run) {
                    self.applied
                        .entry(uid.to_string())
                        .or_default()
                        .insert(manager, body);
                }
                return Ok(created);
            };
            let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
            let prev = self.applied.get(&uid).and_then(|m| m.get(&manager)).cloned();
            let mut next = (*old).clone();
            let scoped = |v: &Value| {
                if status {
                    json!({"status": v.get("status").cloned().unwrap_or(Value::Null)})
                } else {
                    v.clone()
                }
            };
            let cfg = scoped(&body);
            self.apply_conflicts(rt, &uid, &manager, &cfg, &scoped, force)?;
            if let Some(prev) = prev {
                patch::remove_unapplied(&mut next, &scoped(&prev), &cfg);
            }
            let mut cfg_clean = cfg.clone();
            if let Some(m) = cfg_clean.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            patch::strategic_merge(&mut next, &cfg_clean, true);
            // Apply without a resourceVersion is unconditional; with one it is a precondition,
            // also when only the status part of the body is applied.
            let precondition = body["metadata"]
                .get("resourceVersion")
                .filter(|rv| rv.as_str().is_some_and(|s| !s.is_empty()))
                .cloned();
            meta_mut(&mut next).insert(
                "resourceVersion".into(),
                precondition.unwrap_or_else(|| old["metadata"]["resourceVersion"].clone()),
            );
            let result = self.update(rt, ns, name, next, status, opts)?;
            if !dry_run {
                self.applied.entry(uid).or_default().insert(manager, body);
            }
            return Ok(result);
        }
        let old = current.ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        let mut next = (*old).clone();
        match ptype {
            PatchType::Json => patch::json_patch(&mut next, &body)?,
            PatchType::Merge => patch::merge_patch(&mut next, &body),
            PatchType::Strategic => patch::strategic_merge(&mut next, &body, false),
            PatchType::Apply => unreachable!("handled above"),
        }
        if !next.is_object() {
            return Err(ApiError::bad_request("the patched object is not a JSON object"));
        }
        self.update(rt, ns, name, next, status, opts)
    }

    /// Field-ownership conflicts of an apply: leaf fields another manager applied with a
    /// different value. Without `force` they fail the apply with 409; with it, ownership moves
    /// to this manager (the other manager no longer removes them when it stops applying them).
    fn apply_conflicts(
        &mut self,
        rt: &ResourceType,
        uid: &str,
        manager: &str,
        cfg: &Value,
        scoped: &dyn Fn(&Value) -> Value,
        force: bool,
    ) -> ApiResult<()> {
        let mut mine = Vec::new();
        leaf_paths(cfg, String::new(), &mut mine);
        let mut conflicts: Vec<(String, String)> = Vec::new();
        if let Some(managers) = self.applied.get(uid) {
            for (other, other_cfg) in managers.iter().filter(|(m, _)| m.as_str() != manager) {
                let scoped_other = scoped(other_cfg);
                for (path, value) in &mine {
                    if let Some(theirs) = pointer(&scoped_other, path)
                        && theirs != *value
                        && !theirs.is_object()
                    {
                        conflicts.push((other.clone(), path.clone()));
                    }
                }
            }
        }
        if conflicts.is_empty() {
            return Ok(());
        }
        if !force {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": p}))
                .collect();
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": {p}"))
                .collect();
            let n = conflicts.len();
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    list.join("\n")
                ),
                details: Some(json!({"group": rt.group, "kind": rt.plural, "causes": causes})),
            });
        }
        if let Some(managers) = self.applied.get_mut(uid) {
            for (other, path) in conflicts {
                if let Some(c) = managers.get_mut(&other) {
                    remove_path(c, &path);
                }
            }
        }
        Ok(())
    }

    /// Delete an object: immediately, or by setting deletionTimestamp while finalizers remain.
    /// Returns the object and whether it is gone.
    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<(Arc<Value>, bool)> {
        let key = object_key(ns.filter(|_| rt.namespaced), name);
        let old = self
            .lookup(&rt.storage, &key)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if opts
            .precondition_rv
            .as_deref()
            .is_some_and(|rv| Some(rv) != meta_str(&old, "resourceVersion"))
            || opts
                .precondition_uid
                .as_deref()
                .is_some_and(|u| Some(u) != meta_str(&old, "uid"))
        {
            return Err(ApiError::conflict(&rt.group, &rt.plural, name));
        }
        if opts.dry_run {
            return Ok((present(rt, &old), false));
        }
        let (obj, gone) = self.delete_key(
            &rt.storage,
            &key,
            opts.propagation.unwrap_or(Propagation::Background),
        );
        Ok((present(rt, &obj), gone))
    }

    /// Delete by storage key, honouring finalizers and the propagation policy.
    fn delete_key(&mut self, storage: &str, key: &str, propagation: Propagation) -> (Arc<Value>, bool) {
        let old = self.lookup(storage, key).expect("caller checked existence");
        self.gc_needed = true;
        let mut next = (*old).clone();
        if storage == NAMESPACE_STORAGE {
            if meta(&old).get("deletionTimestamp").is_none() {
                meta_mut(&mut next).insert("deletionTimestamp".into(), Value::String(now()));
                next["status"]["phase"] = json!("Terminating");
                return (self.commit(storage, key, next, EventType::Modified), false);
            }
            return (old, false);
        }
        let mut fins = finalizers(&old);
        let extra = match propagation {
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Orphan => Some("orphan"),
            Propagation::Background => None,
        };
        if let Some(f) = extra {
            // Only worth a finalizer when something may depend on this object.
            if !fins.iter().any(|x| x == f) && meta(&old).get("deletionTimestamp").is_none() {
                fins.push(f.to_string());
            }
        }
        if fins.is_empty() {
            return (self.remove(storage, key, next), true);
        }
        let m = meta_mut(&mut next);
        m.insert("finalizers".into(), json!(fins));
        if m.get("deletionTimestamp").is_none() {
            m.insert("deletionTimestamp".into(), Value::String(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        if same_ignoring_rv(&old, &next) {
            return (old, false);
        }
        (self.commit(storage, key, next, EventType::Modified), false)
    }

    /// Remove an object for good, with the clean-up a removed CRD needs.
    fn remove(&mut self, storage: &str, key: &str, last: Value) -> Arc<Value> {
        let gone = self.commit(storage, key, last, EventType::Deleted);
        if storage == CRD_STORAGE
            && let Some(name) = meta_str(&gone, "name")
            && let Some(cr_storage) = self.registry.remove_crd(name)
        {
            let keys: Vec<String> = self
                .objects
                .get(&cr_storage)
                .map(|b| b.keys().cloned().collect())
                .unwrap_or_default();
            for k in keys {
                if let Some(obj) = self.lookup(&cr_storage, &k) {
                    self.commit(&cr_storage, &k, (*obj).clone(), EventType::Deleted);
                }
            }
            self.objects.remove(&cr_storage);
        }
        gone
    }

    /// List objects of a type (in one namespace, or all when `ns` is None).
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>, opts: &ListOpts) -> ApiResult<ListResult> {
        let start = match &opts.continue_token {
            Some(t) if !t.is_empty() => Some(decode_continue(t)?),
            _ => None,
        };
        let mut items = Vec::new();
        let mut next = None;
        if let Some(bucket) = self.objects.get(&rt.storage) {
            let prefix = ns.filter(|_| rt.namespaced).map(|n| format!("{n}/"));
            let iter: Box<dyn Iterator<Item = (&String, &Arc<Value>)>> = match (&start, &prefix) {
                (Some(s), _) => Box::new(
                    bucket.range::<String, _>((std::ops::Bound::Excluded(s), std::ops::Bound::Unbounded)),
                ),
                (None, Some(p)) => Box::new(bucket.range::<String, _>(p.clone()..)),
                (None, None) => Box::new(bucket.iter()),
            };
            for (k, obj) in iter {
                if let Some(p) = &prefix
                    && !k.starts_with(p.as_str())
                {
                    break;
                }
                if let Some(n) = opts.fields.name()
                    && meta_str(obj, "name") != Some(n)
                {
                    continue;
                }
                // Selectors see the object as this version presents it (Event field names differ).
                let shown = present(rt, obj);
                if !opts.matches(&shown) {
                    continue;
                }
                if opts.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                    next = last_key(&items, rt);
                    break;
                }
                items.push(shown);
            }
        }
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if let Some(k) = next {
            metadata["continue"] = Value::String(encode_continue(&k));
        }
        Ok(ListResult {
            kind: format!("{}List", rt.kind),
            api_version: rt.api_version(),
            metadata,
            items,
        })
    }

    /// Delete every matching object; returns the list of what was deleted or marked.
    pub fn delete_collection(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> ApiResult<Value> {
        let all = ListOpts {
            limit: None,
            continue_token: None,
            ..list.clone()
        };
        let listed = self.list(rt, ns, &all)?;
        let mut items = Vec::new();
        for item in listed.items {
            let name = meta_str(&item, "name").unwrap_or_default().to_string();
            let item_ns = meta_str(&item, "namespace").map(str::to_string);
            match self.delete(rt, item_ns.as_deref(), &name, opts) {
                Ok((obj, _)) => items.push((*obj).clone()),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(
            json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
        )
    }

    /// Changes of a storage after resourceVersion `from`, replayed from the history, plus a
    /// receiver for later changes; 410 when `from` is older than the retained history. Callers
    /// that want the current state first list under the same lock and subscribe from `rv()`.
    #[allow(clippy::type_complexity)]
    pub fn subscribe(
        &self,
        storage: &str,
        from: u64,
    ) -> Result<(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>), ApiError> {
        if from < self.evicted_rv {
            return Err(ApiError::gone(format!(
                "too old resource version: {from} ({})",
                self.evicted_rv + 1
            )));
        }
        let replay = if from >= self.rv {
            Vec::new()
        } else {
            self.history
                .iter()
                .filter(|c| c.rv > from && c.storage == storage)
                .cloned()
                .collect()
        };
        Ok((replay, self.tx.subscribe()))
    }

    /// One garbage-collection pass; returns whether it changed anything.
    pub fn gc_pass(&mut self) -> bool {
        self.gc_needed = false;
        let mut changed = false;
        // Dependents by owner uid.
        let mut dependents: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut with_owners = Vec::new();
        for (storage, bucket) in &self.objects {
            for (key, obj) in bucket {
                let owners = owner_uids(obj);
                if owners.is_empty() {
                    continue;
                }
                for o in &owners {
                    dependents
                        .entry(o.clone())
                        .or_default()
                        .push((storage.clone(), key.clone()));
                }
                with_owners.push((storage.clone(), key.clone(), owners));
            }
        }
        // Dependents whose owners are all gone (background propagation).
        for (storage, key, owners) in with_owners {
            // A dependent already being deleted waits for its own finalizers; deleting it again
            // would change nothing and keep the collector spinning.
            let pending = self
                .lookup(&storage, &key)
                .is_some_and(|o| meta(&o).get("deletionTimestamp").is_none());
            if owners.iter().all(|u| !self.uids.contains_key(u)) && pending {
                let (_, _) = self.delete_key(&storage, &key, Propagation::Background);
                changed = true;
            }
        }
        // Owners being deleted in the foreground or orphaning their dependents.
        let deleting: Vec<(String, String, Arc<Value>)> = self
            .objects
            .iter()
            .flat_map(|(s, b)| {
                b.iter()
                    .filter(|(_, o)| meta(o).get("deletionTimestamp").is_some())
                    .map(|(k, o)| (s.clone(), k.clone(), o.clone()))
            })
            .collect();
        for (storage, key, obj) in deleting {
            let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
            let deps: Vec<(String, String)> = dependents
                .get(&uid)
                .map(|d| {
                    d.iter()
                        .filter(|(s, k)| self.lookup(s, k).is_some())
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let fins = finalizers(&obj);
            if storage == NAMESPACE_STORAGE {
                let ns = meta_str(&obj, "name").unwrap_or_default().to_string();
                let prefix = format!("{ns}/");
                let contents: Vec<(String, String)> = self
                    .objects
                    .iter()
                    .filter(|(s, _)| s.as_str() != NAMESPACE_STORAGE)
                    .flat_map(|(s, b)| {
                        b.range::<String, _>(prefix.clone()..)
                            .take_while(|(k, _)| k.starts_with(&prefix))
                            .map(|(k, _)| (s.clone(), k.clone()))
                    })
                    .collect();
                for (s, k) in contents {
                    let o = self.lookup(&s, &k).expect("listed");
                    if meta(&o).get("deletionTimestamp").is_none() {
                        self.delete_key(&s, &k, Propagation::Background);
                        changed = true;
                    }
                }
                let left = self.objects.iter().any(|(s, b)| {
                    s.as_str() != NAMESPACE_STORAGE
                        && b.range::<String, _>(prefix.clone()..)
                            .next()
                            .is_some_and(|(k, _)| k.starts_with(&prefix))
                });
                if !left {
                    let mut last = (*obj).clone();
                    last["spec"]["finalizers"] = json!([]);
                    self.remove(&storage, &key, last);
                    changed = true;
                }
                continue;
            }
            if fins.iter().any(|f| f == "orphan") {
                for (s, k) in &deps {
                    let mut d = (*self.lookup(s, k).expect("filtered")).clone();
                    if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"].as_str() != Some(uid.as_str()));
                    }
                    self.commit(s, k, d, EventType::Modified);
                }
                self.drop_finalizer(&storage, &key, "orphan");
                changed = true;
            } else if fins.iter().any(|f| f == "foregroundDeletion") {
                if deps.is_empty() {
                    self.drop_finalizer(&storage, &key, "foregroundDeletion");
                    changed = true;
                } else {
                    for (s, k) in deps {
                        let d = self.lookup(&s, &k).expect("filtered");
                        if meta(&d).get("deletionTimestamp").is_none() {
                            self.delete_key(&s, &k, Propagation::Foreground);
                            changed = true;
                        }
                    }
                }
            }
        }
        changed
    }

    fn drop_finalizer(&mut self, storage: &str, key: &str, finalizer: &str) {
        let Some(obj) = self.lookup(storage, key) else {
            return;
        };
        let mut next = (*obj).clone();
        let fins: Vec<String> = finalizers(&obj).into_iter().filter(|f| f != finalizer).collect();
        if fins.is_empty() {
            meta_mut(&mut next).remove("finalizers");
            self.remove(storage, key, next);
        } else {
            meta_mut(&mut next).insert("finalizers".into(), json!(fins));
            self.commit(storage, key, next, EventType::Modified);
        }
    }

    /// Every stored object with the latest resourceVersion, for persistence.
    pub fn snapshot(&self) -> Value {
        let objects: Vec<Value> = self
            .objects
            .iter()
            .flat_map(|(s, b)| {
                b.iter()
                    .map(move |(k, o)| json!({"storage": s, "key": k, "object": &**o}))
            })
            .collect();
        json!({"resourceVersion": self.rv, "objects": objects, "applied": self.applied})
    }

    /// Restore a snapshot written by [`State::snapshot`]; CRDs are served again.
    pub fn restore(&mut self, snap: &Value) -> Result<(), String> {
        self.objects.clear();
        self.uids.clear();
        self.history.clear();
        let objects = snap["objects"].as_array().ok_or("snapshot has no objects")?;
        for entry in objects {
            let storage = entry["storage"]
                .as_str()
                .ok_or("entry without storage")?
                .to_string();
            let key = entry["key"].as_str().ok_or("entry without key")?.to_string();
            let obj = Arc::new(entry["object"].clone());
            if let Some(uid) = meta_str(&obj, "uid") {
                self.uids.insert(uid.to_string(), (storage.clone(), key.clone()));
            }
            if storage == CRD_STORAGE
                && let (Ok(types), Some(name)) = (schema::crd_resource_types(&obj), meta_str(&obj, "name"))
            {
                self.registry
                    .set_crd(name, types.into_iter().map(Arc::new).collect());
            }
            self.objects.entry(storage).or_default().insert(key, obj);
        }
        if let Ok(applied) = serde_json::from_value(snap["applied"].clone()) {
            self.applied = applied;
        }
        self.rv = snap["resourceVersion"].as_u64().unwrap_or(0);
        // Watches cannot resume across a restart: history starts empty.
        self.evicted_rv = self.rv;
        self.current_rv.store(self.rv, Ordering::Release);
        Ok(())
    }
}

/// Leaf fields of an apply configuration as `.a.b` paths (lists are leaves), leaving out the
/// identifying fields every manager sends.
fn leaf_paths<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v.as_object() {
        Some(m) => {
            for (k, child) in m {
                let p = format!("{path}.{k}");
                if matches!(
                    p.as_str(),
                    ".apiVersion"
                        | ".kind"
                        | ".metadata.name"
                        | ".metadata.namespace"
                        | ".metadata.resourceVersion"
                ) {
                    continue;
                }
                leaf_paths(child, p, out);
            }
        }
        None => out.push((path, v)),
    }
}

fn pointer<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').skip(1).try_fold(v, |cur, seg| cur.get(seg))
}

fn remove_path(v: &mut Value, path: &str) {
    let segs: Vec<&str> = path.split('.').skip(1).collect();
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        match cur.get_mut(*seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(*last);
    }
}

fn last_key(items: &[Arc<Value>], rt: &ResourceType) -> Option<String> {
    items.last().map(|o| {
        object_key(
            meta_str(o, "namespace").filter(|_| rt.namespaced),
            meta_str(o, "name").unwrap_or_default(),
        )
    })
}

fn encode_continue(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_continue(token: &str) -> ApiResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
}
