//! Hot reload: explicit `reload()`, keeping the previous good version of a scenario that
//! breaks, snapshots that stay valid for readers, errors logged once per change, and the file
//! watcher (only real changes, across replacement and symlink swaps).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cks_scenarios::{Catalog, CatalogStore, LoadOptions};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Every log event of this test binary, rendered as `message field=value ...`, so a test can
/// count what was logged about its own (uniquely named) temp directory.
fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Record;
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Record {
            fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
                struct Text(String);
                impl tracing::field::Visit for Text {
                    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                        self.0.push_str(&format!(" {}={value:?}", field.name()));
                    }
                }
                let mut text = Text(String::new());
                event.record(&mut text);
                logs().lock().unwrap().push(text.0);
            }
        }
        let subscriber = tracing_subscriber::registry().with(Record);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        Mutex::new(Vec::new())
    })
}

/// How many log events so far mention all of `needles`.
fn logged(needles: &[&str]) -> usize {
    logs()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

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

/// Waits (with a generous deadline) until `ok` holds for the current catalog, checking after
/// every reload.
fn wait_until(store: &CatalogStore, what: &str, ok: impl Fn(&Catalog) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = store.generation();
        if ok(&store.catalog()) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero() && store.wait_for_reload_after(seen, left),
            "the watcher did not pick up: {what}"
        );
    }
}

/// How long the watcher is given to show that it does nothing. An observation window, not a
/// synchronisation: the debounce is 100 ms, so a reload loop shows up many times over in it.
const QUIET: Duration = Duration::from_secs(2);

#[test]
fn an_idle_watched_catalog_is_never_reloaded_and_one_edit_is_one_reload() {
    let dir = catalog_dir();
    let store = CatalogStore::open(dir.path(), LoadOptions::default()).unwrap();
    let _watcher = store.watch(Duration::from_millis(100)).unwrap();

    // Reading every file (as readers, lint and every reload do) is no change.
    Catalog::load(dir.path()).unwrap();
    assert!(
        !store.wait_for_reload_after(0, QUIET),
        "reading the catalog made the watcher reload it"
    );
    // A reload opens every file itself; it must not set off another.
    store.reload().unwrap();
    assert!(
        !store.wait_for_reload_after(1, QUIET),
        "a reload set off another: {} reloads",
        store.generation()
    );

    write(
        dir.path().join("alpha/metadata.yaml"),
        "id: alpha\ntitle: Alpha edited\ndescription: d\ncategory: c\n",
    );
    wait_until(&store, "one edit", |c| {
        title(c, "alpha").as_deref() == Some("Alpha edited")
    });
    let after_edit = store.generation();
    assert!(
        !store.wait_for_reload_after(after_edit, QUIET),
        "the edit was followed by {} more reloads",
        store.generation() - after_edit
    );
    assert_eq!(after_edit, 2, "one edit, one reload");
}

#[test]
fn a_broken_file_is_logged_once_per_change_not_per_reload() {
    let dir = catalog_dir();
    let root = dir.path().display().to_string();
    logs();
    write(
        dir.path().join("beta/metadata.yaml"),
        "id: beta\ntitle: [broken\n",
    );
    let store = CatalogStore::open(dir.path(), LoadOptions::default()).unwrap();
    let error_logs = || logged(&["scenario catalog error", &root]);
    assert_eq!(error_logs(), 1);
    store.reload().unwrap();
    store.reload().unwrap();
    assert_eq!(error_logs(), 1, "an unchanged error is not logged again");

    // A different problem is a change: logged once.
    write(
        dir.path().join("beta/metadata.yaml"),
        "id: beta\ntitle: t\ncategory: c\ndifficulty: impossible\n",
    );
    store.reload().unwrap();
    store.reload().unwrap();
    assert_eq!(error_logs(), 2);
    // Fixed, then broken the same way again: logged again.
    scenario(dir.path(), "beta", "Beta fixed");
    store.reload().unwrap();
    write(
        dir.path().join("beta/metadata.yaml"),
        "id: beta\ntitle: t\ncategory: c\ndifficulty: impossible\n",
    );
    store.reload().unwrap();
    assert_eq!(error_logs(), 3);
}

/// Writes a catalog with scenario `alpha` titled `title` into `dir`.
fn catalog_at(dir: &Path, title: &str) {
    write(
        dir.join("categories.yaml"),
        "categories:\n  - id: c\n    name: C\n",
    );
    scenario(dir, "alpha", title);
}

/// After a replacement the watcher must see the replacement and keep watching the new
/// directory: an edit inside it is picked up too.
fn assert_follows(store: &CatalogStore, new_dir: &Path, title_now: &str) {
    wait_until(store, "the replaced catalog", |c| {
        title(c, "alpha").as_deref() == Some(title_now)
    });
    scenario(new_dir, "alpha", "Alpha edited after the swap");
    wait_until(store, "an edit in the replaced catalog", |c| {
        title(c, "alpha").as_deref() == Some("Alpha edited after the swap")
    });
}

#[test]
fn the_watcher_follows_a_directory_that_is_deleted_and_copied_anew() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    catalog_at(&catalog, "Alpha v1");
    let store = CatalogStore::open(&catalog, LoadOptions::default()).unwrap();
    let _watcher = store.watch(Duration::from_millis(100)).unwrap();

    fs::remove_dir_all(&catalog).unwrap();
    // The watch on the deleted directory has ended, and says so.
    let gone = [catalog.to_str().unwrap(), "watch on the scenario catalog ended"];
    let deadline = Instant::now() + Duration::from_secs(30);
    while logged(&gone) == 0 {
        assert!(Instant::now() < deadline, "the end of the watch was not logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        title(&store.catalog(), "alpha").as_deref(),
        Some("Alpha v1"),
        "the current catalog stays meanwhile"
    );

    let staging = tmp.path().join("staging");
    catalog_at(&staging, "Alpha v2");
    scenario(&staging, "beta", "Beta v2");
    fs::rename(&staging, &catalog).unwrap();
    assert_follows(&store, &catalog, "Alpha v2");
}

/// The git-sync layout: `root/current` is a symlink to a checkout, swapped atomically by
/// renaming a new symlink over it; the catalog is a directory inside the checkout.
#[test]
fn the_watcher_follows_an_atomic_symlink_swap_above_the_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let rev = |n: u32| -> PathBuf { tmp.path().join(format!(".worktrees/rev{n}")) };
    catalog_at(&rev(1).join("scenarios"), "Alpha v1");
    scenario(&rev(1).join("scenarios"), "beta", "Beta v1");
    std::os::unix::fs::symlink(rev(1), tmp.path().join("current")).unwrap();
    let store = CatalogStore::open(tmp.path().join("current/scenarios"), LoadOptions::default()).unwrap();
    let _watcher = store.watch(Duration::from_millis(100)).unwrap();

    catalog_at(&rev(2).join("scenarios"), "Alpha v2");
    std::os::unix::fs::symlink(rev(2), tmp.path().join("current.new")).unwrap();
    fs::rename(tmp.path().join("current.new"), tmp.path().join("current")).unwrap();
    assert_follows(&store, &rev(2).join("scenarios"), "Alpha v2");
    assert!(store.catalog().get("beta").is_none());
}

/// The catalog directory itself is the symlink that is swapped.
#[test]
fn the_watcher_follows_a_swapped_catalog_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    catalog_at(&tmp.path().join("v1"), "Alpha v1");
    std::os::unix::fs::symlink(tmp.path().join("v1"), tmp.path().join("catalog")).unwrap();
    let store = CatalogStore::open(tmp.path().join("catalog"), LoadOptions::default()).unwrap();
    let _watcher = store.watch(Duration::from_millis(100)).unwrap();

    catalog_at(&tmp.path().join("v2"), "Alpha v2");
    std::os::unix::fs::symlink(tmp.path().join("v2"), tmp.path().join("catalog.new")).unwrap();
    fs::rename(tmp.path().join("catalog.new"), tmp.path().join("catalog")).unwrap();
    assert_follows(&store, &tmp.path().join("v2"), "Alpha v2");
}
