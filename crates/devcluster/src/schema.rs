//! CustomResourceDefinition handling: turning a CRD into served resource types, and validating
//! custom objects against a version's structural openAPIV3Schema (pruning, defaulting, value
//! validation and `x-kubernetes-validations` CEL rules through kube-cel).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use kube::core::cel::{CompiledSchema, RootContext, Validator, compile_schema};
use regex::Regex;
use serde_json::{Map, Value, json};

use crate::error::Cause;
use crate::registry::{ResourceType, storage_key};

/// Schema, compiled CEL rules and printer columns of one CRD version.
pub struct CrdSchema {
    /// The openAPIV3Schema, if the version has one.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns` of the version.
    pub printer_columns: Vec<Value>,
    compiled: Option<CompiledSchema>,
    // kube-cel's validator holds a CEL context that is not Sync; one lock per CRD version is cheap.
    validator: Mutex<Validator>,
    root: RootContext,
}

impl std::fmt::Debug for CrdSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdSchema")
            .field("kind", &self.root.kind)
            .finish()
    }
}

fn collect_compile_errors(c: &CompiledSchema, path: &str, out: &mut Vec<String>) {
    for e in c.compilation_errors() {
        out.push(format!("{}: {e}", if path.is_empty() { "<root>" } else { path }));
    }
    for (k, child) in &c.properties {
        collect_compile_errors(child, &join(path, k), out);
    }
    if let Some(items) = &c.items {
        collect_compile_errors(items, &format!("{path}[*]"), out);
    }
    if let Some(ap) = &c.additional_properties {
        collect_compile_errors(ap, &format!("{path}[*]"), out);
    }
    for child in c.all_of.iter().chain(&c.one_of).chain(&c.any_of) {
        collect_compile_errors(child, path, out);
    }
}

/// Functions a rule calls that the CEL runtime does not provide (such as `cel.bind` or
/// `sortBy`): such a rule compiles but could never be evaluated, so the CRD is refused.
fn collect_unsupported(
    c: &CompiledSchema,
    path: &str,
    ctx: &kube::core::cel::cel::Context<'_>,
    out: &mut Vec<String>,
) {
    use kube::core::cel::cel::{ExecutionError, Program};
    for cr in c.validations.iter().flatten() {
        let refs = cr.program.references();
        for f in refs.functions() {
            // Operators are interpreted directly and are not valid identifiers to probe.
            let ident = f.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') && !f.starts_with('_');
            if !ident {
                continue;
            }
            // The interpreter looks a function up before evaluating its arguments, so calling it
            // with none tells whether it exists.
            let Ok(probe) = Program::compile(&format!("{f}()")) else {
                continue;
            };
            if let Err(ExecutionError::UndeclaredReference(_)) = probe.execute(ctx) {
                out.push(format!(
                    "{}: rule \"{}\" calls {f}(), which this server cannot evaluate",
                    if path.is_empty() { "<root>" } else { path },
                    cr.rule.rule
                ));
            }
        }
    }
    for (k, child) in &c.properties {
        collect_unsupported(child, &join(path, k), ctx, out);
    }
    if let Some(items) = &c.items {
        collect_unsupported(items, &format!("{path}[*]"), ctx, out);
    }
    if let Some(ap) = &c.additional_properties {
        collect_unsupported(ap, &format!("{path}[*]"), ctx, out);
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl CrdSchema {
    /// Compile a version's schema; CEL rules that do not compile are reported as errors.
    pub fn new(
        schema: Option<Value>,
        printer_columns: Vec<Value>,
        root: RootContext,
    ) -> Result<Self, Vec<String>> {
        let compiled = schema.as_ref().map(compile_schema);
        if let Some(c) = &compiled {
            let mut errors = Vec::new();
            collect_compile_errors(c, "", &mut errors);
            if errors.is_empty() {
                use kube::core::cel::KubeCelExt;
                let ctx = kube::core::cel::cel::Context::default().with_all();
                collect_unsupported(c, "", &ctx, &mut errors);
            }
            if !errors.is_empty() {
                return Err(errors);
            }
        }
        Ok(Self {
            schema,
            printer_columns,
            compiled,
            validator: Mutex::new(Validator::new()),
            root,
        })
    }

    /// Prune unknown fields (their paths go to `pruned`), apply defaults, then validate;
    /// returns the causes of any failure.
    pub fn admit(&self, obj: &mut Value, old: Option<&Value>, pruned: &mut Vec<String>) -> Vec<Cause> {
        let Some(schema) = &self.schema else {
            return Vec::new();
        };
        prune_and_default(schema, obj, "", pruned);
        let mut causes = Vec::new();
        validate_value(schema, obj, "", &mut causes, true);
        if causes.is_empty()
            && let Some(compiled) = &self.compiled
        {
            let validator = self.validator.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(errs) = validator.validate_compiled_with_context(compiled, obj, old, Some(&self.root))
            {
                for e in errs.iter() {
                    let reason = e.reason.clone().unwrap_or_else(|| "FieldValueInvalid".into());
                    let field = if e.field_path.is_empty() {
                        "<root>".to_string()
                    } else {
                        e.field_path.clone()
                    };
                    let message = if reason == "FieldValueInvalid" {
                        format!("Invalid value: \"object\": {}", e.message)
                    } else {
                        e.message.clone()
                    };
                    causes.push(Cause {
                        reason,
                        field,
                        message,
                    });
                }
            }
        }
        causes
    }
}

fn is_true(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Drop fields the schema does not declare and fill declared defaults, recursively; the paths
/// of dropped fields go to `pruned` (for `fieldValidation=Strict`).
pub fn prune_and_default(schema: &Value, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    let root = path.is_empty();
    let keep_at_root = |k: &str| root && matches!(k, "apiVersion" | "kind" | "metadata");
    match v {
        Value::Object(map) => {
            let preserve = is_true(schema, "x-kubernetes-preserve-unknown-fields")
                || is_true(schema, "x-kubernetes-embedded-resource");
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let declared = |k: &str| match (props, additional) {
                (Some(p), _) => p.contains_key(k),
                (None, Some(Value::Object(_) | Value::Bool(true))) => true,
                // An object schema without properties declares nothing.
                (None, _) => schema.get("type").and_then(Value::as_str) != Some("object"),
            };
            if !preserve {
                map.retain(|k, _| {
                    let keep = declared(k) || keep_at_root(k);
                    if !keep {
                        pruned.push(join(path, k));
                    }
                    keep
                });
            }
            if let Some(props) = props {
                for (k, ps) in props {
                    if root && k == "metadata" {
                        continue;
                    }
                    if !map.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(k) {
                        prune_and_default(ps, child, &join(path, k), pruned);
                    }
                }
            } else if let Some(ap) = additional.filter(|a| a.is_object()) {
                for (k, child) in map.iter_mut() {
                    prune_and_default(ap, child, &format!("{path}[{k}]"), pruned);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_and_default(is, item, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(expected: &str, v: &Value) -> bool {
    match expected {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        _ => true,
    }
}

/// Validate a value against a structural schema node, collecting causes.
pub fn validate_value(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>, root: bool) {
    let field = if path.is_empty() { "<root>" } else { path };
    if v.is_null() {
        if is_true(schema, "nullable") || schema.get("type").is_none() {
            return;
        }
        causes.push(Cause::new(
            "FieldValueTypeInvalid",
            field,
            format!(
                "Invalid value: \"null\": {field} in body must be of type {}: \"null\"",
                schema["type"].as_str().unwrap_or("object")
            ),
        ));
        return;
    }
    if is_true(schema, "x-kubernetes-int-or-string") {
        if !(v.is_string() || type_ok("integer", v)) {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                field,
                format!(
                    "Invalid value: {}: {field} in body must be of type integer or string",
                    short(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str)
        && !type_ok(t, v)
    {
        causes.push(Cause::new(
            "FieldValueTypeInvalid",
            field,
            format!(
                "Invalid value: {}: {field} in body must be of type {t}: \"{}\"",
                short(v),
                type_name(v)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            field,
            format!("Unsupported value: {}: supported values: {}", v, list.join(", ")),
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            let excl = is_true(schema, "exclusiveMinimum");
            if n < min || (excl && n == min) {
                let op = if excl {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!(
                        "Invalid value: {v}: {field} in body should be {op} {}",
                        schema["minimum"]
                    ),
                ));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            let excl = is_true(schema, "exclusiveMaximum");
            if n > max || (excl && n == max) {
                let op = if excl {
                    "less than"
                } else {
                    "less than or equal to"
                };
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!(
                        "Invalid value: {v}: {field} in body should be {op} {}",
                        schema["maximum"]
                    ),
                ));
            }
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            causes.push(Cause::new(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {v}: {field} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            causes.push(Cause::new(
                "FieldValueTooLong",
                field,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str)
            && let Some(re) = compiled_pattern(p)
            && !re.is_match(s)
        {
            causes.push(Cause::new(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {v}: {field} in body should match '{p}'"),
            ));
        }
    }
    match v {
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    field,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {n}: {field} in body should have at least {min} items"),
                ));
            }
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_value(is, item, &format!("{path}[{i}]"), causes, false);
                }
            }
        }
        Value::Object(map) => {
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        causes.push(Cause::new("FieldValueRequired", join(path, r), "Required value"));
                    }
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if root && k == "metadata" {
                        continue;
                    }
                    if let Some(child) = map.get(k) {
                        validate_value(ps, child, &join(path, k), causes, false);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in map {
                    validate_value(ap, child, &format!("{path}[{k}]"), causes, false);
                }
            }
        }
        _ => {}
    }
}

/// What a CRD asks to serve, checked; or the causes that make it invalid.
pub fn crd_resource_types(crd: &Value) -> Result<Vec<ResourceType>, Vec<Cause>> {
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    if group.is_empty() {
        causes.push(Cause::new("FieldValueRequired", "spec.group", "Required value"));
    }
    if plural.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    }
    if kind.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            causes.push(Cause::new(
                "FieldValueNotSupported",
                "spec.scope",
                format!(
                    "Unsupported value: {}: supported values: \"Cluster\", \"Namespaced\"",
                    json!(other)
                ),
            ));
            true
        }
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value",
        ));
    }
    let storage_count = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if !versions.is_empty() && storage_count != 1 {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            format!(
                "Invalid value: {storage_count}: must have exactly one version marked as storage version"
            ),
        ));
    }
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (i, ver) in versions.iter().enumerate() {
        let vname = ver["name"].as_str().unwrap_or_default().to_string();
        let schema = ver.pointer("/schema/openAPIV3Schema").cloned();
        let columns = ver["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let root = RootContext {
            api_version: format!("{group}/{vname}"),
            api_group: group.clone(),
            kind: kind.clone(),
        };
        let compiled = match CrdSchema::new(schema, columns, root) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        format!("spec.versions[{i}].schema.openAPIV3Schema"),
                        format!("Invalid value: \"object\": x-kubernetes-validations: {e}"),
                    ));
                }
                continue;
            }
        };
        if ver["served"].as_bool() == Some(false) {
            continue;
        }
        out.push(ResourceType {
            group: group.clone(),
            version: vname,
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: ver.pointer("/subresources/status").is_some(),
            generation: true,
            storage: storage_key(&group, &plural),
            crd: Some(Arc::new(compiled)),
            columns: Vec::new(),
        });
    }
    if causes.is_empty() { Ok(out) } else { Err(causes) }
}

/// The status the server reports for an accepted CRD.
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let mut accepted = crd["spec"]["names"].clone();
    if let Some(m) = accepted.as_object_mut() {
        if !m.contains_key("singular") {
            let kind = m
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            m.insert("singular".into(), Value::String(kind));
        }
        if !m.contains_key("listKind") {
            let kind = m
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            m.insert("listKind".into(), Value::String(format!("{kind}List")));
        }
    }
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let cond = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let mut status = Map::new();
    status.insert(
        "conditions".into(),
        json!([
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond(
                "Established",
                "InitialNamesAccepted",
                "the initial names have been accepted"
            ),
        ]),
    );
    status.insert("acceptedNames".into(), accepted);
    status.insert("storedVersions".into(), Value::Array(stored));
    Value::Object(status)
}

/// The compiled form of a schema's `pattern` (`None` if it does not compile: such a pattern
/// checks nothing). Cached: compiling it for every validated string was a sixth of the
/// server's time under a burst of writes. Patterns come from CRDs, so the cache stays small;
/// it is emptied if it ever grows past a bound.
fn compiled_pattern(pattern: &str) -> Option<Regex> {
    const MAX_CACHED: usize = 4096;
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Regex>>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(compiled) = cache.get(pattern) {
        return compiled.clone();
    }
    if cache.len() >= MAX_CACHED {
        cache.clear();
    }
    let compiled = Regex::new(pattern).ok();
    cache.insert(pattern.to_owned(), compiled.clone());
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_compiles_once_and_a_broken_one_checks_nothing() {
        let first = compiled_pattern("^[a-z]+$").expect("compiles");
        let again = compiled_pattern("^[a-z]+$").expect("cached");
        assert!(first.is_match("abc") && again.is_match("abc") && !again.is_match("ABC"));
        assert_eq!(first.as_str(), again.as_str());
        assert!(compiled_pattern("([a-z").is_none());
        assert!(
            compiled_pattern("([a-z").is_none(),
            "a broken pattern stays broken"
        );
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 5},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "name": {"type": "string", "pattern": "^[a-z]+$"},
                        "port": {"x-kubernetes-int-or-string": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    },
                    "x-kubernetes-validations": [{"rule": "self.size != 3", "message": "size must not be 3"}]
                }
            }
        })
    }

    fn crd_schema() -> CrdSchema {
        CrdSchema::new(Some(schema()), vec![], RootContext::default()).expect("compiles")
    }

    #[test]
    fn unknown_fields_are_pruned_and_defaults_applied() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"size": 2, "extra": 1, "free": {"anything": [1]}}, "junk": true});
        let mut pruned = Vec::new();
        let causes = crd_schema().admit(&mut obj, None, &mut pruned);
        assert!(causes.is_empty(), "{causes:?}");
        assert_eq!(pruned, vec!["junk", "spec.extra"]);
        assert_eq!(
            obj["spec"],
            json!({"size": 2, "mode": "a", "free": {"anything": [1]}})
        );
        assert!(obj.get("junk").is_none());
        assert_eq!(obj["metadata"]["name"], "a");
    }

    #[test]
    fn value_violations_name_their_fields() {
        let mut obj = json!({"spec": {"size": 9, "mode": "c", "name": "A1", "port": true}});
        let causes = crd_schema().admit(&mut obj, None, &mut Vec::new());
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.mode", "spec.name", "spec.port", "spec.size"]);
        let mut missing = json!({"spec": {}});
        let causes = crd_schema().admit(&mut missing, None, &mut Vec::new());
        assert_eq!(causes[0].reason, "FieldValueRequired");
        assert_eq!(causes[0].field, "spec.size");
    }

    #[test]
    fn cel_rules_are_evaluated() {
        let mut obj = json!({"spec": {"size": 3}});
        let causes = crd_schema().admit(&mut obj, None, &mut Vec::new());
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert!(causes[0].message.contains("size must not be 3"), "{causes:?}");
    }

    #[test]
    fn a_rule_calling_an_unavailable_function_is_reported() {
        let bad = json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"},
            "x-kubernetes-validations": [{"rule": "cel.bind(x, self, size(x) > 0)"}]}}});
        let err = CrdSchema::new(Some(bad), vec![], RootContext::default()).expect_err("must fail");
        assert!(err[0].contains("bind()"), "{err:?}");
        let fine = json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"},
        "x-kubernetes-validations": [
            {"rule": "self.all(x, x > 0) && self.exists(x, x == 1) && size(self) < 5"},
            {"rule": "self.map(x, x * 2).filter(y, y > 2).size() >= 0 || true"},
            {"rule": "string(1).startsWith('1') && self.isSorted() && sets.contains(self, [1])"},
            {"rule": "quantity('1Gi').isGreaterThan(quantity('1Mi')) && isURL('https://x') && '1.2.3'.matches('^[0-9.]+$')"}
        ]}}});
        CrdSchema::new(Some(fine), vec![], RootContext::default()).expect("supported rules compile");
    }

    #[test]
    fn a_rule_that_does_not_compile_is_reported() {
        let bad = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.size >"}]});
        let err = CrdSchema::new(Some(bad), vec![], RootContext::default()).expect_err("must fail");
        assert!(err[0].contains("self.size >"), "{err:?}");
    }
}
