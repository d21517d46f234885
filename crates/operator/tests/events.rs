//! Events the operator publishes reach the API server even when their note is long: the
//! server refuses notes over 1 024 bytes (as the development control plane does too), so a
//! long setup failure output must not cost the Warning event.

mod common;

use cks_operator::context::{Context, NOTE_LIMIT};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;

use common::NS;

#[tokio::test]
async fn a_note_over_the_limit_is_cut_and_the_event_published() {
    let (_server, client) = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "target"}})).unwrap();
    let cm = cms.create(&PostParams::default(), &cm).await.unwrap();
    let ctx = Context::test(client.clone());
    ctx.event(&cm, EventType::Warning, "SetupFailed", "Setup", "é".repeat(1500))
        .await;
    let event = common::warning_event(&client, "SetupFailed", "target").await;
    let message = event.message.unwrap();
    assert!(message.len() <= NOTE_LIMIT, "{} bytes", message.len());
    assert!(message.starts_with("éé") && message.ends_with('…'), "{message}");
}

#[tokio::test]
async fn a_failed_reconcile_is_counted_and_reported_as_a_warning_event_with_its_category() {
    let (_server, client) = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "failing"}})).unwrap();
    let cm = cms.create(&PostParams::default(), &cm).await.unwrap();
    let ctx = Context::test(client.clone());
    let error = cks_operator::Error::SshKey {
        namespace: NS.into(),
        name: "key".into(),
        reason: format!("missing {}", "x".repeat(2000)),
    };
    cks_operator::controller::report(&ctx, "clusterpool", &cm, &error).await;
    let event = common::warning_event(&client, "SshKeyMissing", "failing").await;
    let message = event.message.unwrap();
    assert!(message.len() <= NOTE_LIMIT, "{} bytes", message.len());
    assert!(message.starts_with("SSH key secret"), "{message}");
    let errors = ctx
        .metrics
        .reconcile_errors
        .get_or_create(&cks_operator::metrics::ErrorLabels {
            controller: "clusterpool".into(),
            reason: "SshKeyMissing".into(),
        })
        .get();
    assert_eq!(errors, 1);
}
