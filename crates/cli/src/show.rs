//! `cks scenario show`: print one parsed scenario for an author to check at a glance.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cks_scenarios::{Catalog, Check, Condition, Rule, Scenario, SetupAction};

pub fn run(id: &str, dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::load(dir).with_context(|| format!("cannot load catalog {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    let Some(scenario) = catalog.get(id) else {
        if let Some(failed) = catalog.scenario_errors().iter().find(|s| s.scenario == id) {
            writeln!(out, "scenario `{id}` does not load:")?;
            for e in &failed.errors {
                writeln!(out, "{}: error: {}", e.location(), e.message())?;
            }
        } else {
            let ids: Vec<&str> = catalog.list().map(|s| s.id()).collect();
            writeln!(
                out,
                "no scenario `{id}` in {} (known: {})",
                dir.display(),
                ids.join(", ")
            )?;
        }
        return Ok(ExitCode::FAILURE);
    };
    if json {
        serde_json::to_writer_pretty(&mut out, scenario.as_ref())?;
        writeln!(out)?;
    } else {
        out.write_all(render(scenario).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, (secs % 3600) / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// Indents every line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn condition(c: &Condition) -> String {
    let name = c.kind().as_str();
    match c {
        Condition::Exists | Condition::NotExists => name.to_owned(),
        Condition::Equals(v) => format!("{name} {v}"),
        Condition::Contains(s) | Condition::OutputEquals(s) | Condition::OutputContains(s) => {
            format!("{name} {s:?}")
        }
        Condition::GreaterThan(n) | Condition::LessThan(n) => format!("{name} {n}"),
        Condition::MatchesRegex(p) => format!("{name} /{}/", p.as_str()),
    }
}

fn rule(r: &Rule) -> String {
    let mut s = format!("- {} [{}]", r.id, r.rule_type());
    let what = match &r.check {
        Check::ResourceExists { resource } | Check::ResourceProperty { resource, .. } => {
            let mut w = resource.kind.clone();
            if let Some(n) = &resource.name {
                write!(w, "/{n}").ok();
            }
            if let Some(ns) = &resource.namespace {
                write!(w, " in {ns}").ok();
            }
            if let Check::ResourceProperty { property, .. } = &r.check {
                write!(w, " {}", property.as_str()).ok();
            }
            w
        }
        Check::Command { command, target } => format!("on {target}: {}", command.trim()),
        Check::Script {
            target, success_code, ..
        } => format!("script on {target}, expects exit {success_code}"),
        Check::FileExists { path, target } | Check::FileContent { path, target } => {
            format!("{path} on {target}")
        }
    };
    write!(s, " {what}").ok();
    if let Some(c) = &r.condition {
        write!(s, " => {}", condition(c)).ok();
    }
    if let Some(t) = r.timeout {
        write!(s, " (timeout {})", duration(t)).ok();
    }
    if let Check::Script { script, .. } = &r.check {
        write!(s, "\n{}", indent(script.trim_end(), 6)).ok();
    }
    if let Some(m) = &r.error_message {
        write!(s, "\n      on failure: {m}").ok();
    }
    s
}

/// The human-readable view.
pub fn render(sc: &Scenario) -> String {
    let m = &sc.metadata;
    let mut s = String::new();
    let _ = writeln!(s, "{} — {}", m.id, m.title);
    let mut facts = vec![format!("category {}", m.category.as_deref().unwrap_or("(none)"))];
    if let Some(d) = m.difficulty {
        facts.push(format!("{d:?}").to_lowercase());
    }
    if let Some(t) = m.time_estimate {
        facts.push(duration(t));
    }
    if let Some(v) = &m.version {
        facts.push(format!("version {v}"));
    }
    let _ = writeln!(s, "  {}", facts.join(" · "));
    let r = &m.requirements;
    let mut req = format!(
        "  needs {} control plane + {} worker(s)",
        r.nodes.control_plane, r.nodes.workers
    );
    if let Some(v) = &r.kubernetes_version {
        let _ = write!(req, ", Kubernetes {v}");
    }
    if let Some(c) = &r.resources.cpu {
        let _ = write!(req, ", cpu {c}");
    }
    if let Some(mem) = &r.resources.memory {
        let _ = write!(req, ", memory {mem}");
    }
    let _ = writeln!(s, "{req}");
    if !m.topics.is_empty() {
        let _ = writeln!(s, "  topics: {}", m.topics.join(", "));
    }
    let _ = writeln!(s, "\n{}\n", indent(&m.description, 2));

    if !sc.setup.is_empty() {
        let _ = writeln!(s, "Setup ({} steps)", sc.setup.len());
        for (i, step) in sc.setup.iter().enumerate() {
            let kind = match &step.action {
                SetupAction::Command { .. } => "command",
                SetupAction::Script { .. } => "script",
                SetupAction::KubectlApply { .. } => "kubectl_apply",
            };
            let mut line = format!("  {}. {} [{kind}] on {}", i + 1, step.id, step.target);
            if let Some(t) = step.timeout {
                let _ = write!(line, ", timeout {}", duration(t));
            }
            if step.retry_count > 0 {
                let _ = write!(line, ", {} retries", step.retry_count);
            }
            let _ = writeln!(s, "{line}");
            if let Some(d) = &step.description {
                let _ = writeln!(s, "{}", indent(d.trim(), 5));
            }
            for c in &step.conditions {
                let within = c
                    .timeout
                    .or(step.timeout)
                    .map(|t| format!(" (within {})", duration(t)));
                let _ = writeln!(
                    s,
                    "     then waits until {}{}",
                    c.wait_for,
                    within.unwrap_or_default()
                );
            }
        }
        let _ = writeln!(s);
    }

    for task in &sc.tasks {
        let _ = writeln!(s, "Task {} ({}): {}", task.number, task.id, task.title);
        let _ = writeln!(s, "  file: {}", task.file.display());
        if let Some(d) = &task.description {
            let _ = writeln!(s, "{}", indent(d, 2));
        }
        let list = |s: &mut String, title: &str, items: &[String]| {
            if !items.is_empty() {
                let _ = writeln!(s, "  {title}:");
                for item in items {
                    let _ = writeln!(s, "    - {}", indent(item, 6).trim_start());
                }
            }
        };
        list(&mut s, "Objectives", &task.objectives);
        list(&mut s, "Steps", &task.steps);
        if !task.hints.is_empty() {
            let _ = writeln!(s, "  Hints:");
            for (i, h) in task.hints.iter().enumerate() {
                let _ = writeln!(s, "    {}. {}", i + 1, h.summary);
                if !h.body.is_empty() {
                    let _ = writeln!(s, "{}", indent(&h.body, 7));
                }
            }
        }
        list(&mut s, "Validation criteria", &task.validation_criteria);
        if task.solution.is_some() {
            let _ = writeln!(s, "  Solution: included");
        }
        let _ = writeln!(
            s,
            "  Rules ({}, from {}):",
            task.rules.len(),
            task.validation_file.display()
        );
        for r in &task.rules {
            let _ = writeln!(s, "{}", indent(&rule(r), 4));
        }
        let _ = writeln!(s);
    }
    s
}
