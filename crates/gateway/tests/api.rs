//! The gateway against the whole platform in-process (development control plane, KubeVirt
//! simulator, the operator's runtime): every route's success and error statuses, who may
//! see and do what, CORS, body limits, idempotent creates, the exhausted pool, admin actions.

mod support;

use serde_json::{Value, json};
use support::{Answer, Gateway, Platform, SseItem, bearer, eventually, hdrs, platform, ssh, token_file};

const SESSIONS: &str = "/api/v1/sessions";

fn session_id(a: &Answer) -> String {
    a.json["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("a sessionId: {a:?}"))
        .to_owned()
}

/// Waits until `GET /sessions/{id}` as `who` satisfies `check`.
async fn wait_session(
    gw: &Gateway,
    who: &[(&str, &str)],
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("session {id}: {what}"), || async {
        let a = gw.get(&format!("{SESSIONS}/{id}"), who).await;
        (a.status == 200 && check(&a.json)).then_some(a.json)
    })
    .await
}

async fn token_gateway(p: &Platform, dir: &std::path::Path, extra: &[&str]) -> Gateway {
    let path = token_file(dir);
    let path = path.to_str().unwrap().to_owned();
    let mut flags = vec!["--auth", "token", "--token-file", &path];
    flags.extend_from_slice(extra);
    p.gateway(&flags).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_works_through_a_session_and_no_one_else_can_touch_it() {
    let p = platform(1, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = token_gateway(
        &p,
        dir.path(),
        &["--create-wait-seconds", "30", "--sse-heartbeat-seconds", "0.2"],
    )
    .await;
    let (alice, bob, root) = (bearer("alice-token"), bearer("bob-token"), bearer("root-token"));
    let (alice, bob, root) = ([alice], [bob], [root]);
    let (alice, bob, root) = (hdrs(&alice), hdrs(&bob), hdrs(&root));

    // Create: 201, running as soon as the warm cluster is claimed.
    let created = gw.post(SESSIONS, &alice, r#"{"scenarioId": "hardening"}"#).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json["status"], "running", "{created:?}");
    let id = session_id(&created);
    assert_eq!(created.header("location"), format!("{SESSIONS}/{id}"));

    // The full view.
    let s = gw.get(&format!("{SESSIONS}/{id}"), &alice).await;
    assert_eq!(s.status, 200, "{s:?}");
    let v = &s.json;
    assert_eq!(
        (v["id"].as_str(), v["scenarioId"].as_str()),
        (Some(id.as_str()), Some("hardening"))
    );
    assert_eq!(
        (v["user"].as_str(), v["pool"].as_str()),
        (Some("alice"), Some("pool"))
    );
    assert!(
        matches!(v["phase"].as_str(), Some("Initializing" | "Ready")),
        "{v}"
    );
    let cluster = v["assignedCluster"].as_str().expect("a cluster").to_owned();
    let task_ids: Vec<&str> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(task_ids, ["task-1", "task-2"]);
    assert!(
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "pending")
    );
    assert!(
        v["expirationTime"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert!(!s.text.contains("10."), "no VM address in the view: {}", s.text);

    // Events: the current state at once, then each change; only for the owner.
    let events_path = format!("{SESSIONS}/{id}/events");
    gw.events(&events_path, &bob)
        .await
        .err()
        .expect("404")
        .assert_error(404, "SESSION_NOT_FOUND");
    let mut events = gw.events(&events_path, &alice).await.expect("an event stream");
    let (first_id, first) = events.until("session", |_| true).await;
    assert_eq!(
        (first["sessionId"].as_str(), first["status"].as_str()),
        (Some(id.as_str()), Some("running"))
    );
    assert!(!first_id.is_empty());

    // Lists: own for students, all for admins.
    let mine = gw.get(SESSIONS, &alice).await;
    assert_eq!(mine.json.as_array().map(Vec::len), Some(1), "{mine:?}");
    assert_eq!(gw.get(SESSIONS, &bob).await.json, json!([]));
    assert_eq!(
        gw.get(SESSIONS, &root).await.json.as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(gw.get(&format!("{SESSIONS}/{id}"), &root).await.status, 200);

    // Bob cannot see, validate, extend or delete Alice's session, and cannot tell it exists.
    let unknown = gw.get(&format!("{SESSIONS}/sffffffffffffff"), &bob).await;
    unknown.assert_error(404, "SESSION_NOT_FOUND");
    let foreign = [
        gw.get(&format!("{SESSIONS}/{id}"), &bob).await,
        gw.post(&format!("{SESSIONS}/{id}/tasks/task-1/validate"), &bob, "")
            .await,
        gw.call(
            "PUT",
            &format!("{SESSIONS}/{id}/extend"),
            &bob,
            Some(r#"{"minutes": 30}"#),
        )
        .await,
        gw.call("DELETE", &format!("{SESSIONS}/{id}"), &bob, None).await,
        gw.get(&format!("{SESSIONS}/{id}/validations"), &bob).await,
    ];
    for a in &foreign {
        a.assert_error(404, "SESSION_NOT_FOUND");
    }
    assert!(
        gw.get(&format!("{SESSIONS}/{id}"), &alice).await.status == 200,
        "still there"
    );

    // Validation: failed checks are a 200 with success:false and per-rule results.
    let failed = gw
        .post(&format!("{SESSIONS}/{id}/tasks/task-2/validate"), &alice, "")
        .await;
    assert_eq!(failed.status, 200, "{failed:?}");
    assert_eq!(failed.json["success"], false);
    assert_eq!(failed.json["phase"], "Failed");
    let results = failed.json["results"].as_array().unwrap();
    assert!(!results.is_empty());
    let mode = results
        .iter()
        .find(|r| r["ruleId"] == "mode-file")
        .expect("rule mode-file");
    assert_eq!(
        (mode["passed"].as_bool(), mode["ruleType"].as_str()),
        (Some(false), Some("file_exists"))
    );
    assert_eq!(mode["errorCode"], "CHECK_FAILED");
    assert_eq!(mode["message"], "Create /etc/cks/mode.");
    gw.post(&format!("{SESSIONS}/{id}/tasks/task-9/validate"), &alice, "")
        .await
        .assert_error(404, "TASK_NOT_FOUND");

    // The student fixes the VMs; the same call passes.
    let pc = p.cluster(&cluster).await;
    let cp = ssh(&pc, "control-plane").await;
    let worker = ssh(&pc, "worker-1").await;
    let fix = "mkdir -p /etc/cks && echo enforce > /etc/cks/mode";
    assert_eq!(support::op::vrun_fixtures::ssh_exec(&cp, fix).await.1, 0);
    let fix = "mkdir -p /etc/cks && echo hardened > /etc/cks/worker-ok";
    assert_eq!(support::op::vrun_fixtures::ssh_exec(&worker, fix).await.1, 0);
    let passed = gw
        .post(&format!("{SESSIONS}/{id}/tasks/02/validate"), &alice, "")
        .await;
    assert_eq!(passed.status, 200, "{passed:?}");
    assert_eq!(passed.json["success"], true, "{passed:?}");
    assert_eq!(passed.json["message"], "All validations passed");
    let run = passed.json["runId"].as_str().unwrap().to_owned();
    let polled = gw
        .get(&format!("{SESSIONS}/{id}/validations/{run}"), &alice)
        .await;
    assert_eq!(
        (polled.status, polled.json["success"].as_bool()),
        (200, Some(true))
    );
    gw.get(&format!("{SESSIONS}/{id}/validations/{run}"), &bob)
        .await
        .assert_error(404, "SESSION_NOT_FOUND");
    gw.get(&format!("{SESSIONS}/{id}/validations/nope"), &alice)
        .await
        .assert_error(404, "RUN_NOT_FOUND");
    assert_eq!(
        gw.get(&format!("{SESSIONS}/{id}/validations"), &alice)
            .await
            .json
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let v = wait_session(&gw, &alice, &id, "task-2 completed", |v| {
        v["tasks"][1]["status"] == "completed"
    })
    .await;
    assert_eq!(v["tasks"][1]["attempts"], 2);
    assert_ne!(v["tasks"][1]["validationTime"], "0001-01-01T00:00:00Z");
    events
        .until("session", |d| d["tasks"][1]["status"] == "failed")
        .await;
    events
        .until("session", |d| d["tasks"][1]["status"] == "completed")
        .await;

    // Extend adds (the reference would set now+30 and shorten), capped by the pool's 240.
    let ext = gw
        .call(
            "PUT",
            &format!("{SESSIONS}/{id}/extend"),
            &alice,
            Some(r#"{"minutes": 30}"#),
        )
        .await;
    assert_eq!(
        (ext.status, ext.json["durationMinutes"].as_i64()),
        (200, Some(90)),
        "{ext:?}"
    );
    let ext = gw
        .call(
            "PUT",
            &format!("{SESSIONS}/{id}/extend"),
            &alice,
            Some(r#"{"minutes": 1000}"#),
        )
        .await;
    assert_eq!(
        (ext.status, ext.json["addedMinutes"].as_i64()),
        (200, Some(150)),
        "{ext:?}"
    );
    assert!(
        ext.json["message"].as_str().unwrap().contains("maximum"),
        "{ext:?}"
    );
    gw.call("PUT", &format!("{SESSIONS}/{id}/extend"), &alice, None)
        .await
        .assert_error(409, "EXTEND_LIMIT");
    gw.call(
        "PUT",
        &format!("{SESSIONS}/{id}/extend"),
        &alice,
        Some(r#"{"minutes": 0}"#),
    )
    .await
    .assert_error(422, "INVALID_MINUTES");
    // The stream saw the new expiry once the operator recomputed it.
    let minutes = |d: &Value| {
        let t = |k: &str| d[k].as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok());
        Some(t("expirationTime")?.duration_since(t("startTime")?).as_secs() / 60)
    };
    let (last_id, _) = events.until("session", |d| minutes(d) == Some(240)).await;
    // Resuming at the latest id sends nothing until the next change (heartbeats only); an
    // older id gets the current state at once.
    let resume = [alice[0], ("last-event-id", last_id.as_str())];
    let mut resumed = gw.events(&events_path, &resume).await.expect("a stream");
    assert!(
        matches!(resumed.next().await, SseItem::Comment(_)),
        "nothing new since {last_id}"
    );
    let stale = [alice[0], ("last-event-id", first_id.as_str())];
    let mut caught_up = gw.events(&events_path, &stale).await.expect("a stream");
    match caught_up.next().await {
        SseItem::Event { event, data, .. } => {
            assert_eq!((event.as_str(), minutes(&data)), ("session", Some(240)))
        }
        other => panic!("the current state at once, not {other:?}"),
    }
    let metrics = gw.get("/metrics", &[]).await.text;
    assert!(metrics.contains("cks_gateway_sse_clients 3"), "{metrics}");
    drop((resumed, caught_up));

    // Delete; the session goes away and the cluster comes back for the next one.
    let del = gw.call("DELETE", &format!("{SESSIONS}/{id}"), &alice, None).await;
    assert_eq!(
        (del.status, del.json["message"].as_str()),
        (200, Some("Session deleted successfully"))
    );
    eventually("the deleted session gone", || async {
        (gw.get(&format!("{SESSIONS}/{id}"), &alice).await.status == 404).then_some(())
    })
    .await;
    events.until("deleted", |d| d["sessionId"] == id.as_str()).await;
    assert_eq!(events.read().await, None, "the stream ends after the deletion");

    // A slow validation answers 202 with a URL to poll (a gateway with a short bound).
    let quick = token_gateway(
        &p,
        dir.path(),
        &["--create-wait-seconds", "30", "--validate-wait-seconds", "0.2"],
    )
    .await;
    let created = quick.post(SESSIONS, &alice, r#"{"scenarioId": "slow"}"#).await;
    assert_eq!(
        (created.status, created.json["status"].as_str()),
        (201, Some("running")),
        "{created:?}"
    );
    let id = session_id(&created);
    let pending = quick
        .post(&format!("{SESSIONS}/{id}/tasks/task-1/validate"), &alice, "")
        .await;
    assert_eq!(pending.status, 202, "{pending:?}");
    assert_eq!(pending.json["finished"], false);
    let url = pending.json["url"].as_str().unwrap().to_owned();
    assert_eq!(pending.header("location"), url);
    let polled = quick.get(&url, &alice).await;
    assert_eq!(
        (polled.status, polled.json["finished"].as_bool()),
        (200, Some(false)),
        "{polled:?}"
    );

    // Stopping the gateway ends open event streams instead of waiting for them forever.
    let mut quick = quick;
    let mut stream = quick
        .events(&format!("{SESSIONS}/{id}/events"), &alice)
        .await
        .expect("a stream");
    stream.until("session", |_| true).await;
    quick.shutdown().await;
    assert_eq!(stream.read().await, None, "the stream ended by the shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_one_shape_and_the_right_status() {
    let p = platform(0, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let origin = "http://frontend.test";
    let gw = token_gateway(
        &p,
        dir.path(),
        &[
            "--create-wait-seconds",
            "0",
            "--max-body-bytes",
            "1024",
            "--rate-per-minute",
            "1",
            "--rate-burst",
            "3",
            "--cors-origins",
            origin,
        ],
    )
    .await;
    let (alice, bob) = ([bearer("alice-token")], [bearer("bob-token")]);
    let (alice, bob) = (hdrs(&alice), hdrs(&bob));

    // Who: no token, a wrong token, a student on admin routes.
    gw.get(SESSIONS, &[]).await.assert_error(401, "UNAUTHENTICATED");
    gw.get(SESSIONS, &[("authorization", "Bearer nope")])
        .await
        .assert_error(401, "UNAUTHENTICATED");
    gw.get("/api/v1/admin/clusters", &alice)
        .await
        .assert_error(403, "FORBIDDEN");
    gw.post("/api/v1/admin/release-all-clusters", &alice, "")
        .await
        .assert_error(403, "FORBIDDEN");
    gw.post("/api/v1/scenarios/reload", &alice, "")
        .await
        .assert_error(403, "FORBIDDEN");

    // A query string that does not fit is 400 in the error shape (it was axum's plain text,
    // found by schemathesis).
    gw.get("/api/v1/sessions?all=maybe", &alice)
        .await
        .assert_error(400, "BAD_QUERY");
    gw.get("/api/v1/scenarios?category=a&category=b", &alice)
        .await
        .assert_error(400, "BAD_QUERY");
    gw.get("/api/v1/sessions/%FF", &alice)
        .await
        .assert_error(400, "BAD_PATH");

    // Routing.
    gw.get("/api/v1/nope", &alice)
        .await
        .assert_error(404, "ROUTE_NOT_FOUND");
    gw.get("/nope", &[]).await.assert_error(404, "ROUTE_NOT_FOUND");
    gw.call("DELETE", "/api/v1/scenarios", &alice, None)
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");
    gw.get("/api/v1/scenarios/no-such", &alice)
        .await
        .assert_error(404, "SCENARIO_NOT_FOUND");
    gw.get(&format!("{SESSIONS}/Not_A_Name"), &alice)
        .await
        .assert_error(404, "SESSION_NOT_FOUND");
    gw.post(
        "/api/v1/admin/clusters/Bad_Id/reset",
        &[("authorization", "Bearer root-token")],
        "",
    )
    .await
    .assert_error(404, "CLUSTER_NOT_FOUND");

    // Bodies.
    gw.post(SESSIONS, &alice, r#"{"scenarioId": "#)
        .await
        .assert_error(400, "MALFORMED_JSON");
    gw.post(SESSIONS, &alice, r#"{"scenarioId": 5}"#)
        .await
        .assert_error(422, "INVALID_BODY");
    gw.post(SESSIONS, &alice, "{}")
        .await
        .assert_error(422, "SCENARIO_REQUIRED");
    let big = format!(r#"{{"scenarioId": "{}"}}"#, "x".repeat(2000));
    gw.post(SESSIONS, &alice, &big)
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    gw.post(SESSIONS, &alice, r#"{"scenarioId": "no-such"}"#)
        .await
        .assert_error(404, "SCENARIO_NOT_FOUND");
    gw.post(SESSIONS, &alice, r#"{"scenarioId": "Bad Id"}"#)
        .await
        .assert_error(404, "SCENARIO_NOT_FOUND");
    gw.post(
        SESSIONS,
        &alice,
        r#"{"scenarioId": "hardening", "durationMinutes": 10000}"#,
    )
    .await
    .assert_error(422, "INVALID_DURATION");

    // Idempotent create: the retry answers with the same Session, and only one exists.
    let key = [("idempotency-key", "retry-1")];
    let with_key: Vec<(&str, &str)> = alice.iter().copied().chain(key).collect();
    let first = gw
        .post(SESSIONS, &with_key, r#"{"scenarioId": "hardening"}"#)
        .await;
    assert_eq!(
        (first.status, first.json["status"].as_str()),
        (201, Some("pending")),
        "{first:?}"
    );
    let again = gw
        .post(SESSIONS, &with_key, r#"{"scenarioId": "hardening"}"#)
        .await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(session_id(&again), session_id(&first));
    assert_eq!(
        gw.get(SESSIONS, &alice).await.json.as_array().map(Vec::len),
        Some(1)
    );
    gw.post(SESSIONS, &with_key, r#"{"scenarioId": "slow"}"#)
        .await
        .assert_error(409, "IDEMPOTENCY_KEY_REUSED");
    // Without a key, a second active session is refused with a reason.
    gw.post(SESSIONS, &alice, r#"{"scenarioId": "slow"}"#)
        .await
        .assert_error(409, "SESSION_LIMIT");
    // A session without a cluster cannot be validated yet.
    let id = session_id(&first);
    gw.post(&format!("{SESSIONS}/{id}/tasks/task-1/validate"), &alice, "")
        .await
        .assert_error(409, "SESSION_NOT_READY");

    // Rate limit on creates: bob's burst of 3 (alice's two creates were not bob's).
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(gw.post(SESSIONS, &bob, r#"{"scenarioId": "hardening"}"#).await);
    }
    assert_eq!(statuses[0].status, 201);
    statuses[1].assert_error(409, "SESSION_LIMIT");
    statuses[3].assert_error(429, "RATE_LIMITED");
    assert!(
        statuses[3]
            .header("retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s >= 1)
    );

    // CORS: preflights of any path and every answer, errors included, for the allowed origin.
    for path in ["/api/v1/sessions", "/api/v1/nope", "/api/v1/sessions/x/extend"] {
        let pre = gw
            .call(
                "OPTIONS",
                path,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "PUT"),
                    ("access-control-request-headers", "content-type"),
                ],
                None,
            )
            .await;
        assert!((200..300).contains(&pre.status), "{pre:?}");
        assert_eq!(pre.header("access-control-allow-origin"), origin);
        assert!(
            pre.header("access-control-allow-methods").contains("PUT"),
            "{pre:?}"
        );
        assert!(
            pre.header("access-control-allow-headers")
                .contains("content-type"),
            "{pre:?}"
        );
    }
    let denied = gw.get(SESSIONS, &[("origin", origin)]).await;
    denied.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(denied.header("access-control-allow-origin"), origin);
    let missing = gw.get("/api/v1/nope", &[("origin", origin)]).await;
    assert_eq!(
        (missing.status, missing.header("access-control-allow-origin")),
        (404, origin)
    );
    let other = gw.get(SESSIONS, &[("origin", "http://evil.test")]).await;
    assert_eq!(other.header("access-control-allow-origin"), "");

    // CSRF: a state change from another site's page is refused before anything else, a
    // configured origin and clients without Origin (curl) reach the route (a student: 403).
    let release = "/api/v1/admin/release-all-clusters";
    let with = |extra: (&'static str, &'static str)| {
        let mut h = alice.clone();
        h.push(extra);
        h
    };
    gw.post(release, &with(("origin", "http://evil.test")), "")
        .await
        .assert_error(403, "CROSS_SITE");
    gw.post(release, &with(("sec-fetch-site", "cross-site")), "")
        .await
        .assert_error(403, "CROSS_SITE");
    gw.post(release, &with(("origin", origin)), "")
        .await
        .assert_error(403, "FORBIDDEN");
    gw.post(release, &alice, "").await.assert_error(403, "FORBIDDEN");

    // Identity from a proxy counts only from trusted addresses: 127.0.0.1 is not in 10/8.
    let forged = [("x-forwarded-user", "root"), ("x-forwarded-groups", "cks-admins")];
    let untrusting = p
        .gateway(&["--auth", "proxy", "--trusted-proxies", "10.0.0.0/8"])
        .await;
    untrusting
        .get(SESSIONS, &forged)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    untrusting
        .get("/api/v1/admin/clusters", &forged)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    let trusting = p
        .gateway(&["--auth", "proxy", "--trusted-proxies", "127.0.0.0/8"])
        .await;
    assert_eq!(trusting.get("/api/v1/admin/clusters", &forged).await.status, 200);
    let student = [("x-forwarded-user", "alice"), ("x-forwarded-groups", "students")];
    trusting
        .get("/api/v1/admin/clusters", &student)
        .await
        .assert_error(403, "FORBIDDEN");
    let own = trusting.get(SESSIONS, &student).await;
    assert_eq!(
        own.json.as_array().map(Vec::len),
        Some(1),
        "alice's session: {own:?}"
    );

    // The token file is re-read when it changes: a rotated token works, the old one stops.
    std::fs::write(dir.path().join("tokens"), "alice-rotated,alice\n").unwrap();
    eventually("the rotated token accepted", || async {
        let a = gw
            .get(SESSIONS, &[("authorization", "Bearer alice-rotated")])
            .await;
        (a.status == 200).then_some(())
    })
    .await;
    gw.get(SESSIONS, &alice)
        .await
        .assert_error(401, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_queues_and_admin_actions_map_to_declarative_ones() {
    let p = platform(1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = token_gateway(&p, dir.path(), &["--create-wait-seconds", "30"]).await;
    let (alice, bob, root) = (
        [bearer("alice-token")],
        [bearer("bob-token")],
        [bearer("root-token")],
    );
    let (alice, bob, root) = (hdrs(&alice), hdrs(&bob), hdrs(&root));

    let a = gw.post(SESSIONS, &alice, r#"{"scenarioId": "hardening"}"#).await;
    assert_eq!(
        (a.status, a.json["status"].as_str()),
        (201, Some("running")),
        "{a:?}"
    );
    let a = session_id(&a);
    // No cluster left: a 201 that says where in the queue the session is (not a 500).
    let b = gw.post(SESSIONS, &bob, r#"{"scenarioId": "hardening"}"#).await;
    assert_eq!(
        (b.status, b.json["status"].as_str()),
        (201, Some("pending")),
        "{b:?}"
    );
    let b = session_id(&b);
    wait_session(&gw, &bob, &b, "first in the queue", |v| {
        v["queuePosition"] == 1 && v["phase"] == "WaitingForCluster"
    })
    .await;

    // Admin views.
    let clusters = gw.get("/api/v1/admin/clusters", &root).await;
    assert_eq!(clusters.status, 200, "{clusters:?}");
    let c = &clusters.json;
    assert_eq!(
        (c["totalClusters"].as_u64(), c["lockedClusters"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );
    let (cluster, detail) = c["detailedClusters"].as_object().unwrap().iter().next().unwrap();
    let cluster = cluster.clone();
    assert_eq!(
        (detail["status"].as_str(), detail["assignedSession"].as_str()),
        (Some("locked"), Some(a.as_str()))
    );
    assert_ne!(detail["lockTime"], "0001-01-01T00:00:00Z");
    assert_eq!(c["pools"][0]["name"], "pool");
    let sessions = gw.get("/api/v1/admin/sessions", &root).await;
    assert_eq!(
        sessions.json["stats"],
        json!({"totalSessions": 2, "runningSessions": 1, "provisioningSessions": 1}),
        "{sessions:?}"
    );
    assert_eq!(sessions.json["sessions"].as_array().map(Vec::len), Some(2));
    let only_bob = gw.get("/api/v1/admin/sessions?user=bob", &root).await;
    assert_eq!(only_bob.json["sessions"].as_array().map(Vec::len), Some(1));

    // Actions the pool's owner (git) decides are refused with a reason; an assigned cluster
    // is not reset under its session.
    let reset = format!("/api/v1/admin/clusters/{cluster}/reset");
    gw.post(&reset, &root, "")
        .await
        .assert_error(409, "CLUSTER_ASSIGNED");
    gw.post(&format!("/api/v1/admin/clusters/{cluster}/recreate"), &root, "")
        .await
        .assert_error(409, "CLUSTER_ASSIGNED");
    gw.post(&format!("/api/v1/admin/clusters/{cluster}/destroy"), &root, "")
        .await
        .assert_error(409, "POOL_MANAGED");
    gw.post("/api/v1/admin/destroy-pool", &root, "")
        .await
        .assert_error(409, "POOL_MANAGED");
    gw.post("/api/v1/admin/create-snapshots", &root, "")
        .await
        .assert_error(409, "POOL_MANAGED");
    gw.post("/api/v1/admin/clusters/nope/reset", &root, "")
        .await
        .assert_error(404, "CLUSTER_NOT_FOUND");
    let boot = gw.post("/api/v1/admin/bootstrap-pool", &root, "").await;
    assert_eq!(
        (boot.status, boot.json["clusters"].clone()),
        (200, json!([])),
        "{boot:?}"
    );

    // Release all: Alice's session ends, the cluster resets and Bob, first in line, gets it.
    let rel = gw.post("/api/v1/admin/release-all-clusters", &root, "").await;
    assert_eq!(
        (rel.status, rel.json["released"].clone()),
        (200, json!([a])),
        "{rel:?}"
    );
    assert_eq!(rel.json["poolStatus"]["lockedClusters"], 1);
    let ended = gw.get(&format!("{SESSIONS}/{a}"), &alice).await;
    assert_eq!(ended.status, 200);
    wait_session(&gw, &alice, &a, "ended", |v| {
        v["phase"] == "Ended" && v["status"] == "ended"
    })
    .await;
    wait_session(&gw, &bob, &b, "running", |v| v["status"] == "running").await;

    // Force-end Bob's session; then reset and recreate the free cluster.
    let end = gw
        .post(&format!("/api/v1/admin/sessions/{b}/end"), &root, "")
        .await;
    assert_eq!(
        (end.status, end.json["action"].as_str()),
        (200, Some("force-release")),
        "{end:?}"
    );
    wait_session(&gw, &bob, &b, "ended", |v| v["phase"] == "Ended").await;
    gw.post(&format!("/api/v1/admin/sessions/{b}/end"), &root, "")
        .await
        .assert_error(409, "SESSION_ENDED");
    gw.post(&format!("/api/v1/admin/sessions/{b}/end"), &bob, "")
        .await
        .assert_error(403, "FORBIDDEN");
    p.available(1).await;
    let r = eventually("a reset accepted once the cluster is available", || async {
        let r = gw.post(&reset, &root, "").await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.json["action"], "reset-requested");
    eventually("the requested reset done", || async {
        let c = gw.get("/api/v1/admin/clusters", &root).await.json;
        let d = &c["detailedClusters"][&cluster];
        (d["status"] == "available"
            && d["resetRequested"] == false
            && d["lastReset"] != "0001-01-01T00:00:00Z")
            .then_some(())
    })
    .await;
    let rec = gw
        .post(&format!("/api/v1/admin/clusters/{cluster}/recreate"), &root, "")
        .await;
    assert_eq!(
        (rec.status, rec.json["action"].as_str()),
        (200, Some("recreate")),
        "{rec:?}"
    );
    eventually("a new cluster replacing the recreated one", || async {
        let c = gw.get("/api/v1/admin/clusters", &root).await.json;
        let names: Vec<String> = c["detailedClusters"].as_object()?.keys().cloned().collect();
        (names.len() == 1 && names[0] != cluster).then_some(())
    })
    .await;

    // Scenario reload, and the metrics of all of the above by route template.
    let reload = gw.post("/api/v1/scenarios/reload", &root, "").await;
    assert_eq!(
        (reload.status, reload.json["scenarios"].as_u64()),
        (200, Some(2)),
        "{reload:?}"
    );
    let metrics = gw.get("/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains(
            r#"cks_gateway_http_requests_total{route="/api/v1/sessions/{id}",method="GET",status="200"}"#
        ),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("cks_gateway_http_request_duration_seconds_bucket")
    );
    assert!(!metrics.text.contains(&a), "no raw ids as labels");
    assert_eq!(gw.get("/healthz", &[]).await.json, json!({"status": "ok"}));
    assert_eq!(gw.get("/readyz", &[]).await.json, json!({"status": "ready"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_its_caches_are_filled_the_gateway_answers_503() {
    // A cluster API that is not there: the caches never fill.
    let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let catalog = support::op::vrun_fixtures::catalog();
    let gw = support::start_gateway(client, catalog.store.clone(), &["--auth", "dev"]).await;
    let ready = gw.get("/readyz", &[]).await;
    ready.assert_error(503, "NOT_READY");
    assert_eq!(ready.header("retry-after"), "2");
    assert_eq!(gw.get("/healthz", &[]).await.status, 200, "alive while not ready");
    for path in ["/api/v1/scenarios", "/api/v1/sessions", "/api/v1/admin/clusters"] {
        gw.get(path, &[]).await.assert_error(503, "NOT_READY");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded_per_user_and_end_after_their_lifetime() {
    let p = platform(0, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = token_gateway(
        &p,
        dir.path(),
        &[
            "--create-wait-seconds",
            "0",
            "--sse-heartbeat-seconds",
            "0.2",
            "--sse-max-streams-per-user",
            "2",
            "--sse-max-lifetime-seconds",
            "2",
        ],
    )
    .await;
    let (alice, root) = ([bearer("alice-token")], [bearer("root-token")]);
    let (alice, root) = (hdrs(&alice), hdrs(&root));
    let created = gw.post(SESSIONS, &alice, r#"{"scenarioId": "hardening"}"#).await;
    assert!([201, 202].contains(&created.status), "{created:?}");
    let path = format!("{SESSIONS}/{}/events", session_id(&created));

    // Two streams per user; the third is refused in the error shape, another user's is not.
    let mut first = gw.events(&path, &alice).await.expect("a first stream");
    let _second = gw.events(&path, &alice).await.expect("a second stream");
    let third = gw.events(&path, &alice).await.err().expect("no third stream");
    third.assert_error(429, "TOO_MANY_STREAMS");
    let _admin = gw.events(&path, &root).await.expect("another user's stream");

    // A stream ends by itself after its lifetime (heartbeats keep coming until then), and
    // its slot is free again.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while first.read().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after its lifetime");
    eventually("a slot free after the streams ended", || async {
        gw.events(&path, &alice).await.ok().map(drop)
    })
    .await;
}
