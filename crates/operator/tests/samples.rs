//! The samples `make run` applies must work with the shipped catalog (a sample Session that
//! names a missing scenario would fail at once with `ScenarioNotFound`), and the samples
//! directory must apply with kubectl on a fresh cluster that has only the CRDs.

use std::path::PathBuf;
use std::process::Command;

use cks_api::{ClusterPool, Session, ValidationRun};
use cks_operator::isolation;
use cks_scenarios::Catalog;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let manifests = cks_devcluster::apply::read_manifests(&repo().join("config/samples").join(file)).unwrap();
    assert_eq!(manifests.len(), 1, "{file} holds one object");
    serde_json::from_value(manifests[0].object.clone()).unwrap()
}

#[test]
fn sample_session_and_validation_run_name_a_shipped_scenario_and_task() {
    let catalog = Catalog::load(repo().join("scenarios")).unwrap();
    let session: Session = sample("session.yaml");
    let scenario = catalog
        .get(&session.spec.scenario)
        .unwrap_or_else(|| panic!("sample Session names unknown scenario {}", session.spec.scenario));
    let run: ValidationRun = sample("validationrun.yaml");
    assert_eq!(run.spec.session, session.metadata.name.clone().unwrap());
    assert!(
        scenario.task(&run.spec.task).is_some(),
        "sample ValidationRun names task {} which {} does not have",
        run.spec.task,
        scenario.id()
    );
}

/// kubectl from `$KUBECTL`, the repository's `.tools`, or PATH (as the devcluster's kubectl
/// tests find it); the test fails without one, as CI must provide it.
fn kubectl() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL").filter(|k| !k.is_empty()) {
        return PathBuf::from(k);
    }
    let tools = repo().join(".tools/kubectl/usr/bin/kubectl");
    if tools.is_file() {
        return tools;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl not found: set KUBECTL or put kubectl on PATH")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_directory_applies_with_kubectl_on_a_fresh_cluster_with_only_the_crds() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = cks_devcluster::DevCluster::start(cks_devcluster::Options {
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .expect("devcluster starts");
    let mut crds = cks_devcluster::apply::read_manifests(&repo().join("crds")).unwrap();
    cks_devcluster::apply::order(&mut crds);
    cluster.apply(&crds).expect("CRDs apply");

    let samples = repo().join("config/samples");
    let home = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(kubectl())
            .args(["apply", "-f"])
            .arg(&samples)
            .arg("--request-timeout=30s")
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &home)
            .output()
            .expect("kubectl runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl apply -f config/samples failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for created in [
        "namespace/cks-lab created",
        "clusterpool.cks.io/cks-standard created",
        "session.cks.io/alice-pod-security created",
        "validationrun.cks.io/alice-pod-security-01-a created",
    ] {
        assert!(stdout.contains(created), "{created:?} missing from: {stdout}");
    }
}

#[test]
fn sample_pool_keeps_metadata_and_shared_ranges_out_and_its_quota_holds_a_reset() {
    let pool: ClusterPool = sample("clusterpool.yaml");
    let policies = isolation::network_policies("c1", &Default::default(), &pool.spec.isolation, "cks-lab");
    let json = serde_json::to_value(&policies[0]).unwrap();
    let internet = json["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0")
        .expect("an egress rule to the internet");
    let except = internet["to"][0]["ipBlock"]["except"].as_array().unwrap();
    for blocked in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
    ] {
        assert!(
            except.contains(&serde_json::json!(blocked)),
            "{blocked} reachable: {except:?}"
        );
    }
    let quota = isolation::quota_check(
        &pool.spec.template,
        pool.spec.reset.strategy,
        &pool.spec.isolation,
    )
    .expect("the sample sets a quota");
    assert!(quota.sufficient, "{}", quota.message);
}
