//! The one way the operator writes status: server-side apply of the status subresource with
//! a field manager per controller ([`managers`]), forced, and guarded by the resourceVersion
//! the controller decided on where another writer may have come in between.
//!
//! Server-side apply removes a field its manager applied before and leaves out now, so every
//! write sends the whole of what its manager owns: a controller computes its full status and
//! applies it (a `None` left out is a field cleared). Two managers never apply the same field;
//! the split is in [`managers`].

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Result, kube_err};

/// Field managers of status writes, one per controller (named like the controller's event
/// reporter), so `metadata.managedFields` says which controller wrote which field.
///
/// | manager | object | fields |
/// |---|---|---|
/// | [`POOL`] | ClusterPool | all of `status` |
/// | [`CLUSTER`] | PracticeCluster | all of `status` |
/// | [`VALIDATION`] | ValidationRun | all of `status` |
/// | [`VALIDATION`] | Session | `status.tasks` only |
/// | [`SESSION`] | Session | all of `status` but `tasks` |
///
/// `status.tasks` of a Session is an atomic list (no `x-kubernetes-list-type: map` in the
/// CRD): whoever applies it owns the whole list. The ValidationRun controller keeps it (it
/// records every attempt); the Session controller must leave it out of its own applies, and
/// writes the initial entries, if it writes them, with [`VALIDATION`] as manager
/// (`validation_run::apply_session_tasks`, which depends on this module, not the reverse) so that they stay in one manager's hands.
/// Children (VMs, Secrets, Services, ...) are applied with `cks_api::names::FIELD_MANAGER`.
pub mod managers {
    /// ClusterPool status.
    pub const POOL: &str = "cks-operator/clusterpool";
    /// PracticeCluster status.
    pub const CLUSTER: &str = "cks-operator/practicecluster";
    /// ValidationRun status, and Session `status.tasks`.
    pub const VALIDATION: &str = "cks-operator/validationrun";
    /// Session status but `tasks`.
    pub const SESSION: &str = "cks-operator/session";
}

/// Whether a status write must find the object as it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Written whatever happened since the read (this controller is the only writer of the
    /// object's status, and the status it writes does not depend on the rest).
    None,
    /// Written only if the object still has the resourceVersion it was read with: any write
    /// since (a claim, a spec change, another replica) makes the write fail, and the caller
    /// decides again from the new object.
    ResourceVersion,
}

/// Applies `status` as the status of `obj` with field manager `manager`, forced (the
/// manager takes over fields another manager wrote, such as an earlier operator version's).
///
/// Returns the object as written, or `None` when `guard` is [`Guard::ResourceVersion`] and
/// the object changed since `obj` was read (a 409 from the precondition): nothing was
/// written. Any other failure is an error.
pub async fn apply<K, S>(api: &Api<K>, obj: &K, manager: &str, status: &S, guard: Guard) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let name = obj.name_any();
    let mut metadata = json!({"name": name});
    if guard == Guard::ResourceVersion
        && let Some(rv) = obj.resource_version()
    {
        metadata["resourceVersion"] = json!(rv);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    match api
        .patch_status(&name, &PatchParams::apply(manager).force(), &Patch::Apply(&patch))
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(s)) if s.code == 409 && guard == Guard::ResourceVersion => {
            tracing::debug!(object = %name, "changed since it was read; status not written");
            Ok(None)
        }
        Err(e) => Err(kube_err(
            "apply status of",
            K::kind(&()).into_owned(),
            format!("{}/{name}", obj.namespace().unwrap_or_default()),
        )(e)),
    }
}
