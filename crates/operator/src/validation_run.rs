//! The ValidationRun controller (being built).

use std::future::Future;
use std::sync::Arc;

use crate::context::Context;

/// Name of this controller in events and metrics.
pub const CONTROLLER: &str = "validationrun";

/// Runs the ValidationRun controller until `stop` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let _ = (ctx, namespace);
    stop.await;
}
