//! The one runner every controller of the operator runs on, so they cannot drift apart: one
//! error policy, one set of reconcile metrics, one span per reconcile and one place where a
//! failed reconcile becomes a Warning event.
//!
//! # Using it
//!
//! A controller builds its [`kube::runtime::Controller`] (watches, `owns`, mappers), and hands
//! it to a [`Runner`] with its name and its shared state:
//!
//! ```ignore
//! Runner::new(CONTROLLER, ctx)               // ctx: Arc<S>, S: AsRef<Context>
//!     .on_gone(|obj| forget_series(obj))     // optional: the object no longer exists
//!     .run(controller, shutdown, reconcile)  // reconcile: Fn(Arc<K>, Arc<S>) -> Future<Result<Action>>
//!     .await;
//! ```
//!
//! The runner then, for every reconcile:
//! - opens an `info` span `reconcile{controller, name, namespace}` around it;
//! - counts it in `cks_operator_reconciles_total{controller}` and measures it in
//!   `cks_operator_reconcile_duration_seconds{controller}` with a drop guard, so a reconcile
//!   that errors, panics or is cancelled is measured too;
//! - on `Ok`, forgets the object's failures (its backoff starts again from the base);
//! - on `Err`, counts `cks_operator_reconcile_errors_total{controller, reason}` (reason
//!   [`Error::category`]), logs it, and publishes a Warning event on the object with that
//!   reason and the error as note (cut to the API server's 1 024 bytes by [`Context::event`]).
//!   [`Error::InvalidObject`] is the exception: [`Context::accept`] already published its
//!   event where the object was refused;
//! - then requeues by kind of error: [`Error::needs_spec_change`] waits for a change of the
//!   object, anything else retries after [`ErrorBackoff`]'s delay for that object
//!   (exponential, with jitter, capped at five minutes).
//!
//! The reconcile function itself therefore counts nothing, opens no span and publishes no
//! event for its own failure; it returns `Err` and the runner does the rest. Graceful
//! shutdown: once `shutdown` resolves no new reconcile starts and [`Runner::run`] returns
//! when the running ones have finished.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info_span, warn};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Shortest first retry delay, whatever `retry_base` the configuration sets.
const MIN_RETRY_BASE: Duration = Duration::from_millis(200);

/// Longest delay between two retries of a failing object.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// A controller of `api`'s objects, built as `Controller::new` builds one, except that its
/// cache keeps no `metadata.managedFields`: nothing here reads them, and on a real API server
/// they are a large part of every object written by several field managers (parsed, each
/// is a tree of small maps).
pub fn lean_controller<K>(api: Api<K>, config: watcher::Config) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let objects = reflector(writer, watcher(api, config).modify(without_managed_fields)).applied_objects();
    Controller::for_stream(objects, reader)
}

/// Drops an object's `metadata.managedFields` before it is cached (see [`lean_controller`]).
pub fn without_managed_fields<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// Consecutive failed reconciles per object, so transient errors are retried after an
/// exponentially growing, jittered delay. In memory only: after a restart retries start from
/// the base delay again, which is harmless.
///
/// The `n`-th consecutive failure of an object waits a random delay in `[d/2, d)` where
/// `d = min(base · 2ⁿ⁻¹, max)` ("equal jitter"): objects that failed together (an API server
/// that was away) do not all come back at the same instant, and until the cap the delay never
/// shrinks from one failure to the next.
#[derive(Debug)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
    base: Duration,
    max: Duration,
    /// A number in `[0, 1)`; random except in tests.
    jitter: fn() -> f64,
}

impl ErrorBackoff {
    /// Delays from `base` doubling up to `max`, jittered at random.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            failures: Mutex::default(),
            base,
            max: max.max(base),
            jitter: fastrand::f64,
        }
    }

    /// The same with a chosen jitter source (`[0, 1)`), for tests.
    #[must_use]
    pub fn with_jitter(mut self, jitter: fn() -> f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The upper bound `d` of the delay after `n` consecutive failures (`n ≥ 1`).
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(31);
        self.base.saturating_mul(2u32.saturating_pow(exp)).min(self.max)
    }

    /// Records one more failure of `key` and returns the delay before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let n = {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let n = failures.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let ceiling = self.ceiling(n);
        let r = (self.jitter)().clamp(0.0, 1.0);
        ceiling.mul_f64(0.5 + r / 2.0).min(ceiling)
    }

    /// Forgets the failures of `key` (a successful reconcile, or the object is gone).
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// Number of objects with failures on record.
    pub fn failing(&self) -> usize {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// `namespace/name` of an object: the key of its failures.
fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Observes the duration of one reconcile when dropped, so an error, a panic or a cancelled
/// reconcile is measured like a finished one.
struct Measure {
    metrics: Arc<Metrics>,
    controller: &'static str,
    start: Instant,
}

impl Drop for Measure {
    fn drop(&mut self) {
        self.metrics
            .observe_reconcile(self.controller, self.start.elapsed().as_secs_f64());
    }
}

/// What gets reported when the object a reconcile was queued for no longer exists.
type OnGone = Box<dyn Fn(&ObjectRef<DynamicObject>) + Send>;

/// Runs one controller with the shared error policy, metrics, spans and events (see the
/// module documentation).
pub struct Runner<S> {
    name: &'static str,
    state: Arc<S>,
    on_gone: Option<OnGone>,
}

impl<S> std::fmt::Debug for Runner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S> Runner<S>
where
    S: AsRef<Context> + Send + Sync + 'static,
{
    /// A runner for the controller `name` (its label in metrics, spans and logs) whose
    /// reconciles share `state`; the [`Context`] the state holds gives the client, events,
    /// metrics and the retry base.
    pub fn new(name: &'static str, state: Arc<S>) -> Self {
        Self {
            name,
            state,
            on_gone: None,
        }
    }

    /// Calls `f` when a reconcile was due for an object that no longer exists (after its
    /// deletion, a requeue or a watched child can still name it): the place to drop what is
    /// kept per object outside the API, such as labelled metric series.
    #[must_use]
    pub fn on_gone(mut self, f: impl Fn(&ObjectRef<DynamicObject>) + Send + 'static) -> Self {
        self.on_gone = Some(Box::new(f));
        self
    }

    /// Runs `controller` with `reconcile` until `shutdown` resolves and the running
    /// reconciles have finished.
    pub async fn run<K, F, Fut>(
        self,
        controller: Controller<K>,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
        reconcile: F,
    ) where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        F: Fn(Arc<K>, Arc<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action>> + Send + 'static,
    {
        let Self { name, state, on_gone } = self;
        let base = state.as_ref().as_ref().config.retry_base.max(MIN_RETRY_BASE);
        let backoff = Arc::new(ErrorBackoff::new(base, MAX_RETRY_DELAY));
        let reconcile = Arc::new(reconcile);
        let (on_ok, on_error, on_result) = (backoff.clone(), backoff.clone(), backoff);
        controller
            .graceful_shutdown_on(shutdown)
            .run(
                move |obj: Arc<K>, state: Arc<S>| {
                    let (reconcile, backoff) = (reconcile.clone(), on_ok.clone());
                    async move { run_one(name, obj, state, reconcile.as_ref(), &backoff).await }
                },
                move |obj, error, _state| {
                    if error.needs_spec_change() {
                        Action::await_change()
                    } else {
                        Action::requeue(on_error.failed(&key_of(obj.as_ref())))
                    }
                },
                state,
            )
            .for_each(move |result| {
                match result {
                    Err(controller::Error::ObjectNotFound(gone)) => {
                        on_result.succeeded(&format!(
                            "{}/{}",
                            gone.namespace.as_deref().unwrap_or_default(),
                            gone.name
                        ));
                        if let Some(f) = &on_gone {
                            f(&gone);
                        }
                    }
                    // Reconcile errors were reported where they happened.
                    Err(controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                    Err(e) => debug!(controller = name, error = %e, "controller event"),
                }
                std::future::ready(())
            })
            .await;
    }
}

/// One reconcile with its span, metrics, backoff bookkeeping and error report.
async fn run_one<K, S, F, Fut>(
    name: &'static str,
    obj: Arc<K>,
    state: Arc<S>,
    reconcile: &F,
    backoff: &ErrorBackoff,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    S: AsRef<Context>,
    F: Fn(Arc<K>, Arc<S>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let ctx: &Context = (*state).as_ref();
    let span = info_span!(
        "reconcile",
        controller = name,
        name = %obj.name_any(),
        namespace = %obj.namespace().unwrap_or_default(),
    );
    ctx.metrics.reconciled(name);
    let measure = Measure {
        metrics: ctx.metrics.clone(),
        controller: name,
        start: Instant::now(),
    };
    let result = reconcile(obj.clone(), state.clone())
        .instrument(span.clone())
        .await;
    // The reconcile's own time; reporting its failure is not part of it.
    drop(measure);
    match &result {
        Ok(_) => backoff.succeeded(&key_of(obj.as_ref())),
        Err(error) => report(ctx, name, obj.as_ref(), error).instrument(span).await,
    }
    result
}

/// The one place a failed reconcile is reported: metric, log and Warning event.
pub async fn report<K: Resource<DynamicType = ()>>(ctx: &Context, controller: &str, obj: &K, error: &Error) {
    let reason = error.category();
    ctx.metrics.reconcile_failed(controller, reason);
    warn!(error = %error, reason, "reconcile failed");
    if !matches!(error, Error::InvalidObject { .. }) {
        ctx.event(obj, EventType::Warning, reason, "Reconcile", error.to_string())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn cached_objects_keep_their_metadata_but_not_managed_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        use kube::core::DeserializeGuard;
        let entry = ManagedFieldsEntry {
            manager: Some("cks-operator/session".into()),
            ..ManagedFieldsEntry::default()
        };
        let mut session: DeserializeGuard<cks_api::Session> = serde_json::from_value(serde_json::json!({
            "apiVersion": "cks.io/v1alpha1", "kind": "Session",
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"scenario": "x", "user": "u", "pool": "p", "durationMinutes": 60},
        }))
        .unwrap();
        session.managed_fields_mut().push(entry.clone());
        without_managed_fields(&mut session);
        assert!(session.managed_fields().is_empty());
        assert_eq!(session.resource_version().as_deref(), Some("7"));
        // An object that does not deserialize is cached by its metadata alone: stripped too.
        let mut broken: DeserializeGuard<cks_api::Session> = serde_json::from_value(serde_json::json!({
            "apiVersion": "cks.io/v1alpha1", "kind": "Session",
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {"scenario": 5},
        }))
        .unwrap();
        assert!(broken.0.is_err());
        broken.managed_fields_mut().push(entry);
        without_managed_fields(&mut broken);
        assert!(broken.managed_fields().is_empty());
        assert_eq!(broken.name_any(), "b");
    }

    #[test]
    fn delays_double_per_consecutive_failure_up_to_the_cap() {
        // Jitter at its top: the delay is (just under) the ceiling.
        let top = ErrorBackoff::new(Duration::from_secs(1), Duration::from_secs(300)).with_jitter(|| 1.0);
        let delays: Vec<f64> = (0..4).map(|_| secs(top.failed("a"))).collect();
        assert_eq!(delays, [1.0, 2.0, 4.0, 8.0]);
        for _ in 0..60 {
            top.failed("a");
        }
        assert_eq!(secs(top.failed("a")), 300.0, "capped");
        // Jitter at its bottom: half the ceiling.
        let bottom = ErrorBackoff::new(Duration::from_secs(1), Duration::from_secs(300)).with_jitter(|| 0.0);
        let delays: Vec<f64> = (0..4).map(|_| secs(bottom.failed("a"))).collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0]);
    }

    #[test]
    fn jittered_delays_stay_within_half_and_whole_ceiling_and_grow_until_the_cap() {
        let backoff = ErrorBackoff::new(Duration::from_millis(200), Duration::from_secs(300));
        let mut seen = std::collections::HashSet::new();
        for round in 0..200 {
            let key = format!("k{round}");
            let mut previous = Duration::ZERO;
            for n in 1..=15 {
                let delay = backoff.failed(&key);
                let ceiling = backoff.ceiling(n);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "failure {n}: {delay:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
                if ceiling == backoff.ceiling(n - 1) * 2 {
                    assert!(delay >= previous, "failure {n}: {delay:?} < {previous:?}");
                }
                previous = delay;
                if n == 1 {
                    seen.insert(delay);
                }
            }
        }
        assert!(seen.len() > 1, "the first delays are spread, not all {seen:?}");
    }

    #[test]
    fn failures_are_counted_per_object_and_forgotten_on_success() {
        let backoff = ErrorBackoff::new(Duration::from_secs(1), Duration::from_secs(300)).with_jitter(|| 1.0);
        for _ in 0..3 {
            backoff.failed("ns/a");
        }
        assert_eq!(secs(backoff.failed("ns/a")), 8.0);
        assert_eq!(
            secs(backoff.failed("ns/b")),
            1.0,
            "another object starts at the base"
        );
        backoff.succeeded("ns/a");
        assert_eq!(secs(backoff.failed("ns/a")), 1.0, "reset by a success");
        assert_eq!(
            secs(backoff.failed("ns/b")),
            2.0,
            "untouched by another's success"
        );
        backoff.succeeded("ns/a");
        backoff.succeeded("ns/b");
        assert_eq!(backoff.failing(), 0);
    }

    #[test]
    fn a_ceiling_below_the_base_is_raised_to_it() {
        let backoff = ErrorBackoff::new(Duration::from_secs(10), Duration::from_secs(1)).with_jitter(|| 1.0);
        assert_eq!(secs(backoff.failed("a")), 10.0);
        assert_eq!(secs(backoff.failed("a")), 10.0);
    }
}

#[cfg(test)]
mod shutdown_tests {
    use std::convert::Infallible;

    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    use super::*;

    /// Why `runtime::run` gives its controllers only a grace to stop: a kube controller told
    /// to stop before its store was first filled holds the work it was sent until the store
    /// is ready, which it never will be (its watch is stopped too), so a graceful shutdown
    /// never ends. If this fails after a kube upgrade, the library has changed.
    #[tokio::test]
    async fn a_controller_stopped_before_its_store_fills_never_finishes() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let object = ConfigMap {
            metadata: kube::core::ObjectMeta {
                name: Some("a".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        // A watch that listed part of a page: an object, but no InitDone.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(object.clone()));
        let events =
            futures::stream::iter([Ok::<_, watcher::Error>(object)]).chain(futures::stream::pending());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = Controller::for_stream(events, store)
            .graceful_shutdown_on(async move {
                let _ = stop_rx.await;
            })
            .run(
                |_, _: Arc<()>| async { Ok::<_, Infallible>(Action::await_change()) },
                |_, _, _| Action::await_change(),
                Arc::new(()),
            )
            .for_each(|_| std::future::ready(()));
        let mut run = Box::pin(run);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut run)
                .await
                .is_err(),
            "nothing to stop it yet"
        );
        stop_tx.send(()).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(2), &mut run)
                .await
                .is_err(),
            "told to stop, it still waits for its store"
        );
        // Once the store fills, the held work runs and the controller stops.
        writer.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("stops once its store is ready");
    }
}
