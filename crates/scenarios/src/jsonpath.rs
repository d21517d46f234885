//! JSONPath as scenario authors write it: kubectl style (`.metadata.labels.app\.kubernetes\.io/name`,
//! `{.spec.containers[0].image}`) or RFC 9535 (`$.metadata.name`). Paths are translated to the
//! bracket form that `jsonpath-rust` accepts, compiled once at load time, and evaluated later
//! by the validation engine against objects read from the practice cluster.

use jsonpath_rust::parser::model::JpQuery;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// Why a path could not be translated or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("unbalanced brackets or quotes")]
    Unbalanced,
    #[error("kubectl template constructs such as `{{range}}` are not supported; use a single path")]
    Template,
    #[error("{0}")]
    Syntax(String),
}

/// A compiled JSONPath, remembering how the author wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct KubePath {
    source: String,
    translated: String,
    query: JpQuery,
}

impl KubePath {
    /// Translates (see [`translate_kube_path`]) and compiles `source`.
    pub fn parse(source: &str) -> Result<Self, PathError> {
        let translated = translate_kube_path(source)?;
        let query = jsonpath_rust::parser::parse_json_path(&translated)
            .map_err(|e| PathError::Syntax(one_line(&e.to_string())))?;
        Ok(Self {
            source: source.to_owned(),
            translated,
            query,
        })
    }

    /// The path as the author wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The RFC 9535 form that is actually evaluated.
    pub fn translated(&self) -> &str {
        &self.translated
    }

    /// All values the path selects in `value`, in document order; empty when nothing matches.
    pub fn query<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        jsonpath_rust::query::js_path_process(&self.query, value)
            .map(|refs| refs.into_iter().map(|r| r.val()).collect())
            .unwrap_or_default()
    }
}

impl Serialize for KubePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Translates a kubectl-style or RFC 9535 path into the RFC 9535 bracket form.
///
/// - `{...}` around the path (kubectl `-o jsonpath` style) is removed;
/// - a missing `$` root is added (`.metadata.name` and `metadata.name` both work);
/// - `\.` inside a name is a literal dot, and names that are not plain identifiers become
///   bracketed, quoted names: `.metadata.labels.pod-security\.kubernetes\.io/enforce`
///   becomes `$.metadata.labels['pod-security.kubernetes.io/enforce']`;
/// - bracket expressions (`[0]`, `[*]`, `[?(@.name=="x")]`, `['a.b']`) pass through unchanged.
pub fn translate_kube_path(source: &str) -> Result<String, PathError> {
    let mut s = source.trim();
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if let Some(inner) = s.strip_prefix('{') {
        s = inner.strip_suffix('}').ok_or(PathError::Unbalanced)?.trim();
        if s.contains('{') || s.starts_with("range") || s.starts_with("end") {
            return Err(PathError::Template);
        }
    }
    let body = match s.strip_prefix('$') {
        Some(rest) => rest,
        None => s,
    };
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::from("$");
    let mut i = 0;
    // A leading bare name (`metadata.name`) is a child of the root.
    let mut expect_name = !chars.is_empty() && chars[0] != '.' && chars[0] != '[';
    while i < chars.len() || expect_name {
        if expect_name {
            expect_name = false;
            let (name, next) = read_name(&chars, i);
            i = next;
            push_name(&mut out, &name);
            continue;
        }
        match chars[i] {
            '.' => {
                if chars.get(i + 1) == Some(&'.') {
                    out.push_str("..");
                    i += 2;
                    if chars.get(i) == Some(&'[') {
                        continue;
                    }
                    let (name, next) = read_name(&chars, i);
                    i = next;
                    if name == "*" {
                        out.push('*');
                    } else if is_identifier(&name) {
                        out.push_str(&name);
                    } else {
                        out.push_str(&quoted(&name));
                    }
                    continue;
                }
                let (name, next) = read_name(&chars, i + 1);
                i = next;
                if name.is_empty() {
                    // A lone `.` is the object itself (kubectl `{.}`); a trailing dot adds nothing.
                    if i >= chars.len() {
                        continue;
                    }
                    return Err(PathError::Syntax(format!("empty name in `{source}`")));
                }
                push_name(&mut out, &name);
            }
            '[' => {
                let end = bracket_end(&chars, i)?;
                out.extend(&chars[i..=end]);
                i = end + 1;
            }
            c => {
                return Err(PathError::Syntax(format!(
                    "unexpected `{c}` in `{source}`; separate names with `.`"
                )));
            }
        }
    }
    Ok(out)
}

/// Reads a name starting at `i` up to the next unescaped `.` or `[`.
fn read_name(chars: &[char], mut i: usize) -> (String, usize) {
    let mut name = String::new();
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                name.push(chars[i + 1]);
                i += 2;
            }
            '.' | '[' => break,
            c => {
                name.push(c);
                i += 1;
            }
        }
    }
    (name, i)
}

fn push_name(out: &mut String, name: &str) {
    if name == "*" {
        out.push_str("[*]");
    } else if is_identifier(name) {
        out.push('.');
        out.push_str(name);
    } else {
        out.push_str(&quoted(name));
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn quoted(name: &str) -> String {
    let escaped = name.replace('\\', "\\\\").replace('\'', "\\'");
    format!("['{escaped}']")
}

/// Index of the `]` closing the `[` at `start`, skipping quoted text and nested brackets.
fn bracket_end(chars: &[char], start: usize) -> Result<usize, PathError> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) => {
                if c == '\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    Err(PathError::Unbalanced)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> String {
        translate_kube_path(s).unwrap()
    }

    #[test]
    fn kube_style_escaped_dots_become_bracketed_names() {
        assert_eq!(
            t(r".metadata.labels.pod-security\.kubernetes\.io/enforce"),
            "$.metadata.labels['pod-security.kubernetes.io/enforce']"
        );
    }

    #[test]
    fn common_forms_translate() {
        assert_eq!(t(".metadata.name"), "$.metadata.name");
        assert_eq!(t("metadata.name"), "$.metadata.name");
        assert_eq!(t("{.spec.containers[0].image}"), "$.spec.containers[0].image");
        assert_eq!(t("$.spec.containers[*].name"), "$.spec.containers[*].name");
        assert_eq!(t(".items.*.kind"), "$.items[*].kind");
        assert_eq!(
            t(r#".spec.containers[?(@.name=="app")].securityContext.privileged"#),
            r#"$.spec.containers[?(@.name=="app")].securityContext.privileged"#
        );
        assert_eq!(t("..image"), "$..image");
        assert_eq!(t("{.}"), "$");
    }

    #[test]
    fn evaluation_finds_labels_with_dots_and_slashes() {
        let obj = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}},
                         "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]}});
        let p = KubePath::parse(r".metadata.labels.pod-security\.kubernetes\.io/enforce").unwrap();
        assert_eq!(p.query(&obj), vec![&json!("baseline")]);
        let p = KubePath::parse(".spec.containers[*].image").unwrap();
        assert_eq!(p.query(&obj), vec![&json!("nginx"), &json!("redis")]);
        let p = KubePath::parse(r#".spec.containers[?(@.name=="b")].image"#).unwrap();
        assert_eq!(p.query(&obj), vec![&json!("redis")]);
        let p = KubePath::parse(".metadata.annotations.missing").unwrap();
        assert!(p.query(&obj).is_empty());
    }

    #[test]
    fn truncated_paths_never_panic() {
        let path = r#"{$..spec.containers[?(@.name=="a\"b")]['x.y'].env[*].value\.z}"#;
        for end in (0..=path.len()).filter(|i| path.is_char_boundary(*i)) {
            let _ = KubePath::parse(&path[..end]);
            let _ = KubePath::parse(&path[end..]);
        }
    }

    #[test]
    fn bad_paths_are_errors() {
        assert_eq!(KubePath::parse("  ").unwrap_err(), PathError::Empty);
        assert_eq!(
            KubePath::parse(".spec.containers[0").unwrap_err(),
            PathError::Unbalanced
        );
        assert!(matches!(
            KubePath::parse(r#".spec[?(@.name=="#).unwrap_err(),
            PathError::Unbalanced | PathError::Syntax(_)
        ));
        assert!(matches!(
            KubePath::parse(".spec.[0]").unwrap_err(),
            PathError::Syntax(_)
        ));
        assert_eq!(
            KubePath::parse("{range .items[*]}").unwrap_err(),
            PathError::Template
        );
    }
}
