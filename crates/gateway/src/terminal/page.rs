//! The terminal page a terminal URL opens. The web page build provides a full one
//! (`terminal.html` in the web directory); without it a minimal page of our own is served so
//! terminals work on any build. The URL holds the capability, so the page is never cached and
//! never sent on as a `Referer`.

use std::path::Path;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The minimal page's script (served at `/terminal-fallback.js`).
pub const FALLBACK_SCRIPT: &str = include_str!("fallback.js");
const FALLBACK_PAGE: &str = include_str!("fallback.html");
const GONE_PAGE: &str = "<!doctype html><meta charset=utf-8><title>Terminal link expired</title>\
<body style=\"font-family:sans-serif;background:#111;color:#eee;padding:2em\">\
<h1>This terminal link has expired</h1><p>Open the terminal again from the lab page.</p>";

/// The page for a terminal URL: 410 when `valid` is false, else the web build's
/// `terminal.html` under `web_dir` or the minimal page. `frame_ancestors` is the CSP list of
/// who may embed it (the reference frontend shows terminals in iframes).
pub fn page_response(valid: bool, web_dir: Option<&Path>, frame_ancestors: &str) -> Response {
    let (status, body) = if valid {
        let built = web_dir.and_then(|d| std::fs::read_to_string(d.join("terminal.html")).ok());
        (StatusCode::OK, built.unwrap_or_else(|| FALLBACK_PAGE.to_owned()))
    } else {
        (StatusCode::GONE, GONE_PAGE.to_owned())
    };
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; \
         img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors {frame_ancestors}"
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}
