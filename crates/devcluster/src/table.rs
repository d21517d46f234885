//! Server-side `Table` output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), the form
//! `kubectl get` asks for: CRD `additionalPrinterColumns` evaluated as JSONPath, and NAME / AGE
//! plus a few useful columns for built-ins.

use std::sync::Arc;

use jsonpath_rust::JsonPath;
use serde_json::{Value, json};

use crate::registry::ResourceType;

/// Whether the request's `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// Kubernetes' short human-readable duration (`5s`, `3m12s`, `4h`, `2d3h`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    format!("{}y", hours / 24 / 365)
}

fn age(ts: &str) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<invalid>".into(),
    }
}

struct Column {
    name: String,
    ty: String,
    path: String,
    description: String,
    priority: i64,
}

fn columns(rt: &ResourceType) -> Vec<Column> {
    let name = Column {
        name: "Name".into(),
        ty: "string".into(),
        path: ".metadata.name".into(),
        description: "Name must be unique within a namespace.".into(),
        priority: 0,
    };
    let age = || Column {
        name: "Age".into(),
        ty: "date".into(),
        path: ".metadata.creationTimestamp".into(),
        description:
            "CreationTimestamp is a timestamp representing the server time when this object was created."
                .into(),
        priority: 0,
    };
    let mut cols = vec![name];
    if let Some(crd) = &rt.crd {
        if crd.printer_columns.is_empty() {
            cols.push(age());
        }
        for c in &crd.printer_columns {
            cols.push(Column {
                name: c["name"].as_str().unwrap_or_default().into(),
                ty: c["type"].as_str().unwrap_or("string").into(),
                path: c["jsonPath"].as_str().unwrap_or_default().into(),
                description: c["description"].as_str().unwrap_or_default().into(),
                priority: c["priority"].as_i64().unwrap_or(0),
            });
        }
    } else {
        for (n, ty, path) in &rt.columns {
            cols.push(Column {
                name: (*n).into(),
                ty: (*ty).into(),
                path: (*path).into(),
                description: String::new(),
                priority: 0,
            });
        }
        if !rt.columns.iter().any(|(_, ty, _)| *ty == "date") {
            cols.push(age());
        }
    }
    cols
}

fn cell(obj: &Value, col: &Column) -> Value {
    let path = if col.path.starts_with('$') {
        col.path.clone()
    } else {
        format!("${}", col.path)
    };
    let found = obj
        .query(&path)
        .ok()
        .and_then(|r| r.first().map(|v| (*v).clone()));
    match found {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if col.ty == "date" => Value::String(age(&s)),
        Some(v @ (Value::Number(_) | Value::Bool(_))) if col.ty != "string" => v,
        Some(Value::String(s)) => Value::String(s),
        Some(other) => Value::String(other.to_string()),
    }
}

/// A `meta.k8s.io/v1` Table of the given objects.
pub fn table(rt: &ResourceType, objs: &[Arc<Value>], list_meta: Value, include_object: &str) -> Value {
    let cols = columns(rt);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": if c.ty == "date" { "string" } else { c.ty.as_str() },
                "format": if c.name == "Name" { "name" } else { "" },
                "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols.iter().map(|c| cell(o, c)).collect();
            let mut row = json!({"cells": cells});
            match include_object {
                "None" => {}
                "Object" => row["object"] = (**o).clone(),
                _ => {
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"].clone()})
                }
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(3600 * 24 * 3 + 3600), "3d1h");
    }

    #[test]
    fn wants_table_only_when_first_choice() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
