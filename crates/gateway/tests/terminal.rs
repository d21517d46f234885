//! Terminals against the whole platform in-process: a terminal URL opens a shell on the VM
//! over the gateway's WebSocket, follows resizes, works on any replica that shares the key,
//! stops working when its link expires or its session ends, closes when idle, is bounded
//! per session, and a flood from the VM waits in the VM instead of in gateway memory.

mod support;

use serde_json::{Value, json};
use support::{Gateway, Platform, Term, bearer, eventually, hdrs, platform, token_file};

const SESSIONS: &str = "/api/v1/sessions";

fn key_file(dir: &std::path::Path) -> String {
    let path = dir.join("terminal-key");
    std::fs::write(&path, "k3y-for-terminal-urls-in-tests-0123456789\n").unwrap();
    path.to_str().unwrap().to_owned()
}

async fn gateway(p: &Platform, dir: &std::path::Path, extra: &[&str]) -> Gateway {
    let tokens = token_file(dir);
    let tokens = tokens.to_str().unwrap().to_owned();
    let key = key_file(dir);
    let mut flags = vec![
        "--auth",
        "token",
        "--token-file",
        &tokens,
        "--terminal-key-file",
        &key,
        "--ssh-port",
        "2222",
        "--create-wait-seconds",
        "30",
    ];
    flags.extend_from_slice(extra);
    p.gateway(&flags).await
}

/// A running session of `who` and its id.
async fn running_session(gw: &Gateway, who: &[(&str, &str)]) -> String {
    let created = gw.post(SESSIONS, who, r#"{"scenarioId": "hardening"}"#).await;
    assert_eq!(
        (created.status, created.json["status"].as_str()),
        (201, Some("running")),
        "{created:?}"
    );
    created.json["sessionId"].as_str().unwrap().to_owned()
}

async fn terminal_url(gw: &Gateway, who: &[(&str, &str)], id: &str, target: &str) -> Value {
    let a = gw
        .post(
            &format!("{SESSIONS}/{id}/terminals"),
            who,
            &json!({"target": target}).to_string(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    a.json
}

/// The URL on another gateway (same path, other host).
fn on(gw: &Gateway, url: &str) -> String {
    let path = &url[url.find("/terminal/").expect("a terminal path")..];
    format!("{}{path}", gw.base)
}

/// `url` with one character of its signature changed.
fn forge(url: &str) -> String {
    let (head, tag) = url.rsplit_once('.').unwrap();
    let first = if tag.starts_with('A') { 'B' } else { 'A' };
    format!("{head}.{first}{}", &tag[1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_runs_a_shell_on_any_replica_and_closes_when_the_session_ends() {
    let p = platform(1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&p, dir.path(), &["--terminals-per-session", "2"]).await;
    let (alice, bob) = ([bearer("alice-token")], [bearer("bob-token")]);
    let (alice, bob) = (hdrs(&alice), hdrs(&bob));
    let id = running_session(&gw, &alice).await;
    let path = format!("{SESSIONS}/{id}/terminals");

    // Who and what may open a terminal.
    gw.post(&path, &bob, r#"{"target": "control-plane"}"#)
        .await
        .assert_error(404, "SESSION_NOT_FOUND");
    gw.post(&path, &alice, r#"{"target": "worker-7"}"#)
        .await
        .assert_error(400, "INVALID_TARGET");
    gw.post(&path, &alice, r#"{"target": "../etc"}"#)
        .await
        .assert_error(400, "INVALID_TARGET");
    gw.post(&path, &[], r#"{"target": "control-plane"}"#)
        .await
        .assert_error(401, "UNAUTHENTICATED");

    // The reference frontend's call: `worker-node` is worker 1; the URL is absolute, on this
    // gateway, and holds no address of a VM.
    let worker = terminal_url(&gw, &alice, &id, "worker-node").await;
    assert_eq!(worker["target"], "worker-1");
    let cp = terminal_url(&gw, &alice, &id, "control-plane").await;
    let url = cp["terminalUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{}/terminal/", gw.base)), "{url}");
    let view = gw.get(&format!("{SESSIONS}/{id}"), &alice).await;
    let pc = p.cluster(view.json["assignedCluster"].as_str().unwrap()).await;
    for vm in &pc.status.as_ref().unwrap().vms {
        let ip = vm.ip.as_deref().unwrap();
        assert!(!url.contains(ip), "no VM address in {url}");
    }
    assert!(
        cp["expiresAt"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );

    // The page: embeddable, never cached, never passed on as a Referer.
    let page = gw.get(&url[gw.base.len()..], &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert_eq!(page.header("cache-control"), "no-store");
    assert!(
        page.header("content-security-policy")
            .contains("frame-ancestors 'self'")
    );
    assert!(page.text.contains("/terminal-fallback.js"), "{}", page.text);
    let script = gw.get("/terminal-fallback.js", &[]).await;
    assert_eq!(script.status, 200);
    assert!(script.header("content-type").starts_with("text/javascript"));
    // Without an upgrade the socket path says what it is.
    gw.get(&format!("{}/ws", &url[gw.base.len()..]), &[])
        .await
        .assert_error(426, "UPGRADE_REQUIRED");

    // A shell on the control plane: the command really runs there.
    let mut term = Term::open(&url).await;
    let ready = term.control("ready").await;
    assert_eq!(
        (ready["target"].as_str(), ready["terminalId"].as_str()),
        (Some("control-plane"), cp["terminalId"].as_str())
    );
    term.send_control(json!({"type": "resize", "cols": 100, "rows": 30}))
        .await;
    term.keys("echo MARK-$((6*7)); hostname\r").await;
    let out = term.until_output("MARK-42").await;
    assert!(!out.is_empty());
    term.until_output("control-plane").await;
    term.send_control(json!({"type": "ping"})).await;
    term.control("pong").await;
    term.keys("stty size\r").await;
    term.until_output("30 100").await;

    // The student fixes the VMs through terminals; validation passes.
    let failed = gw
        .post(&format!("{SESSIONS}/{id}/tasks/task-2/validate"), &alice, "")
        .await;
    assert_eq!(failed.json["success"], false, "{failed:?}");
    term.keys("mkdir -p /etc/cks && echo enforce > /etc/cks/mode && echo FIXED-$((1+1))\r")
        .await;
    term.until_output("FIXED-2").await;
    let mut on_worker = Term::open(worker["terminalUrl"].as_str().unwrap()).await;
    on_worker.control("ready").await;
    on_worker
        .keys("mkdir -p /etc/cks && echo hardened > /etc/cks/worker-ok && echo W-$((2+2))\r")
        .await;
    on_worker.until_output("W-4").await;
    let passed = gw
        .post(&format!("{SESSIONS}/{id}/tasks/task-2/validate"), &alice, "")
        .await;
    assert_eq!(passed.json["success"], true, "{passed:?}");

    // The per-session limit (2 here): a third is refused with its own reason.
    let mut third = Term::open(&url).await;
    let refused = third.closed().await;
    assert_eq!(refused.code, Some(4029), "{refused:?}");
    assert_eq!(refused.message.as_ref().unwrap()["reason"], "limit");
    // Closing one frees its place.
    drop(on_worker);
    eventually("the worker terminal's place freed", || async {
        let metrics = gw.get("/metrics", &[]).await.text;
        metrics
            .lines()
            .any(|l| l == "cks_gateway_terminals_open 1")
            .then_some(())
    })
    .await;
    let mut again = Term::open(&url).await;
    again.control("ready").await;
    drop(again);

    // Another replica with the same key opens the same URL; a forged one is refused.
    let second = gateway(&p, dir.path(), &[]).await;
    let mut replica = Term::open(&on(&second, &url)).await;
    replica.control("ready").await;
    replica.keys("echo REPLICA-$((3*3))\r").await;
    replica.until_output("REPLICA-9").await;
    let forged = forge(&url);
    assert_eq!(gw.get(&forged[gw.base.len()..], &[]).await.status, 410);
    let mut bad = Term::open(&forged).await;
    let refused = bad.closed().await;
    assert_eq!(refused.code, Some(4001), "{refused:?}");
    assert_eq!(refused.message.as_ref().unwrap()["reason"], "expired");

    // The session ends: every open terminal closes, on both replicas, and the URL is dead.
    let deleted = gw.call("DELETE", &format!("{SESSIONS}/{id}"), &alice, None).await;
    assert!(matches!(deleted.status, 200 | 204), "{deleted:?}");
    for t in [&mut term, &mut replica] {
        let ended = t.closed().await;
        assert_eq!(ended.code, Some(4003), "{ended:?}");
        assert_eq!(ended.message.as_ref().unwrap()["reason"], "session-ended");
    }
    let mut late = Term::open(&url).await;
    assert_eq!(late.closed().await.code, Some(4003));
    let again = gw.post(&path, &alice, r#"{"target": "control-plane"}"#).await;
    assert!(matches!(again.status, 404 | 409), "{again:?}");

    // The cluster resets; the next student gets it without the previous one's changes.
    let created = gw.post(SESSIONS, &bob, r#"{"scenarioId": "hardening"}"#).await;
    assert_eq!(created.status, 201, "{created:?}");
    let next = created.json["sessionId"].as_str().unwrap().to_owned();
    let view = eventually("Bob's session running", || async {
        let v = gw.get(&format!("{SESSIONS}/{next}"), &bob).await.json;
        (v["status"] == "running").then_some(v)
    })
    .await;
    assert_eq!(
        view["assignedCluster"],
        pc.metadata.name.clone().unwrap().as_str()
    );
    let url = terminal_url(&gw, &bob, &next, "control-plane").await["terminalUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut fresh = Term::open(&url).await;
    fresh.control("ready").await;
    fresh
        .keys("test -e /etc/cks/mode && echo DIRTY-$((1)) || echo CLEAN-$((2))\r")
        .await;
    let out = fresh.until_output("-2").await;
    assert!(out.contains("CLEAN-2") && !out.contains("DIRTY-1"), "{out}");
}

/// Resident memory of this process (the whole platform runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_expire_idle_terminals_close_and_a_flood_waits_in_the_vm() {
    let p = platform(1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = [bearer("alice-token")];
    let alice = hdrs(&alice);

    // Idle: a terminal nobody types in closes after the idle timeout.
    let quick = gateway(
        &p,
        dir.path(),
        &["--terminal-idle-seconds", "1", "--terminal-url-ttl-seconds", "2"],
    )
    .await;
    let id = running_session(&quick, &alice).await;
    let url = terminal_url(&quick, &alice, &id, "control-plane").await["terminalUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut idle = Term::open(&url).await;
    idle.control("ready").await;
    let closed = idle.closed().await;
    assert_eq!(closed.code, Some(4008), "{closed:?}");
    assert_eq!(closed.message.as_ref().unwrap()["reason"], "idle");

    // Expiry: once the link's time is up, the page is gone and the socket refuses.
    let page_path = url[quick.base.len()..].to_owned();
    eventually("the terminal link expired", || async {
        (quick.get(&page_path, &[]).await.status == 410).then_some(())
    })
    .await;
    let mut expired = Term::open(&url).await;
    let closed = expired.closed().await;
    assert_eq!(closed.code, Some(4001), "{closed:?}");
    assert_eq!(closed.message.as_ref().unwrap()["reason"], "expired");

    // A flood: 64 MB of output while the browser reads nothing. It must wait in the VM (the
    // SSH window and TCP), so the gateway's memory grows by far less than the flood.
    let gw = gateway(&p, dir.path(), &[]).await;
    let url = terminal_url(&gw, &alice, &id, "control-plane").await["terminalUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut flood = Term::open(&url).await;
    flood.control("ready").await;
    flood
        .keys("stty -echo; echo START; head -c 64000000 /dev/zero | tr '\\0' x; echo; echo FLOOD-$((5*5))\r")
        .await;
    flood.until_output("START").await;
    let before = rss();
    // The browser reads nothing for a while: an unbounded relay would take in tens of MB.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let grown = rss().saturating_sub(before);
    let received_before = flood.bytes;
    // Then everything arrives, in order, once the browser reads again.
    flood.until_output("FLOOD-25").await;
    let total = flood.bytes;
    println!(
        "flood: {} MB delivered; {} KB arrived before the pause ended; RSS grew {} KiB while the browser did not read",
        total / 1_000_000,
        received_before / 1000,
        grown / 1024
    );
    assert!(total >= 64_000_000, "the whole flood arrived: {total} bytes");
    assert!(
        grown < 24 * 1024 * 1024,
        "memory grew {grown} bytes while a 64 MB flood waited"
    );
}
