//! Why a rule could not be evaluated (as opposed to evaluated and failed), and why a run could
//! not start. Causes from other libraries are kept as text so one connection failure can be
//! reported on every rule that needed that connection.

use std::time::Duration;

/// An evaluation error. A rule that ends in one of these has `error: true` in its result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The selected task does not exist in the scenario.
    #[error("scenario `{scenario}` has no task `{task}`")]
    UnknownTask { scenario: String, task: String },
    /// A resource rule ran on an engine without a Kubernetes client.
    #[error("no practice-cluster API client is configured for resource rules")]
    NoCluster,
    /// A command, script or file rule ran on an engine without an SSH executor.
    #[error("no SSH executor is configured for command, script and file rules")]
    NoVms,
    /// API discovery on the practice cluster failed.
    #[error("API discovery on the practice cluster failed: {0}")]
    Discovery(String),
    /// The practice cluster does not serve the kind a rule names.
    #[error("the practice cluster serves no kind `{kind}`{}", api_version.as_deref().map(|v| format!(" in {v}")).unwrap_or_default())]
    UnknownKind {
        kind: String,
        api_version: Option<String>,
    },
    /// A read from the practice cluster's API failed (other than NotFound).
    #[error("reading {what} from the practice cluster: {cause}")]
    Api { what: String, cause: String },
    /// No SSH endpoint is known for the rule's target.
    #[error("no SSH endpoint is known for target `{0}`")]
    UnknownTarget(String),
    /// The transport to the VM, or the SSH handshake, failed.
    #[error("connecting to {target} ({endpoint}): {cause}")]
    Connect {
        target: String,
        endpoint: String,
        cause: String,
    },
    /// The VM presented a host key other than the pinned one: the connection may not be to
    /// the VM at all, so nothing is sent over it.
    #[error(
        "connecting to {target} ({endpoint}): the SSH host key {offered} is not the cluster's pinned key {expected}"
    )]
    HostKeyMismatch {
        target: String,
        endpoint: String,
        expected: String,
        offered: String,
    },
    /// The VM refused the configured key.
    #[error("{target} refused SSH public-key authentication as `{user}`")]
    AuthRefused { target: String, user: String },
    /// The SSH session or channel failed while a command ran (for example the VM dropped the
    /// connection).
    #[error("SSH session with {target}: {cause}")]
    Ssh { target: String, cause: String },
    /// The channel closed without an exit status or signal.
    #[error("the command on {target} ended without an exit status")]
    NoExitStatus { target: String },
    /// A file path that no shell can be given (it contains a NUL byte).
    #[error("file path {path:?} cannot be passed to a shell: {cause}")]
    BadPath { path: String, cause: String },
    /// `cat` or `test` failed on the VM for a reason other than the file missing.
    #[error("reading {path} on {target}: {cause}")]
    File {
        target: String,
        path: String,
        cause: String,
    },
    /// A syntactically valid regex exceeded the regex engine's size limits.
    #[error("regex `{pattern}` cannot be compiled: {cause}")]
    Regex { pattern: String, cause: String },
    /// The rule did not finish within its timeout.
    #[error("the rule did not finish within its timeout of {}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The run's overall deadline passed before the rule finished.
    #[error("the validation run's deadline of {}s passed before the rule finished", .0.as_secs_f64())]
    Deadline(Duration),
    /// The SSH private key could not be read.
    #[error("invalid SSH private key: {0}")]
    Key(String),
}

impl From<cks_ssh::KeyError> for Error {
    fn from(e: cks_ssh::KeyError) -> Self {
        Error::Key(e.0)
    }
}

impl Error {
    /// A short, stable reason for metric labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::UnknownTask { .. } => "unknown-task",
            Error::NoCluster => "no-cluster",
            Error::NoVms => "no-vms",
            Error::Discovery(_) => "discovery",
            Error::UnknownKind { .. } => "unknown-kind",
            Error::Api { .. } => "api",
            Error::UnknownTarget(_) => "unknown-target",
            Error::Connect { .. } => "ssh-connect",
            Error::AuthRefused { .. } => "ssh-auth",
            Error::HostKeyMismatch { .. } => "ssh-host-key",
            Error::Ssh { .. } => "ssh",
            Error::NoExitStatus { .. } => "no-exit-status",
            Error::BadPath { .. } => "bad-path",
            Error::File { .. } => "file",
            Error::Regex { .. } => "regex",
            Error::Timeout(_) => "timeout",
            Error::Deadline(_) => "deadline",
            Error::Key(_) => "ssh-key",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_object_and_cause() {
        let e = Error::UnknownKind {
            kind: "Widget".into(),
            api_version: Some("example.com/v1".into()),
        };
        assert_eq!(
            e.to_string(),
            "the practice cluster serves no kind `Widget` in example.com/v1"
        );
        assert_eq!(e.category(), "unknown-kind");
        assert_eq!(
            Error::Timeout(Duration::from_millis(1500)).to_string(),
            "the rule did not finish within its timeout of 1.5s"
        );
    }
}
