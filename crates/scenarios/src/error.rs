//! Problems found while loading a catalog: errors (the scenario is rejected) and warnings
//! (the scenario loads, but the author should look), both pointing at a file and, where the
//! parser knows it, a line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A place in a catalog file. Lines and columns are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SourceLocation {
    /// The file, as found under the catalog directory.
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl SourceLocation {
    /// The whole file, no position inside it.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
        }
    }

    /// A position in `file`; zero line or column means "unknown", as in serde-saphyr.
    pub fn at(file: impl Into<PathBuf>, line: u64, column: u64) -> Self {
        // Files are size-bounded far below 4G lines; saturate rather than wrap regardless.
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            file: file.into(),
            line: (line > 0).then(|| clamp(line)),
            column: (line > 0 && column > 0).then(|| clamp(column)),
        }
    }

    /// Same file, different position.
    pub(crate) fn with_pos(&self, pos: Pos) -> Self {
        Self::at(self.file.clone(), pos.line, pos.column)
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// A line/column pair inside some file (1-based; 0 = unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub const UNKNOWN: Pos = Pos { line: 0, column: 0 };

    pub fn new(line: u64, column: u64) -> Self {
        Self { line, column }
    }

    /// The line/column of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text.as_bytes()[..offset];
        let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() as u64 + 1;
        Self { line, column }
    }
}

/// Why a scenario (or the catalog's `categories.yaml`) could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    #[error("{at}: cannot read: {cause}")]
    Read { at: SourceLocation, cause: String },

    #[error("{at}: file is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        at: SourceLocation,
        size: u64,
        limit: u64,
    },

    #[error("{at}: not valid UTF-8 text (invalid byte sequence here)")]
    NotUtf8 { at: SourceLocation },

    #[error("{at}: symlink points outside the catalog directory (to {target}); refusing to follow it")]
    SymlinkOutside { at: SourceLocation, target: PathBuf },

    #[error("{at}: invalid YAML: {message}")]
    Yaml { at: SourceLocation, message: String },

    #[error("{at}: {message}")]
    Invalid { at: SourceLocation, message: String },

    #[error("{at}: missing required file {expected}")]
    MissingFile { at: SourceLocation, expected: String },

    #[error(
        "{at}: task {number:02} has no validation file (expected validation/{number:02}-validation.yaml)"
    )]
    MissingValidation { at: SourceLocation, number: u32 },

    #[error(
        "{at}: validation file for task {number:02} has no task file (expected tasks/{number:02}-<name>.md)"
    )]
    MissingTask { at: SourceLocation, number: u32 },

    #[error("{at}: duplicate rule id `{id}` (first used at line {first_line})")]
    DuplicateRuleId {
        at: SourceLocation,
        id: String,
        first_line: u32,
    },

    #[error("{at}: rule `{rule}`: unknown rule type `{found}` (expected one of {expected})")]
    UnknownRuleType {
        at: SourceLocation,
        rule: String,
        found: String,
        expected: &'static str,
    },

    #[error("{at}: rule `{rule}`: unknown condition `{found}` (expected one of {expected})")]
    UnknownCondition {
        at: SourceLocation,
        rule: String,
        found: String,
        expected: &'static str,
    },

    #[error("{at}: rule `{rule}`: invalid regex `{pattern}`: {cause}")]
    BadRegex {
        at: SourceLocation,
        rule: String,
        pattern: String,
        cause: String,
    },

    #[error("{at}: rule `{rule}`: invalid JSONPath `{path}`: {cause}")]
    BadJsonPath {
        at: SourceLocation,
        rule: String,
        path: String,
        cause: String,
    },

    #[error("{at}: unknown target `{found}` (expected control-plane, worker or worker-N)")]
    BadTarget { at: SourceLocation, found: String },
}

impl LoadError {
    /// Where the problem is.
    pub fn location(&self) -> &SourceLocation {
        match self {
            LoadError::Read { at, .. }
            | LoadError::TooLarge { at, .. }
            | LoadError::NotUtf8 { at }
            | LoadError::SymlinkOutside { at, .. }
            | LoadError::Yaml { at, .. }
            | LoadError::Invalid { at, .. }
            | LoadError::MissingFile { at, .. }
            | LoadError::MissingValidation { at, .. }
            | LoadError::MissingTask { at, .. }
            | LoadError::DuplicateRuleId { at, .. }
            | LoadError::UnknownRuleType { at, .. }
            | LoadError::UnknownCondition { at, .. }
            | LoadError::BadRegex { at, .. }
            | LoadError::BadJsonPath { at, .. }
            | LoadError::BadTarget { at, .. } => at,
        }
    }

    /// The file the problem is in.
    pub fn file(&self) -> &Path {
        &self.location().file
    }

    /// A short stable name for the kind of problem (for JSON output, metrics and events).
    pub fn category(&self) -> &'static str {
        match self {
            LoadError::Read { .. } => "read",
            LoadError::TooLarge { .. } => "too-large",
            LoadError::NotUtf8 { .. } => "not-utf8",
            LoadError::SymlinkOutside { .. } => "symlink-outside",
            LoadError::Yaml { .. } => "yaml",
            LoadError::Invalid { .. } => "invalid",
            LoadError::MissingFile { .. } => "missing-file",
            LoadError::MissingValidation { .. } => "missing-validation",
            LoadError::MissingTask { .. } => "missing-task",
            LoadError::DuplicateRuleId { .. } => "duplicate-rule-id",
            LoadError::UnknownRuleType { .. } => "unknown-rule-type",
            LoadError::UnknownCondition { .. } => "unknown-condition",
            LoadError::BadRegex { .. } => "bad-regex",
            LoadError::BadJsonPath { .. } => "bad-jsonpath",
            LoadError::BadTarget { .. } => "bad-target",
        }
    }

    /// The message without the location prefix, for output that shows the location apart.
    pub fn message(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.location());
        full.strip_prefix(&prefix).map(str::to_owned).unwrap_or(full)
    }

    pub(crate) fn invalid(at: SourceLocation, message: impl Into<String>) -> Self {
        LoadError::Invalid {
            at,
            message: message.into(),
        }
    }
}

/// Something an author should look at that does not stop the scenario from loading, such as
/// an unknown field (often a typo) or a file that the loader ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Where to look.
    pub at: SourceLocation,
    /// What is wrong, for a person.
    pub message: String,
}

impl Warning {
    pub(crate) fn new(at: SourceLocation, message: impl Into<String>) -> Self {
        Self {
            at,
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Errors serialize as `{category, file, line, column, message}` for JSON output.
impl Serialize for LoadError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let at = self.location();
        let mut st = s.serialize_struct("LoadError", 5)?;
        st.serialize_field("category", self.category())?;
        st.serialize_field("file", &at.file)?;
        st.serialize_field("line", &at.line)?;
        st.serialize_field("column", &at.column)?;
        st.serialize_field("message", &self.message())?;
        st.end()
    }
}
