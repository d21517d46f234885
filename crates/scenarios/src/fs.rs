//! Guarded file access under a catalog root: files are size-bounded, must be UTF-8, must be
//! regular files, and may not reach outside the catalog through symlinks.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{LoadError, Pos, SourceLocation};

/// File access rooted at one catalog directory.
#[derive(Debug, Clone)]
pub(crate) struct CatalogFs {
    /// The root as the caller spelled it; used in messages so paths look familiar.
    root: PathBuf,
    /// The resolved root, for containment checks.
    canonical_root: PathBuf,
    max_file_bytes: u64,
}

impl CatalogFs {
    pub(crate) fn new(root: &Path, max_file_bytes: u64) -> Result<Self, LoadError> {
        let canonical_root = fs::canonicalize(root).map_err(|e| LoadError::Read {
            at: SourceLocation::file(root),
            cause: e.to_string(),
        })?;
        if !canonical_root.is_dir() {
            return Err(LoadError::invalid(SourceLocation::file(root), "not a directory"));
        }
        Ok(Self {
            root: root.to_path_buf(),
            canonical_root,
            max_file_bytes,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Refuses `path` if it (or a symlink on the way) resolves outside the catalog.
    /// Returns the resolved path.
    pub(crate) fn contained(&self, path: &Path) -> Result<PathBuf, LoadError> {
        let resolved = fs::canonicalize(path).map_err(|e| LoadError::Read {
            at: SourceLocation::file(path),
            cause: e.to_string(),
        })?;
        if resolved.starts_with(&self.canonical_root) {
            Ok(resolved)
        } else {
            Err(LoadError::SymlinkOutside {
                at: SourceLocation::file(path),
                target: resolved,
            })
        }
    }

    /// Reads a text file, enforcing the containment, size and UTF-8 rules.
    pub(crate) fn read_text(&self, path: &Path) -> Result<String, LoadError> {
        let at = || SourceLocation::file(path);
        let resolved = self.contained(path)?;
        let read_err = |e: std::io::Error| LoadError::Read {
            at: at(),
            cause: e.to_string(),
        };
        // Opening a FIFO blocks until a writer appears (forever, in a catalog) and reading a
        // device may never end: look at the file type before opening.
        let kind = fs::metadata(&resolved).map_err(read_err)?.file_type();
        if !kind.is_file() {
            return Err(LoadError::invalid(at(), not_regular(kind)));
        }
        let file = File::open(&resolved).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        // The name may have been swapped for something else between the two looks.
        if !meta.is_file() {
            return Err(LoadError::invalid(at(), not_regular(meta.file_type())));
        }
        if meta.len() > self.max_file_bytes {
            return Err(LoadError::TooLarge {
                at: at(),
                size: meta.len(),
                limit: self.max_file_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may grow between stat and read; never read more than the limit allows.
        file.take(self.max_file_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > self.max_file_bytes {
            return Err(LoadError::TooLarge {
                at: at(),
                size: bytes.len() as u64,
                limit: self.max_file_bytes,
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let pos = Pos::of_offset(&prefix, prefix.len());
            LoadError::NotUtf8 {
                at: at().with_pos(pos),
            }
        })?;
        Ok(match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_owned(),
            None => text,
        })
    }

    /// Lists the entries of a directory, sorted by name. Entries that cannot be used (a
    /// symlink leaving the catalog, a name that is not UTF-8) come back as per-entry errors so
    /// that they never hide their siblings.
    pub(crate) fn list_dir(&self, dir: &Path) -> Result<Listing, LoadError> {
        self.contained(dir)?;
        let read_err = |e: std::io::Error| LoadError::Read {
            at: SourceLocation::file(dir),
            cause: e.to_string(),
        };
        let mut listing = Listing::default();
        for entry in fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let path = entry.path();
            let lossy_name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                listing.refused.push((
                    lossy_name,
                    LoadError::invalid(SourceLocation::file(&path), "file name is not valid UTF-8"),
                ));
                continue;
            };
            let file_type = entry.file_type().map_err(read_err)?;
            let is_dir = if file_type.is_symlink() {
                // Resolve to learn what it points at, and refuse escapes early.
                match self.contained(&path) {
                    Ok(resolved) => resolved.is_dir(),
                    Err(e) => {
                        listing.refused.push((name, e));
                        continue;
                    }
                }
            } else {
                file_type.is_dir()
            };
            listing.entries.push(DirEntry { name, path, is_dir });
        }
        listing.entries.sort_by(|a, b| a.name.cmp(&b.name));
        listing.refused.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(listing)
    }
}

/// Why a path that is not a regular file is refused, naming what it is.
fn not_regular(kind: fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "something else"
    };
    format!("only regular files are read, and this is {what}")
}

/// A directory's usable entries and the ones refused, by name.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub entries: Vec<DirEntry>,
    pub refused: Vec<(String, LoadError)>,
}

#[derive(Debug, Clone)]
pub(crate) struct DirEntry {
    pub name: String,
    pub path: PathBuf,
    pub is_dir: bool,
}
