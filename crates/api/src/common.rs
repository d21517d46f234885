//! Building blocks shared by several kinds: name patterns and small reference types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A DNS-1123 label: what Kubernetes accepts as a namespace, Service or label-safe name.
pub const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain: what Kubernetes accepts as the name of most objects.
pub const DNS1123_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// True when `name` is a valid DNS-1123 label (at most 63 characters).
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && alnum(&bytes[0])
        && alnum(&bytes[bytes.len() - 1])
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// Reference to an object by name in the same namespace as the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub name: String,
}

/// Reference to a namespaced object by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedObjectReference {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub name: String,
    /// Namespace of the referenced object.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub namespace: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_label_accepts_kubernetes_names_and_refuses_others() {
        for good in ["a", "pool-1", "0abc", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good} should be a label");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad} should not be a label");
        }
    }

    #[test]
    fn label_pattern_agrees_with_label_check() {
        let re = regex_lite_match;
        for name in ["abc", "a-b", "-a", "A", "a.b"] {
            assert_eq!(re(DNS1123_LABEL, name), is_dns1123_label(name), "{name}");
        }
    }

    // The schema pattern is what the API server enforces; check it with a real regex engine.
    fn regex_lite_match(pattern: &str, s: &str) -> bool {
        let schema = serde_json::json!({"type": "string", "pattern": pattern});
        jsonschema::is_valid(&schema, &serde_json::json!(s))
    }
}
