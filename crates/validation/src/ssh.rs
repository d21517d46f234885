//! Running commands on the practice cluster's VMs over SSH (russh) for `command`, `script`,
//! `file_exists` and `file_content` rules.
//!
//! The SSH session runs over any byte stream a [`Transport`] opens, so the direct TCP transport
//! here and a tunnel through the KubeVirt `portforward` subresource share everything above the
//! stream. Within one run, each VM gets one connection (opened on first use) and every rule on
//! it opens its own channel, at most [`SshConfig::channels_per_vm`] at a time (OpenSSH allows 10
//! sessions per connection by default).
//!
//! Host keys are pinned: the operator gives each practice cluster an ed25519 host key of its
//! own through the VMs' cloud-init ([`generate_host_key`]), and [`SshConfig::with_host_key`]
//! makes the client accept only that key (and offer only its algorithm, so a server with
//! several host keys presents the pinned one). Any other key ends the handshake with
//! [`Error::HostKeyMismatch`]. Without a pinned key (tests and tools against hosts of their
//! own) every key is accepted. Either way the SHA-256 fingerprints are recorded in the report.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cks_kubevirt::naming::VmId;
use cks_scenarios::Target;
use futures::future::BoxFuture;
use russh::client::{self, Handle};
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OnceCell, Semaphore};

use crate::error::Error;
use crate::output::{Captured, DEFAULT_OUTPUT_LIMIT, OutputBuffer};

/// The VM a rule's target names: `worker` is worker 1.
pub fn vm_of(target: Target) -> VmId {
    match target {
        Target::ControlPlane => VmId::ControlPlane,
        Target::Worker => VmId::Worker(1),
        Target::WorkerN(n) => VmId::Worker(n),
    }
}

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

/// TCP straight to `host:port` (the VMI IP, reachable from the operator's pod network).
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
    /// Bytes kept of each of stdout and stderr per command.
    pub output_limit: usize,
    /// Channels open at once on one VM's connection.
    pub channels_per_vm: usize,
    /// The only host key the VMs may present; `None` accepts any (see the module docs).
    pub host_key: Option<Arc<PublicKey>>,
}

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
pub fn generate_host_key() -> Result<HostKeyPair, Error> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| Error::Key("no randomness for a host key".to_owned()))?;
    // The key pair wipes itself when dropped; the seed is cleared as well (best effort).
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::Key(e.to_string()))?
        .to_string();
    let public_openssh = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::Key(e.to_string()))?;
    Ok(HostKeyPair {
        private_openssh,
        public_openssh,
    })
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
    pub fn with_host_key_openssh(self, key: &str) -> Result<Self, Error> {
        let key =
            PublicKey::from_openssh(key.trim()).map_err(|e| Error::Key(format!("host key {key:?}: {e}")))?;
        Ok(self.with_host_key(key))
    }

    /// Like [`SshConfig::new`], with an OpenSSH (or PEM) private key as stored in the pool's
    /// `kubernetes.io/ssh-auth` Secret.
    pub fn from_openssh(user: impl Into<String>, key: &str) -> Result<Self, Error> {
        let key = russh::keys::decode_secret_key(key, None).map_err(|e| Error::Key(e.to_string()))?;
        Ok(Self::new(user, key))
    }

    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self
    }
}

/// A command to run on a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The exec request's command line, run by the login shell of the user.
    pub command: String,
    /// Bytes written to the command's stdin, followed by EOF.
    pub stdin: Option<Vec<u8>>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Code(u32),
    /// Killed by a signal (name as the server reports it).
    Signal(String),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Captured,
    pub stderr: Captured,
    pub status: ExitStatus,
}

impl ExecOutput {
    pub fn code(&self) -> Option<u32> {
        match self.status {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }
}

/// Runs commands on VMs. Implemented over SSH by [`SshExecutor`]; tests substitute fakes.
pub trait VmExec: Send + Sync {
    fn exec<'a>(&'a self, vm: VmId, request: ExecRequest) -> BoxFuture<'a, Result<ExecOutput, Error>>;

    /// SHA-256 fingerprints of the host keys accepted so far, by target name.
    fn host_keys(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// The exec request of a script (a `script` rule or setup step): the script goes to `bash -s`
/// on stdin, so nothing of it is ever parsed as part of a command line.
pub fn script_request(script: &str) -> ExecRequest {
    ExecRequest {
        command: "bash -s".to_owned(),
        stdin: Some(script.as_bytes().to_vec()),
    }
}

/// Exit code of [`file_content_request`] when the file does not exist.
pub(crate) const FILE_MISSING_CODE: u32 = 100;

/// `test -e PATH`, the path quoted for a POSIX shell.
pub(crate) fn file_exists_request(path: &str) -> Result<ExecRequest, Error> {
    Ok(ExecRequest {
        command: quote(&["test", "-e", path], path)?,
        stdin: None,
    })
}

/// `cat` of the file, exiting with [`FILE_MISSING_CODE`] when it does not exist. The script is
/// fixed; the path is its `$1`.
pub(crate) fn file_content_request(path: &str) -> Result<ExecRequest, Error> {
    let script = format!(r#"test -e "$1" || exit {FILE_MISSING_CODE}; exec cat -- "$1""#);
    Ok(ExecRequest {
        command: quote(&["sh", "-c", &script, "sh", path], path)?,
        stdin: None,
    })
}

fn quote(words: &[&str], path: &str) -> Result<String, Error> {
    shlex::try_join(words.iter().copied()).map_err(|e| Error::BadPath {
        path: path.to_owned(),
        cause: e.to_string(),
    })
}

/// [`VmExec`] over SSH, holding one connection per VM for its lifetime (one validation run).
pub struct SshExecutor {
    targets: TargetResolver,
    config: SshConfig,
    connections: Mutex<HashMap<VmId, Arc<ConnectionSlot>>>,
    host_keys: Arc<Mutex<BTreeMap<String, String>>>,
}

impl fmt::Debug for SshExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshExecutor")
            .field("targets", &self.targets)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A VM's connection, or why it could not be opened, once the first rule tried.
type ConnectionSlot = OnceCell<Result<Arc<Connection>, Error>>;

struct Connection {
    handle: Handle<HostKeyRecorder>,
    channels: Semaphore,
}

impl SshExecutor {
    pub fn new(targets: TargetResolver, config: SshConfig) -> Self {
        Self {
            targets,
            config,
            connections: Mutex::default(),
            host_keys: Arc::default(),
        }
    }

    /// The VM's connection, opened by the first rule that needs it. A failed attempt is
    /// remembered, so every rule on an unreachable VM reports the same cause at once; a
    /// connection the VM closed is replaced by the next rule that needs one.
    async fn connection(&self, vm: VmId) -> Result<Arc<Connection>, Error> {
        let cell = {
            let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            let slot = map.entry(vm).or_default();
            if let Some(Ok(conn)) = slot.get()
                && conn.handle.is_closed()
            {
                *slot = Arc::default();
            }
            slot.clone()
        };
        cell.get_or_init(|| self.connect(vm)).await.clone()
    }

    async fn connect(&self, vm: VmId) -> Result<Arc<Connection>, Error> {
        let target = vm.target();
        let endpoint = self
            .targets
            .get(vm)
            .ok_or_else(|| Error::UnknownTarget(target.clone()))?;
        let failed = |cause: String| Error::Connect {
            target: target.clone(),
            endpoint: endpoint.to_string(),
            cause,
        };
        // The key a pinned handshake refused, to name it in the error.
        let offered: Arc<Mutex<Option<String>>> = Arc::default();
        let handshake = async {
            let stream = self
                .config
                .transport
                .connect(endpoint)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let handler = HostKeyRecorder {
                target: target.clone(),
                keys: self.host_keys.clone(),
                pinned: self.config.host_key.clone(),
                offered: offered.clone(),
            };
            let mut config = client::Config::default();
            if let Some(pinned) = &self.config.host_key {
                config.preferred.key = vec![pinned.algorithm()].into();
            }
            let mut handle = client::connect_stream(Arc::new(config), stream, handler)
                .await
                .map_err(|e| match (&self.config.host_key, lock(&offered).take()) {
                    (Some(pinned), Some(offered)) => Error::HostKeyMismatch {
                        target: target.clone(),
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
                    self.config.user.clone(),
                    PrivateKeyWithHashAlg::new(self.config.key.clone(), hash),
                )
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !auth.success() {
                return Err(Error::AuthRefused {
                    target: target.clone(),
                    user: self.config.user.clone(),
                });
            }
            Ok(handle)
        };
        let handle = tokio::time::timeout(self.config.connect_timeout, handshake)
            .await
            .map_err(|_| {
                failed(format!(
                    "no SSH session within {}s",
                    self.config.connect_timeout.as_secs_f64()
                ))
            })??;
        tracing::debug!(target_vm = %target, endpoint = %endpoint, "SSH connection opened");
        Ok(Arc::new(Connection {
            handle,
            channels: Semaphore::new(self.config.channels_per_vm.max(1)),
        }))
    }

    async fn run(&self, vm: VmId, request: ExecRequest) -> Result<ExecOutput, Error> {
        let target = vm.target();
        let ssh_error = |e: russh::Error| Error::Ssh {
            target: target.clone(),
            cause: e.to_string(),
        };
        let conn = self.connection(vm).await?;
        let _permit = conn.channels.acquire().await.map_err(|e| Error::Ssh {
            target: target.clone(),
            cause: e.to_string(),
        })?;
        let channel = conn.handle.channel_open_session().await.map_err(ssh_error)?;
        channel
            .exec(true, request.command.as_bytes())
            .await
            .map_err(ssh_error)?;
        let (mut rx, tx) = channel.split();
        // Left early (rule timeout, refused exec), the guard closes the channel so the VM's sshd
        // tears the session down.
        let tx = CloseOnDrop(Some(Arc::new(tx)));
        let writer = tx.0.clone().expect("set above");

        // Stdin is written while output is read, so a script that prints a lot before reading
        // all its input cannot stall on a full window.
        let send = async {
            if let Some(input) = &request.stdin {
                writer.data(&input[..]).await?;
            }
            writer.eof().await
        };
        let limit = self.config.output_limit;
        let receive = async {
            let (mut stdout, mut stderr) = (OutputBuffer::new(limit), OutputBuffer::new(limit));
            let mut status = None;
            let mut refused = false;
            while let Some(msg) = rx.wait().await {
                match msg {
                    // The only request on this channel that wants a reply is the exec.
                    ChannelMsg::Failure => {
                        refused = true;
                        break;
                    }
                    ChannelMsg::Data { data } => stdout.push(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => stderr.push(&data),
                    ChannelMsg::ExitStatus { exit_status } => status = Some(ExitStatus::Code(exit_status)),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        status = Some(ExitStatus::Signal(format!("{signal_name:?}")));
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            (stdout.finish(), stderr.finish(), status, refused)
        };
        // Once the channel closes, a write still waiting for window space is moot.
        tokio::pin!(send, receive);
        let mut sent = None;
        let (stdout, stderr, status, refused) = loop {
            tokio::select! {
                r = &mut send, if sent.is_none() => sent = Some(r),
                out = &mut receive => break out,
            }
        };
        if refused {
            return Err(Error::Ssh {
                target,
                cause: "the VM refused the exec request".to_owned(),
            });
        }
        let Some(status) = status else {
            // A failed write explains a missing status better (the connection dropped).
            return Err(match sent {
                Some(Err(e)) => ssh_error(e),
                _ if conn.handle.is_closed() => Error::Ssh {
                    target,
                    cause: "the connection closed before the command finished".to_owned(),
                },
                _ => Error::NoExitStatus { target },
            });
        };
        // Finished normally: the server has closed the channel already.
        let mut tx = tx;
        tx.0 = None;
        Ok(ExecOutput {
            stdout,
            stderr,
            status,
        })
    }
}

impl VmExec for SshExecutor {
    fn exec<'a>(&'a self, vm: VmId, request: ExecRequest) -> BoxFuture<'a, Result<ExecOutput, Error>> {
        Box::pin(self.run(vm, request))
    }

    fn host_keys(&self) -> BTreeMap<String, String> {
        self.host_keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Closes a channel when dropped before the command finished.
struct CloseOnDrop(Option<Arc<ChannelWriteHalf<client::Msg>>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = tx.close().await;
            });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts the pinned host key (any key when none is pinned) and records its fingerprint.
struct HostKeyRecorder {
    target: String,
    keys: Arc<Mutex<BTreeMap<String, String>>>,
    pinned: Option<Arc<PublicKey>>,
    /// Fingerprint of a key refused for not being the pinned one.
    offered: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyRecorder {
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
        if let Some(pinned) = &self.pinned
            && pinned.key_data() != data
        {
            tracing::warn!(target_vm = %self.target, %fingerprint, "SSH host key is not the pinned one");
            *lock(&self.offered) = Some(fingerprint);
            return Ok(false);
        }
        tracing::debug!(target_vm = %self.target, %fingerprint, "accepting SSH host key");
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.target.clone(), fingerprint);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_are_quoted_as_single_words() {
        let r = file_exists_request("/etc/my file's; rm -rf /").unwrap();
        assert_eq!(
            shlex::split(&r.command).unwrap(),
            ["test", "-e", "/etc/my file's; rm -rf /"]
        );
        let r = file_content_request("$(reboot)").unwrap();
        let words = shlex::split(&r.command).unwrap();
        assert_eq!(words[0..2], ["sh", "-c"]);
        assert_eq!(words[3..], ["sh", "$(reboot)"]);
        assert!(matches!(file_exists_request("a\0b"), Err(Error::BadPath { .. })));
    }

    #[test]
    fn scripts_go_on_stdin_of_bash() {
        let r = script_request("echo hi; exit 3\n");
        assert_eq!(r.command, "bash -s");
        assert_eq!(r.stdin.as_deref(), Some(&b"echo hi; exit 3\n"[..]));
    }

    #[test]
    fn a_bad_key_is_an_error_and_debug_output_shows_only_the_fingerprint() {
        let e = SshConfig::from_openssh("root", "not a key").unwrap_err();
        assert_eq!(e.category(), "ssh-key");
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
    }

    #[test]
    fn targets_map_to_vms() {
        assert_eq!(vm_of(Target::ControlPlane), VmId::ControlPlane);
        assert_eq!(vm_of(Target::Worker), VmId::Worker(1));
        assert_eq!(vm_of(Target::WorkerN(3)), VmId::Worker(3));
    }
}
