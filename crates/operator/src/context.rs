//! What a controller's reconciles share: the client, an event recorder, metrics, settings and
//! the practice-cluster probe. One per controller.

use std::sync::Arc;

use cks_scenarios::CatalogStore;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use crate::config::ControllerConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::probe::{AlwaysReady, ClusterProbe, KubeProbe};

/// Longest `note` of an `events.k8s.io/v1` Event the API server accepts, in bytes.
pub const NOTE_LIMIT: usize = 1024;

/// `note` cut to [`NOTE_LIMIT`] bytes at a character boundary, ending in `…` when cut.
pub fn cut_note(mut note: String) -> String {
    if note.len() <= NOTE_LIMIT {
        return note;
    }
    let mut end = NOTE_LIMIT - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

/// Shared state of one controller's reconciles.
#[derive(Clone)]
pub struct Context {
    /// Client of the host cluster.
    pub client: Client,
    /// Publishes Kubernetes Events on the reconciled objects.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: Arc<ControllerConfig>,
    /// Checks practice clusters' readiness through their own API.
    pub probe: Arc<dyn ClusterProbe>,
    /// The scenario catalog (Sessions and ValidationRuns); `None` refuses every Session.
    pub scenarios: Option<Arc<CatalogStore>>,
    /// Configuration of the host cluster's client, so the port-forward SSH transport can
    /// build a client with TCP_NODELAY (kube-rs clients wait on delayed ACKs); `None` uses
    /// `client` as it is.
    pub host_config: Option<Arc<kube::Config>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
}

impl Context {
    /// A context for `controller`, publishing events as `cks-operator` from `instance`.
    pub fn new(
        client: Client,
        controller: &str,
        instance: &str,
        metrics: Arc<Metrics>,
        config: Arc<ControllerConfig>,
    ) -> Self {
        let reporter = Reporter {
            controller: format!("cks-operator/{controller}"),
            instance: Some(instance.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            config,
            probe: Arc::new(KubeProbe),
            scenarios: None,
            host_config: None,
        }
    }

    /// A context for tests: short delays and a probe that finds every cluster ready.
    pub fn test(client: Client) -> Self {
        Self {
            probe: Arc::new(AlwaysReady),
            ..Self::new(
                client,
                "test",
                "test",
                Arc::new(Metrics::default()),
                Arc::new(ControllerConfig::test()),
            )
        }
    }

    /// Publishes an event on `obj`; failures are logged, never fatal. The note is cut to the
    /// API server's limit of 1 024 bytes (a longer one is refused, and the event lost).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(cut_note(note)),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "publishing an event failed");
        }
    }

    /// The object behind a watch's `DeserializeGuard`. One that did not deserialize gets a
    /// Warning event and an `InvalidObject` error (which waits for a change), so one malformed
    /// object never stalls the controller.
    pub async fn accept<'a, K>(&self, guard: &'a DeserializeGuard<K>, kind: &'static str) -> Result<&'a K>
    where
        DeserializeGuard<K>: Resource<DynamicType = ()>,
    {
        match &guard.0 {
            Ok(object) => Ok(object),
            Err(invalid) => {
                let err = Error::InvalidObject {
                    kind,
                    name: format!("{}/{}", guard.namespace().unwrap_or_default(), guard.name_any()),
                    message: invalid.error.clone(),
                };
                self.event(
                    guard,
                    EventType::Warning,
                    "InvalidObject",
                    "Reconcile",
                    err.to_string(),
                )
                .await;
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_within_the_limit_is_kept_whole() {
        let note = "x".repeat(NOTE_LIMIT);
        assert_eq!(cut_note(note.clone()), note);
        assert_eq!(cut_note(String::new()), "");
    }

    #[test]
    fn a_longer_note_is_cut_to_the_limit_with_an_ellipsis() {
        let cut = cut_note("x".repeat(NOTE_LIMIT + 1));
        assert_eq!(cut.len(), NOTE_LIMIT);
        assert_eq!(cut, format!("{}…", "x".repeat(NOTE_LIMIT - '…'.len_utf8())));
    }

    #[test]
    fn a_note_is_cut_on_a_character_boundary() {
        // Characters of 2, 3 and 4 bytes, so the limit falls inside one whatever the offset.
        for unit in ["é", "€", "😀", "aé€😀"] {
            for lead in 0..4 {
                let note = format!("{}{}", "a".repeat(lead), unit.repeat(NOTE_LIMIT));
                let cut = cut_note(note.clone());
                assert!(cut.len() <= NOTE_LIMIT, "{unit}/{lead}: {} bytes", cut.len());
                assert!(
                    cut.len() > NOTE_LIMIT - 4 - '…'.len_utf8(),
                    "{unit}/{lead}: cut too much"
                );
                let kept = cut.strip_suffix('…').expect("ends in an ellipsis");
                assert!(
                    note.starts_with(kept),
                    "{unit}/{lead}: the kept part is the note's start"
                );
            }
        }
    }
}
