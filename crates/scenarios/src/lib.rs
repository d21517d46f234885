//! The cks-lab scenario catalog.
//!
//! A catalog is a directory holding `categories.yaml` and one directory per scenario:
//!
//! ```text
//! scenarios/
//! ├── categories.yaml
//! └── basic-pod-security/
//!     ├── metadata.yaml             id, title, description, difficulty, category, requirements
//!     ├── tasks/01-namespace.md     task text: # title, ## sections, <details> hints
//!     ├── validation/01-validation.yaml   rules for task 01
//!     └── setup/init.yaml           optional setup steps
//! ```
//!
//! [`Catalog::load`] reads it all, checking every rule (types, conditions, regexes,
//! JSONPath, targets) up front. One broken scenario never hides the others: the catalog keeps
//! the good ones and reports the rest through [`Catalog::errors`], each error naming its file
//! and, where known, line and column. [`CatalogStore`] keeps the current catalog for readers
//! that must never block and swaps in a new one on [`CatalogStore::reload`] or when a file
//! changes ([`CatalogStore::watch`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use cks_scenarios::{CatalogStore, Check, LoadOptions};
//!
//! let store = CatalogStore::open("scenarios", LoadOptions::default())?;
//! let _watcher = store.watch(Duration::from_millis(500))?; // reload on file changes
//! let catalog = store.catalog(); // a snapshot; never blocks
//! for error in catalog.errors() {
//!     eprintln!("{error}"); // "scenarios/x/validation/01-validation.yaml:12:5: ..."
//! }
//! let scenario = catalog.get("basic-pod-security").expect("loaded");
//! for rule in &scenario.task("task-1").expect("task").rules {
//!     if let Check::ResourceProperty { property, .. } = &rule.check {
//!         let object = serde_json::json!({"metadata": {"name": "x"}});
//!         let _found = property.query(&object);
//!     }
//! }
//! # Ok::<(), cks_scenarios::ReloadError>(())
//! ```
//!
//! The format is documented for authors in `docs/scenarios.md`.

mod catalog;
mod error;
mod fields;
mod fs;
pub mod jsonpath;
mod metadata;
mod reload;
mod rules;
mod setup;
mod task;
mod yaml;

pub use catalog::{Catalog, LoadOptions, Scenario, ScenarioErrors};
pub use error::{LoadError, Pos, SourceLocation, Warning};
pub use fields::Target;
pub use jsonpath::{KubePath, PathError, translate_kube_path};
pub use metadata::{Category, Difficulty, Metadata, NodeCount, Requirements, Resources, is_dns1123_label};
pub use reload::{CatalogStore, CatalogWatcher, ReloadError};
pub use rules::{Check, Condition, ConditionKind, Pattern, ResourceRef, Rule, RuleType};
pub use setup::{SetupAction, SetupCondition, SetupStep, WaitFor};
pub use task::{Hint, Section, SectionKind, Task};
