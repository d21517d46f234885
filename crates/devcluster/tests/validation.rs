//! Built-in objects are validated as the real API server validates them: quantities that are
//! not quantities (400, the decoder's message) or negative (422), and events.k8s.io Events
//! whose note is over 1 024 bytes.

mod common;

use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim, ResourceQuota};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn parse<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object")
}

fn refusal<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

const QUANTITY_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[tokio::test]
async fn malformed_and_negative_quantities_in_quotas_and_claims_are_refused() {
    let cluster = common::start().await;
    let client = cluster.client().await.expect("client");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    let quota = |memory: &str| {
        parse::<ResourceQuota>(
            json!({"metadata": {"name": "q"}, "spec": {"hard": {"memory": memory, "pods": "10"}}}),
        )
    };

    let (code, message) = refusal(quotas.create(&PostParams::default(), &quota("lots")).await);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        format!("ResourceQuota in version \"v1\" cannot be handled as a ResourceQuota: {QUANTITY_ERROR}")
    );
    let (code, message) = refusal(quotas.create(&PostParams::default(), &quota("-5Gi")).await);
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "ResourceQuota \"q\" is invalid: spec.hard[memory]: Invalid value: \"-5Gi\": must be greater than or equal to 0"
    );
    quotas
        .create(&PostParams::default(), &quota("5Gi"))
        .await
        .expect("a valid quota");
    // Updates are checked too: a patch and a server-side apply.
    let (code, _) = refusal(
        quotas
            .patch(
                "q",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hard": {"cpu": "-1"}}})),
            )
            .await,
    );
    assert_eq!(code, 422);
    let apply = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
        "spec": {"hard": {"memory": "plenty"}}});
    let (code, _) = refusal(
        quotas
            .patch("q", &PatchParams::apply("test").force(), &Patch::Apply(apply))
            .await,
    );
    assert_eq!(code, 400);
    assert_eq!(
        quotas.get("q").await.unwrap().spec.unwrap().hard.unwrap()["memory"].0,
        "5Gi"
    );

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let claim = |storage: &str| {
        parse::<PersistentVolumeClaim>(json!({"metadata": {"name": "c"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}}))
    };
    let (code, message) = refusal(claims.create(&PostParams::default(), &claim("10 GB")).await);
    assert_eq!(code, 400);
    assert!(
        message.starts_with("PersistentVolumeClaim in version \"v1\" cannot be handled"),
        "{message}"
    );
    let (code, message) = refusal(claims.create(&PostParams::default(), &claim("-1Gi")).await);
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.resources.requests[storage]: Invalid value: \"-1Gi\""),
        "{message}"
    );
    claims
        .create(&PostParams::default(), &claim("10Gi"))
        .await
        .expect("a valid claim");
}

#[tokio::test]
async fn events_api_refuses_a_note_over_1024_bytes_and_core_events_keep_long_messages() {
    let cluster = common::start().await;
    let client = cluster.client().await.expect("client");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event = |name: &str, note: String| {
        parse::<Event>(json!({"metadata": {"name": name},
            "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Warning", "reason": "Failed",
            "action": "Reconcile", "reportingController": "test", "reportingInstance": "test-1",
            "regarding": {"kind": "Pod", "namespace": "default", "name": "p"}, "note": note}))
    };
    // Bytes count, not characters: 513 two-byte characters are 1 026 bytes.
    let (code, message) = refusal(
        events
            .create(&PostParams::default(), &event("long", "é".repeat(513)))
            .await,
    );
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "Event.events.k8s.io \"long\" is invalid: note: Invalid value: \"\": can have at most 1024 characters"
    );
    events
        .create(&PostParams::default(), &event("fits", "x".repeat(1024)))
        .await
        .expect("a note of 1 024 bytes");
    let (code, _) = refusal(
        events
            .patch(
                "fits",
                &PatchParams::default(),
                &Patch::Merge(json!({"note": "y".repeat(1025)})),
            )
            .await,
    );
    assert_eq!(code, 422);

    // core/v1 keeps its legacy rules: no limit on `message`.
    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let long = parse::<CoreEvent>(json!({"metadata": {"name": "legacy"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"},
        "reason": "Failed", "message": "z".repeat(4000), "type": "Warning"}));
    core.create(&PostParams::default(), &long)
        .await
        .expect("core/v1 Event with a long message");
}
