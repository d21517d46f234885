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

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn rbac_is_enforced_for_identities_but_not_for_the_admin() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let user = "system:serviceaccount:cks-lab:op";
    let cluster = DevCluster::start(Options {
        identities: BTreeMap::from([("op-token".to_owned(), user.to_owned())]),
        enforce_rbac: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = cluster.client().await.unwrap();
    for ns in ["team", "other"] {
        let ns: Namespace = from_json(serde_json::json!({"metadata": {"name": ns}}));
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let roles: Api<Role> = Api::namespaced(admin.clone(), "team");
    let role = |verbs: &[&str]| -> Role {
        from_json(serde_json::json!({"metadata": {"name": "cm"}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["mine"]},
        ]}))
    };
    roles
        .create(&PostParams::default(), &role(&["get", "list"]))
        .await
        .unwrap();
    let binding: RoleBinding = from_json(serde_json::json!({"metadata": {"name": "cm"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "cks-lab"}]}));
    Api::<RoleBinding>::namespaced(admin.clone(), "team")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let op = client_with_token(&cluster, "op-token").await;
    let forbidden = |e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 403 => s.message,
        other => panic!("expected 403, got {other}"),
    };
    // Discovery is everyone's.
    op.list_api_groups().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(op.clone(), "team");
    cms.list(&ListParams::default()).await.unwrap();
    let cm: ConfigMap = from_json(serde_json::json!({"metadata": {"name": "c"}}));
    let msg = forbidden(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(
        msg,
        "configmaps is forbidden: User \"system:serviceaccount:cks-lab:op\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );
    // The Role is bound in `team` only.
    forbidden(
        Api::<ConfigMap>::namespaced(op.clone(), "other")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    // A server-side apply that would create needs `create` as well as `patch`.
    let applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    roles
        .replace("cm", &PostParams::default(), &role(&["get", "list", "patch"]))
        .await
        .unwrap();
    let msg = forbidden(
        cms.patch("c", &PatchParams::apply("op"), &Patch::Apply(&applied))
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("cannot create resource"), "{msg}");
    // A merge patch cannot create: of a missing object it is a 404, as kube-apiserver answers
    // (the operator removing a finalizer from a Session another replica just let go of).
    let missing = cms
        .patch(
            "gone",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": []}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404),
        "{missing}"
    );
    roles
        .replace(
            "cm",
            &PostParams::default(),
            &role(&["get", "list", "patch", "create"]),
        )
        .await
        .unwrap();
    cms.patch("c", &PatchParams::apply("op"), &Patch::Apply(&applied))
        .await
        .unwrap();
    // resourceNames: only the named Secret.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(op.clone(), "team");
    let msg = forbidden(secrets.get("theirs").await.unwrap_err());
    assert!(msg.contains("secrets \"theirs\" is forbidden"), "{msg}");
    let not_found = secrets.get("mine").await.unwrap_err();
    assert!(
        matches!(&not_found, kube::Error::Api(s) if s.code == 404),
        "{not_found}"
    );
    // The server's own token is never checked.
    Api::<ConfigMap>::namespaced(admin, "other")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    cluster.shutdown().await;
}
