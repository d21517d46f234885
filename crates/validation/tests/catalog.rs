//! Every rule of the shipped scenario catalog evaluates: against an empty cluster and VMs that
//! print nothing, each rule yields a verdict (never an evaluation error), so nothing an author
//! wrote there is beyond the engine.

use std::path::Path;
use std::sync::Arc;

use cks_kubevirt::naming::VmId;
use cks_scenarios::{Catalog, ResourceRef};
use cks_validation::cluster::describe_unscoped;
use cks_validation::{
    Captured, ClusterApi, Engine, Error, ExecOutput, ExecRequest, ExitStatus, Found, TaskSelector, VmExec,
};
use futures::future::BoxFuture;

struct Empty;

impl ClusterApi for Empty {
    fn find<'a>(&'a self, r: &'a ResourceRef) -> BoxFuture<'a, Result<Found, Error>> {
        Box::pin(async move {
            Ok(Found {
                objects: Vec::new(),
                what: describe_unscoped(r),
            })
        })
    }
}

impl VmExec for Empty {
    fn exec<'a>(&'a self, _: VmId, _: ExecRequest) -> BoxFuture<'a, Result<ExecOutput, Error>> {
        Box::pin(async {
            Ok(ExecOutput {
                stdout: Captured::new(""),
                stderr: Captured::new(""),
                status: ExitStatus::Code(0),
            })
        })
    }
}

#[tokio::test]
async fn every_shipped_rule_evaluates_to_a_verdict() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let catalog = Catalog::load(&dir).expect("catalog loads");
    assert!(!catalog.is_empty(), "no scenarios in {}", dir.display());
    let engine = Engine::with_backends(Some(Arc::new(Empty)), Some(Arc::new(Empty)));
    let mut rules = 0;
    for scenario in catalog.list() {
        let report = engine.validate(scenario, TaskSelector::All).await.unwrap();
        let expected: usize = scenario.tasks.iter().map(|t| t.rules.len()).sum();
        assert_eq!(report.results.len(), expected, "{}", scenario.id());
        for r in &report.results {
            assert!(r.error.is_none(), "{}: {r:#?}", scenario.id());
            assert!(
                r.expected.is_some() && r.actual.is_some(),
                "{}: {r:#?}",
                scenario.id()
            );
        }
        rules += report.results.len();
    }
    assert!(rules > 0);
}
