//! Prometheus metrics of the operator, in one registry with the `cks_operator` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the per-phase cluster gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Namespace of the pool.
    pub namespace: String,
    /// ClusterPool name.
    pub pool: String,
    /// PracticeCluster phase.
    pub phase: String,
}

/// Labels of the reconcile counters and durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `clusterpool`, `practicecluster`, `session` or `validationrun`.
    pub controller: String,
}

/// Labels of the reconcile error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `clusterpool`, `practicecluster`, `session` or `validationrun`.
    pub controller: String,
    /// [`crate::Error::category`].
    pub reason: String,
}

/// Labels of the step failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Phase the step belonged to.
    pub phase: String,
    /// Failure reason (`CloneFailed`, `Timeout`, ...).
    pub reason: String,
}

/// Labels of the session outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// Phase the session reached: `Ready`, `Expired`, `Ended` or `Failed`.
    pub phase: String,
    /// Reason of that phase (`ScenarioNotFound`, `UserLimitReached`, ...), empty if none.
    pub reason: String,
}

/// Labels of the per-rule validation histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// Rule type: `resource_exists`, `command`, ...
    pub rule_type: String,
}

/// Labels of the validation run counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// Final phase: `Passed`, `Failed` or `Error`.
    pub phase: String,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    /// PracticeClusters per pool and phase.
    pub clusters: Family<PhaseLabels, Gauge>,
    /// Seconds from PracticeCluster creation to first Available.
    pub provision_duration: Histogram,
    /// Seconds of a reset, from release to Available.
    pub reset_duration: Histogram,
    /// Reconciles run.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles that failed, by reason.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Seconds one reconcile took, by controller (failed ones included).
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Failed provisioning or reset steps (each retried or ending in Failed), by reason.
    pub step_failures: Family<FailureLabels, Counter>,
    /// Seconds from a Session's creation to its cluster being claimed (queueing included).
    pub allocation_duration: Histogram,
    /// Seconds a Session's scenario setup steps took, until ScenarioReady.
    pub setup_duration: Histogram,
    /// Sessions that reached Ready or a terminal phase, by phase and reason.
    pub sessions: Family<SessionLabels, Counter>,
    /// Sessions waiting for a cluster (all pools), as of the last session reconcile.
    pub sessions_waiting: Gauge,
    /// Seconds one validation rule took, by rule type.
    pub rule_duration: Family<RuleLabels, Histogram>,
    /// Seconds a whole ValidationRun took.
    pub validation_duration: Histogram,
    /// Finished ValidationRuns by phase.
    pub validation_runs: Family<RunLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        // Provisioning takes minutes on real hardware and milliseconds on the simulator.
        let buckets = [
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
        ];
        Self {
            clusters: Family::default(),
            provision_duration: Histogram::new(buckets),
            reset_duration: Histogram::new(buckets),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            step_failures: Family::default(),
            // Allocation is one API write on a warm pool, minutes when queued.
            allocation_duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
            ]),
            setup_duration: Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
            sessions: Family::default(),
            sessions_waiting: Gauge::default(),
            rule_duration: Family::new_with_constructor(rule_histogram),
            validation_duration: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            validation_runs: Family::default(),
        }
    }
}

fn reconcile_histogram() -> Histogram {
    // Most reconciles take milliseconds; the top buckets are there so that one stuck on a
    // slow API or practice cluster shows up rather than disappearing in +Inf.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ])
}

fn rule_histogram() -> Histogram {
    // Resource rules take milliseconds, SSH rules up to their timeout.
    Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0])
}

impl Metrics {
    /// Registers every metric in `registry` (already prefixed by the caller).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "practice_clusters",
            "PracticeClusters per pool and phase",
            self.clusters.clone(),
        );
        registry.register(
            "provision_duration_seconds",
            "Seconds from PracticeCluster creation to first Available",
            self.provision_duration.clone(),
        );
        registry.register(
            "reset_duration_seconds",
            "Seconds from a cluster's release to Available again",
            self.reset_duration.clone(),
        );
        registry.register("reconciles", "Reconciles run", self.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Seconds one reconcile took, by controller, failed ones included",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "step_failures",
            "Failed provisioning or reset steps, by phase and reason",
            self.step_failures.clone(),
        );
        self.register_sessions(registry);
    }

    /// Registers the session and validation metrics.
    fn register_sessions(&self, registry: &mut Registry) {
        registry.register(
            "allocation_duration_seconds",
            "Seconds from a Session's creation to its cluster being claimed",
            self.allocation_duration.clone(),
        );
        registry.register(
            "session_setup_duration_seconds",
            "Seconds a Session's scenario setup took",
            self.setup_duration.clone(),
        );
        registry.register(
            "sessions",
            "Sessions that reached Ready or a terminal phase, by phase and reason",
            self.sessions.clone(),
        );
        registry.register(
            "sessions_waiting",
            "Sessions waiting for a cluster",
            self.sessions_waiting.clone(),
        );
        registry.register(
            "validation_rule_duration_seconds",
            "Seconds one validation rule took, by rule type",
            self.rule_duration.clone(),
        );
        registry.register(
            "validation_duration_seconds",
            "Seconds a ValidationRun took",
            self.validation_duration.clone(),
        );
        registry.register(
            "validation_runs",
            "Finished ValidationRuns by phase",
            self.validation_runs.clone(),
        );
    }

    /// A registry with the `cks_operator` prefix holding these metrics.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("cks_operator");
        self.register(&mut registry);
        registry
    }

    /// Sets the per-phase cluster gauges of pool `namespace/pool` from `counts`.
    pub fn set_pool_clusters(&self, namespace: &str, pool: &str, counts: &[(String, usize)]) {
        for (phase, n) in counts {
            self.clusters
                .get_or_create(&PhaseLabels {
                    namespace: namespace.to_owned(),
                    pool: pool.to_owned(),
                    phase: phase.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Removes every series of a deleted pool, so `/metrics` does not report its clusters
    /// forever. `phases` are the phase labels the pool's series were created with.
    pub fn forget_pool<'a>(&self, namespace: &str, pool: &str, phases: impl IntoIterator<Item = &'a str>) {
        for phase in phases {
            self.clusters.remove(&PhaseLabels {
                namespace: namespace.to_owned(),
                pool: pool.to_owned(),
                phase: phase.to_owned(),
            });
        }
    }

    /// Counts a reconcile of `controller`.
    pub fn reconciled(&self, controller: &str) {
        self.reconciles
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .inc();
    }

    /// Records that a reconcile of `controller` took `seconds`.
    pub fn observe_reconcile(&self, controller: &str, seconds: f64) {
        self.reconcile_duration
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts a failed reconcile of `controller`.
    pub fn reconcile_failed(&self, controller: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn exposition_names_every_metric_with_the_prefix() {
        let metrics = Metrics::default();
        metrics.reconcile_failed("practicecluster", "Conflict");
        metrics.provision_duration.observe(42.0);
        metrics
            .clusters
            .get_or_create(&PhaseLabels {
                namespace: "cks".into(),
                pool: "p".into(),
                phase: "Available".into(),
            })
            .set(3);
        let mut out = String::new();
        encode(&mut out, &metrics.registry()).unwrap();
        assert!(
            out.contains(r#"cks_operator_practice_clusters{namespace="cks",pool="p",phase="Available"} 3"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"cks_operator_reconcile_errors_total{controller="practicecluster",reason="Conflict"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains("cks_operator_provision_duration_seconds_count 1"),
            "{out}"
        );
        assert!(
            out.contains("cks_operator_reset_duration_seconds_bucket"),
            "{out}"
        );
    }
}
