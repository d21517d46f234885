//! The samples `make run` applies must work with the shipped catalog: a sample Session that
//! names a missing scenario would fail at once with `ScenarioNotFound`.

use std::path::PathBuf;

use cks_api::{Session, ValidationRun};
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
