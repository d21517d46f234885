//! Running commands on the practice cluster's VMs over SSH (russh) for `command`, `script`,
//! `file_exists` and `file_content` rules.
//!
//! The SSH session runs over any byte stream a [`Transport`] opens, so the direct TCP transport
//! here and a tunnel through the KubeVirt `portforward` subresource share everything above the
//! stream. Within one run, each VM gets one connection (opened on first use) and every rule on
//! it opens its own channel, at most [`SshConfig::channels_per_vm`] at a time (OpenSSH allows 10
//! sessions per connection by default).
//!
//! Connections, transports and host-key pinning come from `cks-ssh` (re-exported here); a
//! pinned key that does not match ends the rule with [`Error::HostKeyMismatch`], and the
//! accepted keys' SHA-256 fingerprints are recorded in the report.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use cks_kubevirt::naming::VmId;
use cks_scenarios::Target;
pub use cks_ssh::{
    ConnectError, Direct, Endpoint, HostKeyCheck, HostKeyPair, SshConfig, SshStream, TargetResolver,
    Transport,
};
use futures::future::BoxFuture;
use russh::client::{self, Handle};
use russh::{ChannelMsg, ChannelWriteHalf};
use tokio::sync::{OnceCell, Semaphore};

use crate::error::Error;
use crate::output::{Captured, OutputBuffer};

/// A new ed25519 host key pair (see [`cks_ssh::generate_host_key`]).
pub fn generate_host_key() -> Result<HostKeyPair, Error> {
    Ok(cks_ssh::generate_host_key()?)
}

/// The VM a rule's target names: `worker` is worker 1.
pub fn vm_of(target: Target) -> VmId {
    match target {
        Target::ControlPlane => VmId::ControlPlane,
        Target::Worker => VmId::Worker(1),
        Target::WorkerN(n) => VmId::Worker(n),
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
    handle: Handle<HostKeyCheck>,
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
        let connection = cks_ssh::connect(&self.config, endpoint)
            .await
            .map_err(|e| match e {
                ConnectError::Connect { endpoint, cause } => Error::Connect {
                    target: target.clone(),
                    endpoint,
                    cause,
                },
                ConnectError::HostKeyMismatch {
                    endpoint,
                    expected,
                    offered,
                } => Error::HostKeyMismatch {
                    target: target.clone(),
                    endpoint,
                    expected,
                    offered,
                },
                ConnectError::AuthRefused { user, .. } => Error::AuthRefused {
                    target: target.clone(),
                    user,
                },
            })?;
        lock(&self.host_keys).insert(target, connection.host_key);
        Ok(Arc::new(Connection {
            handle: connection.handle,
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
    fn a_bad_key_is_an_ssh_key_error() {
        let e: Error = SshConfig::from_openssh("root", "not a key").unwrap_err().into();
        assert_eq!(e.category(), "ssh-key");
    }

    #[test]
    fn targets_map_to_vms() {
        assert_eq!(vm_of(Target::ControlPlane), VmId::ControlPlane);
        assert_eq!(vm_of(Target::Worker), VmId::Worker(1));
        assert_eq!(vm_of(Target::WorkerN(3)), VmId::Worker(3));
    }
}
