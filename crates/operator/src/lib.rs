//! The cks-lab operator: the ClusterPool, PracticeCluster, Session and ValidationRun
//! controllers, their metrics, health endpoints and leader election. `main.rs` only parses flags and calls
//! [`runtime::run`]. The controllers run on [`controller::Runner`] and write status through
//! [`status::apply`].

pub mod access;
pub mod cluster;
pub mod cluster_machine;
pub mod config;
pub mod context;
pub mod controller;
pub mod error;
pub mod http;
pub mod isolation;
pub mod lease;
pub mod metrics;
pub mod pool;
pub mod pool_plan;
pub mod probe;
pub mod runtime;
pub mod session;
pub mod status;
pub mod validation_run;

pub use error::{Error, Result};
