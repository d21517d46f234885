//! The one error type of the API. Every failure renders as `{"error": CODE, "message": text}`:
//! `error` is a stable machine code, `message` a sentence a person can act on (the reference
//! frontend shows `message` for status codes outside its fixed list). Internal details
//! (Kubernetes API errors, file paths) are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, for example `SESSION_NOT_FOUND`.
    pub code: &'static str,
    /// What happened and what to do, for people.
    pub message: String,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

/// The error shape as documented in `/openapi.json` (the same fields as what is sent).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, for example `SESSION_NOT_FOUND`.
    pub error: String,
    /// What happened and what to do, for people.
    pub message: String,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request cannot be understood.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no identity could be established.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 403: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    /// 404 with a specific code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: well-formed but invalid input.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 429 with a retry hint.
    pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", message)
        }
    }

    /// 503: the gateway or what it depends on is not ready; retry later.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(2),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// A failed Kubernetes API call, mapped to what the client can do about it. `what`
    /// names the action for the log ("create Session alice-1").
    pub fn from_kube(what: &str, e: &kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if s.code == 404 => {
                Self::not_found("NOT_FOUND", "The object no longer exists; reload and try again.")
            }
            kube::Error::Api(s) if s.code == 409 => Self::conflict(
                "CONFLICT",
                "The object was changed by someone else at the same time; try again.",
            ),
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
                tracing::info!(action = what, error = %e, "the API server refused a write");
                // The API server's validation message names the field and the rule; it
                // carries no internal detail worth hiding.
                Self::invalid("INVALID", format!("The request was refused: {}", s.message))
            }
            _ => {
                tracing::warn!(action = what, error = %e, "Kubernetes API call failed");
                Self::unavailable(
                    "BACKEND_UNAVAILABLE",
                    "The cluster's API did not answer; try again in a few seconds.",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// 404 for paths no route matches, in the API's error shape.
pub async fn unknown_route() -> ApiError {
    ApiError::not_found("ROUTE_NOT_FOUND", "No such API route; see docs/gateway.md.")
}

/// 405 for a known path with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "This route does not accept that method; see docs/gateway.md.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util_free::body_json;

    // Minimal body collection without extra dependencies.
    mod http_body_util_free {
        pub async fn body_json(r: axum::response::Response) -> serde_json::Value {
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    #[tokio::test]
    async fn errors_render_code_and_message_only() {
        let r = ApiError::conflict("SESSION_LIMIT", "End your other session first.").into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE].to_str().unwrap(),
            "application/json"
        );
        assert_eq!(
            body_json(r).await,
            serde_json::json!({"error": "SESSION_LIMIT", "message": "End your other session first."})
        );
    }

    #[tokio::test]
    async fn rate_limits_and_unavailability_carry_retry_after() {
        let r = ApiError::rate_limited("slow down", 7).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let r = ApiError::unavailable("NOT_READY", "starting").into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn kube_errors_map_to_actionable_statuses_without_internals() {
        let e = ApiError::from_kube("x", &api_error(404, "sessions \"a\" not found"));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = ApiError::from_kube("x", &api_error(409, "conflict"));
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e = ApiError::from_kube("x", &api_error(422, "spec.durationMinutes: must be <= 1440"));
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("durationMinutes"));
        let e = ApiError::from_kube("x", &api_error(500, "etcd: leader changed at 10.0.0.3"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("10.0.0.3"), "{}", e.message);
    }
}
