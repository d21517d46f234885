//! Who asked for what: the request attributes an API server's authorizer sees (user, verb,
//! API group, resource, subresource, namespace, name), worked out from the path and method the
//! way kube-apiserver's `RequestInfoFactory` does, and an audit log of them in a file (one JSON
//! object per line). Extra bearer tokens give callers their own identity, so a test can run the
//! operator and the gateway each as its ServiceAccount and compare what they asked for with the
//! Helm chart's RBAC rules (`scripts/rbac-proof.py`). Nothing is enforced: every authenticated
//! caller is still admitted. Each line also carries the answer's status `code`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use http::Method;
use serde::Serialize;

/// The identity of the server's own token (and of client certificates).
pub const ADMIN_USER: &str = "admin";

/// One request as RBAC sees it. Non-resource requests (discovery, `/openapi`, `/version`) have
/// `path` and no resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestAttributes {
    /// The caller.
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Plural resource name; empty for a non-resource request.
    pub resource: String,
    /// `status`, `portforward`, ...; empty when none.
    pub subresource: String,
    /// Empty for cluster-scoped requests and lists across namespaces.
    pub namespace: String,
    /// Empty for collections.
    pub name: String,
    /// The URL path of a non-resource request; empty otherwise.
    pub path: String,
}

/// The verb of a request to `path` (already split into segments, without the leading `api` or
/// `apis/{group}` and version) as kube-apiserver names it.
fn verb(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// The attributes of a request by `user` with this method, decoded path segments and query.
pub fn attributes(
    user: &str,
    method: &Method,
    segs: &[&str],
    query: &HashMap<String, String>,
) -> RequestAttributes {
    let non_resource = || RequestAttributes {
        user: user.to_owned(),
        verb: method.as_str().to_ascii_lowercase(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        path: format!("/{}", segs.join("/")),
    };
    let (group, rest) = match segs {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return non_resource(),
    };
    // `/namespaces/{ns}/{resource}/...` is a namespaced request; `/namespaces/{ns}` and its
    // own subresources (`status`, `finalize`) are requests on the Namespace.
    let (namespace, parts): (&str, &[&str]) = match rest {
        ["namespaces", _, next, ..] if group.is_empty() && matches!(*next, "status" | "finalize") => {
            ("", rest)
        }
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (ns, tail),
        _ => ("", rest),
    };
    let (resource, name, subresource) = match parts {
        [resource] => (*resource, "", ""),
        [resource, name] => (*resource, *name, ""),
        [resource, name, sub, ..] => (*resource, *name, *sub),
        [] => return non_resource(),
    };
    // A Namespace requested by name is cluster-scoped; it is its own namespace for RBAC.
    let namespace = if group.is_empty() && resource == "namespaces" && !name.is_empty() {
        name
    } else {
        namespace
    };
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    RequestAttributes {
        user: user.to_owned(),
        verb: verb(method, !name.is_empty(), watch).to_owned(),
        group: group.to_owned(),
        resource: resource.to_owned(),
        subresource: subresource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        path: String::new(),
    }
}

/// Appends one JSON line per request to a file.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (appends to) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Records one request and the status it was answered with. A patch or update that created
    /// its object (201) is also recorded as a `create`: kube-apiserver authorizes both then (a
    /// server-side apply of a missing object needs `create` as well as `patch`). A failed write
    /// is logged, never fails the request.
    pub fn record(&self, attrs: &RequestAttributes, code: u16) {
        let mut lines = Vec::new();
        let mut push = |a: &RequestAttributes| {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            v["code"] = code.into();
            lines.extend(serde_json::to_vec(&v).unwrap_or_default());
            lines.push(b'\n');
        };
        push(attrs);
        if matches!(attrs.verb.as_str(), "patch" | "update") && code == 201 {
            push(&RequestAttributes {
                verb: "create".to_owned(),
                ..attrs.clone()
            });
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&lines) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str, query: &[(&str, &str)]) -> RequestAttributes {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let q = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        attributes("u", &method, &segs, &q)
    }

    fn short(a: &RequestAttributes) -> (String, String, String, String, String, String) {
        (
            a.verb.clone(),
            a.group.clone(),
            a.resource.clone(),
            a.subresource.clone(),
            a.namespace.clone(),
            a.name.clone(),
        )
    }

    fn t(
        v: &str,
        g: &str,
        r: &str,
        s: &str,
        ns: &str,
        n: &str,
    ) -> (String, String, String, String, String, String) {
        (v.into(), g.into(), r.into(), s.into(), ns.into(), n.into())
    }

    #[test]
    fn verbs_follow_the_method_the_name_and_watch() {
        let base = "/apis/cks.io/v1alpha1/namespaces/cks-lab/sessions";
        assert_eq!(
            short(&attrs(Method::GET, base, &[])),
            t("list", "cks.io", "sessions", "", "cks-lab", "")
        );
        assert_eq!(
            short(&attrs(Method::GET, base, &[("watch", "true")])),
            t("watch", "cks.io", "sessions", "", "cks-lab", "")
        );
        assert_eq!(
            short(&attrs(Method::GET, &format!("{base}/s1"), &[])),
            t("get", "cks.io", "sessions", "", "cks-lab", "s1")
        );
        assert_eq!(short(&attrs(Method::POST, base, &[])).0, "create");
        assert_eq!(
            short(&attrs(Method::PUT, &format!("{base}/s1/status"), &[])),
            t("update", "cks.io", "sessions", "status", "cks-lab", "s1")
        );
        assert_eq!(
            short(&attrs(Method::PATCH, &format!("{base}/s1"), &[])).0,
            "patch"
        );
        assert_eq!(
            short(&attrs(Method::DELETE, &format!("{base}/s1"), &[])).0,
            "delete"
        );
        assert_eq!(short(&attrs(Method::DELETE, base, &[])).0, "deletecollection");
    }

    #[test]
    fn namespaces_cluster_scope_and_subresources() {
        assert_eq!(
            short(&attrs(Method::GET, "/api/v1/namespaces/pc-1", &[])),
            t("get", "", "namespaces", "", "pc-1", "pc-1")
        );
        assert_eq!(
            short(&attrs(Method::GET, "/api/v1/namespaces", &[])),
            t("list", "", "namespaces", "", "", "")
        );
        assert_eq!(
            short(&attrs(Method::PUT, "/api/v1/namespaces/pc-1/finalize", &[])),
            t("update", "", "namespaces", "finalize", "pc-1", "pc-1")
        );
        assert_eq!(
            short(&attrs(
                Method::GET,
                "/apis/kubevirt.io/v1/virtualmachines",
                &[("watch", "1")]
            )),
            t("watch", "kubevirt.io", "virtualmachines", "", "", "")
        );
        // The KubeVirt port-forward: the port and protocol after the subresource do not count.
        assert_eq!(
            short(&attrs(
                Method::GET,
                "/apis/subresources.kubevirt.io/v1/namespaces/pc-1/virtualmachineinstances/cp/portforward/22/tcp",
                &[]
            )),
            t(
                "get",
                "subresources.kubevirt.io",
                "virtualmachineinstances",
                "portforward",
                "pc-1",
                "cp"
            )
        );
    }

    #[test]
    fn discovery_is_a_non_resource_request() {
        for p in [
            "/api",
            "/apis",
            "/api/v1",
            "/apis/cks.io/v1alpha1",
            "/version",
            "/openapi/v2",
        ] {
            let a = attrs(Method::GET, p, &[]);
            assert_eq!(a.resource, "", "{p}");
            assert_eq!(a.path, p);
            assert_eq!(a.verb, "get");
        }
    }
}
