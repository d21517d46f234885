//! Shared pieces of the operator and gateway benchmarks (the gateway's includes this file by
//! path): the development control plane and the operator as separate processes (so each one's
//! memory is its own), a bench namespace with the SSH key Secret the simulated VMs accept, the
//! bench scenario catalog and warm pool, watch-driven waiting, and latency summaries.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cks_api::ClusterPool;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Namespace of every bench object.
pub const NS: &str = "bench";

/// Port of the simulated VMs' SSH servers.
pub const SSH_PORT: u16 = 2222;

/// The warm pool of the benches.
pub const POOL: &str = "warm";

/// The bench scenario: one task, one rule, no setup steps (see [`write_catalog`]).
pub const SCENARIO: &str = "bench-noop";

/// The repository root (benches run with the package directory as working directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target profile directory the running bench was built into (`target/release`): the
/// bench runs from its `deps/` directory.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the bench runs from <profile>/deps")
        .to_path_buf()
}

/// `$CKS_DEVCLUSTER_BIN`, else `cks-devcluster` in the bench's target profile directory; it
/// is another package's binary, so `cargo bench` does not build it: `cargo build --release
/// -p cks-devcluster` first.
pub fn devcluster_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CKS_DEVCLUSTER_BIN") {
        return bin.into();
    }
    let bin = profile_dir().join("cks-devcluster");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release --locked -p cks-devcluster` first \
         (or point CKS_DEVCLUSTER_BIN at a build)",
        bin.display()
    );
    bin
}

/// `$CKS_OPERATOR_BIN`, else the `cks-operator` binary cargo built for the operator's
/// benchmarks (in the bench's target profile directory for another package's bench).
pub fn operator_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CKS_OPERATOR_BIN") {
        return bin.into();
    }
    option_env!("CARGO_BIN_EXE_cks-operator")
        .map_or_else(|| profile_dir().join("cks-operator"), PathBuf::from)
}

/// `PATH (built TIME)`, so a stale binary shows in the figures' header.
pub fn describe_bin(path: &Path) -> String {
    let built = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map_or_else(
            || "?".to_owned(),
            |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        );
    format!("{} (built {built})", path.display())
}

/// A directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory whose name starts with `tag`.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cks-bench-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`); `None` once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Peak and current resident memory of a process, in MiB, for printing.
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let mib = |field| status_kib(pid, field).unwrap_or(0) as f64 / 1024.0;
    (mib("VmHWM"), mib("VmRSS"))
}

/// A child process stopped with SIGTERM (then SIGKILL) when dropped, its stderr in a file.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` (stdin closed, stderr into `log`); `name` is for messages.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let stderr = std::fs::File::create(&log).expect("creating a log file");
        let child = cmd
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({:?}): {e}", cmd.get_program()));
        Self { name, child, log }
    }

    /// Process id, for its memory figures.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the end of the log when the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{} exited ({status}); end of its log:\n{}",
                self.name,
                tail.join("\n")
            );
        }
    }

    /// Lines logged so far, at the warn level the benches run with: problems only.
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |l| l.lines().count())
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SIGTERM lets the control plane remove its disks; no signal crate in the workspace.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `cks-devcluster` binary running with the cks-lab CRDs, optionally with the KubeVirt
/// simulator, on a free loopback port.
#[derive(Debug)]
pub struct DevClusterProcess {
    process: Process,
    kubeconfig: PathBuf,
    // Dropped after the process (field order), so the disks are gone only once it stopped.
    _dir: Scratch,
}

impl DevClusterProcess {
    /// Starts the server and waits until it serves with the CRDs applied. `profile` is the
    /// simulator profile (`fast`, `realistic`), `None` for no simulator.
    pub fn start(profile: Option<&str>) -> Self {
        let dir = Scratch::new("devcluster");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut cmd = Command::new(devcluster_bin());
        cmd.arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--apply")
            .arg(repo_root().join("crds"))
            .arg("--log")
            .arg("warn")
            .stdout(Stdio::piped());
        if let Some(profile) = profile {
            cmd.args(["--simulate-kubevirt", "--kubevirt-profile", profile])
                .args(["--golden-image", "vm-templates/golden"])
                .args(["--vm-ssh-port", &SSH_PORT.to_string()])
                .arg("--vm-disk-dir")
                .arg(dir.path().join("disks"));
        }
        let mut process = Process::spawn("cks-devcluster", cmd, dir.path().join("devcluster.log"));
        // The banner comes after the manifests are applied, so the CRDs exist once it shows.
        let stdout = process.child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("cks-devcluster serving") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    process.assert_running();
                }
                Err(_) => {
                    process.assert_running();
                    panic!("cks-devcluster did not start serving within a minute");
                }
            }
        }
        Self {
            process,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Process id, for its memory figures.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube-rs client of the server.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a client config from the kubeconfig");
        Client::try_from(config).expect("a client")
    }

    /// Panics with the end of the server's log if it exited.
    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }
}

/// The `cks-operator` binary against a [`DevClusterProcess`], managing [`NS`] with the
/// simulator's access settings and no leader election.
#[derive(Debug)]
pub struct OperatorProcess {
    process: Process,
    _dir: Scratch,
}

/// `MALLOC_ARENA_MAX` of the image: glibc's arenas (up to eight per core by default) kept
/// ~10 MiB of freed memory in the operator after a burst of 1 000 Sessions.
pub const IMAGE_MALLOC_ARENA_MAX: &str = "2";

/// The operator's `MALLOC_ARENA_MAX`: the bench's own if set, else the image's.
pub fn malloc_arena_max() -> String {
    std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| IMAGE_MALLOC_ARENA_MAX.to_owned())
}

impl OperatorProcess {
    /// Starts the operator. Retry and poll intervals are the operator's defaults unless
    /// `CKS_RETRY_BASE_SECONDS` / `CKS_POLL_SECONDS` are set (the process inherits them).
    pub fn start(server: &DevClusterProcess) -> Self {
        Self::start_with_catalog(server, &repo_root().join("scenarios"))
    }

    /// [`OperatorProcess::start`] with the scenario catalog in `scenarios`.
    pub fn start_with_catalog(server: &DevClusterProcess, scenarios: &Path) -> Self {
        let dir = Scratch::new("operator");
        let mut cmd = Command::new(operator_bin());
        cmd.env("KUBECONFIG", server.kubeconfig())
            // As the image runs it (see the Dockerfile), unless the bench is told otherwise.
            .env("MALLOC_ARENA_MAX", malloc_arena_max())
            .args(["--namespace", NS])
            .args(["--practice-api", "vmi-ip"])
            .args(["--ssh-port", &SSH_PORT.to_string()])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--leader-election", "false"])
            .args(["--log-format", "json", "--log", "warn"])
            .arg("--scenarios")
            .arg(scenarios)
            .stdout(Stdio::null());
        let process = Process::spawn("cks-operator", cmd, dir.path().join("operator.log"));
        Self { process, _dir: dir }
    }

    /// Process id, for its memory figures.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Warnings and errors the operator logged so far.
    pub fn problems_logged(&self) -> usize {
        self.process.log_lines()
    }

    /// The most frequent logged problems, as `count × target message: first error seen`.
    pub fn top_problems(&self, limit: usize) -> Vec<String> {
        top_problems(
            &std::fs::read_to_string(&self.process.log).unwrap_or_default(),
            limit,
        )
    }

    /// Panics with the end of the operator's log if it exited.
    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }
}

/// The test-only VM key of the bench's `ssh-key` Secret (fixed seed, never used elsewhere).
pub fn ssh_key() -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]))
}

/// Creates [`NS`] and the `ssh-key` Secret pools reference.
pub async fn bench_namespace(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).expect("a Namespace"),
        )
        .await
        .expect("creating the bench namespace");
    let key = ssh_key();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "ssh-key"},
        "stringData": {
            "ssh-privatekey": key.to_openssh(LineEnding::LF).expect("PEM of the key").to_string(),
            "ssh-publickey": key.public_key().to_openssh().expect("public key"),
        },
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the ssh-key Secret");
}

/// Writes the bench catalog into `root`: [`SCENARIO`], one task whose rule reads the
/// practice cluster's API, no setup steps, 1 worker.
pub fn write_catalog(root: &Path) {
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("catalog directory");
        std::fs::write(path, text).expect("catalog file");
    };
    write(
        "categories.yaml",
        "categories:\n  - id: cluster-hardening\n    name: Cluster Hardening\n    description: Bench.\n",
    );
    write(
        &format!("{SCENARIO}/metadata.yaml"),
        &format!(
            "id: {SCENARIO}\ntitle: Benchmark no-op\ndescription: A scenario without setup steps.\n\
             version: \"1.0.0\"\ndifficulty: beginner\ntimeEstimate: 5m\ntopics: [benchmark]\n\
             category: cluster-hardening\nrequirements:\n  nodes:\n    controlPlane: 1\n    workers: 1\n"
        ),
    );
    write(
        &format!("{SCENARIO}/tasks/01-look.md"),
        "# Look around\n## Description\nNothing to do.\n## Objectives\n- Look\n## Hints\n\
         <details>\n<summary>Where to start</summary>\nkubectl get namespaces\n</details>\n",
    );
    write(
        &format!("{SCENARIO}/validation/01-validation.yaml"),
        "validation:\n- id: default-namespace\n  type: resource_exists\n  resource:\n    kind: Namespace\n    \
         name: default\n  errorMessage: \"Namespace default not found\"\n",
    );
}

/// A pool `name` keeping `clusters` Available and no more (at least one), building
/// `in_flight` at once (at least one), with 1-worker clusters.
pub fn pool_spec(name: &str, clusters: usize, in_flight: usize) -> ClusterPool {
    let n = i32::try_from(clusters).expect("pool size fits i32");
    let in_flight = i32::try_from(in_flight.max(1)).expect("provisioning limit fits i32");
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ClusterPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "minAvailable": n, "maxClusters": n.max(1), "maxConcurrentProvisioning": in_flight,
            "template": {
                "kubernetesVersion": "1.33.0",
                "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
                "workers": {"count": 1, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
                "goldenImage": {"namespace": "vm-templates", "name": "golden"},
                "sshKeySecretRef": {"name": "ssh-key"},
            },
        },
    }))
    .expect("a ClusterPool")
}

/// Watches `api` (objects matching `labels`) until `done` holds for the current set of
/// objects by name, or panics after `limit` saying `what` it waited for. Driven by watch
/// events, so waiting costs the server nothing per check; `alive` runs every second and
/// panics if a process the wait depends on is gone, so a dead server fails the run at once.
pub async fn wait_for<K>(
    api: Api<K>,
    labels: &str,
    what: &str,
    limit: Duration,
    mut alive: impl FnMut(),
    mut done: impl FnMut(&BTreeMap<String, K>) -> bool,
) -> BTreeMap<String, K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut objects = BTreeMap::new();
    let mut initial = BTreeMap::new();
    let mut events =
        std::pin::pin!(watcher(api, watcher::Config::default().labels(labels)).default_backoff());
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = events.next() => event.expect("the watch ended"),
            _ = tick.tick() => {
                alive();
                continue;
            }
            () = tokio::time::sleep_until(deadline) => panic!("timed out after {limit:?} waiting for {what}"),
        };
        match event {
            Ok(watcher::Event::Apply(o)) => {
                objects.insert(o.name_any(), o);
            }
            Ok(watcher::Event::Delete(o)) => {
                objects.remove(&o.name_any());
            }
            Ok(watcher::Event::Init) => initial.clear(),
            Ok(watcher::Event::InitApply(o)) => {
                initial.insert(o.name_any(), o);
            }
            Ok(watcher::Event::InitDone) => objects = std::mem::take(&mut initial),
            // The watcher retries with backoff; `alive` and the deadline bound it.
            Err(_) => continue,
        }
        if done(&objects) {
            return objects;
        }
    }
}

/// Latencies of one measured batch.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    /// The `p`-quantile (0..=1), nearest rank.
    pub fn quantile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// `p50 … p99 … max … (n=…)` in milliseconds.
    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms   (n={})",
            ms(self.quantile(0.50)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0)),
            self.0.len()
        )
    }
}

/// The most frequent problems in a JSON log of the operator (tracing-subscriber's `json`
/// format), as `count × target message: first error seen`, most frequent first.
fn top_problems(log: &str, limit: usize) -> Vec<String> {
    let mut by_message: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for line in log.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &entry["fields"];
        let message = format!(
            "{} {}",
            entry["target"].as_str().unwrap_or("?"),
            fields["message"].as_str().unwrap_or("?")
        );
        let error = fields["error"].as_str().unwrap_or_default().to_owned();
        by_message.entry(message).or_insert((0, error)).0 += 1;
    }
    let mut top: Vec<_> = by_message.into_iter().collect();
    top.sort_by_key(|(_, (count, _))| std::cmp::Reverse(*count));
    top.into_iter()
        .take(limit)
        .map(|(message, (count, error))| format!("{count} × {message}: {error}"))
        .collect()
}

/// `VAR` as a comma-separated list of numbers, else `default`.
pub fn sizes(var: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(v) => parse_sizes(var, &v),
        Err(_) => default.to_vec(),
    }
}

/// `1, 10,50` -> `[1, 10, 50]`; empty items are skipped, anything else not a number panics
/// naming `var`.
fn parse_sizes(var: &str, value: &str) -> Vec<usize> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .unwrap_or_else(|e| panic!("{var}: {s:?} is not a number: {e}"))
        })
        .collect()
}

/// Checks of the pure helpers above. A `harness = false` bench runs no `#[test]`s, so the
/// benches call this when `cargo test --benches` starts them without `--bench`.
pub fn self_check() {
    let ms = Duration::from_millis;
    let hundred = Latencies((1..=100).rev().map(ms).collect());
    assert_eq!(hundred.quantile(0.50), ms(50), "p50 of 1..=100 ms");
    assert_eq!(hundred.quantile(0.99), ms(99), "p99 of 1..=100 ms");
    assert_eq!(hundred.quantile(1.0), ms(100), "max of 1..=100 ms");
    assert_eq!(Latencies(vec![ms(7)]).quantile(0.99), ms(7), "p99 of one sample");
    assert_eq!(Latencies::default().quantile(0.5), Duration::ZERO, "no samples");
    assert!(
        status_kib(std::process::id(), "VmRSS").is_some_and(|k| k > 0),
        "this process's RSS reads from /proc"
    );
    assert_eq!(status_kib(u32::MAX, "VmRSS"), None, "no such process");

    assert_eq!(parse_sizes("V", "1, 10,,50 "), vec![1, 10, 50]);
    assert!(parse_sizes("V", "").is_empty(), "an empty list selects nothing");
    // The expected panic's message would read like a failure.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let refused = std::panic::catch_unwind(|| parse_sizes("V", "1,x")).is_err();
    std::panic::set_hook(hook);
    assert!(refused, "a non-number is refused");

    let log = concat!(
        r#"{"level":"ERROR","target":"kube_client::client::builder","fields":{"message":"failed with error refused"}}"#,
        "\n",
        r#"{"level":"WARN","target":"cks_operator::cluster","fields":{"message":"reconcile failed","error":"first"}}"#,
        "\n",
        "not json\n",
        r#"{"level":"WARN","target":"cks_operator::cluster","fields":{"message":"reconcile failed","error":"second"}}"#,
        "\n",
    );
    assert_eq!(
        top_problems(log, 5),
        vec![
            "2 × cks_operator::cluster reconcile failed: first".to_owned(),
            "1 × kube_client::client::builder failed with error refused: ".to_owned(),
        ]
    );
    assert_eq!(top_problems(log, 1).len(), 1, "limited to the most frequent");
}

/// True when run by `cargo bench` (which passes `--bench`); `cargo test --benches` passes
/// nothing and must not start minutes of simulation.
pub fn under_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}
