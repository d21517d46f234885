//! `cks scenario lint` and `cks scenario show`, run as the built binary.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn cks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cks"))
        .args(args)
        .output()
        .expect("run cks")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(path: impl AsRef<Path>, content: &str) {
    let path = path.as_ref();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

const TASK: &str = "# Label the Namespace\n\n## Description\nLabel it.\n\n## Objectives\n- Add the label\n\n\
                    ## Hints\n<details>\n<summary>Which label?</summary>\n\npod-security.kubernetes.io/enforce\n</details>\n";

fn good_scenario(root: &Path, id: &str) {
    let dir = root.join(id);
    write(
        dir.join("metadata.yaml"),
        &format!("id: {id}\ntitle: PSA for {id}\ndescription: d\ndifficulty: beginner\ncategory: c\n"),
    );
    write(dir.join("tasks/01-label.md"), TASK);
    write(
        dir.join("validation/01-validation.yaml"),
        "validation:\n  - id: enforce-label\n    type: resource_property\n    resource: {kind: Namespace, name: test-pods}\n    \
         property: .metadata.labels.pod-security\\.kubernetes\\.io/enforce\n    condition: equals\n    value: baseline\n    \
         errorMessage: label missing\n",
    );
}

fn catalog() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path().join("categories.yaml"),
        "categories:\n  - id: c\n    name: C\n",
    );
    good_scenario(tmp.path(), "psa-basics");
    tmp
}

#[test]
fn lint_of_a_clean_catalog_exits_zero() {
    let dir = catalog();
    let out = cks(&["scenario", "lint", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("1 scenario(s) loaded, 0 failed, 0 error(s)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn lint_reports_every_problem_with_file_and_line_and_exits_one() {
    let dir = catalog();
    good_scenario(dir.path(), "second");
    write(
        dir.path().join("second/validation/01-validation.yaml"),
        "validation:\n  - id: a\n    type: command\n    command: x\n    condition: matches_regex\n    value: \"[\"\n",
    );
    write(dir.path().join("second/tasks/02-more.md"), TASK);
    let out = cks(&["scenario", "lint", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("second/validation/01-validation.yaml:6:5: error: rule `a`: invalid regex"),
        "{text}"
    );
    assert!(
        text.contains("second/tasks/02-more.md: error: task 02 has no validation file"),
        "{text}"
    );
    assert!(
        text.contains("1 scenario(s) loaded, 1 failed, 2 error(s)"),
        "{text}"
    );
}

#[test]
fn lint_json_is_machine_readable() {
    let dir = catalog();
    write(
        dir.path().join("psa-basics/metadata.yaml"),
        "id: psa-basics\ntitle: t\ncategory: c\ncolour: blue\n",
    );
    write(dir.path().join("broken/metadata.yaml"), "id: broken\n");
    let out = cks(&["scenario", "lint", "--json", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["ok"], false);
    assert_eq!(report["scenarios"], serde_json::json!(["psa-basics"]));
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["category"] == "invalid"
        && e["file"].as_str().unwrap().ends_with("broken/metadata.yaml")
        && e["line"] == 1));
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains("colour") && w["at"]["line"] == 4),
        "{warnings:?}"
    );
}

#[test]
fn lint_strict_fails_on_warnings() {
    let dir = catalog();
    write(
        dir.path().join("psa-basics/metadata.yaml"),
        "id: psa-basics\ntitle: t\ndescription: d\ncategory: c\ncolour: blue\n",
    );
    let path = dir.path().to_str().unwrap();
    assert!(cks(&["scenario", "lint", path]).status.success());
    let out = cks(&["scenario", "lint", "--strict", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("metadata.yaml:5:1: warning: unknown field `colour` is ignored"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn lint_accepts_a_single_scenario_directory() {
    let dir = catalog();
    let out = cks(&[
        "scenario",
        "lint",
        dir.path().join("psa-basics").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn lint_of_a_missing_directory_is_a_usage_error() {
    let out = cks(&["scenario", "lint", "/nonexistent/catalog"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/catalog"));
}

#[test]
fn show_prints_tasks_hints_and_rules() {
    let dir = catalog();
    let out = cks(&[
        "scenario",
        "show",
        "psa-basics",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = stdout(&out);
    for expected in [
        "psa-basics — PSA for psa-basics",
        "Task 1 (task-1): Label the Namespace",
        "1. Which label?",
        "pod-security.kubernetes.io/enforce",
        "- enforce-label [resource_property] Namespace/test-pods",
        "=> equals \"baseline\"",
        "on failure: label missing",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let out = cks(&[
        "scenario",
        "show",
        "psa-basics",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tasks"][0]["rules"][0]["check"]["type"], "resource_property");
}

#[test]
fn show_of_an_unknown_or_broken_scenario_fails() {
    let dir = catalog();
    write(dir.path().join("broken/metadata.yaml"), "id: broken\n");
    let out = cks(&["scenario", "show", "nope", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("no scenario `nope`"));
    let out = cks(&[
        "scenario",
        "show",
        "broken",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("does not load"));
}
