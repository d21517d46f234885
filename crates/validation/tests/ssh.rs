//! The SSH executor against an in-process russh server on loopback that accepts one test key and
//! runs each exec request with `bash -c` in a temp dir, as sshd runs it with the user's shell.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cks_api::validation_run::ValidationRunPhase;
use cks_kubevirt::naming::VmId;
use cks_validation::{
    Endpoint, Engine, EngineOptions, SshConfig, SshStream, TargetResolver, TaskSelector, Transport,
};
use common::{assert_error, assert_failed, assert_passed, scenario};
use futures::future::BoxFuture;
use russh::keys::{HashAlg, PrivateKey, PublicKey, decode_secret_key};
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

// Test-only keys (ssh-keygen -t ed25519), never used anywhere else.
const CLIENT_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAByd2wjXTXadeChMxZs1twxfYzdTc0nfRTyoerlkWD/wAAAJhZbzKjWW8y
owAAAAtzc2gtZWQyNTUxOQAAACAByd2wjXTXadeChMxZs1twxfYzdTc0nfRTyoerlkWD/w
AAAEDll0Foox1Y4E8nSXnsXdEjqgfXgU1g7nY6CJlc6mEqIAHJ3bCNdNdp14KEzFmzW3DF
9jN1NzSd9FPKh6uWRYP/AAAAE2Nrcy12YWxpZGF0aW9uLXRlc3QBAg==
-----END OPENSSH PRIVATE KEY-----
";
const HOST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAROrh7dyx/Rzq1Q5RpGJ+usF81RtxN2f+mbNWicsQ85gAAAJiEVNVrhFTV
awAAAAtzc2gtZWQyNTUxOQAAACAROrh7dyx/Rzq1Q5RpGJ+usF81RtxN2f+mbNWicsQ85g
AAAEBeD8Sf5NLLmMx6XZQMmXXmNGftokJ77ifAFM4B3JGuWRE6uHt3LH9HOrVDlGkYn66w
XzVG3E3Z/6Zs1aJyxDzmAAAAE2Nrcy12YWxpZGF0aW9uLXRlc3QBAg==
-----END OPENSSH PRIVATE KEY-----
";
const OTHER_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDTu3UO98bb89ngEHYkjDNkiJwgt/DxRX3qASl71ObVtgAAAJhuiD1mbog9
ZgAAAAtzc2gtZWQyNTUxOQAAACDTu3UO98bb89ngEHYkjDNkiJwgt/DxRX3qASl71ObVtg
AAAEABG1lUcmY7de6itVst89dbplswKmW82vNr/WhvN9qgs9O7dQ73xtvz2eAQdiSMM2SI
nCC38PFFfeoBKXvU5tW2AAAAE2Nrcy12YWxpZGF0aW9uLXRlc3QBAg==
-----END OPENSSH PRIVATE KEY-----
";

/// Exec command on which the fake VM drops the whole connection.
const DROP_CONNECTION: &str = "__drop_connection__";
/// Exec command the fake VM refuses (as sshd refuses when it cannot start a session).
const REFUSE_EXEC: &str = "__refuse_exec__";

fn key(pem: &str) -> PrivateKey {
    decode_secret_key(pem, None).expect("test key decodes")
}

/// A fake VM: an SSH server on 127.0.0.1 whose commands run in `dir`.
struct FakeVm {
    endpoint: Endpoint,
    dir: tempfile::TempDir,
    connections: Arc<AtomicUsize>,
    load: Arc<Load>,
}

/// Commands running now, and the most that ever ran at once.
#[derive(Default)]
struct Load {
    running: AtomicUsize,
    max: AtomicUsize,
}

impl FakeVm {
    async fn start() -> FakeVm {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let config = Arc::new(server::Config {
            keys: vec![key(HOST_KEY)],
            auth_rejection_time: std::time::Duration::ZERO,
            auth_rejection_time_initial: Some(std::time::Duration::ZERO),
            ..Default::default()
        });
        let connections = Arc::new(AtomicUsize::new(0));
        let load = Arc::new(Load::default());
        let (accepted, work_dir, server_load) = (connections.clone(), dir.path().to_path_buf(), load.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let handler = VmSession {
                    dir: work_dir.clone(),
                    allowed: key(CLIENT_KEY).public_key().clone(),
                    channels: HashMap::new(),
                    load: server_load.clone(),
                };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) = server::run_stream(config, socket, handler).await {
                        let _ = session.await;
                    }
                });
            }
        });
        FakeVm {
            endpoint: Endpoint::new("lab-cp", "127.0.0.1", port),
            dir,
            connections,
            load,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn engine(&self, client_key: &str) -> Engine {
        let targets = TargetResolver::new().with(VmId::ControlPlane, self.endpoint.clone());
        let ssh = SshConfig::from_openssh("root", client_key).expect("key");
        Engine::new(targets, None, ssh)
    }
}

struct VmSession {
    dir: PathBuf,
    allowed: PublicKey,
    channels: HashMap<ChannelId, Channel<Msg>>,
    load: Arc<Load>,
}

impl server::Handler for VmSession {
    type Error = russh::Error;

    async fn auth_publickey(&mut self, _user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.allowed.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if data == DROP_CONNECTION.as_bytes() {
            return Err(russh::Error::Disconnect);
        }
        let Some(channel) = self.channels.remove(&id) else {
            return session.channel_failure(id);
        };
        if data == REFUSE_EXEC.as_bytes() {
            return session.channel_failure(id);
        }
        session.channel_success(id)?;
        let command = String::from_utf8_lossy(data).into_owned();
        let load = self.load.clone();
        let now = load.running.fetch_add(1, Ordering::SeqCst) + 1;
        load.max.fetch_max(now, Ordering::SeqCst);
        let dir = self.dir.clone();
        tokio::spawn(async move {
            run(channel, command, dir).await;
            load.running.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(())
    }
}

/// Runs `command` like sshd: stdin from the channel, stdout and stderr back, then the exit
/// status. The process is killed when the client closes the channel first.
async fn run(channel: Channel<Msg>, command: String, dir: PathBuf) {
    let Ok(mut child) = Command::new("bash")
        .arg("-c")
        .arg(&command)
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    else {
        return;
    };
    let (mut rx, tx) = channel.split();
    let mut stdin = child.stdin.take();
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let input = async {
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    if let Some(s) = stdin.as_mut() {
                        let _ = s.write_all(&data).await;
                    }
                }
                ChannelMsg::Eof => stdin = None,
                ChannelMsg::Close => return,
                _ => {}
            }
        }
    };
    let output = async {
        let out = async {
            let mut buf = vec![0; 16 * 1024];
            while let Ok(n @ 1..) = stdout.read(&mut buf).await {
                if tx.data(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let err = async {
            let mut buf = vec![0; 16 * 1024];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                if tx.extended_data(1, &buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        tokio::join!(out, err);
        let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(255);
        let _ = tx.exit_status(code as u32).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    };
    tokio::select! {
        _ = input => {}
        _ = output => {}
    }
}

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).expect("write");
}

#[tokio::test]
async fn commands_pass_and_fail_by_exit_code_and_output() {
    let vm = FakeVm::start().await;
    let s = scenario(&[r#"
- id: ok
  type: command
  command: "echo hello; echo to-stderr >&2"
  condition: output_equals
  value: hello
- id: exit-zero
  type: command
  command: "test -d /"
- id: exit-nonzero
  type: command
  command: "echo nope >&2; exit 4"
  errorMessage: the command must succeed
- id: wrong-output
  type: command
  command: "printf 'disabled\n\n'"
  condition: output_equals
  value: enabled
  errorMessage: profiling must be enabled
"#]);
    let report = vm
        .engine(CLIENT_KEY)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert_passed(&report, "ok");
    assert_passed(&report, "exit-zero");
    let o = assert_failed(&report, "exit-nonzero");
    assert_eq!(o.actual.as_deref(), Some("exit code 4"));
    assert_eq!(o.message, "the command must succeed (stderr: nope)");
    let o = assert_failed(&report, "wrong-output");
    assert_eq!(o.actual.as_deref(), Some("disabled\n\n"));
    assert_eq!(o.message, "profiling must be enabled");
    assert_eq!(report.phase(), ValidationRunPhase::Failed);
}

#[tokio::test]
async fn scripts_run_from_stdin_with_their_success_code() {
    let vm = FakeVm::start().await;
    let s = scenario(&[r#"
- id: exits-3
  type: script
  script:
    script: |
      #!/bin/bash
      # Quotes, $vars and heredocs arrive unmangled because nothing is pasted into a command line.
      name='it'"'"'s'
      printf '%s "quoted" %s\n' "$name" "$(echo sub)"
      cat <<'EOF'
      `not run` $HOME
      EOF
      exit 3
    successCode: 3
  condition: output_equals
  value: "it's \"quoted\" sub\n`not run` $HOME"
- id: wrong-code
  type: script
  script: "exit 1"
"#]);
    let report = vm
        .engine(CLIENT_KEY)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert_passed(&report, "exits-3");
    let o = assert_failed(&report, "wrong-code");
    assert_eq!(
        (o.expected.as_deref(), o.actual.as_deref()),
        (Some("exit code 0"), Some("exit code 1"))
    );
}

#[tokio::test]
async fn file_rules_read_files_whose_paths_need_quoting() {
    let vm = FakeVm::start().await;
    let odd = vm.path("audit policy's $(touch pwned).yaml");
    write(&odd, "apiVersion: audit.k8s.io/v1\nrules:\n- level: Metadata\n");
    let missing = vm.path("absent.yaml");
    let rules = format!(
        r#"
- id: content
  type: file_content
  path: {odd:?}
  condition: matches_regex
  value: "(?m)^- level: Metadata$"
- id: content-wrong
  type: file_content
  path: {odd:?}
  condition: contains
  value: "level: RequestResponse"
  errorMessage: log request bodies
- id: exists
  type: file_exists
  path: {odd:?}
- id: absent
  type: file_exists
  path: {missing:?}
  condition: not_exists
- id: absent-content
  type: file_content
  path: {missing:?}
  condition: contains
  value: x
- id: unreadable
  type: file_content
  path: {dir:?}
  condition: contains
  value: x
"#,
        dir = vm.dir.path()
    );
    let s = scenario(&[&rules]);
    let report = vm
        .engine(CLIENT_KEY)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert_passed(&report, "content");
    let o = assert_failed(&report, "content-wrong");
    assert_eq!(o.message, "log request bodies");
    assert!(o.actual.as_deref().unwrap().contains("level: Metadata"), "{o:?}");
    assert_passed(&report, "exists");
    assert_passed(&report, "absent");
    let o = assert_failed(&report, "absent-content");
    assert_eq!(o.actual, Some(format!("{} does not exist", missing.display())));
    // `cat` of a directory fails for a reason other than absence: an evaluation error.
    let o = assert_error(&report, "unreadable", "file");
    assert!(o.message.contains("Is a directory"), "{o:?}");
    assert!(!vm.path("pwned").exists(), "the path was interpreted by a shell");
}

#[tokio::test]
async fn a_hanging_command_times_out_and_the_connection_stays_usable() {
    let vm = FakeVm::start().await;
    let s = scenario(&[r#"
- id: hangs
  type: command
  command: "sleep 600"
  timeout: 0.3
- id: after
  type: command
  command: "true"
"#]);
    let e = vm.engine(CLIENT_KEY);
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    assert_error(&report, "hangs", "timeout");
    assert_passed(&report, "after");
    assert_eq!(report.phase(), ValidationRunPhase::Error);
}

#[tokio::test]
async fn output_is_capped_with_a_marker_and_the_exit_status_still_arrives() {
    let vm = FakeVm::start().await;
    let s = scenario(&[r#"
- id: flood
  type: script
  script: "head -c 300000 /dev/zero | tr '\\0' a; echo; exit 7"
  successCode: 7
  condition: output_contains
  value: "aaaa"
- id: tail
  type: command
  command: "head -c 300000 /dev/zero | tr '\\0' a; echo END"
  condition: output_contains
  value: END
"#]);
    let report = vm
        .engine(CLIENT_KEY)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert_passed(&report, "flood");
    let o = assert_failed(&report, "tail");
    let actual = o.actual.unwrap();
    assert!(
        actual.ends_with("\n[output truncated: 65536 of 300004 bytes kept]"),
        "{}",
        &actual[actual.len() - 80..]
    );
    assert!(
        o.message
            .contains("only the first part of the output was compared"),
        "{}",
        o.message
    );
}

#[tokio::test]
async fn one_connection_per_vm_is_reused_and_its_host_key_recorded() {
    let vm = FakeVm::start().await;
    let rules: String = (0..12)
        .map(|i| format!("- id: r{i}\n  type: command\n  command: \"echo {i}\"\n  condition: output_equals\n  value: {i}\n"))
        .collect();
    let s = scenario(&[&rules]);
    let report = vm
        .engine(CLIENT_KEY)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert!(report.passed(), "{report:#?}");
    assert_eq!(vm.connections.load(Ordering::SeqCst), 1);
    let fingerprint = key(HOST_KEY)
        .public_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();
    assert_eq!(report.host_keys.get("control-plane"), Some(&fingerprint));
}

#[tokio::test]
async fn a_pinned_host_key_is_accepted_and_any_other_host_key_refused_before_logging_in() {
    let vm = FakeVm::start().await;
    let s = scenario(&["- id: a\n  type: command\n  command: \"true\"\n"]);
    let targets = || TargetResolver::new().with(VmId::ControlPlane, vm.endpoint.clone());
    let pinned = |host: &str| {
        SshConfig::from_openssh("root", CLIENT_KEY)
            .unwrap()
            .with_host_key_openssh(&key(host).public_key().to_openssh().unwrap())
            .unwrap()
    };
    let report = Engine::new(targets(), None, pinned(HOST_KEY))
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert_passed(&report, "a");

    // Another key pinned: the VM's key is refused, and nothing is sent (no login).
    let report = Engine::new(targets(), None, pinned(OTHER_KEY))
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    let o = assert_error(&report, "a", "ssh-host-key");
    let offered = key(HOST_KEY)
        .public_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();
    let expected = key(OTHER_KEY)
        .public_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();
    assert!(
        o.message.contains(&format!(
            "the SSH host key {offered} is not the cluster's pinned key {expected}"
        )),
        "{}",
        o.message
    );
    assert!(report.host_keys.is_empty(), "{:?}", report.host_keys);
}

#[test]
fn generated_host_keys_are_ed25519_pairs_in_openssh_format() {
    let pair = cks_validation::generate_host_key().unwrap();
    let private = decode_secret_key(&pair.private_openssh, None).unwrap();
    assert!(
        pair.private_openssh
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
    );
    assert!(pair.public_openssh.starts_with("ssh-ed25519 "));
    assert_eq!(private.public_key().to_openssh().unwrap(), pair.public_openssh);
    assert_ne!(
        cks_validation::generate_host_key().unwrap().public_openssh,
        pair.public_openssh
    );
    assert!(!format!("{pair:?}").contains("PRIVATE"));
}

#[tokio::test]
async fn a_refused_key_is_an_error_on_every_rule_of_that_vm() {
    let vm = FakeVm::start().await;
    let s = scenario(&[
        "- id: a\n  type: command\n  command: \"true\"\n- id: b\n  type: file_exists\n  path: /etc/hosts\n",
    ]);
    let report = vm
        .engine(OTHER_KEY)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    let a = assert_error(&report, "a", "ssh-auth");
    assert_eq!(
        a.message,
        "control-plane refused SSH public-key authentication as `root`"
    );
    assert_error(&report, "b", "ssh-auth");
    // The failed login is not retried per rule.
    assert_eq!(vm.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_vm_that_drops_the_connection_mid_rule_gives_an_error_and_later_rules_reconnect() {
    let vm = FakeVm::start().await;
    let s = scenario(&[&format!(
        "- id: dropped\n  type: command\n  command: {DROP_CONNECTION}\n- id: later\n  type: command\n  command: \"true\"\n"
    )]);
    // One rule at a time, so `later` starts after the drop.
    let e = vm.engine(CLIENT_KEY).with_options(EngineOptions {
        max_concurrent_rules: 1,
        ..EngineOptions::default()
    });
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_error(&report, "dropped", "ssh");
    assert_eq!(
        o.message,
        "SSH session with control-plane: the connection closed before the command finished"
    );
    assert_passed(&report, "later");
    assert_eq!(vm.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn channels_per_vm_bound_the_commands_running_at_once() {
    let vm = FakeVm::start().await;
    let rules: String = (0..6)
        .map(|i| format!("- id: r{i}\n  type: command\n  command: \"sleep 0.2\"\n"))
        .collect();
    let s = scenario(&[&rules]);
    let targets = TargetResolver::new().with(VmId::ControlPlane, vm.endpoint.clone());
    let ssh = SshConfig {
        channels_per_vm: 2,
        ..SshConfig::from_openssh("root", CLIENT_KEY).unwrap()
    };
    let report = Engine::new(targets, None, ssh)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert!(report.passed(), "{report:#?}");
    let max = vm.load.max.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "{max} commands ran at once");
}

/// A stand-in for a tunnel (such as the KubeVirt port-forward): finds the VM by name, not by
/// host, and hands the SSH client one end of an in-memory pipe it relays to the VM.
#[derive(Debug)]
struct Tunnel {
    ports: HashMap<String, u16>,
    opened: AtomicUsize,
}

impl Transport for Tunnel {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, std::io::Result<Box<dyn SshStream>>> {
        Box::pin(async move {
            let port = self.ports.get(&endpoint.vm).ok_or(std::io::ErrorKind::NotFound)?;
            let mut vm = tokio::net::TcpStream::connect(("127.0.0.1", *port)).await?;
            let (client_end, mut relay_end) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut relay_end, &mut vm).await;
            });
            self.opened.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(client_end) as Box<dyn SshStream>)
        })
    }
}

#[tokio::test]
async fn the_ssh_session_runs_over_any_transport_stream() {
    let vm = FakeVm::start().await;
    let tunnel = Arc::new(Tunnel {
        ports: HashMap::from([("lab-cp".to_owned(), vm.endpoint.port)]),
        opened: AtomicUsize::new(0),
    });
    // The host is deliberately unusable: only the tunnel knows how to reach the VM.
    let targets = TargetResolver::new().with(
        VmId::ControlPlane,
        Endpoint::new("lab-cp", "unreachable.invalid", 22),
    );
    let ssh = SshConfig::from_openssh("root", CLIENT_KEY)
        .unwrap()
        .with_transport(tunnel.clone());
    let s = scenario(&[
        "- id: hi\n  type: script\n  script: \"echo hi\"\n  condition: output_equals\n  value: hi\n",
    ]);
    let report = Engine::new(targets, None, ssh)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    assert_passed(&report, "hi");
    assert_eq!(tunnel.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_exec_request_the_vm_refuses_is_an_error() {
    let vm = FakeVm::start().await;
    let s = scenario(&[&format!(
        "- id: refused\n  type: command\n  command: {REFUSE_EXEC}\n"
    )]);
    let report = vm
        .engine(CLIENT_KEY)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    let o = assert_error(&report, "refused", "ssh");
    assert_eq!(
        o.message,
        "SSH session with control-plane: the VM refused the exec request"
    );
}

#[tokio::test]
async fn unknown_targets_and_unreachable_vms_are_errors() {
    let vm = FakeVm::start().await;
    let s = scenario(&["- id: w\n  type: command\n  command: {command: \"true\", target: worker-2}\n"]);
    let report = vm
        .engine(CLIENT_KEY)
        .validate(&s, TaskSelector::All)
        .await
        .unwrap();
    let o = assert_error(&report, "w", "unknown-target");
    assert_eq!(o.message, "no SSH endpoint is known for target `worker-2`");

    // A port nothing listens on: bind, note the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let targets = TargetResolver::new().with(VmId::Worker(2), Endpoint::new("lab-w2", "127.0.0.1", port));
    let e = Engine::new(
        targets,
        None,
        SshConfig::from_openssh("root", CLIENT_KEY).unwrap(),
    );
    let report = e.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_error(&report, "w", "ssh-connect");
    assert!(
        o.message
            .starts_with(&format!("connecting to worker-2 (lab-w2 at 127.0.0.1:{port}): ")),
        "{}",
        o.message
    );
}
