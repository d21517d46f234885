//! Setup steps (`setup/init.yaml`): what runs on a freshly assigned practice cluster before
//! the student starts, such as applying manifests or breaking a component for a
//! troubleshooting scenario.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LoadError, Pos, SourceLocation, Warning};
use crate::fields::{Inline, RawDuration, Target, ser_opt_secs};
use crate::rules::{CommandBlock, ResourceRef, ScriptBlock, parse_target, parse_timeout};
use crate::yaml::{self, Node};

/// One setup step. Steps run in order; a step that fails is retried `retry_count` times.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupStep {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub action: SetupAction,
    /// The VM for commands and scripts; manifests go to the cluster API.
    pub target: Target,
    #[serde(serialize_with = "ser_opt_secs", rename = "timeoutSeconds")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra attempts after the first failure.
    pub retry_count: u32,
    /// What must hold after the action succeeded before the step counts as done (the
    /// reference system's `conditions`); each is checked until it holds or its timeout passes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SetupCondition>,
    pub location: SourceLocation,
}

/// A condition a setup step waits for after its action, such as a Deployment that must exist
/// or a command that must succeed. A condition that does not hold within its timeout fails
/// the attempt, which is then retried like a failed action.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupCondition {
    pub wait_for: WaitFor,
    /// How long to keep checking; the step's timeout applies when absent.
    #[serde(serialize_with = "ser_opt_secs", rename = "timeoutSeconds")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    pub location: SourceLocation,
}

/// What a [`SetupCondition`] checks.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum WaitFor {
    /// The object exists in the practice cluster.
    ResourceExists { resource: ResourceRef },
    /// The command exits with status 0 on the target VM.
    Command { command: String, target: Target },
}

/// What a setup step does.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum SetupAction {
    /// A shell command on the target VM.
    Command { command: String },
    /// A script on the target VM; succeeds when it exits with `success_code`.
    Script { script: String, success_code: i32 },
    /// Kubernetes manifests (one or more YAML documents) applied to the practice cluster.
    KubectlApply { manifest: String },
}

impl std::fmt::Display for WaitFor {
    /// As a phrase for messages: `Deployment default/httpd exists`, `` `test -f x` succeeds on worker``.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitFor::ResourceExists { resource } => {
                let name = resource.name.as_deref().unwrap_or("(any)");
                match &resource.namespace {
                    Some(ns) => write!(f, "{} {ns}/{name} exists", resource.kind),
                    None => write!(f, "{} {name} exists", resource.kind),
                }
            }
            WaitFor::Command { command, target } => write!(f, "`{command}` succeeds on {target}"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawSetupFile {
    #[serde(alias = "setup")]
    steps: Option<Vec<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStep {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    description: Option<String>,
    command: Option<Inline<CommandBlock>>,
    script: Option<Inline<ScriptBlock>>,
    #[serde(alias = "content", alias = "yaml")]
    manifest: Option<String>,
    target: Option<String>,
    timeout: Option<RawDuration>,
    #[serde(alias = "retries")]
    retry_count: Option<u32>,
    #[serde(alias = "expectedExitCode", alias = "exitCode")]
    success_code: Option<i64>,
    conditions: Option<Vec<RawCondition>>,
}

#[derive(Debug, Deserialize)]
struct RawCondition {
    #[serde(rename = "type")]
    kind: Option<String>,
    resource: Option<Inline<ResourceRef>>,
    command: Option<Inline<CommandBlock>>,
    target: Option<String>,
    timeout: Option<RawDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StepType {
    Command,
    Script,
    Apply,
}

impl StepType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "command" => StepType::Command,
            "script" => StepType::Script,
            "kubectl_apply" | "apply" | "manifest" | "kubectl-apply" => StepType::Apply,
            _ => return None,
        })
    }
}

/// Loads `setup/init.yaml`. Every step is checked; all problems are returned.
pub(crate) fn load_setup(
    file: &SourceLocation,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<SetupStep>, Vec<LoadError>> {
    let (raw, tree): (RawSetupFile, Node) = yaml::parse(file, text, warnings).map_err(|e| vec![e])?;
    let Some(raw_steps) = raw.steps else {
        return Err(vec![LoadError::invalid(
            file.with_pos(Pos::new(1, 1)),
            "missing the `steps:` list",
        )]);
    };
    let list = tree.get("steps").or_else(|| tree.get("setup"));
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    let mut ids = HashSet::new();
    for (i, raw) in raw_steps.into_iter().enumerate() {
        let node = list.and_then(|l| l.index(i)).cloned().unwrap_or_default();
        match convert_step(raw, i, file, &node, warnings) {
            Ok(step) => {
                if !ids.insert(step.id.clone()) {
                    errors.push(LoadError::invalid(
                        step.location.clone(),
                        format!("duplicate setup step id `{}`", step.id),
                    ));
                }
                steps.push(step);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(steps) } else { Err(errors) }
}

fn convert_step(
    raw: RawStep,
    index: usize,
    file: &SourceLocation,
    node: &Node,
    warnings: &mut Vec<Warning>,
) -> Result<SetupStep, LoadError> {
    let at = file.with_pos(node.pos);
    let key_at = |k: &str| file.with_pos(node.key_pos(k).unwrap_or(node.pos));
    let nested_at = |b: &str, k: &str| {
        file.with_pos(
            node.get(b)
                .and_then(|n| n.key_pos(k))
                .or_else(|| node.key_pos(b))
                .unwrap_or(node.pos),
        )
    };
    let id = raw
        .id
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("step-{}", index + 1));
    let invalid =
        |key: &str, msg: String| LoadError::invalid(key_at(key), format!("setup step `{id}`: {msg}"));

    let step_type = match raw.kind.as_deref() {
        Some(t) => StepType::parse(t).ok_or_else(|| {
            invalid(
                "type",
                format!("unknown step type `{t}` (expected command, script or kubectl_apply)"),
            )
        })?,
        // Without a type, the one action field present decides.
        None => match (
            raw.command.is_some(),
            raw.script.is_some(),
            raw.manifest.is_some(),
        ) {
            (true, false, false) => StepType::Command,
            (false, true, false) => StepType::Script,
            (false, false, true) => StepType::Apply,
            _ => {
                return Err(invalid(
                    "type",
                    "needs a `type` and exactly one of `command`, `script` or `manifest`".into(),
                ));
            }
        },
    };
    let mut target = parse_target(raw.target.as_deref(), &key_at("target"))?;
    let mut timeout = parse_timeout(raw.timeout.as_ref(), &key_at("timeout"))?;
    let action = match step_type {
        StepType::Command => {
            let command = match raw.command {
                Some(Inline::Text(c)) => c,
                Some(Inline::Block(b)) => {
                    if b.target.is_some() {
                        target = parse_target(b.target.as_deref(), &nested_at("command", "target"))?;
                    }
                    if timeout.is_none() {
                        timeout = parse_timeout(b.timeout.as_ref(), &nested_at("command", "timeout"))?;
                    }
                    b.command
                }
                None => return Err(invalid("type", "`command` steps need a `command`".into())),
            };
            SetupAction::Command { command }
        }
        StepType::Script => {
            let (script, code) = match raw.script {
                Some(Inline::Text(s)) => (s, raw.success_code),
                Some(Inline::Block(b)) => {
                    if b.target.is_some() {
                        target = parse_target(b.target.as_deref(), &nested_at("script", "target"))?;
                    }
                    if timeout.is_none() {
                        timeout = parse_timeout(b.timeout.as_ref(), &nested_at("script", "timeout"))?;
                    }
                    (b.script, b.success_code.or(raw.success_code))
                }
                None => return Err(invalid("type", "`script` steps need a `script`".into())),
            };
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
            SetupAction::Script { script, success_code }
        }
        StepType::Apply => {
            let Some(manifest) = raw.manifest else {
                return Err(invalid("type", "`kubectl_apply` steps need a `manifest`".into()));
            };
            check_manifest(&manifest).map_err(|msg| invalid("manifest", msg))?;
            SetupAction::KubectlApply { manifest }
        }
    };
    let mut conditions = Vec::new();
    for (i, c) in raw.conditions.into_iter().flatten().enumerate() {
        let node = node
            .get("conditions")
            .and_then(|l| l.index(i))
            .cloned()
            .unwrap_or_default();
        conditions.extend(convert_condition(c, &id, target, file, &node, warnings)?);
    }
    Ok(SetupStep {
        id,
        description: raw.description,
        action,
        target,
        timeout,
        retry_count: raw.retry_count.unwrap_or(0),
        conditions,
        location: at,
    })
}

/// One entry of a step's `conditions`. `None` (with a warning) for a condition type this
/// loader does not know: a scenario written for the reference system must still load.
fn convert_condition(
    raw: RawCondition,
    step: &str,
    step_target: Target,
    file: &SourceLocation,
    node: &Node,
    warnings: &mut Vec<Warning>,
) -> Result<Option<SetupCondition>, LoadError> {
    let key_at = |k: &str| file.with_pos(node.key_pos(k).unwrap_or(node.pos));
    let invalid = |key: &str, msg: String| {
        LoadError::invalid(key_at(key), format!("setup step `{step}`: condition: {msg}"))
    };
    let mut target = match raw.target.as_deref() {
        Some(t) => parse_target(Some(t), &key_at("target"))?,
        None => step_target,
    };
    let mut timeout = parse_timeout(raw.timeout.as_ref(), &key_at("timeout"))?;
    let kind = raw.kind.as_deref().map(str::trim);
    let wait_for = match kind {
        Some("resource_exists") | None if raw.resource.is_some() => {
            let resource = match raw.resource {
                Some(Inline::Block(r)) => r,
                // `kind/name`, as kubectl writes it.
                Some(Inline::Text(t)) => match t.trim().split_once('/') {
                    Some((kind, name)) if !kind.is_empty() && !name.is_empty() => ResourceRef {
                        kind: kind.to_owned(),
                        name: Some(name.to_owned()),
                        namespace: None,
                        api_version: None,
                        label_selector: None,
                    },
                    _ => {
                        return Err(invalid(
                            "resource",
                            format!(
                                "`resource: {t}` is neither `kind/name` nor a {{kind, name, namespace}} block"
                            ),
                        ));
                    }
                },
                None => unreachable!("checked by the match guard"),
            };
            if resource.kind.trim().is_empty() {
                return Err(invalid("resource", "`resource.kind` is empty".into()));
            }
            WaitFor::ResourceExists { resource }
        }
        Some("command") | None if raw.command.is_some() => {
            let command = match raw.command {
                Some(Inline::Text(c)) => c,
                Some(Inline::Block(b)) => {
                    if b.target.is_some() {
                        target = parse_target(b.target.as_deref(), &key_at("command"))?;
                    }
                    if timeout.is_none() {
                        timeout = parse_timeout(b.timeout.as_ref(), &key_at("command"))?;
                    }
                    b.command
                }
                None => unreachable!("checked by the match guard"),
            };
            if command.trim().is_empty() {
                return Err(invalid("command", "the command is empty".into()));
            }
            WaitFor::Command { command, target }
        }
        Some(t @ ("resource_exists" | "command")) => {
            let needs = if t == "command" {
                "a `command`"
            } else {
                "a `resource`"
            };
            return Err(invalid("type", format!("`{t}` conditions need {needs}")));
        }
        None => {
            return Err(invalid(
                "type",
                "needs a `type` (resource_exists or command) with a `resource` or a `command`".into(),
            ));
        }
        Some(other) => {
            warnings.push(Warning::new(
                key_at("type"),
                format!(
                    "setup step `{step}`: condition type `{other}` is not known (resource_exists, command); it is not checked"
                ),
            ));
            return Ok(None);
        }
    };
    Ok(Some(SetupCondition {
        wait_for,
        timeout,
        location: file.with_pos(node.pos),
    }))
}

/// A manifest must be YAML documents that each name an apiVersion and a kind; catching this
/// at load time beats a failed setup on a student's cluster.
fn check_manifest(manifest: &str) -> Result<(), String> {
    let docs: Vec<Option<serde_json::Value>> =
        serde_saphyr::from_multiple_with_options(manifest, yaml::options()).map_err(|e| {
            let inner = e.without_snippet();
            match inner.location() {
                Some(l) => format!("manifest line {}: {}", l.line(), inner),
                None => format!("manifest: {inner}"),
            }
        })?;
    let docs: Vec<serde_json::Value> = docs.into_iter().flatten().collect();
    if docs.is_empty() {
        return Err("the manifest is empty".into());
    }
    for (i, doc) in docs.iter().enumerate() {
        let has = |k: &str| doc.get(k).and_then(|v| v.as_str()).is_some_and(|s| !s.is_empty());
        if !has("apiVersion") || !has("kind") {
            return Err(format!("manifest document {} has no apiVersion or kind", i + 1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<SetupStep>, Vec<LoadError>> {
        load_setup(&SourceLocation::file("init.yaml"), text, &mut Vec::new())
    }

    #[test]
    fn steps_with_timeouts_retries_and_blocks_load() {
        let steps = load(
            "steps:\n- id: ns\n  type: kubectl_apply\n  timeout: 60\n  retryCount: 3\n  manifest: |\n    apiVersion: v1\n    kind: Namespace\n    metadata: {name: x}\n\
             - type: script\n  script: {script: 'exit 0', target: worker-1, successCode: 0}\n  timeout: 2m\n\
             - command: {command: 'systemctl stop kubelet', target: worker}\n",
        )
        .unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].retry_count, 3);
        assert_eq!(steps[0].timeout, Some(Duration::from_secs(60)));
        assert!(matches!(steps[0].action, SetupAction::KubectlApply { .. }));
        assert_eq!(steps[1].id, "step-2");
        assert_eq!(steps[1].target, Target::WorkerN(1));
        assert_eq!(steps[1].timeout, Some(Duration::from_secs(120)));
        assert!(matches!(&steps[2].action, SetupAction::Command { command } if command.contains("kubelet")));
        assert_eq!(steps[2].target, Target::Worker);
        assert_eq!(steps[2].location.line, Some(13));
    }

    #[test]
    fn conditions_load_in_every_written_form() {
        let mut warnings = Vec::new();
        let steps = load_setup(
            &SourceLocation::file("init.yaml"),
            "steps:\n- id: a\n  type: command\n  command: x\n  target: worker\n  timeout: 45s\n  conditions:\n\
             \x20 - type: resource_exists\n    resource: pod/web\n\
             \x20 - command: {command: test -f /done, target: control-plane, timeout: 10}\n\
             \x20 - type: command\n    command: test -f /w\n\
             \x20 - type: pod_ready\n    resource: pod/web\n",
            &mut warnings,
        )
        .unwrap();
        let c = &steps[0].conditions;
        assert_eq!(c.len(), 3, "the unknown type is left out");
        assert!(
            matches!(&c[0].wait_for, WaitFor::ResourceExists { resource } if resource.kind == "pod" && resource.name.as_deref() == Some("web"))
        );
        assert!(matches!(
            &c[1].wait_for,
            WaitFor::Command {
                target: Target::ControlPlane,
                ..
            }
        ));
        assert_eq!(c[1].timeout, Some(Duration::from_secs(10)));
        // A condition's command runs where its step runs, unless it says otherwise.
        assert!(matches!(
            &c[2].wait_for,
            WaitFor::Command {
                target: Target::Worker,
                ..
            }
        ));
        assert_eq!(c[2].timeout, None);
        assert!(
            warnings.iter().any(|w| w.to_string().contains("init.yaml:13:5")
                && w.to_string().contains("`pod_ready` is not known")),
            "{warnings:?}"
        );
        // Go durations, as the reference system writes timeouts.
        let steps = load(
            "steps:\n- command: x\n  timeout: 1m30s\n  conditions:\n  - command: y\n    timeout: 5m0s\n",
        )
        .unwrap();
        assert_eq!(steps[0].timeout, Some(Duration::from_secs(90)));
        assert_eq!(steps[0].conditions[0].timeout, Some(Duration::from_secs(300)));
        let e = load("steps:\n- command: x\n  conditions:\n  - type: resource_exists\n").unwrap_err();
        assert!(e[0].to_string().contains("need a `resource`"), "{}", e[0]);
        assert_eq!(e[0].location().line, Some(4));
    }

    #[test]
    fn bad_steps_are_rejected() {
        let e = load("steps:\n- id: a\n  type: teleport\n").unwrap_err();
        assert!(
            e[0].to_string().contains("unknown step type `teleport`"),
            "{}",
            e[0]
        );
        let e = load("steps:\n- id: a\n  type: kubectl_apply\n  manifest: |\n    kind: Pod\n").unwrap_err();
        assert!(e[0].to_string().contains("no apiVersion"), "{}", e[0]);
        assert_eq!(e[0].location().line, Some(4));
        let e = load("steps:\n- id: a\n  command: x\n- id: a\n  command: y\n").unwrap_err();
        assert!(e[0].to_string().contains("duplicate setup step id"), "{}", e[0]);
    }
}
