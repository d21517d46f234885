//! The web page's side of the gateway against the platform in-process: the built page served
//! from `--web-dir` next to the API, the token-mode sign-in cookie (HttpOnly, SameSite=Strict)
//! accepted like the bearer token by the API and the event streams, and the admin console's
//! live stream. The page itself is faked (a temp dir), so these tests need no Node.js.

mod support;

use support::{SseItem, platform, token_file};

fn fake_build() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<!doctype html><title>app</title>").unwrap();
    std::fs::write(
        dir.path().join("terminal.html"),
        "<!doctype html><title>term</title>",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/app-1a2b.js"), "export {}").unwrap();
    dir
}

fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_with_an_http_only_cookie_that_the_api_and_streams_accept() {
    let p = platform(0, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let web = fake_build();
    let gw = p
        .gateway(&[
            "--auth",
            "token",
            "--token-file",
            tokens.to_str().unwrap(),
            "--web-dir",
            web.path().to_str().unwrap(),
            "--sse-heartbeat-seconds",
            "0.2",
        ])
        .await;

    // The page loads without identity (it shows the sign-in form); the API does not.
    let page = gw.get("/lab/s0123456789abcd", &[]).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.text.contains("<title>app</title>"));
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'")
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    gw.get("/api/v1/auth/me", &[])
        .await
        .assert_error(401, "UNAUTHENTICATED");
    gw.get("/api/v1/nope", &[])
        .await
        .assert_error(404, "ROUTE_NOT_FOUND");

    // A wrong token sets nothing.
    let bad = gw.post("/api/v1/auth/login", &[], r#"{"token":"guess"}"#).await;
    bad.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(bad.header("set-cookie"), "");

    let ok = gw
        .post("/api/v1/auth/login", &[], r#"{"token":" alice-token "}"#)
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json["user"], "alice");
    assert_eq!(ok.json["role"], "student");
    assert_eq!(ok.json["auth"], "token");
    let set = ok.header("set-cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");
    let alice = cookie_of(set);
    assert_eq!(alice, "cks_token=alice-token");
    let alice = [("cookie", alice.as_str())];

    let me = gw.get("/api/v1/auth/me", &alice).await;
    assert_eq!((me.status, me.json["user"].as_str()), (200, Some("alice")));
    let created = gw
        .post("/api/v1/sessions", &alice, r#"{"scenarioId":"hardening"}"#)
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json["sessionId"].as_str().unwrap().to_owned();
    // EventSource cannot send headers: the cookie is how the lab's stream authenticates.
    let mut events = gw
        .events(&format!("/api/v1/sessions/{id}/events"), &alice)
        .await
        .unwrap_or_else(|a| panic!("the stream opens with the cookie: {a:?}"));
    let (_, first) = events.until("session", |_| true).await;
    assert_eq!(first["sessionId"], id.as_str());
    gw.get("/api/v1/admin/clusters", &alice)
        .await
        .assert_error(403, "FORBIDDEN");
    let refused = gw.events("/api/v1/admin/events", &alice).await.err().unwrap();
    refused.assert_error(403, "FORBIDDEN");

    // Another site's form cannot use the cookie.
    let cross = gw
        .call(
            "DELETE",
            &format!("/api/v1/sessions/{id}"),
            &[alice[0], ("origin", "https://evil.example")],
            None,
        )
        .await;
    cross.assert_error(403, "CROSS_SITE");

    // The admin console's stream: the picture at once, again when a session changes.
    let root = gw
        .post("/api/v1/auth/login", &[], r#"{"token":"root-token"}"#)
        .await;
    assert_eq!(root.json["role"], "admin");
    let root = cookie_of(root.header("set-cookie"));
    let root = [("cookie", root.as_str())];
    let mut admin = gw.events("/api/v1/admin/events", &root).await.unwrap();
    let (_, picture) = admin.until("admin", |_| true).await;
    let listed = |p: &serde_json::Value, id: &str| {
        p["sessions"]["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["sessionId"] == id)
    };
    assert!(listed(&picture, &id), "{picture}");
    assert!(picture["clusters"]["totalClusters"].is_number(), "{picture}");
    let ended = gw
        .post(&format!("/api/v1/admin/sessions/{id}/end"), &root, "")
        .await;
    assert_eq!(ended.status, 200, "{ended:?}");
    admin.until("admin", |p| !listed(p, &id)).await;

    // Signing out clears the cookie; the token itself stays valid for API clients.
    let out = gw.post("/api/v1/auth/logout", &alice, "").await;
    assert_eq!(out.status, 200);
    let cleared = out.header("set-cookie");
    assert!(
        cleared.starts_with("cks_token=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_https_the_cookie_is_secure_and_other_modes_have_no_sign_in() {
    let p = platform(0, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let gw = p
        .gateway(&["--auth", "token", "--token-file", tokens.to_str().unwrap()])
        .await;
    let a = gw
        .post(
            "/api/v1/auth/login",
            &[("x-forwarded-proto", "https")],
            r#"{"token":"bob-token"}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.header("set-cookie").contains("; Secure"), "{a:?}");
    // Without --web-dir there is no page: unknown paths keep the API's JSON 404.
    gw.get("/", &[]).await.assert_error(404, "ROUTE_NOT_FOUND");

    let dev = p.gateway(&["--auth", "dev"]).await;
    dev.post("/api/v1/auth/login", &[], r#"{"token":"x"}"#)
        .await
        .assert_error(409, "LOGIN_NOT_USED");
    let me = dev.get("/api/v1/auth/me", &[]).await;
    assert_eq!(
        me.json,
        serde_json::json!({"user": "developer", "role": "admin", "auth": "dev"})
    );
    let mut admin = dev.events("/api/v1/admin/events", &[]).await.unwrap();
    assert!(matches!(admin.next().await, SseItem::Event { event, .. } if event == "admin"));
}
