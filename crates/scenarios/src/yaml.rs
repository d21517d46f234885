//! YAML parsing with positions: typed deserialization through serde-saphyr, unknown keys
//! collected with `serde_ignored` and reported as warnings, and a light position tree of the
//! document so that any element or key can be pointed at by line and column.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::error::{LoadError, Pos, SourceLocation, Warning};

/// Positions of every node of a YAML document, without the values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub pos: Pos,
    kind: NodeKind,
}

#[derive(Debug, Clone, Default)]
enum NodeKind {
    Map(Vec<(String, Pos, Node)>),
    Seq(Vec<Node>),
    #[default]
    Scalar,
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

impl Node {
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }

    pub(crate) fn index(&self, i: usize) -> Option<&Node> {
        match &self.kind {
            NodeKind::Seq(items) => items.get(i),
            _ => None,
        }
    }

    /// The position of the `i`-th key of a mapping.
    pub(crate) fn key_pos_at(&self, i: usize) -> Option<Pos> {
        match &self.kind {
            NodeKind::Map(entries) => entries.get(i).map(|(_, p, _)| *p),
            _ => None,
        }
    }

    pub(crate) fn key_pos(&self, key: &str) -> Option<Pos> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, p, _)| *p),
            _ => None,
        }
    }

    /// The best-known position of `path`: the key itself when the last step is a key,
    /// otherwise the deepest node on the way that exists.
    pub(crate) fn locate(&self, path: &[Seg]) -> Pos {
        let mut node = self;
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            match seg {
                Seg::Key(k) => {
                    if last && let Some(p) = node.key_pos(k) {
                        return p;
                    }
                    match node.get(k) {
                        Some(n) => node = n,
                        None => return node.pos,
                    }
                }
                Seg::Index(idx) => match node.index(*idx) {
                    Some(n) => node = n,
                    None => return node.pos,
                },
            }
        }
        node.pos
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos::new(s.referenced.line(), s.referenced.column())
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<NodeKind>::deserialize(d)?;
        Ok(Node {
            pos: pos_of(&spanned),
            kind: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<NodeKind, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = m.next_key::<Spanned<Key>>()? {
                    let value: Node = m.next_value()?;
                    entries.push((key.value.0.clone(), pos_of(&key), value));
                }
                Ok(NodeKind::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<NodeKind, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = s.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(NodeKind::Seq(items))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeKind, D::Error> {
                NodeKind::deserialize(d)
            }
            fn visit_bool<E>(self, _: bool) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_i128<E>(self, _: i128) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_u128<E>(self, _: u128) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_unit<E>(self) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_none<E>(self) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping key rendered as text (YAML allows non-string scalar keys).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Key, E> {
                Ok(Key("null".into()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Key, A::Error> {
                while m.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(Key("<mapping>".into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Key, A::Error> {
                while s.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Key("<sequence>".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// YAML 1.2 core schema booleans, as Kubernetes reads manifests: `y`, `yes`, `on` and `off`
/// stay strings (a command named `y` must not become `true`).
pub(crate) fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

/// Turns a serde-saphyr error into a [`LoadError::Yaml`] at the position it names.
pub(crate) fn yaml_error(file: &SourceLocation, err: &serde_saphyr::Error) -> LoadError {
    let inner = err.without_snippet();
    let mut message = inner.to_string();
    let pos = match inner.location() {
        Some(loc) => {
            // The message repeats the position; it is shown separately.
            let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
            Pos::new(loc.line(), loc.column())
        }
        None => Pos::UNKNOWN,
    };
    LoadError::Yaml {
        at: file.with_pos(pos),
        message,
    }
}

fn path_segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            path_segments(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            path_segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            path_segments(parent, out)
        }
    }
}

fn display_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Parses `text` into `T`, returning the value and the position tree. Unknown keys become
/// warnings pointing at the key.
pub(crate) fn parse<T: DeserializeOwned>(
    file: &SourceLocation,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<(T, Node), LoadError> {
    // The position tree first: it reports syntax errors with the same positions and never
    // fails on shape, so shape errors below come from the typed pass with its wording.
    let tree: Node =
        serde_saphyr::from_str_with_options(text, options()).map_err(|e| yaml_error(file, &e))?;
    let mut ignored: Vec<Vec<Seg>> = Vec::new();
    let value: T = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_ignored::deserialize(de, |path| {
            let mut segs = Vec::new();
            path_segments(&path, &mut segs);
            ignored.push(segs);
        })
    })
    .map_err(|e| yaml_error(file, &e))?;
    for path in ignored {
        let pos = tree.locate(&path);
        warnings.push(Warning::new(
            file.with_pos(pos),
            format!("unknown field `{}` is ignored", display_path(&path)),
        ));
    }
    Ok((value, tree))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        id: String,
    }

    #[test]
    fn unknown_keys_are_warnings_at_the_key() {
        let mut warnings = Vec::new();
        let file = SourceLocation::file("x.yaml");
        let (doc, tree): (Doc, Node) =
            parse(&file, "items:\n  - id: a\n    colour: red\n", &mut warnings).unwrap();
        assert_eq!(doc.items.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].at.line, Some(3));
        assert_eq!(warnings[0].at.column, Some(5));
        assert!(
            warnings[0].message.contains("items[0].colour"),
            "{}",
            warnings[0].message
        );
        assert_eq!(
            tree.get("items").and_then(|n| n.index(0)).map(|n| n.pos.line),
            Some(2)
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let mut warnings = Vec::new();
        let file = SourceLocation::file("x.yaml");
        let err = parse::<Doc>(&file, "items:\n  - id: [a\n", &mut warnings).unwrap_err();
        let LoadError::Yaml { at, message } = &err else {
            panic!("{err}")
        };
        assert_eq!(at.line, Some(2), "{err}");
        assert!(!message.contains("at line"), "{message}");
    }
}
