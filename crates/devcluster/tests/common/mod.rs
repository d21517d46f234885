//! Shared helpers for the integration tests: start a fresh server, wait on conditions.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use cks_devcluster::{DevCluster, Options};

/// A fresh server on a free loopback port.
pub async fn start() -> DevCluster {
    start_with(Options::default()).await
}

pub async fn start_with(opts: Options) -> DevCluster {
    DevCluster::start(opts).await.expect("devcluster starts")
}

/// Poll `check` until it returns `Some`, failing the test after a generous deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
