//! Errors of this crate: bad input from a template or a stored Secret, never I/O.

/// Why building a practice cluster's objects failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name derived from the cluster name would not be a valid Kubernetes name.
    #[error("cluster name {cluster:?}: {reason}")]
    InvalidClusterName {
        /// The PracticeCluster name.
        cluster: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The template's Kubernetes version cannot be bootstrapped with kubeadm by this crate.
    #[error("kubernetes version {version:?}: {reason}")]
    UnsupportedKubernetesVersion {
        /// The version from the template.
        version: String,
        /// Why it is not supported.
        reason: &'static str,
    },
    /// The control plane Service's ClusterIP is not an IP address.
    #[error("API server address {0:?} is not an IP address (expected the control plane Service's ClusterIP)")]
    InvalidApiServerIp(String),
    /// The SSH public key is empty or spans several lines.
    #[error("SSH public key: {0}")]
    InvalidSshKey(&'static str),
    /// `extraCloudInit` is not a YAML mapping or does not parse.
    #[error("extraCloudInit does not parse as a YAML mapping: {0}")]
    ExtraCloudInitParse(String),
    /// `extraCloudInit` sets something that would break the cluster's bootstrap.
    #[error("extraCloudInit key {key:?} refused: {reason}")]
    ExtraCloudInitRefused {
        /// The offending key (with a path for nested entries).
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// Generating a key or certificate failed.
    #[error("cluster PKI: {0}")]
    Pki(#[from] rcgen::Error),
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// A stored PKI Secret lacks a key or holds something unreadable.
    #[error("PKI secret: {0}")]
    PkiSecret(String),
    /// Serializing a generated document failed (a bug, not bad input).
    #[error("serializing {what}: {message}")]
    Serialize {
        /// The document.
        what: &'static str,
        /// The serializer's message.
        message: String,
    },
}

impl Error {
    /// Short stable reason for metric labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidClusterName { .. } => "InvalidClusterName",
            Self::UnsupportedKubernetesVersion { .. } => "UnsupportedKubernetesVersion",
            Self::InvalidApiServerIp(_) => "InvalidApiServerIp",
            Self::InvalidSshKey(_) => "InvalidSshKey",
            Self::ExtraCloudInitParse(_) | Self::ExtraCloudInitRefused { .. } => "InvalidExtraCloudInit",
            Self::Pki(_) | Self::Random => "PkiGeneration",
            Self::PkiSecret(_) => "InvalidPkiSecret",
            Self::Serialize { .. } => "Serialize",
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
