//! Terminal routes: `POST /api/v1/sessions/{id}/terminals` mints a terminal URL, `GET
//! /terminal/{capability}` serves its page and `GET /terminal/{capability}/ws` its
//! WebSocket (see `crate::terminal`). The page and the socket need no cookie or header: the
//! capability in the path is the credential, so the reference frontend's iframes work.

use axum::Json;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cks_api::session::SessionPhase;
use cks_kubevirt::naming::VmId;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::sessions::visible_session;
use super::{Body, Path, Shared};
use crate::auth::Identity;
use crate::errors::{ApiError, ApiResult, ErrorBody};
use crate::terminal::{self, Claims, bridge};

/// Body of `POST /sessions/{id}/terminals`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenTerminal {
    /// VM: `control-plane`, `worker-1` … (`worker` and `worker-node` are worker 1).
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 63)]
    pub target: String,
}

/// A terminal URL.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TerminalView {
    /// Id of this terminal (logs, the page's title).
    pub terminal_id: String,
    /// Absolute URL of the terminal page; it can be opened until `expiresAt`.
    pub terminal_url: String,
    /// The VM, as the session's `terminals[].target` names it.
    pub target: String,
    /// Until when the URL opens a terminal (RFC 3339); an open terminal stays open past it.
    pub expires_at: String,
}

fn random_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t-{}", &id[..12])
}

/// `http(s)://host[:port]` browsers reach this gateway at: `--public-url`, else the request's
/// `Host` with `https` when a proxy says so in `X-Forwarded-Proto`. Headers only shape the
/// caller's own answer, so they need no trust.
fn base_url(configured: Option<&str>, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(url) = configured {
        return Ok(url.to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .filter(|a| !a.as_str().contains('@'))
        .ok_or_else(|| {
            ApiError::bad_request(
                "BAD_HOST",
                "The request has no usable Host header to build the terminal URL from (or set --public-url).",
            )
        })?;
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        });
    Ok(format!("{}://{host}", if https { "https" } else { "http" }))
}

/// `POST /sessions/{id}/terminals {target}`: a URL of a terminal page on that VM of the
/// session's cluster. (The reference answers with a terminal relay URL holding the VM's IP;
/// this one holds a signed, short-lived capability instead.)
#[utoipa::path(post, path = "/sessions/{id}/terminals", operation_id = "openTerminal", tag = "terminals",
    params(("id" = String, Path, description = "Session id")), request_body = OpenTerminal,
    responses((status = 200, body = TerminalView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn open(
    State(state): State<Shared>,
    who: Identity,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<OpenTerminal>,
) -> ApiResult<Json<TerminalView>> {
    let session = visible_session(&state, &who, &id)?;
    let status = session.status.clone().unwrap_or_default();
    let ending = session.metadata.deletion_timestamp.is_some();
    if ending || !matches!(status.phase, SessionPhase::Initializing | SessionPhase::Ready) {
        let why = if ending || status.phase.is_terminal() {
            "The session has ended; start a new one."
        } else {
            "The session has no cluster yet; open terminals once it is running."
        };
        return Err(ApiError::conflict("SESSION_NOT_RUNNING", why));
    }
    let invalid = || {
        ApiError::bad_request(
            "INVALID_TARGET",
            format!(
                "Invalid terminal target {:?}: this session's VMs are {}.",
                body.target,
                status
                    .terminals
                    .iter()
                    .map(|t| t.target.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    let vm = VmId::from_target(body.target.trim()).ok_or_else(invalid)?;
    let target = vm.target();
    if !status.terminals.iter().any(|t| t.target == target) {
        return Err(invalid());
    }
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(state.settings.terminal_url_ttl).unwrap_or_default())
        .unwrap_or(jiff::Timestamp::MAX);
    let claims = Claims {
        session: id.clone(),
        uid: session.uid().unwrap_or_default(),
        target: target.clone(),
        user: session.spec.user.clone(),
        terminal_id: random_id(),
        expires: expires.as_second(),
    };
    let token = state.terminals.signer.mint(&claims);
    let base = base_url(state.settings.public_url.as_deref(), &headers)?;
    Ok(Json(TerminalView {
        terminal_id: claims.terminal_id,
        terminal_url: format!("{base}/terminal/{token}"),
        target,
        expires_at: expires.to_string(),
    }))
}

/// Whether `token` can still open a terminal: signed, not expired, its session not over.
fn capability_is_valid(state: &Shared, token: &str) -> bool {
    state
        .terminals
        .signer
        .verify(token, jiff::Timestamp::now().as_second())
        .is_ok_and(|claims| !terminal::session_over(&state.caches, &claims))
}

/// `GET /terminal/{capability}`: the embeddable terminal page (410 once the link expired or
/// its session ended).
#[utoipa::path(get, path = "/terminal/{capability}", operation_id = "terminalPage", tag = "terminals",
    params(("capability" = String, Path, description = "Capability from a terminal URL")),
    responses((status = 200, description = "Terminal page", content_type = "text/html", body = String),
        (status = 410, description = "The link expired or is not valid", content_type = "text/html", body = String)))]
pub async fn page(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let valid = capability_is_valid(&state, &token);
    terminal::page_response(
        valid,
        state.settings.web_dir.as_deref(),
        &state.settings.frame_ancestors,
    )
}

/// `GET /terminal/{capability}/ws`: the terminal's WebSocket (protocol in `docs/gateway.md`).
/// Refusals after the upgrade come as a `closed` control message and a close code, which a
/// browser can read, unlike an HTTP status.
#[utoipa::path(get, path = "/terminal/{capability}/ws", operation_id = "terminalSocket", tag = "terminals",
    params(("capability" = String, Path, description = "Capability from a terminal URL")),
    responses((status = 101, description = "WebSocket: binary frames are terminal bytes, text frames JSON control messages"),
        (status = 426, body = ErrorBody)))]
pub async fn socket(
    State(state): State<Shared>,
    Path(token): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        let mut response = ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "UPGRADE_REQUIRED",
            "This is a terminal WebSocket; open it with a WebSocket client.",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return response;
    };
    upgrade
        .max_message_size(bridge::MAX_CLIENT_MESSAGE)
        .max_frame_size(bridge::MAX_CLIENT_MESSAGE)
        // tungstenite reserves 128 KiB each way per socket by default; keystrokes and SSH
        // packets need far less, and 200 terminals would hold 50 MiB for nothing.
        .read_buffer_size(bridge::SOCKET_BUFFER)
        .write_buffer_size(bridge::SOCKET_BUFFER)
        .on_upgrade(move |socket| bridge::serve(socket, state, token))
}

/// `GET /terminal-fallback.js`: the script of the minimal terminal page.
#[utoipa::path(get, path = "/terminal-fallback.js", operation_id = "terminalScript", tag = "terminals",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn fallback_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        terminal::FALLBACK_SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_is_the_configured_one_or_the_host_header() {
        let mut headers = HeaderMap::new();
        assert!(base_url(None, &headers).is_err());
        assert_eq!(
            base_url(Some("https://cks.example.org"), &headers).unwrap(),
            "https://cks.example.org"
        );
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
        assert_eq!(base_url(None, &headers).unwrap(), "http://127.0.0.1:8081");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(base_url(None, &headers).unwrap(), "https://127.0.0.1:8081");
        headers.insert(header::HOST, HeaderValue::from_static("evil@host"));
        assert!(base_url(None, &headers).is_err());
        headers.insert(header::HOST, HeaderValue::from_static("a/b"));
        assert!(base_url(None, &headers).is_err());
    }

    #[test]
    fn terminal_ids_are_short_and_distinct() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert!(a.starts_with("t-") && a.len() == 14, "{a}");
    }
}
