//! The web page (`web/`, built by `make web`) served from `--web-dir`: files as they are
//! (hashed assets cached for a year, the rest revalidated), `index.html` for every page path
//! (`/`, `/lab/<id>`, `/admin`, ...) so the app routes in the browser, never for `/api/...`.
//! Every answer carries a Content-Security-Policy without inline scripts and `nosniff`. The
//! build writes `.br` and `.gz` copies of its text files, sent to browsers that accept them.
//! Serving from a directory keeps `cargo build` and `cargo test` free of Node.js. The
//! terminal page (`terminal.html`) is served by the terminal routes (`terminal::page`).

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;
use tower_http::services::fs::ServeFileSystemResponseBody;
use tower_http::services::{ServeDir, ServeFile};

use crate::errors;

/// The page's policy: scripts, styles, frames and connections (fetch, EventSource, the
/// terminal WebSocket) from this origin only; no inline or injected script. Inline *styles*
/// stay allowed because xterm.js sizes its rows with a `<style>` element.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'self'";

/// `Cache-Control` of Vite's content-hashed files under `/assets/`: a new build has new names.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else (HTML, favicon) is revalidated, so a new build shows at the next load.
const REVALIDATE: &str = "no-cache";

/// The built page in `dir`.
#[derive(Debug, Clone)]
struct WebDir {
    dir: PathBuf,
}

/// The service answering every path no API route matched: `router.fallback_service(web::service(dir))`.
pub fn service(dir: PathBuf) -> Router {
    Router::new().fallback(serve).with_state(WebDir { dir })
}

/// True for paths the browser app routes itself (no file extension in the last segment).
fn is_page_path(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or_default();
    !last.contains('.')
}

async fn serve(State(web): State<WebDir>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    // The API keeps its JSON 404 for unknown routes; a page there would hide a client's bug.
    if path == "/api" || path.starts_with("/api/") {
        return errors::unknown_route().await.into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return errors::method_not_allowed().await.into_response();
    }
    let response = if is_page_path(&path) {
        file(&web.dir.join("index.html"), req).await
    } else {
        let served = ServeDir::new(&web.dir)
            .append_index_html_on_directories(false)
            .precompressed_br()
            .precompressed_gzip()
            .oneshot(req)
            .await;
        into_response(served)
    };
    if response.status() == StatusCode::NOT_FOUND {
        return errors::unknown_route().await.into_response();
    }
    let mut response = response;
    let cache = if path.starts_with("/assets/") && response.status().is_success() {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    secure(response.headers_mut(), CSP);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn file(path: &Path, req: Request) -> Response {
    let file = ServeFile::new(path).precompressed_br().precompressed_gzip();
    into_response(file.oneshot(req).await)
}

fn into_response(served: Result<http::Response<ServeFileSystemResponseBody>, Infallible>) -> Response {
    match served {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    }
}

fn secure(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// Checks at start-up that `dir` holds a built page, so a wrong path fails loudly instead of
/// answering 404 to every page.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    for page in ["index.html", "terminal.html"] {
        if !dir.join(page).is_file() {
            return Err(format!(
                "--web-dir {}: no {page} there; build the page with `make web` (it writes web/dist)",
                dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_build() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html><p>app</p>").unwrap();
        std::fs::write(dir.path().join("terminal.html"), "<!doctype html><p>terminal</p>").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/index-abc123.js"), "console.log(1)").unwrap();
        std::fs::write(dir.path().join("favicon.svg"), "<svg/>").unwrap();
        dir
    }

    async fn get(app: &Router, method: Method, path: &str) -> (StatusCode, HeaderMap, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn page_paths_get_the_app_and_files_are_served_as_they_are() {
        let dir = fake_build();
        let app = service(dir.path().to_owned());
        for path in ["/", "/lab/s0123456789abcd", "/admin", "/login"] {
            let (status, h, body) = get(&app, Method::GET, path).await;
            assert_eq!(status, 200, "{path}");
            assert!(body.contains("<p>app</p>"), "{path}: {body}");
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
            assert_eq!(h[header::CACHE_CONTROL], REVALIDATE, "{path}");
        }
        let (status, h, body) = get(&app, Method::GET, "/assets/index-abc123.js").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "console.log(1)"));
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().contains("javascript"));
        assert_eq!(h[header::CACHE_CONTROL], IMMUTABLE);
        let (status, h, _) = get(&app, Method::GET, "/favicon.svg").await;
        assert_eq!(status, 200);
        assert_eq!(h[header::CACHE_CONTROL], REVALIDATE);
        let (status, _, body) = get(&app, Method::HEAD, "/admin").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    }

    #[tokio::test]
    async fn the_build_s_compressed_copies_go_to_browsers_that_accept_them() {
        let dir = fake_build();
        std::fs::write(dir.path().join("assets/index-abc123.js.br"), "BROTLI").unwrap();
        std::fs::write(dir.path().join("index.html.gz"), "GZIP").unwrap();
        let app = service(dir.path().to_owned());
        let get_with = |path: &'static str, accept: &'static str| {
            let app = app.clone();
            async move {
                let req = Request::builder()
                    .uri(path)
                    .header(header::ACCEPT_ENCODING, accept)
                    .body(Body::empty())
                    .unwrap();
                let r = app.oneshot(req).await.unwrap();
                let enc = r
                    .headers()
                    .get(header::CONTENT_ENCODING)
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
                (enc, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (enc, body) = get_with("/assets/index-abc123.js", "gzip, br").await;
        assert_eq!((enc.as_deref(), body.as_str()), (Some("br"), "BROTLI"));
        let (enc, body) = get_with("/assets/index-abc123.js", "identity").await;
        assert_eq!((enc, body.as_str()), (None, "console.log(1)"));
        let (enc, body) = get_with("/lab/s1", "gzip").await;
        assert_eq!((enc.as_deref(), body.as_str()), (Some("gzip"), "GZIP"));
    }

    #[tokio::test]
    async fn api_paths_and_missing_files_keep_the_json_404() {
        let dir = fake_build();
        let app = service(dir.path().to_owned());
        for path in [
            "/api",
            "/api/v1/nope",
            "/api/v2/sessions",
            "/assets/gone-123.js",
            "/robots.txt",
        ] {
            let (status, h, body) = get(&app, Method::GET, path).await;
            assert_eq!(status, 404, "{path}");
            assert!(body.contains("ROUTE_NOT_FOUND"), "{path}: {body}");
            assert_eq!(h[header::CONTENT_TYPE], "application/json", "{path}");
        }
        let (status, _, body) = get(&app, Method::POST, "/admin").await;
        assert_eq!(status, 405);
        assert!(body.contains("METHOD_NOT_ALLOWED"));
    }

    #[tokio::test]
    async fn files_outside_the_directory_are_not_reachable() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::write(parent.path().join("secret.txt"), "secret").unwrap();
        let build = parent.path().join("dist");
        std::fs::create_dir(&build).unwrap();
        std::fs::write(build.join("index.html"), "app").unwrap();
        let app = service(build);
        for path in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/assets/..%2f..%2fsecret.txt",
        ] {
            let (_, _, body) = get(&app, Method::GET, path).await;
            assert!(!body.contains("secret"), "{path}: {body}");
        }
    }

    #[tokio::test]
    async fn every_answer_forbids_inline_scripts_and_sniffing() {
        let dir = fake_build();
        let app = service(dir.path().to_owned());
        for path in ["/", "/assets/index-abc123.js", "/favicon.svg"] {
            let (_, h, _) = get(&app, Method::GET, path).await;
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            let script = csp
                .split(';')
                .map(str::trim)
                .find(|d| d.starts_with("script-src"))
                .unwrap();
            assert_eq!(script, "script-src 'self'", "{path}");
            assert!(csp.contains("frame-ancestors 'self'"), "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        }
    }

    #[test]
    fn a_directory_without_a_build_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_dir(dir.path()).unwrap_err();
        assert!(e.contains("make web"), "{e}");
        check_dir(fake_build().path()).unwrap();
    }
}
