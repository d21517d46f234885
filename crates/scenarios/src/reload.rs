//! Hot reload: the current catalog behind an [`ArcSwap`], so readers take a snapshot without
//! ever blocking, and a new catalog is built off to the side and swapped in whole. A scenario
//! that fails to reload keeps its previous good version.
//!
//! The watcher reloads only when contents, names or metadata change (never because a file was
//! opened or read, which every reload does itself), and keeps working when the catalog
//! directory is replaced (`rm -rf` and a fresh copy) or reached through a symlink that is
//! swapped (git-sync): it also watches the directories holding the catalog's name and every
//! symlink on its path, and re-arms when the directory behind the name changes or the name
//! itself is created, removed or renamed (a new directory may reuse the old inode number).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::catalog::{Catalog, LoadOptions};
use crate::error::LoadError;

/// Why a reload or a watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot load catalog {dir}: {source}")]
    Load {
        dir: PathBuf,
        #[source]
        source: Box<LoadError>,
    },
    #[error("cannot watch catalog {dir}: {source}")]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// The current catalog, shared between readers and reloaders.
#[derive(Debug)]
pub struct CatalogStore {
    dir: PathBuf,
    options: LoadOptions,
    current: ArcSwap<Catalog>,
    /// Serialises reloads (watcher and explicit) so that each builds on the last, and holds
    /// the errors already logged so that each is logged once, not on every reload; readers
    /// never take it.
    reload_lock: Mutex<Reported>,
    /// Counts completed reloads, so callers can wait for the next one.
    generation: Mutex<u64>,
    reloaded: Condvar,
}

/// The catalog errors last logged, as rendered.
type Reported = BTreeSet<String>;

impl CatalogStore {
    /// Loads the catalog in `dir`. Fails only when the directory cannot be read.
    pub fn open(dir: impl AsRef<Path>, options: LoadOptions) -> Result<Arc<Self>, ReloadError> {
        let dir = dir.as_ref().to_path_buf();
        let catalog = Catalog::load_with(&dir, &options).map_err(|source| ReloadError::Load {
            dir: dir.clone(),
            source: Box::new(source),
        })?;
        let mut reported = Reported::new();
        log_new_problems(&catalog, &mut reported);
        Ok(Arc::new(Self {
            dir,
            options,
            current: ArcSwap::from_pointee(catalog),
            reload_lock: Mutex::new(reported),
            generation: Mutex::new(0),
            reloaded: Condvar::new(),
        }))
    }

    /// The catalog directory, as given to [`CatalogStore::open`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A snapshot of the current catalog; it stays valid however many reloads follow.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Loads the directory again and swaps the result in. Scenarios that now fail keep their
    /// previous version (listed in [`Catalog::stale`]); their errors are still reported, but
    /// each error is logged only when it first appears. When the directory itself cannot be
    /// read, the current catalog stays and the error is returned. Blocking (it reads the whole
    /// catalog): async code calls it through `spawn_blocking`.
    pub fn reload(&self) -> Result<Arc<Catalog>, ReloadError> {
        let mut reported = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = match Catalog::load_with(&self.dir, &self.options) {
            Ok(mut next) => {
                let previous = self.current.load();
                next.keep_previous_of_failed(&previous);
                log_new_problems(&next, &mut reported);
                let next = Arc::new(next);
                self.current.store(Arc::clone(&next));
                tracing::info!(
                    dir = %self.dir.display(),
                    scenarios = next.len(),
                    failed = next.scenario_errors().len(),
                    stale = next.stale().len(),
                    "scenario catalog reloaded"
                );
                Ok(next)
            }
            Err(source) => {
                tracing::warn!(dir = %self.dir.display(), error = %source, "scenario catalog reload failed; keeping the previous catalog");
                Err(ReloadError::Load {
                    dir: self.dir.clone(),
                    source: Box::new(source),
                })
            }
        };
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *generation += 1;
        self.reloaded.notify_all();
        result
    }

    /// How many reloads have completed (successful or not).
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until more than `seen` reloads have completed or `timeout` passes; returns
    /// whether a reload happened. For tests and tools that need to know a change was picked up.
    pub fn wait_for_reload_after(&self, seen: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        while *generation <= seen {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            generation = self
                .reloaded
                .wait_timeout(generation, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Watches the catalog directory and reloads once changes have settled for `debounce`.
    /// Survives the directory being replaced or a symlink on its path being swapped.
    /// Watching stops when the returned [`CatalogWatcher`] is dropped.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<CatalogWatcher, ReloadError> {
        let (tx, rx) = mpsc::channel();
        let fs_tx = tx.clone();
        let watcher = RecommendedWatcher::new(
            move |event| {
                let _ = fs_tx.send(Msg::Fs(event));
            },
            notify::Config::default(),
        )
        .map_err(|source| ReloadError::Watch {
            dir: self.dir.clone(),
            source,
        })?;
        let mut watch = Watch::new(&self.dir, watcher);
        watch.arm().map_err(|source| ReloadError::Watch {
            dir: self.dir.clone(),
            source,
        })?;
        let store = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("scenario-catalog-watch".into())
            .spawn(move || watch.run(&store, &rx, debounce))
            .map_err(|e| ReloadError::Watch {
                dir: self.dir.clone(),
                source: notify::Error::io(e),
            })?;
        Ok(CatalogWatcher {
            stop: tx,
            thread: Some(thread),
        })
    }
}

/// Logs the catalog's errors that were not logged at the last (re)load, and forgets those
/// that are gone, so an error that persists is logged once per change rather than per reload.
fn log_new_problems(catalog: &Catalog, reported: &mut Reported) {
    let mut now = Reported::new();
    for error in catalog.errors() {
        let text = error.to_string();
        if !reported.contains(&text) && !now.contains(&text) {
            tracing::warn!(category = error.category(), error = %text, "scenario catalog error");
        }
        now.insert(text);
    }
    let resolved = reported.difference(&now).count();
    if resolved > 0 {
        tracing::info!(resolved, "scenario catalog errors resolved");
    }
    *reported = now;
}

enum Msg {
    Fs(notify::Result<Event>),
    Stop,
}

/// Keeps a catalog directory watched; dropping it stops the watch.
pub struct CatalogWatcher {
    stop: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for CatalogWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            // At most a reload in progress is waited for.
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for CatalogWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogWatcher")
    }
}

/// The watches of one catalog and what they were armed on.
struct Watch {
    /// The catalog directory as an absolute path (not resolved: its symlinks are what we
    /// watch for).
    dir: PathBuf,
    watcher: RecommendedWatcher,
    /// The directory `dir` resolved to when armed (device, inode); `None` while it is missing.
    armed_on: Option<(u64, u64)>,
    /// Directories watched for their entries: the parent of `dir` and of every symlink on
    /// its path.
    anchors: Vec<PathBuf>,
    /// `dir` and the symlinks on its path: an event naming one of them may change what
    /// `dir` resolves to.
    names: Vec<PathBuf>,
    /// Whether the directory's absence has been logged since it was last seen.
    missing_logged: bool,
    /// Whether one of `names` was created, removed, renamed or changed since the last settle.
    /// The directory behind the name may then be a new one even with the same (device, inode):
    /// ext4 and XFS readily give a just-freed inode number to the next mkdir, and notify drops
    /// its recursive watch when the old directory goes.
    name_touched: bool,
}

impl Watch {
    fn new(dir: &Path, watcher: RecommendedWatcher) -> Self {
        Self {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            watcher,
            armed_on: None,
            anchors: Vec::new(),
            names: Vec::new(),
            missing_logged: false,
            name_touched: false,
        }
    }

    /// What the catalog directory is now, or `None` when it is missing.
    fn identity(&self) -> Option<(u64, u64)> {
        let meta = std::fs::metadata(&self.dir).ok()?;
        meta.is_dir().then(|| (meta.dev(), meta.ino()))
    }

    /// (Re)places every watch for what the names resolve to now. Fails only when the
    /// catalog directory exists and cannot be watched.
    fn arm(&mut self) -> notify::Result<()> {
        for path in self.anchors.drain(..).chain([self.dir.clone()]) {
            // A watch whose directory was deleted is gone already; nothing to undo then.
            let _ = self.watcher.unwatch(&path);
        }
        self.names = vec![self.dir.clone()];
        let mut anchors: Vec<PathBuf> = self.dir.parent().map(Path::to_path_buf).into_iter().collect();
        for ancestor in self.dir.ancestors().skip(1) {
            if std::fs::symlink_metadata(ancestor).is_ok_and(|m| m.is_symlink()) {
                self.names.push(ancestor.to_path_buf());
                anchors.extend(ancestor.parent().map(Path::to_path_buf));
            }
        }
        anchors.sort();
        anchors.dedup();
        for anchor in anchors {
            match self.watcher.watch(&anchor, RecursiveMode::NonRecursive) {
                Ok(()) => self.anchors.push(anchor),
                // Replacement of the catalog then goes unnoticed, but its contents are
                // still watched.
                Err(e) => {
                    tracing::warn!(dir = %anchor.display(), error = %e, "cannot watch a directory above the scenario catalog; its replacement will go unnoticed");
                }
            }
        }
        self.armed_on = self.identity();
        if self.armed_on.is_some() {
            self.watcher.watch(&self.dir, RecursiveMode::Recursive)?;
            self.missing_logged = false;
        }
        Ok(())
    }

    /// Whether `event` may change what the catalog holds.
    fn matters(&self, event: &Event) -> bool {
        if event.need_rescan() {
            return true;
        }
        match event.kind {
            // Opening, reading and closing unchanged files is what every reload does itself.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        event
            .paths
            .iter()
            .any(|p| p.starts_with(&self.dir) || self.names.iter().any(|n| n == p))
    }

    fn run(mut self, store: &Weak<CatalogStore>, rx: &mpsc::Receiver<Msg>, debounce: Duration) {
        // Changes seen and not yet reloaded: (first seen, last seen).
        let mut pending: Option<(Instant, Instant)> = None;
        // A steady stream of changes still reloads now and then.
        let longest_wait = debounce.saturating_mul(10);
        loop {
            let msg = match pending {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some((first, last)) => {
                    let due = (last + debounce).min(first + longest_wait);
                    rx.recv_timeout(due.saturating_duration_since(Instant::now()))
                }
            };
            match msg {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Fs(Ok(event))) => {
                    if self.matters(&event) {
                        // A rescan means events were lost (the queue overflowed): one of them
                        // may have been the catalog's replacement.
                        self.name_touched |= event.need_rescan() || touches_name(&self.names, &event);
                        let now = Instant::now();
                        pending = Some((pending.map_or(now, |(first, _)| first), now));
                    }
                }
                Ok(Msg::Fs(Err(error))) => {
                    tracing::warn!(dir = %self.dir.display(), error = %error, "scenario catalog watch error; watching anew and reloading to be safe");
                    self.name_touched = true;
                    let now = Instant::now();
                    pending = Some((pending.map_or(now, |(first, _)| first), now));
                }
                Err(RecvTimeoutError::Timeout) => {
                    pending = None;
                    let Some(store) = store.upgrade() else { return };
                    if self.settle() {
                        // Errors are logged inside reload; the previous catalog stays.
                        let _ = store.reload();
                    }
                }
            }
        }
    }

    /// After changes settled: re-arms when the directory behind the catalog's name changed or
    /// the name was touched, and says whether there is a catalog to reload.
    fn settle(&mut self) -> bool {
        let now = self.identity();
        let name_touched = std::mem::take(&mut self.name_touched);
        if !must_rearm(self.armed_on, now, name_touched) {
            return now.is_some();
        }
        if now.is_none() {
            if !self.missing_logged {
                tracing::warn!(dir = %self.dir.display(), "the watch on the scenario catalog ended: the directory is gone; keeping the current catalog until it comes back");
                self.missing_logged = true;
            }
            self.armed_on = None;
            return false;
        }
        if let Err(e) = self.arm() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the replaced scenario catalog; its changes are not picked up until it changes again");
            // Arm again on the next event rather than believing this one worked.
            self.armed_on = None;
            return true;
        }
        tracing::info!(dir = %self.dir.display(), "scenario catalog directory replaced; watching the new one");
        true
    }
}

/// Whether `event` (not a mere access) names one of `names` itself: the catalog directory or
/// a symlink on its path was created, removed, renamed or changed.
fn touches_name(names: &[PathBuf], event: &Event) -> bool {
    !matches!(event.kind, EventKind::Access(_)) && event.paths.iter().any(|p| names.contains(p))
}

/// Whether the watches must be placed again after changes settled: when the directory behind
/// the catalog's name is another one (or gone), or when the name itself was touched, since a
/// replacement can come back with the same (device, inode) and its watch is gone all the same.
fn must_rearm(armed_on: Option<(u64, u64)>, now: Option<(u64, u64)>, name_touched: bool) -> bool {
    name_touched || now.is_none() || now != armed_on
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use notify::event::{AccessKind, CreateKind, ModifyKind, RemoveKind};
    use notify::{Event, EventKind};

    use super::{must_rearm, touches_name};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    /// `rm -rf catalog && cp -r new catalog` on ext4/XFS: the new directory may get the freed
    /// inode number, so its identity is unchanged, yet notify has dropped the recursive watch.
    #[test]
    fn replaced_catalog_with_reused_inode_is_rearmed() {
        let names = [PathBuf::from("/srv/catalog"), PathBuf::from("/srv/current")];
        let same = Some((1, 42));
        for kind in [
            EventKind::Remove(RemoveKind::Folder),
            EventKind::Create(CreateKind::Folder),
            EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::Any)),
        ] {
            let e = event(kind, "/srv/catalog");
            assert!(touches_name(&names, &e), "{kind:?} on the catalog's name");
            assert!(
                must_rearm(same, same, touches_name(&names, &e)),
                "{kind:?} must re-arm"
            );
        }
        // A swap of a symlink on the path as well.
        let swap = event(EventKind::Create(CreateKind::Any), "/srv/current");
        assert!(must_rearm(same, same, touches_name(&names, &swap)));
    }

    #[test]
    fn changes_inside_the_catalog_or_accesses_do_not_rearm() {
        let names = [PathBuf::from("/srv/catalog")];
        let same = Some((1, 42));
        let inside = event(
            EventKind::Create(CreateKind::File),
            "/srv/catalog/a/scenario.yaml",
        );
        assert!(!touches_name(&names, &inside));
        // Every reload opens the directory itself.
        let open = event(EventKind::Access(AccessKind::Any), "/srv/catalog");
        assert!(!touches_name(&names, &open));
        let sibling = event(EventKind::Remove(RemoveKind::Folder), "/srv/catalog-old");
        assert!(!touches_name(&names, &sibling));
        assert!(!must_rearm(same, same, false));
    }

    #[test]
    fn another_or_missing_directory_rearms() {
        assert!(must_rearm(Some((1, 42)), Some((1, 43)), false));
        assert!(must_rearm(Some((1, 42)), None, false));
        assert!(must_rearm(None, Some((1, 42)), false));
    }
}
