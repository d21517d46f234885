//! `kubectl apply` of a setup step's manifest against a practice cluster: every YAML document
//! is server-side applied (field manager [`FIELD_MANAGER`]) through the Api its kind resolves
//! to by discovery, so any kind the practice cluster serves works, custom resources included.

use cks_api::names::FIELD_MANAGER;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde_json::Value;

/// The documents of a manifest, empty ones dropped, each checked for apiVersion, kind and
/// metadata.name.
pub fn documents(manifest: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Option<Value>> =
        serde_saphyr::from_multiple(manifest).map_err(|e| format!("manifest is not YAML: {e}"))?;
    let docs: Vec<Value> = docs.into_iter().flatten().filter(|d| !d.is_null()).collect();
    for (i, doc) in docs.iter().enumerate() {
        let field = |path: &str| {
            doc.pointer(path)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if field("/apiVersion").is_none() || field("/kind").is_none() || field("/metadata/name").is_none() {
            return Err(format!(
                "manifest document {} needs apiVersion, kind and metadata.name",
                i + 1
            ));
        }
    }
    Ok(docs)
}

/// The group/version/kind a document names.
pub fn gvk_of(doc: &Value) -> GroupVersionKind {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// Server-side applies every document of `manifest`, in order. Returns a line per object
/// (`configmap/x created or updated`) or the first failure.
pub async fn apply_manifest(client: &Client, manifest: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for doc in documents(manifest)? {
        let gvk = gvk_of(&doc);
        let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let (resource, caps) = discovery::pinned_kind(client, &gvk).await.map_err(|e| {
            format!(
                "{} {name}: kind not served by the practice cluster: {e}",
                gvk.kind
            )
        })?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&doc),
        )
        .await
        .map_err(|e| format!("apply {} {name}: {e}", gvk.kind))?;
        out.push(format!("{}/{name} applied", gvk.kind.to_lowercase()));
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_and_check_each() {
        let docs = documents(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(gvk_of(&docs[0]), GroupVersionKind::gvk("", "v1", "Namespace"));
        assert_eq!(
            gvk_of(&docs[1]),
            GroupVersionKind::gvk("apps", "v1", "Deployment")
        );
        let err = documents("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(err.contains("document 1 needs"), "{err}");
        assert!(documents("a: [").is_err());
    }
}
