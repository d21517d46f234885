//! A development control plane with the KubeVirt simulator, the cks-lab CRDs, the namespace
//! [`NS`], an SSH key pair Secret `ssh-key` the simulated VMs accept, and the pool and cluster
//! controllers running in `vmi-ip` mode with the real readiness probe.

use std::path::PathBuf;
use std::sync::Arc;

use cks_devcluster::kubevirt::{Fault, SimOptions};
use cks_devcluster::{DevCluster, Options};
use cks_operator::config::{ControllerConfig, PracticeApiAccess};
use cks_operator::context::Context;
use cks_operator::probe::KubeProbe;
use cks_operator::{cluster, pool};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use serde_json::json;

use super::NS;

/// Port of the simulated VMs' SSH servers.
pub const SSH_PORT: u16 = 2222;

/// The test-only key of the `ssh-key` Secret (fixed seed; never used outside tests).
pub fn ssh_key() -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]))
}

/// Controller settings for the simulator: practice APIs by VMI IP, SSH on [`SSH_PORT`].
pub fn config() -> ControllerConfig {
    ControllerConfig {
        practice_api: PracticeApiAccess::VmiIp,
        ssh_port: SSH_PORT,
        ..ControllerConfig::test()
    }
}

/// A context for any controller on the simulator (real probe, [`config`]).
pub fn context(client: &Client) -> Context {
    Context {
        config: Arc::new(config()),
        probe: Arc::new(KubeProbe),
        ..Context::test(client.clone())
    }
}

/// Server and client without controllers; `disk_dir` is where the simulated disks live
/// (a temporary directory of the server's own when `None`).
pub async fn start_server(faults: &[(Fault, f64)], disk_dir: Option<PathBuf>) -> (DevCluster, Client) {
    let opts = Options {
        kubevirt: Some(SimOptions {
            golden_images: vec!["vm-templates/golden".into()],
            fault_rates: faults.iter().copied().collect(),
            disk_dir,
            ssh_port: SSH_PORT,
            ..SimOptions::default()
        }),
        ..Options::default()
    };
    let server = DevCluster::start(opts).await.expect("devcluster starts");
    let mut manifests =
        cks_devcluster::apply::read_manifests(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds"))
            .unwrap();
    cks_devcluster::apply::order(&mut manifests);
    server.apply(&manifests).expect("CRDs apply");
    let client = server.client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    let key = ssh_key();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ssh-key"},
        "stringData": {
            "ssh-privatekey": key.to_openssh(LineEnding::LF).unwrap().to_string(),
            "ssh-publickey": key.public_key().to_openssh().unwrap(),
        },
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    (server, client)
}

/// [`start_server`] plus the pool and cluster controllers.
pub async fn start(faults: &[(Fault, f64)], disk_dir: Option<PathBuf>) -> (DevCluster, Client) {
    let (server, client) = start_server(faults, disk_dir).await;
    let ctx = Arc::new(context(&client));
    tokio::spawn(pool::run(ctx.clone(), Some(NS), std::future::pending()));
    tokio::spawn(cluster::run(ctx, Some(NS), std::future::pending()));
    (server, client)
}
