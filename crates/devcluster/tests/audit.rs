//! The audit log: requests recorded with the caller's identity and the attributes RBAC sees;
//! tokens of `Options::identities` accepted as their users, unknown tokens refused.

use std::collections::BTreeMap;

use cks_devcluster::{DevCluster, Options};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;

async fn client_with_token(cluster: &DevCluster, token: &str) -> Client {
    let mut kubeconfig = cluster.kubeconfig().clone();
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(token.to_owned().into());
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn requests_are_recorded_under_the_callers_identity() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let cluster = DevCluster::start(Options {
        identities: BTreeMap::from([(
            "op-token".to_owned(),
            "system:serviceaccount:cks-lab:cks-lab-operator".to_owned(),
        )]),
        audit_log: Some(log.clone()),
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = cluster.client().await.unwrap();
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "team"}})).unwrap();
    Api::<Namespace>::all(admin)
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let op = client_with_token(&cluster, "op-token").await;
    let cms: Api<ConfigMap> = Api::namespaced(op.clone(), "team");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.get("c").await.unwrap();
    cms.list(&ListParams::default()).await.unwrap();
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    // A server-side apply that creates is authorized as a create too; one that updates is not.
    let applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}});
    for _ in 0..2 {
        cms.patch("d", &PatchParams::apply("test"), &Patch::Apply(&applied))
            .await
            .unwrap();
    }

    let stranger = client_with_token(&cluster, "not-a-token").await;
    let refused = Api::<ConfigMap>::namespaced(stranger, "team")
        .get("c")
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 401),
        "{refused}"
    );

    let recs = records(&log);
    let by = |user: &str| -> Vec<(String, String, String)> {
        recs.iter()
            .filter(|r| r["user"] == user && r["resource"] != "")
            .map(|r| {
                (
                    r["verb"].as_str().unwrap().to_owned(),
                    r["resource"].as_str().unwrap().to_owned(),
                    r["namespace"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        by("admin"),
        vec![("create".into(), "namespaces".into(), String::new())]
    );
    let op_user = "system:serviceaccount:cks-lab:cks-lab-operator";
    let verbs: Vec<String> = by(op_user)
        .into_iter()
        .map(|(v, r, ns)| format!("{v} {r} {ns}"))
        .collect();
    assert_eq!(
        verbs,
        [
            "create configmaps team",
            "get configmaps team",
            "list configmaps team",
            "delete configmaps team",
            "patch configmaps team",
            "create configmaps team",
            "patch configmaps team",
        ]
    );
    let codes: Vec<u64> = recs
        .iter()
        .filter(|r| r["user"] == op_user && r["resource"] == "configmaps")
        .map(|r| r["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [201, 200, 200, 200, 201, 201, 200]);
    // A refused request is not recorded as anyone's.
    assert!(recs.iter().all(|r| r["user"] == "admin" || r["user"] == op_user));
    cluster.shutdown().await;
}
