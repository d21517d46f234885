//! `subresources.kubevirt.io/v1`, as virt-api serves it: `start`, `stop` and `restart` of
//! VirtualMachines (PUT, with virt-api's 409 cases) and the VMI `portforward` WebSocket.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::Shared;
use crate::error::{ApiError, ApiResult};
use crate::state::WriteOpts;

const GROUP_VERSION: &str = "subresources.kubevirt.io/v1";

fn conflict(name: &str, message: &str) -> ApiError {
    ApiError {
        code: 409,
        reason: "Conflict",
        message: format!("Operation cannot be fulfilled on virtualmachine.kubevirt.io \"{name}\": {message}"),
        details: Some(json!({"name": name, "group": "kubevirt.io", "kind": "virtualmachine"})),
    }
}

fn discovery() -> Value {
    let r = |name: &str, verbs: &[&str], kind: &str| json!({"name": name, "namespaced": true, "kind": kind, "verbs": verbs});
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION, "resources": [
        r("virtualmachines/start", &["update"], "VirtualMachine"),
        r("virtualmachines/stop", &["update"], "VirtualMachine"),
        r("virtualmachines/restart", &["update"], "VirtualMachine"),
        r("virtualmachineinstances/portforward", &["get"], "VirtualMachineInstance"),
    ]})
}

/// Serve a request under `/apis/subresources.kubevirt.io`.
pub(crate) async fn route(shared: &Arc<Shared>, req: Request, segs: &[&str]) -> ApiResult<Response> {
    match segs {
        ["v1"] => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            discovery().to_string(),
        )
            .into_response()),
        ["v1", "namespaces", ns, "virtualmachines", name, action] if req.method() == Method::PUT => {
            vm_action(shared, ns, name, action)?;
            Ok((StatusCode::ACCEPTED, Body::empty()).into_response())
        }
        [
            "v1",
            "namespaces",
            ns,
            "virtualmachineinstances",
            name,
            "portforward",
            port,
            rest @ ..,
        ] if req.method() == Method::GET && matches!(rest, [] | ["tcp"]) => {
            let port: u16 = port
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid port {port:?}")))?;
            super::portforward::serve(shared, req, ns, name, port).await
        }
        _ => Err(ApiError::path_not_found(&format!(
            "/apis/subresources.kubevirt.io/{}",
            segs.join("/")
        ))),
    }
}

fn vm_action(shared: &Arc<Shared>, ns: &str, name: &str, action: &str) -> ApiResult<()> {
    let mut st = shared.lock();
    let vm_rt = st
        .registry
        .get("kubevirt.io", "v1", "virtualmachines")
        .ok_or_else(|| ApiError::path_not_found("virtualmachines"))?;
    let vmi_rt = st
        .registry
        .get("kubevirt.io", "v1", "virtualmachineinstances")
        .ok_or_else(|| ApiError::path_not_found("virtualmachineinstances"))?;
    let vm = (*st.get(&vm_rt, Some(ns), name)?).clone();
    let vmi = st.get(&vmi_rt, Some(ns), name).ok();
    let running = vmi
        .as_ref()
        .is_some_and(|v| !matches!(v["status"]["phase"].as_str(), Some("Failed" | "Succeeded")));
    let strategy = match (
        vm["spec"]["runStrategy"].as_str(),
        vm["spec"]["running"].as_bool(),
    ) {
        (Some(s), _) => s.to_string(),
        (None, Some(true)) => "Always".into(),
        (None, _) => "Halted".into(),
    };
    let mut requests: Vec<Value> = vm["status"]["stateChangeRequests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let vmi_uid = vmi
        .as_ref()
        .map(|v| v["metadata"]["uid"].clone())
        .unwrap_or(Value::Null);
    // Which change of spec.runStrategy (if any) and which state change requests to record.
    let mut new_strategy = None;
    match action {
        "start" => match strategy.as_str() {
            "Always" | "Once" => {
                return Err(conflict(
                    name,
                    &format!("{strategy} does not support manual start requests"),
                ));
            }
            "Halted" => new_strategy = Some("Always"),
            _ => {
                if running {
                    return Err(conflict(name, "VM is already running"));
                }
                requests.push(json!({"action": "Start"}));
            }
        },
        "stop" => match strategy.as_str() {
            "Halted" | "Manual" => {
                if !running && vmi.is_none() {
                    return Err(conflict(name, "VM is not running"));
                }
                requests.push(json!({"action": "Stop", "uid": vmi_uid}));
            }
            _ => new_strategy = Some("Halted"),
        },
        "restart" => {
            if strategy == "Halted" {
                return Err(conflict(name, "Halted does not support manual restart requests"));
            }
            if vmi.is_none() {
                return Err(conflict(name, "VM is not running"));
            }
            requests.push(json!({"action": "Stop", "uid": vmi_uid}));
            requests.push(json!({"action": "Start"}));
        }
        other => return Err(ApiError::path_not_found(&format!("virtualmachines/{other}"))),
    }
    if let Some(s) = new_strategy {
        let mut new = vm.clone();
        if let Some(spec) = new["spec"].as_object_mut() {
            spec.remove("running");
            spec.insert("runStrategy".into(), json!(s));
        }
        st.update(&vm_rt, Some(ns), name, new, false, WriteOpts::default())?;
    }
    if !requests.is_empty() && new_strategy.is_none() {
        let mut new = (*st.get(&vm_rt, Some(ns), name)?).clone();
        if !new["status"].is_object() {
            new["status"] = json!({});
        }
        new["status"]["stateChangeRequests"] = json!(requests);
        st.update(&vm_rt, Some(ns), name, new, true, WriteOpts::default())?;
    }
    drop(st);
    shared.after_write(false);
    Ok(())
}
