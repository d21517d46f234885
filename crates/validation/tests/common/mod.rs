//! Shared helpers for the integration tests: scenarios built from rule YAML in a temp dir, so
//! tests exercise rules exactly as the catalog loader produces them.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use cks_scenarios::{Catalog, LoadOptions, Scenario};
use cks_validation::{RuleOutcome, ValidationReport};

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("has a parent")).expect("create dir");
    fs::write(path, content).expect("write file");
}

/// A scenario with one task per entry of `tasks`, each entry the `validation:` list of that
/// task's rules.
pub fn scenario(tasks: &[&str]) -> Scenario {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("engine-test");
    write(
        &dir.join("metadata.yaml"),
        "id: engine-test\ntitle: Engine test\ndescription: Rules for engine tests\ncategory: cluster-hardening\n",
    );
    for (i, rules) in tasks.iter().enumerate() {
        let n = i + 1;
        write(
            &dir.join(format!("tasks/{n:02}-task.md")),
            &format!("# Task {n}\n## Description\nDo task {n}.\n"),
        );
        write(
            &dir.join(format!("validation/{n:02}-validation.yaml")),
            &format!("validation:\n{rules}"),
        );
    }
    let catalog = Catalog::load_scenario_dir(&dir, &LoadOptions::default()).expect("catalog loads");
    let errors: Vec<String> = catalog.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "scenario does not load: {errors:#?}");
    let scenario = catalog.get("engine-test").expect("scenario loaded");
    Scenario::clone(scenario)
}

/// The outcome of rule `id`.
pub fn outcome<'a>(report: &'a ValidationReport, id: &str) -> &'a RuleOutcome {
    report
        .results
        .iter()
        .find(|r| r.rule == id)
        .unwrap_or_else(|| panic!("no result for rule `{id}` in {report:#?}"))
}

/// Asserts the rule passed, showing the whole outcome otherwise.
pub fn assert_passed(report: &ValidationReport, id: &str) {
    let o = outcome(report, id);
    assert!(o.passed && o.error.is_none(), "rule `{id}` should pass: {o:#?}");
}

/// Asserts the rule was evaluated and failed.
pub fn assert_failed(report: &ValidationReport, id: &str) -> RuleOutcome {
    let o = outcome(report, id);
    assert!(!o.passed && o.error.is_none(), "rule `{id}` should fail: {o:#?}");
    o.clone()
}

/// Asserts the rule could not be evaluated, with an error of `category`.
pub fn assert_error(report: &ValidationReport, id: &str, category: &str) -> RuleOutcome {
    let o = outcome(report, id);
    assert!(!o.passed, "rule `{id}` should not pass: {o:#?}");
    assert_eq!(
        o.error.as_ref().map(|e| e.category()),
        Some(category),
        "rule `{id}`: {o:#?}"
    );
    o.clone()
}
