//! Core serving: TLS + token auth, kubeconfig, health, version, discovery, independent servers.

mod common;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::discovery::{Discovery, Scope};
use serde_json::json;

#[tokio::test]
async fn kubeconfig_file_works_with_kube_rs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let cluster = common::start_with(cks_devcluster::Options {
        kubeconfig: Some(path.clone()),
        ..Default::default()
    })
    .await;
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "33");
    cluster.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized_but_health_is_public() {
    let cluster = common::start().await;
    let kc = cluster.kubeconfig().clone();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.auth_info.token = None;
    let anon = kube::Client::try_from(config).unwrap();
    let err = Api::<ConfigMap>::default_namespaced(anon.clone())
        .list(&Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 401),
        other => panic!("expected 401, got {other}"),
    }
    for path in ["/healthz", "/readyz", "/livez"] {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        assert_eq!(anon.request_text(req).await.unwrap(), "ok");
    }
}

#[tokio::test]
async fn discovery_lists_builtins_with_short_names_categories_and_subresources() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut seen = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            seen.push(format!("{}/{}", ar.group, ar.plural));
            if ar.plural == "namespaces" {
                assert_eq!(caps.scope, Scope::Cluster);
            }
            if ar.plural == "pods" {
                assert!(
                    caps.subresources.iter().any(|(s, _)| s.plural == "status"),
                    "pods/status missing"
                );
            }
        }
    }
    for want in [
        "/namespaces",
        "/secrets",
        "/configmaps",
        "/services",
        "/serviceaccounts",
        "/events",
        "events.k8s.io/events",
        "/resourcequotas",
        "/limitranges",
        "networking.k8s.io/networkpolicies",
        "coordination.k8s.io/leases",
        "/pods",
        "/nodes",
        "/persistentvolumeclaims",
        "apps/deployments",
        "rbac.authorization.k8s.io/roles",
        "rbac.authorization.k8s.io/rolebindings",
        "rbac.authorization.k8s.io/clusterroles",
        "rbac.authorization.k8s.io/clusterrolebindings",
        "apiextensions.k8s.io/customresourcedefinitions",
    ] {
        assert!(
            seen.iter().any(|s| s == want),
            "{want} not discovered in {seen:?}"
        );
    }
    let raw: serde_json::Value = serde_json::from_str(
        &client
            .request_text(http::Request::get("/api/v1").body(Vec::new()).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    let pods = raw["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));
}

#[tokio::test]
async fn servers_in_one_process_are_independent() {
    let a = common::start().await;
    let b = common::start().await;
    assert_ne!(a.addr(), b.addr());
    let ca = a.client().await.unwrap();
    let cb = b.client().await.unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "only-in-a"}})).unwrap();
    Api::<ConfigMap>::default_namespaced(ca.clone())
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    assert!(
        Api::<ConfigMap>::default_namespaced(cb.clone())
            .get_opt("only-in-a")
            .await
            .unwrap()
            .is_none()
    );
    // Another server's client is rejected: each has its own CA and token.
    let mut cross = a.kubeconfig().clone();
    cross.auth_infos = b.kubeconfig().auth_infos.clone();
    let cfg = kube::Config::from_custom_kubeconfig(cross, &Default::default())
        .await
        .unwrap();
    let err = kube::Client::try_from(cfg).unwrap().apiserver_version().await;
    assert!(err.is_ok(), "/version is public");
    b.shutdown().await;
    assert!(
        Api::<ConfigMap>::default_namespaced(ca)
            .get_opt("only-in-a")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        cb.apiserver_version().await.is_err(),
        "a stopped server no longer answers"
    );
}

#[tokio::test]
async fn openapi_v3_publishes_builtin_schemas() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let text = client
                .request_text(http::Request::get(path).body(Vec::new()).unwrap())
                .await
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        }
    };
    let index = get("/openapi/v3".into()).await;
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = get(url).await;
    let deployment = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"][0]["kind"],
        "Deployment"
    );
    let spec = &doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"];
    assert!(
        spec["properties"]["replicas"]["description"]
            .as_str()
            .unwrap()
            .contains("desired pods")
    );
}
