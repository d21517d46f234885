//! Who is calling: the three identity modes and the extractor handlers use.
//!
//! - `proxy`: an authenticating reverse proxy (oauth2-proxy and the like) puts the user and
//!   groups in headers. Those headers are believed only from the configured trusted CIDRs;
//!   from anywhere else they are ignored and the caller is anonymous (401).
//! - `token`: `Authorization: Bearer <token>`, or the HttpOnly cookie the web page's sign-in
//!   sets ([`TOKEN_COOKIE`]), looked up in a mounted file of `token,user[,role]` lines that is
//!   reloaded when it changes.
//! - `dev`: every caller is one configured user with the admin role; only allowed on a
//!   loopback listen address (checked at start-up).
//!
//! The role decides what a caller sees: a student only their own Sessions, an admin all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};
use ipnet::IpNet;

use crate::errors::ApiError;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees and acts on their own Sessions only.
    Student,
    /// Sees everything; may use the admin routes.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "student" | "user" => Some(Self::Student),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name as the identity provider gives it; becomes `spec.user` of their Sessions.
    pub user: String,
    /// What they may do.
    pub role: Role,
}

impl Identity {
    /// True for the admin role.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// True when `owner` (a Session's `spec.user`) names the caller, compared as the operator's
    /// per-user limit compares users ([`cks_api::session::user_key`]).
    pub fn is(&self, owner: &str) -> bool {
        cks_api::session::user_key(&self.user) == cks_api::session::user_key(owner)
    }

    /// True when the caller may see and act on a Session of `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        self.is_admin() || self.is(owner)
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("This action needs the admin role."))
        }
    }
}

/// Settings of the `proxy` mode.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Header carrying the user name.
    pub user_header: HeaderName,
    /// Header carrying the groups, comma-separated.
    pub groups_header: HeaderName,
    /// Peers whose headers are believed.
    pub trusted: Vec<IpNet>,
    /// Members of this group get the admin role.
    pub admin_group: String,
}

/// How callers are identified.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// Headers from a trusted reverse proxy.
    Proxy(ProxySettings),
    /// Bearer tokens from a file.
    Token(Arc<TokenFile>),
    /// Everyone is this admin user (development only).
    Dev(String),
}

/// The cookie `POST /api/v1/auth/login` sets in `token` mode: the token itself, HttpOnly and
/// SameSite=Strict, so page scripts never hold it and other sites' requests never carry it.
pub const TOKEN_COOKIE: &str = "cks_token";

impl Authenticator {
    /// The mode's name, as the flag spells it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Proxy(_) => "proxy",
            Self::Token(_) => "token",
            Self::Dev(_) => "dev",
        }
    }

    /// The identity of a request from `peer` with `headers`.
    pub fn authenticate(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<Identity, ApiError> {
        match self {
            Self::Dev(user) => Ok(Identity {
                user: user.clone(),
                role: Role::Admin,
            }),
            Self::Proxy(p) => {
                // Canonical: on a dual-stack listener an IPv4 proxy arrives as `::ffff:a.b.c.d`,
                // which an IPv4 CIDR would not contain.
                let trusted = peer
                    .map(|ip| ip.to_canonical())
                    .is_some_and(|ip| p.trusted.iter().any(|net| net.contains(&ip)));
                if !trusted {
                    // Headers from elsewhere could be forged by anyone: ignored, not refused, so a
                    // misrouted request learns nothing about the header names.
                    return Err(ApiError::unauthenticated(
                        "Sign in through the site's login proxy; direct requests carry no identity.",
                    ));
                }
                let user = header_text(headers, &p.user_header)?.ok_or_else(|| {
                    ApiError::unauthenticated("The login proxy sent no user; sign in again.")
                })?;
                let user = checked_user(user)?;
                let admin = header_text(headers, &p.groups_header)?
                    .is_some_and(|groups| groups.split(',').any(|g| g.trim() == p.admin_group));
                Ok(Identity {
                    user,
                    role: if admin { Role::Admin } else { Role::Student },
                })
            }
            Self::Token(file) => {
                let token = bearer(headers)
                    .or_else(|| cookie(headers, TOKEN_COOKIE))
                    .ok_or_else(|| {
                        ApiError::unauthenticated(
                            "Sign in, or send an API token as 'Authorization: Bearer <token>'.",
                        )
                    })?;
                file.lookup(token)
                    .ok_or_else(|| ApiError::unauthenticated("The API token is not valid (or no longer)."))
            }
        }
    }
}

/// The one value of an identity header. More than one value is refused: a proxy that appends
/// its header to the client's instead of replacing it would otherwise let the client's forged
/// value (sent first) win.
fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::unauthenticated(format!(
            "The login proxy sent more than one '{name}' header; it must replace the client's, not add to it."
        )));
    }
    Ok(value.to_str().ok().map(str::trim).filter(|s| !s.is_empty()))
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A user name fit for `spec.user` (1..=253 printable characters).
fn checked_user(user: &str) -> Result<String, ApiError> {
    if user.len() > 253 || user.chars().any(char::is_control) {
        return Err(ApiError::unauthenticated(
            "The user name from the login proxy is not usable (too long or control characters).",
        ));
    }
    Ok(user.to_owned())
}

/// The token file: `token,user[,role]` per line, `#` comments. Tokens are kept only as
/// SHA-256 digests, so lookups do not compare secrets byte by byte.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    table: RwLock<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    tokens: HashMap<[u8; 32], Identity>,
    /// The file content the table was built from, to skip unchanged re-reads.
    source: Vec<u8>,
}

/// A token file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("reading the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("token file {path}, line {line}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the token itself).
        why: String,
    },
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses the token file's content.
pub fn parse_tokens(path: &Path, text: &str) -> Result<HashMap<[u8; 32], Identity>, TokenFileError> {
    let mut tokens = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why: &str| TokenFileError::Parse {
            path: path.to_owned(),
            line: i + 1,
            why: why.to_owned(),
        };
        let mut fields = line.split(',').map(str::trim);
        let token = fields.next().unwrap_or_default();
        let user = fields.next().unwrap_or_default();
        let role = fields.next().unwrap_or_default();
        if fields.next().is_some() {
            return Err(err("expected token,user[,role]"));
        }
        if token.is_empty() || user.is_empty() {
            return Err(err("token and user must not be empty"));
        }
        let role = Role::parse(role).ok_or_else(|| err("role must be student or admin"))?;
        let user = checked_user(user).map_err(|_| err("user name too long or with control characters"))?;
        if tokens.insert(digest(token), Identity { user, role }).is_some() {
            return Err(err("the same token appears twice"));
        }
    }
    Ok(tokens)
}

impl TokenFile {
    /// Loads `path`; fails when it cannot be read or parsed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Arc<Self>, TokenFileError> {
        let file = Arc::new(Self {
            path: path.into(),
            table: RwLock::default(),
        });
        file.reload()?;
        Ok(file)
    }

    /// Reads the file again; a broken file keeps the previous tokens. Returns whether the
    /// table changed.
    pub fn reload(&self) -> Result<bool, TokenFileError> {
        let bytes = std::fs::read(&self.path).map_err(|source| TokenFileError::Read {
            path: self.path.clone(),
            source,
        })?;
        if self.table.read().unwrap_or_else(|p| p.into_inner()).source == bytes {
            return Ok(false);
        }
        let tokens = parse_tokens(&self.path, &String::from_utf8_lossy(&bytes))?;
        let count = tokens.len();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Loaded {
            tokens,
            source: bytes,
        };
        tracing::info!(path = %self.path.display(), tokens = count, "API tokens loaded");
        Ok(true)
    }

    /// The identity a token stands for.
    pub fn lookup(&self, token: &str) -> Option<Identity> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .tokens
            .get(&digest(token))
            .cloned()
    }

    /// Re-reads the file every `every` until the returned task is aborted. Polling, not file
    /// events: a mounted Secret changes by swapping a symlink, which watchers often miss.
    pub fn poll(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let file = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let f = Arc::clone(&file);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || f.reload()).await {
                    tracing::warn!(error = %e, "token file not reloaded; keeping the previous tokens");
                }
            }
        })
    }
}

impl<S> FromRequestParts<S> for Identity
where
    S: Send + Sync,
    Arc<crate::state::AppState>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = Arc::<crate::state::AppState>::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        app.auth.authenticate(peer, &parts.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxy(trusted: &str) -> Authenticator {
        Authenticator::Proxy(ProxySettings {
            user_header: HeaderName::from_static("x-forwarded-user"),
            groups_header: HeaderName::from_static("x-forwarded-groups"),
            trusted: vec![trusted.parse().unwrap()],
            admin_group: "cks-admins".into(),
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_student_owns_sessions_of_their_name_in_any_case_or_spacing_and_no_others() {
        let alice = Identity {
            user: "Alice@Example.com".into(),
            role: Role::Student,
        };
        assert!(alice.may_access(" alice@example.com "));
        assert!(alice.is("ALICE@EXAMPLE.COM"));
        assert!(!alice.may_access("bob@example.com"));
        assert!(!alice.may_access("alice@example.co"));
    }

    #[test]
    fn proxy_headers_count_only_from_trusted_peers() {
        let auth = proxy("10.0.0.0/8");
        let h = headers(&[("x-forwarded-user", "alice"), ("x-forwarded-groups", "students")]);
        let id = auth.authenticate(Some("10.1.2.3".parse().unwrap()), &h).unwrap();
        assert_eq!(
            id,
            Identity {
                user: "alice".into(),
                role: Role::Student
            }
        );
        let e = auth
            .authenticate(Some("192.168.1.1".parse().unwrap()), &h)
            .unwrap_err();
        assert_eq!(e.status, 401);
        assert!(
            auth.authenticate(None, &h).is_err(),
            "no peer address is not trusted"
        );
    }

    #[test]
    fn proxy_identity_headers_with_more_than_one_value_are_refused() {
        let auth = proxy("127.0.0.0/8");
        let peer = Some("127.0.0.1".parse().unwrap());
        let mut h = headers(&[("x-forwarded-groups", "students")]);
        h.append("x-forwarded-user", HeaderValue::from_static("forged-admin"));
        h.append("x-forwarded-user", HeaderValue::from_static("alice"));
        assert_eq!(auth.authenticate(peer, &h).unwrap_err().status, 401, "two users");
        let mut h = headers(&[("x-forwarded-user", "alice")]);
        h.append("x-forwarded-groups", HeaderValue::from_static("cks-admins"));
        h.append("x-forwarded-groups", HeaderValue::from_static("students"));
        assert_eq!(
            auth.authenticate(peer, &h).unwrap_err().status,
            401,
            "two group lists"
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_match_ipv4_cidrs() {
        let auth = proxy("10.0.0.0/8");
        let h = headers(&[("x-forwarded-user", "alice")]);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(auth.authenticate(Some(mapped), &h).unwrap().user, "alice");
        let outside: IpAddr = "::ffff:192.168.1.1".parse().unwrap();
        assert_eq!(auth.authenticate(Some(outside), &h).unwrap_err().status, 401);
    }

    #[test]
    fn proxy_admin_group_is_one_of_the_comma_separated_groups() {
        let auth = proxy("127.0.0.0/8");
        let peer = Some("127.0.0.1".parse().unwrap());
        let h = headers(&[
            ("x-forwarded-user", "root"),
            ("x-forwarded-groups", "a, cks-admins ,b"),
        ]);
        assert_eq!(auth.authenticate(peer, &h).unwrap().role, Role::Admin);
        let h = headers(&[
            ("x-forwarded-user", "eve"),
            ("x-forwarded-groups", "cks-admins-not"),
        ]);
        assert_eq!(auth.authenticate(peer, &h).unwrap().role, Role::Student);
        let h = headers(&[("x-forwarded-groups", "cks-admins")]);
        assert_eq!(
            auth.authenticate(peer, &h).unwrap_err().status,
            401,
            "no user header"
        );
    }

    #[test]
    fn bearer_tokens_parse_case_insensitively_and_need_a_token() {
        assert_eq!(bearer(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn the_sign_in_cookie_counts_like_the_bearer_token_in_token_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "t1,alice\n").unwrap();
        let auth = Authenticator::Token(TokenFile::open(&path).unwrap());
        let h = headers(&[("cookie", "theme=dark; cks_token=t1; other=x")]);
        assert_eq!(auth.authenticate(None, &h).unwrap().user, "alice");
        let h = headers(&[("cookie", "cks_token=wrong")]);
        assert_eq!(auth.authenticate(None, &h).unwrap_err().status, 401);
        let h = headers(&[("cookie", "not_cks_token=t1")]);
        assert_eq!(auth.authenticate(None, &h).unwrap_err().status, 401);
        // A bearer token wins over the cookie (an API client acting as itself).
        let h = headers(&[("cookie", "cks_token=wrong"), ("authorization", "Bearer t1")]);
        assert_eq!(auth.authenticate(None, &h).unwrap().user, "alice");
    }

    #[test]
    fn the_cookie_never_identifies_anyone_in_proxy_mode() {
        let auth = proxy("10.0.0.0/8");
        let h = headers(&[("cookie", "cks_token=t1")]);
        assert!(
            auth.authenticate(Some("192.168.1.1".parse().unwrap()), &h)
                .is_err()
        );
    }

    #[test]
    fn token_file_lines_give_user_and_role() {
        let p = Path::new("tokens");
        let t = parse_tokens(
            p,
            "# comment\n\ns3cret-a, alice\ns3cret-b,bob,admin\ns3cret-c,carol,student\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[&digest("s3cret-b")],
            Identity {
                user: "bob".into(),
                role: Role::Admin
            }
        );
        assert_eq!(t[&digest("s3cret-a")].role, Role::Student);
        for bad in ["tok", "tok,alice,root", "tok,alice,admin,x", ",alice", "a,x\na,y"] {
            let e = parse_tokens(p, bad).unwrap_err().to_string();
            assert!(!e.contains("tok,"), "errors never repeat the line: {e}");
        }
    }

    #[test]
    fn token_file_reload_keeps_the_old_table_when_the_new_one_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "t1,alice\n").unwrap();
        let file = TokenFile::open(&path).unwrap();
        let auth = Authenticator::Token(file.clone());
        let h = headers(&[("authorization", "Bearer t1")]);
        assert_eq!(auth.authenticate(None, &h).unwrap().user, "alice");
        std::fs::write(&path, "t1,alice,boss\n").unwrap();
        assert!(file.reload().is_err());
        assert_eq!(auth.authenticate(None, &h).unwrap().user, "alice");
        std::fs::write(&path, "t2,bob,admin\n").unwrap();
        assert!(file.reload().unwrap());
        assert_eq!(auth.authenticate(None, &h).unwrap_err().status, 401);
        let h = headers(&[("authorization", "Bearer t2")]);
        assert!(auth.authenticate(None, &h).unwrap().is_admin());
    }

    #[test]
    fn dev_mode_is_one_admin() {
        let id = Authenticator::Dev("dev".into())
            .authenticate(None, &HeaderMap::new())
            .unwrap();
        assert!(id.is_admin() && id.may_access("anyone"));
        let student = Identity {
            user: "a".into(),
            role: Role::Student,
        };
        assert!(student.may_access("a") && !student.may_access("b"));
        assert_eq!(student.require_admin().unwrap_err().status, 403);
    }
}
