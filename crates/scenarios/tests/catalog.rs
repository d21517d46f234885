//! Catalog loading end to end on directories built in a temp dir: the reference format, author
//! variants, per-scenario error isolation, and every kind of bad input the loader must turn
//! into a clear error rather than a panic.

use std::fs;
use std::path::{Path, PathBuf};

use cks_scenarios::{Catalog, Check, Condition, LoadError, LoadOptions, SetupAction, Target};

const CATEGORIES: &str = "categories:\n  - id: cluster-hardening\n    name: Cluster Hardening\n";

/// The example scenario of the reference system description, written as that system wants.
const REF_TASK: &str = r#"# Enforce Pod Security Standards
## Description
Configure Pod Security Admission in the test-pods namespace.
## Objectives
- Create namespace with pod-security labels
- Verify enforcement with test pod
- Document security context requirements
## Step-by-Step Guide
1. Create namespace: `kubectl create namespace test-pods`
2. Label namespace: `kubectl label namespace test-pods pod-security.kubernetes.io/enforce=baseline`
## Hints
<details>
<summary>Check current labels</summary>
Use kubectl get namespace test-pods -o yaml to view current configuration.
</details>"#;

const REF_VALIDATION: &str = r#"validation:
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
      test $? -eq 0 # Should violate security policy
    target: control-plane
    successCode: 0
  errorMessage: "Pod Security Standards not enforced at runtime"
"#;

fn write(path: impl AsRef<Path>, content: impl AsRef<[u8]>) {
    let path = path.as_ref();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn metadata(id: &str) -> String {
    format!(
        "id: {id}\ntitle: Title of {id}\ndescription: About {id}\nversion: \"1.0.0\"\ndifficulty: beginner\n\
         timeEstimate: 20m\ntopics: [pod-security]\ncategory: cluster-hardening\n"
    )
}

/// Writes a valid one-task scenario `id` under `root`.
fn scenario(root: &Path, id: &str) -> PathBuf {
    let dir = root.join(id);
    write(dir.join("metadata.yaml"), metadata(id));
    write(dir.join("tasks/01-task.md"), REF_TASK);
    write(dir.join("validation/01-validation.yaml"), REF_VALIDATION);
    dir
}

fn catalog_root() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path().join("categories.yaml"), CATEGORIES);
    tmp
}

fn load(root: &Path) -> Catalog {
    Catalog::load(root).unwrap()
}

/// The errors of scenario `id`, which must have failed to load.
fn errors_of<'a>(catalog: &'a Catalog, id: &str) -> &'a [LoadError] {
    assert!(catalog.get(id).is_none(), "{id} should not load");
    &catalog
        .scenario_errors()
        .iter()
        .find(|s| s.scenario == id)
        .unwrap_or_else(|| panic!("no errors recorded for {id}"))
        .errors
}

#[test]
fn reference_format_scenario_loads_unchanged() {
    let root = catalog_root();
    let dir = scenario(root.path(), "basic-pod-security");
    write(dir.join("tasks/02-task.md"), REF_TASK);
    write(dir.join("validation/02-validation.yaml"), REF_VALIDATION);
    write(
        dir.join("setup/init.yaml"),
        "steps:\n  - id: ns\n    type: kubectl_apply\n    timeout: 60\n    retryCount: 3\n    manifest: |\n      apiVersion: v1\n      kind: Namespace\n      metadata:\n        name: test-pods\n",
    );
    let catalog = load(root.path());
    assert!(catalog.is_valid(), "{:?}", catalog.errors().collect::<Vec<_>>());
    assert!(catalog.warnings().is_empty(), "{:?}", catalog.warnings());
    let s = catalog.get("basic-pod-security").unwrap();
    assert_eq!(s.metadata.title, "Title of basic-pod-security");
    assert_eq!(s.tasks.len(), 2);
    let t = s.task("task-1").unwrap();
    assert_eq!(t.title, "Enforce Pod Security Standards");
    assert_eq!(t.hints[0].summary, "Check current labels");
    assert_eq!(t.rules.len(), 3);
    assert!(t.markdown.starts_with("# Enforce Pod Security Standards"));
    assert_eq!(s.task("02").unwrap().number, 2);
    assert!(matches!(s.setup[0].action, SetupAction::KubectlApply { .. }));
    assert_eq!(s.setup[0].retry_count, 3);
    let Check::ResourceProperty { property, .. } = &t.rules[1].check else {
        panic!("rule 2 is resource_property")
    };
    let ns = serde_json::json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}});
    assert_eq!(property.query(&ns), vec![&serde_json::json!("baseline")]);
    assert_eq!(catalog.categories()[0].name, "Cluster Hardening");
}

#[test]
fn author_variants_load() {
    let root = catalog_root();
    let dir = scenario(root.path(), "variants");
    write(
        dir.join("validation/01-validation.yaml"),
        r#"validation:
  - id: out-eq
    type: command
    command: {command: "kubectl get --raw /readyz", target: control-plane}
    condition: output_equals
    value: ok
  - id: out-has
    type: command
    command: "crictl ps"
    target: worker-1
    condition: output_contains
    value: falco
  - id: file-there
    type: file_exists
    file: {path: /etc/falco/falco_rules.local.yaml, target: worker}
  - id: script-code
    type: script
    script: {script: "exit 2", target: worker, successCode: 2}
"#,
    );
    write(
        dir.join("setup/init.yaml"),
        "steps:\n  - id: break\n    type: script\n    target: worker\n    timeout: 2m\n    retryCount: 2\n    script: |\n      systemctl stop kubelet\n",
    );
    let catalog = load(root.path());
    assert!(catalog.is_valid(), "{:?}", catalog.errors().collect::<Vec<_>>());
    let rules = &catalog.get("variants").unwrap().tasks[0].rules;
    assert!(matches!(rules[0].condition, Some(Condition::OutputEquals(ref v)) if v == "ok"));
    assert_eq!(rules[1].check.target(), Some(Target::WorkerN(1)));
    assert!(matches!(
        &rules[2].check,
        Check::FileExists {
            target: Target::Worker,
            ..
        }
    ));
    assert!(matches!(&rules[3].check, Check::Script { success_code: 2, .. }));
    let setup = &catalog.get("variants").unwrap().setup[0];
    assert_eq!(setup.timeout, Some(std::time::Duration::from_secs(120)));
    assert_eq!(setup.retry_count, 2);
}

#[test]
fn one_broken_scenario_never_hides_the_others() {
    let root = catalog_root();
    scenario(root.path(), "good-one");
    scenario(root.path(), "good-two");
    let bad = scenario(root.path(), "broken");
    write(
        bad.join("validation/01-validation.yaml"),
        "validation:\n  - id: a\n    type: [oops\n",
    );
    let catalog = load(root.path());
    assert_eq!(catalog.len(), 2);
    assert!(catalog.get("good-one").is_some() && catalog.get("good-two").is_some());
    let errs = errors_of(&catalog, "broken");
    assert_eq!(errs.len(), 1);
    assert!(matches!(&errs[0], LoadError::Yaml { .. }), "{}", errs[0]);
    assert_eq!(errs[0].location().line, Some(3));
    assert!(
        errs[0]
            .to_string()
            .contains("broken/validation/01-validation.yaml:3:"),
        "{}",
        errs[0]
    );
}

#[test]
fn malformed_yaml_in_metadata_is_an_error_with_position() {
    let root = catalog_root();
    let dir = scenario(root.path(), "bad-meta");
    write(
        dir.join("metadata.yaml"),
        "id: bad-meta\ntitle: \"unterminated\ncategory: x\n",
    );
    let catalog = load(root.path());
    let errs = errors_of(&catalog, "bad-meta");
    assert!(
        matches!(&errs[0], LoadError::Yaml { at, .. } if at.line.is_some()),
        "{errs:?}"
    );
}

#[test]
fn task_without_validation_and_validation_without_task_are_errors() {
    let root = catalog_root();
    let dir = scenario(root.path(), "unpaired");
    write(dir.join("tasks/02-second.md"), REF_TASK);
    write(dir.join("validation/03-validation.yaml"), REF_VALIDATION);
    let catalog = load(root.path());
    let errs = errors_of(&catalog, "unpaired");
    assert!(
        errs.iter()
            .any(|e| matches!(e, LoadError::MissingValidation { number: 2, at } if at.file.ends_with("tasks/02-second.md"))),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| matches!(e, LoadError::MissingTask { number: 3, .. })),
        "{errs:?}"
    );
}

#[test]
fn duplicate_rule_ids_unknown_types_conditions_bad_regex_and_jsonpath_are_all_reported() {
    let root = catalog_root();
    let dir = scenario(root.path(), "bad-rules");
    write(
        dir.join("validation/01-validation.yaml"),
        r#"validation:
  - id: same
    type: command
    command: "true"
  - id: same
    type: command
    command: "false"
  - id: t
    type: kubectl_magic
  - id: c
    type: command
    command: x
    condition: approximately
    value: 1
  - id: r
    type: file_content
    path: /etc/x
    condition: matches_regex
    value: "(unclosed"
  - id: j
    type: resource_property
    resource: {kind: Pod, name: p}
    property: ".spec.containers[?(@.name=="
    condition: exists
"#,
    );
    let catalog = load(root.path());
    let errs = errors_of(&catalog, "bad-rules");
    let categories: Vec<&str> = errs.iter().map(LoadError::category).collect();
    assert_eq!(
        categories,
        [
            "duplicate-rule-id",
            "unknown-rule-type",
            "unknown-condition",
            "bad-regex",
            "bad-jsonpath"
        ],
        "{errs:#?}"
    );
    let lines: Vec<Option<u32>> = errs.iter().map(|e| e.location().line).collect();
    assert_eq!(lines, [Some(5), Some(9), Some(13), Some(19), Some(23)]);
    for e in errs {
        assert!(
            e.to_string().contains("bad-rules/validation/01-validation.yaml:"),
            "{e}"
        );
    }
}

#[test]
fn id_must_match_directory_and_category_must_exist() {
    let root = catalog_root();
    let dir = scenario(root.path(), "named-right");
    write(dir.join("metadata.yaml"), metadata("named-wrong"));
    let dir2 = scenario(root.path(), "odd-category");
    write(
        dir2.join("metadata.yaml"),
        metadata("odd-category").replace("cluster-hardening", "cooking"),
    );
    let catalog = load(root.path());
    assert!(
        errors_of(&catalog, "named-right")[0]
            .to_string()
            .contains("does not match")
    );
    assert!(
        errors_of(&catalog, "odd-category")[0]
            .to_string()
            .contains("`cooking`")
    );
}

#[cfg(unix)]
#[test]
fn symlinks_outside_the_catalog_are_refused_inside_ones_allowed() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path().join("secret.md"), REF_TASK);
    let root = catalog_root();
    let dir = scenario(root.path(), "linked-out");
    fs::remove_file(dir.join("tasks/01-task.md")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.md"), dir.join("tasks/01-task.md")).unwrap();
    // A whole scenario directory linked in from elsewhere is refused as well.
    let elsewhere = scenario(outside.path(), "linked-dir");
    std::os::unix::fs::symlink(&elsewhere, root.path().join("linked-dir")).unwrap();
    // Links that stay inside the catalog are fine.
    let inside = scenario(root.path(), "linked-in");
    fs::rename(
        inside.join("tasks/01-task.md"),
        root.path().join("shared-task.md"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        root.path().join("shared-task.md"),
        inside.join("tasks/01-task.md"),
    )
    .unwrap();

    let catalog = load(root.path());
    assert!(
        catalog.get("linked-in").is_some(),
        "{:?}",
        catalog.errors().collect::<Vec<_>>()
    );
    let errs: Vec<&LoadError> = catalog.errors().collect();
    let refused: Vec<&LoadError> = errs
        .iter()
        .copied()
        .filter(|e| matches!(e, LoadError::SymlinkOutside { .. }))
        .collect();
    assert_eq!(refused.len(), 2, "{errs:#?}");
    assert!(catalog.get("linked-out").is_none() && catalog.get("linked-dir").is_none());
    assert!(refused[0].to_string().contains("outside the catalog"));
}

#[test]
fn huge_files_are_refused_without_reading_them_whole() {
    let root = catalog_root();
    let dir = scenario(root.path(), "huge");
    let mut big = String::from("# Big\n## Description\n");
    big.push_str(&"x".repeat(64 * 1024));
    write(dir.join("tasks/01-task.md"), &big);
    let options = LoadOptions {
        max_file_bytes: 16 * 1024,
        ..LoadOptions::default()
    };
    let catalog = Catalog::load_with(root.path(), &options).unwrap();
    let errs = errors_of(&catalog, "huge");
    assert!(
        matches!(&errs[0], LoadError::TooLarge { limit: 16384, size, .. } if *size > 16384),
        "{errs:?}"
    );
}

#[test]
fn non_utf8_text_is_a_clear_error_with_its_line() {
    let root = catalog_root();
    let dir = scenario(root.path(), "latin1");
    write(
        dir.join("tasks/01-task.md"),
        b"# Title\n\n## Description\nCaf\xe9 au lait\n",
    );
    write(
        dir.join("validation/01-validation.yaml"),
        b"validation:\n  - id: \xff\n",
    );
    let catalog = load(root.path());
    let errs = errors_of(&catalog, "latin1");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(matches!(&errs[0], LoadError::NotUtf8 { at } if at.line == Some(4) && at.column == Some(4)));
    assert!(matches!(&errs[1], LoadError::NotUtf8 { at } if at.line == Some(2)));
    assert!(errs[0].to_string().contains("not valid UTF-8"));
}

#[test]
fn unknown_fields_are_warnings_not_errors() {
    let root = catalog_root();
    let dir = scenario(root.path(), "typos");
    write(dir.join("metadata.yaml"), metadata("typos") + "dificulty: hard\n");
    let catalog = load(root.path());
    assert!(catalog.get("typos").is_some());
    let w = &catalog.warnings()[0];
    assert!(w.message.contains("dificulty"), "{w}");
    assert_eq!(w.at.line, Some(9));
}

#[test]
fn missing_categories_file_is_a_catalog_error_but_scenarios_still_load() {
    let tmp = tempfile::tempdir().unwrap();
    scenario(tmp.path(), "lonely");
    let catalog = load(tmp.path());
    assert!(catalog.get("lonely").is_some());
    assert!(
        matches!(&catalog.catalog_errors()[0], LoadError::MissingFile { expected, .. } if expected == "categories.yaml")
    );
}

#[test]
fn a_single_scenario_directory_can_be_loaded_on_its_own() {
    let root = catalog_root();
    let dir = scenario(root.path(), "solo");
    let catalog = Catalog::load_scenario_dir(&dir, &LoadOptions::default()).unwrap();
    assert!(catalog.is_valid(), "{:?}", catalog.errors().collect::<Vec<_>>());
    assert_eq!(catalog.get("solo").unwrap().tasks.len(), 1);

    // The parent catalog's categories still apply.
    let odd = scenario(root.path(), "odd");
    write(
        odd.join("metadata.yaml"),
        metadata("odd").replace("cluster-hardening", "cooking"),
    );
    let catalog = Catalog::load_scenario_dir(&odd, &LoadOptions::default()).unwrap();
    assert!(errors_of(&catalog, "odd")[0].to_string().contains("`cooking`"));
}

#[test]
fn an_unreadable_root_is_an_error() {
    let err = Catalog::load("/nonexistent/cks-catalog").unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err}");
}

/// Loads `root` on a thread and waits for it with a deadline, so that a loader that blocks
/// fails the test instead of hanging it.
fn load_within(root: &Path, deadline: std::time::Duration) -> Catalog {
    let (tx, rx) = std::sync::mpsc::channel();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Catalog::load(&root).unwrap());
    });
    rx.recv_timeout(deadline)
        .expect("the catalog did not load: the loader is blocked")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn a_fifo_in_the_catalog_is_refused_without_opening_it() {
    let root = catalog_root();
    let dir = scenario(root.path(), "fifo-task");
    mkfifo(&dir.join("tasks/03-fifo.md"));
    // A FIFO where a validation file belongs, and one behind a symlink.
    write(dir.join("tasks/02-second.md"), REF_TASK);
    mkfifo(&dir.join("validation/02-validation.yaml"));
    let other = scenario(root.path(), "fifo-link");
    mkfifo(&root.path().join("pipe"));
    std::os::unix::fs::symlink(root.path().join("pipe"), other.join("metadata.yaml.tmp")).unwrap();
    fs::remove_file(other.join("metadata.yaml")).unwrap();
    fs::rename(other.join("metadata.yaml.tmp"), other.join("metadata.yaml")).unwrap();

    let catalog = load_within(root.path(), std::time::Duration::from_secs(30));
    for id in ["fifo-task", "fifo-link"] {
        let errors = errors_of(&catalog, id);
        assert!(
            errors.iter().any(|e| e.to_string().contains("this is a FIFO")),
            "{id}: {errors:?}"
        );
    }
    let fifo_errors: Vec<String> = errors_of(&catalog, "fifo-task")
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        fifo_errors.iter().any(|e| e.contains("03-fifo.md"))
            && fifo_errors.iter().any(|e| e.contains("02-validation.yaml")),
        "{fifo_errors:?}"
    );
}
