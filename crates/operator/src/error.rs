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

/// Consecutive failed reconciles per object, so transient errors are retried after an
/// exponentially growing delay. In memory only: after a restart retries start from the base
/// delay again, which is harmless.
#[derive(Debug, Default)]
pub struct ErrorBackoff {
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Records one more failure of `key` and returns the delay before the next try: `base`,
    /// doubling per consecutive failure, at most 5 minutes.
    pub fn failed(&self, key: &str, base: std::time::Duration) -> std::time::Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let exp = (*n - 1).min(16);
        base.saturating_mul(2u32.saturating_pow(exp))
            .min(std::time::Duration::from_secs(300))
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
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
    fn error_backoff_doubles_per_consecutive_failure_and_resets_on_success() {
        let backoff = ErrorBackoff::default();
        let base = std::time::Duration::from_secs(1);
        let delays: Vec<u64> = (0..4).map(|_| backoff.failed("a", base).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(backoff.failed("b", base).as_secs(), 1, "counted per object");
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a", base).as_secs(), 1);
        for _ in 0..40 {
            backoff.failed("c", base);
        }
        assert_eq!(backoff.failed("c", base).as_secs(), 300);
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
