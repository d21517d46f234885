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

/// Labels of the reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `clusterpool` or `practicecluster`.
    pub controller: String,
}

/// Labels of the reconcile error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `clusterpool` or `practicecluster`.
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
    /// Failed provisioning or reset steps (each retried or ending in Failed), by reason.
    pub step_failures: Family<FailureLabels, Counter>,
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
            step_failures: Family::default(),
        }
    }
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
            "step_failures",
            "Failed provisioning or reset steps, by phase and reason",
            self.step_failures.clone(),
        );
    }

    /// A registry with the `cks_operator` prefix holding these metrics.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("cks_operator");
        self.register(&mut registry);
        registry
    }

    /// Counts a reconcile of `controller`.
    pub fn reconciled(&self, controller: &str) {
        self.reconciles
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .inc();
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
