//! Loading YAML manifests into a running cluster: every document of every `.yaml`/`.yml`/`.json`
//! file in a directory (or a single file), CustomResourceDefinitions first so the objects that
//! use them can follow at once.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Errors reading or applying manifests.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {kind} {name:?} has an unknown apiVersion/kind {api_version}")]
    UnknownKind {
        path: PathBuf,
        kind: String,
        name: String,
        api_version: String,
    },
    #[error("{path}: applying {kind} {name:?}: {message}")]
    Apply {
        path: PathBuf,
        kind: String,
        name: String,
        message: String,
    },
}

/// One manifest document and where it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub object: Value,
}

/// Read every manifest under `path` (non-recursive for directories), sorted by file name.
pub fn read_manifests(path: &Path) -> Result<Vec<Manifest>, ApplyError> {
    let mut files = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| ApplyError::Read {
            path: path.into(),
            source,
        })?;
        for e in entries {
            let p = e
                .map_err(|source| ApplyError::Read {
                    path: path.into(),
                    source,
                })?
                .path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if p.is_file() && matches!(ext, "yaml" | "yml" | "json") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| ApplyError::Read {
            path: f.clone(),
            source,
        })?;
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text).map_err(|e| ApplyError::Parse {
            path: f.clone(),
            message: e.to_string(),
        })?;
        for d in docs.into_iter().filter(|d| d.is_object()) {
            if d["kind"].as_str().is_some_and(|k| k.ends_with("List")) && d["items"].is_array() {
                for item in d["items"].as_array().into_iter().flatten() {
                    out.push(Manifest {
                        path: f.clone(),
                        object: item.clone(),
                    });
                }
            } else {
                out.push(Manifest {
                    path: f.clone(),
                    object: d,
                });
            }
        }
    }
    Ok(out)
}

/// CRDs first, then Namespaces, then the rest in file order.
pub fn order(manifests: &mut [Manifest]) {
    manifests.sort_by_key(|m| match m.object["kind"].as_str() {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    });
}
