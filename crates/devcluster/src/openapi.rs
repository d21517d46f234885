//! OpenAPI documents: `/openapi/v3` (index and per group-version documents) with CRD schemas and
//! PATCH operations that advertise `fieldValidation`, which is what kubectl needs for `apply`
//! and `explain`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, ResourceType};

/// The schema name the real server uses: reversed group domain, version, kind.
pub fn definition_name(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else if rt.crd.is_some() {
        rt.group.split('.').rev().collect::<Vec<_>>().join(".")
    } else {
        format!("io.k8s.api.{}", rt.group.split('.').next().unwrap_or_default())
    };
    format!("{group}.{}.{}", rt.version, rt.kind)
}

fn gvk(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
}

/// The schema of a resource: the CRD's openAPIV3Schema, or an open object for built-ins.
pub fn resource_schema(rt: &ResourceType) -> Value {
    let mut schema = rt
        .crd
        .as_ref()
        .and_then(|c| c.schema.clone())
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(m) = schema.as_object_mut() {
        m.insert("x-kubernetes-group-version-kind".into(), json!([gvk(rt)]));
        let props = m.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.entry("apiVersion").or_insert_with(|| json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            p.entry("kind").or_insert_with(|| json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            p.insert("metadata".into(), json!({"type": "object", "description": "Standard object's metadata.", "x-kubernetes-preserve-unknown-fields": true}));
        }
    }
    schema
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operations(rt: &ResourceType) -> BTreeMap<String, Value> {
    let prefix = rt.path_prefix();
    let base = if rt.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
    } else {
        format!("{prefix}/{}", rt.plural)
    };
    let def = definition_name(rt);
    let body =
        json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{def}")}}}});
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{def}")}}}}});
    let op = |action: &str| {
        json!({"operationId": format!("{action}{}", rt.kind), "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk(rt), "responses": ok.clone()})
    };
    let mut patch = op("patch");
    patch["parameters"] = json!([
        param("dryRun"),
        param("fieldManager"),
        param("fieldValidation"),
        param("force")
    ]);
    patch["requestBody"] = json!({"content": {
        "application/apply-patch+yaml": {"schema": {"type": "object"}},
        "application/json-patch+json": {"schema": {"type": "object"}},
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/strategic-merge-patch+json": {"schema": {"type": "object"}}}});
    let mut put = op("put");
    put["parameters"] = json!([param("dryRun"), param("fieldManager"), param("fieldValidation")]);
    put["requestBody"] = body.clone();
    let mut post = op("post");
    post["parameters"] = json!([param("dryRun"), param("fieldManager"), param("fieldValidation")]);
    post["requestBody"] = body;
    let mut paths = BTreeMap::new();
    paths.insert(
        base.clone(),
        json!({"get": op("list"), "post": post, "delete": op("deletecollection")}),
    );
    paths.insert(
        format!("{base}/{{name}}"),
        json!({"get": op("get"), "put": put, "patch": patch, "delete": op("delete")}),
    );
    paths
}

/// The OpenAPI v3 document of one group version.
pub fn v3_document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = registry.resources(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut paths = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    for rt in &resources {
        paths.extend(operations(rt));
        schemas.insert(definition_name(rt), resource_schema(rt));
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths, "components": {"schemas": schemas}}),
    )
}

fn hash(v: &Value) -> String {
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

fn json_ok(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Serve `/openapi/...`.
pub fn serve(registry: &Registry, path: &str, _headers: &HeaderMap) -> ApiResult<Response> {
    if path == "/openapi/v3" {
        let mut index = BTreeMap::new();
        for (group, versions) in registry.groups() {
            for v in versions {
                let (key, doc) = if group.is_empty() {
                    (format!("api/{v}"), v3_document(registry, "", v))
                } else {
                    (format!("apis/{group}/{v}"), v3_document(registry, group, v))
                };
                if let Some(doc) = doc {
                    index.insert(
                        key.clone(),
                        json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(&doc))}),
                    );
                }
            }
        }
        return Ok(json_ok(&json!({"paths": index})));
    }
    let rest = path
        .strip_prefix("/openapi/v3/")
        .ok_or_else(|| ApiError::path_not_found(path))?;
    let segs: Vec<&str> = rest.split('/').collect();
    let doc = match segs.as_slice() {
        ["api", v] => v3_document(registry, "", v),
        ["apis", g, v] => v3_document(registry, g, v),
        _ => None,
    };
    doc.map(|d| json_ok(&d))
        .ok_or_else(|| ApiError::path_not_found(path))
}
