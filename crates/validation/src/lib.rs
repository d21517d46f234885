//! `cks-validation`: evaluates a scenario's validation rules against a practice cluster and
//! returns one result per rule (passed, message, expected, actual, duration, and whether the
//! rule could not be evaluated at all).
//!
//! Resource rules read the practice cluster's API ([`cluster`]); command, script and file rules
//! run on its VMs over SSH ([`ssh`]); conditions are judged by pure code (`condition`). Both
//! executors sit behind traits ([`ClusterApi`], [`VmExec`]) so tests can substitute fakes.
//!
//! ```no_run
//! # async fn demo(scenario: &cks_scenarios::Scenario, client: kube::Client, key: &str)
//! # -> Result<(), cks_validation::Error> {
//! use cks_kubevirt::naming::VmId;
//! use cks_validation::{Endpoint, Engine, SshConfig, TargetResolver, TaskSelector};
//!
//! let targets = TargetResolver::new()
//!     .with(VmId::ControlPlane, Endpoint::new("lab-x7k2p-cp", "10.0.0.12", 22))
//!     .with(VmId::Worker(1), Endpoint::new("lab-x7k2p-w1", "10.0.0.13", 22));
//! let engine = Engine::new(targets, Some(client), SshConfig::from_openssh("root", key)?);
//! let report = engine.validate(scenario, TaskSelector::One("01".into())).await?;
//! println!("{:?}: {} of {} rules passed", report.phase(), report.passed_count(), report.results.len());
//! # Ok(())
//! # }
//! ```
//!
//! Semantics for authors (whitespace, multi-value selections, exit codes) are in
//! `docs/validation.md`.

pub mod cluster;
mod condition;
mod engine;
mod error;
mod output;
pub mod ssh;

pub use cks_ssh::PortForward;
pub use cluster::{ClusterApi, Found, KubeCluster};
pub use engine::{Engine, EngineOptions, RESULT_ACTUAL_LIMIT, RuleOutcome, TaskSelector, ValidationReport};
pub use error::Error;
pub use output::{Captured, DEFAULT_OUTPUT_LIMIT};
pub use ssh::{
    Direct, Endpoint, ExecOutput, ExecRequest, ExitStatus, HostKeyPair, SshConfig, SshExecutor, SshStream,
    TargetResolver, Transport, VmExec, generate_host_key, script_request,
};
