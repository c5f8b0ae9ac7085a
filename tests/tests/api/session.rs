//! Browser sessions: the token in an HttpOnly cookie set by
//! `POST /api/auth/session`, accepted by the one admission check on every
//! route, and the CSRF rule: a state-changing request authenticated by the
//! cookie needs the session's token in `X-CSRF-Token` (403 in the
//! contract's shape otherwise, and nothing changes).

use crate::auth::{arrange_targets, assert_targets_unchanged, body_for};
use crate::helpers::{concrete_path, job_count, submit_ok};
use controller::api::protected_routes;
use integration_tests::{
    set_cookie_line, set_cookie_value, spawn_app, spawn_https_app, TestTls, ADMIN_PASSWORD, ADMIN_USER,
};
use reqwest::Method;
use serde_json::json;

const CSRF_DETAIL: &str = controller::api::session::CSRF_REFUSED;

#[tokio::test]
async fn session_login_sets_an_httponly_strict_cookie_and_never_shows_the_token() {
    let app = spawn_app().await;
    let r = app.session_login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json.get("access_token").is_none(),
        "token in the body: {}",
        r.text
    );
    let csrf = r.json["csrf_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(csrf.len(), 64, "{}", r.text);
    let session = set_cookie_line(&r, "orch_session").expect("session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(flag), "{flag} missing: {session}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP cannot keep a Secure cookie: {session}"
    );
    let readable = set_cookie_line(&r, "orch_csrf").expect("csrf cookie");
    assert!(
        !readable.contains("HttpOnly") && readable.contains("SameSite=Strict"),
        "{readable}"
    );
    assert_eq!(set_cookie_value(&r, "orch_csrf").as_deref(), Some(csrf.as_str()));
    let wrong = app.session_login(ADMIN_USER, "not-the-password").await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(set_cookie_line(&wrong, "orch_session").is_none());
    app.stop().await;
}

#[tokio::test]
async fn over_https_the_session_cookie_is_secure() {
    let tls = TestTls::new(&["localhost", "127.0.0.1"]).unwrap_or_else(|e| panic!("{e:#}"));
    let app = spawn_https_app(&tls, &[]).await;
    let r = app.session_login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for name in ["orch_session", "orch_csrf"] {
        let line = set_cookie_line(&r, name).expect("cookie");
        assert!(line.contains("; Secure"), "{line}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_cookie_reads_and_with_its_csrf_token_writes() {
    let app = spawn_app().await;
    let s = app.session(ADMIN_USER, ADMIN_PASSWORD).await;
    let me = app
        .send_by_cookie(Method::GET, "/api/auth/me", &s, None, None)
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["username"], ADMIN_USER);
    let body = json!({"task_description": "by cookie"});
    let submitted = app
        .send_by_cookie(Method::POST, "/api/jobs/submit", &s, Some(&s.csrf), Some(&body))
        .await;
    assert_eq!(submitted.status, 201, "{}", submitted.text);
    // Bearer tokens keep working without any CSRF header.
    let job_id = submit_ok(&app, &app.admin_token, "by bearer").await;
    assert_eq!(job_count(&app).await, Some(2));
    let out = app
        .send_by_cookie(Method::DELETE, "/api/auth/session", &s, Some(&s.csrf), None)
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    let cleared = set_cookie_line(&out, "orch_session").expect("cleared cookie");
    assert!(
        cleared.starts_with("orch_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let _ = job_id;
    app.stop().await;
}

#[tokio::test]
async fn every_write_by_cookie_without_the_right_csrf_token_is_403_and_changes_nothing() {
    let app = spawn_app().await;
    let targets = arrange_targets(&app).await;
    let s = app.session(ADMIN_USER, ADMIN_PASSWORD).await;
    let other = app.session(ADMIN_USER, ADMIN_PASSWORD).await;
    let writes = protected_routes()
        .into_iter()
        .filter(|r| r.method != Method::GET && !r.path.starts_with("/api/agents/"));
    let mut checked = 0;
    for route in writes {
        let path = concrete_path(route.path, targets.job_id, "w-forged");
        let body = body_for(route.path, &targets);
        // The right token with its last digit changed (one ending in 0
        // gets a 1: appending "0" to its first 63 would be the token itself).
        let last = if s.csrf.ends_with('0') { '1' } else { '0' };
        let wrong = format!("{}{last}", &s.csrf[..63]);
        for (what, csrf) in [
            ("no", None),
            ("a wrong", Some(wrong.as_str())),
            ("another session's", Some(other.csrf.as_str())),
        ] {
            let r = app
                .send_by_cookie(route.method.clone(), &path, &s, csrf, body.as_ref())
                .await;
            assert_eq!(
                r.status, 403,
                "{what} CSRF header on {} {path}: {}",
                route.method, r.text
            );
            assert_eq!(r.json, json!({"detail": CSRF_DETAIL}), "{}", r.text);
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} write routes");
    assert_targets_unchanged(&app, &targets).await;
    let logout = app
        .send_by_cookie(Method::DELETE, "/api/auth/session", &s, None, None)
        .await;
    assert_eq!(logout.status, 403, "a forged logout: {}", logout.text);
    app.stop().await;
}

#[tokio::test]
async fn a_tampered_session_cookie_is_401() {
    let app = spawn_app().await;
    let mut s = app.session(ADMIN_USER, ADMIN_PASSWORD).await;
    s.token.push('x');
    let r = app
        .send_by_cookie(Method::GET, "/api/auth/me", &s, None, None)
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    app.stop().await;
}
