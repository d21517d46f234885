//! Hot reload: the current catalog behind an [`ArcSwap`], so readers take a snapshot without
//! ever blocking, and a new catalog is built off to the side and swapped in whole. A scenario
//! that fails to reload keeps its previous good version.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

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
        source: notify_debouncer_full::notify::Error,
    },
}

/// The current catalog, shared between readers and reloaders.
#[derive(Debug)]
pub struct CatalogStore {
    dir: PathBuf,
    options: LoadOptions,
    current: ArcSwap<Catalog>,
    /// Serialises reloads (watcher and explicit) so that each builds on the last; readers
    /// never take it.
    reload_lock: Mutex<()>,
    /// Counts completed reloads, so callers can wait for the next one.
    generation: Mutex<u64>,
    reloaded: Condvar,
}

impl CatalogStore {
    /// Loads the catalog in `dir`. Fails only when the directory cannot be read.
    pub fn open(dir: impl AsRef<Path>, options: LoadOptions) -> Result<Arc<Self>, ReloadError> {
        let dir = dir.as_ref().to_path_buf();
        let catalog = Catalog::load_with(&dir, &options).map_err(|source| ReloadError::Load {
            dir: dir.clone(),
            source: Box::new(source),
        })?;
        log_problems(&catalog);
        Ok(Arc::new(Self {
            dir,
            options,
            current: ArcSwap::from_pointee(catalog),
            reload_lock: Mutex::new(()),
            generation: Mutex::new(0),
            reloaded: Condvar::new(),
        }))
    }

    /// A snapshot of the current catalog; it stays valid however many reloads follow.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Loads the directory again and swaps the result in. Scenarios that now fail keep their
    /// previous version (listed in [`Catalog::stale`]); their errors are still reported. When
    /// the directory itself cannot be read, the current catalog stays and the error is returned.
    pub fn reload(&self) -> Result<Arc<Catalog>, ReloadError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = match Catalog::load_with(&self.dir, &self.options) {
            Ok(mut next) => {
                let previous = self.current.load();
                next.keep_previous_of_failed(&previous);
                log_problems(&next);
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

    /// Watches the catalog directory and reloads after changes settle for `debounce`.
    /// Watching stops when the returned [`CatalogWatcher`] is dropped.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<CatalogWatcher, ReloadError> {
        let store: Weak<CatalogStore> = Arc::downgrade(self);
        let watch_err = |source| ReloadError::Watch {
            dir: self.dir.clone(),
            source,
        };
        let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
            let Some(store) = store.upgrade() else { return };
            match result {
                Ok(events) if events.is_empty() => {}
                Ok(events) => {
                    tracing::debug!(events = events.len(), "scenario files changed");
                    // Errors are logged inside reload; the previous catalog stays.
                    let _ = store.reload();
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!(error = %error, "scenario catalog watch error");
                    }
                }
            }
        })
        .map_err(watch_err)?;
        debouncer
            .watch(&self.dir, RecursiveMode::Recursive)
            .map_err(watch_err)?;
        Ok(CatalogWatcher {
            _debouncer: debouncer,
        })
    }
}

fn log_problems(catalog: &Catalog) {
    for error in catalog.errors() {
        tracing::warn!(category = error.category(), error = %error, "scenario catalog error");
    }
}

/// Keeps a catalog directory watched; dropping it stops the watch.
pub struct CatalogWatcher {
    _debouncer: Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for CatalogWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogWatcher")
    }
}
