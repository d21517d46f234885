//! Gateway benchmark: the `cks-gateway` binary as its own process (so its memory is its own)
//! in front of the `cks-devcluster` binary with the KubeVirt simulator (`fast` profile), with
//! the operator's controllers running in this process against a warm pool. Prints:
//! - `GET /api/v1/sessions/{id}` (a cached read) next to `/healthz` on the same server, at 1
//!   and 64 concurrent clients: p50/p99 and requests/s, and the difference (the gateway's own
//!   work for a cached read);
//! - `POST /api/v1/sessions` answered 201 `running` from the warm pool, one at a time and 50 at
//!   once, next to the operator's allocation in the same run (Session created ->
//!   ClusterAssigned, both instants seen on one watch of the Sessions);
//! - validate: the HTTP answer time minus the ValidationRun's own time (created -> finished,
//!   both seen on one watch of the runs);
//! - terminal keystroke echo (WebSocket -> gateway -> SSH -> the VM's echo -> back) next to
//!   SSH straight to the same simulated VM, with the gateway's own SSH client code;
//! - the gateway's resident memory idle, with 1000 Sessions in its caches, and with 200 open
//!   terminals on top.
//!
//! Targets are printed next to the figures, not asserted. Sizes: `CKS_BENCH_GET_REQUESTS`
//! (requests per client count, default 5000), `CKS_BENCH_CREATES` (`sequential,concurrent`,
//! default `20,50`), `CKS_BENCH_CACHED_SESSIONS` (default 1000), `CKS_BENCH_TERMINALS`
//! (default 200; at most 8 per running session). `cks-devcluster` must be
//! built first (`cargo build --release -p cks-devcluster`), see `support::devcluster_bin`.
//!
//! The processes, the bench namespace, catalog and pool, and the latency summaries are the
//! operator benches' (`crates/operator/benches/support`), included by path.

#[path = "../../operator/benches/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cks_api::names::condition_types;
use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::{ClusterPool, PracticeCluster, Session, ValidationRun};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{
    DevClusterProcess, Latencies, NS, POOL, Process, SCENARIO, SSH_PORT, Scratch, bench_namespace,
    describe_bin, devcluster_bin, pool_spec, sizes, under_cargo_bench, write_catalog,
};

/// Bound on any one wait; a stuck run fails instead of hanging `make bench`.
const LIMIT: Duration = Duration::from_secs(900);

/// Targets printed next to the figures (issue #12), never asserted.
const TARGET_GET_OVERHEAD_P99_MS: f64 = 1.0;
const TARGET_RSS_MIB: f64 = 40.0;
const TARGET_ECHO_RATIO: f64 = 1.2;
/// GET measurements alternate between the two paths in this many rounds.
const GET_ROUNDS: usize = 10;
/// Keystrokes timed per echo path.
const ECHO_SAMPLES: usize = 300;

// ---------------------------------------------------------------------------------------------
// Figures

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Signed difference in milliseconds.
fn diff_ms(a: Duration, b: Duration) -> f64 {
    ms(a) - ms(b)
}

/// Checks of the pure helpers (the shared ones and this bench's). A `harness = false` bench
/// runs no `#[test]`s, so `make test` (`cargo test --benches`) starts the bench without
/// `--bench` and it calls this.
fn self_check() {
    support::self_check();
    let ms = Duration::from_millis;
    assert!(
        (diff_ms(ms(3), ms(5)) + 2.0).abs() < 1e-9,
        "a negative difference stays signed"
    );
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The `cks-gateway` binary cargo built for this benchmark.
fn gateway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cks-gateway"))
}

/// A free loopback port (bound and released; the gateway binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `cks-gateway` in proxy mode trusting loopback (so every request can be another user),
/// rate limits out of the way (they are per user and would throttle the bench, not measure
/// the gateway).
fn start_gateway(dir: &Path, kubeconfig: &Path, catalog: &Path, port: u16) -> Process {
    let terminal_key = dir.join("terminal-key");
    std::fs::write(
        &terminal_key,
        format!("{}\n", uuid::Uuid::new_v4().simple().to_string().repeat(2)),
    )
    .expect("writing the terminal key");
    let mut cmd = Command::new(gateway_bin());
    cmd.env("KUBECONFIG", kubeconfig)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--namespace", NS, "--pool", POOL])
        .arg("--scenarios")
        .arg(catalog)
        .args(["--auth", "proxy", "--trusted-proxies", "127.0.0.1/32"])
        .args(["--rate-per-minute", "1000000", "--rate-burst", "1000000"])
        .arg("--terminal-key-file")
        .arg(terminal_key)
        .args(["--ssh-port", &SSH_PORT.to_string()])
        .args(["--log-format", "json", "--log", "warn"])
        .stdout(Stdio::null());
    Process::spawn("cks-gateway", cmd, dir.join("gateway.log"))
}

/// The operator's controllers in this process, with its default settings, reaching the
/// simulated VMs as on the development control plane.
fn start_operator(client: &Client, catalog: &Path) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    use clap::Parser;
    let catalog = catalog.display().to_string();
    let ssh_port = SSH_PORT.to_string();
    let args = cks_operator::config::Args::try_parse_from([
        "cks-operator",
        "--namespace",
        NS,
        "--practice-api",
        "vmi-ip",
        "--ssh-port",
        &ssh_port,
        "--metrics-addr",
        "127.0.0.1:0",
        "--leader-election",
        "false",
        "--scenarios",
        &catalog,
    ])
    .expect("operator flags");
    let rt = cks_operator::runtime::Runtime {
        client: client.clone(),
        probe: None,
        config: None,
        scenarios: None,
        host_config: None,
    };
    tokio::spawn(async move { cks_operator::runtime::run(&args, rt, std::future::pending()).await })
}

// ---------------------------------------------------------------------------------------------
// Platform objects

/// Waits (polling every half second, bounded by [`LIMIT`]) until `n` clusters are Available.
async fn available(client: &Client, n: usize, devcluster: &mut DevClusterProcess) {
    let clusters: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + LIMIT;
    loop {
        let list = clusters
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let ready = list
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.phase == PracticeClusterPhase::Available)
            })
            .count();
        if ready >= n {
            return;
        }
        devcluster.assert_running();
        assert!(
            Instant::now() < deadline,
            "only {ready} of {n} clusters Available after {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When a watch first saw each object, and when it first saw it done.
#[derive(Debug, Default)]
struct Seen {
    first: HashMap<String, Instant>,
    done: HashMap<String, Instant>,
}

impl Seen {
    /// Time from first sight to done, for the objects in `names` that are done.
    fn durations<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Latencies {
        Latencies(
            names
                .into_iter()
                .filter_map(|n| Some(self.done.get(n)?.saturating_duration_since(*self.first.get(n)?)))
                .collect(),
        )
    }
}

/// Watches `api`, recording in the returned map when each object was first seen and when
/// `done` first held for it; returns once the watch has listed, with the watching task (abort
/// it before the server goes: a watch retries, with backoff, until then).
async fn watch_seen<K>(api: Api<K>, done: fn(&K) -> bool) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut listed_tx = Some(listed_tx);
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            let at = Instant::now();
            let object = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = listed_tx.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            let name = object.name_any();
            let mut seen = record.lock().expect("seen map");
            seen.first.entry(name.clone()).or_insert(at);
            if done(&object) {
                seen.done.entry(name).or_insert(at);
            }
        }
    });
    listed_rx.await.expect("the watch lists");
    (seen, task)
}

fn cluster_assigned(s: &Session) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == condition_types::CLUSTER_ASSIGNED && c.status == "True")
    })
}

fn run_finished(r: &ValidationRun) -> bool {
    r.status.as_ref().is_some_and(|s| s.completion_time.is_some())
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A keep-alive HTTP/1 client of the gateway.
#[derive(Clone)]
struct Http {
    base: String,
    client: HttpClient<HttpConnector, Full<Bytes>>,
}

impl Http {
    fn new(port: u16) -> Self {
        let mut connector = HttpConnector::new();
        // As browsers and proxies do; without it a small request waits on delayed ACKs.
        connector.set_nodelay(true);
        Self {
            base: format!("http://127.0.0.1:{port}"),
            client: HttpClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(256)
                .build(connector),
        }
    }

    /// Sends a request as `user` (proxy headers); returns the status and the body.
    async fn call(&self, method: &str, path: &str, user: Option<&str>, body: Option<Value>) -> (u16, Bytes) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(user) = user {
            req = req.header("x-forwarded-user", user);
            if user == "admin" {
                req = req.header("x-forwarded-groups", "cks-admins");
            }
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let resp = self
            .client
            .request(req.body(Full::new(body)).expect("a request"))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"))
            .to_bytes();
        (status, bytes)
    }

    async fn json(&self, method: &str, path: &str, user: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let (status, bytes) = self.call(method, path, user, body).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// `requests` GETs of `path` as `user` spread over `clients` concurrent clients (each its own
/// connection, one request at a time); latencies and requests per second.
async fn get_load(
    http: &Http,
    path: &str,
    user: Option<&str>,
    clients: usize,
    requests: usize,
) -> (Latencies, f64) {
    let per_client = requests.div_ceil(clients);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            // A client of its own per task, so each keeps its own connection.
            let http = Http {
                base: http.base.clone(),
                client: HttpClient::builder(TokioExecutor::new()).build({
                    let mut c = HttpConnector::new();
                    c.set_nodelay(true);
                    c
                }),
            };
            let (path, user) = (path.to_owned(), user.map(str::to_owned));
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    let (status, _) = http.call("GET", &path, user.as_deref(), None).await;
                    samples.push(t.elapsed());
                    assert_eq!(status, 200, "GET {path}");
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::with_capacity(per_client * clients);
    for t in tasks {
        all.extend(t.await.expect("a client task"));
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    (Latencies(all), rate)
}

// ---------------------------------------------------------------------------------------------
// Terminals

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Asks for a terminal on `target` of session `id` as `user` and opens its WebSocket as a
/// browser does (resize first); returns once the gateway says the shell is `ready`.
async fn open_terminal(http: &Http, user: &str, id: &str, target: &str) -> Ws {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (status, body) = http
        .json(
            "POST",
            &format!("/api/v1/sessions/{id}/terminals"),
            Some(user),
            Some(json!({"target": target})),
        )
        .await;
    assert_eq!(status, 200, "a terminal on {target} of {id}: {body}");
    let page = body["terminalUrl"].as_str().expect("a terminalUrl");
    let url = format!("{}/ws", page.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("the terminal WebSocket of {id}: {e}"));
    let resize = json!({"type": "resize", "cols": 120, "rows": 40}).to_string();
    ws.send(Message::Text(resize.into())).await.expect("a resize");
    loop {
        match ws_next(&mut ws).await {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                assert_ne!(v["type"], "closed", "the terminal of {id} closed: {v}");
                if v["type"] == "ready" {
                    return ws;
                }
            }
            Message::Close(c) => panic!("the terminal of {id} closed: {c:?}"),
            _ => {}
        }
    }
}

/// The next WebSocket message, within 30 s.
async fn ws_next(ws: &mut Ws) -> tokio_tungstenite::tungstenite::Message {
    tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("a terminal message within 30 s")
        .expect("the terminal goes on")
        .expect("a terminal message")
}

/// Reads terminal output until it contains `needle` (in what arrived during this call).
async fn ws_output_until(ws: &mut Ws, needle: &[u8]) {
    use tokio_tungstenite::tungstenite::Message;
    let mut out = Vec::new();
    while !out.windows(needle.len()).any(|w| w == needle) {
        match ws_next(ws).await {
            Message::Binary(b) => out.extend_from_slice(&b),
            Message::Text(t) => assert!(!t.as_str().contains("closed"), "the terminal closed: {t}"),
            Message::Close(c) => panic!("the terminal closed: {c:?}"),
            _ => {}
        }
    }
}

/// Keystroke echo through the gateway: `x` typed at the prompt (shown already) until its echo
/// shows, then a backspace (untimed) to keep the line empty.
async fn ws_echo(ws: &mut Ws, samples: usize) -> Latencies {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let t = Instant::now();
        ws.send(Message::Binary(Bytes::from_static(b"x")))
            .await
            .expect("a keystroke");
        ws_output_until(ws, b"x").await;
        // The first tenth warms up.
        if i >= samples / 10 {
            times.push(t.elapsed());
        }
        ws.send(Message::Binary(Bytes::from_static(b"\x7f")))
            .await
            .expect("a backspace");
        ws_output_until(ws, b"\x08").await;
    }
    Latencies(times)
}

/// The same keystrokes over SSH straight to the VM, with the gateway's own SSH client code
/// and settings (cks-ssh, `TCP_NODELAY`).
async fn ssh_echo(client: &Client, session: &str, samples: usize) -> Latencies {
    let s: Session = Api::namespaced(client.clone(), NS)
        .get(session)
        .await
        .expect("the Session");
    let cluster = s.status.and_then(|st| st.cluster).expect("an assigned cluster");
    let pc: PracticeCluster = Api::namespaced(client.clone(), NS)
        .get(&cluster)
        .await
        .expect("the cluster");
    let options = cks_ssh::AccessOptions {
        port: SSH_PORT,
        ..Default::default()
    };
    let access = cks_ssh::access::load(client, &options, &pc)
        .await
        .expect("the cluster's SSH access");
    let endpoint = access
        .targets
        .get(cks_kubevirt::naming::VmId::ControlPlane)
        .expect("the control plane's address");
    let config = russh::client::Config {
        nodelay: true,
        ..Default::default()
    };
    let connection = cks_ssh::connect_with(&access.config, endpoint, config)
        .await
        .expect("SSH to the control plane");
    let mut channel = connection.handle.channel_open_session().await.expect("a channel");
    channel
        .request_pty(false, "xterm-256color", 120, 40, 0, 0, &[])
        .await
        .expect("a PTY");
    channel.request_shell(false).await.expect("a shell");
    let until = async |channel: &mut russh::Channel<russh::client::Msg>, needle: &[u8]| {
        let mut out = Vec::new();
        while !out.windows(needle.len()).any(|w| w == needle) {
            let msg = tokio::time::timeout(Duration::from_secs(30), channel.wait())
                .await
                .expect("SSH output within 30 s")
                .expect("the SSH channel goes on");
            if let russh::ChannelMsg::Data { data } = msg {
                out.extend_from_slice(&data);
            }
        }
    };
    until(&mut channel, b"$ ").await;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let t = Instant::now();
        channel.data(&b"x"[..]).await.expect("a keystroke");
        until(&mut channel, b"x").await;
        if i >= samples / 10 {
            times.push(t.elapsed());
        }
        channel.data(&b"\x7f"[..]).await.expect("a backspace");
        until(&mut channel, b"\x08").await;
    }
    let _ = channel.close().await;
    Latencies(times)
}

// ---------------------------------------------------------------------------------------------
// The run

/// Creates a Session through the gateway as `user`; its latency and its id. Panics unless the
/// answer is 201 with `status: "running"` (the warm pool is sized for every create).
async fn create_session(http: &Http, user: &str) -> (Duration, String) {
    let t = Instant::now();
    let (status, body) = http
        .json(
            "POST",
            "/api/v1/sessions",
            Some(user),
            Some(json!({"scenarioId": SCENARIO})),
        )
        .await;
    let took = t.elapsed();
    assert_eq!(status, 201, "create as {user}: {body}");
    assert_eq!(
        body["status"], "running",
        "create as {user} from a warm pool: {body}"
    );
    (took, body["sessionId"].as_str().expect("a sessionId").to_owned())
}

/// One line: label, figures.
fn line(label: &str, figures: impl std::fmt::Display) {
    println!("  {label:<44} {figures}");
}

#[tokio::main]
async fn main() {
    if !under_cargo_bench() {
        self_check();
        return;
    }
    let get_requests = sizes("CKS_BENCH_GET_REQUESTS", &[5000])[0];
    let creates = sizes("CKS_BENCH_CREATES", &[20, 50]);
    let (sequential, concurrent) = (creates[0], creates.get(1).copied().unwrap_or(50));
    let cached = sizes("CKS_BENCH_CACHED_SESSIONS", &[1000])[0];

    println!("cks-gateway benchmark");
    line("gateway", describe_bin(&gateway_bin()));
    line(
        "control plane",
        format!("{} (simulator, fast)", describe_bin(&devcluster_bin())),
    );
    line("operator", "controllers in the bench process, default settings");

    let dir = Scratch::new("gateway");
    let catalog = dir.path().join("catalog");
    write_catalog(&catalog);
    let mut devcluster = DevClusterProcess::start(Some("fast"));
    let kubeconfig = devcluster.kubeconfig().to_path_buf();
    let client = devcluster.client().await;
    bench_namespace(&client).await;
    let operator = start_operator(&client, &catalog);
    let warm = sequential + concurrent;
    let t = Instant::now();
    Api::<ClusterPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pool_spec(POOL, warm, warm))
        .await
        .expect("creating the pool");
    available(&client, warm, &mut devcluster).await;
    line(
        &format!("warm pool of {warm} clusters ready in"),
        format!("{:.1} s", t.elapsed().as_secs_f64()),
    );

    let port = free_port();
    let mut gateway = start_gateway(dir.path(), &kubeconfig, &catalog, port);
    let http = Http::new(port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        gateway.assert_running();
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            && http.call("GET", "/readyz", None, None).await.0 == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway was not ready within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, idle_rss) = support::memory_mib(gateway.pid());

    let (sessions_seen, sessions_watch) =
        watch_seen(Api::<Session>::namespaced(client.clone(), NS), cluster_assigned).await;
    let (runs_seen, runs_watch) =
        watch_seen(Api::<ValidationRun>::namespaced(client.clone(), NS), run_finished).await;

    // Creates: one at a time, then `concurrent` at once; every user is new (one active
    // session per user).
    println!("POST /api/v1/sessions -> 201 running (warm pool)");
    let mut one_at_a_time = Vec::new();
    let mut names = Vec::new();
    for i in 0..sequential {
        let (took, id) = create_session(&http, &format!("seq-{i:03}")).await;
        one_at_a_time.push(took);
        names.push(id);
    }
    let seq_names = names.clone();
    let batch: Vec<(Duration, String)> = futures::future::join_all((0..concurrent).map(|i| {
        let http = http.clone();
        async move { create_session(&http, &format!("par-{i:03}")).await }
    }))
    .await;
    let par_names: Vec<String> = batch.iter().map(|(_, n)| n.clone()).collect();
    names.extend(par_names.iter().cloned());
    let all_assigned = Instant::now() + Duration::from_secs(30);
    while sessions_seen.lock().expect("seen").durations(&names).0.len() < names.len() {
        assert!(
            Instant::now() < all_assigned,
            "the watch never saw every Session assigned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (create_1, create_n) = (
        Latencies(one_at_a_time),
        Latencies(batch.iter().map(|(d, _)| *d).collect()),
    );
    let (alloc_1, alloc_n) = {
        let seen = sessions_seen.lock().expect("seen");
        (seen.durations(&seq_names), seen.durations(&par_names))
    };
    line("1 at a time: HTTP 201 running", create_1.summary());
    line("1 at a time: operator created -> assigned", alloc_1.summary());
    line(
        &format!("{concurrent} at once: HTTP 201 running"),
        create_n.summary(),
    );
    line(
        &format!("{concurrent} at once: operator created -> assigned"),
        alloc_n.summary(),
    );
    line(
        "gateway share (HTTP - operator), p50 / p99",
        format!(
            "1: {:+.1} / {:+.1} ms   {concurrent}: {:+.1} / {:+.1} ms",
            diff_ms(create_1.quantile(0.5), alloc_1.quantile(0.5)),
            diff_ms(create_1.quantile(0.99), alloc_1.quantile(0.99)),
            diff_ms(create_n.quantile(0.5), alloc_n.quantile(0.5)),
            diff_ms(create_n.quantile(0.99), alloc_n.quantile(0.99)),
        ),
    );

    // Cached reads: one Session's view next to the health endpoint.
    let (id, user) = (seq_names[0].clone(), "seq-000");
    let session_path = format!("/api/v1/sessions/{id}");
    println!("GET /api/v1/sessions/{{id}} (cached) next to /healthz, {get_requests} requests each");
    for clients in [1, 64] {
        // Warm-up: connections and caches.
        get_load(&http, &session_path, Some(user), clients, clients * 10).await;
        get_load(&http, "/healthz", None, clients, clients * 10).await;
        // Interleaved rounds, so background work (the operator's, other processes') falls on
        // both alike.
        let (mut get, mut health) = (Latencies::default(), Latencies::default());
        let (mut get_time, mut health_time) = (0.0, 0.0);
        for _ in 0..GET_ROUNDS {
            let (l, rate) = get_load(
                &http,
                &session_path,
                Some(user),
                clients,
                get_requests / GET_ROUNDS,
            )
            .await;
            get_time += l.0.len() as f64 / rate;
            get.0.extend(l.0);
            let (l, rate) = get_load(&http, "/healthz", None, clients, get_requests / GET_ROUNDS).await;
            health_time += l.0.len() as f64 / rate;
            health.0.extend(l.0);
        }
        let (get_rate, health_rate) = (get.0.len() as f64 / get_time, health.0.len() as f64 / health_time);
        line(
            &format!("{clients} client(s): GET session"),
            format!("{}   {get_rate:>8.0} req/s", get.summary()),
        );
        line(
            &format!("{clients} client(s): GET /healthz"),
            format!("{}   {health_rate:>8.0} req/s", health.summary()),
        );
        line(
            &format!("{clients} client(s): gateway's own work per read"),
            format!(
                "p50 {:+.3} ms   p99 {:+.3} ms   (session / healthz p99 x{:.2}; target overhead <= {TARGET_GET_OVERHEAD_P99_MS} ms p99)",
                diff_ms(get.quantile(0.5), health.quantile(0.5)),
                diff_ms(get.quantile(0.99), health.quantile(0.99)),
                get.quantile(0.99).as_secs_f64() / health.quantile(0.99).as_secs_f64().max(1e-9),
            ),
        );
    }

    // Validation: each running session validates its task once, one at a time.
    println!("POST /api/v1/sessions/{{id}}/tasks/task-1/validate (one at a time)");
    let mut answers = Vec::new();
    for (i, id) in names.iter().enumerate() {
        let user = if i < sequential {
            format!("seq-{i:03}")
        } else {
            format!("par-{:03}", i - sequential)
        };
        let t = Instant::now();
        let (status, body) = http
            .json(
                "POST",
                &format!("/api/v1/sessions/{id}/tasks/task-1/validate"),
                Some(&user),
                None,
            )
            .await;
        let took = t.elapsed();
        assert_eq!(status, 200, "validate {id}: {body}");
        assert_eq!(body["finished"], true, "validate {id}: {body}");
        answers.push((body["runId"].as_str().expect("a runId").to_owned(), took));
    }
    let run_names: Vec<String> = answers.iter().map(|(r, _)| r.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs_seen.lock().expect("seen").durations(&run_names).0.len() < run_names.len() {
        assert!(Instant::now() < deadline, "the watch never saw every run finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (http_times, own, overhead) = {
        let seen = runs_seen.lock().expect("seen");
        let mut overhead = Vec::new();
        let mut own = Vec::new();
        for (run, took) in &answers {
            let run_time = seen.durations([run]).0[0];
            own.push(run_time);
            overhead.push(took.saturating_sub(run_time));
        }
        (
            Latencies(answers.iter().map(|(_, d)| *d).collect()),
            Latencies(own),
            Latencies(overhead),
        )
    };
    line("HTTP answer", http_times.summary());
    line("the ValidationRun's own (created -> finished)", own.summary());
    line("overhead (HTTP - run, per request)", overhead.summary());

    // Terminals: keystroke echo through the gateway next to SSH straight to the same VM,
    // alternating so both see the same background.
    println!("terminal keystroke echo on one simulated VM ({ECHO_SAMPLES} keystrokes each)");
    let mut ws = open_terminal(&http, user, &id, "control-plane").await;
    ws_output_until(&mut ws, b"$ ").await;
    let (mut via_gateway, mut direct) = (Latencies::default(), Latencies::default());
    for _ in 0..2 {
        via_gateway.0.extend(ws_echo(&mut ws, ECHO_SAMPLES / 2).await.0);
        direct.0.extend(ssh_echo(&client, &id, ECHO_SAMPLES / 2).await.0);
    }
    drop(ws);
    line(
        "WebSocket -> gateway -> SSH -> echo -> back",
        via_gateway.summary(),
    );
    line("SSH straight to the VM", direct.summary());
    line(
        "ratio gateway / direct",
        format!(
            "p50 x{:.2}   p99 x{:.2}   (target <= x{TARGET_ECHO_RATIO})",
            via_gateway.quantile(0.5).as_secs_f64() / direct.quantile(0.5).as_secs_f64().max(1e-9),
            via_gateway.quantile(0.99).as_secs_f64() / direct.quantile(0.99).as_secs_f64().max(1e-9),
        ),
    );

    // Memory with many Sessions in the gateway's caches: created straight through the API
    // (the gateway's per-user limit is not what is measured), queued on the exhausted pool.
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(0..cached)
        .map(|i| {
            let sessions = sessions.clone();
            async move {
                let s: Session = serde_json::from_value(json!({
                    "apiVersion": "cks.io/v1alpha1", "kind": "Session",
                    "metadata": {"name": format!("cached-{i:04}"), "namespace": NS},
                    "spec": {"scenario": SCENARIO, "user": format!("cached-{i:04}"), "pool": POOL, "durationMinutes": 60},
                }))
                .expect("a Session");
                sessions.create(&PostParams::default(), &s).await.expect("creating a Session");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let want = cached + names.len();
    let deadline = Instant::now() + LIMIT;
    loop {
        let (status, body) = http
            .json("GET", "/api/v1/admin/sessions?all=true", Some("admin"), None)
            .await;
        let have = body["sessions"].as_array().map_or(0, Vec::len);
        if status == 200 && have >= want {
            break;
        }
        gateway.assert_running();
        assert!(
            Instant::now() < deadline,
            "the gateway lists {have} of {want} Sessions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (cached_peak, cached_rss) = support::memory_mib(gateway.pid());
    println!("gateway resident memory (VmRSS of its process)");
    line("idle (caches synced, warm pool)", format!("{idle_rss:>6.1} MiB"));
    line(
        &format!("{want} Sessions cached"),
        format!(
            "{cached_rss:>6.1} MiB (peak {cached_peak:.1} MiB; target <= {TARGET_RSS_MIB} MiB with 1000 Sessions and 200 terminals)"
        ),
    );

    // Open terminals on top: spread over the running sessions' VMs (the gateway allows 8 per
    // session), each a WebSocket, an SSH connection and a shell.
    let terminals = sizes("CKS_BENCH_TERMINALS", &[200])[0];
    let users: Vec<String> = (0..names.len())
        .map(|i| {
            if i < sequential {
                format!("seq-{i:03}")
            } else {
                format!("par-{:03}", i - sequential)
            }
        })
        .collect();
    let t = Instant::now();
    let open: Vec<Ws> = futures::stream::iter(0..terminals)
        .map(|i| {
            let http = http.clone();
            let k = i % names.len();
            let (user, id) = (users[k].clone(), names[k].clone());
            let target = if (i / names.len()) % 2 == 0 {
                "control-plane"
            } else {
                "worker"
            };
            async move {
                let mut ws = open_terminal(&http, &user, &id, target).await;
                // The shell is up once it prompts.
                ws_output_until(&mut ws, b"$ ").await;
                ws
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (terminals_peak, terminals_rss) = support::memory_mib(gateway.pid());
    line(
        &format!(
            "+ {} open terminals (opened in {:.1} s)",
            open.len(),
            t.elapsed().as_secs_f64()
        ),
        format!("{terminals_rss:>6.1} MiB (peak {terminals_peak:.1} MiB; target <= {TARGET_RSS_MIB} MiB)"),
    );
    drop(open);

    gateway.assert_running();
    devcluster.assert_running();
    let problems = gateway.log_lines();
    if problems > 0 {
        line("gateway warnings/errors logged", problems);
    }
    // Stop everything that talks to the servers before they go.
    sessions_watch.abort();
    runs_watch.abort();
    operator.abort();
    let _ = (sessions_watch.await, runs_watch.await, operator.await);
    drop(gateway);
    drop(devcluster);
}
