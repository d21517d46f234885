//! Validation rules: the typed model the validation engine consumes, and the loader for
//! `validation/NN-validation.yaml` that checks every rule (type, condition, operand, regex,
//! JSONPath, target, timeout) when the catalog is loaded rather than when a student validates.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{LoadError, Pos, SourceLocation, Warning};
use crate::fields::{Inline, RawDuration, Target, ser_opt_secs};
use crate::jsonpath::KubePath;
use crate::yaml::{self, Node};

/// One check of a task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Unique within its task.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What to look at.
    pub check: Check,
    /// How to judge what was found. `None` means: the command or script exits with its
    /// success code. Existence checks always carry [`Condition::Exists`] or
    /// [`Condition::NotExists`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Upper bound for running this rule; the engine's default applies when absent.
    #[serde(serialize_with = "ser_opt_secs", rename = "timeoutSeconds")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Shown to the student when the rule fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Where the rule is written.
    pub location: SourceLocation,
}

impl Rule {
    pub fn rule_type(&self) -> RuleType {
        self.check.rule_type()
    }
}

/// The rule types of the reference system's unified validator, plus `file_exists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleType {
    ResourceExists,
    ResourceProperty,
    Command,
    Script,
    FileExists,
    FileContent,
}

impl RuleType {
    pub const ALL: &'static str =
        "resource_exists, resource_property, command, script, file_exists, file_content";

    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::ResourceExists => "resource_exists",
            RuleType::ResourceProperty => "resource_property",
            RuleType::Command => "command",
            RuleType::Script => "script",
            RuleType::FileExists => "file_exists",
            RuleType::FileContent => "file_content",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "resource_exists" => RuleType::ResourceExists,
            "resource_property" => RuleType::ResourceProperty,
            "command" => RuleType::Command,
            "script" => RuleType::Script,
            "file_exists" => RuleType::FileExists,
            "file_content" => RuleType::FileContent,
            _ => return None,
        })
    }
}

impl fmt::Display for RuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RuleType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A Kubernetes object (or, without a name, objects of a kind) in the practice cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    /// Kind as in manifests (`Namespace`, `NetworkPolicy`).
    pub kind: String,
    /// Without a name, the rule is about objects of this kind (narrowed by the selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For namespaced kinds; absent means the engine's default namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `group/version`, when the kind alone is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// A label selector such as `app=web,tier!=db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// What a rule looks at.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum Check {
    /// The object exists (or, with `not_exists`, does not).
    ResourceExists { resource: ResourceRef },
    /// A value inside the object, selected by JSONPath.
    ResourceProperty {
        resource: ResourceRef,
        property: KubePath,
    },
    /// A shell command on a VM; the condition (if any) applies to its output.
    Command { command: String, target: Target },
    /// A script on a VM; passes when it exits with `success_code` (and the condition, if
    /// any, holds for its output).
    Script {
        script: String,
        target: Target,
        success_code: i32,
    },
    /// A file on a VM exists (or, with `not_exists`, does not).
    FileExists { path: String, target: Target },
    /// The content of a file on a VM.
    FileContent { path: String, target: Target },
}

impl Check {
    pub fn rule_type(&self) -> RuleType {
        match self {
            Check::ResourceExists { .. } => RuleType::ResourceExists,
            Check::ResourceProperty { .. } => RuleType::ResourceProperty,
            Check::Command { .. } => RuleType::Command,
            Check::Script { .. } => RuleType::Script,
            Check::FileExists { .. } => RuleType::FileExists,
            Check::FileContent { .. } => RuleType::FileContent,
        }
    }

    /// The VM the check runs on; `None` for checks against the Kubernetes API.
    pub fn target(&self) -> Option<Target> {
        match self {
            Check::ResourceExists { .. } | Check::ResourceProperty { .. } => None,
            Check::Command { target, .. }
            | Check::Script { target, .. }
            | Check::FileExists { target, .. }
            | Check::FileContent { target, .. } => Some(*target),
        }
    }
}

/// How what a rule found is judged, with its expected operand.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "condition", content = "value", rename_all = "snake_case")]
pub enum Condition {
    /// Equal to the value (strings compare after trimming surrounding whitespace).
    Equals(Value),
    Contains(String),
    Exists,
    NotExists,
    GreaterThan(f64),
    LessThan(f64),
    MatchesRegex(Pattern),
    /// Command or script output, trimmed, equals the value.
    OutputEquals(String),
    /// Command or script output contains the value.
    OutputContains(String),
}

impl Condition {
    pub const ALL: &'static str = "equals, contains, exists, not_exists, greater_than, less_than, \
         matches_regex, output_equals, output_contains";

    pub fn kind(&self) -> ConditionKind {
        match self {
            Condition::Equals(_) => ConditionKind::Equals,
            Condition::Contains(_) => ConditionKind::Contains,
            Condition::Exists => ConditionKind::Exists,
            Condition::NotExists => ConditionKind::NotExists,
            Condition::GreaterThan(_) => ConditionKind::GreaterThan,
            Condition::LessThan(_) => ConditionKind::LessThan,
            Condition::MatchesRegex(_) => ConditionKind::MatchesRegex,
            Condition::OutputEquals(_) => ConditionKind::OutputEquals,
            Condition::OutputContains(_) => ConditionKind::OutputContains,
        }
    }
}

/// The name of a condition, without its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionKind {
    Equals,
    Contains,
    Exists,
    NotExists,
    GreaterThan,
    LessThan,
    MatchesRegex,
    OutputEquals,
    OutputContains,
}

impl ConditionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionKind::Equals => "equals",
            ConditionKind::Contains => "contains",
            ConditionKind::Exists => "exists",
            ConditionKind::NotExists => "not_exists",
            ConditionKind::GreaterThan => "greater_than",
            ConditionKind::LessThan => "less_than",
            ConditionKind::MatchesRegex => "matches_regex",
            ConditionKind::OutputEquals => "output_equals",
            ConditionKind::OutputContains => "output_contains",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "equals" => ConditionKind::Equals,
            "contains" => ConditionKind::Contains,
            "exists" => ConditionKind::Exists,
            "not_exists" => ConditionKind::NotExists,
            "greater_than" => ConditionKind::GreaterThan,
            "less_than" => ConditionKind::LessThan,
            "matches_regex" => ConditionKind::MatchesRegex,
            "output_equals" => ConditionKind::OutputEquals,
            "output_contains" => ConditionKind::OutputContains,
            _ => return None,
        })
    }

    /// Which conditions make sense for which rule type.
    fn applies_to(self, t: RuleType) -> bool {
        use ConditionKind as C;
        match t {
            RuleType::ResourceExists | RuleType::FileExists => matches!(self, C::Exists | C::NotExists),
            RuleType::ResourceProperty => !matches!(self, C::OutputEquals | C::OutputContains),
            RuleType::Command | RuleType::Script => true,
            RuleType::FileContent => {
                matches!(self, C::Equals | C::Contains | C::MatchesRegex | C::NotExists)
            }
        }
    }
}

impl fmt::Display for ConditionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A regular expression, checked when the catalog loads and compiled on first use: compiled
/// automata take tens of kilobytes each, and most rules of a large catalog are never run.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    compiled: OnceLock<Result<Regex, regex::Error>>,
}

impl Pattern {
    /// Checks the syntax of `source` without compiling it.
    pub fn new(source: &str) -> Result<Self, String> {
        regex_syntax::Parser::new()
            .parse(source)
            .map_err(|e| e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))?;
        Ok(Self {
            source: source.to_owned(),
            compiled: OnceLock::new(),
        })
    }

    /// The compiled regex. Fails only when a syntactically valid pattern exceeds the regex
    /// engine's size limits.
    pub fn regex(&self) -> Result<&Regex, &regex::Error> {
        self.compiled.get_or_init(|| Regex::new(&self.source)).as_ref()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// ---- Raw file shape -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct RawValidationFile {
    validation: Option<Vec<RawRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    description: Option<String>,
    resource: Option<RawResource>,
    #[serde(alias = "jsonPath", alias = "jsonpath")]
    property: Option<String>,
    condition: Option<String>,
    #[serde(alias = "expected")]
    value: Option<Value>,
    command: Option<Inline<CommandBlock>>,
    script: Option<Inline<ScriptBlock>>,
    file: Option<Inline<FileBlock>>,
    path: Option<String>,
    target: Option<String>,
    #[serde(alias = "expectedExitCode", alias = "exitCode")]
    success_code: Option<i64>,
    timeout: Option<RawDuration>,
    error_message: Option<String>,
}

/// `resource:` of a rule. The reference system writes a `resource_property` rule's
/// `property` inside it; it means the same as `property` beside it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResource {
    kind: String,
    name: Option<String>,
    namespace: Option<String>,
    api_version: Option<String>,
    label_selector: Option<String>,
    #[serde(alias = "jsonPath", alias = "jsonpath")]
    property: Option<String>,
}

impl RawResource {
    fn split(self) -> (ResourceRef, Option<String>) {
        let object = ResourceRef {
            kind: self.kind,
            name: self.name,
            namespace: self.namespace,
            api_version: self.api_version,
            label_selector: self.label_selector,
        };
        (object, self.property)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommandBlock {
    pub command: String,
    pub target: Option<String>,
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScriptBlock {
    pub script: String,
    pub target: Option<String>,
    #[serde(alias = "expectedExitCode", alias = "exitCode")]
    pub success_code: Option<i64>,
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileBlock {
    path: String,
    target: Option<String>,
}

/// Parses a target, reporting a bad one at `at`.
pub(crate) fn parse_target(raw: Option<&str>, at: &SourceLocation) -> Result<Target, LoadError> {
    match raw {
        None => Ok(Target::default()),
        Some(s) => s.parse().map_err(|found| LoadError::BadTarget {
            at: at.clone(),
            found,
        }),
    }
}

/// Parses a timeout given in seconds or as text.
pub(crate) fn parse_timeout(
    raw: Option<&RawDuration>,
    at: &SourceLocation,
) -> Result<Option<Duration>, LoadError> {
    raw.map(|d| d.resolve(Duration::from_secs(1)))
        .transpose()
        .map_err(|e| LoadError::invalid(at.clone(), format!("invalid timeout: {e}")))
}

fn value_as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn value_as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Loads the rules of one validation file. Every rule is checked; all problems are returned.
pub(crate) fn load_rules(
    file: &SourceLocation,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Rule>, Vec<LoadError>> {
    let (raw, tree): (RawValidationFile, Node) = yaml::parse(file, text, warnings).map_err(|e| vec![e])?;
    let Some(raw_rules) = raw.validation else {
        return Err(vec![LoadError::invalid(
            file.with_pos(Pos::new(1, 1)),
            "missing the `validation:` list of rules",
        )]);
    };
    if raw_rules.is_empty() {
        warnings.push(Warning::new(
            file.with_pos(tree.key_pos("validation").unwrap_or(Pos::UNKNOWN)),
            "no rules: this task can never be validated",
        ));
    }
    let list = tree.get("validation");
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut first_use: HashMap<String, u32> = HashMap::new();
    for (i, raw) in raw_rules.into_iter().enumerate() {
        let node = list.and_then(|l| l.index(i)).cloned().unwrap_or_default();
        let ctx = RuleCtx { file, node: &node };
        match convert_rule(raw, &ctx, warnings) {
            Ok(rule) => {
                let line = rule.location.line.unwrap_or(0);
                if let Some(first_line) = first_use.get(&rule.id) {
                    errors.push(LoadError::DuplicateRuleId {
                        at: ctx.key_at("id"),
                        id: rule.id.clone(),
                        first_line: *first_line,
                    });
                } else {
                    first_use.insert(rule.id.clone(), line);
                }
                rules.push(rule);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(rules) } else { Err(errors) }
}

struct RuleCtx<'a> {
    file: &'a SourceLocation,
    node: &'a Node,
}

impl RuleCtx<'_> {
    fn at(&self) -> SourceLocation {
        self.file.with_pos(self.node.pos)
    }
    /// The position of `key` in this rule, or of the rule when the key is absent.
    fn key_at(&self, key: &str) -> SourceLocation {
        self.file
            .with_pos(self.node.key_pos(key).unwrap_or(self.node.pos))
    }
    /// The position of `key` inside the block under `block` (e.g. `script.target`).
    fn nested_at(&self, block: &str, key: &str) -> SourceLocation {
        let pos = self
            .node
            .get(block)
            .and_then(|b| b.key_pos(key))
            .or_else(|| self.node.key_pos(block))
            .unwrap_or(self.node.pos);
        self.file.with_pos(pos)
    }
}

fn convert_rule(raw: RawRule, ctx: &RuleCtx<'_>, warnings: &mut Vec<Warning>) -> Result<Rule, LoadError> {
    let id = match raw.id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => return Err(LoadError::invalid(ctx.at(), "rule has no `id`")),
    };
    let Some(type_name) = raw.kind.as_deref() else {
        return Err(LoadError::invalid(ctx.at(), format!("rule `{id}` has no `type`")));
    };
    let rule_type = RuleType::parse(type_name).ok_or_else(|| LoadError::UnknownRuleType {
        at: ctx.key_at("type"),
        rule: id.clone(),
        found: type_name.to_owned(),
        expected: RuleType::ALL,
    })?;
    let condition_kind = match raw.condition.as_deref() {
        None => None,
        Some(c) => Some(
            ConditionKind::parse(c).ok_or_else(|| LoadError::UnknownCondition {
                at: ctx.key_at("condition"),
                rule: id.clone(),
                found: c.to_owned(),
                expected: Condition::ALL,
            })?,
        ),
    };
    let rule_target = parse_target(raw.target.as_deref(), &ctx.key_at("target"))?;
    let mut timeout = parse_timeout(raw.timeout.as_ref(), &ctx.key_at("timeout"))?;
    let invalid = |key: &str, msg: String| LoadError::invalid(ctx.key_at(key), format!("rule `{id}`: {msg}"));

    let (raw_resource, nested_property) = match raw.resource.map(RawResource::split) {
        Some((r, p)) => (Some(r), p),
        None => (None, None),
    };
    let resource = |raw_res: Option<ResourceRef>| match raw_res {
        None => Err(invalid(
            "type",
            format!("`{rule_type}` rules need a `resource` block"),
        )),
        Some(r) if r.kind.trim().is_empty() => Err(invalid("resource", "`resource.kind` is empty".into())),
        Some(r) => Ok(r),
    };
    let file_path_and_target = |file: Option<Inline<FileBlock>>, path: Option<String>| {
        let (path, target) = match file {
            Some(Inline::Text(p)) => (Some(p), rule_target),
            Some(Inline::Block(b)) => {
                let t = match b.target.as_deref() {
                    Some(_) => parse_target(b.target.as_deref(), &ctx.nested_at("file", "target"))?,
                    None => rule_target,
                };
                (Some(b.path), t)
            }
            None => (path, rule_target),
        };
        match path {
            Some(p) if !p.trim().is_empty() => Ok((p, target)),
            _ => Err(invalid(
                "type",
                format!("`{rule_type}` rules need a file: `file: {{path, target}}` or `path`"),
            )),
        }
    };

    let check = match rule_type {
        RuleType::ResourceExists => Check::ResourceExists {
            resource: resource(raw_resource)?,
        },
        RuleType::ResourceProperty => {
            let (prop, prop_at) = match (raw.property.as_deref(), nested_property.as_deref()) {
                (Some(beside), Some(inside)) if beside.trim() != inside.trim() => {
                    return Err(invalid(
                        "property",
                        format!("two different properties: `{beside}` and `resource.property: {inside}`"),
                    ));
                }
                (Some(p), _) => (p, ctx.key_at("property")),
                (None, Some(p)) => (p, ctx.nested_at("resource", "property")),
                (None, None) => {
                    return Err(invalid(
                        "type",
                        "`resource_property` rules need a `property` (JSONPath)".into(),
                    ));
                }
            };
            let property = KubePath::parse(prop).map_err(|e| LoadError::BadJsonPath {
                at: prop_at,
                rule: id.clone(),
                path: prop.to_owned(),
                cause: e.to_string(),
            })?;
            Check::ResourceProperty {
                resource: resource(raw_resource)?,
                property,
            }
        }
        RuleType::Command => {
            let (command, target) = match raw.command {
                Some(Inline::Text(c)) => (c, rule_target),
                Some(Inline::Block(b)) => {
                    let t = match b.target.as_deref() {
                        Some(_) => parse_target(b.target.as_deref(), &ctx.nested_at("command", "target"))?,
                        None => rule_target,
                    };
                    if timeout.is_none() {
                        timeout = parse_timeout(b.timeout.as_ref(), &ctx.nested_at("command", "timeout"))?;
                    }
                    (b.command, t)
                }
                None => return Err(invalid("type", "`command` rules need a `command`".into())),
            };
            if command.trim().is_empty() {
                return Err(invalid("command", "the command is empty".into()));
            }
            Check::Command { command, target }
        }
        RuleType::Script => {
            let (script, target, code) = match raw.script {
                Some(Inline::Text(s)) => (s, rule_target, raw.success_code),
                Some(Inline::Block(b)) => {
                    let t = match b.target.as_deref() {
                        Some(_) => parse_target(b.target.as_deref(), &ctx.nested_at("script", "target"))?,
                        None => rule_target,
                    };
                    if timeout.is_none() {
                        timeout = parse_timeout(b.timeout.as_ref(), &ctx.nested_at("script", "timeout"))?;
                    }
                    (b.script, t, b.success_code.or(raw.success_code))
                }
                None => return Err(invalid("type", "`script` rules need a `script`".into())),
            };
            if script.trim().is_empty() {
                return Err(invalid("script", "the script is empty".into()));
            }
            let success_code = match code {
                None => 0,
                Some(c) => i32::try_from(c)
                    .ok()
                    .filter(|c| (0..=255).contains(c))
                    .ok_or_else(|| {
                        invalid(
                            "successCode",
                            format!("successCode {c} is not an exit status (0-255)"),
                        )
                    })?,
            };
            Check::Script {
                script,
                target,
                success_code,
            }
        }
        RuleType::FileExists => {
            let (path, target) = file_path_and_target(raw.file, raw.path)?;
            Check::FileExists { path, target }
        }
        RuleType::FileContent => {
            let (path, target) = file_path_and_target(raw.file, raw.path)?;
            Check::FileContent { path, target }
        }
    };

    // Fields that the rule type does not use are most likely mistakes; say so.
    let used_by: [(&str, &[RuleType]); 7] = [
        (
            "resource",
            &[RuleType::ResourceExists, RuleType::ResourceProperty],
        ),
        ("property", &[RuleType::ResourceProperty]),
        ("command", &[RuleType::Command]),
        ("script", &[RuleType::Script]),
        ("file", &[RuleType::FileExists, RuleType::FileContent]),
        ("path", &[RuleType::FileExists, RuleType::FileContent]),
        ("successCode", &[RuleType::Script]),
    ];
    for (key, types) in used_by {
        if ctx.node.get(key).is_some() && !types.contains(&rule_type) {
            warnings.push(Warning::new(
                ctx.key_at(key),
                format!("rule `{id}`: `{key}` is not used by `{rule_type}` rules"),
            ));
        }
    }
    if nested_property.is_some() && rule_type != RuleType::ResourceProperty {
        warnings.push(Warning::new(
            ctx.nested_at("resource", "property"),
            format!("rule `{id}`: `resource.property` is not used by `{rule_type}` rules"),
        ));
    }

    if condition_kind.is_none() && raw.value.is_some() {
        warnings.push(Warning::new(
            ctx.key_at("value"),
            format!("rule `{id}`: `value` is ignored without a `condition`"),
        ));
    }
    let condition = match condition_kind {
        None => match rule_type {
            RuleType::ResourceExists | RuleType::FileExists => Some(Condition::Exists),
            RuleType::ResourceProperty | RuleType::FileContent => {
                return Err(invalid("type", format!("`{rule_type}` rules need a `condition`")));
            }
            RuleType::Command | RuleType::Script => None,
        },
        Some(kind) => {
            if !kind.applies_to(rule_type) {
                return Err(invalid(
                    "condition",
                    format!("condition `{kind}` cannot be used with `{rule_type}` rules"),
                ));
            }
            Some(build_condition(kind, raw.value.as_ref(), &id, ctx, warnings)?)
        }
    };

    if raw.error_message.as_deref().is_none_or(|m| m.trim().is_empty()) {
        warnings.push(Warning::new(
            ctx.at(),
            format!("rule `{id}` has no `errorMessage`: a failing student gets no advice"),
        ));
    }
    Ok(Rule {
        id,
        description: raw.description,
        check,
        condition,
        timeout,
        error_message: raw.error_message,
        location: ctx.at(),
    })
}

fn build_condition(
    kind: ConditionKind,
    value: Option<&Value>,
    id: &str,
    ctx: &RuleCtx<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Condition, LoadError> {
    let at = || ctx.key_at("value");
    let need = |what: &str| {
        LoadError::invalid(
            at(),
            format!("rule `{id}`: condition `{kind}` needs a `value` ({what})"),
        )
    };
    let text = || value.and_then(value_as_text).ok_or_else(|| need("a string"));
    let number = || value.and_then(value_as_number).ok_or_else(|| need("a number"));
    Ok(match kind {
        ConditionKind::Equals => match value {
            Some(v) if !v.is_null() => Condition::Equals(v.clone()),
            _ => return Err(need("the expected value")),
        },
        ConditionKind::Contains => Condition::Contains(text()?),
        ConditionKind::OutputEquals => Condition::OutputEquals(text()?),
        ConditionKind::OutputContains => Condition::OutputContains(text()?),
        ConditionKind::GreaterThan => Condition::GreaterThan(number()?),
        ConditionKind::LessThan => Condition::LessThan(number()?),
        ConditionKind::MatchesRegex => {
            let pattern = text()?;
            let compiled = Pattern::new(&pattern).map_err(|cause| LoadError::BadRegex {
                at: at(),
                rule: id.to_owned(),
                pattern: pattern.clone(),
                cause,
            })?;
            Condition::MatchesRegex(compiled)
        }
        ConditionKind::Exists | ConditionKind::NotExists => {
            if value.is_some_and(|v| !v.is_null()) {
                warnings.push(Warning::new(
                    at(),
                    format!("rule `{id}`: `value` is ignored by condition `{kind}`"),
                ));
            }
            if kind == ConditionKind::Exists {
                Condition::Exists
            } else {
                Condition::NotExists
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Result<Vec<Rule>, Vec<LoadError>>, Vec<Warning>) {
        let mut w = Vec::new();
        let r = load_rules(&SourceLocation::file("v.yaml"), text, &mut w);
        (r, w)
    }

    fn ok(text: &str) -> Vec<Rule> {
        let (r, _) = load(text);
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn errs(text: &str) -> Vec<LoadError> {
        load(text).0.expect_err("expected errors")
    }

    #[test]
    fn reference_example_loads() {
        let rules = ok(r#"
validation:
- id: namespace-exists
  type: resource_exists
  resource:
    kind: Namespace
    name: test-pods
  errorMessage: "Namespace test-pods not found"
- id: enforce-label
  type: resource_property
  resource:
    kind: Namespace
    name: test-pods
  property: .metadata.labels.pod-security\.kubernetes\.io/enforce
  condition: equals
  value: "baseline"
  errorMessage: "Pod Security enforcement label not set correctly"
- id: verify-runtime
  type: script
  script:
    script: |
      #!/bin/bash
      kubectl run test-pod --image=nginx --namespace=test-pods 2>&1 | grep -q "violates"
    target: control-plane
    successCode: 0
  errorMessage: "Pod Security Standards not enforced at runtime"
"#);
        assert_eq!(rules.len(), 3);
        assert!(matches!(rules[0].condition, Some(Condition::Exists)));
        assert_eq!(rules[0].location.line, Some(3));
        let Check::ResourceProperty { property, .. } = &rules[1].check else {
            panic!()
        };
        assert_eq!(
            property.translated(),
            "$.metadata.labels['pod-security.kubernetes.io/enforce']"
        );
        assert!(matches!(&rules[1].condition, Some(Condition::Equals(v)) if v == "baseline"));
        let Check::Script {
            target, success_code, ..
        } = &rules[2].check
        else {
            panic!()
        };
        assert_eq!((*target, *success_code), (Target::ControlPlane, 0));
    }

    #[test]
    fn author_variants_load() {
        let rules = ok(r#"
validation:
- id: out
  type: command
  command: {command: "cat /etc/x", target: worker-2}
  condition: output_equals
  value: ok
  timeout: 20s
- id: plain
  type: command
  command: kubectl get ns
  target: worker
  condition: output_contains
  value: 3
- id: f
  type: file_exists
  file: {path: /etc/kubernetes/admission.yaml, target: control-plane}
- id: fc
  type: file_content
  path: /etc/audit.yaml
  condition: matches_regex
  value: "level:\\s+Metadata"
- id: s
  type: script
  script: "exit 3"
  successCode: 3
  timeout: 45
"#);
        assert!(
            matches!(&rules[0].check, Check::Command { command, target: Target::WorkerN(2) } if command == "cat /etc/x")
        );
        assert_eq!(rules[0].timeout, Some(Duration::from_secs(20)));
        assert!(matches!(&rules[1].condition, Some(Condition::OutputContains(v)) if v == "3"));
        assert_eq!(rules[1].check.target(), Some(Target::Worker));
        assert!(
            matches!(&rules[2].check, Check::FileExists { path, .. } if path == "/etc/kubernetes/admission.yaml")
        );
        assert!(
            matches!(&rules[3].condition, Some(Condition::MatchesRegex(p)) if p.regex().unwrap().is_match("level:  Metadata"))
        );
        assert!(matches!(rules[4].check, Check::Script { success_code: 3, .. }));
        assert_eq!(rules[4].timeout, Some(Duration::from_secs(45)));
    }

    #[test]
    fn duplicate_rule_ids_are_rejected_with_both_lines() {
        let e = errs(
            "validation:\n- id: a\n  type: command\n  command: x\n- id: a\n  type: command\n  command: y\n",
        );
        assert!(
            matches!(&e[0], LoadError::DuplicateRuleId { id, first_line: 2, at } if id == "a" && at.line == Some(5)),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_type_and_condition_are_rejected_at_their_keys() {
        let e = errs(
            "validation:\n- id: a\n  type: http_get\n- id: b\n  type: command\n  command: x\n  condition: roughly\n  value: 1\n",
        );
        assert!(
            matches!(&e[0], LoadError::UnknownRuleType { found, at, .. } if found == "http_get" && at.line == Some(3))
        );
        assert!(
            matches!(&e[1], LoadError::UnknownCondition { found, at, .. } if found == "roughly" && at.line == Some(7))
        );
        assert!(e[1].to_string().contains("output_contains"), "{}", e[1]);
    }

    #[test]
    fn bad_regex_and_jsonpath_are_rejected() {
        let e = errs(
            "validation:\n- id: r\n  type: command\n  command: x\n  condition: matches_regex\n  value: \"([a-z\"\n\
             - id: p\n  type: resource_property\n  resource: {kind: Pod, name: x}\n  property: .spec.containers[0\n  condition: exists\n",
        );
        assert!(
            matches!(&e[0], LoadError::BadRegex { at, .. } if at.line == Some(6)),
            "{e:?}"
        );
        assert!(
            matches!(&e[1], LoadError::BadJsonPath { at, .. } if at.line == Some(10)),
            "{e:?}"
        );
    }

    #[test]
    fn operands_and_combinations_are_checked() {
        let e = errs(
            "validation:\n- id: a\n  type: command\n  command: x\n  condition: greater_than\n  value: many\n",
        );
        assert!(
            e[0].to_string().contains("needs a `value` (a number)"),
            "{}",
            e[0]
        );
        let e = errs(
            "validation:\n- id: a\n  type: resource_exists\n  resource: {kind: Pod}\n  condition: output_equals\n  value: x\n",
        );
        assert!(e[0].to_string().contains("cannot be used"), "{}", e[0]);
        let e = errs(
            "validation:\n- id: a\n  type: resource_property\n  resource: {kind: Pod}\n  property: .x\n",
        );
        assert!(e[0].to_string().contains("need a `condition`"), "{}", e[0]);
        let e = errs("validation:\n- id: a\n  type: command\n  command: {command: x, target: bastion}\n");
        assert!(
            matches!(&e[0], LoadError::BadTarget { found, at } if found == "bastion" && at.line == Some(4)),
            "{e:?}"
        );
    }

    #[test]
    fn truncated_input_never_panics() {
        let text = "validation:\n- id: p\n  type: resource_property\n  resource: {kind: Pod, name: x}\n  \
                    property: .spec.containers[?(@.name==\"a\")].image\n  condition: matches_regex\n  value: \"^nginx:[0-9.]+$\"\n\
                    - id: s\n  type: script\n  script: {script: \"exit 0\", target: worker-2, successCode: 0}\n  timeout: 2m\n";
        for end in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
            let _ = load(&text[..end]);
        }
    }

    #[test]
    fn unknown_and_unused_fields_are_warnings() {
        let (r, w) = load(
            "validation:\n- id: a\n  type: command\n  command: x\n  property: .y\n  errorMesage: typo\n",
        );
        assert!(r.is_ok());
        let msgs: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("v.yaml:6:3") && m.contains("errorMesage")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("v.yaml:5:3") && m.contains("not used")),
            "{msgs:?}"
        );
    }
}
