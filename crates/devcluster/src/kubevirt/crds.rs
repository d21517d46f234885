//! CustomResourceDefinitions of the KubeVirt, CDI and snapshot kinds the simulator serves:
//! the fields cks-lab and kubectl use are declared, everything else is kept
//! (`x-kubernetes-preserve-unknown-fields`), and every kind has a status subresource.

use serde_json::{Value, json};

fn open() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn col(name: &str, ty: &str, path: &str) -> Value {
    json!({"name": name, "type": ty, "jsonPath": path})
}

#[allow(clippy::too_many_arguments)]
fn crd(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    short: &[&str],
    categories: &[&str],
    spec: Value,
    columns: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.to_lowercase(),
                "listKind": format!("{kind}List"),
                "shortNames": short,
                "categories": categories,
            },
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {"spec": spec, "status": open()},
                }},
            }],
        },
    })
}

/// KubeVirt's pattern for `resource.Quantity` fields (int-or-string).
const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

fn quantity() -> Value {
    json!({"anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN, "x-kubernetes-int-or-string": true})
}

fn quantities() -> Value {
    json!({"type": "object", "additionalProperties": quantity()})
}

/// `resources` with `requests` and `limits` (the PVC's and the VMI domain's).
fn resources() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
        "properties": {"requests": quantities(), "limits": quantities()}})
}

/// A VMI spec: `domain` is required; its resources and guest memory are quantities.
fn vmi_spec() -> Value {
    json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "required": ["domain"],
        "properties": {"domain": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": {
                "resources": resources(),
                "memory": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"guest": quantity()}},
            },
        }},
    })
}

/// A DataVolume spec: the claim's requested storage is a quantity.
fn dv_spec() -> Value {
    let claim = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
        "properties": {"resources": resources()}});
    json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {"source": open(), "sourceRef": open(), "pvc": claim, "storage": claim},
    })
}

/// A snapshot's source or a restore's target (`TypedLocalObjectReference`).
fn vm_ref() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
        "required": ["kind", "name"],
        "properties": {"apiGroup": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"}}})
}

/// The CRDs, in creation order.
pub fn all() -> Vec<Value> {
    let age = col("Age", "date", ".metadata.creationTimestamp");
    // KubeVirt's CRD schema leaves runStrategy a plain string (virt-api's webhook refuses
    // unknown values) and declares quantities as int-or-string with the quantity pattern.
    let vm_spec = json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "required": ["template"],
        "properties": {
            "runStrategy": {"type": "string"},
            "running": {"type": "boolean"},
            "template": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"spec": vmi_spec()},
            },
            "dataVolumeTemplates": {"type": "array", "items": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"spec": dv_spec()},
            }},
        },
        // The real admission webhook's rule and message.
        "x-kubernetes-validations": [{
            "rule": "!(has(self.running) && has(self.runStrategy))",
            "message": "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead",
        }],
    });
    let restore_spec = json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "required": ["target", "virtualMachineSnapshotName"],
        "properties": {
            "target": vm_ref(),
            "virtualMachineSnapshotName": {"type": "string"},
            "targetReadinessPolicy": {"type": "string",
                "enum": ["WaitGracePeriod", "StopTarget", "FailImmediate", "WaitEventually"]},
            "volumeRestorePolicy": {"type": "string", "enum": ["RandomizeNames", "InPlace"]},
        },
        "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec is immutable"}],
    });
    let snapshot_spec = json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "required": ["source"],
        "properties": {
            "source": vm_ref(),
            "deletionPolicy": {"type": "string", "enum": ["Delete", "Retain"]},
            "failureDeadline": {"type": "string"},
        },
    });
    vec![
        crd(
            "kubevirt.io",
            "v1",
            "VirtualMachine",
            "virtualmachines",
            &["vm", "vms"],
            &["all"],
            vm_spec,
            vec![
                age.clone(),
                col("Status", "string", ".status.printableStatus"),
                col("Ready", "string", ".status.conditions[?(@.type=='Ready')].status"),
            ],
        ),
        crd(
            "kubevirt.io",
            "v1",
            "VirtualMachineInstance",
            "virtualmachineinstances",
            &["vmi", "vmis"],
            &["all"],
            open(),
            vec![
                age.clone(),
                col("Phase", "string", ".status.phase"),
                col("IP", "string", ".status.interfaces[0].ipAddress"),
                col("NodeName", "string", ".status.nodeName"),
                col("Ready", "string", ".status.conditions[?(@.type=='Ready')].status"),
            ],
        ),
        crd(
            "cdi.kubevirt.io",
            "v1beta1",
            "DataVolume",
            "datavolumes",
            &["dv", "dvs"],
            &["all"],
            dv_spec(),
            vec![
                col("Phase", "string", ".status.phase"),
                col("Progress", "string", ".status.progress"),
                col("Restarts", "integer", ".status.restartCount"),
                age.clone(),
            ],
        ),
        crd(
            "snapshot.kubevirt.io",
            "v1beta1",
            "VirtualMachineSnapshot",
            "virtualmachinesnapshots",
            &["vmsnapshot", "vmsnapshots"],
            &["all"],
            snapshot_spec,
            vec![
                col("SourceKind", "string", ".spec.source.kind"),
                col("SourceName", "string", ".spec.source.name"),
                col("Phase", "string", ".status.phase"),
                col("ReadyToUse", "boolean", ".status.readyToUse"),
                col("CreationTime", "date", ".status.creationTime"),
                col("Error", "string", ".status.error.message"),
            ],
        ),
        crd(
            "snapshot.kubevirt.io",
            "v1beta1",
            "VirtualMachineSnapshotContent",
            "virtualmachinesnapshotcontents",
            &["vmsnapshotcontent", "vmsnapshotcontents"],
            &["all"],
            open(),
            vec![
                col("ReadyToUse", "boolean", ".status.readyToUse"),
                col("CreationTime", "date", ".status.creationTime"),
                col("Error", "string", ".status.error.message"),
            ],
        ),
        crd(
            "snapshot.kubevirt.io",
            "v1beta1",
            "VirtualMachineRestore",
            "virtualmachinerestores",
            &["vmrestore", "vmrestores"],
            &["all"],
            restore_spec,
            vec![
                col("TargetKind", "string", ".spec.target.kind"),
                col("TargetName", "string", ".spec.target.name"),
                col("Complete", "boolean", ".status.complete"),
                col("RestoreTime", "date", ".status.restoreTime"),
                col("Error", "string", ".status.error.message"),
            ],
        ),
    ]
}
