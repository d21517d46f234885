//! The shipped catalog (`scenarios/` at the repository root) must lint without errors.

use std::path::Path;
use std::process::Command;

#[test]
fn shipped_catalog_lints_without_errors() {
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let out = Command::new(env!("CARGO_BIN_EXE_cks"))
        .args(["scenario", "lint", "--json"])
        .arg(&catalog)
        .output()
        .expect("run cks");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lint prints JSON");
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
    assert!(out.status.success());
    assert!(
        !report["scenarios"].as_array().unwrap().is_empty(),
        "no scenarios found"
    );
}

/// A catalog written for the reference system (`crates/scenarios/tests/fixtures/reference`)
/// lints with warnings at most: never an error, so it loads unchanged.
#[test]
fn a_reference_system_catalog_lints_with_warnings_only() {
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/tests/fixtures/reference");
    let out = Command::new(env!("CARGO_BIN_EXE_cks"))
        .args(["scenario", "lint", "--json"])
        .arg(&catalog)
        .output()
        .expect("run cks");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lint prints JSON");
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
    assert!(out.status.success());
    assert_eq!(
        report["scenarios"],
        serde_json::json!(["basic-pod-security", "falco-runtime-security", "kubectl-contexts"])
    );
}
