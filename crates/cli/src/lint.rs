//! `cks scenario lint`: load a catalog or one scenario and report every problem.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cks_scenarios::{Catalog, LoadError, LoadOptions, SourceLocation, Warning};
use serde::Serialize;

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    scenarios: Vec<&'a str>,
    errors: Vec<&'a LoadError>,
    warnings: &'a [Warning],
}

/// Loads `dir` as a single scenario when it has a metadata.yaml, else as a catalog.
pub fn load(dir: &Path) -> anyhow::Result<Catalog> {
    let options = LoadOptions::default();
    let single = dir.join("metadata.yaml").is_file() || dir.join("metadata.yml").is_file();
    let catalog = if single {
        Catalog::load_scenario_dir(dir, &options)
    } else {
        Catalog::load_with(dir, &options)
    };
    catalog.with_context(|| format!("cannot lint {}", dir.display()))
}

fn sort_key(at: &SourceLocation) -> (std::path::PathBuf, u32, u32) {
    (at.file.clone(), at.line.unwrap_or(0), at.column.unwrap_or(0))
}

pub fn run(dir: &Path, json: bool, strict: bool) -> anyhow::Result<ExitCode> {
    let catalog = load(dir)?;
    let mut errors: Vec<&LoadError> = catalog.errors().collect();
    errors.sort_by_key(|e| sort_key(e.location()));
    let mut warnings: Vec<Warning> = catalog.warnings().to_vec();
    warnings.sort_by_key(|w| sort_key(&w.at));
    let ok = errors.is_empty() && (!strict || warnings.is_empty());

    let mut out = std::io::stdout().lock();
    if json {
        let report = Report {
            ok,
            scenarios: catalog.list().map(|s| s.id()).collect(),
            errors,
            warnings: &warnings,
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        for e in &errors {
            writeln!(out, "{}: error: {}", e.location(), e.message())?;
        }
        for w in &warnings {
            writeln!(out, "{}: warning: {}", w.at, w.message)?;
        }
        writeln!(
            out,
            "{}: {} scenario(s) loaded, {} failed, {} error(s), {} warning(s)",
            dir.display(),
            catalog.len(),
            catalog.scenario_errors().len(),
            errors.len(),
            warnings.len()
        )?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
