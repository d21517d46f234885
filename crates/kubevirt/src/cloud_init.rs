//! Cloud-init (`#cloud-config`) of the practice cluster's VMs, built as typed data and
//! serialized as YAML.
//!
//! The control plane gets the cluster CA and a kubeadm `InitConfiguration`, runs
//! `kubeadm init`, installs Calico from the golden image and gives the SSH user an admin
//! kubeconfig. Workers get a `JoinConfiguration` (bootstrap token + CA hash) and run
//! `kubeadm join`, which waits for the control plane; so every VM boots at once and nobody
//! reads a join command off a VM.
//!
//! # Merging `extraCloudInit`
//! The template's `extraCloudInit` must be a YAML mapping. Its keys are merged into the
//! generated document by these rules:
//! - `runcmd`: its entries run **before** the generated commands, so site setup (a registry
//!   mirror, a proxy) is in place when kubeadm starts. Entries must not run `kubeadm`.
//! - `write_files`, `users`: entries are appended after the generated ones. A file may not be
//!   written under `/etc/kubernetes/` or over a file cks-lab writes; a user may not have the
//!   SSH user's name.
//! - `bootcmd`: copied, but entries must not run `kubeadm`.
//! - The node identity and boot flow keys `hostname`, `fqdn`, `prefer_fqdn_over_hostname`,
//!   `preserve_hostname`, `manage_etc_hosts`, `ssh_pwauth` and `power_state` are refused, and
//!   so are the host key keys `ssh_keys`, `ssh_deletekeys`, `ssh_genkeytypes` and files under
//!   `/etc/ssh/ssh_host_*`: the operator pins the host key it gives each cluster.
//! - Every other key is copied unchanged.
//!
//! Anything refused is an [`Error::ExtraCloudInitRefused`] naming the key and the reason.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Where the control plane finds the Calico manifest (see `docs/golden-image.md`).
pub const CALICO_MANIFEST: &str = "/opt/cks/calico.yaml";
/// kubeadm configuration file on every VM.
pub const KUBEADM_CONFIG_PATH: &str = "/etc/kubernetes/kubeadm/config.yaml";
/// Cluster CA certificate, where kubeadm looks for an existing CA.
pub const CA_CERT_PATH: &str = "/etc/kubernetes/pki/ca.crt";
/// Cluster CA key.
pub const CA_KEY_PATH: &str = "/etc/kubernetes/pki/ca.key";
/// kubeconfig kubeadm writes for the cluster admin.
pub const ADMIN_CONF_PATH: &str = "/etc/kubernetes/admin.conf";
/// Script that points the API server at the current boot's IP address.
pub const REIP_SCRIPT_PATH: &str = "/usr/local/sbin/cks-reip";
/// systemd unit running [`REIP_SCRIPT_PATH`] before the kubelet on every boot.
pub const REIP_UNIT_PATH: &str = "/etc/systemd/system/cks-reip.service";

/// Rewrites the first-boot IP address kubeadm put in the API server's static pod manifest
/// (`--advertise-address`, probe hosts, the endpoint annotation) to this boot's address: the
/// VM's pod-network IP changes on every start, restores included.
const REIP_SCRIPT: &str = r#"#!/bin/sh
# Written by cks-lab cloud-init. The VM's IP changes on every start; kubeadm wrote the IP of
# the first boot into the API server's static pod. Replace it with this boot's IP.
set -eu
manifest=/etc/kubernetes/manifests/kube-apiserver.yaml
record=/etc/kubernetes/cks-advertise-address
[ -f "$manifest" ] || exit 0
new=$(ip -4 -o route get 1.1.1.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p')
if [ -z "$new" ]; then
  echo "cks-reip: no IPv4 address with a default route" >&2
  exit 1
fi
old=$(cat "$record" 2>/dev/null || true)
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  old_re=$(printf '%s' "$old" | sed 's/\./\\./g')
  sed -i "s/\b$old_re\b/$new/g" "$manifest"
fi
printf '%s\n' "$new" > "$record"
"#;

const REIP_UNIT: &str = "[Unit]
Description=cks-lab: point the Kubernetes API server at this boot's IP address
Wants=network-online.target
After=network-online.target
Before=kubelet.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cks-reip

[Install]
WantedBy=multi-user.target
";

/// A `#cloud-config` document. Serializes to the cloud-config keys of the same names.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct CloudConfig {
    /// Guest hostname; also the Kubernetes node name.
    pub hostname: String,
    /// Let cloud-init set the hostname.
    pub preserve_hostname: bool,
    /// Keep `/etc/hosts` resolving the hostname (kubeadm's preflight wants that).
    pub manage_etc_hosts: bool,
    /// Password logins over SSH; always off.
    pub ssh_pwauth: bool,
    /// The login user.
    pub users: Vec<User>,
    /// Files written before the commands run.
    pub write_files: Vec<WriteFile>,
    /// Commands run once, at the end of the first boot, in order (exec form, no shell).
    pub runcmd: Vec<Vec<String>>,
    /// The SSH host key the VM presents, pinned by the operator's SSH client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_keys: Option<SshHostKeys>,
    /// Delete the golden image's host keys, so only [`CloudConfig::ssh_keys`] is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_deletekeys: Option<bool>,
}

/// cloud-init's `ssh_keys`: the host key pair written to `/etc/ssh/ssh_host_ed25519_key`.
/// With it, cloud-init generates no other host keys.
#[derive(Serialize, Clone, PartialEq, Eq)]
pub struct SshHostKeys {
    /// OpenSSH private key.
    pub ed25519_private: String,
    /// OpenSSH public key line.
    pub ed25519_public: String,
}

impl std::fmt::Debug for SshHostKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshHostKeys")
            .field("ed25519_public", &self.ed25519_public)
            .finish_non_exhaustive()
    }
}

impl CloudConfig {
    /// Serves `private`/`public` as the VM's only SSH host key.
    pub fn with_host_key(mut self, private: &str, public: &str) -> Self {
        self.ssh_keys = Some(SshHostKeys {
            ed25519_private: private.to_owned(),
            ed25519_public: public.trim().to_owned(),
        });
        self.ssh_deletekeys = Some(true);
        self
    }
}

/// An entry of `users`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// Login shell.
    pub shell: String,
    /// sudoers rule.
    pub sudo: String,
    /// No password login.
    pub lock_passwd: bool,
    /// Public keys allowed to log in.
    pub ssh_authorized_keys: Vec<String>,
}

/// An entry of `write_files`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute path.
    pub path: String,
    /// File content.
    pub content: String,
    /// Octal mode, as a string so YAML readers keep the leading zero.
    pub permissions: String,
    /// `user:group`.
    pub owner: String,
}

impl WriteFile {
    fn root(path: &str, content: &str, permissions: &str) -> Self {
        Self {
            path: path.to_owned(),
            content: content.to_owned(),
            permissions: permissions.to_owned(),
            owner: "root:root".to_owned(),
        }
    }
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// The login user with passwordless sudo and `ssh_public_key`.
fn login_user(ssh_user: &str, ssh_public_key: &str) -> Result<User> {
    let key = ssh_public_key.trim();
    if key.is_empty() {
        return Err(Error::InvalidSshKey("empty"));
    }
    if key.contains('\n') {
        return Err(Error::InvalidSshKey("more than one line"));
    }
    Ok(User {
        name: ssh_user.to_owned(),
        groups: vec!["sudo".to_owned()],
        shell: "/bin/bash".to_owned(),
        sudo: "ALL=(ALL) NOPASSWD:ALL".to_owned(),
        lock_passwd: true,
        ssh_authorized_keys: vec![key.to_owned()],
    })
}

fn base(hostname: &str, user: User) -> CloudConfig {
    CloudConfig {
        hostname: hostname.to_owned(),
        preserve_hostname: false,
        manage_etc_hosts: true,
        ssh_pwauth: false,
        users: vec![user],
        write_files: Vec::new(),
        runcmd: Vec::new(),
        ssh_keys: None,
        ssh_deletekeys: None,
    }
}

/// Inputs of the control plane's cloud-config.
#[derive(Clone, Debug)]
pub struct ControlPlaneInput<'a> {
    /// Hostname and node name.
    pub hostname: &'a str,
    /// Login user.
    pub ssh_user: &'a str,
    /// OpenSSH public key line installed for the login user.
    pub ssh_public_key: &'a str,
    /// Cluster CA certificate (PEM).
    pub ca_cert_pem: &'a str,
    /// Cluster CA key (PEM).
    pub ca_key_pem: &'a str,
    /// kubeadm `InitConfiguration` + `ClusterConfiguration` (from [`crate::kubeadm`]).
    pub kubeadm_config: &'a str,
}

/// The control plane's cloud-config.
pub fn control_plane(input: &ControlPlaneInput<'_>) -> Result<CloudConfig> {
    let user = input.ssh_user;
    let home_kube = if user == "root" {
        "/root/.kube".to_owned()
    } else {
        format!("/home/{user}/.kube")
    };
    let mut config = base(input.hostname, login_user(user, input.ssh_public_key)?);
    config.write_files = vec![
        WriteFile::root(CA_CERT_PATH, input.ca_cert_pem, "0644"),
        WriteFile::root(CA_KEY_PATH, input.ca_key_pem, "0600"),
        // Holds the bootstrap token.
        WriteFile::root(KUBEADM_CONFIG_PATH, input.kubeadm_config, "0600"),
        WriteFile::root(REIP_SCRIPT_PATH, REIP_SCRIPT, "0755"),
        WriteFile::root(REIP_UNIT_PATH, REIP_UNIT, "0644"),
    ];
    let local_api = "--server=https://127.0.0.1:6443";
    config.runcmd = vec![
        cmd(&["kubeadm", "init", "--config", KUBEADM_CONFIG_PATH]),
        // kubeadm points the controller-manager and scheduler at the first boot's IP; they
        // run next to the API server, so loopback (in the certificate's SANs) always works.
        cmd(&[
            "kubectl",
            "--kubeconfig",
            "/etc/kubernetes/controller-manager.conf",
            "config",
            "set-cluster",
            "kubernetes",
            local_api,
        ]),
        cmd(&[
            "kubectl",
            "--kubeconfig",
            "/etc/kubernetes/scheduler.conf",
            "config",
            "set-cluster",
            "kubernetes",
            local_api,
        ]),
        // Records this boot's IP now; rewrites the API server manifest on later boots.
        cmd(&["systemctl", "enable", "--now", "cks-reip.service"]),
        cmd(&[
            "kubectl",
            "--kubeconfig",
            ADMIN_CONF_PATH,
            "apply",
            "-f",
            CALICO_MANIFEST,
        ]),
        cmd(&["install", "-d", "-m", "0700", "-o", user, "-g", user, &home_kube]),
        cmd(&[
            "install",
            "-m",
            "0600",
            "-o",
            user,
            "-g",
            user,
            ADMIN_CONF_PATH,
            &format!("{home_kube}/config"),
        ]),
    ];
    Ok(config)
}

/// Inputs of a worker's cloud-config.
#[derive(Clone, Debug)]
pub struct WorkerInput<'a> {
    /// Hostname and node name.
    pub hostname: &'a str,
    /// Login user.
    pub ssh_user: &'a str,
    /// OpenSSH public key line installed for the login user.
    pub ssh_public_key: &'a str,
    /// kubeadm `JoinConfiguration` (from [`crate::kubeadm`]).
    pub kubeadm_config: &'a str,
}

/// A worker's cloud-config.
pub fn worker(input: &WorkerInput<'_>) -> Result<CloudConfig> {
    let mut config = base(input.hostname, login_user(input.ssh_user, input.ssh_public_key)?);
    config.write_files = vec![WriteFile::root(KUBEADM_CONFIG_PATH, input.kubeadm_config, "0600")];
    config.runcmd = vec![cmd(&["kubeadm", "join", "--config", KUBEADM_CONFIG_PATH])];
    Ok(config)
}

/// Keys `extraCloudInit` may not set, and why.
const REFUSED_KEYS: &[(&str, &str)] = &[
    (
        "hostname",
        "the hostname is the Kubernetes node name, set by cks-lab",
    ),
    ("fqdn", "the hostname is the Kubernetes node name, set by cks-lab"),
    (
        "prefer_fqdn_over_hostname",
        "the hostname is the Kubernetes node name, set by cks-lab",
    ),
    (
        "preserve_hostname",
        "the hostname is the Kubernetes node name, set by cks-lab",
    ),
    (
        "manage_etc_hosts",
        "kubeadm needs the hostname to resolve; set by cks-lab",
    ),
    ("ssh_pwauth", "password logins stay off"),
    ("ssh_keys", "the SSH host key is generated and pinned by cks-lab"),
    (
        "ssh_deletekeys",
        "the SSH host key is generated and pinned by cks-lab",
    ),
    (
        "ssh_genkeytypes",
        "the SSH host key is generated and pinned by cks-lab",
    ),
    ("power_state", "a reboot or power-off would interrupt kubeadm"),
];

/// Renders `config` as a `#cloud-config` document, with `extra` (the template's
/// `extraCloudInit`) merged in by the rules of the [module docs](self).
pub fn render(config: &CloudConfig, extra: Option<&str>) -> Result<String> {
    let serialize_err = |message: String| Error::Serialize {
        what: "cloud-config",
        message,
    };
    let Value::Object(mut doc) = serde_json::to_value(config).map_err(|e| serialize_err(e.to_string()))?
    else {
        return Err(serialize_err("cloud-config is not a mapping".to_owned()));
    };
    if let Some(extra) = extra.filter(|e| !e.trim().is_empty()) {
        merge_extra(&mut doc, config, extra)?;
    }
    let yaml = serde_saphyr::to_string(&Value::Object(doc)).map_err(|e| serialize_err(e.to_string()))?;
    Ok(format!("#cloud-config\n{yaml}"))
}

/// Checks `extra` (a template's `extraCloudInit`) against the merge rules without rendering
/// a VM's user data, so a bad template is refused before any cluster is built from it.
pub fn validate_extra(ssh_user: &str, extra: &str) -> Result<()> {
    let probe = control_plane(&ControlPlaneInput {
        hostname: "control-plane",
        ssh_user,
        ssh_public_key: "ssh-ed25519 probe",
        ca_cert_pem: "",
        ca_key_pem: "",
        kubeadm_config: "",
    })?;
    render(&probe, Some(extra)).map(drop)
}

fn merge_extra(doc: &mut Map<String, Value>, config: &CloudConfig, extra: &str) -> Result<()> {
    let extra: Value =
        serde_saphyr::from_str(extra).map_err(|e| Error::ExtraCloudInitParse(e.to_string()))?;
    let extra = match extra {
        Value::Object(map) => map,
        Value::Null => return Ok(()),
        other => {
            return Err(Error::ExtraCloudInitParse(format!(
                "expected a mapping, found {}",
                kind_of(&other)
            )));
        }
    };
    let refuse = |key: &str, reason: String| Error::ExtraCloudInitRefused {
        key: key.to_owned(),
        reason,
    };
    for (key, value) in extra {
        if let Some((_, reason)) = REFUSED_KEYS.iter().find(|(k, _)| *k == key) {
            return Err(refuse(&key, (*reason).to_owned()));
        }
        match key.as_str() {
            "runcmd" | "bootcmd" | "write_files" | "users" => {
                let Value::Array(items) = value else {
                    return Err(refuse(&key, format!("must be a list, found {}", kind_of(&value))));
                };
                for (i, item) in items.iter().enumerate() {
                    check_list_item(&key, item, config)
                        .map_err(|reason| refuse(&format!("{key}[{i}]"), reason))?;
                }
                let ours = doc.remove(&key).and_then(|v| match v {
                    Value::Array(a) => Some(a),
                    _ => None,
                });
                let merged: Vec<Value> = match (key.as_str(), ours) {
                    // Site commands first, so their setup is in place before kubeadm runs.
                    ("runcmd", Some(ours)) => items.into_iter().chain(ours).collect(),
                    (_, Some(ours)) => ours.into_iter().chain(items).collect(),
                    (_, None) => items,
                };
                doc.insert(key, Value::Array(merged));
            }
            _ => {
                doc.insert(key, value);
            }
        }
    }
    Ok(())
}

/// Why an entry of the list `key` would break the bootstrap, if it would.
fn check_list_item(key: &str, item: &Value, config: &CloudConfig) -> Result<(), String> {
    match key {
        "runcmd" | "bootcmd" => {
            let words: Vec<&str> = match item {
                Value::String(s) => s.split_whitespace().collect(),
                Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect(),
                other => return Err(format!("expected a command, found {}", kind_of(other))),
            };
            if words.iter().any(|w| {
                w.trim_matches(['"', '\'', ';', '&', '|', '(', ')'])
                    .ends_with("kubeadm")
            }) {
                return Err("must not run kubeadm: cks-lab runs kubeadm itself".to_owned());
            }
            Ok(())
        }
        "write_files" => {
            let path = item
                .get("path")
                .and_then(Value::as_str)
                .ok_or("a file needs a path")?;
            let normalized = normalize_path(path);
            if normalized.starts_with("/etc/kubernetes/") || normalized == "/etc/kubernetes" {
                return Err(format!(
                    "{path}: files under /etc/kubernetes/ belong to kubeadm and cks-lab"
                ));
            }
            if normalized.starts_with("/etc/ssh/ssh_host_") {
                return Err(format!(
                    "{path}: the SSH host key is generated and pinned by cks-lab"
                ));
            }
            if config.write_files.iter().any(|f| f.path == normalized) {
                return Err(format!("{path}: written by cks-lab"));
            }
            Ok(())
        }
        "users" => {
            let name = match item {
                Value::String(s) => s.as_str(),
                other => other.get("name").and_then(Value::as_str).unwrap_or_default(),
            };
            if config.users.iter().any(|u| u.name == name) {
                return Err(format!("user {name:?} is the SSH user, created by cks-lab"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `path` with `.`, empty and `..` segments resolved, so `/etc//kubernetes/../kubernetes/x`
/// cannot slip past the checks.
fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CloudConfig {
        worker(&WorkerInput {
            hostname: "worker-1",
            ssh_user: "ubuntu",
            ssh_public_key: "ssh-ed25519 AAAA key",
            kubeadm_config: "kind: JoinConfiguration\n",
        })
        .unwrap()
    }

    fn merged(extra: &str) -> Result<Value> {
        let yaml = render(&sample(), Some(extra))?;
        Ok(serde_saphyr::from_str(&yaml).unwrap())
    }

    fn refused_key(extra: &str) -> String {
        match merged(extra).unwrap_err() {
            Error::ExtraCloudInitRefused { key, .. } => key,
            other => panic!("expected a refusal, got {other}"),
        }
    }

    #[test]
    fn render_starts_with_the_cloud_config_header_and_quotes_modes() {
        let yaml = render(&sample(), None).unwrap();
        assert!(yaml.starts_with("#cloud-config\n"));
        // YAML 1.1 readers (cloud-init uses PyYAML) would read an unquoted 0600 as octal.
        assert!(yaml.contains("permissions: \"0600\""), "{yaml}");
        let doc: Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(doc["write_files"][0]["permissions"], "0600");
        assert_eq!(render(&sample(), Some("  \n")).unwrap(), yaml);
        assert_eq!(render(&sample(), Some("# only a comment\n")).unwrap(), yaml);
    }

    #[test]
    fn extra_runcmd_runs_before_ours_and_other_lists_append() {
        let doc = merged(
            "runcmd: [[sh, -c, 'echo site']]\nbootcmd: [echo early]\nusers: [default, {name: alice}]\nwrite_files: [{path: /etc/motd, content: hi}]\nntp: {enabled: true}\n",
        )
        .unwrap();
        assert_eq!(
            doc["runcmd"],
            json!([
                ["sh", "-c", "echo site"],
                ["kubeadm", "join", "--config", KUBEADM_CONFIG_PATH]
            ])
        );
        assert_eq!(doc["bootcmd"], json!(["echo early"]));
        assert_eq!(doc["users"][0]["name"], "ubuntu");
        assert_eq!(doc["users"][1], "default");
        assert_eq!(doc["users"][2]["name"], "alice");
        assert_eq!(doc["write_files"][1]["path"], "/etc/motd");
        assert_eq!(doc["ntp"], json!({"enabled": true}));
        assert_eq!(doc["hostname"], "worker-1");
    }

    #[test]
    fn extra_keys_that_break_bootstrap_are_refused_with_the_key() {
        assert_eq!(refused_key("hostname: other"), "hostname");
        assert_eq!(refused_key("power_state: {mode: reboot}"), "power_state");
        assert_eq!(refused_key("ssh_pwauth: true"), "ssh_pwauth");
        assert_eq!(refused_key("runcmd: [ls, 'kubeadm reset -f']"), "runcmd[1]");
        assert_eq!(
            refused_key("runcmd: [[/usr/bin/kubeadm, token, create]]"),
            "runcmd[0]"
        );
        assert_eq!(refused_key("bootcmd: ['echo x; kubeadm init']"), "bootcmd[0]");
        assert_eq!(
            refused_key("write_files: [{path: /etc/kubernetes/pki/ca.key, content: x}]"),
            "write_files[0]"
        );
        assert_eq!(
            refused_key("write_files: [{path: '/etc//x/../kubernetes/admin.conf', content: x}]"),
            "write_files[0]"
        );
        assert_eq!(refused_key("write_files: [{content: x}]"), "write_files[0]");
        assert_eq!(refused_key("users: [{name: ubuntu}]"), "users[0]");
        assert_eq!(refused_key("runcmd: echo hi"), "runcmd");
        // The host key is the operator's to give and pin.
        assert_eq!(refused_key("ssh_keys: {ed25519_private: x}"), "ssh_keys");
        assert_eq!(refused_key("ssh_deletekeys: false"), "ssh_deletekeys");
        assert_eq!(refused_key("ssh_genkeytypes: [rsa]"), "ssh_genkeytypes");
        assert_eq!(
            refused_key("write_files: [{path: /etc/ssh/ssh_host_ed25519_key, content: x}]"),
            "write_files[0]"
        );
    }

    #[test]
    fn a_host_key_is_served_alone() {
        let doc: Value = serde_saphyr::from_str(
            &render(&sample().with_host_key("PRIVATE\n", "ssh-ed25519 AAAA\n"), None).unwrap(),
        )
        .unwrap();
        assert_eq!(
            doc["ssh_keys"],
            json!({"ed25519_private": "PRIVATE\n", "ed25519_public": "ssh-ed25519 AAAA"})
        );
        assert_eq!(doc["ssh_deletekeys"], true);
        let plain: Value = serde_saphyr::from_str(&render(&sample(), None).unwrap()).unwrap();
        assert!(plain.get("ssh_keys").is_none() && plain.get("ssh_deletekeys").is_none());
    }

    #[test]
    fn validate_extra_applies_the_control_plane_rules() {
        assert!(validate_extra("ubuntu", "packages: [jq]").is_ok());
        let err = validate_extra(
            "ubuntu",
            "write_files: [{path: /usr/local/sbin/cks-reip, content: x}]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("written by cks-lab"), "{err}");
        assert!(validate_extra("alice", "users: [{name: alice}]").is_err());
    }

    #[test]
    fn extra_that_is_not_a_yaml_mapping_is_a_parse_error() {
        for bad in ["- a\n- b\n", "just text", "a: [unclosed"] {
            let err = merged(bad).unwrap_err();
            assert!(matches!(err, Error::ExtraCloudInitParse(_)), "{bad}: {err}");
            assert_eq!(err.category(), "InvalidExtraCloudInit");
        }
    }

    #[test]
    fn reip_script_is_used_by_the_control_plane_only() {
        let cp = control_plane(&ControlPlaneInput {
            hostname: "control-plane",
            ssh_user: "ubuntu",
            ssh_public_key: "ssh-ed25519 AAAA key",
            ca_cert_pem: "CERT",
            ca_key_pem: "KEY",
            kubeadm_config: "kind: InitConfiguration\n",
        })
        .unwrap();
        assert!(cp.write_files.iter().any(|f| f.path == REIP_SCRIPT_PATH));
        assert!(!sample().write_files.iter().any(|f| f.path == REIP_SCRIPT_PATH));
        assert_eq!(normalize_path("/a/./b//../c"), "/a/c");
    }
}
