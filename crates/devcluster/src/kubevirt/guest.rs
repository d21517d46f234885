//! What the golden image gives a simulated VM besides the host's `/usr`: the files kubeadm
//! leaves (static pod manifests on a control plane, the kubelet's configuration), the
//! directories scenarios write to, stand-ins for programs that need systemd or a kernel the
//! sandbox lacks (`sudo`, `systemctl`, `journalctl`, `falco`, `runsc`, `apparmor_parser`),
//! and the guest's "kubelet": mirror Pods for the static pod manifests and the kubelet's
//! read-only port. See `docs/devcluster.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Where the stand-ins are bound in the sandbox (first in `PATH`), inside the VM's own
/// `/usr/local` (a directory of its disk).
pub(crate) const TOOLS_MOUNT: &str = "/usr/local/sbin";
/// Unit states of the `systemctl` stand-in, on the disk.
const SYSTEMD_STATE: &str = "var/lib/cks-devcluster/systemd";
/// Marker of the simulated `kubeadm init`/`join` (its files are written once).
const KUBEADM_DONE: &str = "var/lib/cks-devcluster/kubeadm-done";
const MANIFESTS: &str = "etc/kubernetes/manifests";
const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";

const SUDO: &str = r#"#!/bin/bash
# sudo of a cks-devcluster simulated VM: root only inside a nested user namespace, never on
# the host (see docs/devcluster.md). SUDO_USER is not set: only root is mapped in there.
login=""
while [ $# -gt 0 ]; do
  case "$1" in
    -u) [ "$2" = root ] || { echo "sudo: simulated VM: only -u root is supported" >&2; exit 1; }; shift 2 ;;
    -i|-s|--login|--shell) login=1; shift ;;
    -E|-H|-n|-S|-k|-A|--preserve-env|--preserve-env=*|--non-interactive|--stdin) shift ;;
    --) shift; break ;;
    -*) echo "sudo: simulated VM: unsupported option $1" >&2; exit 1 ;;
    *) break ;;
  esac
done
export HOME=/root USER=root LOGNAME=root
if [ $# -eq 0 ]; then
  [ -n "$login" ] || { echo "usage: sudo COMMAND" >&2; exit 1; }
  set -- bash -l
elif [ -n "$login" ]; then
  set -- bash -lc "$*"
fi
cd "$HOME" 2>/dev/null || true
[ "$(id -u)" = 0 ] && exec "$@"
exec unshare --user --map-root-user -- "$@"
"#;

const SYSTEMCTL: &str = r#"#!/bin/bash
# systemctl of a cks-devcluster simulated VM: there is no systemd; a unit's state is a file
# under /var/lib/cks-devcluster/systemd (see docs/devcluster.md).
S=/var/lib/cks-devcluster/systemd
unit() { case "$1" in *.*) echo "$1" ;; *) echo "$1.service" ;; esac; }
root() { [ "$(id -u)" = 0 ] || { echo "Failed to $1: Access denied" >&2; exit 4; }; mkdir -p "$S"; }
now=""; quiet=""; args=()
for a in "$@"; do
  case "$a" in
    --now) now=1 ;;
    -q|--quiet) quiet=1 ;;
    -*) ;;
    *) args+=("$a") ;;
  esac
done
cmd=${args[0]:-list-units}
units=("${args[@]:1}")
rc=0
case "$cmd" in
  daemon-reload|daemon-reexec|reset-failed) root reload ;;
  start|restart|reload|try-restart|reload-or-restart)
    root start; for u in "${units[@]}"; do touch "$S/$(unit "$u").active"; done ;;
  stop) root stop; for u in "${units[@]}"; do rm -f "$S/$(unit "$u").active"; done ;;
  kill) root kill ;;
  enable)
    root enable
    for u in "${units[@]}"; do
      touch "$S/$(unit "$u").enabled"; [ -n "$now" ] && touch "$S/$(unit "$u").active"
    done ;;
  disable|mask)
    root "$cmd"
    for u in "${units[@]}"; do
      rm -f "$S/$(unit "$u").enabled"; [ -n "$now" ] && rm -f "$S/$(unit "$u").active"
      [ "$cmd" = mask ] && rm -f "$S/$(unit "$u").active"
    done ;;
  is-active|is-enabled)
    for u in "${units[@]}"; do
      if [ "$cmd" = is-active ]; then f=active; yes=active; no=inactive; bad=3; else f=enabled; yes=enabled; no=disabled; bad=1; fi
      if [ -e "$S/$(unit "$u").$f" ]; then s=$yes; else s=$no; rc=$bad; fi
      [ -n "$quiet" ] || echo "$s"
    done ;;
  status)
    for u in "${units[@]}"; do
      u=$(unit "$u")
      if [ -e "$S/$u.active" ]; then a="active (running)"; else a="inactive (dead)"; rc=3; fi
      if [ -e "$S/$u.enabled" ]; then e=enabled; else e=disabled; fi
      printf '* %s\n     Loaded: loaded (%s)\n     Active: %s\n' "$u" "$e" "$a"
    done ;;
  list-units|list-unit-files)
    for f in "$S"/*.active "$S"/*.enabled; do [ -e "$f" ] && basename "$f" | sed 's/\.\(active\|enabled\)$//'; done | sort -u ;;
  *) echo "systemctl: '$cmd' is not simulated on this VM" >&2; rc=1 ;;
esac
exit $rc
"#;

const JOURNALCTL: &str = r#"#!/bin/sh
# journalctl of a cks-devcluster simulated VM: nothing writes a journal here.
echo "-- No entries --"
"#;

const FALCO: &str = r#"#!/bin/sh
# Stand-in for Falco on a cks-devcluster simulated VM: installed, but it sees no syscalls.
case "$1" in
  --version) echo "Falco version: 0.39.2 (cks-devcluster stand-in: no events)" ;;
  *) echo "falco: cks-devcluster stand-in; the simulated VM produces no events" >&2 ;;
esac
"#;

const RUNSC: &str = r#"#!/bin/sh
# Stand-in for gVisor's runsc on a cks-devcluster simulated VM.
echo "runsc version release-cks-devcluster (stand-in: no sandboxing)"
"#;

const APPARMOR_PARSER: &str = r#"#!/bin/sh
# Stand-in for apparmor_parser on a cks-devcluster simulated VM: the sandbox has no AppArmor;
# profiles are checked for existence only and never enforced.
for a in "$@"; do case "$a" in -*) ;; *) [ -e "$a" ] || { echo "apparmor_parser: File $a not found" >&2; exit 1; } ;; esac; done
"#;

/// Write the stand-ins into `dir` (bound read-only at [`TOOLS_MOUNT`] in every sandbox).
pub(crate) fn write_tools(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for (name, text) in [
        ("sudo", SUDO),
        ("systemctl", SYSTEMCTL),
        ("journalctl", JOURNALCTL),
        ("falco", FALCO),
        ("runsc", RUNSC),
        ("apparmor_parser", APPARMOR_PARSER),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Directories and files of the golden image that scenarios expect on every node; its
/// `/etc/passwd` and `/etc/group` (copied from the host) keep only system accounts, as an
/// image's do.
pub(crate) fn seed(disk: &Path) -> std::io::Result<()> {
    for file in ["etc/passwd", "etc/group"] {
        if let Ok(text) = std::fs::read_to_string(disk.join(file)) {
            let system: String = text
                .lines()
                .filter(|l| {
                    l.split(':')
                        .nth(2)
                        .and_then(|id| id.parse::<u32>().ok())
                        .is_some_and(|id| id < 1000 || id == 65534)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(disk.join(file), system)?;
        }
    }
    // Symlinks behind much of /usr/bin (awk, editor...), and OpenSSL's configuration and the
    // CA bundle (/usr/lib/ssl points into /etc/ssl).
    for (from, to) in [
        ("/etc/alternatives", "etc/alternatives"),
        ("/etc/ssl/certs", "etc/ssl/certs"),
    ] {
        copy_tree(Path::new(from), &disk.join(to));
    }
    if let Err(e) = std::fs::copy("/etc/ssl/openssl.cnf", disk.join("etc/ssl/openssl.cnf")) {
        tracing::debug!(error = %e, "no host /etc/ssl/openssl.cnf for the golden image");
    }
    std::fs::create_dir_all(disk.join("etc/ssl/private"))?;
    for dir in [
        "usr/local/bin",
        "usr/local/sbin",
        "usr/local/lib",
        "usr/local/share",
        "etc/apparmor.d",
        "etc/falco",
        "etc/containerd",
        "etc/systemd/system",
        "var/lib/kubelet",
    ] {
        std::fs::create_dir_all(disk.join(dir))?;
    }
    std::fs::write(
        disk.join("etc/falco/falco_rules.yaml"),
        "# Falco's default rules (stand-in)\n",
    )?;
    std::fs::write(
        disk.join("etc/containerd/config.toml"),
        "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n",
    )?;
    let state = disk.join(SYSTEMD_STATE);
    std::fs::create_dir_all(&state)?;
    for unit in ["containerd.service", "kubelet.service"] {
        std::fs::write(state.join(format!("{unit}.enabled")), "")?;
        std::fs::write(state.join(format!("{unit}.active")), "")?;
    }
    Ok(())
}

/// Copy a host directory of files and symlinks, as far as it is readable.
fn copy_tree(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    if let Err(e) = std::fs::create_dir_all(to) {
        tracing::warn!(error = %e, dir = %to.display(), "golden image directory");
        return;
    }
    for entry in entries.flatten() {
        let target = to.join(entry.file_name());
        let Ok(ty) = entry.file_type() else { continue };
        let result = if ty.is_symlink() {
            std::fs::read_link(entry.path()).and_then(|l| std::os::unix::fs::symlink(l, &target))
        } else if ty.is_dir() {
            copy_tree(&entry.path(), &target);
            Ok(())
        } else {
            std::fs::copy(entry.path(), &target).map(|_| ())
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, file = %entry.path().display(), "not copied into the golden image");
        }
    }
}

fn static_pods(hostname: &str, ip: &str) -> Vec<(&'static str, String)> {
    let pod = |component: &str, command: Vec<String>, mounts: &[(&str, &str)], cpu: &str| {
        let mut m = String::new();
        let mut v = String::new();
        for (name, path) in mounts {
            m += &format!("    - mountPath: {path}\n      name: {name}\n      readOnly: true\n");
            v += &format!(
                "  - hostPath:\n      path: {path}\n      type: DirectoryOrCreate\n    name: {name}\n"
            );
        }
        let cmd: String = command.iter().map(|c| format!("    - {c}\n")).collect();
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    component: {component}\n    tier: control-plane\n  name: {component}\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n{cmd}    image: registry.k8s.io/{component}:v1.33.0\n    imagePullPolicy: IfNotPresent\n    name: {component}\n    resources:\n      requests:\n        cpu: {cpu}\n    volumeMounts:\n{m}  hostNetwork: true\n  priorityClassName: system-node-critical\n  volumes:\n{v}status: {{}}\n"
        )
    };
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
    let mut apiserver = s(&["kube-apiserver"]);
    apiserver.extend([
        format!("--advertise-address={ip}"),
        "--allow-privileged=true".into(),
        "--authorization-mode=Node,RBAC".into(),
        "--client-ca-file=/etc/kubernetes/pki/ca.crt".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--enable-bootstrap-token-auth=true".into(),
        "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt".into(),
        "--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt".into(),
        "--etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key".into(),
        "--etcd-servers=https://127.0.0.1:2379".into(),
        "--secure-port=6443".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--service-account-key-file=/etc/kubernetes/pki/sa.pub".into(),
        "--service-account-signing-key-file=/etc/kubernetes/pki/sa.key".into(),
        "--service-cluster-ip-range=10.96.0.0/12".into(),
        "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt".into(),
        "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key".into(),
    ]);
    let controller = s(&[
        "kube-controller-manager",
        "--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--bind-address=127.0.0.1",
        "--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt",
        "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key",
        "--kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--leader-elect=true",
        "--root-ca-file=/etc/kubernetes/pki/ca.crt",
        "--service-account-private-key-file=/etc/kubernetes/pki/sa.key",
        "--use-service-account-credentials=true",
    ]);
    let scheduler = s(&[
        "kube-scheduler",
        "--authentication-kubeconfig=/etc/kubernetes/scheduler.conf",
        "--authorization-kubeconfig=/etc/kubernetes/scheduler.conf",
        "--bind-address=127.0.0.1",
        "--kubeconfig=/etc/kubernetes/scheduler.conf",
        "--leader-elect=true",
    ]);
    let etcd = vec![
        "etcd".to_string(),
        format!("--advertise-client-urls=https://{ip}:2379"),
        "--cert-file=/etc/kubernetes/pki/etcd/server.crt".into(),
        "--client-cert-auth=true".into(),
        "--data-dir=/var/lib/etcd".into(),
        "--key-file=/etc/kubernetes/pki/etcd/server.key".into(),
        format!("--listen-client-urls=https://127.0.0.1:2379,https://{ip}:2379"),
        format!("--name={hostname}"),
        "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt".into(),
    ];
    let pki = [
        ("k8s-certs", "/etc/kubernetes/pki"),
        ("ca-certs", "/etc/ssl/certs"),
    ];
    vec![
        (
            "kube-apiserver.yaml",
            pod("kube-apiserver", apiserver, &pki, "250m"),
        ),
        (
            "kube-controller-manager.yaml",
            pod("kube-controller-manager", controller, &pki, "200m"),
        ),
        (
            "kube-scheduler.yaml",
            pod(
                "kube-scheduler",
                scheduler,
                &[("kubeconfig", "/etc/kubernetes/scheduler.conf")],
                "100m",
            ),
        ),
        (
            "etcd.yaml",
            pod(
                "etcd",
                etcd,
                &[
                    ("etcd-certs", "/etc/kubernetes/pki/etcd"),
                    ("etcd-data", "/var/lib/etcd"),
                ],
                "100m",
            ),
        ),
    ]
}

const KUBELET_CONFIGURATION: &str = "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
rotateCertificates: true
staticPodPath: /etc/kubernetes/manifests
";

/// What `kubeadm init` (control plane) or `kubeadm join` leaves on the disk, once: the
/// kubelet's configuration, and on a control plane the static pod manifests.
pub(crate) fn kubeadm(disk: &Path, control_plane: bool, hostname: &str, ip: &str) -> std::io::Result<()> {
    let done = disk.join(KUBEADM_DONE);
    if done.exists() {
        return Ok(());
    }
    // The guest can delete the marker and plant symlinks: `super::disk` does not follow them.
    super::disk::write(disk, KUBELET_CONFIG, KUBELET_CONFIGURATION)?;
    if control_plane {
        for (file, text) in static_pods(hostname, ip) {
            super::disk::write(disk, Path::new(MANIFESTS).join(file), text)?;
        }
    }
    super::disk::write(disk, KUBEADM_DONE, "").map(drop)
}

/// Add the cloud-init users to the disk's `/etc/passwd` and `/etc/group` (uid 1000, 1001...,
/// as cloud-init creates them) and return their uids.
pub(crate) fn users(disk: &Path, users: &[String]) -> BTreeMap<String, u32> {
    let mut uids = BTreeMap::new();
    let passwd = super::disk::read_to_string(disk, "etc/passwd").unwrap_or_default();
    let group = super::disk::read_to_string(disk, "etc/group").unwrap_or_default();
    let (mut passwd_add, mut group_add) = (String::new(), String::new());
    let mut taken: std::collections::BTreeSet<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    for u in users {
        let existing = passwd
            .lines()
            .find(|l| l.split(':').next() == Some(u.as_str()))
            .and_then(|l| l.split(':').nth(2)?.parse().ok());
        let uid = existing.unwrap_or_else(|| (1000..).find(|n| !taken.contains(n)).unwrap_or(1000));
        taken.insert(uid);
        if existing.is_none() {
            passwd_add += &format!("{u}:x:{uid}:{uid}::/home/{u}:/bin/bash\n");
            if !group.lines().any(|l| l.split(':').next() == Some(u.as_str())) {
                group_add += &format!("{u}:x:{uid}:\n");
            }
        }
        uids.insert(u.clone(), uid);
    }
    let append = |file: &str, text: &str| -> std::io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(super::disk::below(disk, file)?)?;
        f.write_all(text.as_bytes())
    };
    if let Err(e) = append("etc/passwd", &passwd_add).and_then(|()| append("etc/group", &group_add)) {
        tracing::warn!(error = %e, "adding cloud-init users to /etc/passwd");
    }
    uids
}

/// The guest's kubelet, as far as the sandbox cannot be: every half second it mirrors the
/// static pod manifests of a control plane as Pods in the practice cluster's `kube-system`
/// (as the kubelet's mirror pods), and serves the read-only port when the kubelet's
/// configuration sets one and its unit is active.
pub(crate) async fn kubelet(
    disk: PathBuf,
    ip: String,
    hostname: String,
    cluster: Option<std::sync::Arc<std::sync::Mutex<Option<crate::DevCluster>>>>,
) {
    let mut client: Option<kube::Client> = None;
    let mut mirrored: Option<BTreeMap<String, String>> = None;
    let mut read_only: Option<(u16, tokio::task::JoinHandle<()>)> = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let port = read_only_port(&disk);
        if read_only.as_ref().map(|(p, _)| *p) != port {
            if let Some((_, task)) = read_only.take() {
                task.abort();
            }
            if let Some(p) = port {
                match tokio::net::TcpListener::bind((ip.as_str(), p)).await {
                    Ok(l) => read_only = Some((p, tokio::spawn(serve_read_only(l)))),
                    Err(e) => tracing::warn!(%ip, port = p, error = %e, "kubelet read-only port"),
                }
            }
        }
        let Some(slot) = &cluster else { continue };
        if client.is_none() {
            let started = slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|c| c.kubeconfig().clone());
            if let Some(kc) = started
                && let Ok(config) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await
            {
                client = kube::Client::try_from(config).ok();
            }
        }
        let Some(client) = &client else { continue };
        let manifests = read_manifests(&disk);
        if mirrored.as_ref() != Some(&manifests) && mirror(client, &hostname, &manifests).await {
            mirrored = Some(manifests);
        }
    }
}

fn read_only_port(disk: &Path) -> Option<u16> {
    if !disk.join(SYSTEMD_STATE).join("kubelet.service.active").exists() {
        return None;
    }
    let text = super::disk::read_to_string(disk, KUBELET_CONFIG).ok()?;
    let cfg: Value = serde_saphyr::from_str(&text).ok()?;
    cfg["readOnlyPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

async fn serve_read_only(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}"#;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        });
    }
}

fn read_manifests(disk: &Path) -> BTreeMap<String, String> {
    super::disk::below(disk, MANIFESTS)
        .and_then(std::fs::read_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json")
        })
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().into_owned(),
                super::disk::read_to_string(disk, Path::new(MANIFESTS).join(e.file_name())).ok()?,
            ))
        })
        .collect()
}

/// Apply the mirror Pods of `manifests` and delete those of removed manifests; a manifest that
/// does not parse has no mirror Pod (its component is down). Returns whether all writes went.
async fn mirror(client: &kube::Client, hostname: &str, manifests: &BTreeMap<String, String>) -> bool {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
    const MIRROR: &str = "kubernetes.io/config.mirror";
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let mut names = Vec::new();
    let mut ok = true;
    for text in manifests.values() {
        let Ok(mut pod) = serde_saphyr::from_str::<Value>(text) else {
            continue;
        };
        if pod["kind"] != "Pod" {
            continue;
        }
        let name = format!(
            "{}-{hostname}",
            pod["metadata"]["name"].as_str().unwrap_or("static")
        );
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["namespace"] = json!("kube-system");
        pod["metadata"]["annotations"][MIRROR] = json!("cks-devcluster");
        pod["spec"]["nodeName"] = json!(hostname);
        if let Some(m) = pod.as_object_mut() {
            m.remove("status");
        }
        let patch = PatchParams::apply("kubelet").force();
        ok &= pods.patch(&name, &patch, &Patch::Apply(&pod)).await.is_ok();
        names.push(name);
    }
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for p in list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let is_mirror = p
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(MIRROR));
            if is_mirror && !names.contains(&name) {
                ok &= pods.delete(&name, &DeleteParams::default()).await.is_ok();
            }
        }
    }
    ok
}

/// Host-side writes and reads of a VM's disk do not follow symlinks the guest planted.
#[cfg(test)]
mod disk_tests {
    use super::*;

    #[test]
    fn kubeadm_users_and_manifests_do_not_follow_planted_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (disk, host) = (tmp.path().join("disk"), tmp.path().join("host"));
        std::fs::create_dir_all(disk.join("etc/kubernetes/manifests")).expect("mkdir");
        std::fs::create_dir_all(disk.join("var/lib")).expect("mkdir");
        std::fs::create_dir_all(&host).expect("mkdir");
        std::fs::write(host.join("passwd"), "root:x:0:0::/root:/bin/sh\n").expect("write");
        std::fs::write(host.join("secret.yaml"), "kind: Pod\n").expect("write");
        let link = |from: PathBuf, to: PathBuf| std::os::unix::fs::symlink(from, to);
        link(host.clone(), disk.join("var/lib/kubelet")).expect("symlink");
        link(host.join("passwd"), disk.join("etc/passwd")).expect("symlink");
        link(
            host.join("secret.yaml"),
            disk.join("etc/kubernetes/manifests/x.yaml"),
        )
        .expect("symlink");

        assert!(kubeadm(&disk, false, "vm", "127.0.0.2").is_err());
        assert!(
            !host.join("config.yaml").exists(),
            "kubelet config written through a symlink"
        );
        users(&disk, &["alice".to_string()]);
        assert_eq!(
            std::fs::read_to_string(host.join("passwd")).expect("read"),
            "root:x:0:0::/root:/bin/sh\n",
            "user appended through a symlink"
        );
        assert!(
            read_manifests(&disk).is_empty(),
            "manifest read through a symlink"
        );
    }
}
