//! Simulated machines behind running VMIs. A machine "boots" from its root disk directory and
//! its cloud-init user-data (first boot writes the `write_files` into the disk, as cloud-init
//! would) and serves SSH on the VMI's loopback IP, accepting the users' `ssh_authorized_keys`
//! and presenting the host key of cloud-init's `ssh_keys` (a random one without).
//! Commands and shells run in a bubblewrap sandbox whose `/` is the disk directory, with the
//! host's `/usr` mounted read-only (see `docs/devcluster.md`).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::registry::ResourceType;
use crate::state::State;

/// Marker cloud-init leaves after the first boot; later boots keep the disk as it is.
const BOOT_FINISHED: &str = "var/lib/cloud/instance/boot-finished";
/// Where kubeadm leaves the admin kubeconfig; `KUBECONFIG` in sandboxes points here.
pub(crate) const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";

/// What a machine reads from its VMI and cloud-init.
#[derive(Debug, Clone)]
struct Boot {
    hostname: String,
    disk: PathBuf,
    /// The stand-ins bound at `guest::TOOLS_MOUNT`.
    tools: PathBuf,
    users: Vec<String>,
    /// uid of each user in `/etc/passwd` (cloud-init's 1000, 1001...).
    uids: std::collections::BTreeMap<String, u32>,
    keys: Vec<PublicKey>,
    /// The host key cloud-init's `ssh_keys` gives the VM; a random one without.
    host_key: Option<PrivateKey>,
    write_files: Vec<(String, String, u32)>,
}

/// Where kubeadm's configuration (from cloud-init) is on the disk.
const KUBEADM_CONFIG: &str = "etc/kubernetes/kubeadm/config.yaml";
/// Where the nested API server keeps its state: on the disk, so snapshots capture it.
const API_STATE: &str = "var/lib/cks-devcluster";
/// Port of the practice cluster's API server.
const API_PORT: u16 = 6443;

/// The kubeadm role a machine's cloud-init gives it.
#[derive(Debug, Clone)]
enum Kubeadm {
    /// `InitConfiguration` plus the CA written by cloud-init: serves the practice cluster API.
    ControlPlane {
        ca: crate::ExternalCa,
        ca_hash: String,
        tokens: Vec<String>,
    },
    /// `JoinConfiguration`: joins when its token and CA hash match the control plane's.
    Worker { token: String, ca_hashes: Vec<String> },
}

/// The practice cluster's API server of a control-plane machine.
struct Nested {
    cluster: Arc<std::sync::Mutex<Option<crate::DevCluster>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Arc<AtomicBool>,
}

struct Machine {
    ns: String,
    ip: String,
    disk: PathBuf,
    hostname: String,
    ssh: JoinHandle<()>,
    /// The guest's kubelet (mirror pods, read-only port).
    kubelet: JoinHandle<()>,
    kubeadm: Option<Kubeadm>,
    nested: Option<Nested>,
    joined: bool,
}

/// The machines of one simulator, by `namespace/name` of their VMI.
pub(crate) struct Machines {
    ssh_port: u16,
    tools_written: bool,
    running: HashMap<String, Machine>,
    /// Machines shutting down (with their disks), until their nested API server has written
    /// its state.
    stopping: HashMap<String, (PathBuf, Arc<AtomicBool>)>,
}

/// Read kubeadm's role from the disk (cloud-init put the configuration and CA there).
fn kubeadm(disk: &Path) -> Option<Kubeadm> {
    let text = super::disk::read_to_string(disk, KUBEADM_CONFIG).ok()?;
    let docs: Vec<Value> = text
        .split("\n---")
        .filter_map(|d| serde_saphyr::from_str::<Value>(d).ok())
        .collect();
    if let Some(init) = docs.iter().find(|d| d["kind"] == "InitConfiguration") {
        let cert_pem = super::disk::read_to_string(disk, "etc/kubernetes/pki/ca.crt").ok()?;
        let key_pem = super::disk::read_to_string(disk, "etc/kubernetes/pki/ca.key").ok()?;
        let key = rcgen::KeyPair::from_pem(&key_pem).ok()?;
        use rcgen::PublicKeyData;
        let digest = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let tokens = init["bootstrapTokens"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| t["token"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        // The serving certificate carries the names kubeadm would put in it.
        let cluster = docs.iter().find(|d| d["kind"] == "ClusterConfiguration");
        let mut sans: Vec<String> = cluster
            .and_then(|c| c["apiServer"]["certSANs"].as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if let Some(endpoint) = cluster.and_then(|c| c["controlPlaneEndpoint"].as_str()) {
            let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
            sans.push(host.trim_matches(['[', ']']).to_string());
        }
        sans.retain(|s| !s.is_empty());
        return Some(Kubeadm::ControlPlane {
            ca: crate::ExternalCa {
                cert_pem,
                key_pem,
                sans,
            },
            ca_hash: format!("sha256:{hex}"),
            tokens,
        });
    }
    let join = docs.iter().find(|d| d["kind"] == "JoinConfiguration")?;
    let bt = &join["discovery"]["bootstrapToken"];
    Some(Kubeadm::Worker {
        token: bt["token"].as_str()?.to_string(),
        ca_hashes: bt["caCertHashes"]
            .as_array()
            .map(|hs| hs.iter().filter_map(|h| h.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
    })
}

/// Register a Ready Node, as the kubelet does when it joins.
async fn register_node(client: kube::Client, name: String, ip: String, control_plane: bool) {
    let mut labels = serde_json::json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = serde_json::json!("");
    }
    let now = crate::state::now();
    let node: k8s_openapi::api::core::v1::Node = match serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0", "osImage": "Ubuntu 22.04 LTS",
                "architecture": "amd64", "operatingSystem": "linux", "containerRuntimeVersion": "containerd://1.7.0",
                "kernelVersion": "5.15.0", "machineID": "", "systemUUID": "", "bootID": ""}}
    })) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "building a Node");
            return;
        }
    };
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    match nodes.create(&kube::api::PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            tracing::warn!(node = %node.metadata.name.unwrap_or_default(), error = %e, "registering a Node")
        }
    }
}

/// Start the practice cluster's API server of a control-plane machine on `ip:6443`.
fn start_nested(disk: &Path, ip: &str, hostname: &str, ca: crate::ExternalCa) -> Option<Nested> {
    let addr = std::net::SocketAddr::new(ip.parse().ok()?, API_PORT);
    let slot = Arc::new(std::sync::Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = crate::Options {
        addr,
        data_dir: Some(disk.join(API_STATE)),
        ca: Some(ca),
        kubelet: true,
        ..crate::Options::default()
    };
    let (disk, hostname, ip) = (disk.to_path_buf(), hostname.to_string(), ip.to_string());
    let (task_slot, task_done) = (slot.clone(), done.clone());
    tokio::spawn(async move {
        match crate::DevCluster::start(opts).await {
            Ok(cluster) => {
                // kubeadm leaves admin.conf for kubectl on the control plane.
                if let Err(e) = super::disk::write(&disk, ADMIN_CONF, cluster.kubeconfig_yaml()) {
                    tracing::warn!(error = %e, "writing admin.conf");
                }
                if let Ok(client) = cluster.client().await {
                    register_node(client, hostname, ip, true).await;
                }
                *task_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(cluster);
                let _ = stopped.await;
                let cluster = task_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(c) = cluster {
                    c.shutdown().await;
                }
            }
            Err(e) => tracing::warn!(%addr, error = %e, "practice cluster API did not start"),
        }
        task_done.store(true, Ordering::SeqCst);
    });
    Some(Nested {
        cluster: slot,
        stop: Some(stop),
        done,
    })
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The cloud-init user-data of a VMI: inline, or from the referenced Secret.
fn user_data(st: &State, ns: &str, vmi: &Value) -> Option<String> {
    let vols = vmi["spec"]["volumes"].as_array()?;
    let ci = vols.iter().find_map(|v| {
        let c = &v["cloudInitNoCloud"];
        c.is_object().then_some(c).or_else(|| {
            let c = &v["cloudInitConfigDrive"];
            c.is_object().then_some(c)
        })
    })?;
    if let Some(inline) = ci["userData"].as_str() {
        return Some(inline.to_string());
    }
    let secret = ci["secretRef"]["name"].as_str()?;
    let rt = st.registry.get("", "v1", "secrets")?;
    let obj = st.get(&rt, Some(ns), secret).ok()?;
    let data = obj["data"]["userdata"]
        .as_str()
        .or(obj["data"]["userData"].as_str())?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(data).ok()?;
    String::from_utf8(bytes).ok()
}

fn parse_boot(st: &State, root: &Path, ns: &str, vmi: &Value) -> Boot {
    let claim = vmi["spec"]["volumes"].as_array().and_then(|vols| {
        vols.iter().find_map(|v| {
            v["dataVolume"]["name"]
                .as_str()
                .or(v["persistentVolumeClaim"]["claimName"].as_str())
        })
    });
    let name = s(&vmi["metadata"]["name"]);
    let disk = super::controller::Sim::disk(root, ns, claim.unwrap_or(name));
    let cfg: Value = user_data(st, ns, vmi)
        .and_then(|u| serde_saphyr::from_str(&u).ok())
        .unwrap_or(Value::Null);
    let mut users = Vec::new();
    let mut keys = Vec::new();
    for u in cfg["users"].as_array().cloned().unwrap_or_default() {
        if let Some(n) = u["name"].as_str() {
            users.push(n.to_string());
        }
        for k in u["ssh_authorized_keys"].as_array().cloned().unwrap_or_default() {
            if let Ok(key) = PublicKey::from_openssh(s(&k)) {
                keys.push(key);
            }
        }
    }
    for k in cfg["ssh_authorized_keys"].as_array().cloned().unwrap_or_default() {
        if let Ok(key) = PublicKey::from_openssh(s(&k)) {
            keys.push(key);
        }
    }
    // As cloud-init's `ssh_keys` writes /etc/ssh/ssh_host_ed25519_key for sshd.
    let host_key = cfg["ssh_keys"]["ed25519_private"]
        .as_str()
        .and_then(|pem| PrivateKey::from_openssh(pem).ok());
    let write_files = cfg["write_files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|f| {
            let mode = u32::from_str_radix(
                f["permissions"]
                    .as_str()
                    .unwrap_or("0644")
                    .trim_start_matches("0o"),
                8,
            )
            .unwrap_or(0o644);
            Some((
                f["path"].as_str()?.to_string(),
                s(&f["content"]).to_string(),
                mode,
            ))
        })
        .collect();
    let hostname = cfg["hostname"]
        .as_str()
        .or(vmi["spec"]["hostname"].as_str())
        .unwrap_or(name)
        .to_string();
    Boot {
        hostname,
        disk,
        tools: root.join("tools"),
        users,
        uids: Default::default(),
        keys,
        host_key,
        write_files,
    }
}

/// First boot: what cloud-init does before `runcmd` (files, users' homes).
fn first_boot(boot: &Boot) -> std::io::Result<()> {
    std::fs::create_dir_all(&boot.disk)?;
    if boot.disk.join(BOOT_FINISHED).exists() {
        return Ok(());
    }
    // The guest can delete the marker and plant symlinks: `super::disk` does not follow them.
    let disk = boot.disk.as_path();
    for (path, content, mode) in &boot.write_files {
        super::disk::write(disk, path, content)?;
        use std::os::unix::fs::PermissionsExt;
        let target = super::disk::below(disk, path)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
    }
    for u in &boot.users {
        super::disk::create_dir_all(disk, Path::new("home").join(u))?;
    }
    super::disk::create_dir_all(disk, "root")?;
    super::disk::write(disk, "etc/hostname", format!("{}\n", boot.hostname))?;
    super::disk::write(disk, BOOT_FINISHED, "cks-devcluster\n").map(drop)
}

fn host_key() -> PrivateKey {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

impl Machines {
    pub(crate) fn new(ssh_port: u16) -> Self {
        Self {
            ssh_port,
            tools_written: false,
            running: HashMap::new(),
            stopping: HashMap::new(),
        }
    }

    fn shut_down(&mut self, key: String, mut m: Machine) {
        m.ssh.abort();
        m.kubelet.abort();
        if let Some(mut n) = m.nested.take() {
            if let Some(stop) = n.stop.take() {
                let _ = stop.send(());
            }
            self.stopping.insert(key, (m.disk.clone(), n.done));
        }
    }

    /// Stop the machine of VMI `ns/name`: its SSH server and API server close.
    pub(crate) fn stop(&mut self, ns: &str, name: &str) {
        let key = format!("{ns}/{name}");
        if let Some(m) = self.running.remove(&key) {
            self.shut_down(key, m);
        }
    }

    /// Whether the machine of VMI `ns/name` has fully stopped (its API state is on its disk).
    pub(crate) fn is_stopped(&mut self, ns: &str, name: &str) -> bool {
        let key = format!("{ns}/{name}");
        if self.running.contains_key(&key) {
            return false;
        }
        let done = self
            .stopping
            .get(&key)
            .is_none_or(|(_, d)| d.load(Ordering::SeqCst));
        if done {
            self.stopping.remove(&key);
        }
        done
    }

    /// Disks of machines that run or are still shutting down: not to be removed yet.
    pub(crate) fn disks(&self) -> std::collections::HashSet<PathBuf> {
        let running = self.running.values().map(|m| m.disk.clone());
        let stopping = self
            .stopping
            .values()
            .filter(|(_, done)| !done.load(Ordering::SeqCst))
            .map(|(disk, _)| disk.clone());
        running.chain(stopping).collect()
    }

    pub(crate) fn stop_all(&mut self) {
        let all: Vec<_> = self.running.drain().collect();
        for (key, m) in all {
            self.shut_down(key, m);
        }
    }

    /// Workers join the control plane of their namespace when their kubeadm token and CA hash
    /// match it; a worker with a wrong token never joins.
    /// Returns whether a worker waits for a control plane whose API server is still starting.
    fn join_workers(&mut self) -> bool {
        let planes: Vec<(String, Vec<String>, String, kube::config::Kubeconfig)> = self
            .running
            .values()
            .filter_map(|m| match (&m.kubeadm, &m.nested) {
                (Some(Kubeadm::ControlPlane { ca_hash, tokens, .. }), Some(n)) => {
                    let guard = n.cluster.lock().unwrap_or_else(|e| e.into_inner());
                    let kc = guard.as_ref()?.kubeconfig().clone();
                    Some((m.ns.clone(), tokens.clone(), ca_hash.clone(), kc))
                }
                _ => None,
            })
            .collect();
        let starting: Vec<String> = self
            .running
            .values()
            .filter(|m| {
                m.nested
                    .as_ref()
                    .is_some_and(|n| n.cluster.lock().unwrap_or_else(|e| e.into_inner()).is_none())
            })
            .map(|m| m.ns.clone())
            .collect();
        let mut waiting = false;
        for m in self.running.values_mut() {
            let Some(Kubeadm::Worker { token, ca_hashes }) = &m.kubeadm else {
                continue;
            };
            waiting |= !m.joined && starting.contains(&m.ns);
            if m.joined {
                continue;
            }
            let Some((_, _, _, kc)) = planes.iter().find(|(ns, tokens, hash, _)| {
                *ns == m.ns && tokens.contains(token) && ca_hashes.contains(hash)
            }) else {
                continue;
            };
            m.joined = true;
            let (kc, name, ip) = (kc.clone(), m.hostname.clone(), m.ip.clone());
            tokio::spawn(async move {
                let Ok(config) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await else {
                    return;
                };
                if let Ok(client) = kube::Client::try_from(config) {
                    register_node(client, name, ip, false).await;
                }
            });
        }
        waiting
    }

    /// Start machines for running VMIs and stop those whose VMI no longer runs; returns whether
    /// it should run again soon (a worker waits for its control plane's API server).
    pub(crate) fn sync(&mut self, st: &State, vmi_rt: &Arc<ResourceType>, root: &Path) -> bool {
        let items = st
            .list(vmi_rt, None, &crate::state::ListOpts::default())
            .map(|l| l.items)
            .unwrap_or_default();
        if !self.tools_written {
            match super::guest::write_tools(&root.join("tools")) {
                Ok(()) => self.tools_written = true,
                Err(e) => tracing::warn!(error = %e, "writing the simulated VMs' tools"),
            }
        }
        let mut want = HashMap::new();
        for vmi in &items {
            let ip = s(&vmi["status"]["interfaces"][0]["ipAddress"]);
            if s(&vmi["status"]["phase"]) == "Running"
                && vmi["metadata"]["deletionTimestamp"].is_null()
                && !ip.is_empty()
            {
                let key = format!(
                    "{}/{}",
                    s(&vmi["metadata"]["namespace"]),
                    s(&vmi["metadata"]["name"])
                );
                want.insert(key, (vmi.clone(), ip.to_string()));
            }
        }
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(key, m)| want.get(*key).is_none_or(|(_, ip)| *ip != m.ip))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            if let Some(m) = self.running.remove(&key) {
                self.shut_down(key, m);
            }
        }
        for (key, (vmi, ip)) in want {
            if self.running.contains_key(&key) {
                continue;
            }
            let ns = s(&vmi["metadata"]["namespace"]);
            let mut boot = parse_boot(st, root, ns, &vmi);
            if let Err(e) = first_boot(&boot) {
                tracing::warn!(vmi = %key, error = %e, "simulated first boot");
            }
            boot.uids = super::guest::users(&boot.disk, &boot.users);
            let addr = format!("{ip}:{}", self.ssh_port);
            let listener = match std::net::TcpListener::bind(&addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(vmi = %key, %addr, error = %e, "simulated VM cannot serve SSH");
                    continue;
                }
            };
            tracing::info!(vmi = %key, %addr, "simulated VM booted");
            let kubeadm = kubeadm(&boot.disk);
            if let Some(role) = &kubeadm {
                let control_plane = matches!(role, Kubeadm::ControlPlane { .. });
                if let Err(e) = super::guest::kubeadm(&boot.disk, control_plane, &boot.hostname, &ip) {
                    tracing::warn!(vmi = %key, error = %e, "simulated kubeadm files");
                }
            }
            let nested = match &kubeadm {
                Some(Kubeadm::ControlPlane { ca, .. }) => {
                    start_nested(&boot.disk, &ip, &boot.hostname, ca.clone())
                }
                _ => None,
            };
            let hostname = boot.hostname.clone();
            let disk = boot.disk.clone();
            let kubelet = tokio::spawn(super::guest::kubelet(
                disk.clone(),
                ip.clone(),
                hostname.clone(),
                nested.as_ref().map(|n| n.cluster.clone()),
            ));
            let ssh = tokio::spawn(serve_ssh(listener, Arc::new(boot)));
            self.running.insert(
                key,
                Machine {
                    ns: ns.to_string(),
                    ip,
                    disk,
                    hostname,
                    ssh,
                    kubelet,
                    kubeadm,
                    nested,
                    joined: false,
                },
            );
        }
        self.join_workers()
    }
}

async fn serve_ssh(listener: tokio::net::TcpListener, boot: Arc<Boot>) {
    let config = Arc::new(server::Config {
        keys: vec![boot.host_key.clone().unwrap_or_else(host_key)],
        auth_rejection_time: std::time::Duration::from_millis(100),
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        ..Default::default()
    });
    let mut conns = tokio::task::JoinSet::new();
    while let Ok((socket, _)) = listener.accept().await {
        // OpenSSH sets TCP_NODELAY on interactive sessions; without it every command's reply
        // waits on the client's delayed ACK (~40 ms).
        let _ = socket.set_nodelay(true);
        let handler = VmSession {
            boot: boot.clone(),
            user: String::new(),
            channels: HashMap::new(),
            ptys: HashMap::new(),
            resize: HashMap::new(),
        };
        let config = config.clone();
        // Connections live in the set, so stopping the machine drops them too. russh runs each
        // session on a task of its own, which aborting this one would not end: the session
        // talks through a pipe this task relays to the socket, so a stopped machine cuts its
        // open connections the way a VM going down does.
        conns.spawn(async move {
            let (session_end, mut relay_end) = tokio::io::duplex(64 * 1024);
            let mut socket = socket;
            // The relay runs from the start: the handshake happens inside `run_stream`.
            let relay = tokio::io::copy_bidirectional(&mut socket, &mut relay_end);
            let session = async move {
                if let Ok(session) = server::run_stream(config, session_end, handler).await {
                    let _ = session.await;
                }
            };
            let _ = tokio::join!(relay, session);
        });
    }
}

struct VmSession {
    boot: Arc<Boot>,
    user: String,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// The `pty-req` of channels whose shell or command has not started yet.
    ptys: HashMap<ChannelId, PtyReq>,
    /// A duplicate of the master side of each running PTY, so a `window-change` resizes it at
    /// once, even while the relay task waits on a blocked write.
    resize: HashMap<ChannelId, OwnedFd>,
}

/// What a `pty-req` asks for: the terminal type and the window size.
#[derive(Debug, Clone)]
struct PtyReq {
    term: String,
    size: rustix::termios::Winsize,
}

/// A window size from SSH's u32 fields (a terminal's fit in u16).
fn winsize(cols: u32, rows: u32, pix_width: u32, pix_height: u32) -> rustix::termios::Winsize {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    rustix::termios::Winsize {
        ws_row: clamp(rows),
        ws_col: clamp(cols),
        ws_xpixel: clamp(pix_width),
        ws_ypixel: clamp(pix_height),
    }
}

impl VmSession {
    fn start(
        &mut self,
        id: ChannelId,
        command: Option<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(channel) = self.channels.remove(&id) else {
            return session.channel_failure(id);
        };
        session.channel_success(id)?;
        let pty = self.ptys.remove(&id);
        let cmd = sandbox(
            &self.boot,
            &self.user,
            command.as_deref(),
            pty.as_ref().map(|p| p.term.as_str()),
        );
        match pty {
            None => {
                tokio::spawn(run(channel, cmd));
            }
            Some(req) => match open_pty(&req.size) {
                Ok((pty, pts)) => {
                    if let Ok(fd) = pty.as_fd().try_clone_to_owned() {
                        self.resize.insert(id, fd);
                    }
                    tokio::spawn(run_pty(channel, cmd, pty, pts));
                }
                Err(e) => {
                    tokio::spawn(refuse(channel, format!("cannot allocate a PTY: {e}")));
                }
            },
        }
        Ok(())
    }
}

impl server::Handler for VmSession {
    type Error = russh::Error;

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        if self.accepts(user, key.public_key) {
            self.user = user.to_string();
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
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

    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = winsize(cols, rows, pix_width, pix_height);
        self.ptys.insert(
            id,
            PtyReq {
                term: term.to_string(),
                size,
            },
        );
        session.channel_success(id)
    }

    /// As sshd: the kernel then sends SIGWINCH to the terminal's foreground process group.
    async fn window_change_request(
        &mut self,
        id: ChannelId,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = winsize(cols, rows, pix_width, pix_height);
        if let Some(fd) = self.resize.get(&id) {
            if let Err(e) = rustix::termios::tcsetwinsize(fd, size) {
                tracing::debug!(error = %e, "resizing a PTY");
            }
        } else if let Some(req) = self.ptys.get_mut(&id) {
            // A resize before the shell started: the PTY is opened with the latest size.
            req.size = size;
        }
        Ok(())
    }

    async fn channel_close(&mut self, id: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&id);
        self.ptys.remove(&id);
        self.resize.remove(&id);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start(id, Some(command), session)
    }

    async fn shell_request(&mut self, id: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.start(id, None, session)
    }
}

impl VmSession {
    fn accepts(&self, user: &str, key: &PublicKey) -> bool {
        (user == "root" || self.boot.users.iter().any(|u| u == user))
            && self.boot.keys.iter().any(|k| k.key_data() == key.key_data())
    }
}

/// The sandboxed command: bubblewrap with the disk as `/`, the host's `/usr` read-only, the
/// guest's stand-ins on [`super::guest::TOOLS_MOUNT`], its own user, PID, UTS, IPC and cgroup
/// namespaces, and a login-like environment. The user is the VM's user (their uid from
/// `/etc/passwd`, `root` as uid 0) inside a user namespace, with every capability dropped:
/// the host's root is never the VM's root. `sudo` (a stand-in) gives root inside a nested
/// user namespace only. With a PTY (its terminal type in `term`), the caller gives the command
/// the PTY's terminal as stdin, stdout, stderr and controlling terminal.
fn sandbox(boot: &Boot, user: &str, command: Option<&str>, term: Option<&str>) -> Command {
    let root = user == "root" || user.is_empty();
    let home = if root {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    };
    let uid = if root {
        0
    } else {
        boot.uids.get(user).copied().unwrap_or(1000)
    }
    .to_string();
    let mut c = Command::new("bwrap");
    c.args([
        "--unshare-user",
        "--uid",
        &uid,
        "--gid",
        &uid,
        "--cap-drop",
        "ALL",
    ]);
    c.args(["--unshare-ipc", "--unshare-cgroup-try"]);
    c.arg("--bind").arg(&boot.disk).arg("/");
    c.args(["--ro-bind", "/usr", "/usr"]);
    // /usr/local is the VM's own (on its disk, writable), with the stand-ins over its sbin,
    // first in PATH; a host without /usr/local gets the tools in a directory of their own.
    let local = boot.disk.join("usr/local/sbin");
    let tools_at = if Path::new("/usr/local").is_dir() && std::fs::create_dir_all(&local).is_ok() {
        c.arg("--bind").arg(boot.disk.join("usr/local")).arg("/usr/local");
        super::guest::TOOLS_MOUNT
    } else {
        "/run/cks-devcluster/bin"
    };
    c.arg("--ro-bind").arg(&boot.tools).arg(tools_at);
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        let host = Path::new("/").join(link);
        let inside = boot.disk.join(link);
        if host.is_symlink() {
            // The symlink lives on the disk (bwrap's --symlink refuses an existing one).
            if !inside.is_symlink() {
                let _ = std::os::unix::fs::symlink(target, &inside);
            }
        } else if host.is_dir() {
            c.arg("--ro-bind").arg(&host).arg(&host);
        }
    }
    c.args([
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--unshare-pid",
        "--unshare-uts",
        "--die-with-parent",
    ]);
    c.args(["--hostname", &boot.hostname, "--chdir", &home]);
    c.env_clear();
    c.env("HOME", &home)
        .env("USER", if user.is_empty() { "root" } else { user })
        .env("LOGNAME", if user.is_empty() { "root" } else { user })
        .env("KUBECONFIG", ADMIN_CONF)
        .env(
            "PATH",
            format!("{tools_at}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").replacen(
                "/usr/local/sbin:/usr/local/sbin:",
                "/usr/local/sbin:",
                1,
            ),
        )
        .env("SHELL", "/bin/bash")
        .env("LANG", "C.UTF-8");
    let shell = match command {
        Some(cmd) => format!("exec bash -c {}", shell_quote(cmd)),
        None => "exec bash -il".to_string(),
    };
    if let Some(term) = term {
        c.env("TERM", if term.is_empty() { "xterm" } else { term });
    }
    c.args(["bash", "-c", &shell]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

fn not_started(e: &dyn std::fmt::Display) -> String {
    format!("cannot start the VM sandbox (is bubblewrap installed?): {e}")
}

/// A command that could not start: the reason on stderr and exit status 127, as a shell would.
async fn refuse(channel: Channel<Msg>, why: String) {
    let msg = format!("cks-devcluster: {why}\n");
    let _ = channel.extended_data(1, msg.as_bytes()).await;
    let _ = channel.exit_status(127).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

/// A PTY of the given size: the master for the relay, the terminal for the sandbox.
fn open_pty(size: &rustix::termios::Winsize) -> pty_process::Result<(pty_process::Pty, pty_process::Pts)> {
    let (pty, pts) = pty_process::open()?;
    rustix::termios::tcsetwinsize(&pty, *size).map_err(std::io::Error::from)?;
    Ok((pty, pts))
}

/// Run a command on a PTY like sshd: the command leads a session of its own with the terminal
/// as its controlling terminal; keystrokes go to the master, everything the terminal shows
/// comes back as channel data (window permitting: `data` waits for the client's window and
/// the session's bounded queue, so nothing here buffers without bound while the terminal's
/// own buffer makes the writer block). When the command exits, the rest of its output, its
/// exit status, EOF and close follow; when the client closes the channel or goes away, the
/// sandbox is killed (its PID namespace takes every process in it along).
async fn run_pty(channel: Channel<Msg>, cmd: Command, pty: pty_process::Pty, pts: pty_process::Pts) {
    let mut child = match pty_process::Command::from(cmd).spawn(pts) {
        Ok(c) => c,
        Err(e) => return refuse(channel, not_started(&e)).await,
    };
    let (mut rx, tx) = channel.split();
    let (mut master_out, mut master_in) = pty.into_split();
    // Ends when the client closes the channel or the connection goes: sshd hangs up then too.
    let input = async {
        while let Some(msg) = rx.wait().await {
            match msg {
                // A failed write means the shell is gone; the output side reports its end.
                ChannelMsg::Data { data } => {
                    let _ = master_in.write_all(&data).await;
                }
                ChannelMsg::Close => return,
                _ => {}
            }
        }
    };
    let output = async {
        let mut buf = vec![0; 16 * 1024];
        // EIO once every holder of the terminal is gone, i.e. the sandbox has ended.
        while let Ok(n @ 1..) = master_out.read(&mut buf).await {
            if tx.data(&buf[..n]).await.is_err() {
                return;
            }
        }
        let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(255);
        let _ = tx.exit_status(u32::try_from(code).unwrap_or(255)).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    };
    tokio::select! {
        () = input => {}
        () = output => {}
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Run a command like sshd: stdin from the channel, stdout/stderr back, then the exit status.
async fn run(channel: Channel<Msg>, mut cmd: Command) {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return refuse(channel, not_started(&e)).await,
    };
    let (mut rx, tx) = channel.split();
    let mut stdin = child.stdin.take();
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return;
    };
    let input = async {
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    if let Some(s) = stdin.as_mut() {
                        let _ = s.write_all(&data).await;
                        let _ = s.flush().await;
                    }
                }
                ChannelMsg::Eof => stdin = None,
                ChannelMsg::Close => return,
                _ => {}
            }
        }
        // The client went away: keep waiting for nothing so the select does not end early.
        std::future::pending::<()>().await;
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
        let _ = tx.exit_status(u32::try_from(code).unwrap_or(255)).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    };
    tokio::select! {
        () = input => {}
        () = output => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cloud-init's `write_files` on first boot do not follow a symlink the guest planted (its
    /// boot marker deleted, so first boot runs again): the host file it names keeps its content
    /// and mode.
    #[test]
    fn first_boot_does_not_follow_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let (disk, host) = (tmp.path().join("disk"), tmp.path().join("shadow"));
        std::fs::create_dir_all(disk.join("etc")).expect("mkdir");
        std::fs::write(&host, "secret").expect("write");
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&host, disk.join("etc/motd")).expect("symlink");
        let boot = Boot {
            hostname: "vm".into(),
            disk: disk.clone(),
            tools: tmp.path().join("tools"),
            users: vec![],
            uids: Default::default(),
            keys: vec![],
            host_key: None,
            write_files: vec![("/etc/motd".into(), "pwned".into(), 0o666)],
        };
        assert!(first_boot(&boot).is_err(), "write through a symlink accepted");
        assert_eq!(std::fs::read_to_string(&host).expect("read"), "secret");
        let mode = std::fs::metadata(&host).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
