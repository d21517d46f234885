//! The HTTP routes: the router, its middleware (CORS, cross-site refusal, body limit, readiness,
//! metrics) and the request-body extractor. Handlers live in one module per area: `scenarios`,
//! `sessions`, `events` (Server-Sent Events), `admin`, `admin_events` (the console's stream),
//! `login` (identity and the web page's sign-in). Paths no route matches go to the web page
//! when `--web-dir` is set (`crate::web`).

mod admin;
mod admin_events;
mod csrf;
mod events;
mod login;
mod scenarios;
mod sessions;
mod terminals;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::errors::{self, ApiError, ErrorBody};
use crate::metrics::{self, Metrics};
use crate::state::AppState;
use crate::views::HealthView;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Shared state of the API routes.
pub type Shared = Arc<AppState>;

/// The API routes under `/api/v1`. Every route is registered here through `routes!`, which
/// takes its method, path and documentation from the handler's `#[utoipa::path]`: a route
/// cannot be served without appearing in `/openapi.json` (a test checks that nothing is
/// registered any other way).
fn api_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(scenarios::list))
        .routes(routes!(scenarios::categories))
        .routes(routes!(scenarios::reload))
        .routes(routes!(scenarios::get_one))
        .routes(routes!(sessions::list, sessions::create))
        .routes(routes!(sessions::get_one, sessions::delete))
        .routes(routes!(sessions::extend))
        .routes(routes!(events::session_events))
        .routes(routes!(terminals::open))
        .routes(routes!(sessions::validate))
        .routes(routes!(sessions::list_runs))
        .routes(routes!(sessions::get_run))
        .routes(routes!(admin::clusters))
        .routes(routes!(admin::sessions))
        .routes(routes!(admin::end_session))
        .routes(routes!(admin::release_all))
        .routes(routes!(admin::reset_cluster))
        .routes(routes!(admin::recreate_cluster))
        .routes(routes!(admin::bootstrap_cluster))
        .routes(routes!(admin::destroy_cluster))
        .routes(routes!(admin::bootstrap_pool))
        .routes(routes!(admin::destroy_pool))
        .routes(routes!(admin::create_snapshots))
        .routes(routes!(admin_events::admin_events))
        .routes(routes!(login::me))
        .routes(routes!(login::login))
        .routes(routes!(login::logout))
}

/// The terminal page, its script and its WebSocket (outside `/api/v1`: their URLs are
/// handed to browsers and iframes).
fn terminal_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(terminals::page))
        .routes(routes!(terminals::socket))
        .routes(routes!(terminals::fallback_script))
}

/// Routes outside `/api/v1` that answer before the caches are synced.
fn operation_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
}

fn metrics_routes() -> OpenApiRouter<Arc<Registry>> {
    OpenApiRouter::new().routes(routes!(metrics::serve))
}

/// The OpenAPI 3.1 document of everything [`router`] serves, built from the same route lists.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = api_routes().split_for_parts();
    let (_, ops) = operation_routes().split_for_parts();
    let (_, terminals) = terminal_routes().split_for_parts();
    let (_, metrics) = metrics_routes().split_for_parts();
    let mut doc = crate::openapi::ApiDoc::openapi()
        .nest("/api/v1", api)
        .merge_from(terminals)
        .merge_from(ops)
        .merge_from(metrics);
    crate::openapi::complete_responses(&mut doc);
    doc
}

/// The whole HTTP surface: `/api/v1/...`, `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
pub fn router(
    state: Shared,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    cors_origins: &[String],
) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let api = api
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_synced))
        .with_state(state.clone());
    let (terminals, _) = terminal_routes().split_for_parts();
    let terminals = terminals
        .layer(middleware::from_fn_with_state(state.clone(), require_synced))
        .with_state(state.clone());
    let (operations, _) = operation_routes().split_for_parts();
    let (metrics_route, _) = metrics_routes().split_for_parts();

    let max_body = state.settings.max_body_bytes;
    let app = Router::new()
        .nest("/api/v1", api)
        .merge(terminals)
        .merge(operations.with_state(state.clone()))
        .merge(metrics_route.with_state(registry));
    // The web page answers what no route matches (it keeps the JSON 404 under /api/).
    let app = match &state.settings.web_dir {
        Some(dir) => app.fallback_service(crate::web::service(dir.clone())),
        None => app.fallback(errors::unknown_route),
    };
    let mut app = app
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            csrf::AllowedOrigins::new(cors_origins),
            csrf::refuse_cross_site,
        ))
        .layer(middleware::from_fn_with_state(metrics, metrics::record));
    if let Some(cors) = cors_layer(cors_origins) {
        // Outermost, so preflights of any path and every answer (errors included) get it.
        app = app.layer(cors);
    }
    app
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, body = HealthView)))]
async fn healthz() -> axum::Json<HealthView> {
    axum::Json(HealthView {
        status: "ok".to_owned(),
    })
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| openapi().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// CORS for the configured origins; `None` (same-origin only) when none are configured.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::AUTHORIZATION,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::LOCATION, header::RETRY_AFTER])
            .max_age(Duration::from_secs(12 * 3600)),
    )
}

/// `GET /readyz`: 200 once the caches hold the cluster state, 503 before.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, body = HealthView), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<Shared>) -> Response {
    if state.caches.is_ready() {
        axum::Json(HealthView {
            status: "ready".to_owned(),
        })
        .into_response()
    } else {
        not_synced().into_response()
    }
}

fn not_synced() -> ApiError {
    ApiError::unavailable(
        "NOT_READY",
        "The gateway is starting and has not read the cluster state yet; try again in a moment.",
    )
}

/// 503 on API routes until the caches have their first full lists: answers from half-filled
/// caches would say "not found" for things that exist.
async fn require_synced(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if state.caches.is_ready() {
        next.run(request).await
    } else {
        not_synced().into_response()
    }
}

/// A JSON request body in the API's error shape: an empty body counts as `{}`, malformed
/// JSON is 400, a body of the wrong shape 422, an oversized one 413. The content type is not
/// checked (the reference frontend sends JSON with `Content-Type: application/json`; curl
/// users often forget it).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "The request body is too large for this API.",
                )
            } else {
                ApiError::bad_request("BAD_BODY", "The request body could not be read.")
            }
        })?;
        parse_body(&bytes).map(Body)
    }
}

/// A query string in the API's error shape: one that does not fit the call (`all=maybe`, a
/// parameter given twice) is 400 `BAD_QUERY` with JSON, not axum's plain-text rejection.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                ApiError::bad_request(
                    "BAD_QUERY",
                    format!("The query string does not fit this call ({}).", e.body_text()),
                )
            })
    }
}

/// Path parameters in the API's error shape: a segment that is not UTF-8 once decoded is 400
/// `BAD_PATH` with JSON, not axum's plain-text rejection.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| {
                ApiError::bad_request(
                    "BAD_PATH",
                    format!("The URL path does not fit this call ({}).", e.body_text()),
                )
            })
    }
}

/// Parses a request body (see [`Body`]).
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(
            "INVALID_BODY",
            format!("The request body does not fit this call: {e}."),
        ),
        _ => ApiError::bad_request(
            "MALFORMED_JSON",
            format!("The request body is not valid JSON ({e}); send a JSON object."),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Create {
        scenario_id: String,
    }

    #[derive(Debug, serde::Deserialize, PartialEq, Default)]
    struct Extend {
        minutes: Option<i64>,
    }

    #[test]
    fn bodies_map_to_400_422_or_parse() {
        let e = parse_body::<Create>(b"{\"scenarioId\": ").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "MALFORMED_JSON"));
        let e = parse_body::<Create>(b"[1,2]").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "INVALID_BODY"));
        let e = parse_body::<Create>(b"{\"scenarioId\": 5}").unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert_eq!(parse_body::<Extend>(b"").unwrap(), Extend { minutes: None });
        assert_eq!(parse_body::<Extend>(b" \n").unwrap(), Extend { minutes: None });
        assert_eq!(
            parse_body::<Create>(b"{\"scenarioId\":\"x\",\"extra\":1}").unwrap(),
            Create {
                scenario_id: "x".into()
            }
        );
    }

    #[test]
    fn no_configured_origin_means_no_cors_layer() {
        assert!(cors_layer(&[]).is_none());
        assert!(cors_layer(&[" ".into()]).is_none());
        assert!(cors_layer(&["*".into()]).is_some());
        assert!(cors_layer(&["https://cks.example".into()]).is_some());
    }
}
