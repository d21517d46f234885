//! Who the caller is, and the web page's sign-in for `token` mode: the token is posted once
//! and comes back as an HttpOnly, SameSite=Strict cookie ([`TOKEN_COOKIE`]) that the
//! authenticator accepts like the bearer header, so the page never keeps a token where its
//! scripts (or an injected one) could read it, and event streams (which cannot send headers)
//! authenticate too. In `proxy` and `dev` mode there is nothing to sign in to.

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Body, Shared};
use crate::auth::{Authenticator, Identity, Role, TOKEN_COOKIE};
use crate::errors::{ApiError, ApiResult, ErrorBody};

/// How long the sign-in cookie lasts; the token's own validity (the token file) still decides.
const COOKIE_MAX_AGE_SECONDS: u32 = 12 * 3600;

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// User name; the `user` of their Sessions.
    pub user: String,
    /// `student` or `admin`.
    pub role: String,
    /// The gateway's identity mode: `proxy`, `token` or `dev`.
    pub auth: String,
}

fn me_view(who: &Identity, auth: &Authenticator) -> MeView {
    MeView {
        user: who.user.clone(),
        role: match who.role {
            Role::Admin => "admin",
            Role::Student => "student",
        }
        .to_owned(),
        auth: auth.mode().to_owned(),
    }
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Login {
    /// An API token from the gateway's token file.
    pub token: String,
}

/// Answer of `POST /auth/logout`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedOut {
    /// Summary for people.
    pub message: String,
}

/// `GET /auth/me`: the caller's identity and role.
#[utoipa::path(get, path = "/auth/me", operation_id = "me", tag = "auth",
    responses((status = 200, body = MeView)))]
pub async fn me(State(state): State<Shared>, who: Identity) -> Json<MeView> {
    Json(me_view(&who, &state.auth))
}

/// `POST /auth/login`: in `token` mode, checks the token and sets the sign-in cookie.
#[utoipa::path(post, path = "/auth/login", operation_id = "login", tag = "auth", request_body = Login,
    responses((status = 200, description = "Signed in; `Set-Cookie` carries the HttpOnly sign-in cookie", body = MeView),
        (status = 400, body = ErrorBody),
        (status = 409, description = "The gateway is not in token mode (`LOGIN_NOT_USED`)", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<Shared>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Body(body): Body<Login>,
) -> ApiResult<Response> {
    let Authenticator::Token(file) = &state.auth else {
        return Err(ApiError::conflict(
            "LOGIN_NOT_USED",
            format!(
                "This gateway identifies you through {} mode; there is nothing to sign in to.",
                state.auth.mode()
            ),
        ));
    };
    // Guessing tokens costs the same budget as creating sessions, per client address.
    let client = peer.map_or_else(String::new, |Extension(ConnectInfo(a))| {
        a.ip().to_canonical().to_string()
    });
    state.limiter.check("sign-in", &client)?;
    let token = body.token.trim();
    let cookie = cookie_value(token)?;
    let who = file
        .lookup(token)
        .ok_or_else(|| ApiError::unauthenticated("This token is not valid (or no longer)."))?;
    let set = format!(
        "{TOKEN_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECONDS}{}",
        if is_https(&headers) { "; Secure" } else { "" }
    );
    let mut response = Json(me_view(&who, &state.auth)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set).map_err(|_| bad_token())?,
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /auth/logout`: removes the sign-in cookie (the token itself stays valid until it is
/// removed from the token file).
#[utoipa::path(post, path = "/auth/logout", operation_id = "logout", tag = "auth",
    responses((status = 200, body = LoggedOut)))]
pub async fn logout(headers: HeaderMap) -> Response {
    let clear = format!(
        "{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if is_https(&headers) { "; Secure" } else { "" }
    );
    let mut response = Json(LoggedOut {
        message: "Signed out.".to_owned(),
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

fn bad_token() -> ApiError {
    ApiError::invalid(
        "INVALID_TOKEN",
        "This token cannot be kept in a browser cookie (spaces, quotes, commas, semicolons or \
         backslashes); use it as 'Authorization: Bearer <token>' instead.",
    )
}

/// The token as a cookie value: cookie-octets only (RFC 6265), never quoted or escaped.
fn cookie_value(token: &str) -> ApiResult<&str> {
    let ok = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'));
    if ok { Ok(token) } else { Err(bad_token()) }
}

/// True when the browser reached the gateway over HTTPS (TLS usually ends at a proxy, which
/// says so in `X-Forwarded-Proto`; the browser's `Origin` says so by itself): the cookie is
/// then `Secure`. Plain-HTTP development on loopback keeps a cookie the browser will store.
fn is_https(headers: &HeaderMap) -> bool {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    text("x-forwarded-proto") == "https" || text("origin").starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cookie_safe_tokens_become_cookies() {
        assert_eq!(cookie_value("a9d2-44_x.Y~z").unwrap(), "a9d2-44_x.Y~z");
        for bad in ["", "a b", "a;b", "a\"b", "a,b", "a\\b", "tök"] {
            assert_eq!(cookie_value(bad).unwrap_err().code, "INVALID_TOKEN", "{bad:?}");
        }
    }

    #[test]
    fn the_cookie_is_secure_behind_https() {
        let mut h = HeaderMap::new();
        assert!(!is_https(&h));
        h.insert("origin", HeaderValue::from_static("https://lab.example"));
        assert!(is_https(&h));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(is_https(&h));
    }
}
