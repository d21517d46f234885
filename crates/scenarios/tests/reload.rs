//! Hot reload: explicit `reload()`, keeping the previous good version of a scenario that
//! breaks, snapshots that stay valid for readers, and the file watcher.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cks_scenarios::{Catalog, CatalogStore, LoadOptions};

fn write(path: impl AsRef<Path>, content: &str) {
    let path = path.as_ref();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn scenario(root: &Path, id: &str, title: &str) {
    let dir = root.join(id);
    write(
        dir.join("metadata.yaml"),
        &format!("id: {id}\ntitle: {title}\ndescription: d\ncategory: c\n"),
    );
    write(dir.join("tasks/01-task.md"), "# Task\n\nDo it.\n");
    write(
        dir.join("validation/01-validation.yaml"),
        "validation:\n  - id: r\n    type: command\n    command: \"true\"\n",
    );
}

fn catalog_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path().join("categories.yaml"),
        "categories:\n  - id: c\n    name: C\n",
    );
    scenario(tmp.path(), "alpha", "Alpha v1");
    scenario(tmp.path(), "beta", "Beta v1");
    tmp
}

fn title(catalog: &Catalog, id: &str) -> Option<String> {
    catalog.get(id).map(|s| s.metadata.title.clone())
}

#[test]
fn explicit_reload_swaps_in_changes_and_old_snapshots_stay_valid() {
    let dir = catalog_dir();
    let store = CatalogStore::open(dir.path(), LoadOptions::default()).unwrap();
    let before = store.catalog();
    scenario(dir.path(), "alpha", "Alpha v2");
    scenario(dir.path(), "gamma", "Gamma v1");
    fs::remove_dir_all(dir.path().join("beta")).unwrap();

    let after = store.reload().unwrap();
    assert_eq!(title(&after, "alpha").as_deref(), Some("Alpha v2"));
    assert_eq!(title(&after, "gamma").as_deref(), Some("Gamma v1"));
    assert!(after.get("beta").is_none(), "deleted scenarios leave the catalog");
    assert!(Arc::ptr_eq(&after, &store.catalog()));
    // A reader holding the old snapshot still sees a consistent old catalog.
    assert_eq!(title(&before, "alpha").as_deref(), Some("Alpha v1"));
    assert!(before.get("beta").is_some());
}

#[test]
fn a_scenario_that_breaks_keeps_its_previous_good_version() {
    let dir = catalog_dir();
    let store = CatalogStore::open(dir.path(), LoadOptions::default()).unwrap();
    write(
        dir.path().join("alpha/metadata.yaml"),
        "id: alpha\ntitle: [broken\n",
    );
    scenario(dir.path(), "beta", "Beta v2");

    let next = store.reload().unwrap();
    assert_eq!(
        title(&next, "alpha").as_deref(),
        Some("Alpha v1"),
        "previous good version kept"
    );
    assert!(next.stale().contains("alpha"));
    assert_eq!(
        title(&next, "beta").as_deref(),
        Some("Beta v2"),
        "healthy scenarios still update"
    );
    assert_eq!(next.scenario_errors().len(), 1, "the problem is still reported");
    assert_eq!(next.scenario_errors()[0].scenario, "alpha");

    // A broken categories.yaml keeps the previous categories too.
    write(dir.path().join("categories.yaml"), "categories: [oops\n");
    let next = store.reload().unwrap();
    assert_eq!(next.categories()[0].id, "c");
    assert_eq!(next.catalog_errors().len(), 1);
    write(
        dir.path().join("categories.yaml"),
        "categories:\n  - id: c\n    name: C\n",
    );

    // Fixing it serves the new version and clears the stale mark.
    scenario(dir.path(), "alpha", "Alpha v3");
    let fixed = store.reload().unwrap();
    assert_eq!(title(&fixed, "alpha").as_deref(), Some("Alpha v3"));
    assert!(fixed.stale().is_empty() && fixed.is_valid());
}

#[test]
fn a_reload_of_a_vanished_directory_keeps_the_current_catalog() {
    let dir = catalog_dir();
    let path = dir.path().to_path_buf();
    let store = CatalogStore::open(&path, LoadOptions::default()).unwrap();
    drop(dir);
    assert!(store.reload().is_err());
    assert_eq!(store.catalog().len(), 2);
}

#[test]
fn the_watcher_reloads_after_a_file_changes() {
    let dir = catalog_dir();
    let store = CatalogStore::open(dir.path(), LoadOptions::default()).unwrap();
    let _watcher = store.watch(Duration::from_millis(100)).unwrap();
    scenario(dir.path(), "alpha", "Alpha watched");

    // Wait on the reload counter until the change is visible, with a generous deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = store.generation();
        if title(&store.catalog(), "alpha").as_deref() == Some("Alpha watched") {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero() && store.wait_for_reload_after(seen, left),
            "the watcher did not pick up the change"
        );
    }
}
