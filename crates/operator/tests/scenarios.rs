//! Every shipped scenario on the KubeVirt simulator, as `make run` serves them: the real pool,
//! cluster, Session and ValidationRun controllers, the scenarios of `scenarios/`, one Session
//! per scenario. Each scenario's setup must succeed on the simulated VMs (SSH, `sudo`, the
//! golden image's files and tools, the practice API) and a validation of all its tasks must
//! end Passed or Failed — never Error because the VM lacks something a rule needs.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cks_api::ClusterPool;
use cks_api::session::{Session, SessionPhase};
use cks_api::validation_run::{ValidationRun, ValidationRunPhase};
use cks_operator::context::Context;
use cks_operator::session::reasons;
use cks_scenarios::{CatalogStore, LoadOptions};
use kube::api::{Api, PostParams};
use serde_json::json;

use common::NS;
use common::vrun_fixtures::create_run;

/// Polls `check` until it returns `Some`; the deadline covers setups that wait minutes.
async fn within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The message of a failed setup (ScenarioReady False, reason SetupFailed).
fn setup_failure(s: &Session) -> Option<String> {
    let c = s
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "ScenarioReady")?;
    (c.reason == reasons::SETUP_FAILED).then(|| c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_scenario_sets_up_and_validates_on_the_simulator() {
    let (_server, client) = common::sim::start(&[], None).await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let store = CatalogStore::open(&dir, LoadOptions::default()).expect("shipped catalog");
    let ids: Vec<String> = store.catalog().list().map(|s| s.id().to_string()).collect();
    assert_eq!(ids.len(), 17, "{ids:?}");
    let n = i32::try_from(ids.len()).unwrap();
    Api::<ClusterPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &common::pool("sim", n, n, n))
        .await
        .unwrap();
    let ctx = Arc::new(Context {
        scenarios: Some(store.clone()),
        ..common::sim::context(&client)
    });
    tokio::spawn(cks_operator::session::run(
        ctx.clone(),
        Some(NS),
        std::future::pending(),
    ));
    tokio::spawn(cks_operator::validation_run::run(
        ctx,
        Some(NS),
        std::future::pending(),
    ));

    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    for (i, id) in ids.iter().enumerate() {
        let s: Session = serde_json::from_value(json!({
            "apiVersion": "cks.io/v1alpha1", "kind": "Session",
            "metadata": {"name": format!("s{i}"), "namespace": NS},
            "spec": {"scenario": id, "user": format!("student-{i}"), "pool": "sim", "durationMinutes": 60},
        }))
        .unwrap();
        sessions.create(&PostParams::default(), &s).await.unwrap();
    }

    // Setup: Ready, or ScenarioReady False with the failing step's output.
    let outcome: BTreeMap<String, Result<(), String>> = within(
        "every scenario's setup to finish",
        Duration::from_secs(600),
        || async {
            let mut done = BTreeMap::new();
            for (i, id) in ids.iter().enumerate() {
                let s = sessions.get(&format!("s{i}")).await.ok()?;
                let phase = s.status.as_ref().map(|st| st.phase).unwrap_or_default();
                if phase == SessionPhase::Ready {
                    done.insert(id.clone(), Ok(()));
                } else if let Some(message) = setup_failure(&s) {
                    done.insert(id.clone(), Err(message));
                } else {
                    return None;
                }
            }
            Some(done)
        },
    )
    .await;
    let failed: Vec<String> = outcome
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|m| format!("{id}: {m}")))
        .collect();
    assert!(
        failed.is_empty(),
        "setup failed on the simulator:\n{}",
        failed.join("\n\n")
    );

    // Validation of every task: Passed or Failed, never Error.
    for i in 0..ids.len() {
        create_run(&client, &format!("v{i}"), &format!("s{i}"), "").await;
    }
    let runs: Api<ValidationRun> = Api::namespaced(client.clone(), NS);
    let mut errors = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let run = within(
            &format!("validation of {id}"),
            Duration::from_secs(300),
            || async {
                let run = runs.get_opt(&format!("v{i}")).await.ok()??;
                run.status.as_ref()?.phase.is_finished().then_some(run)
            },
        )
        .await;
        let status = run.status.unwrap();
        if status.phase == ValidationRunPhase::Error {
            let rules: Vec<String> = status
                .results
                .iter()
                .filter(|r| r.error)
                .map(|r| format!("{}/{}: {}", r.task, r.id, r.message))
                .collect();
            errors.push(format!(
                "{id}: {:?} {}",
                status.conditions.last().map(|c| &c.message),
                rules.join("; ")
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "validation ended in Error:\n{}",
        errors.join("\n")
    );
}
