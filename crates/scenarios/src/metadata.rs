//! Scenario metadata (`metadata.yaml`) and the catalog's categories (`categories.yaml`).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{LoadError, Pos, SourceLocation, Warning};
use crate::fields::{Inline, RawDuration, ser_opt_secs};
use crate::yaml::{self, Node};

/// How hard a scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    Beginner,
    Intermediate,
    Advanced,
}

impl Difficulty {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "beginner" | "easy" => Difficulty::Beginner,
            "intermediate" | "medium" => Difficulty::Intermediate,
            "advanced" | "hard" | "expert" => Difficulty::Advanced,
            _ => return None,
        })
    }
}

/// What a scenario needs from its practice cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    pub nodes: NodeCount,
    pub resources: Resources,
}

/// Nodes by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCount {
    #[serde(default = "one")]
    pub control_plane: u32,
    #[serde(default = "one")]
    pub workers: u32,
}

fn one() -> u32 {
    1
}

impl Default for NodeCount {
    fn default() -> Self {
        Self {
            control_plane: 1,
            workers: 1,
        }
    }
}

/// Per-node resources, as Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "storage")]
    pub disk: Option<String>,
}

/// The fields of `metadata.yaml` once checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub id: String,
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<Difficulty>,
    #[serde(serialize_with = "ser_opt_secs", rename = "timeEstimateSeconds")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_estimate: Option<Duration>,
    pub topics: Vec<String>,
    /// An id from `categories.yaml`: as written, or else the first topic that is one (how the
    /// reference system files scenarios). `None` when neither names a category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub requirements: Requirements,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadata {
    id: Option<String>,
    #[serde(alias = "name")]
    title: Option<String>,
    description: Option<String>,
    version: Option<String>,
    difficulty: Option<String>,
    #[serde(alias = "estimatedTime", alias = "duration", alias = "timeLimit")]
    time_estimate: Option<RawDuration>,
    #[serde(alias = "tags")]
    topics: Option<Vec<String>>,
    category: Option<String>,
    requirements: Option<RawRequirements>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequirements {
    #[serde(alias = "k8sVersion")]
    kubernetes_version: Option<String>,
    #[serde(alias = "nodeCount")]
    nodes: Option<RawNodes>,
    resources: Option<Resources>,
}

/// `nodes: 2` (total, one of them the control plane) or `nodes: {controlPlane: 1, workers: 2}`.
#[derive(Debug)]
struct RawNodes(NodeCount);

impl<'de> Deserialize<'de> for RawNodes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNodes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node count or {controlPlane, workers}")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawNodes, E> {
                let total = u32::try_from(v).map_err(E::custom)?;
                if total == 0 {
                    return Err(E::custom("a cluster needs at least one node"));
                }
                Ok(RawNodes(NodeCount {
                    control_plane: 1,
                    workers: total - 1,
                }))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawNodes, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("node count cannot be negative"))?;
                self.visit_u64(v)
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawNodes, A::Error> {
                NodeCount::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(RawNodes)
            }
        }
        d.deserialize_any(V)
    }
}

/// A DNS-1123 label: what Kubernetes accepts as a name, and what we use in object names.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Loads and checks `metadata.yaml` of the scenario in directory `dir_name`.
pub(crate) fn load_metadata(
    file: &SourceLocation,
    text: &str,
    dir_name: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Metadata, Vec<LoadError>> {
    let (raw, tree): (RawMetadata, Node) = yaml::parse(file, text, warnings).map_err(|e| vec![e])?;
    let key_at = |k: &str| file.with_pos(tree.key_pos(k).unwrap_or(Pos::new(1, 1)));
    let mut errors = Vec::new();
    let mut required = |value: Option<String>, key: &str| match value {
        Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => {
            errors.push(LoadError::invalid(
                key_at(key),
                format!("missing required field `{key}`"),
            ));
            String::new()
        }
    };
    // The reference system takes a scenario's id from its directory.
    let id = match raw.id {
        None => {
            warnings.push(Warning::new(
                file.with_pos(Pos::new(1, 1)),
                format!("no `id`; the directory name `{dir_name}` is used"),
            ));
            dir_name.to_owned()
        }
        id => required(id, "id"),
    };
    let title = required(raw.title, "title");
    let category = match raw.category {
        // Derived from the topics once the catalog's categories are known.
        None => None,
        category => Some(required(category, "category")),
    };
    if !id.is_empty() {
        if !is_dns1123_label(&id) {
            errors.push(LoadError::invalid(
                key_at("id"),
                format!("id `{id}` is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"),
            ));
        } else if id != dir_name {
            errors.push(LoadError::invalid(
                key_at("id"),
                format!("id `{id}` does not match the scenario directory name `{dir_name}`"),
            ));
        }
    }
    let description = raw.description.unwrap_or_default().trim().to_owned();
    if description.is_empty() {
        warnings.push(Warning::new(key_at("description"), "scenario has no description"));
    }
    let difficulty = match raw.difficulty.as_deref() {
        None => None,
        Some(d) => match Difficulty::parse(d) {
            Some(d) => Some(d),
            None => {
                errors.push(LoadError::invalid(
                    key_at("difficulty"),
                    format!("unknown difficulty `{d}` (expected beginner, intermediate or advanced)"),
                ));
                None
            }
        },
    };
    let time_key = ["timeEstimate", "estimatedTime", "duration", "timeLimit"]
        .into_iter()
        .find(|k| tree.key_pos(k).is_some())
        .unwrap_or("timeEstimate");
    // A bare number is minutes here: that is how authors state time estimates.
    let time_estimate = match raw
        .time_estimate
        .map(|d| d.resolve(Duration::from_secs(60)))
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            errors.push(LoadError::invalid(
                key_at(time_key),
                format!("invalid time estimate: {e}"),
            ));
            None
        }
    };
    let requirements = raw
        .requirements
        .map_or_else(Requirements::default, |r| Requirements {
            kubernetes_version: r.kubernetes_version,
            nodes: r.nodes.map_or_else(NodeCount::default, |n| n.0),
            resources: r.resources.unwrap_or_default(),
        });
    if requirements.nodes.control_plane == 0 {
        errors.push(LoadError::invalid(
            key_at("requirements"),
            "requirements.nodes.controlPlane must be at least 1",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Metadata {
        id,
        title,
        description,
        version: raw.version,
        difficulty,
        time_estimate,
        topics: raw.topics.unwrap_or_default(),
        category,
        requirements,
    })
}

/// A group of scenarios, usually one CKS exam domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Category {
    /// What `metadata.yaml` `category` refers to.
    pub id: String,
    /// Display name.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawCategoriesFile {
    categories: Option<RawCategories>,
}

#[derive(Debug, Deserialize)]
struct RawCategory {
    id: Option<String>,
    #[serde(alias = "title")]
    name: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawCategoryBody {
    #[serde(alias = "title")]
    name: Option<String>,
    description: Option<String>,
}

/// `categories:` as a list of `{id, name, description}` or a map from id to
/// `{name, description}` (or just the name).
#[derive(Debug)]
struct RawCategories(Vec<RawCategory>);

impl<'de> Deserialize<'de> for RawCategories {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V(PhantomData<()>);
        impl<'de> Visitor<'de> for V {
            type Value = RawCategories;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list or a mapping of categories")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<RawCategories, A::Error> {
                let mut out = Vec::new();
                while let Some(c) = s.next_element::<RawCategory>()? {
                    out.push(c);
                }
                Ok(RawCategories(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawCategories, A::Error> {
                let mut out = Vec::new();
                while let Some((id, body)) = m.next_entry::<String, Inline<RawCategoryBody>>()? {
                    let (name, description) = match body {
                        Inline::Text(name) => (Some(name), None),
                        Inline::Block(b) => (b.name, b.description),
                    };
                    out.push(RawCategory {
                        id: Some(id),
                        name,
                        description,
                    });
                }
                Ok(RawCategories(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Loads `categories.yaml`.
pub(crate) fn load_categories(
    file: &SourceLocation,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Category>, Vec<LoadError>> {
    let mut wrapped_warnings = Vec::new();
    let (raw, tree): (RawCategoriesFile, Node) =
        yaml::parse(file, text, &mut wrapped_warnings).map_err(|e| vec![e])?;
    let (list, node) = match raw.categories {
        Some(RawCategories(list)) => {
            warnings.append(&mut wrapped_warnings);
            let node = tree.get("categories").cloned();
            (list, node)
        }
        // The reference system's file is the mapping itself: `id: {name, description}`.
        None => match yaml::parse::<Option<RawCategories>>(file, text, warnings) {
            Ok((Some(RawCategories(list)), tree)) if !list.is_empty() => (list, Some(tree)),
            _ => {
                return Err(vec![LoadError::invalid(
                    file.with_pos(Pos::new(1, 1)),
                    "missing the `categories:` list (or a mapping of category ids)",
                )]);
            }
        },
    };
    let node = node.as_ref();
    let mut errors = Vec::new();
    let mut out: Vec<Category> = Vec::new();
    for (i, c) in list.into_iter().enumerate() {
        let pos = node
            .and_then(|n| n.index(i).map(|n| n.pos).or_else(|| n.key_pos_at(i)))
            .or_else(|| tree.key_pos("categories"))
            .unwrap_or(Pos::UNKNOWN);
        let at = file.with_pos(pos);
        let Some(id) = c.id.filter(|s| !s.trim().is_empty()) else {
            errors.push(LoadError::invalid(at, "category has no `id`"));
            continue;
        };
        if out.iter().any(|o| o.id == id) {
            errors.push(LoadError::invalid(at, format!("duplicate category `{id}`")));
            continue;
        }
        out.push(Category {
            name: c.name.unwrap_or_else(|| id.clone()),
            id,
            description: c.description.map(|d| d.trim().to_owned()),
        });
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(text: &str) -> Result<Metadata, Vec<LoadError>> {
        load_metadata(
            &SourceLocation::file("metadata.yaml"),
            text,
            "basic-pod-security",
            &mut Vec::new(),
        )
    }

    #[test]
    fn full_metadata_loads() {
        let m = meta(
            "id: basic-pod-security\ntitle: PSA\ndescription: d\nversion: 1.0.0\ndifficulty: Beginner\n\
             timeEstimate: 25m\ntopics: [psa]\ncategory: cluster-hardening\nrequirements:\n  kubernetesVersion: '1.33'\n  \
             nodes: {controlPlane: 1, workers: 2}\n  resources: {cpu: '2', memory: 4Gi}\n",
        )
        .unwrap();
        assert_eq!(m.difficulty, Some(Difficulty::Beginner));
        assert_eq!(m.time_estimate, Some(Duration::from_secs(25 * 60)));
        assert_eq!(m.requirements.nodes.workers, 2);
        assert_eq!(m.requirements.resources.memory.as_deref(), Some("4Gi"));
        let m = meta(
            "id: basic-pod-security\ntitle: t\ncategory: c\nestimatedTime: 30\nrequirements: {nodes: 3}\n",
        )
        .unwrap();
        assert_eq!(m.time_estimate, Some(Duration::from_secs(1800)));
        assert_eq!(
            m.requirements.nodes,
            NodeCount {
                control_plane: 1,
                workers: 2
            }
        );
    }

    #[test]
    fn id_must_be_dns1123_and_match_the_directory() {
        let e = meta("id: Basic_PSA\ntitle: t\ncategory: c\n").unwrap_err();
        assert!(e[0].to_string().contains("DNS-1123"), "{}", e[0]);
        assert_eq!(e[0].location().line, Some(1));
        let e = meta("title: t\ncategory: c\nid: other\n").unwrap_err();
        assert!(e[0].to_string().contains("does not match"), "{}", e[0]);
        assert_eq!(e[0].location().line, Some(3));
        let e = meta("id: ''\ndescription: d\n").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        // Without an id or a category (as the reference system writes it), the directory
        // name is the id and the category comes from the topics later.
        let mut warnings = Vec::new();
        let m = load_metadata(
            &SourceLocation::file("metadata.yaml"),
            "title: t\ntopics: [pod-security]\n",
            "basic-pod-security",
            &mut warnings,
        )
        .unwrap();
        assert_eq!((m.id.as_str(), m.category), ("basic-pod-security", None));
        assert!(warnings[0].to_string().contains("no `id`"), "{warnings:?}");
    }

    #[test]
    fn categories_accept_list_and_map() {
        let f = SourceLocation::file("categories.yaml");
        let list = load_categories(
            &f,
            "categories:\n- id: a\n  name: A\n- id: b\n  name: B\n",
            &mut Vec::new(),
        )
        .unwrap();
        let map = load_categories(&f, "categories:\n  a: {name: A}\n  b: B\n", &mut Vec::new()).unwrap();
        assert_eq!(list.iter().map(|c| &c.id).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(map[1].name, "B");
        let e = load_categories(&f, "categories:\n- id: a\n- id: a\n", &mut Vec::new()).unwrap_err();
        assert_eq!(e[0].location().line, Some(3));
    }

    #[test]
    fn dns1123() {
        assert!(is_dns1123_label("basic-pod-security"));
        assert!(!is_dns1123_label("-x"));
        assert!(!is_dns1123_label("X"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }
}
