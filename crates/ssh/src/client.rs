//! The SSH client side every component shares: where a VM's SSH server is ([`Endpoint`],
//! [`TargetResolver`]), how the byte stream to it is opened ([`Transport`]: [`Direct`] TCP or
//! the KubeVirt port-forward), how to log in ([`SshConfig`]), and [`connect`], which opens the
//! stream, runs the handshake accepting only the pinned host key, and authenticates.
//!
//! Host keys are pinned: the operator gives each practice cluster an ed25519 host key of its
//! own through the VMs' cloud-init ([`generate_host_key`]), and [`SshConfig::with_host_key`]
//! makes the client accept only that key (and offer only its algorithm, so a server with
//! several host keys presents the pinned one). Any other key ends the handshake with
//! [`ConnectError::HostKeyMismatch`]. Without a pinned key (tests and tools against hosts of
//! their own) every key is accepted. Either way the SHA-256 fingerprint is returned.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cks_kubevirt::naming::VmId;
use futures::future::BoxFuture;
use russh::client::{self, Handle};
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use tokio::io::{AsyncRead, AsyncWrite};

/// Bytes kept of each of stdout and stderr per command by default.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// Where a VM's SSH server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The VM (or VMI) name, for messages and for transports that address VMs by name.
    pub vm: String,
    /// Address for direct transports (the VMI IP).
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn new(vm: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            vm: vm.into(),
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}:{}", self.vm, self.host, self.port)
    }
}

/// The SSH endpoint of each VM of one practice cluster.
#[derive(Debug, Clone, Default)]
pub struct TargetResolver {
    endpoints: HashMap<VmId, Endpoint>,
}

impl TargetResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the endpoint of `vm`.
    pub fn with(mut self, vm: VmId, endpoint: Endpoint) -> Self {
        self.endpoints.insert(vm, endpoint);
        self
    }

    pub fn get(&self, vm: VmId) -> Option<&Endpoint> {
        self.endpoints.get(&vm)
    }
}

/// A byte stream an SSH session can run over.
pub trait SshStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> SshStream for T {}

/// Opens the byte stream to a VM's SSH port.
pub trait Transport: Send + Sync + fmt::Debug {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, io::Result<Box<dyn SshStream>>>;
}

/// TCP straight to `host:port` (the VMI IP, reachable from the pod network).
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl Transport for Direct {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, io::Result<Box<dyn SshStream>>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn SshStream>)
        })
    }
}

/// How to reach and log in to the VMs.
#[derive(Clone)]
pub struct SshConfig {
    /// Login user (the golden image authorises the pool's key for `root`).
    pub user: String,
    pub key: Arc<PrivateKey>,
    pub transport: Arc<dyn Transport>,
    /// Bound on opening the stream plus the SSH handshake and authentication.
    pub connect_timeout: Duration,
    /// Bytes kept of each of stdout and stderr per command (command executors).
    pub output_limit: usize,
    /// Channels open at once on one VM's connection (command executors).
    pub channels_per_vm: usize,
    /// The only host key the VMs may present; `None` accepts any (see the module docs).
    pub host_key: Option<Arc<PublicKey>>,
}

impl fmt::Debug for SshConfig {
    // The key is a secret: show only its public fingerprint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshConfig")
            .field("user", &self.user)
            .field(
                "key",
                &self.key.public_key().fingerprint(HashAlg::Sha256).to_string(),
            )
            .field("transport", &self.transport)
            .field("connect_timeout", &self.connect_timeout)
            .field("output_limit", &self.output_limit)
            .field("channels_per_vm", &self.channels_per_vm)
            .field(
                "host_key",
                &self
                    .host_key
                    .as_ref()
                    .map(|k| k.fingerprint(HashAlg::Sha256).to_string()),
            )
            .finish()
    }
}

impl SshConfig {
    /// Direct transport and default limits, logging in as `user` with `key`.
    pub fn new(user: impl Into<String>, key: PrivateKey) -> Self {
        Self {
            user: user.into(),
            key: Arc::new(key),
            transport: Arc::new(Direct),
            connect_timeout: Duration::from_secs(10),
            output_limit: DEFAULT_OUTPUT_LIMIT,
            channels_per_vm: 8,
            host_key: None,
        }
    }

    /// Accepts only `key` as the VMs' host key.
    pub fn with_host_key(mut self, key: PublicKey) -> Self {
        self.host_key = Some(Arc::new(key));
        self
    }

    /// Like [`SshConfig::with_host_key`], with the key as an OpenSSH public key line.
    pub fn with_host_key_openssh(self, key: &str) -> Result<Self, KeyError> {
        let key =
            PublicKey::from_openssh(key.trim()).map_err(|e| KeyError(format!("host key {key:?}: {e}")))?;
        Ok(self.with_host_key(key))
    }

    /// Like [`SshConfig::new`], with an OpenSSH (or PEM) private key as stored in the pool's
    /// `kubernetes.io/ssh-auth` Secret.
    pub fn from_openssh(user: impl Into<String>, key: &str) -> Result<Self, KeyError> {
        let key = russh::keys::decode_secret_key(key, None).map_err(|e| KeyError(e.to_string()))?;
        Ok(Self::new(user, key))
    }

    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self
    }
}

/// A key that cannot be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// An ed25519 SSH host key pair in OpenSSH formats, as cloud-init's `ssh_keys` takes it.
#[derive(Clone)]
pub struct HostKeyPair {
    /// The private key, `-----BEGIN OPENSSH PRIVATE KEY-----`.
    pub private_openssh: String,
    /// The public key line, `ssh-ed25519 AAAA…`.
    pub public_openssh: String,
}

impl fmt::Debug for HostKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private half is a secret.
        f.debug_struct("HostKeyPair")
            .field("public_openssh", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

/// A new ed25519 host key pair from the system's secure random generator.
pub fn generate_host_key() -> Result<HostKeyPair, KeyError> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| KeyError("no randomness for a host key".to_owned()))?;
    // The key pair wipes itself when dropped; the seed is cleared as well (best effort).
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError(e.to_string()))?
        .to_string();
    let public_openssh = key
        .public_key()
        .to_openssh()
        .map_err(|e| KeyError(e.to_string()))?;
    Ok(HostKeyPair {
        private_openssh,
        public_openssh,
    })
}

/// Why [`connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The transport to the VM, or the SSH handshake, failed.
    #[error("connecting to {endpoint}: {cause}")]
    Connect { endpoint: String, cause: String },
    /// The VM presented a host key other than the pinned one: the connection may not be to
    /// the VM at all, so nothing is sent over it.
    #[error(
        "connecting to {endpoint}: the SSH host key {offered} is not the cluster's pinned key {expected}"
    )]
    HostKeyMismatch {
        endpoint: String,
        expected: String,
        offered: String,
    },
    /// The VM refused the configured key.
    #[error("{endpoint} refused SSH public-key authentication as `{user}`")]
    AuthRefused { endpoint: String, user: String },
}

/// An authenticated SSH connection.
pub struct Connection {
    pub handle: Handle<HostKeyCheck>,
    /// SHA-256 fingerprint of the host key the server presented.
    pub host_key: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("host_key", &self.host_key)
            .field("closed", &self.handle.is_closed())
            .finish()
    }
}

/// Opens the transport to `endpoint`, runs the SSH handshake accepting only the pinned host
/// key (any when none is pinned) and logs in with the configured key, all within
/// [`SshConfig::connect_timeout`].
pub async fn connect(config: &SshConfig, endpoint: &Endpoint) -> Result<Connection, ConnectError> {
    connect_with(config, endpoint, client::Config::default()).await
}

/// Like [`connect`], with russh client settings of the caller's (window and buffer sizes).
pub async fn connect_with(
    config: &SshConfig,
    endpoint: &Endpoint,
    mut client_config: client::Config,
) -> Result<Connection, ConnectError> {
    let failed = |cause: String| ConnectError::Connect {
        endpoint: endpoint.to_string(),
        cause,
    };
    // The key the handshake saw: accepted, or refused for not being the pinned one.
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let handshake = async {
        let stream = config
            .transport
            .connect(endpoint)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let handler = HostKeyCheck {
            vm: endpoint.vm.clone(),
            pinned: config.host_key.clone(),
            seen: seen.clone(),
        };
        if let Some(pinned) = &config.host_key {
            client_config.preferred.key = vec![pinned.algorithm()].into();
        }
        let mut handle = client::connect_stream(Arc::new(client_config), stream, handler)
            .await
            .map_err(|e| match (&config.host_key, lock(&seen).take()) {
                (Some(pinned), Some(offered)) => ConnectError::HostKeyMismatch {
                    endpoint: endpoint.to_string(),
                    expected: pinned.fingerprint(HashAlg::Sha256).to_string(),
                    offered,
                },
                _ => failed(e.to_string()),
            })?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| failed(e.to_string()))?
            .flatten();
        let auth = handle
            .authenticate_publickey(
                config.user.clone(),
                PrivateKeyWithHashAlg::new(config.key.clone(), hash),
            )
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !auth.success() {
            return Err(ConnectError::AuthRefused {
                endpoint: endpoint.to_string(),
                user: config.user.clone(),
            });
        }
        Ok(handle)
    };
    let handle = tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| {
            failed(format!(
                "no SSH session within {}s",
                config.connect_timeout.as_secs_f64()
            ))
        })??;
    tracing::debug!(endpoint = %endpoint, "SSH connection opened");
    let host_key = lock(&seen).take().unwrap_or_default();
    Ok(Connection { handle, host_key })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts the pinned host key (any key when none is pinned) and notes its fingerprint.
#[derive(Debug)]
pub struct HostKeyCheck {
    vm: String,
    pinned: Option<Arc<PublicKey>>,
    /// Fingerprint of the key presented.
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let (data, fingerprint) = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                (key.key_data(), key.fingerprint(HashAlg::Sha256))
            }
            PublicKeyOrCertificate::Certificate(cert) => {
                (cert.public_key(), cert.public_key().fingerprint(HashAlg::Sha256))
            }
        };
        let fingerprint = fingerprint.to_string();
        *lock(&self.seen) = Some(fingerprint.clone());
        if let Some(pinned) = &self.pinned
            && pinned.key_data() != data
        {
            tracing::warn!(vm = %self.vm, %fingerprint, "SSH host key is not the pinned one");
            return Ok(false);
        }
        tracing::debug!(vm = %self.vm, %fingerprint, "accepting SSH host key");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_is_an_error_and_debug_output_shows_only_the_fingerprint() {
        assert!(SshConfig::from_openssh("root", "not a key").is_err());
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAByd2wjXTXadeChMxZs1twxfYzdTc0nfRTyoerlkWD/wAAAJhZbzKjWW8y
owAAAAtzc2gtZWQyNTUxOQAAACAByd2wjXTXadeChMxZs1twxfYzdTc0nfRTyoerlkWD/w
AAAEDll0Foox1Y4E8nSXnsXdEjqgfXgU1g7nY6CJlc6mEqIAHJ3bCNdNdp14KEzFmzW3DF
9jN1NzSd9FPKh6uWRYP/AAAAE2Nrcy12YWxpZGF0aW9uLXRlc3QBAg==
-----END OPENSSH PRIVATE KEY-----
";
        let config = SshConfig::from_openssh("root", pem).unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("SHA256:"), "{shown}");
        // Neither the private half nor the encoded key file appears.
        assert!(
            !shown.contains("AAAAEDll0Foox1Y4E8nSXnsXdEjqgfXgU1g7nY6CJlc6mEq"),
            "{shown}"
        );
        assert!(!shown.contains("private"), "{shown}");
        let pair = generate_host_key().unwrap();
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }
}
