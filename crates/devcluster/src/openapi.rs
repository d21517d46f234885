//! OpenAPI documents: `/openapi/v3` (index and per group-version documents) with CRD schemas and
//! PATCH operations that advertise `fieldValidation`, which is what kubectl needs for `apply`
//! and `explain`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, ResourceType};

/// Schemas of the built-in kinds, from k8s-openapi's schemars implementations (the same
/// definitions and descriptions the real server publishes), with every type they reference.
struct Builtins {
    /// (group, version, kind) → definition name.
    names: BTreeMap<(String, String, String), String>,
    definitions: serde_json::Map<String, Value>,
}

fn builtins() -> &'static Builtins {
    static BUILTINS: OnceLock<Builtins> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        use k8s_openapi::api::{apps, coordination, core, events, networking, rbac};
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let mut names = BTreeMap::new();
        macro_rules! kinds {
            ($($group:literal, $version:literal, $kind:literal => $ty:ty;)*) => {$(
                generator.subschema_for::<$ty>();
                names.insert(
                    ($group.to_string(), $version.to_string(), $kind.to_string()),
                    <$ty as schemars::JsonSchema>::schema_name().into_owned(),
                );
            )*};
        }
        kinds! {
            "", "v1", "Namespace" => core::v1::Namespace;
            "", "v1", "Secret" => core::v1::Secret;
            "", "v1", "ConfigMap" => core::v1::ConfigMap;
            "", "v1", "Service" => core::v1::Service;
            "", "v1", "ServiceAccount" => core::v1::ServiceAccount;
            "", "v1", "Event" => core::v1::Event;
            "events.k8s.io", "v1", "Event" => events::v1::Event;
            "", "v1", "ResourceQuota" => core::v1::ResourceQuota;
            "", "v1", "LimitRange" => core::v1::LimitRange;
            "", "v1", "Pod" => core::v1::Pod;
            "", "v1", "Node" => core::v1::Node;
            "", "v1", "PersistentVolumeClaim" => core::v1::PersistentVolumeClaim;
            "networking.k8s.io", "v1", "NetworkPolicy" => networking::v1::NetworkPolicy;
            "coordination.k8s.io", "v1", "Lease" => coordination::v1::Lease;
            "apps", "v1", "Deployment" => apps::v1::Deployment;
            "rbac.authorization.k8s.io", "v1", "Role" => rbac::v1::Role;
            "rbac.authorization.k8s.io", "v1", "RoleBinding" => rbac::v1::RoleBinding;
            "rbac.authorization.k8s.io", "v1", "ClusterRole" => rbac::v1::ClusterRole;
            "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding" => rbac::v1::ClusterRoleBinding;
            "apiextensions.k8s.io", "v1", "CustomResourceDefinition" => apiextensions::v1::CustomResourceDefinition;
        }
        let mut definitions = generator.take_definitions(true);
        for ((group, version, kind), name) in &names {
            if let Some(m) = definitions.get_mut(name).and_then(Value::as_object_mut) {
                m.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "version": version, "kind": kind}]),
                );
            }
        }
        Builtins { names, definitions }
    })
}

/// The schema name the real server uses: reversed group domain, version, kind.
pub fn definition_name(rt: &ResourceType) -> String {
    if rt.crd.is_none() {
        let key = (rt.group.clone(), rt.version.clone(), rt.kind.clone());
        if let Some(name) = builtins().names.get(&key) {
            return name.clone();
        }
    }
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
    // Strategic merge is deliberately not advertised: kubectl would then compute strategic
    // patches from these (opaque) schemas; without it, kubectl falls back to JSON merge patches
    // for custom resources and to its compiled-in types for built-ins, as with a real server.
    patch["requestBody"] = json!({"content": {
        "application/apply-patch+yaml": {"schema": {"type": "object"}},
        "application/json-patch+json": {"schema": {"type": "object"}},
        "application/merge-patch+json": {"schema": {"type": "object"}}}});
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
        if rt.crd.is_none()
            && builtins()
                .names
                .contains_key(&(rt.group.clone(), rt.version.clone(), rt.kind.clone()))
        {
            // Built-in kinds come with every definition they reference.
            schemas.extend(builtins().definitions.iter().map(|(k, v)| (k.clone(), v.clone())));
        } else {
            schemas.insert(definition_name(rt), resource_schema(rt));
        }
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

/// The Swagger 2.0 document: definitions for every custom resource version. Built-in kinds are
/// left out on purpose: older kubectl then computes strategic merge patches from its compiled-in
/// types (it crashes on schemas without the patch-strategy extensions) and skips client-side
/// validation for them.
pub fn v2_document(registry: &Registry) -> Value {
    let mut definitions = BTreeMap::new();
    for rt in registry.all().filter(|rt| rt.crd.is_some()) {
        let mut schema = resource_schema(rt);
        to_v2(&mut schema);
        definitions.insert(definition_name(rt), schema);
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "definitions": definitions})
}

/// Drop what Swagger 2.0 cannot express, as the real server does when publishing CRD schemas.
fn to_v2(schema: &mut Value) {
    let Some(m) = schema.as_object_mut() else { return };
    for k in ["nullable", "oneOf", "anyOf", "not", "x-kubernetes-validations"] {
        m.remove(k);
    }
    if m.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        m.remove("type");
    }
    if let Some(Value::String(r)) = m.get_mut("$ref") {
        *r = r.replace("#/components/schemas/", "#/definitions/");
    }
    // Recurse through schema positions only: property names are data, not keywords.
    if let Some(props) = m.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(to_v2);
    }
    for k in ["items", "additionalProperties"] {
        if let Some(sub) = m.get_mut(k) {
            to_v2(sub);
        }
    }
    if let Some(all) = m.get_mut("allOf").and_then(Value::as_array_mut) {
        all.iter_mut().for_each(to_v2);
    }
}

/// Serve `/openapi/...`.
pub fn serve(registry: &Registry, path: &str, headers: &HeaderMap) -> ApiResult<Response> {
    if path == "/openapi/v2" {
        let doc = v2_document(registry);
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept.contains("protobuf") {
            let body = proto::document(&doc);
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, PROTO_V2)], body).into_response());
        }
        return Ok(json_ok(&doc));
    }
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

// The media type the real server answers with (`@` is not valid in a Content-Type).
const PROTO_V2: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Encoding of a Swagger 2.0 JSON document as gnostic's `openapi.v2.Document` protobuf, the form
/// older kubectl clients require for `/openapi/v2`. Only the messages a document of schemas
/// needs are written: Document, Info, Definitions, NamedSchema, Schema and its helpers.
mod proto {
    use serde_json::Value;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        tag(out, field, 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        bytes(out, field, s.as_bytes());
    }

    fn double(out: &mut Vec<u8>, field: u32, d: f64) {
        tag(out, field, 1);
        out.extend_from_slice(&d.to_le_bytes());
    }

    fn int(out: &mut Vec<u8>, field: u32, v: u64) {
        tag(out, field, 0);
        varint(out, v);
    }

    /// `Any` with its `yaml` field; JSON text is valid YAML.
    fn any(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 2, &v.to_string());
        out
    }

    fn named_any(name: &str, v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 1, name);
        bytes(&mut out, 2, &any(v));
        out
    }

    fn schema(s: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(m) = s.as_object() else { return out };
        if let Some(r) = m.get("$ref").and_then(Value::as_str) {
            string(&mut out, 1, &r.replace("#/components/schemas/", "#/definitions/"));
        }
        for (key, field) in [("format", 2), ("title", 3), ("description", 4), ("pattern", 13)] {
            if let Some(v) = m.get(key).and_then(Value::as_str) {
                string(&mut out, field, v);
            }
        }
        if let Some(d) = m.get("default") {
            bytes(&mut out, 5, &any(d));
        }
        for (key, field) in [("multipleOf", 6), ("maximum", 7), ("minimum", 9)] {
            if let Some(v) = m.get(key).and_then(Value::as_f64) {
                double(&mut out, field, v);
            }
        }
        for (key, field) in [
            ("exclusiveMaximum", 8),
            ("exclusiveMinimum", 10),
            ("uniqueItems", 16),
        ] {
            if m.get(key).and_then(Value::as_bool) == Some(true) {
                int(&mut out, field, 1);
            }
        }
        for (key, field) in [
            ("maxLength", 11),
            ("minLength", 12),
            ("maxItems", 14),
            ("minItems", 15),
            ("maxProperties", 17),
            ("minProperties", 18),
        ] {
            if let Some(v) = m.get(key).and_then(Value::as_u64) {
                int(&mut out, field, v);
            }
        }
        for r in m.get("required").and_then(Value::as_array).into_iter().flatten() {
            if let Some(r) = r.as_str() {
                string(&mut out, 19, r);
            }
        }
        for e in m.get("enum").and_then(Value::as_array).into_iter().flatten() {
            bytes(&mut out, 20, &any(e));
        }
        match m.get("additionalProperties") {
            Some(Value::Bool(b)) => {
                let mut item = Vec::new();
                int(&mut item, 2, u64::from(*b));
                bytes(&mut out, 21, &item);
            }
            Some(ap @ Value::Object(_)) => {
                let mut item = Vec::new();
                bytes(&mut item, 1, &schema(ap));
                bytes(&mut out, 21, &item);
            }
            _ => {}
        }
        if let Some(t) = m.get("type").and_then(Value::as_str) {
            let mut item = Vec::new();
            string(&mut item, 1, t);
            bytes(&mut out, 22, &item);
        }
        if let Some(items) = m.get("items").filter(|i| i.is_object()) {
            let mut item = Vec::new();
            bytes(&mut item, 1, &schema(items));
            bytes(&mut out, 23, &item);
        }
        for a in m.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            bytes(&mut out, 24, &schema(a));
        }
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            let mut p = Vec::new();
            for (name, sub) in props {
                let mut named = Vec::new();
                string(&mut named, 1, name);
                bytes(&mut named, 2, &schema(sub));
                bytes(&mut p, 1, &named);
            }
            bytes(&mut out, 25, &p);
        }
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
            bytes(&mut out, 31, &named_any(k, v));
        }
        out
    }

    /// Encode a Swagger 2.0 document (swagger, info, definitions).
    pub fn document(doc: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 1, doc["swagger"].as_str().unwrap_or("2.0"));
        let mut info = Vec::new();
        string(&mut info, 1, doc["info"]["title"].as_str().unwrap_or_default());
        string(&mut info, 2, doc["info"]["version"].as_str().unwrap_or_default());
        bytes(&mut out, 2, &info);
        let mut defs = Vec::new();
        for (name, s) in doc["definitions"].as_object().into_iter().flatten() {
            let mut named = Vec::new();
            string(&mut named, 1, name);
            bytes(&mut named, 2, &schema(s));
            bytes(&mut defs, 1, &named);
        }
        bytes(&mut out, 9, &defs);
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn encodes_fields_with_their_numbers_and_wire_types() {
            let doc = json!({"swagger": "2.0", "info": {"title": "T", "version": "v"},
                "definitions": {"a.B": {"type": "object", "minimum": 1.0}}});
            let b = document(&doc);
            // swagger = 1 (length-delimited): tag 0x0a, len 3, "2.0"
            assert_eq!(&b[..5], &[0x0a, 3, b'2', b'.', b'0']);
            // info = 2: tag 0x12 then title (0x0a "T") and version (0x12 "v")
            assert_eq!(&b[5..12], &[0x12, 6, 0x0a, 1, b'T', 0x12, 1]);
            // definitions = 9 → tag 0x4a
            assert_eq!(b[13], 0x4a);
            // minimum = 9 as a double: tag (9 << 3) | 1 = 0x49
            assert!(
                b.windows(9)
                    .any(|w| w[0] == 0x49 && w[1..] == 1.0f64.to_le_bytes())
            );
        }
    }
}
