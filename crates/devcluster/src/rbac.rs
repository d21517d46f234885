//! RBAC enforcement, simply, for callers with their own identity (`Options::enforce_rbac`): a
//! request is allowed when a rule of a Role (through a RoleBinding in the request's namespace)
//! or a ClusterRole (through a ClusterRoleBinding, or a RoleBinding in the request's namespace)
//! bound to the caller allows its verb, API group, resource (with subresource) and name, as
//! kube-apiserver's RBAC authorizer decides. A server-side apply that would create its object
//! needs `create` too (a merge or JSON patch or an update of a missing object creates nothing:
//! it is a 404, as from kube-apiserver, whatever the caller may create). Discovery and version requests are allowed to everyone (Kubernetes'
//! `system:discovery`). Subjects are ServiceAccounts (`system:serviceaccount:NS:NAME`) and
//! Users; the server's own token (`admin`) is never checked. Aggregated ClusterRoles and groups
//! other than `system:authenticated` are not modelled.

use serde_json::Value;

use crate::audit::RequestAttributes;
use crate::state::{ListOpts, State};

const RBAC: &str = "rbac.authorization.k8s.io";

fn list(st: &State, plural: &str, ns: Option<&str>) -> Vec<std::sync::Arc<Value>> {
    let Some(rt) = st.registry.get(RBAC, "v1", plural) else {
        return Vec::new();
    };
    st.list(&rt, ns, &ListOpts::default())
        .map(|l| l.items)
        .unwrap_or_default()
}

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn binds(binding: &Value, user: &str) -> bool {
    binding["subjects"].as_array().into_iter().flatten().any(|s| {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str() {
            Some("ServiceAccount") => {
                let ns = s["namespace"].as_str().unwrap_or_default();
                user == format!("system:serviceaccount:{ns}:{name}")
            }
            Some("User") => user == name,
            Some("Group") => name == "system:authenticated",
            _ => false,
        }
    })
}

fn rule_allows(rule: &Value, a: &RequestAttributes, verb: &str) -> bool {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let has = |field: &str, want: &str| strs(&rule[field]).any(|v| v == want || v == "*");
    let names: Vec<&str> = strs(&rule["resourceNames"]).collect();
    has("apiGroups", &a.group)
        && has("resources", &resource)
        && has("verbs", verb)
        && (names.is_empty() || names.contains(&a.name.as_str()))
}

/// The rules bound to `user` that apply to a request in `namespace` (empty: cluster scope).
fn rules(st: &State, user: &str, namespace: &str) -> Vec<Value> {
    let role = |kind: &str, name: &str, ns: &str| -> Option<std::sync::Arc<Value>> {
        let (plural, ns) = if kind == "ClusterRole" {
            ("clusterroles", None)
        } else {
            ("roles", Some(ns))
        };
        let rt = st.registry.get(RBAC, "v1", plural)?;
        st.get(&rt, ns, name).ok()
    };
    let mut out = Vec::new();
    let mut add = |binding: &Value, ns: &str| {
        if !binds(binding, user) {
            return;
        }
        let r = &binding["roleRef"];
        if let Some(role) = role(
            r["kind"].as_str().unwrap_or_default(),
            r["name"].as_str().unwrap_or_default(),
            ns,
        ) {
            out.extend(role["rules"].as_array().into_iter().flatten().cloned());
        }
    };
    for b in list(st, "clusterrolebindings", None) {
        add(&b, "");
    }
    if !namespace.is_empty() {
        for b in list(st, "rolebindings", Some(namespace)) {
            add(&b, namespace);
        }
    }
    out
}

/// Whether the object a request names exists (a patch or update of a missing one creates it).
fn exists(st: &State, a: &RequestAttributes) -> bool {
    let Some(versions) = st.registry.groups().get(&a.group) else {
        return false;
    };
    versions.iter().any(|v| {
        st.registry.get(&a.group, v, &a.resource).is_some_and(|rt| {
            let ns = (!a.namespace.is_empty() && rt.namespaced).then_some(a.namespace.as_str());
            st.get(&rt, ns, &a.name).is_ok()
        })
    })
}

/// `Err(message)` when RBAC refuses the request (message as kube-apiserver words it); `apply`:
/// the request is a server-side apply patch.
pub fn authorize(st: &State, a: &RequestAttributes, apply: bool) -> Result<(), String> {
    if a.resource.is_empty() {
        let discovery = ["/api", "/apis", "/openapi", "/version"]
            .iter()
            .any(|p| a.path == *p || a.path.starts_with(&format!("{p}/")));
        return if discovery && a.verb == "get" {
            Ok(())
        } else {
            Err(format!(
                "forbidden: User \"{}\" cannot {} path \"{}\"",
                a.user, a.verb, a.path
            ))
        };
    }
    let rules = rules(st, &a.user, &a.namespace);
    let mut verbs = vec![a.verb.as_str()];
    if apply && a.verb == "patch" && a.subresource.is_empty() && !a.name.is_empty() && !exists(st, a) {
        verbs.push("create");
    }
    for verb in verbs {
        if !rules.iter().any(|r| rule_allows(r, a, verb)) {
            let resource = if a.subresource.is_empty() {
                a.resource.clone()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            let what = if a.name.is_empty() {
                resource.clone()
            } else {
                format!("{resource} \"{}\"", a.name)
            };
            let scope = if a.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{}\"", a.namespace)
            };
            return Err(format!(
                "{what} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
                a.user, a.group
            ));
        }
    }
    Ok(())
}
