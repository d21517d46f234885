//! Gateway configuration: command-line flags, each also settable from the environment, and
//! the checks that refuse a dangerous combination at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderName;
use ipnet::IpNet;

/// How callers are identified (see `auth`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// User and groups from headers set by a reverse proxy in the trusted CIDRs.
    Proxy,
    /// Bearer tokens from a file mapping token to user and role.
    Token,
    /// Everyone is one admin user; loopback listen addresses only.
    Dev,
}

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (containers).
    Json,
    /// Human-readable lines (terminals).
    Human,
}

/// Flags of `cks-gateway`.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "cks-gateway",
    version,
    about = "HTTP gateway of cks-lab: REST API to Sessions, ValidationRuns and the scenario catalog"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "CKS_GATEWAY_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// Namespace of the ClusterPools, PracticeClusters, Sessions and ValidationRuns.
    #[arg(long, env = "CKS_NAMESPACE", default_value = "cks-lab")]
    pub namespace: String,

    /// ClusterPool new Sessions use; when unset, the only pool in the namespace.
    #[arg(long, env = "CKS_GATEWAY_POOL")]
    pub pool: Option<String>,

    /// Scenario catalog directory; reloaded when its files change.
    #[arg(long, env = "CKS_SCENARIOS", default_value = "scenarios")]
    pub scenarios: PathBuf,

    /// Most requests to the host cluster's API server in flight at once, besides watches;
    /// more wait their turn (each is a connection: kube's client speaks HTTP/1.1).
    #[arg(long, env = "CKS_MAX_API_REQUESTS", default_value_t = 32)]
    pub max_api_requests: usize,

    /// How callers are identified.
    #[arg(long, env = "CKS_GATEWAY_AUTH", value_enum)]
    pub auth: AuthMode,

    /// `proxy` mode: header with the user name.
    #[arg(long, env = "CKS_GATEWAY_USER_HEADER", default_value = "X-Forwarded-User")]
    pub user_header: String,

    /// `proxy` mode: header with the comma-separated groups.
    #[arg(long, env = "CKS_GATEWAY_GROUPS_HEADER", default_value = "X-Forwarded-Groups")]
    pub groups_header: String,

    /// `proxy` mode: CIDRs of the proxies whose headers are believed (comma-separated).
    #[arg(long, env = "CKS_GATEWAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// `proxy` mode: members of this group are admins.
    #[arg(long, env = "CKS_GATEWAY_ADMIN_GROUP", default_value = "cks-admins")]
    pub admin_group: String,

    /// `token` mode: file of `token,user[,role]` lines (role `student` or `admin`).
    #[arg(long, env = "CKS_GATEWAY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// `token` mode: how often the token file is re-read, in seconds.
    #[arg(long, env = "CKS_GATEWAY_TOKEN_RELOAD_SECONDS", default_value_t = 2.0)]
    pub token_reload_seconds: f64,

    /// `dev` mode: the user everyone is.
    #[arg(long, env = "CKS_GATEWAY_DEV_USER", default_value = "developer")]
    pub dev_user: String,

    /// Origins allowed to call the API from a browser (comma-separated; `*` for any).
    /// Default: none (same-origin only).
    #[arg(long, env = "CKS_GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// How long `POST /sessions` waits for a cluster to be assigned, in seconds.
    #[arg(long, env = "CKS_GATEWAY_CREATE_WAIT_SECONDS", default_value_t = 5.0)]
    pub create_wait_seconds: f64,

    /// How long a validate call waits for its ValidationRun before answering 202, in seconds.
    /// Below the reference frontend's 120 s request timeout (after which it re-sends), and long
    /// enough for most runs: that UI shows a 202 as a failure without details.
    #[arg(long, env = "CKS_GATEWAY_VALIDATE_WAIT_SECONDS", default_value_t = 100.0)]
    pub validate_wait_seconds: f64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "CKS_GATEWAY_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Session creations and validations one user may start per minute (sustained).
    #[arg(long, env = "CKS_GATEWAY_RATE_PER_MINUTE", default_value_t = 30.0)]
    pub rate_per_minute: f64,

    /// Burst above the sustained rate.
    #[arg(long, env = "CKS_GATEWAY_RATE_BURST", default_value_t = 10.0)]
    pub rate_burst: f64,

    /// Active Sessions one user may have; the operator enforces its own limit too, this one
    /// answers early with a clear message.
    #[arg(long, env = "CKS_MAX_SESSIONS_PER_USER", default_value_t = 1)]
    pub max_sessions_per_user: u32,

    /// Interval of the comment heartbeats on event streams, in seconds.
    #[arg(long, env = "CKS_GATEWAY_SSE_HEARTBEAT_SECONDS", default_value_t = 15.0)]
    pub sse_heartbeat_seconds: f64,

    /// Open event streams one user may hold at once (429 above): each holds a connection and
    /// a task, so a bound per user keeps one client from using them all up.
    #[arg(long, env = "CKS_GATEWAY_SSE_MAX_STREAMS_PER_USER", default_value_t = 8)]
    pub sse_max_streams_per_user: u32,

    /// Longest life of an event stream, in seconds. Clients reconnect with `Last-Event-ID` and
    /// miss nothing; the reconnect authenticates again, so a revoked token stops working then.
    #[arg(long, env = "CKS_GATEWAY_SSE_MAX_LIFETIME_SECONDS", default_value_t = 3600.0)]
    pub sse_max_lifetime_seconds: f64,

    /// The gateway's address as browsers reach it (`https://cks.example.org`), for the
    /// absolute terminal URLs; when unset, taken from each request's `Host` header over http.
    #[arg(long, env = "CKS_GATEWAY_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Directory of the built web page (`web/dist`), served at `/`; its `terminal.html` is
    /// the terminal page. Without it, a minimal terminal page of the gateway's own is served.
    #[arg(long, env = "CKS_GATEWAY_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// File with the key that signs terminal URLs: one key per line, at least 32 bytes each;
    /// the first signs, every line verifies (add the new key second, roll out, then move it
    /// first). Every replica must read the same file. When unset a random key is made at
    /// start, so terminal URLs work only on the replica that made them.
    #[arg(long, env = "CKS_GATEWAY_TERMINAL_KEY_FILE")]
    pub terminal_key_file: Option<PathBuf>,

    /// How long a terminal URL can be used to open its terminal, in seconds. An open terminal
    /// stays open past it, until the session ends or the terminal idles out.
    #[arg(long, env = "CKS_GATEWAY_TERMINAL_URL_TTL_SECONDS", default_value_t = 600.0)]
    pub terminal_url_ttl_seconds: f64,

    /// A terminal without a keystroke or resize for this long is closed, in seconds.
    #[arg(long, env = "CKS_GATEWAY_TERMINAL_IDLE_SECONDS", default_value_t = 1800.0)]
    pub terminal_idle_seconds: f64,

    /// Terminals open at once per session on this replica (each is an SSH connection).
    #[arg(long, env = "CKS_GATEWAY_TERMINALS_PER_SESSION", default_value_t = 8)]
    pub terminals_per_session: u32,

    /// How terminals reach the VMs' SSH servers (as the operator's flag of the same name).
    #[arg(long, env = "CKS_SSH_TRANSPORT", value_enum, default_value = "direct")]
    pub ssh_transport: cks_ssh::TransportKind,

    /// Port of the VMs' SSH servers.
    #[arg(long, env = "CKS_SSH_PORT", default_value_t = 22)]
    pub ssh_port: u16,

    /// Log format; `human` when unset and stderr is a terminal, else `json`.
    #[arg(long, env = "CKS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

/// A configuration that must not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Dev mode on a non-loopback address.
    #[error(
        "--auth dev makes everyone an admin; it is only allowed on a loopback address, not {0} (use --listen 127.0.0.1:PORT)"
    )]
    DevNotLoopback(SocketAddr),
    /// Proxy mode without trusted proxies.
    #[error("--auth proxy needs --trusted-proxies (the CIDRs of the proxies whose headers are believed)")]
    NoTrustedProxies,
    /// Token mode without a file.
    #[error("--auth token needs --token-file")]
    NoTokenFile,
    /// A header name is not valid.
    #[error("{flag}: {value:?} is not a valid HTTP header name")]
    BadHeader {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// A duration flag is negative or not finite.
    #[error("{0} must be a non-negative number of seconds")]
    BadDuration(&'static str),
    /// The rate limit is not positive.
    #[error("--rate-per-minute and --rate-burst must be positive")]
    BadRate,
    /// The public URL is not an absolute http(s) URL.
    #[error("--public-url {0:?} must be an absolute http:// or https:// URL without query or fragment")]
    BadPublicUrl(String),
    /// A pool name is not a DNS-1123 label.
    #[error("--pool {0:?} is not a valid ClusterPool name")]
    BadPool(String),
    /// `--web-dir` holds no built page.
    #[error("{0}")]
    WebDir(String),
}

/// Settings the handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// See [`Args::namespace`].
    pub namespace: String,
    /// See [`Args::pool`].
    pub pool: Option<String>,
    /// See [`Args::create_wait_seconds`].
    pub create_wait: Duration,
    /// See [`Args::validate_wait_seconds`].
    pub validate_wait: Duration,
    /// See [`Args::max_body_bytes`].
    pub max_body_bytes: usize,
    /// See [`Args::max_sessions_per_user`].
    pub max_sessions_per_user: u32,
    /// Rate-limit refill per second and bucket size.
    pub rate_per_second: f64,
    /// Bucket size.
    pub rate_burst: f64,
    /// See [`Args::sse_heartbeat_seconds`].
    pub sse_heartbeat: Duration,
    /// See [`Args::sse_max_streams_per_user`].
    pub sse_max_streams_per_user: u32,
    /// See [`Args::sse_max_lifetime_seconds`].
    pub sse_max_lifetime: Duration,
    /// See [`Args::public_url`]; without a trailing slash.
    pub public_url: Option<String>,
    /// See [`Args::terminal_url_ttl_seconds`].
    pub terminal_url_ttl: Duration,
    /// See [`Args::terminal_idle_seconds`].
    pub terminal_idle: Duration,
    /// See [`Args::terminals_per_session`].
    pub terminals_per_session: u32,
    /// See [`Args::web_dir`].
    pub web_dir: Option<PathBuf>,
    /// Who may embed the terminal page (CSP `frame-ancestors`): this origin and the CORS
    /// origins, whose frontends show terminals in iframes.
    pub frame_ancestors: String,
}

/// CSP `frame-ancestors` for the CORS origins.
fn frame_ancestors(cors_origins: &[String]) -> String {
    let origins: Vec<&str> = cors_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b','))
        .collect();
    if origins.contains(&"*") {
        return "*".to_owned();
    }
    std::iter::once("'self'")
        .chain(origins)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `url` without its trailing slashes, if it is an absolute http(s) URL with a host and no
/// query or fragment.
fn public_url(url: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::BadPublicUrl(url.to_owned());
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) || uri.query().is_some() || url.contains('#') {
        return Err(bad());
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn seconds(flag: &'static str, v: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v).map_err(|_| ConfigError::BadDuration(flag))
}

/// A valid header name from a flag.
pub fn header_name(flag: &'static str, value: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(value.trim().as_bytes()).map_err(|_| ConfigError::BadHeader {
        flag,
        value: value.to_owned(),
    })
}

impl Args {
    /// Checks the flags and derives the handler settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        match self.auth {
            AuthMode::Dev if !self.listen.ip().is_loopback() => {
                return Err(ConfigError::DevNotLoopback(self.listen));
            }
            AuthMode::Proxy if self.trusted_proxies.is_empty() => return Err(ConfigError::NoTrustedProxies),
            AuthMode::Token if self.token_file.is_none() => return Err(ConfigError::NoTokenFile),
            _ => {}
        }
        header_name("--user-header", &self.user_header)?;
        header_name("--groups-header", &self.groups_header)?;
        seconds("--token-reload-seconds", self.token_reload_seconds)?;
        if !(self.rate_per_minute > 0.0 && self.rate_burst >= 1.0) {
            return Err(ConfigError::BadRate);
        }
        if let Some(pool) = &self.pool
            && !cks_api::common::is_dns1123_label(pool)
        {
            return Err(ConfigError::BadPool(pool.clone()));
        }
        if let Some(dir) = &self.web_dir {
            crate::web::check_dir(dir).map_err(ConfigError::WebDir)?;
        }
        Ok(Settings {
            namespace: self.namespace.clone(),
            pool: self.pool.clone(),
            create_wait: seconds("--create-wait-seconds", self.create_wait_seconds)?,
            validate_wait: seconds("--validate-wait-seconds", self.validate_wait_seconds)?,
            max_body_bytes: self.max_body_bytes,
            max_sessions_per_user: self.max_sessions_per_user.max(1),
            rate_per_second: self.rate_per_minute / 60.0,
            rate_burst: self.rate_burst,
            sse_heartbeat: seconds("--sse-heartbeat-seconds", self.sse_heartbeat_seconds)?
                .max(Duration::from_millis(100)),
            sse_max_streams_per_user: self.sse_max_streams_per_user.max(1),
            sse_max_lifetime: seconds("--sse-max-lifetime-seconds", self.sse_max_lifetime_seconds)?
                .max(Duration::from_millis(100)),
            public_url: self.public_url.as_deref().map(public_url).transpose()?,
            terminal_url_ttl: seconds("--terminal-url-ttl-seconds", self.terminal_url_ttl_seconds)?
                .max(Duration::from_secs(1)),
            terminal_idle: seconds("--terminal-idle-seconds", self.terminal_idle_seconds)?
                .max(Duration::from_millis(100)),
            terminals_per_session: self.terminals_per_session.max(1),
            web_dir: self.web_dir.clone(),
            frame_ancestors: frame_ancestors(&self.cors_origins),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("cks-gateway").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn validate_waits_under_the_reference_frontends_timeout_by_default() {
        let s = parse(&["--auth", "dev", "--listen", "127.0.0.1:8081"])
            .settings()
            .unwrap();
        // The reference frontend gives up (and re-sends) after 120 s and shows a 202 as a
        // failure: wait as long as fits below that.
        assert_eq!(s.validate_wait, Duration::from_secs(100));
    }

    #[test]
    fn dev_mode_needs_a_loopback_listen_address() {
        let e = parse(&["--auth", "dev"]).settings().unwrap_err();
        assert!(matches!(e, ConfigError::DevNotLoopback(_)), "{e}");
        parse(&["--auth", "dev", "--listen", "127.0.0.1:8081"])
            .settings()
            .unwrap();
        parse(&["--auth", "dev", "--listen", "[::1]:8081"])
            .settings()
            .unwrap();
    }

    #[test]
    fn proxy_and_token_modes_need_their_inputs() {
        let e = parse(&["--auth", "proxy"]).settings().unwrap_err();
        assert!(matches!(e, ConfigError::NoTrustedProxies));
        parse(&[
            "--auth",
            "proxy",
            "--trusted-proxies",
            "10.0.0.0/8,192.168.0.0/16",
        ])
        .settings()
        .unwrap();
        assert!(
            Args::try_parse_from(["cks-gateway", "--auth", "proxy", "--trusted-proxies", "nope"]).is_err()
        );
        let e = parse(&["--auth", "token"]).settings().unwrap_err();
        assert!(matches!(e, ConfigError::NoTokenFile));
        let e = parse(&[
            "--auth",
            "token",
            "--token-file",
            "t",
            "--user-header",
            "bad header",
        ])
        .settings()
        .unwrap_err();
        assert!(matches!(e, ConfigError::BadHeader { .. }));
    }

    #[test]
    fn bad_numbers_and_pool_names_are_refused() {
        let base = ["--auth", "dev", "--listen", "127.0.0.1:1"];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v).settings()
        };
        assert!(matches!(
            with(&["--create-wait-seconds=-1"]),
            Err(ConfigError::BadDuration(_))
        ));
        assert!(matches!(
            with(&["--rate-per-minute", "0"]),
            Err(ConfigError::BadRate)
        ));
        assert!(matches!(
            with(&["--pool", "Bad_Pool"]),
            Err(ConfigError::BadPool(_))
        ));
        for url in [
            "ftp://x",
            "/relative",
            "https://x/?q=1",
            "https://x/#f",
            "not a url",
        ] {
            assert!(
                matches!(with(&["--public-url", url]), Err(ConfigError::BadPublicUrl(_))),
                "{url}"
            );
        }
        let s = with(&["--public-url", "https://cks.example.org/lab/"]).unwrap();
        assert_eq!(s.public_url.as_deref(), Some("https://cks.example.org/lab"));
        let s = with(&["--cors-origins", "https://a.example, https://b.example"]).unwrap();
        assert_eq!(s.frame_ancestors, "'self' https://a.example https://b.example");
        assert_eq!(with(&[]).unwrap().frame_ancestors, "'self'");
        let s = with(&["--rate-per-minute", "120"]).unwrap();
        assert!((s.rate_per_second - 2.0).abs() < 1e-9);
    }
}
