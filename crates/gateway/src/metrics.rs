//! Prometheus metrics of the gateway: requests and their latency by route template (never by
//! raw path, so ids do not explode the label space), method and status.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, for example `/api/v1/sessions/{id}`; `unmatched` for unknown paths.
    pub route: String,
    /// HTTP method, one of [`method_label`]'s fixed set.
    pub method: &'static str,
    /// Response status code.
    pub status: u16,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to answer, in seconds.
    pub duration: Family<RequestLabels, Histogram>,
    /// Open Server-Sent Event streams.
    pub sse_clients: Gauge,
    /// Open terminals.
    pub terminals_open: Gauge,
    /// Terminals closed, by reason.
    pub terminals_closed: Family<crate::terminal::CloseLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            sse_clients: Gauge::default(),
            terminals_open: Gauge::default(),
            terminals_closed: Family::default(),
        }
    }
}

impl Metrics {
    /// A registry (prefix `cks_gateway`) holding these metrics.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("cks_gateway");
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            self.duration.clone(),
        );
        registry.register(
            "sse_clients",
            "Open Server-Sent Event streams",
            self.sse_clients.clone(),
        );
        registry.register("terminals_open", "Open terminals", self.terminals_open.clone());
        registry.register(
            "terminals_closed",
            "Terminals closed, by reason (session-ended, idle, expired, limit, shell-exited, unreachable, shutdown, client-closed)",
            self.terminals_closed.clone(),
        );
        registry
    }
}

/// Middleware recording every request.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard methods by name, any other token as `other`. hyper
/// accepts any token as a method and this layer runs before authentication, so raw methods
/// (`AAAA1`, `AAAA2`, ...) would let anyone create series without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`: the registry in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics, OpenMetrics text format",
        content_type = "application/openmetrics-text", body = String)))]
pub async fn serve(State(registry): State<Arc<Registry>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn unknown_methods_share_one_series() {
        let metrics = Arc::new(Metrics::default());
        let app = Router::new()
            .fallback(|| async { "ok" })
            .layer(axum::middleware::from_fn_with_state(metrics.clone(), record));
        for method in ["AAAA1", "AAAA2", "AAAA3", "GET"] {
            let request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).expect("a method token"))
                .uri("/")
                .body(Body::empty())
                .expect("a request");
            app.clone().oneshot(request).await.expect("an answer");
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).expect("encoding");
        assert!(!text.contains("AAAA"), "{text}");
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("cks_gateway_http_requests_total"))
            .collect();
        assert_eq!(
            series.len(),
            2,
            "one series for GET, one for all others: {series:?}"
        );
        assert!(
            series
                .iter()
                .any(|l| l.contains(r#"method="other""#) && l.ends_with(" 3")),
            "{series:?}"
        );
    }
}
