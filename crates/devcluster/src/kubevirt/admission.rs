//! What KubeVirt's and CDI's validating webhooks refuse, for the kinds the simulator serves:
//! VirtualMachine run strategy, resources and DataVolume templates (virt-api's VM admitter),
//! DataVolume source and storage, snapshot and restore references and their immutability,
//! and one incomplete restore per VM. The CRD schemas (`crds.rs`) catch what KubeVirt's own
//! CRD schemas catch (malformed quantities, required fields) before these run, as on a real
//! cluster. Messages and field paths are the admitters'; the error is the API server's
//! `admission webhook "NAME" denied the request: ...` 422.

use serde_json::Value;

use crate::builtin::parse_quantity;
use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::ResourceType;
use crate::state::{ListOpts, State};

/// Run strategies virt-api accepts (`WaitAsReceiver` needs a feature gate the simulator lacks).
const RUN_STRATEGIES: [&str; 5] = ["Halted", "Manual", "Always", "RerunOnFailure", "Once"];

fn invalid(field: &str, message: impl Into<String>) -> Cause {
    Cause::new("FieldValueInvalid", field, message)
}

fn denied(webhook: &str, rt: &ResourceType, causes: Vec<Cause>) -> ApiError {
    let message = causes
        .iter()
        .map(|c| c.message.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| serde_json::json!({"reason": c.reason, "message": c.message, "field": c.field}))
        .collect();
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("admission webhook \"{webhook}\" denied the request: {message}"),
        details: Some(serde_json::json!({"group": rt.group, "kind": rt.plural, "causes": causes})),
    }
}

fn show(q: &Value) -> String {
    q.as_str().map_or_else(|| q.to_string(), str::to_string)
}

/// virt-api's checks of a VMI spec's memory and CPU (`validateMemoryRequestsNegativeOrNull`,
/// `validateMemoryLimitsNegativeOrNull`, `validateCPURequestNotNegative`...).
fn vmi_resources(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let res = &spec["domain"]["resources"];
    let value = |part: &str, name: &str| {
        let q = &res[part][name];
        (!q.is_null()).then(|| (parse_quantity(q).unwrap_or(0.0), show(q)))
    };
    let field = |part: &str, name: &str| format!("{path}.domain.resources.{part}.{name}");
    for part in ["requests", "limits"] {
        for name in ["memory", "cpu"] {
            if let Some((n, shown)) = value(part, name)
                && n < 0.0
            {
                let f = field(part, name);
                causes.push(invalid(
                    &f,
                    format!("{f} '{shown}': must be greater than or equal to 0."),
                ));
            }
        }
    }
    if let Some((n, shown)) = value("requests", "memory")
        && n > 0.0
        && n < 1e6
    {
        let f = field("requests", "memory");
        causes.push(invalid(
            &f,
            format!("{f} '{shown}': must be greater than or equal to 1M."),
        ));
    }
    if let (Some((req, req_s)), Some((lim, lim_s))) = (value("requests", "memory"), value("limits", "memory"))
        && lim > 0.0
        && req > lim
    {
        let (rf, lf) = (field("requests", "memory"), field("limits", "memory"));
        causes.push(invalid(
            &rf,
            format!("{rf} '{req_s}' is greater than {lf} '{lim_s}'"),
        ));
    }
}

/// The VM admitter's `validateDataVolume`, for a template or (with `template: false`) a
/// DataVolume of its own.
fn data_volume_spec(spec: &Value, field: &str, causes: &mut Vec<Cause>) -> bool {
    let (pvc, storage) = (spec["pvc"].is_object(), spec["storage"].is_object());
    let storage_field = format!("{field}.PVC.Storage");
    if !pvc && !storage {
        causes.push(invalid(&storage_field, "Missing Data volume PVC or Storage"));
        return false;
    }
    if pvc && storage {
        causes.push(invalid(
            &storage_field,
            "Duplicate storage definition, both target storage and target pvc defined",
        ));
        return false;
    }
    let source = &spec["source"];
    // Without a source, CDI accepts a volume that its PVC's data source fills (a volume
    // populator: `dataSourceRef`, or the older `dataSource`).
    let target = if pvc { &spec["pvc"] } else { &spec["storage"] };
    let external = target["dataSourceRef"].is_object() || target["dataSource"].is_object();
    if !source.is_object() && !spec["sourceRef"].is_object() && !external {
        causes.push(invalid(
            &format!("{field}.source.sourceRef"),
            "Data volume should have either Source, SourceRef, or be externally populated",
        ));
        return false;
    }
    if let Some(kinds) = source.as_object() {
        let n = kinds.values().filter(|v| !v.is_null()).count();
        if n == 0 {
            causes.push(invalid(
                &format!("{field}.source"),
                "Missing dataVolume valid source",
            ));
            return false;
        }
        if n > 1 {
            causes.push(invalid(&format!("{field}.source"), "Multiple dataVolume sources"));
            return false;
        }
    }
    true
}

fn virtual_machine(vm: &Value, causes: &mut Vec<Cause>) {
    let spec = &vm["spec"];
    let template = &spec["template"]["spec"];
    vmi_resources(template, "spec.template.spec", causes);
    for (i, dvt) in spec["dataVolumeTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("spec.dataVolumeTemplate[{i}]");
        let name = dvt["metadata"]["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                format!("{field}.name"),
                format!("'name' field must not be empty for DataVolumeTemplate entry {field}.name."),
            ));
            continue;
        }
        if !data_volume_spec(&dvt["spec"], &field, causes) {
            continue;
        }
        let referenced = template["volumes"].as_array().into_iter().flatten().any(|v| {
            v["dataVolume"]["name"].as_str() == Some(name)
                || v["persistentVolumeClaim"]["claimName"].as_str() == Some(name)
        });
        if !referenced {
            causes.push(Cause::new(
                "FieldValueRequired",
                &field,
                format!(
                    "DataVolumeTemplate entry {field} must be referenced in the VMI template's 'volumes' list"
                ),
            ));
        }
    }
    let running = !spec["running"].is_null();
    match spec["runStrategy"].as_str() {
        None if !running => causes.push(invalid("spec.running", "RunStrategy must be specified")),
        Some(s) if !RUN_STRATEGIES.contains(&s) => {
            causes.push(invalid("spec.runStrategy", format!("Invalid RunStrategy ({s})")));
        }
        _ => {}
    }
}

/// A snapshot's `source` or a restore's `target`: a `kubevirt.io` VirtualMachine.
fn vm_reference(r: &Value, field: &str, causes: &mut Vec<Cause>) {
    match r["apiGroup"].as_str() {
        None => causes.push(Cause::new(
            "FieldValueNotFound",
            format!("{field}.apiGroup"),
            "missing apiGroup",
        )),
        Some(g) if g.split('/').next() != Some("kubevirt.io") => {
            causes.push(invalid(&format!("{field}.apiGroup"), "invalid apiGroup"));
        }
        Some(_) if r["kind"] != "VirtualMachine" => {
            causes.push(invalid(&format!("{field}.kind"), "invalid kind"));
        }
        Some(_) => {}
    }
}

/// A restore is refused while another restore of the same VM is incomplete (a failed one
/// counts until deleted).
fn restore_in_progress(
    st: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    obj: &Value,
) -> ApiResult<Vec<Cause>> {
    let target = obj["spec"]["target"]["name"].as_str().unwrap_or_default();
    let list = st.list(rt, ns, &ListOpts::default())?;
    let busy = list.items.iter().find(|r| {
        r["spec"]["target"]["name"].as_str() == Some(target)
            && r["status"]["complete"] != serde_json::json!(true)
            && r["metadata"]["name"] != obj["metadata"]["name"]
    });
    Ok(busy
        .map(|r| {
            let name = r["metadata"]["name"].as_str().unwrap_or_default();
            vec![invalid(
                "spec.target",
                format!("VirtualMachineRestore {name:?} in progress"),
            )]
        })
        .unwrap_or_default())
}

/// Admission of a create (`old` is `None`) or update of a simulated kind; objects that are
/// being deleted pass, as KubeVirt's admitters let them.
pub(crate) fn admit(
    st: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return Ok(());
    }
    let mut causes = Vec::new();
    let webhook = match (rt.group.as_str(), rt.plural.as_str()) {
        ("kubevirt.io", "virtualmachines") => {
            virtual_machine(obj, &mut causes);
            "virtualmachine-validator.kubevirt.io"
        }
        ("cdi.kubevirt.io", "datavolumes") => {
            data_volume_spec(&obj["spec"], "spec", &mut causes);
            "datavolume-validate.cdi.kubevirt.io"
        }
        ("snapshot.kubevirt.io", "virtualmachinesnapshots") => {
            match old {
                None => vm_reference(&obj["spec"]["source"], "spec.source", &mut causes),
                Some(o) if o["spec"] != obj["spec"] => {
                    causes.push(invalid("spec", "spec in immutable after creation"));
                }
                Some(_) => {}
            }
            "virtualmachinesnapshot-validator.snapshot.kubevirt.io"
        }
        ("snapshot.kubevirt.io", "virtualmachinerestores") => {
            if old.is_none() {
                vm_reference(&obj["spec"]["target"], "spec.target", &mut causes);
                if causes.is_empty() {
                    causes = restore_in_progress(st, rt, ns, obj)?;
                }
            }
            "virtualmachinerestore-validator.snapshot.kubevirt.io"
        }
        _ => return Ok(()),
    };
    if causes.is_empty() {
        Ok(())
    } else {
        Err(denied(webhook, rt, causes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(spec: Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        virtual_machine(&json!({"spec": spec}), &mut causes);
        causes
    }

    #[test]
    fn vm_admitter_checks_run_strategy_resources_and_templates() {
        let ok = json!({"runStrategy": "Halted",
            "dataVolumeTemplates": [{"metadata": {"name": "d"}, "spec": {"source": {"blank": {}}, "storage": {}}}],
            "template": {"spec": {"domain": {"resources": {"requests": {"memory": "2Gi"}}},
                "volumes": [{"name": "root", "dataVolume": {"name": "d"}}]}}});
        assert!(vm(ok.clone()).is_empty());

        let mut bad = ok.clone();
        bad["runStrategy"] = json!("Sometimes");
        assert_eq!(vm(bad)[0].message, "Invalid RunStrategy (Sometimes)");

        let mut none = ok.clone();
        none.as_object_mut().unwrap().remove("runStrategy");
        assert_eq!(vm(none)[0].message, "RunStrategy must be specified");

        let mut negative = ok.clone();
        negative["template"]["spec"]["domain"]["resources"]["requests"]["memory"] = json!("-5Gi");
        assert_eq!(
            vm(negative)[0].message,
            "spec.template.spec.domain.resources.requests.memory '-5Gi': must be greater than or equal to 0."
        );

        let mut tiny = ok.clone();
        tiny["template"]["spec"]["domain"]["resources"]["requests"]["memory"] = json!("512Ki");
        assert!(
            vm(tiny)[0]
                .message
                .ends_with("must be greater than or equal to 1M.")
        );

        let mut over = ok.clone();
        over["template"]["spec"]["domain"]["resources"]["limits"] = json!({"memory": "1Gi"});
        assert!(vm(over)[0].message.contains("is greater than"));

        let mut unreferenced = ok.clone();
        unreferenced["template"]["spec"]["volumes"] = json!([]);
        assert_eq!(
            vm(unreferenced)[0].message,
            "DataVolumeTemplate entry spec.dataVolumeTemplate[0] must be referenced in the VMI template's 'volumes' list"
        );

        let mut no_storage = ok;
        no_storage["dataVolumeTemplates"][0]["spec"] = json!({"source": {"blank": {}}});
        assert_eq!(vm(no_storage)[0].message, "Missing Data volume PVC or Storage");
    }

    /// CDI accepts a DataVolume without `source`/`sourceRef` whose `pvc` or `storage` names a
    /// data source: it is populated externally (a volume populator).
    #[test]
    fn an_externally_populated_data_volume_is_accepted() {
        let populator = json!({"apiGroup": "example.io", "kind": "Populator", "name": "p"});
        for target in ["pvc", "storage"] {
            for field in ["dataSourceRef", "dataSource"] {
                let spec = json!({target: {field: populator}});
                let mut causes = Vec::new();
                assert!(data_volume_spec(&spec, "spec", &mut causes), "{target}.{field}");
                assert_eq!(causes, vec![], "{target}.{field}");
            }
            let mut causes = Vec::new();
            assert!(!data_volume_spec(&json!({target: {}}), "spec", &mut causes));
            assert_eq!(
                causes[0].message,
                "Data volume should have either Source, SourceRef, or be externally populated"
            );
        }
    }

    #[test]
    fn snapshot_and_restore_references_must_name_a_kubevirt_vm() {
        let mut causes = Vec::new();
        vm_reference(
            &json!({"kind": "VirtualMachine", "name": "v"}),
            "spec.source",
            &mut causes,
        );
        vm_reference(
            &json!({"apiGroup": "apps", "kind": "VirtualMachine", "name": "v"}),
            "spec.source",
            &mut causes,
        );
        vm_reference(
            &json!({"apiGroup": "kubevirt.io", "kind": "Pod", "name": "v"}),
            "spec.source",
            &mut causes,
        );
        vm_reference(
            &json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "v"}),
            "spec.source",
            &mut causes,
        );
        let messages: Vec<_> = causes.iter().map(|c| c.message.as_str()).collect();
        assert_eq!(messages, ["missing apiGroup", "invalid apiGroup", "invalid kind"]);
    }
}
