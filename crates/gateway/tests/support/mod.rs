//! Test support of the gateway's integration tests: the whole platform in-process (the
//! development control plane with the KubeVirt simulator, the operator's controllers through
//! its real runtime, a warm pool) and gateways in front of it, plus a small HTTP client.
//!
//! The control plane, pool and catalog helpers are the operator's own test support, compiled
//! in from `crates/operator/tests/common` rather than copied.
#![allow(dead_code)]

#[path = "../../../operator/tests/common/mod.rs"]
pub mod op;

use bytes::Bytes;
use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::{ClusterPool, PracticeCluster};
use cks_devcluster::DevCluster;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::Client;
use kube::api::{Api, PostParams};
use op::vrun_fixtures::TempCatalog;
use serde_json::Value;
use tokio::sync::watch;

pub use op::{NS, eventually};

/// The platform: control plane, operator and a pool named `pool`.
pub struct Platform {
    pub server: DevCluster,
    pub client: Client,
    pub catalog: TempCatalog,
    operator: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.operator.abort();
    }
}

/// Starts the platform with a pool of at most `max` clusters keeping `min` warm, and waits
/// for `min` Available clusters.
pub async fn platform(min: i32, max: i32) -> Platform {
    let (server, client) = op::sim::start_server(&[], None).await;
    let catalog = op::vrun_fixtures::catalog();
    let args = cks_operator::config::Args::try_parse_from([
        "cks-operator",
        "--namespace",
        NS,
        "--metrics-addr",
        "127.0.0.1:0",
        "--leader-election",
        "false",
    ])
    .unwrap();
    let rt = cks_operator::runtime::Runtime {
        client: client.clone(),
        probe: None,
        config: Some(op::sim::config()),
        scenarios: Some(catalog.store.clone()),
        host_config: None,
    };
    let operator =
        tokio::spawn(async move { cks_operator::runtime::run(&args, rt, std::future::pending()).await });
    Api::<ClusterPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &op::pool("pool", min, max, max.max(1)))
        .await
        .unwrap();
    let platform = Platform {
        server,
        client,
        catalog,
        operator,
    };
    platform.available(usize::try_from(min).unwrap()).await;
    platform
}

impl Platform {
    /// Waits until at least `n` clusters are Available.
    pub async fn available(&self, n: usize) {
        eventually(&format!("{n} Available cluster(s)"), || async {
            let list = op::clusters(&self.client, "pool").await;
            let ready = list
                .iter()
                .filter(|c| {
                    c.status
                        .as_ref()
                        .is_some_and(|s| s.phase == PracticeClusterPhase::Available)
                })
                .count();
            (ready >= n).then_some(())
        })
        .await;
    }

    /// A PracticeCluster by name.
    pub async fn cluster(&self, name: &str) -> PracticeCluster {
        Api::<PracticeCluster>::namespaced(self.client.clone(), NS)
            .get(name)
            .await
            .unwrap()
    }

    /// Starts a gateway with `flags` (besides namespace and listen address) in front of the
    /// platform.
    pub async fn gateway(&self, flags: &[&str]) -> Gateway {
        let gw = start_gateway(self.client.clone(), self.catalog.store.clone(), flags).await;
        eventually("the gateway ready", || async {
            (gw.get("/readyz", &[]).await.status == 200).then_some(())
        })
        .await;
        gw
    }
}

/// Starts a gateway with `flags` (besides namespace and listen address) on `client` without
/// waiting for it to be ready.
pub async fn start_gateway(
    client: Client,
    catalog: std::sync::Arc<cks_scenarios::CatalogStore>,
    flags: &[&str],
) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listen = addr.to_string();
    let mut argv = vec!["cks-gateway", "--namespace", NS, "--listen", &listen];
    argv.extend_from_slice(flags);
    let args = cks_gateway::config::Args::try_parse_from(argv).unwrap();
    let rt = cks_gateway::Runtime {
        client,
        catalog: Some(catalog),
        listener: Some(listener),
        host_config: None,
    };
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        cks_gateway::run(&args, rt, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
    });
    Gateway {
        base: format!("http://{addr}"),
        http: HttpClient::builder(TokioExecutor::new()).build_http(),
        stop,
        task,
    }
}

/// A running gateway and a client for it.
pub struct Gateway {
    pub base: String,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Answer {
    /// The value of header `name`, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts the API's error shape and `status`/`code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.json["error"], code, "{self:?}");
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error carries a message: {self:?}"
        );
        assert!(
            self.header("content-type").starts_with("application/json"),
            "{self:?}"
        );
    }
}

impl Gateway {
    /// Asks the gateway to stop and waits until it has, failing the test after 30 s.
    pub async fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(std::time::Duration::from_secs(30), &mut self.task)
            .await
            .expect("the gateway stops within 30 s")
            .expect("the gateway task")
            .expect("a clean stop");
    }

    /// Sends a request; `body` is sent as is.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
            .unwrap();
        let resp = self.http.request(req).await.expect("the gateway answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.call("GET", path, headers, None).await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.call("POST", path, headers, Some(body)).await
    }
}

/// A token file for `--auth token` with students `alice` and `bob` and admin `root`
/// (tokens `alice-token`, `bob-token`, `root-token`), in `dir`.
pub fn token_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        "alice-token,alice\nbob-token,bob,student\nroot-token,root,admin\n",
    )
    .unwrap();
    path
}

/// The `Authorization` header of a token.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// Headers from `(name, String)` pairs.
pub fn hdrs<'a>(pairs: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A student's SSH login to VM `target` of cluster `pc`.
pub async fn ssh(pc: &PracticeCluster, target: &str) -> russh::client::Handle<op::vrun_fixtures::AnyHostKey> {
    let ip = pc
        .status
        .as_ref()
        .and_then(|s| s.vms.iter().find(|v| v.target == target))
        .and_then(|v| v.ip.clone())
        .unwrap_or_else(|| panic!("an IP for {target}"));
    op::vrun_fixtures::ssh_login(&ip).await
}

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    /// An event with its name, id and JSON data.
    Event { event: String, id: String, data: Value },
    /// A comment line (heartbeat).
    Comment(String),
}

/// An open Server-Sent Events response.
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: String,
}

impl Gateway {
    /// Opens an event stream; an error answer comes back as `Err`.
    pub async fn events(&self, path: &str, headers: &[(&str, &str)]) -> Result<EventStream, Answer> {
        let mut req = http::Request::builder()
            .method("GET")
            .uri(format!("{}{path}", self.base))
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .http
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .expect("the gateway answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if status != 200 {
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(Answer {
                status,
                headers,
                text,
                json,
            });
        }
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream"),
            "{headers:?}"
        );
        Ok(EventStream {
            body: resp.into_body(),
            buf: String::new(),
        })
    }
}

impl EventStream {
    /// The next item; fails the test when none comes within 30 s or the stream ends.
    pub async fn next(&mut self) -> SseItem {
        tokio::time::timeout(std::time::Duration::from_secs(30), self.read())
            .await
            .expect("an event within 30 s")
            .expect("the stream goes on")
    }

    /// The next item, `None` at the end of the stream.
    pub async fn read(&mut self) -> Option<SseItem> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data, mut comment) =
                    (String::new(), String::new(), String::new(), None);
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        comment = Some(c.trim().to_owned());
                    } else if let Some((k, v)) = line.split_once(':') {
                        let v = v.strip_prefix(' ').unwrap_or(v);
                        match k {
                            "event" => event = v.to_owned(),
                            "id" => id = v.to_owned(),
                            "data" => data.push_str(v),
                            _ => {}
                        }
                    }
                }
                if event.is_empty() && data.is_empty() {
                    match comment {
                        Some(c) => return Some(SseItem::Comment(c)),
                        None => continue,
                    }
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(SseItem::Event { event, id, data });
            }
            let frame = self.body.frame().await?.expect("a body frame");
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    /// Reads until an event named `name` whose data satisfies `check`, and returns its id
    /// and data.
    pub async fn until(&mut self, name: &str, check: impl Fn(&Value) -> bool) -> (String, Value) {
        loop {
            if let SseItem::Event { event, id, data } = self.next().await
                && event == name
                && check(&data)
            {
                return (id, data);
            }
        }
    }
}

/// A browser's side of a terminal: the WebSocket of a terminal URL.
pub struct Term {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Terminal output so far (lossy UTF-8).
    pub seen: String,
    /// Bytes of terminal output so far.
    pub bytes: usize,
}

/// How a terminal ended: the `closed` control message (if any) and the close code.
#[derive(Debug)]
pub struct Closed {
    pub message: Option<Value>,
    pub code: Option<u16>,
}

impl Term {
    /// Opens the WebSocket of `terminal_url` (the page URL the API returned).
    pub async fn open(terminal_url: &str) -> Term {
        let url = format!("{}/ws", terminal_url.replacen("http://", "ws://", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("terminal WebSocket");
        Term {
            ws,
            seen: String::new(),
            bytes: 0,
        }
    }

    /// The next message, within 30 s.
    async fn next(&mut self) -> Option<tokio_tungstenite::tungstenite::Message> {
        use futures::StreamExt;
        tokio::time::timeout(std::time::Duration::from_secs(30), self.ws.next())
            .await
            .expect("a terminal message within 30 s")
            .and_then(Result::ok)
    }

    /// Reads until a text control message of `kind`; panics on output or the end.
    pub async fn control(&mut self, kind: &str) -> Value {
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.next().await {
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == kind {
                        return v;
                    }
                    assert_ne!(v["type"], "closed", "closed while waiting for {kind}: {v}");
                }
                Some(Message::Binary(b)) => self.record(&b),
                Some(_) => {}
                None => panic!(
                    "the terminal ended while waiting for {kind}; output: {}",
                    self.seen
                ),
            }
        }
    }

    fn record(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len();
        // Keep only the tail of long outputs.
        self.seen.push_str(&String::from_utf8_lossy(bytes));
        if self.seen.len() > 1 << 20 {
            let cut = self.seen.len() - (1 << 19);
            let cut = (cut..self.seen.len())
                .find(|&i| self.seen.is_char_boundary(i))
                .unwrap();
            self.seen.drain(..cut);
        }
    }

    /// Types `keys` (a binary frame, as a terminal sends keystrokes).
    pub async fn keys(&mut self, keys: &str) {
        use futures::SinkExt;
        let msg = tokio_tungstenite::tungstenite::Message::Binary(keys.as_bytes().to_vec().into());
        self.ws.send(msg).await.expect("send keys");
    }

    /// Sends a JSON control message.
    pub async fn send_control(&mut self, v: Value) {
        use futures::SinkExt;
        let msg = tokio_tungstenite::tungstenite::Message::Text(v.to_string().into());
        self.ws.send(msg).await.expect("send control");
    }

    /// Reads output until it contains `needle` after what was seen so far; returns the
    /// output read.
    pub async fn until_output(&mut self, needle: &str) -> String {
        use tokio_tungstenite::tungstenite::Message;
        let start = self.seen.len();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let tail = self.seen.len().saturating_sub(2000);
            let tail = (tail..self.seen.len())
                .find(|&i| self.seen.is_char_boundary(i))
                .unwrap_or(0);
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} in the terminal output within 60 s; its end: {:?}",
                &self.seen[tail..]
            );
            if let Some(at) = self.seen[start.min(self.seen.len())..].find(needle) {
                let end = start + at + needle.len();
                return self.seen[start..end].to_owned();
            }
            match self.next().await {
                Some(Message::Binary(b)) => self.record(&b),
                Some(Message::Text(t)) => {
                    assert!(
                        !t.as_str().contains("\"closed\""),
                        "closed while waiting for {needle:?}: {t}"
                    );
                }
                Some(_) => {}
                None => panic!(
                    "the terminal ended while waiting for {needle:?}; output: {}",
                    self.seen
                ),
            }
        }
    }

    /// Reads until the server closes; returns the `closed` message and the close code.
    pub async fn closed(&mut self) -> Closed {
        use tokio_tungstenite::tungstenite::Message;
        let mut message = None;
        loop {
            match self.next().await {
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "closed" {
                        message = Some(v);
                    }
                }
                Some(Message::Binary(b)) => self.record(&b),
                Some(Message::Close(frame)) => {
                    return Closed {
                        message,
                        code: frame.map(|f| u16::from(f.code)),
                    };
                }
                Some(_) => {}
                None => return Closed { message, code: None },
            }
        }
    }
}
