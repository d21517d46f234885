//! Simulated VMs: SSH (exec and PTY shell) into a bubblewrap sandbox whose root is the VM's
//! disk, with the public key from the VM's cloud-init, with russh and with OpenSSH.

mod common;

use std::sync::Arc;

use cks_devcluster::kubevirt::SimOptions;
use cks_devcluster::{DevCluster, Options};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::{ChannelMsg, client};
use serde_json::json;

use common::eventually;

struct Vm {
    cluster: DevCluster,
    client: kube::Client,
    disks: tempfile::TempDir,
    key: PrivateKey,
}

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

/// The host key of [`start_vm`]'s VM.
fn host_key() -> PrivateKey {
    key(9)
}

fn api(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn vms(client: &kube::Client) -> Api<DynamicObject> {
    api(client, "kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}

fn vmis(client: &kube::Client) -> Api<DynamicObject> {
    api(
        client,
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    )
}

/// A cluster with one running VM `lab-cp` whose cloud-init authorizes `key` for user `cks`.
async fn start_vm() -> (Vm, String) {
    let disks = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        kubevirt: Some(SimOptions {
            disk_dir: Some(disks.path().to_path_buf()),
            golden_images: vec!["vm-templates/golden".into()],
            ..SimOptions::default()
        }),
        ..Options::default()
    };
    let cluster = common::start_with(opts).await;
    let client = cluster.client().await.expect("client");
    let key = key(7);
    let public = key.public_key().to_openssh().expect("public key");
    // The host key, as the operator gives it through cloud-init's `ssh_keys`.
    let host_private: String = host_key()
        .to_openssh(LineEnding::LF)
        .unwrap()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    let user_data = format!(
        "#cloud-config\nhostname: control-plane\nusers:\n  - name: cks\n    ssh_authorized_keys:\n      - {public}\nwrite_files:\n  - path: /etc/kubernetes/pki/ca.crt\n    content: test-ca\n    permissions: '0644'\nssh_keys:\n  ed25519_private: |\n{host_private}"
    );
    let secrets = api(&client, "", "v1", "Secret", "secrets");
    let secret: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "lab-cp-cloudinit"}, "stringData": {"userdata": user_data}}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let vm: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "lab-cp"},
        "spec": {"runStrategy": "Always",
            "dataVolumeTemplates": [{"metadata": {"name": "lab-cp-rootdisk"},
                "spec": {"source": {"pvc": {"namespace": "vm-templates", "name": "golden"}},
                    "storage": {"resources": {"requests": {"storage": "10Gi"}}}}}],
            "template": {"spec": {"hostname": "control-plane", "domain": {"devices": {}}, "volumes": [
                {"name": "rootdisk", "dataVolume": {"name": "lab-cp-rootdisk"}},
                {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": "lab-cp-cloudinit"}}}]}}}
    }))
    .unwrap();
    vms(&client)
        .create(&PostParams::default(), &vm)
        .await
        .expect("vm");
    let ip = running_ip(&client).await;
    (
        Vm {
            cluster,
            client,
            disks,
            key,
        },
        ip,
    )
}

async fn running_ip(client: &kube::Client) -> String {
    eventually("vmi running with an IP", || async {
        let v = serde_json::to_value(vmis(client).get_opt("lab-cp").await.ok()??).ok()?;
        let ip = v["status"]["interfaces"][0]["ipAddress"].as_str()?.to_string();
        (v["status"]["phase"] == "Running").then_some(ip)
    })
    .await
}

struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Connect and authenticate; retried while the VM's SSH server comes up.
async fn connect(ip: &str, user: &str, key: &PrivateKey) -> client::Handle<Client> {
    eventually("ssh login", || async {
        let config = Arc::new(client::Config::default());
        let mut h = client::connect(config, (ip, 2222), Client).await.ok()?;
        let auth = h
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None))
            .await
            .ok()?;
        auth.success().then_some(h)
    })
    .await
}

/// Run a command; returns stdout and the exit status.
async fn exec(h: &client::Handle<Client>, command: &str) -> (String, u32) {
    let mut ch = h.channel_open_session().await.expect("channel");
    ch.exec(true, command).await.expect("exec");
    let (mut out, mut code) = (Vec::new(), None);
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            _ => {}
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        code.expect("exit status"),
    )
}

#[tokio::test]
async fn ssh_exec_runs_in_the_vm_sandbox_with_its_disk_as_root() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    let (out, code) = exec(
        &h,
        "echo \"$HOME $KUBECONFIG $(hostname)\"; cat /etc/kubernetes/pki/ca.crt; echo; cat /etc/golden-image; \
         echo 'kind: Pod' > /etc/kubernetes/manifests/extra.yaml; touch ~/notes; exit 3",
    )
    .await;
    assert_eq!(code, 3);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("/home/cks /etc/kubernetes/admin.conf control-plane")
    );
    assert_eq!(
        lines.next(),
        Some("test-ca"),
        "cloud-init write_files landed on the disk"
    );
    assert_eq!(
        lines.next(),
        Some("cks-devcluster golden image"),
        "the disk is a clone of the golden image"
    );
    let disk = vm.disks.path().join("disks/default/lab-cp-rootdisk");
    assert_eq!(
        std::fs::read_to_string(disk.join("etc/kubernetes/manifests/extra.yaml")).unwrap(),
        "kind: Pod\n"
    );
    assert!(disk.join("home/cks/notes").exists());
    // The host's files are out of reach.
    let (out, _) = exec(&h, "ls /work 2>&1; test -e /etc/shadow && echo host-etc").await;
    assert!(out.contains("No such file"), "{out}");
    assert!(!out.contains("host-etc"));
}

#[tokio::test]
async fn ssh_refuses_keys_and_users_not_in_cloud_init() {
    let (vm, ip) = start_vm().await;
    connect(&ip, "cks", &vm.key).await;
    let config = Arc::new(client::Config::default());
    for (user, k) in [("cks", key(9)), ("mallory", vm.key.clone())] {
        let mut h = client::connect(config.clone(), (ip.as_str(), 2222), Client)
            .await
            .expect("connect");
        let auth = h
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(k), None))
            .await
            .expect("auth exchange");
        assert!(!auth.success(), "{user} must be refused");
    }
}

/// An interactive shell on a PTY, as a terminal emulator drives it.
struct Term {
    ch: russh::Channel<client::Msg>,
    /// Everything the terminal showed so far.
    out: String,
    /// Where in `out` the last [`Term::until`] match ended.
    pos: usize,
    /// What the channel said besides data, in order.
    events: Vec<ChannelMsg>,
}

impl Term {
    async fn open(h: &client::Handle<Client>, cols: u32, rows: u32) -> Term {
        let ch = h.channel_open_session().await.expect("channel");
        ch.request_pty(true, "xterm-256color", cols, rows, 0, 0, &[])
            .await
            .expect("pty");
        ch.request_shell(true).await.expect("shell");
        Term {
            ch,
            out: String::new(),
            pos: 0,
            events: Vec::new(),
        }
    }

    async fn send(&self, keys: &str) {
        self.ch.data(keys.as_bytes()).await.expect("send keys");
    }

    /// Read until the terminal has shown `needle` after the previous match; returns what it
    /// showed from there up to and including `needle`.
    async fn until(&mut self, needle: &str) -> String {
        let from = self.pos;
        let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                if let Some(at) = self.out[from..].find(needle) {
                    return Some(from + at + needle.len());
                }
                match self.ch.wait().await {
                    Some(ChannelMsg::Data { data }) => self.out.push_str(&String::from_utf8_lossy(&data)),
                    Some(other) => self.events.push(other),
                    None => return None,
                }
            }
        })
        .await;
        let Ok(Some(end)) = found else {
            panic!(
                "waiting for {needle:?}; the terminal showed {:?}",
                &self.out[from..]
            );
        };
        self.pos = end;
        self.out[from..end].to_string()
    }

    /// Read to the end of the channel; returns the events after the data.
    async fn read_to_end(&mut self) -> Vec<ChannelMsg> {
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Some(msg) = self.ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => self.out.push_str(&String::from_utf8_lossy(&data)),
                    other => self.events.push(other),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the channel did not end; the terminal showed {:?}", self.out));
        std::mem::take(&mut self.events)
    }
}

#[tokio::test]
async fn interactive_shell_gets_a_pty_with_a_prompt_and_answers_commands() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    let mut term = Term::open(&h, 100, 30).await;
    term.until("cks@control-plane:~$ ").await;
    // The typed command is echoed by the terminal; `host=` followed by the name is the answer.
    term.send("echo host=$(hostname) term=$TERM; test -t 0 && echo stdin-is-a-tty; stty size\n")
        .await;
    let seen = term.until("30 100").await;
    assert!(seen.contains("host=control-plane term=xterm-256color"), "{seen}");
    assert!(seen.contains("stdin-is-a-tty"), "{seen}");
    // Job control works: the shell is the terminal's session and controls it.
    term.send("sleep 30 & jobs; kill %1; echo sum=$((6*7))\n").await;
    let seen = term.until("sum=42").await;
    assert!(seen.contains("Running"), "{seen}");
}

#[tokio::test]
async fn window_change_resizes_the_pty() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    let mut term = Term::open(&h, 100, 30).await;
    term.until("$ ").await;
    term.send("stty size\n").await;
    term.until("30 100").await;
    term.ch.window_change(132, 43, 0, 0).await.expect("window-change");
    term.send("stty size; echo cols-$COLUMNS-end\n").await;
    // The typed line is echoed first; the answers follow it.
    term.until("43 132").await;
    // bash re-reads the size on SIGWINCH, so COLUMNS follows too.
    let seen = term.until("-end").await;
    assert!(seen.contains("cols-132-end"), "{seen}");
}

#[tokio::test]
async fn exiting_the_shell_sends_exit_status_eof_and_close() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    let mut term = Term::open(&h, 80, 24).await;
    term.until("$ ").await;
    term.send("echo bye; exit 7\n").await;
    let events = term.read_to_end().await;
    assert!(term.out.contains("bye"), "{}", term.out);
    let tail: Vec<String> = events
        .iter()
        .filter(|m| !matches!(m, ChannelMsg::WindowAdjusted { .. } | ChannelMsg::Success))
        .map(|m| format!("{m:?}"))
        .collect();
    assert_eq!(
        tail,
        ["ExitStatus { exit_status: 7 }", "Eof", "Close"],
        "{events:?}"
    );
}

/// Processes on this host whose command line is exactly `cmdline` (NUL-separated).
fn processes_running(cmdline: &str) -> usize {
    let want = cmdline.replace(' ', "\0") + "\0";
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c == want.as_bytes())
        .count()
}

#[tokio::test]
async fn closing_the_channel_ends_the_shell_and_what_it_runs() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    let mut term = Term::open(&h, 80, 24).await;
    term.until("$ ").await;
    // A number no other test uses, so the process is ours.
    term.send("echo started; sleep 86399\n").await;
    term.until("started").await;
    eventually("the shell's command running", || async {
        (processes_running("sleep 86399") == 1).then_some(())
    })
    .await;
    term.ch.close().await.expect("close");
    eventually("the sandbox killed", || async {
        (processes_running("sleep 86399") == 0).then_some(())
    })
    .await;
    // A client that goes away without closing its channel hangs the terminal up just as well.
    let h = connect(&ip, "cks", &vm.key).await;
    let mut term = Term::open(&h, 80, 24).await;
    term.until("$ ").await;
    term.send("echo started; sleep 86398\n").await;
    term.until("started").await;
    eventually("the shell's command running", || async {
        (processes_running("sleep 86398") == 1).then_some(())
    })
    .await;
    h.disconnect(russh::Disconnect::ByApplication, "", "")
        .await
        .expect("disconnect");
    eventually("the sandbox of a gone client killed", || async {
        (processes_running("sleep 86398") == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn terminal_output_waits_for_a_client_that_does_not_read() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    let mut term = Term::open(&h, 80, 24).await;
    term.until("$ ").await;
    // 16 KiB at a time, counted on the disk, up to 256 MiB.
    term.send(
        "i=0; while [ $i -lt 16384 ]; do head -c 16384 /dev/zero; i=$((i+1)); echo $i > /tmp/written; done\n",
    )
    .await;
    let written = vm.disks.path().join("disks/default/lab-cp-rootdisk/tmp/written");
    let count = || {
        std::fs::read_to_string(&written)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    // Nobody reads the channel: the writer must come to a stop, not fill memory somewhere.
    let stalled = eventually("the writer blocked", || async {
        let before = count()?;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        (count()? == before).then_some(before)
    })
    .await;
    assert!(
        stalled * 16 < 64 * 1024,
        "{} MiB went out to a client that reads nothing",
        stalled * 16 / 1024
    );
    // Reading again lets it go on.
    let mut read = 0usize;
    while count().is_some_and(|c| c == stalled) {
        match tokio::time::timeout(std::time::Duration::from_secs(20), term.ch.wait()).await {
            Ok(Some(ChannelMsg::Data { data })) => read += data.len(),
            Ok(Some(_)) => {}
            other => panic!("the output stopped after {read} bytes: {other:?}"),
        }
    }
}

#[tokio::test]
async fn stopping_the_vm_stops_ssh_and_starting_boots_from_the_same_disk() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    exec(&h, "echo kept > /root/state").await;
    // A command still running when the VM stops loses its connection.
    let mut running = h.channel_open_session().await.expect("channel");
    running.exec(true, "echo started; sleep 600").await.expect("exec");
    loop {
        match running.wait().await {
            Some(ChannelMsg::Data { data }) => break assert_eq!(&data[..], b"started\n"),
            Some(ChannelMsg::Success | ChannelMsg::WindowAdjusted { .. }) => {}
            other => panic!("expected the command's output, got {other:?}"),
        }
    }
    let put = |action: &str| {
        http::Request::put(format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/lab-cp/{action}"
        ))
        .body(Vec::new())
        .unwrap()
    };
    vm.client.request_text(put("stop")).await.expect("stop");
    eventually("vmi gone", || async {
        vmis(&vm.client)
            .get_opt("lab-cp")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    eventually("ssh closed", || async {
        tokio::net::TcpStream::connect((ip.as_str(), 2222))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let cut = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(msg) = running.wait().await {
            assert!(
                !matches!(msg, ChannelMsg::ExitStatus { .. }),
                "the command must not finish on a stopped VM"
            );
        }
    })
    .await;
    assert!(cut.is_ok(), "the open SSH connection outlived the stopped VM");
    vm.client.request_text(put("start")).await.expect("start");
    let ip = running_ip(&vm.client).await;
    let h = connect(&ip, "root", &vm.key).await;
    let (out, _) = exec(&h, "cat /root/state").await;
    assert_eq!(out, "kept\n");
}

#[tokio::test]
async fn openssh_client_logs_in_checking_the_host_key_from_cloud_init_and_runs_a_command() {
    let ssh = std::env::var("SSH").unwrap_or_else(|_| "ssh".into());
    let (vm, ip) = start_vm().await;
    connect(&ip, "cks", &vm.key).await;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("id_ed25519");
    std::fs::write(&key_path, vm.key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[{ip}]:2222 {}\n", host_key().public_key().to_openssh().unwrap()),
    )
    .unwrap();
    let out = tokio::process::Command::new(&ssh)
        .args(["-i"])
        .arg(&key_path)
        .args([
            "-p",
            "2222",
            "-o",
            "BatchMode=yes",
            // Only the host key from the VM's cloud-init is accepted.
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", known_hosts.display()),
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("cks@{ip}"))
        .arg("echo hello from $(hostname) in $PWD")
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {ssh} (Debian package openssh-client): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "hello from control-plane in /home/cks\n");
}

/// Open the VMI's portforward WebSocket by hand (kube-rs insists on the channel.k8s.io
/// subprotocols) and return a byte stream tunnelled through it.
async fn portforward(vm: &Vm, vmi: &str, port: u16) -> Result<tokio::io::DuplexStream, String> {
    use base64::Engine;
    use cks_devcluster::kubevirt::portforward::{SUBPROTOCOL, accept_key, read_frame, write_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ca_b64 = vm.cluster.kubeconfig().clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.certificate_authority_data.clone())
        .expect("CA data");
    let ca_pem = base64::engine::general_purpose::STANDARD.decode(ca_b64).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::pem::PemObject::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(vm.cluster.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "GET /apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{vmi}/portforward/{port} HTTP/1.1\r\n\
         Host: localhost\r\nAuthorization: Bearer {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
        vm.cluster.token()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tls.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    if !head.starts_with("http/1.1 101") {
        return Err(head);
    }
    assert!(
        head.contains(&format!(
            "sec-websocket-accept: {}",
            accept_key(key).to_lowercase()
        )),
        "{head}"
    );
    assert!(
        head.contains("sec-websocket-protocol: plain.kubevirt.io"),
        "{head}"
    );
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut ws_r, mut ws_w) = tokio::io::split(tls);
        let (mut d_r, mut d_w) = tokio::io::split(theirs);
        let up = async {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = d_r.read(&mut buf).await {
                if write_frame(&mut ws_w, 0x2, &buf[..n], Some([1, 2, 3, 4]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        let down = async {
            while let Ok((opcode, payload)) = read_frame(&mut ws_r).await {
                if opcode == 0x8 || d_w.write_all(&payload).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    });
    Ok(ours)
}

#[tokio::test]
async fn ssh_through_the_portforward_websocket_reaches_the_vm() {
    let (vm, ip) = start_vm().await;
    connect(&ip, "cks", &vm.key).await;
    let stream = portforward(&vm, "lab-cp", 2222).await.expect("upgrade");
    let config = Arc::new(client::Config::default());
    let mut h = client::connect_stream(config, stream, Client)
        .await
        .expect("ssh over the tunnel");
    let auth = h
        .authenticate_publickey("cks", PrivateKeyWithHashAlg::new(Arc::new(vm.key.clone()), None))
        .await
        .expect("auth");
    assert!(auth.success());
    let (out, code) = exec(&h, "hostname; echo tunnelled").await;
    assert_eq!((out.as_str(), code), ("control-plane\ntunnelled\n", 0));
    let err = portforward(&vm, "missing", 2222).await.expect_err("no such VMI");
    assert!(err.starts_with("http/1.1 404"), "{err}");
}

#[tokio::test]
async fn a_restarted_server_with_a_data_dir_boots_its_running_vms_again() {
    let data = tempfile::tempdir().unwrap();
    let opts = || Options {
        data_dir: Some(data.path().to_path_buf()),
        kubevirt: Some(SimOptions {
            golden_images: vec!["vm-templates/golden".into()],
            ..SimOptions::default()
        }),
        ..Options::default()
    };
    let key = key(7);
    let public = key.public_key().to_openssh().unwrap();
    let cluster = common::start_with(opts()).await;
    let client = cluster.client().await.unwrap();
    let secret: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "lab-cp-cloudinit"},
        "stringData": {"userdata": format!("#cloud-config\nusers:\n  - name: cks\n    ssh_authorized_keys: ['{public}']\n")}}))
    .unwrap();
    api(&client, "", "v1", "Secret", "secrets")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let vm: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "lab-cp"},
        "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}, "volumes": [
            {"name": "rootdisk", "persistentVolumeClaim": {"claimName": "lab-cp-disk"}},
            {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": "lab-cp-cloudinit"}}}]}}}
    }))
    .unwrap();
    vms(&client).create(&PostParams::default(), &vm).await.unwrap();
    let ip = running_ip(&client).await;
    exec(&connect(&ip, "cks", &key).await, "echo persisted > /root/mark").await;
    cluster.shutdown().await;
    eventually("ssh closed with the server", || async {
        tokio::net::TcpStream::connect((ip.as_str(), 2222))
            .await
            .is_err()
            .then_some(())
    })
    .await;

    let cluster = common::start_with(opts()).await;
    let client = cluster.client().await.unwrap();
    assert_eq!(
        running_ip(&client).await,
        ip,
        "the VMI kept running with its address"
    );
    let (out, _) = exec(&connect(&ip, "cks", &key).await, "cat /root/mark").await;
    assert_eq!(out, "persisted\n");
}

#[tokio::test]
async fn the_vm_user_is_not_host_root_and_sudo_is_root_only_inside_the_vm() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    // The VM's user, in a user namespace, without capabilities.
    let (out, code) = exec(
        &h,
        "id -u; id -un; grep CapEff /proc/self/status; cat /proc/self/uid_map",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_eq!(lines[1], "cks", "{out}");
    assert_eq!(lines[2], "CapEff:\t0000000000000000", "{out}");
    let map: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!((map[0], map[2]), ("1000", "1"), "only the user is mapped: {out}");
    // sudo: root inside a nested user namespace that maps only the VM user.
    let (out, code) = exec(
        &h,
        "sudo bash -c 'id -u; cat /proc/self/uid_map; echo from-root > /etc/kubernetes/by-sudo; echo $HOME'",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!((map[0], map[1], map[2]), ("0", "1000", "1"), "{out}");
    assert_eq!(lines[2], "/root");
    let disk = vm.disks.path().join("disks/default/lab-cp-rootdisk");
    assert_eq!(
        std::fs::read_to_string(disk.join("etc/kubernetes/by-sudo")).unwrap(),
        "from-root\n"
    );
    // Logging in as root gives uid 0 in the VM's namespace, still without capabilities.
    let h = connect(&ip, "root", &vm.key).await;
    let (out, _) = exec(&h, "id -u; grep CapEff /proc/self/status; cat /proc/self/uid_map").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "CapEff:\t0000000000000000", "{out}");
    assert_eq!(lines[2].split_whitespace().nth(2), Some("1"), "{out}");
}

#[tokio::test]
async fn the_vm_has_the_golden_images_tools() {
    let (vm, ip) = start_vm().await;
    let h = connect(&ip, "cks", &vm.key).await;
    let (out, code) = exec(
        &h,
        "set -e; systemctl is-active kubelet containerd; \
         sudo bash -c 'echo \"[Service]\" > /etc/systemd/system/demo.service; systemctl daemon-reload; systemctl enable --now demo'; \
         systemctl is-active demo.service; systemctl is-enabled demo; \
         systemctl stop demo 2>&1 || echo refused-without-sudo; sudo systemctl stop demo; \
         systemctl is-active demo || true; journalctl -u kubelet --no-pager; \
         command -v falco runsc apparmor_parser python3 openssl ss >/dev/null && echo tools; \
         python3 -c 'import yaml; print(\"yaml\")'; test -d /etc/apparmor.d && test -f /etc/containerd/config.toml && echo dirs",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "active",
            "active",
            "active",
            "enabled",
            "Failed to stop: Access denied",
            "refused-without-sudo",
            "inactive",
            "-- No entries --",
            "tools",
            "yaml",
            "dirs"
        ]
    );
}
