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
