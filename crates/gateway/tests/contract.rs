//! The reference contract (`http-contract.md`): a client that makes exactly the calls of its
//! §3 in the order the reference frontend makes them (catalogue, start, lab page, validate,
//! extend, admin page, end), with the headers it sends (every `api.js` call carries
//! `Content-Type: application/json` and is preflighted; TaskPanel's plain `fetch` is not), and
//! asserts what §7 demands of each answer. Terminals (§3.8) are not built yet and are left out.

mod support;

use serde_json::Value;
use support::{Answer, Gateway, eventually, platform};

const ORIGIN: &str = "http://localhost:3000";

/// An `api.js` call: preflight, then the request with `Content-Type: application/json`.
async fn api(gw: &Gateway, method: &str, path: &str, body: Option<&str>) -> Answer {
    let url = format!("/api/v1{path}");
    let pre = gw
        .call(
            "OPTIONS",
            &url,
            &[
                ("origin", ORIGIN),
                ("access-control-request-method", method),
                ("access-control-request-headers", "content-type"),
            ],
            None,
        )
        .await;
    assert!(
        (200..300).contains(&pre.status),
        "preflight of {method} {path}: {pre:?}"
    );
    assert_eq!(pre.header("access-control-allow-origin"), ORIGIN, "§7.11");
    assert!(
        pre.header("access-control-allow-methods").contains(method),
        "§7.11: {pre:?}"
    );
    assert!(
        pre.header("access-control-allow-headers")
            .contains("content-type"),
        "§7.11: {pre:?}"
    );
    let headers = [("origin", ORIGIN), ("content-type", "application/json")];
    let a = gw.call(method, &url, &headers, body).await;
    check_common(method, path, &a);
    a
}

/// §7.4 and §7.11: CORS on every answer; a 2xx other than 204 carries JSON.
fn check_common(method: &str, path: &str, a: &Answer) {
    assert_eq!(
        a.header("access-control-allow-origin"),
        ORIGIN,
        "§7.11 {method} {path}: {a:?}"
    );
    if (200..300).contains(&a.status) && a.status != 204 {
        assert!(!a.json.is_null(), "§7.4 {method} {path}: a JSON body: {a:?}");
        assert!(a.header("content-type").starts_with("application/json"), "{a:?}");
    }
}

fn ok(a: &Answer) -> &Value {
    assert!((200..300).contains(&a.status), "{a:?}");
    &a.json
}

fn is_time(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_frontend_flow_gets_the_shapes_it_needs() {
    let p = platform(1, 2).await;
    let gw = p
        .gateway(&[
            "--auth",
            "dev",
            "--cors-origins",
            ORIGIN,
            "--create-wait-seconds",
            "30",
        ])
        .await;

    // Home page (§3.1, §3.2): list and categories, sent twice on load, then per filter.
    for query in [
        "",
        "",
        "?category=cluster-setup",
        "?difficulty=beginner",
        "?search=SLOW",
    ] {
        let list = api(&gw, "GET", &format!("/scenarios{query}"), None).await;
        let items = ok(&list)
            .as_array()
            .unwrap_or_else(|| panic!("§7.1 a bare array: {list:?}"));
        for s in items {
            for key in ["id", "title", "description", "difficulty", "timeEstimate"] {
                assert!(s[key].is_string(), "scenario {key}: {s}");
            }
            assert!(s["topics"].is_array(), "§7.2 topics never null: {s}");
        }
        let ids: Vec<&str> = items.iter().map(|s| s["id"].as_str().unwrap()).collect();
        match query {
            "" | "?category=cluster-setup" => assert_eq!(ids, ["hardening", "slow"]),
            "?search=SLOW" => assert_eq!(ids, ["slow"]),
            _ => {}
        }
        let cats = api(&gw, "GET", "/scenarios/categories", None).await;
        let cats = ok(&cats).as_object().expect("§7.3 a flat object");
        assert!(
            !cats.is_empty() && cats.values().all(Value::is_string),
            "§7.3: {cats:?}"
        );
    }

    // Start (§3.4): only sessionId is read; status says running once the cluster is assigned.
    let created = api(&gw, "POST", "/sessions", Some(r#"{"scenarioId":"hardening"}"#)).await;
    let c = ok(&created);
    let id = c["sessionId"].as_str().expect("§7.1 sessionId").to_owned();
    assert_eq!(c["status"], "running", "§7.6");

    // Lab page (§3.5): the SWR fetch, TaskPanel's plain fetch of the scenario, useTerminal's
    // one-shot check.
    let session = api(&gw, "GET", &format!("/sessions/{id}"), None).await;
    let s = ok(&session).clone();
    assert_eq!(
        (s["scenarioId"].as_str(), s["status"].as_str()),
        (Some("hardening"), Some("running"))
    );
    assert!(
        is_time(&s["expirationTime"]) && is_time(&s["startTime"]),
        "§7.8: {s}"
    );
    let scenario = gw.get("/api/v1/scenarios/hardening", &[("origin", ORIGIN)]).await;
    check_common("GET", "/scenarios/hardening", &scenario);
    let sc = ok(&scenario);
    let tasks = sc["tasks"].as_array().expect("§7.1 tasks");
    for t in tasks {
        assert!(
            t["id"].is_string() && t["title"].is_string() && t["description"].is_string(),
            "{t}"
        );
        assert!(
            t["hints"]
                .as_array()
                .is_some_and(|h| h.iter().all(Value::is_string)),
            "{t}"
        );
    }
    let scenario_ids: Vec<&Value> = tasks.iter().map(|t| &t["id"]).collect();
    let session_ids: Vec<&Value> = s["tasks"].as_array().unwrap().iter().map(|t| &t["id"]).collect();
    assert_eq!(scenario_ids, session_ids, "§7.7 task ids match exactly");
    assert!(
        s["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "pending")
    );
    let again = api(&gw, "GET", &format!("/sessions/{id}"), None).await;
    assert_eq!(ok(&again)["status"], "running", "§7.6 the one-shot check");

    // Validate (§3.9): failing checks are a 200 with success:false and per-rule results.
    let task = tasks[0]["id"].as_str().unwrap();
    let v = api(
        &gw,
        "POST",
        &format!("/sessions/{id}/tasks/{task}/validate"),
        None,
    )
    .await;
    assert_eq!(v.status, 200, "§7.5: {v:?}");
    let v = &v.json;
    assert_eq!(v["success"], false);
    assert!(v["message"].is_string() && is_time(&v["timestamp"]), "{v}");
    let results = v["results"].as_array().expect("§7.1 results");
    assert!(!results.is_empty());
    for r in results {
        assert!(
            r["ruleId"].is_string() && r["passed"].is_boolean() && r["message"].is_string(),
            "{r}"
        );
    }

    // Extend (§3.7).
    let ext = api(
        &gw,
        "PUT",
        &format!("/sessions/{id}/extend"),
        Some(r#"{"minutes":30}"#),
    )
    .await;
    ok(&ext);

    // Admin page (§3.10, §3.11), then end the session from the lab page (§3.6).
    let clusters = api(&gw, "GET", "/admin/clusters", None).await;
    let c = ok(&clusters);
    for key in ["totalClusters", "availableClusters", "lockedClusters"] {
        assert!(c[key].is_u64(), "§3.10 {key}: {c}");
    }
    assert_eq!(c["lockedClusters"], 1);
    let detailed = c["detailedClusters"].as_object().expect("§7.1 detailedClusters");
    for d in detailed.values() {
        assert!(d["clusterId"].is_string(), "{d}");
        assert!(
            ["available", "locked", "resetting", "error", "creating"]
                .contains(&d["status"].as_str().unwrap())
        );
        for key in ["lockTime", "lastReset", "lastHealthCheck"] {
            assert!(is_time(&d[key]), "§7.8 {key}: {d}");
        }
    }
    let sessions = api(&gw, "GET", "/admin/sessions", None).await;
    let a = ok(&sessions);
    assert_eq!(a["stats"]["totalSessions"], 1, "§7.1: {a}");
    let listed = &a["sessions"].as_array().expect("§7.1 sessions")[0];
    assert_eq!(listed["id"], id.as_str());
    assert!(listed["activeTerminals"].is_object() && listed["tasks"].is_array());

    let del = api(&gw, "DELETE", &format!("/sessions/{id}"), None).await;
    ok(&del);
    let release = api(&gw, "POST", "/admin/release-all-clusters", None).await;
    assert!(ok(&release)["message"].is_string());

    // Afterwards the session is a 404, with CORS (§7.9, §7.11).
    eventually("the ended session gone", || async {
        let a = gw
            .get(&format!("/api/v1/sessions/{id}"), &[("origin", ORIGIN)])
            .await;
        (a.status == 404).then_some(a)
    })
    .await
    .assert_error(404, "SESSION_NOT_FOUND");
}
