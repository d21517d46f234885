//! Validation of built-in kinds that the real API server does in its decoders and REST
//! strategies, for the fields cks-lab writes: resource quantities (ResourceQuota, LimitRange,
//! PersistentVolumeClaim, Pod and Deployment containers) and the `events.k8s.io/v1` Event
//! limits (`note` at most 1 024 bytes). Messages follow the real server's, so a test against
//! the development control plane fails where a real cluster would refuse the write.

use serde_json::Value;

use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::ResourceType;

/// The regular expression the real server's quantity parser names when it refuses a value.
const QUANTITY_RE: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Limits of `events.k8s.io/v1` Events (k8s `pkg/apis/core/validation/events.go`).
const NOTE_LIMIT: usize = 1024;
const SHORT_LIMIT: usize = 128;

/// The value of a Kubernetes quantity (`5Gi`, `250m`, `1e3`, ` 1Gi `, a JSON number), or
/// `None` when the real decoder (`Quantity.UnmarshalJSON`) refuses it. Precision is that of
/// `f64`, enough for the sign and order checks made here.
pub fn parse_quantity(v: &Value) -> Option<f64> {
    if let Some(n) = v.as_f64() {
        return Some(n);
    }
    // `Quantity.UnmarshalJSON` trims spaces around the string before parsing it.
    let s = v.as_str()?.trim();
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number == "." {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp = &e[1..];
            let digits = exp.trim_start_matches(['+', '-']);
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || exp.len() - digits.len() > 1
            {
                return None;
            }
            10f64.powi(exp.parse::<i32>().ok()?)
        }
        _ => return None,
    };
    Some(sign * number * factor)
}

/// Check one map of quantities (`requests`, `hard`...): a value that is not a quantity makes
/// the whole body undecodable (400, as the real decoder answers); a negative one is a cause.
/// `null` is skipped: `Quantity.UnmarshalJSON` decodes it as zero (Helm renders `cpu: null`).
fn quantities(rt: &ResourceType, map: &Value, path: &str, causes: &mut Vec<Cause>) -> ApiResult<()> {
    let Some(map) = map.as_object() else {
        return Ok(());
    };
    for (name, q) in map.iter().filter(|(_, q)| !q.is_null()) {
        match parse_quantity(q) {
            None => {
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: quantities must match the regular expression '{QUANTITY_RE}'",
                    kind = rt.kind,
                    version = rt.version,
                )));
            }
            Some(n) if n < 0.0 => causes.push(Cause::new(
                "FieldValueInvalid",
                format!("{path}[{name}]"),
                format!(
                    "Invalid value: \"{}\": must be greater than or equal to 0",
                    q.as_str().map_or_else(|| q.to_string(), str::to_string)
                ),
            )),
            Some(_) => {}
        }
    }
    Ok(())
}

fn containers(rt: &ResourceType, pod_spec: &Value, path: &str, causes: &mut Vec<Cause>) -> ApiResult<()> {
    for list in ["initContainers", "containers"] {
        for (i, c) in pod_spec[list].as_array().into_iter().flatten().enumerate() {
            for part in ["requests", "limits"] {
                let p = format!("{path}.{list}[{i}].resources.{part}");
                quantities(rt, &c["resources"][part], &p, causes)?;
            }
        }
    }
    Ok(())
}

fn too_long(field: &str, v: &Value, limit: usize, causes: &mut Vec<Cause>) {
    if v.as_str().is_some_and(|s| s.len() > limit) {
        causes.push(Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: \"\": can have at most {limit} characters"),
        ));
    }
}

/// Validate a built-in object about to be stored (create or update, not status writes; `old`
/// is the stored object on update): `Err` with 400 for an undecodable body, else the causes
/// of a 422 (empty when valid).
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> ApiResult<Vec<Cause>> {
    let mut causes = Vec::new();
    if rt.crd.is_some() {
        return Ok(causes);
    }
    let spec = &obj["spec"];
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "resourcequotas") => quantities(rt, &spec["hard"], "spec.hard", &mut causes)?,
        ("", "persistentvolumeclaims") => {
            for part in ["requests", "limits"] {
                let path = format!("spec.resources.{part}");
                quantities(rt, &spec["resources"][part], &path, &mut causes)?;
            }
        }
        ("", "limitranges") => {
            for (i, l) in spec["limits"].as_array().into_iter().flatten().enumerate() {
                for part in ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"] {
                    let path = format!("spec.limits[{i}].{part}");
                    quantities(rt, &l[part], &path, &mut causes)?;
                }
            }
        }
        ("", "pods") => containers(rt, spec, "spec", &mut causes)?,
        ("apps", "deployments") => {
            containers(rt, &spec["template"]["spec"], "spec.template.spec", &mut causes)?
        }
        // The strict checks apply to the events.k8s.io API only; core/v1 Events keep the
        // legacy rules, which set no length limit on `message`. The real server checks these
        // on create only (`ValidateEventCreate`); an update is checked for immutability.
        ("events.k8s.io", "events") if old.is_none() => {
            too_long("note", &obj["note"], NOTE_LIMIT, &mut causes);
            too_long("reason", &obj["reason"], SHORT_LIMIT, &mut causes);
            too_long("action", &obj["action"], SHORT_LIMIT, &mut causes);
            too_long(
                "reportingInstance",
                &obj["reportingInstance"],
                SHORT_LIMIT,
                &mut causes,
            );
            if let Some(t) = obj["type"].as_str()
                && t != "Normal"
                && t != "Warning"
            {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    "type",
                    format!("Invalid value: \"\": has invalid value: {t}"),
                ));
            }
        }
        ("events.k8s.io", "events") => {
            if let Some(old) = old {
                immutable_event_fields(obj, old, &mut causes);
            }
        }
        _ => {}
    }
    Ok(causes)
}

/// `ValidateEventUpdate` for the events.k8s.io API: these fields cannot change (paths are the
/// internal type's, as the real server reports them).
fn immutable_event_fields(obj: &Value, old: &Value, causes: &mut Vec<Cause>) {
    for (field, path) in [
        ("regarding", "involvedObject"),
        ("reason", "reason"),
        ("note", "message"),
        ("type", "type"),
        ("action", "action"),
        ("related", "related"),
        ("reportingController", "reportingController"),
        ("reportingInstance", "reportingInstance"),
    ] {
        let (new, was) = (&obj[field], &old[field]);
        if new != was {
            let shown = new.as_str().map_or_else(|| new.to_string(), str::to_string);
            causes.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!("Invalid value: \"{shown}\": field is immutable"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_like_the_real_parser() {
        for (q, want) in [
            (json!("5Gi"), 5.0 * 1024f64.powi(3)),
            (json!("250m"), 0.25),
            (json!("1.5"), 1.5),
            (json!(".5"), 0.5),
            (json!("+2k"), 2000.0),
            (json!("-5Gi"), -5.0 * 1024f64.powi(3)),
            (json!("1e3"), 1000.0),
            (json!("1E-2"), 0.01),
            (json!(4), 4.0),
        ] {
            assert_eq!(parse_quantity(&q), Some(want), "{q}");
        }
        for bad in [
            "lots", "", "5GB", "5 Gi", "1.2.3", "Gi", "e3", "1e", "1e+-3", "--1", "5gi",
        ] {
            assert_eq!(parse_quantity(&json!(bad)), None, "{bad}");
        }
    }

    fn pod(resources: Value) -> Value {
        json!({"spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    fn pods() -> std::sync::Arc<ResourceType> {
        crate::registry::Registry::default()
            .get("", "v1", "pods")
            .expect("pods are built in")
    }

    /// `Quantity.UnmarshalJSON` reads `null` as the zero quantity, so a Helm-rendered
    /// `cpu: null` is stored, not refused as undecodable.
    #[test]
    fn a_null_quantity_is_accepted_as_zero() {
        let obj = pod(json!({"requests": {"cpu": null, "memory": "1Gi"}, "limits": {"cpu": null}}));
        assert_eq!(validate(&pods(), &obj, None).expect("decodable"), vec![]);
    }

    /// `Quantity.UnmarshalJSON` trims spaces around the string before parsing it.
    #[test]
    fn spaces_around_a_quantity_are_trimmed() {
        assert_eq!(parse_quantity(&json!(" 1Gi ")), Some(1024f64.powi(3)));
        let obj = pod(json!({"requests": {"memory": " 1Gi ", "cpu": "\t250m\n"}}));
        assert_eq!(validate(&pods(), &obj, None).expect("decodable"), vec![]);
        let neg = pod(json!({"requests": {"memory": " -1Gi"}}));
        assert_eq!(validate(&pods(), &neg, None).expect("decodable").len(), 1);
    }

    /// The `events.k8s.io` limits are `ValidateEventCreate`'s: an update of an Event stored
    /// before (by an older server, or through core/v1) is not refused for them.
    #[test]
    fn event_limits_are_checked_on_create_only() {
        let rt = crate::registry::Registry::default()
            .get("events.k8s.io", "v1", "events")
            .expect("events are built in");
        let event = json!({"note": "x".repeat(NOTE_LIMIT + 1), "reason": "r".repeat(200), "type": "Odd"});
        assert_eq!(validate(&rt, &event, None).expect("decodable").len(), 3);
        let old = event.clone();
        assert_eq!(validate(&rt, &event, Some(&old)).expect("decodable"), vec![]);
    }

    /// An update through events.k8s.io may not change what the Event reports
    /// (`ValidateEventUpdate`): `note` (`message` internally), `reason`, `type`...
    #[test]
    fn an_event_update_keeps_its_reported_fields() {
        let rt = crate::registry::Registry::default()
            .get("events.k8s.io", "v1", "events")
            .expect("events are built in");
        let old = json!({"note": "a", "reason": "Failed", "type": "Warning", "series": {"count": 2}});
        let mut new = old.clone();
        new["series"]["count"] = json!(3);
        assert_eq!(validate(&rt, &new, Some(&old)).expect("decodable"), vec![]);
        new["note"] = json!("b");
        new["type"] = json!("Normal");
        let causes = validate(&rt, &new, Some(&old)).expect("decodable");
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["message", "type"]);
        assert_eq!(causes[0].message, "Invalid value: \"b\": field is immutable");
    }
}
