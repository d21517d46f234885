//! The table of resource types the server knows: built-ins from a static table, plus one entry
//! per served version of every registered CustomResourceDefinition.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::schema::CrdSchema;

/// All verbs a resource supports here.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource (group, version, plural) and how it behaves.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Writes to the main resource keep status; `/status` writes change only status.
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained.
    pub generation: bool,
    /// Key of the storage shared by every version (and by core/events.k8s.io Events).
    pub storage: String,
    /// For custom resources: schema, CEL rules and printer columns of this version.
    pub crd: Option<Arc<CrdSchema>>,
    /// Extra table columns for built-ins: (name, type, JSONPath, description).
    pub columns: Vec<(&'static str, &'static str, &'static str)>,
}

impl ResourceType {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `group/version` path prefix (`/api/v1` or `/apis/g/v`).
    pub fn path_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// Entries of this resource in an `APIResourceList`.
    pub fn discovery(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    generation: bool,
    storage: Option<&'static str>,
    columns: &'static [(&'static str, &'static str, &'static str)],
}

const fn b(group: &'static str, version: &'static str, kind: &'static str, plural: &'static str) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        namespaced: true,
        short: &[],
        categories: &[],
        status: false,
        generation: false,
        storage: None,
        columns: &[],
    }
}

impl Builtin {
    const fn cluster(mut self) -> Self {
        self.namespaced = false;
        self
    }
    const fn short(mut self, s: &'static [&'static str]) -> Self {
        self.short = s;
        self
    }
    const fn all(mut self) -> Self {
        self.categories = &["all"];
        self
    }
    const fn status(mut self) -> Self {
        self.status = true;
        self
    }
    const fn generation(mut self) -> Self {
        self.generation = true;
        self
    }
    const fn columns(mut self, c: &'static [(&'static str, &'static str, &'static str)]) -> Self {
        self.columns = c;
        self
    }
}

/// The built-in kinds the platform and its tests use.
fn builtins() -> Vec<Builtin> {
    let mut events_k8s = b("events.k8s.io", "v1", "Event", "events").short(&["ev"]);
    events_k8s.storage = Some("/events");
    let mut crd = b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
    .cluster()
    .short(&["crd", "crds"])
    .status()
    .generation()
    .columns(&[("Created At", "date", ".metadata.creationTimestamp")]);
    crd.categories = &["api-extensions"];
    vec![
        b("", "v1", "Namespace", "namespaces")
            .cluster()
            .short(&["ns"])
            .status()
            .columns(&[("Status", "string", ".status.phase")]),
        b("", "v1", "Secret", "secrets").columns(&[("Type", "string", ".type")]),
        b("", "v1", "ConfigMap", "configmaps").short(&["cm"]),
        b("", "v1", "Service", "services")
            .short(&["svc"])
            .all()
            .status()
            .columns(&[
                ("Type", "string", ".spec.type"),
                ("Cluster-IP", "string", ".spec.clusterIP"),
            ]),
        b("", "v1", "ServiceAccount", "serviceaccounts").short(&["sa"]),
        b("", "v1", "Event", "events").short(&["ev"]).columns(&[
            ("Type", "string", ".type"),
            ("Reason", "string", ".reason"),
            ("Message", "string", ".message"),
        ]),
        events_k8s,
        b("", "v1", "ResourceQuota", "resourcequotas")
            .short(&["quota"])
            .status(),
        b("", "v1", "LimitRange", "limitranges").short(&["limits"]),
        b("", "v1", "Pod", "pods")
            .short(&["po"])
            .all()
            .status()
            .generation()
            .columns(&[
                ("Status", "string", ".status.phase"),
                ("Node", "string", ".spec.nodeName"),
            ]),
        b("", "v1", "Node", "nodes").cluster().short(&["no"]).status(),
        b("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")
            .short(&["pvc"])
            .status()
            .columns(&[("Status", "string", ".status.phase")]),
        b("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies")
            .short(&["netpol"])
            .generation(),
        b("coordination.k8s.io", "v1", "Lease", "leases").columns(&[(
            "Holder",
            "string",
            ".spec.holderIdentity",
        )]),
        b("apps", "v1", "Deployment", "deployments")
            .short(&["deploy"])
            .all()
            .status()
            .generation()
            .columns(&[
                ("Ready", "string", ".status.readyReplicas"),
                ("Up-to-date", "integer", ".status.updatedReplicas"),
                ("Available", "integer", ".status.availableReplicas"),
            ]),
        // The Helm chart's disruption budgets and Ingress (make chart-test applies it).
        b("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets")
            .short(&["pdb"])
            .status()
            .generation(),
        b("networking.k8s.io", "v1", "Ingress", "ingresses")
            .short(&["ing"])
            .status()
            .generation(),
        // Scenarios check runtime classes (e.g. gVisor's `runsc`).
        b("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses").cluster(),
        b("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        b("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        b("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles").cluster(),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
        )
        .cluster(),
        crd,
    ]
}

/// Storage key of a group's resource: `group/plural`.
pub fn storage_key(group: &str, plural: &str) -> String {
    format!("{group}/{plural}")
}

/// Served resource types, looked up by (group, version, plural).
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
    /// Group → versions in preference order.
    groups: BTreeMap<String, Vec<String>>,
    /// Resource types registered by each CRD, by CRD name.
    crds: BTreeMap<String, Vec<Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut r = Registry {
            types: BTreeMap::new(),
            groups: BTreeMap::new(),
            crds: BTreeMap::new(),
        };
        for bi in builtins() {
            let rt = ResourceType {
                group: bi.group.into(),
                version: bi.version.into(),
                kind: bi.kind.into(),
                plural: bi.plural.into(),
                singular: bi.kind.to_lowercase(),
                namespaced: bi.namespaced,
                short_names: bi.short.iter().map(|s| s.to_string()).collect(),
                categories: bi.categories.iter().map(|s| s.to_string()).collect(),
                status_subresource: bi.status,
                generation: bi.generation,
                storage: bi
                    .storage
                    .map(str::to_string)
                    .unwrap_or_else(|| storage_key(bi.group, bi.plural)),
                crd: None,
                columns: bi.columns.to_vec(),
            };
            r.insert(Arc::new(rt));
        }
        r
    }
}

impl Registry {
    fn insert(&mut self, rt: Arc<ResourceType>) {
        let versions = self.groups.entry(rt.group.clone()).or_default();
        if !versions.contains(&rt.version) {
            versions.push(rt.version.clone());
        }
        self.types
            .insert((rt.group.clone(), rt.version.clone(), rt.plural.clone()), rt);
    }

    /// The resource type served at group/version/plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// The preferred resource type of a group and kind.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .values()
            .find(|rt| rt.group == group && rt.version == version && rt.kind == kind)
            .cloned()
    }

    /// Groups with their versions, core group (empty name) included.
    pub fn groups(&self) -> &BTreeMap<String, Vec<String>> {
        &self.groups
    }

    /// Every resource type of one group version.
    pub fn resources(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .values()
            .filter(|rt| rt.group == group && rt.version == version)
            .cloned()
            .collect()
    }

    /// Every resource type.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Replace the resource types a CRD serves.
    pub fn set_crd(&mut self, crd_name: &str, types: Vec<Arc<ResourceType>>) {
        self.remove_crd(crd_name);
        for rt in &types {
            self.insert(rt.clone());
        }
        self.crds.insert(crd_name.to_string(), types);
    }

    /// Stop serving a CRD's resources; returns the storage key its objects used.
    pub fn remove_crd(&mut self, crd_name: &str) -> Option<String> {
        let types = self.crds.remove(crd_name)?;
        for rt in &types {
            self.types
                .remove(&(rt.group.clone(), rt.version.clone(), rt.plural.clone()));
        }
        for rt in &types {
            let still = self
                .types
                .values()
                .any(|t| t.group == rt.group && t.version == rt.version);
            if !still && let Some(vs) = self.groups.get_mut(&rt.group) {
                vs.retain(|v| v != &rt.version);
                if vs.is_empty() {
                    self.groups.remove(&rt.group);
                }
            }
        }
        types.first().map(|t| t.storage.clone())
    }

    /// Whether a plural/group pair is already served by a CRD other than `crd_name` or a built-in.
    pub fn conflicts(&self, crd_name: &str, group: &str, plural: &str) -> bool {
        self.types.values().any(|rt| {
            rt.group == group
                && rt.plural == plural
                && !self
                    .crds
                    .get(crd_name)
                    .is_some_and(|ts| ts.iter().any(|t| Arc::ptr_eq(t, rt)))
        })
    }
}
