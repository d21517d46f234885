//! Reading objects from the practice cluster for `resource_exists` and `resource_property`
//! rules: kind → resource through API discovery (cached for one validation run), then a get of
//! the named object or a list of the kind, as JSON.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use cks_scenarios::ResourceRef;
use futures::future::{BoxFuture, join_all};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::GroupVersion;
use kube::discovery::{ApiCapabilities, ApiGroup, ApiResource, Scope, pinned_group};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::error::Error;

/// Namespace used for namespaced kinds when a rule names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The objects a reference selected.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// As JSON: the named object (none if it does not exist), or every object of the kind
    /// matching the label selector.
    pub objects: Vec<Value>,
    /// The reference as named in messages (`Pod web in namespace default`).
    pub what: String,
}

/// Reads objects a rule refers to. Implemented over the Kubernetes API by [`KubeCluster`];
/// tests substitute fakes.
pub trait ClusterApi: Send + Sync {
    /// The objects `resource` refers to.
    fn find<'a>(&'a self, resource: &'a ResourceRef) -> BoxFuture<'a, Result<Found, Error>>;
}

/// [`ClusterApi`] over a practice cluster's API server. What discovery finds is cached for the
/// life of the value, which the engine keeps for one validation run.
///
/// Kinds resolve lazily and cheaply: the core group first (one request, and most rules name
/// core kinds), then every other group's preferred version, queried concurrently. A group
/// that fails discovery (an aggregated API whose backend is down, common on a student's
/// cluster) is skipped rather than failing every rule. `apiVersion` pins one group version.
pub struct KubeCluster {
    client: Client,
    default_namespace: String,
    core: OnceCell<Result<Arc<ApiGroup>, Error>>,
    groups: OnceCell<Result<Arc<Vec<ApiGroup>>, Error>>,
    pinned: Mutex<HashMap<String, Option<Arc<ApiGroup>>>>,
}

impl fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeCluster")
            .field("default_namespace", &self.default_namespace)
            .field("core_discovered", &self.core.initialized())
            .field("groups_discovered", &self.groups.initialized())
            .finish_non_exhaustive()
    }
}

impl KubeCluster {
    pub fn new(client: Client, default_namespace: impl Into<String>) -> Self {
        Self {
            client,
            default_namespace: default_namespace.into(),
            core: OnceCell::new(),
            groups: OnceCell::new(),
            pinned: Mutex::default(),
        }
    }

    async fn core(&self) -> Result<Arc<ApiGroup>, Error> {
        self.core
            .get_or_init(|| async {
                pinned_group(&self.client, &GroupVersion::gv("", "v1"))
                    .await
                    .map(Arc::new)
                    .map_err(|e| Error::Discovery(e.to_string()))
            })
            .await
            .clone()
    }

    async fn groups(&self) -> Result<Arc<Vec<ApiGroup>>, Error> {
        self.groups
            .get_or_init(|| async {
                let list = self
                    .client
                    .list_api_groups()
                    .await
                    .map_err(|e| Error::Discovery(e.to_string()))?;
                let mut wanted: Vec<GroupVersion> = list
                    .groups
                    .iter()
                    .filter_map(|g| {
                        let v = g.preferred_version.as_ref().or(g.versions.first())?;
                        Some(GroupVersion::gv(&g.name, &v.version))
                    })
                    .collect();
                wanted.sort_by(|a, b| a.group.cmp(&b.group));
                let found = join_all(wanted.iter().map(|gv| pinned_group(&self.client, gv))).await;
                let mut groups = Vec::with_capacity(found.len());
                for (gv, result) in wanted.iter().zip(found) {
                    match result {
                        Ok(group) => groups.push(group),
                        Err(e) => tracing::warn!(
                            api_version = %gv.api_version(),
                            error = %e,
                            "skipping an API group that failed discovery"
                        ),
                    }
                }
                Ok(Arc::new(groups))
            })
            .await
            .clone()
    }

    /// The group version `api_version`, or `None` when the server does not serve it.
    async fn pinned(&self, api_version: &str) -> Result<Option<Arc<ApiGroup>>, Error> {
        if let Some(known) = self
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(api_version)
        {
            return Ok(known.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let group = match pinned_group(&self.client, &GroupVersion::gv(group, version)).await {
            Ok(g) => Some(Arc::new(g)),
            Err(kube::Error::Api(status)) if status.is_not_found() => None,
            Err(e) => return Err(Error::Discovery(format!("{api_version}: {e}"))),
        };
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(api_version.to_owned(), group.clone());
        Ok(group)
    }

    /// The resource serving `kind` (case-insensitive), in `api_version` when given; otherwise
    /// the core group's, else the first other group's (by name) in its preferred version.
    async fn resolve(
        &self,
        kind: &str,
        api_version: Option<&str>,
    ) -> Result<(ApiResource, ApiCapabilities), Error> {
        let unknown = || Error::UnknownKind {
            kind: kind.to_owned(),
            api_version: api_version.map(str::to_owned),
        };
        let find = |group: &ApiGroup| {
            group
                .recommended_resources()
                .into_iter()
                .find(|(ar, _)| ar.kind.eq_ignore_ascii_case(kind))
        };
        if let Some(av) = api_version {
            return self.pinned(av).await?.and_then(|g| find(&g)).ok_or_else(unknown);
        }
        if let Some(found) = find(&*self.core().await?) {
            return Ok(found);
        }
        self.groups().await?.iter().find_map(find).ok_or_else(unknown)
    }
}

impl ClusterApi for KubeCluster {
    fn find<'a>(&'a self, resource: &'a ResourceRef) -> BoxFuture<'a, Result<Found, Error>> {
        Box::pin(async move {
            let (ar, caps) = self
                .resolve(&resource.kind, resource.api_version.as_deref())
                .await?;
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Cluster => Api::all_with(self.client.clone(), &ar),
                Scope::Namespaced => {
                    let ns = resource.namespace.as_deref().unwrap_or(&self.default_namespace);
                    Api::namespaced_with(self.client.clone(), ns, &ar)
                }
            };
            let what = || describe(resource, &caps.scope, &self.default_namespace);
            let api_error = |e: kube::Error| Error::Api {
                what: what(),
                cause: e.to_string(),
            };
            let objects = match &resource.name {
                Some(name) => api.get_opt(name).await.map_err(api_error)?.into_iter().collect(),
                None => {
                    let mut params = ListParams::default();
                    if let Some(selector) = &resource.label_selector {
                        params = params.labels(selector);
                    }
                    api.list(&params).await.map_err(api_error)?.items
                }
            };
            let objects = objects
                .into_iter()
                .map(|o| {
                    serde_json::to_value(o).map_err(|e| Error::Api {
                        what: what(),
                        cause: e.to_string(),
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(Found {
                objects,
                what: what(),
            })
        })
    }
}

/// How a reference is named in messages: `Namespace test-pods`, `Pod web in namespace team-a`,
/// `Pods labelled app=web in namespace default`.
pub(crate) fn describe(resource: &ResourceRef, scope: &Scope, default_ns: &str) -> String {
    let ns = match scope {
        Scope::Cluster => String::new(),
        Scope::Namespaced => format!(
            " in namespace {}",
            resource.namespace.as_deref().unwrap_or(default_ns)
        ),
    };
    match (&resource.name, &resource.label_selector) {
        (Some(name), _) => format!("{} {name}{ns}", resource.kind),
        (None, Some(sel)) => format!("{} objects labelled {sel}{ns}", resource.kind),
        (None, None) => format!("{} objects{ns}", resource.kind),
    }
}

/// How a reference is named in messages when its scope is unknown (for fakes implementing
/// [`ClusterApi`]): a namespace is mentioned only when the rule names one.
pub fn describe_unscoped(resource: &ResourceRef) -> String {
    let scope = if resource.namespace.is_some() {
        Scope::Namespaced
    } else {
        Scope::Cluster
    };
    describe(resource, &scope, DEFAULT_NAMESPACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: &str, name: Option<&str>, ns: Option<&str>, sel: Option<&str>) -> ResourceRef {
        ResourceRef {
            kind: kind.into(),
            name: name.map(Into::into),
            namespace: ns.map(Into::into),
            api_version: None,
            label_selector: sel.map(Into::into),
        }
    }

    #[test]
    fn references_are_described_with_their_namespace_only_when_namespaced() {
        let ns = r("Namespace", Some("test-pods"), None, None);
        assert_eq!(describe(&ns, &Scope::Cluster, "default"), "Namespace test-pods");
        let pod = r("Pod", Some("web"), None, None);
        assert_eq!(
            describe(&pod, &Scope::Namespaced, "default"),
            "Pod web in namespace default"
        );
        let pods = r("Pod", None, Some("a"), Some("app=web"));
        assert_eq!(
            describe(&pods, &Scope::Namespaced, "default"),
            "Pod objects labelled app=web in namespace a"
        );
        assert_eq!(
            describe_unscoped(&pods),
            "Pod objects labelled app=web in namespace a"
        );
    }
}
