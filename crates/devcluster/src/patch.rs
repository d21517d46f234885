//! Patch application: JSON merge patch and JSON patch through the `json-patch` crate, strategic
//! merge patch with list merge keys for the built-in fields our code and kubectl patch, and the
//! merge used by server-side apply.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// The patch types the server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    /// Map a request `Content-Type` to a patch type.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }
}

/// Apply an RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, patch: &Value) -> ApiResult<()> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    for op in p.0 {
        // Like the real server, `test` of a missing path against null succeeds (kube-runtime's
        // finalizer helper relies on this to add the first finalizer).
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && target.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(target, &[op])
            .map_err(|e| ApiError::unsupported_media_type_or_invalid(e.to_string()))?;
    }
    Ok(())
}

impl ApiError {
    fn unsupported_media_type_or_invalid(message: String) -> Self {
        // The real server reports a failed JSON patch operation as 422 with this reason.
        Self {
            code: 422,
            reason: "Invalid",
            message,
            details: None,
        }
    }
}

/// Apply an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The key that identifies elements of a built-in list field, when it is merged rather than replaced.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "envFrom" => Some("name"),
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "ports" => {
            if sample.and_then(|s| s.get("containerPort")).is_some() {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// List fields of primitives that merge as sets.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// Apply a strategic merge patch (or, with `apply`, the merge server-side apply performs:
/// the same list semantics, and `null` is a value rather than a deletion).
pub fn strategic_merge(target: &mut Value, patch: &Value, apply: bool) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = pm.clone();
        clean.remove("$patch");
        *target = Value::Object(clean);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tm = target.as_object_mut().expect("just made an object");
    for (k, pv) in pm {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (tm.get_mut(field), pv.as_array()) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if pv.is_null() && !apply {
            tm.remove(k);
            continue;
        }
        if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
            tm.remove(k);
            continue;
        }
        match (tm.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => strategic_merge(tv, pv, apply),
            (Some(Value::Array(tl)), Value::Array(pl)) => merge_list(k, tl, pl, apply),
            _ => {
                let mut v = pv.clone();
                strip_directives(&mut v);
                tm.insert(k.clone(), v);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => {
            a.retain(|x| x.get("$patch").is_none());
            a.iter_mut().for_each(strip_directives);
        }
        _ => {}
    }
}

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value], apply: bool) {
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .collect();
        return;
    }
    if is_set_list(field) {
        for p in patch {
            if !target.contains(p) {
                target.push(p.clone());
            }
        }
        return;
    }
    let Some(key) = merge_key(field, patch.first().or(target.first())) else {
        let mut v = Value::Array(patch.to_vec());
        strip_directives(&mut v);
        *target = v.as_array().cloned().unwrap_or_default();
        return;
    };
    for p in patch {
        let Some(id) = p.get(key) else { continue };
        let pos = target.iter().position(|t| t.get(key) == Some(id));
        if p.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                target.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => strategic_merge(&mut target[i], p, apply),
            None => {
                let mut v = p.clone();
                strip_directives(&mut v);
                target.push(v);
            }
        }
    }
}

/// Remove from `target` what a field manager applied before (`prev`) but no longer applies (`now`).
/// The object's identity (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`) stays;
/// a `name` or `kind` deeper down is a field like any other.
pub fn remove_unapplied(target: &mut Value, prev: &Value, now: &Value) {
    remove_unapplied_at(target, prev, now, &["apiVersion", "kind"]);
}

fn remove_unapplied_at(target: &mut Value, prev: &Value, now: &Value, identity: &[&str]) {
    let (Some(tm), Some(pm)) = (target.as_object_mut(), prev.as_object()) else {
        return;
    };
    for (k, pv) in pm {
        if identity.contains(&k.as_str()) {
            continue;
        }
        // Only the top level passes identity keys down, and only into `metadata`.
        let inner: &[&str] = if !identity.is_empty() && k == "metadata" {
            &["name", "namespace"]
        } else {
            &[]
        };
        match now.get(k) {
            // A map the manager stopped applying loses only the leaves it applied; other
            // writers' fields in it stay.
            None if pv.is_object() && tm.get(k).is_some_and(Value::is_object) => {
                let tv = tm.get_mut(k).expect("checked");
                remove_unapplied_at(tv, pv, &Value::Object(Map::new()), inner);
                let now_empty = tv.as_object().is_some_and(Map::is_empty);
                if now_empty && pv.as_object().is_some_and(|m| !m.is_empty()) {
                    tm.remove(k);
                }
            }
            None => {
                tm.remove(k);
            }
            Some(nv) => {
                if let (Some(tv), true) = (tm.get_mut(k), pv.is_object() && nv.is_object()) {
                    remove_unapplied_at(tv, pv, nv, inner);
                } else if let (Some(Value::Array(tl)), Value::Array(pl), Value::Array(nl)) =
                    (tm.get_mut(k), pv, nv)
                {
                    if is_set_list(k) {
                        tl.retain(|x| !pl.contains(x) || nl.contains(x));
                    } else if let Some(key) = merge_key(k, pl.first()) {
                        tl.retain(|x| {
                            let id = x.get(key);
                            !pl.iter().any(|p| p.get(key) == id) || nl.iter().any(|n| n.get(key) == id)
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_env_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "E1", "value": "1"}]},
            {"name": "b", "image": "y"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "x2", "env": [{"name": "E2", "value": "2"}]},
            {"name": "c", "image": "z"},
            {"name": "b", "$patch": "delete"}
        ], "$setElementOrder/containers": [{"name": "a"}]}});
        strategic_merge(&mut pod, &patch, false);
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x2", "env": [{"name": "E1", "value": "1"}, {"name": "E2", "value": "2"}]},
                {"name": "c", "image": "z"}
            ]}})
        );
    }

    #[test]
    fn strategic_merge_conditions_by_type_and_null_deletes() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let patch = json!({"metadata": {"labels": {"a": null}, "finalizers": ["y"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "True"}]}});
        strategic_merge(&mut obj, &patch, false);
        assert_eq!(obj["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(obj["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(obj["status"]["conditions"][0]["status"], "True");
        assert_eq!(obj["status"]["conditions"][1]["type"], "Other");
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let mut obj = json!({"data": {"a": "1", "b": "2", "other": "x"}});
        let prev = json!({"data": {"a": "1", "b": "2"}});
        let now = json!({"data": {"a": "1"}});
        remove_unapplied(&mut obj, &prev, &now);
        strategic_merge(&mut obj, &now, true);
        assert_eq!(obj, json!({"data": {"a": "1", "other": "x"}}));
    }

    #[test]
    fn apply_removes_a_nested_object_with_a_name_the_manager_stopped_applying() {
        // `name` is an identity only in `metadata` (and `kind`/`apiVersion` at the top): a
        // `status.claim` with a `name` goes whole, as on kube-apiserver.
        let mut obj = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "x", "namespace": "n"},
            "status": {"phase": "Assigned", "claim": {"name": "alice", "since": "t"}}});
        let prev = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "x", "namespace": "n"},
            "status": {"phase": "Assigned", "claim": {"name": "alice", "since": "t"}}});
        let now = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "x"}, "status": {"phase": "Resetting"}});
        remove_unapplied(&mut obj, &prev, &now);
        strategic_merge(&mut obj, &now, true);
        assert_eq!(
            obj,
            json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "x", "namespace": "n"},
                "status": {"phase": "Resetting"}})
        );
        let mut obj = json!({"spec": {"ref": {"name": "a", "kind": "Secret"}, "keep": 1}});
        remove_unapplied(
            &mut obj,
            &json!({"spec": {"ref": {"name": "a", "kind": "Secret"}}}),
            &json!({}),
        );
        assert_eq!(obj, json!({"spec": {"keep": 1}}));
    }

    #[test]
    fn json_patch_test_of_a_missing_path_against_null_passes() {
        let mut obj = json!({"metadata": {}});
        json_patch(
            &mut obj,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]),
        )
        .unwrap();
        assert_eq!(obj["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn json_patch_failures_are_invalid() {
        let mut obj = json!({"a": 1});
        let err = json_patch(&mut obj, &json!([{"op": "test", "path": "/a", "value": 2}])).unwrap_err();
        assert_eq!(err.code, 422);
        json_patch(&mut obj, &json!([{"op": "replace", "path": "/a", "value": 2}])).unwrap();
        assert_eq!(obj["a"], 2);
    }
}
