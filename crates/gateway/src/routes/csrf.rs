//! Refusal of cross-site state-changing requests (CSRF). Where the browser sends credentials
//! by itself (`proxy` mode behind a login proxy's cookie, `dev` mode on loopback), a page on
//! another site could otherwise post a form (no preflight, so CORS does not stop it) to an
//! admin route and have it run as the signed-in admin.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::errors::ApiError;

/// The origins, besides the gateway's own, whose requests may change state: the configured
/// CORS origins (`*` for any).
#[derive(Debug, Clone)]
pub struct AllowedOrigins(Arc<[String]>);

impl AllowedOrigins {
    /// From `--cors-origins`.
    pub fn new(origins: &[String]) -> Self {
        Self(
            origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

/// True when a request that may change state comes from another site: an `Origin` that is
/// neither the gateway's own (the `Host` the browser used) nor allowed, or, without `Origin`,
/// `Sec-Fetch-Site: cross-site`. Requests without either header (curl, other servers) pass.
fn is_cross_site(method: &Method, headers: &HeaderMap, allowed: &AllowedOrigins) -> bool {
    if method.is_safe() {
        return false;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        // An origin that is not text (or `null`, from sandboxed frames) is nobody's own.
        let Ok(origin) = origin.to_str() else {
            return true;
        };
        let origin = origin.trim();
        return !(is_own(origin, headers) || allowed.allows(origin));
    }
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// The origin is the one the request was sent to: its host (and port) are the `Host` header.
/// The scheme is not compared, as TLS usually ends at a proxy in front.
fn is_own(origin: &str, headers: &HeaderMap) -> bool {
    let Some(authority) = origin.split_once("://").map(|(_, a)| a) else {
        return false;
    };
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| host.trim().eq_ignore_ascii_case(authority))
}

/// Middleware: 403 `CROSS_SITE` for cross-site requests that may change state.
pub async fn refuse_cross_site(
    State(allowed): State<AllowedOrigins>,
    request: Request,
    next: Next,
) -> Response {
    if is_cross_site(request.method(), request.headers(), &allowed) {
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "CROSS_SITE",
            "Requests that change something are not accepted from another site's page; use this site or an origin in --cors-origins.",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use tower::ServiceExt as _;

    async fn status(allowed: &[&str], method: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
        let allowed = AllowedOrigins::new(&allowed.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let app = Router::new()
            // Any path and method (a fallback, as the route lists are only for documented
            // handlers).
            .fallback(|| async { "done" })
            .layer(axum::middleware::from_fn_with_state(allowed, refuse_cross_site));
        let mut request = Request::builder()
            .method(method)
            .uri("/api/v1/admin/release-all-clusters")
            .header("host", "gateway.example:8081");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = app
            .oneshot(request.body(Body::empty()).expect("a request"))
            .await
            .expect("an answer");
        let code = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        let error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        (code, error)
    }

    const FRONTEND: &str = "http://localhost:3000";

    #[tokio::test]
    async fn cross_site_posts_are_refused_in_the_error_shape() {
        let refused = (403, Some("CROSS_SITE".to_owned()));
        for headers in [
            &[("origin", "https://evil.example")][..],
            &[("origin", "null")],
            &[("sec-fetch-site", "cross-site")],
            &[("origin", "http://gateway.example:8082")],
        ] {
            assert_eq!(status(&[FRONTEND], "POST", headers).await, refused, "{headers:?}");
        }
        for method in ["PUT", "DELETE", "PATCH"] {
            let h = [("origin", "https://evil.example")];
            assert_eq!(
                status(&[], method, &h).await.1.as_deref(),
                Some("CROSS_SITE"),
                "{method}"
            );
        }
    }

    #[tokio::test]
    async fn own_origin_allowed_origins_and_plain_clients_pass() {
        for (allowed, headers) in [
            // curl, other servers: no Origin, no Sec-Fetch-Site.
            (&[][..], &[][..]),
            (
                &[],
                &[
                    ("origin", "https://gateway.example:8081"),
                    ("sec-fetch-site", "same-origin"),
                ],
            ),
            (&[], &[("sec-fetch-site", "same-site")]),
            // The reference frontend on another origin, configured in --cors-origins.
            (
                &[FRONTEND],
                &[("origin", FRONTEND), ("sec-fetch-site", "cross-site")],
            ),
            (&["http://LOCALHOST:3000/"], &[("origin", FRONTEND)]),
            (&["*"], &[("origin", "https://anywhere.example")]),
        ] {
            assert_eq!(
                status(allowed, "POST", headers).await,
                (200, None),
                "{allowed:?} {headers:?}"
            );
        }
        // Reading is never refused: it changes nothing, and CORS keeps the answer from the page.
        let h = [
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(status(&[], "GET", &h).await.0, 200);
    }
}
