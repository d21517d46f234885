//! Errors of the controllers, one variant per failure site. [`Error::category`] gives the
//! short stable reason used as metric label and event reason.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the host cluster's API failed.
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        /// What was attempted (`create`, `apply`, `list`, ...).
        action: &'static str,
        /// Kind of the object.
        kind: String,
        /// Namespace/name of the object (or of the list).
        name: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The cluster's template cannot be turned into VMs (bad name, version, extra cloud-init).
    #[error("cluster {cluster}: {source}")]
    Layout {
        /// PracticeCluster name.
        cluster: String,
        /// Why the layout failed.
        #[source]
        source: cks_kubevirt::Error,
    },
    /// The pool's SSH key Secret is missing or has no public key.
    #[error("SSH key secret {namespace}/{name}: {reason}")]
    SshKey {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The namespace a cluster would live in already exists and was not created for it.
    #[error(
        "namespace {namespace} exists and does not belong to PracticeCluster {cluster}; refusing to adopt it"
    )]
    ForeignNamespace {
        /// The namespace.
        namespace: String,
        /// PracticeCluster name.
        cluster: String,
    },
    /// A built practice cluster cannot be reached (no admin kubeconfig, no control-plane IP,
    /// its API not answering).
    #[error("practice cluster {cluster}: {reason}")]
    Access {
        /// PracticeCluster name.
        cluster: String,
        /// What is missing or failed.
        reason: String,
    },
    /// A write guarded by the resourceVersion read kept finding the object changed.
    #[error("could not {action} {kind} {name}: it kept changing")]
    KeptChanging {
        /// What was attempted.
        action: &'static str,
        /// Kind of the object.
        kind: &'static str,
        /// Namespace/name of the object.
        name: String,
    },
    /// An object of a watched kind did not deserialize.
    #[error("invalid {kind} {name}: {message}")]
    InvalidObject {
        /// Kind of the object.
        kind: &'static str,
        /// Namespace/name.
        name: String,
        /// The deserialization error.
        message: String,
    },
}

impl Error {
    /// Short stable reason for metric labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(s) if s.code == 409 => "Conflict",
                kube::Error::Api(s) if s.code == 404 => "NotFound",
                kube::Error::Api(s) if s.code == 403 => "Forbidden",
                kube::Error::Api(s) if s.code == 422 || s.code == 400 => "Invalid",
                _ => "KubeApi",
            },
            Self::Layout { source, .. } => source.category(),
            Self::SshKey { .. } => "SshKeyMissing",
            Self::ForeignNamespace { .. } => "ForeignNamespace",
            Self::InvalidObject { .. } => "InvalidObject",
            Self::KeptChanging { .. } => "Conflict",
            Self::Access { .. } => "PracticeClusterUnreachable",
        }
    }

    /// True when retrying cannot help until someone changes the object: a PracticeCluster
    /// whose (immutable) template cannot build VMs, or whose namespace is someone else's,
    /// fails for good; an object that does not deserialize waits for a change. A bad SSH key
    /// Secret or an unreadable PKI Secret is not among these: Secrets can be fixed, so those
    /// retry with backoff until the phase times out.
    pub fn needs_spec_change(&self) -> bool {
        use cks_kubevirt::Error as Template;
        match self {
            Self::Layout { source, .. } => matches!(
                source,
                Template::InvalidClusterName { .. }
                    | Template::UnsupportedKubernetesVersion { .. }
                    | Template::ExtraCloudInitParse(_)
                    | Template::ExtraCloudInitRefused { .. }
            ),
            Self::InvalidObject { .. } | Self::ForeignNamespace { .. } => true,
            _ => false,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a client error with what was attempted on which object.
pub(crate) fn kube_err(
    action: &'static str,
    kind: impl Into<String>,
    name: impl Into<String>,
) -> impl FnOnce(kube::Error) -> Error {
    let (kind, name) = (kind.into(), name.into());
    move |source| Error::Kube {
        action,
        kind,
        name,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("boom", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn categories_name_the_api_failure() {
        let conflict = kube_err("apply", "VirtualMachine", "ns/vm")(api(409));
        assert_eq!(conflict.category(), "Conflict");
        assert!(conflict.to_string().contains("apply VirtualMachine ns/vm"));
        assert_eq!(kube_err("get", "Secret", "a")(api(500)).category(), "KubeApi");
        let ssh = Error::SshKey {
            namespace: "cks".into(),
            name: "key".into(),
            reason: "missing".into(),
        };
        assert_eq!(ssh.category(), "SshKeyMissing");
        assert!(!ssh.needs_spec_change());
        let template = Error::Layout {
            cluster: "c".into(),
            source: cks_kubevirt::Error::ExtraCloudInitParse("not a mapping".into()),
        };
        assert!(template.needs_spec_change(), "the template is immutable");
        let secret = Error::Layout {
            cluster: "c".into(),
            source: cks_kubevirt::Error::InvalidSshKey("empty"),
        };
        assert!(!secret.needs_spec_change(), "a Secret can be fixed");
    }
}
