//! Loading a catalog directory: `categories.yaml` plus one directory per scenario. Each
//! scenario loads on its own, so one broken scenario never hides the others: the catalog
//! keeps the good ones and lists the problems of the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::error::{LoadError, SourceLocation, Warning};
use crate::fs::{CatalogFs, DirEntry};
use crate::metadata::{Category, Metadata, load_categories, load_metadata};
use crate::rules::load_rules;
use crate::setup::{SetupStep, load_setup};
use crate::task::{Task, parse_task};

/// Limits that keep a hostile or mistaken catalog from exhausting memory.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Largest file the loader reads, in bytes.
    pub max_file_bytes: u64,
    /// Most tasks a scenario may have.
    pub max_tasks: usize,
    /// Most scenario directories a catalog may have.
    pub max_scenarios: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_file_bytes: 1024 * 1024,
            max_tasks: 50,
            max_scenarios: 10_000,
        }
    }
}

/// A loaded scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    #[serde(flatten)]
    pub metadata: Metadata,
    pub tasks: Vec<Task>,
    pub setup: Vec<SetupStep>,
    /// The scenario directory.
    pub dir: PathBuf,
}

impl Scenario {
    pub fn id(&self) -> &str {
        &self.metadata.id
    }

    /// A task by id (`task-1`) or by number as text (`1`, `01`).
    pub fn task(&self, id: &str) -> Option<&Task> {
        let number = id.strip_prefix("task-").unwrap_or(id).parse::<u32>().ok();
        self.tasks.iter().find(|t| t.id == id || Some(t.number) == number)
    }
}

/// The problems that kept one scenario directory out of the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioErrors {
    /// The directory name (which is the scenario id when the scenario is well-formed).
    pub scenario: String,
    pub dir: PathBuf,
    pub errors: Vec<LoadError>,
}

/// An immutable, loaded catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    root: PathBuf,
    categories: Vec<Category>,
    scenarios: BTreeMap<String, Arc<Scenario>>,
    catalog_errors: Vec<LoadError>,
    scenario_errors: Vec<ScenarioErrors>,
    warnings: Vec<Warning>,
    stale: BTreeSet<String>,
}

impl Catalog {
    /// Loads the catalog in `dir` with default limits. Fails only when `dir` itself cannot be
    /// read; everything else is reported through [`Catalog::errors`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Catalog, LoadError> {
        Self::load_with(dir, &LoadOptions::default())
    }

    pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Catalog, LoadError> {
        let fs = CatalogFs::new(dir.as_ref(), options.max_file_bytes)?;
        let mut catalog = Catalog {
            root: dir.as_ref().to_path_buf(),
            ..Catalog::default()
        };
        let listing = fs.list_dir(fs.root())?;
        for (name, error) in listing.refused {
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if name.starts_with("categories.") {
                catalog.catalog_errors.push(error);
            } else {
                catalog.scenario_errors.push(ScenarioErrors {
                    dir: fs.root().join(&name),
                    scenario: name,
                    errors: vec![error],
                });
            }
        }
        let entries = listing.entries;
        let categories_file = entries
            .iter()
            .find(|e| !e.is_dir && (e.name == "categories.yaml" || e.name == "categories.yml"));
        let categories = match categories_file {
            None => {
                catalog.catalog_errors.push(LoadError::MissingFile {
                    at: SourceLocation::file(fs.root()),
                    expected: "categories.yaml".into(),
                });
                None
            }
            Some(entry) => {
                let at = SourceLocation::file(&entry.path);
                match fs
                    .read_text(&entry.path)
                    .map_err(|e| vec![e])
                    .and_then(|text| load_categories(&at, &text, &mut catalog.warnings))
                {
                    Ok(c) => Some(c),
                    Err(errors) => {
                        catalog.catalog_errors.extend(errors);
                        None
                    }
                }
            }
        };
        catalog.categories = categories.clone().unwrap_or_default();

        let scenario_dirs: Vec<&DirEntry> = entries
            .iter()
            // Hidden and `_`-prefixed directories hold drafts, templates or VCS data.
            .filter(|e| e.is_dir && !e.name.starts_with('.') && !e.name.starts_with('_'))
            .collect();
        if scenario_dirs.len() > options.max_scenarios {
            catalog.catalog_errors.push(LoadError::invalid(
                SourceLocation::file(fs.root()),
                format!(
                    "{} scenario directories, more than the limit of {}; only the first {} are loaded",
                    scenario_dirs.len(),
                    options.max_scenarios,
                    options.max_scenarios
                ),
            ));
        }
        let loader = ScenarioLoader {
            fs: &fs,
            options,
            categories: categories.as_deref(),
        };
        let dirs: Vec<&DirEntry> = scenario_dirs.into_iter().take(options.max_scenarios).collect();
        for (entry, (result, warnings)) in dirs.iter().zip(loader.load_all(&dirs)) {
            catalog.warnings.extend(warnings);
            match result {
                Ok(s) => {
                    catalog.scenarios.insert(entry.name.clone(), Arc::new(s));
                }
                Err(errors) => catalog.scenario_errors.push(ScenarioErrors {
                    scenario: entry.name.clone(),
                    dir: entry.path.clone(),
                    errors,
                }),
            }
        }
        Ok(catalog)
    }

    /// Loads one scenario directory as a catalog of one. When the parent directory is a
    /// catalog (has `categories.yaml`), its categories are checked and symlinks may point
    /// anywhere inside it, exactly as when the whole catalog loads. For linting a scenario on
    /// its own.
    pub fn load_scenario_dir(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Catalog, LoadError> {
        let dir = dir.as_ref();
        let canonical = std::fs::canonicalize(dir).map_err(|e| LoadError::Read {
            at: SourceLocation::file(dir),
            cause: e.to_string(),
        })?;
        let name = canonical
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        // Keep the caller's spelling of the parent in messages when there is one.
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => Some(p.to_path_buf()),
            _ => canonical.parent().map(Path::to_path_buf),
        };
        let categories_path = parent
            .as_ref()
            .map(|p| p.join("categories.yaml"))
            .filter(|p| p.is_file());
        let root = match (&parent, &categories_path) {
            (Some(p), Some(_)) => p.as_path(),
            _ => dir,
        };
        let fs = CatalogFs::new(root, options.max_file_bytes)?;
        let mut catalog = Catalog {
            root: dir.to_path_buf(),
            ..Catalog::default()
        };
        let categories = categories_path.and_then(|path| {
            let at = SourceLocation::file(&path);
            match fs
                .read_text(&path)
                .map_err(|e| vec![e])
                .and_then(|t| load_categories(&at, &t, &mut catalog.warnings))
            {
                Ok(c) => Some(c),
                Err(errors) => {
                    catalog.catalog_errors.extend(errors);
                    None
                }
            }
        });
        catalog.categories = categories.clone().unwrap_or_default();
        let loader = ScenarioLoader {
            fs: &fs,
            options,
            categories: categories.as_deref(),
        };
        match loader.load(&name, dir, &mut catalog.warnings) {
            Ok(s) => {
                catalog.scenarios.insert(name, Arc::new(s));
            }
            Err(errors) => catalog.scenario_errors.push(ScenarioErrors {
                scenario: name,
                dir: dir.to_path_buf(),
                errors,
            }),
        }
        Ok(catalog)
    }

    /// The directory this catalog was loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A loaded scenario by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Scenario>> {
        self.scenarios.get(id)
    }

    /// All loaded scenarios, ordered by id.
    pub fn list(&self) -> impl Iterator<Item = &Arc<Scenario>> {
        self.scenarios.values()
    }

    /// How many scenarios loaded.
    pub fn len(&self) -> usize {
        self.scenarios.len()
    }

    /// True when no scenario loaded.
    pub fn is_empty(&self) -> bool {
        self.scenarios.is_empty()
    }

    /// The categories of `categories.yaml`, in file order.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// Problems with the catalog as a whole (such as `categories.yaml`).
    pub fn catalog_errors(&self) -> &[LoadError] {
        &self.catalog_errors
    }

    /// Scenarios that did not load, with their problems.
    pub fn scenario_errors(&self) -> &[ScenarioErrors] {
        &self.scenario_errors
    }

    /// Every error, catalog-level first.
    pub fn errors(&self) -> impl Iterator<Item = &LoadError> {
        self.catalog_errors
            .iter()
            .chain(self.scenario_errors.iter().flat_map(|s| s.errors.iter()))
    }

    /// Everything worth an author's look that did not stop a scenario from loading.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// True when nothing is wrong (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.catalog_errors.is_empty() && self.scenario_errors.is_empty()
    }

    /// Ids of scenarios that failed to reload and are served from the previous good load.
    pub fn stale(&self) -> &BTreeSet<String> {
        &self.stale
    }

    /// Keeps the previous version of every scenario that failed in this load, and the
    /// previous categories when `categories.yaml` failed (hot reload).
    pub(crate) fn keep_previous_of_failed(&mut self, previous: &Catalog) {
        if !self.catalog_errors.is_empty() && self.categories.is_empty() {
            self.categories = previous.categories.clone();
        }
        for failed in &self.scenario_errors {
            if let Some(old) = previous.scenarios.get(&failed.scenario) {
                self.scenarios.insert(failed.scenario.clone(), Arc::clone(old));
                self.stale.insert(failed.scenario.clone());
            }
        }
    }
}

struct ScenarioLoader<'a> {
    fs: &'a CatalogFs,
    options: &'a LoadOptions,
    categories: Option<&'a [Category]>,
}

/// `NN-rest` file names: the number and the rest.
fn numbered(name: &str) -> Option<(u32, &str)> {
    let (num, rest) = name.split_once('-')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, rest))
}

type Loaded = (Result<Scenario, Vec<LoadError>>, Vec<Warning>);

impl ScenarioLoader<'_> {
    /// Loads every directory, on all cores for large catalogs; results keep the input order
    /// so errors and warnings come out the same way every time.
    fn load_all(&self, dirs: &[&DirEntry]) -> Vec<Loaded> {
        let load_one = |entry: &DirEntry| {
            let mut warnings = Vec::new();
            // A loader bug must cost one scenario, not the catalog or the watcher thread.
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.load(&entry.name, &entry.path, &mut warnings)
            }))
            .unwrap_or_else(|_| {
                Err(vec![LoadError::invalid(
                    SourceLocation::file(&entry.path),
                    "internal error while loading this scenario (please report it)",
                )])
            });
            (result, warnings)
        };
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Threads only pay off once there is a fair amount of parsing to share.
        if workers < 2 || dirs.len() < 32 {
            return dirs.iter().map(|e| load_one(e)).collect();
        }
        let next = AtomicUsize::new(0);
        let mut indexed: Vec<(usize, Loaded)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(entry) = dirs.get(i) else { break };
                            done.push((i, load_one(entry)));
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                // Loading panics are caught per scenario, so a worker cannot panic.
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        indexed.sort_by_key(|(i, _)| *i);
        indexed.into_iter().map(|(_, loaded)| loaded).collect()
    }

    fn load(&self, name: &str, dir: &Path, warnings: &mut Vec<Warning>) -> Result<Scenario, Vec<LoadError>> {
        let listing = self.fs.list_dir(dir).map_err(|e| vec![e])?;
        let mut errors: Vec<LoadError> = listing.refused.into_iter().map(|(_, e)| e).collect();
        let entries = listing.entries;
        let find = |names: &[&str]| {
            entries
                .iter()
                .find(|e| !e.is_dir && names.contains(&e.name.as_str()))
        };

        let metadata = match find(&["metadata.yaml", "metadata.yml"]) {
            None => {
                errors.push(LoadError::MissingFile {
                    at: SourceLocation::file(dir),
                    expected: "metadata.yaml".into(),
                });
                None
            }
            Some(e) => {
                let at = SourceLocation::file(&e.path);
                match self
                    .fs
                    .read_text(&e.path)
                    .map_err(|e| vec![e])
                    .and_then(|t| load_metadata(&at, &t, name, warnings))
                {
                    Ok(m) => Some(m),
                    Err(errs) => {
                        errors.extend(errs);
                        None
                    }
                }
            }
        };
        let mut metadata = metadata;
        if let Some(m) = &mut metadata {
            self.file_under_category(m, dir, warnings, &mut errors);
        }

        let tasks = self.load_tasks(dir, &entries, warnings, &mut errors);

        let setup = self.load_setup(dir, warnings, &mut errors);

        match (metadata, tasks) {
            (Some(metadata), Some(tasks)) if errors.is_empty() => Ok(Scenario {
                metadata,
                tasks,
                setup,
                dir: dir.to_path_buf(),
            }),
            _ => Err(errors),
        }
    }

    /// Checks a stated category against `categories.yaml`, or derives the category from the
    /// topics as the reference system does: the first topic that is a category id.
    fn file_under_category(
        &self,
        m: &mut Metadata,
        dir: &Path,
        warnings: &mut Vec<Warning>,
        errors: &mut Vec<LoadError>,
    ) {
        let at = || SourceLocation::file(dir.join("metadata.yaml"));
        let Some(categories) = self.categories else {
            if m.category.is_none() {
                warnings.push(Warning::new(
                    at(),
                    "no `category`, and no categories.yaml to find one among the topics",
                ));
            }
            return;
        };
        let known = |id: &str| categories.iter().any(|c| c.id == id);
        match &m.category {
            Some(category) if !known(category) => {
                let ids: Vec<&str> = categories.iter().map(|c| c.id.as_str()).collect();
                errors.push(LoadError::invalid(
                    at(),
                    format!(
                        "category `{category}` is not defined in categories.yaml (known: {})",
                        ids.join(", ")
                    ),
                ));
            }
            Some(_) => {}
            None => {
                m.category = m.topics.iter().find(|t| known(t)).cloned();
                if m.category.is_none() {
                    warnings.push(Warning::new(
                        at(),
                        format!(
                            "no `category`, and none of the topics ({}) is a category of categories.yaml; \
                             the scenario is listed under no category",
                            m.topics.join(", ")
                        ),
                    ));
                }
            }
        }
    }

    fn load_setup(
        &self,
        dir: &Path,
        warnings: &mut Vec<Warning>,
        errors: &mut Vec<LoadError>,
    ) -> Vec<SetupStep> {
        let setup_dir = dir.join("setup");
        if !setup_dir.exists() {
            return Vec::new();
        }
        let entries = match self.fs.list_dir(&setup_dir) {
            Ok(listing) => {
                errors.extend(listing.refused.into_iter().map(|(_, e)| e));
                listing.entries
            }
            Err(e) => {
                errors.push(e);
                return Vec::new();
            }
        };
        let Some(init) = entries
            .iter()
            .find(|e| !e.is_dir && (e.name == "init.yaml" || e.name == "init.yml"))
        else {
            warnings.push(Warning::new(
                SourceLocation::file(&setup_dir),
                "setup/ has no init.yaml; no setup steps will run",
            ));
            return Vec::new();
        };
        let at = SourceLocation::file(&init.path);
        match self
            .fs
            .read_text(&init.path)
            .map_err(|e| vec![e])
            .and_then(|t| load_setup(&at, &t, warnings))
        {
            Ok(steps) => steps,
            Err(errs) => {
                errors.extend(errs);
                Vec::new()
            }
        }
    }

    /// Loads `tasks/NN-*.md` with `validation/NN-validation.yaml`, pairing them by number.
    fn load_tasks(
        &self,
        dir: &Path,
        entries: &[DirEntry],
        warnings: &mut Vec<Warning>,
        errors: &mut Vec<LoadError>,
    ) -> Option<Vec<Task>> {
        let has_dir = |n: &str| entries.iter().any(|e| e.is_dir && e.name == n);
        let start = errors.len();
        if !has_dir("tasks") {
            errors.push(LoadError::MissingFile {
                at: SourceLocation::file(dir),
                expected: "tasks/ directory with NN-<name>.md files".into(),
            });
        }
        if !has_dir("validation") {
            errors.push(LoadError::MissingFile {
                at: SourceLocation::file(dir),
                expected: "validation/ directory with NN-validation.yaml files".into(),
            });
        }
        if errors.len() > start {
            return None;
        }

        let mut task_files: BTreeMap<u32, PathBuf> = BTreeMap::new();
        let tasks_dir = dir.join("tasks");
        match self.fs.list_dir(&tasks_dir) {
            Err(e) => errors.push(e),
            Ok(listing) => {
                errors.extend(listing.refused.into_iter().map(|(_, e)| e));
                for e in listing.entries {
                    match numbered(&e.name).filter(|(_, rest)| rest.ends_with(".md") && !e.is_dir) {
                        Some((n, _)) => {
                            if let Some(first) = task_files.get(&n) {
                                errors.push(LoadError::invalid(
                                    SourceLocation::file(&e.path),
                                    format!(
                                        "two task files numbered {n:02} (the other is {})",
                                        first.display()
                                    ),
                                ));
                            } else {
                                task_files.insert(n, e.path);
                            }
                        }
                        None => warnings.push(Warning::new(
                            SourceLocation::file(&e.path),
                            "ignored: task files are named NN-<name>.md",
                        )),
                    }
                }
            }
        }
        let mut validation_files: BTreeMap<u32, PathBuf> = BTreeMap::new();
        let validation_dir = dir.join("validation");
        match self.fs.list_dir(&validation_dir) {
            Err(e) => errors.push(e),
            Ok(listing) => {
                errors.extend(listing.refused.into_iter().map(|(_, e)| e));
                for e in listing.entries {
                    let n = numbered(&e.name)
                        .filter(|(_, rest)| {
                            !e.is_dir && matches!(*rest, "validation.yaml" | "validation.yml")
                        })
                        .map(|(n, _)| n);
                    match n {
                        Some(n) => {
                            if validation_files.insert(n, e.path.clone()).is_some() {
                                errors.push(LoadError::invalid(
                                    SourceLocation::file(&e.path),
                                    format!("two validation files numbered {n:02}"),
                                ));
                            }
                        }
                        None => warnings.push(Warning::new(
                            SourceLocation::file(&e.path),
                            "ignored: validation files are named NN-validation.yaml",
                        )),
                    }
                }
            }
        }
        if task_files.is_empty() {
            errors.push(LoadError::invalid(
                SourceLocation::file(&tasks_dir),
                "scenario has no tasks",
            ));
        }
        if task_files.len() > self.options.max_tasks {
            errors.push(LoadError::invalid(
                SourceLocation::file(&tasks_dir),
                format!(
                    "{} tasks, more than the limit of {}",
                    task_files.len(),
                    self.options.max_tasks
                ),
            ));
            return None;
        }
        for (n, path) in &validation_files {
            if !task_files.contains_key(n) {
                errors.push(LoadError::MissingTask {
                    at: SourceLocation::file(path),
                    number: *n,
                });
            }
        }

        let mut tasks = Vec::new();
        for (n, path) in task_files {
            let at = SourceLocation::file(&path);
            let parsed = self
                .fs
                .read_text(&path)
                .and_then(|text| parse_task(&at, &text, warnings).map(|p| (p, text)));
            let Some(vpath) = validation_files.get(&n) else {
                errors.push(LoadError::MissingValidation { at, number: n });
                continue;
            };
            let vat = SourceLocation::file(vpath);
            let rules = self
                .fs
                .read_text(vpath)
                .map_err(|e| vec![e])
                .and_then(|text| load_rules(&vat, &text, warnings));
            match (parsed, rules) {
                (Ok((p, markdown)), Ok(rules)) => tasks.push(Task {
                    id: format!("task-{n}"),
                    number: n,
                    title: p.title.unwrap_or_else(|| format!("Task {n}")),
                    description: p.description,
                    background: p.background,
                    objectives: p.objectives,
                    steps: p.steps,
                    hints: p.hints,
                    validation_criteria: p.validation_criteria,
                    solution: p.solution,
                    sections: p.sections,
                    markdown,
                    rules,
                    file: path,
                    validation_file: vpath.clone(),
                }),
                (parsed, rules) => {
                    errors.extend(parsed.err());
                    errors.extend(rules.err().into_iter().flatten());
                }
            }
        }
        (errors.len() == start).then_some(tasks)
    }
}
