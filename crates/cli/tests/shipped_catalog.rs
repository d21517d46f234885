//! The shipped catalog (`scenarios/` at the repository root) must lint without errors.

use std::path::Path;
use std::process::Command;

/// `cks scenario lint --json` of `dir` (relative to this crate): its report, once it is known
/// to list no error and to have exited successfully.
fn lint_without_errors(dir: &str) -> serde_json::Value {
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let out = Command::new(env!("CARGO_BIN_EXE_cks"))
        .args(["scenario", "lint", "--json"])
        .arg(&catalog)
        .output()
        .expect("run cks");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lint prints JSON");
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
    assert!(out.status.success());
    report
}

#[test]
fn shipped_catalog_lints_without_errors() {
    let report = lint_without_errors("../../scenarios");
    assert!(
        !report["scenarios"].as_array().unwrap().is_empty(),
        "no scenarios found"
    );
}

/// A catalog written for the reference system (`crates/scenarios/tests/fixtures/reference`)
/// lints with warnings at most: never an error, so it loads unchanged.
#[test]
fn a_reference_system_catalog_lints_with_warnings_only() {
    let report = lint_without_errors("../scenarios/tests/fixtures/reference");
    assert_eq!(
        report["scenarios"],
        serde_json::json!(["basic-pod-security", "falco-runtime-security", "kubectl-contexts"])
    );
}
