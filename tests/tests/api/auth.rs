//! Authentication and scopes: the admin from the database, users, login and
//! its rate limit, bad tokens, and which scope opens which route.

use crate::helpers::{
    admin_user, allocate_ok, app_with_workers, assert_body_invalid, assert_cannot_log_in, assert_detail,
    assert_invalid_credentials, assert_www_authenticate_bearer, claims, concrete_path, forged_tokens,
    job_count, now_secs, set, string_set, submit_ok,
};
use controller::api::protected_routes;
use integration_tests::{spawn_app, spawn_app_with, Reply, TestApp, ADMIN_USER, USER_PASSWORD};
use orchestrator_shared::api::error::{INVALID_CREDENTIALS, NOT_AUTHENTICATED};
use orchestrator_shared::api::{
    AllocateRequest, BatchRequest, CreateUserRequest, CredentialRequest, RegisterRequest, ReleaseRequest,
    SubmitRequest,
};
use reqwest::Method;
use serde_json::{json, to_value, Value};
use std::collections::HashSet;
use uuid::Uuid;

/// Scopes of the user `carol` the identity tests create.
const CAROL_SCOPES: [&str; 2] = ["jobs:read", "resources:write"];

#[tokio::test]
async fn database_dependency_injection_serves_the_admin_from_the_database() {
    let app = spawn_app().await;
    let r = app.me(&app.admin_token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let admin = admin_user(&app).await;
    assert_eq!(r.json["user_id"], json!(admin.user_id.to_string()), "{}", r.text);
    assert_eq!(r.json["username"], json!(ADMIN_USER), "{}", r.text);
    let scopes = string_set(&r.json["scopes"]);
    assert!(scopes.contains("admin"), "{}", r.text);
    assert_eq!(scopes, admin.scopes.iter().cloned().collect::<HashSet<_>>());
    app.stop().await;
}

/// Creates `carol` with [`CAROL_SCOPES`] through the admin API.
async fn create_carol(app: &TestApp) -> Reply {
    let body = json!({"username": "carol", "password": "quiet-river-31", "scopes": CAROL_SCOPES});
    let created = app.create_user(&app.admin_token, &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    created
}

#[tokio::test]
async fn created_user_is_answered_without_the_password() {
    let app = spawn_app().await;
    let created = create_carol(&app).await;
    assert_eq!(created.json["username"], json!("carol"), "{}", created.text);
    assert!(
        !created.text.contains("quiet-river-31") && !created.text.contains("argon2"),
        "the created user must not echo the password or its hash: {}",
        created.text
    );
    app.stop().await;
}

#[tokio::test]
async fn login_answers_a_bearer_jwt_with_the_users_scopes() {
    let app = spawn_app().await;
    create_carol(&app).await;
    let login = app.login("carol", "quiet-river-31").await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.json["token_type"], json!("bearer"), "{}", login.text);
    assert_eq!(login.json["expires_in"], json!(3600), "{}", login.text);
    assert_eq!(
        string_set(&login.json["scopes"]),
        set(&CAROL_SCOPES),
        "{}",
        login.text
    );
    let token = login.json["access_token"].as_str().expect("access_token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    app.stop().await;
}

#[tokio::test]
async fn current_user_comes_from_a_valid_token() {
    let app = spawn_app().await;
    let created = create_carol(&app).await;
    let token = app.login_token("carol", "quiet-river-31").await;
    let me = app.me(&token).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["username"], json!("carol"), "{}", me.text);
    assert_eq!(string_set(&me.json["scopes"]), set(&CAROL_SCOPES), "{}", me.text);
    let user_id = me.json["user_id"].as_str().expect("user_id");
    assert!(Uuid::parse_str(user_id).is_ok(), "{}", me.text);
    if let Some(id) = created.json.get("user_id") {
        assert_eq!(id, &me.json["user_id"], "{} vs {}", created.text, me.text);
    }
    // The admin's token names someone else.
    let admin_me = app.me(&app.admin_token).await;
    assert_ne!(admin_me.json["user_id"], me.json["user_id"]);
    app.stop().await;
}

/// `GET /api/auth/me` with `authorization` as the whole header.
async fn me_with_authorization(app: &TestApp, authorization: &str) -> Reply {
    let req = app
        .http
        .get(app.url("/api/auth/me"))
        .header("Authorization", authorization);
    app.send_request(req).await
}

#[tokio::test]
async fn invalid_token_is_401_with_www_authenticate() {
    let app = spawn_app().await;
    for bad in ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"] {
        let r = me_with_authorization(&app, &format!("Bearer {bad}")).await;
        assert_invalid_credentials(&r, &format!("token {bad:?}"));
    }
    app.stop().await;
}

#[tokio::test]
async fn non_bearer_authorization_is_401_with_www_authenticate() {
    let app = spawn_app().await;
    let r = me_with_authorization(&app, "Basic YWRtaW46YWRtaW4tcGFzc3dvcmQ=").await;
    assert_eq!(r.status, 401, "Basic auth: {}", r.text);
    assert_www_authenticate_bearer(&r);
    app.stop().await;
}

/// Asserts every reply in `replies` (named by what was asked) is a 200.
fn assert_all_ok(replies: &[(&str, Reply)]) {
    for (what, r) in replies {
        assert_eq!(r.status, 200, "{what}: {}", r.text);
    }
}

#[tokio::test]
async fn write_scope_implies_read_scope() {
    let app = app_with_workers(&["w-scope"]).await;
    // jobs:write reads the jobs it writes.
    let writer = app.user_token("writer", &["jobs:write"]).await;
    let id = submit_ok(&app, &writer, "scoped").await;
    assert_all_ok(&[
        ("jobs:write GET job", app.get_job(&writer, id).await),
        ("jobs:write GET events", app.job_events(&writer, id).await),
        ("jobs:write GET output", app.job_output(&writer, id).await),
        ("jobs:write GET jobs", app.list_jobs(&writer, &[]).await),
    ]);
    // supervisor:write reads the supervisor; resources:write reads resources.
    let sup = app.user_token("sup", &["supervisor:write"]).await;
    assert_all_ok(&[
        ("supervisor:write GET workers", app.list_workers(&sup, &[]).await),
        (
            "supervisor:write GET worker",
            app.get_worker(&sup, "w-scope").await,
        ),
        ("supervisor:write GET metrics", app.fleet_metrics(&sup).await),
    ]);
    let res = app.user_token("res", &["resources:write"]).await;
    assert_all_ok(&[
        ("resources:write GET quotas", app.quotas(&res).await),
        ("resources:write GET usage", app.usage(&res).await),
    ]);
    app.stop().await;
}

#[tokio::test]
async fn admin_reads_every_area() {
    let app = app_with_workers(&["w-scope"]).await;
    let id = submit_ok(&app, &app.admin_token, "scoped").await;
    let admin = &app.admin_token;
    assert_all_ok(&[
        ("admin GET me", app.me(admin).await),
        ("admin GET workers", app.list_workers(admin, &[]).await),
        ("admin GET worker", app.get_worker(admin, "w-scope").await),
        ("admin GET metrics", app.fleet_metrics(admin).await),
        ("admin GET quotas", app.quotas(admin).await),
        ("admin GET usage", app.usage(admin).await),
        ("admin GET jobs", app.list_jobs(admin, &[]).await),
        ("admin GET job", app.get_job(admin, id).await),
    ]);
    app.stop().await;
}

#[tokio::test]
async fn admin_writes_every_area() {
    let app = app_with_workers(&["w-scope"]).await;
    let admin = &app.admin_token;
    let id = submit_ok(&app, admin, "by admin").await;
    let alloc = app.allocate(admin, &json!({"workers": 1})).await;
    assert_eq!(alloc.status, 201, "admin allocate: {}", alloc.text);
    assert_all_ok(&[
        ("admin cancel", app.cancel_job(admin, id).await),
        ("admin pause", app.pause_worker(admin, "w-scope").await),
        ("admin resume", app.resume_worker(admin, "w-scope").await),
        (
            "admin release",
            app.release(admin, &alloc.json["allocation_id"]).await,
        ),
    ]);
    app.stop().await;
}

#[tokio::test]
async fn missing_scope_is_403_naming_the_scope() {
    let app = app_with_workers(&["w-403"]).await;
    let id = submit_ok(&app, &app.admin_token, "target").await;
    let missing = |scope: &str| format!("Missing required scope: {scope}");

    let reader = app.user_token("reader", &["jobs:read"]).await;
    let not_allowed = json!({"task_description": "not allowed"});
    assert_detail(
        &app.submit_job(&reader, &not_allowed).await,
        403,
        &missing("jobs:write"),
    );
    assert_detail(&app.cancel_job(&reader, id).await, 403, &missing("jobs:write"));
    // Read is not write; and one area's scope opens no other area.
    let r = app.list_jobs(&reader, &[]).await;
    assert_eq!(r.status, 200, "jobs:read reads: {}", r.text);
    assert_detail(
        &app.list_workers(&reader, &[]).await,
        403,
        &missing("supervisor:read"),
    );
    assert_detail(&app.quotas(&reader).await, 403, &missing("resources:read"));

    let sup_reader = app.user_token("sup-reader", &["supervisor:read"]).await;
    let r = app.pause_worker(&sup_reader, "w-403").await;
    assert_detail(&r, 403, &missing("supervisor:write"));
    let res_reader = app.user_token("res-reader", &["resources:read"]).await;
    let r = app.allocate(&res_reader, &json!({"workers": 1})).await;
    assert_detail(&r, 403, &missing("resources:write"));
    let writer = app.user_token("jobs-writer", &["jobs:write"]).await;
    assert_detail(
        &app.fleet_metrics(&writer).await,
        403,
        &missing("supervisor:read"),
    );

    // Nothing changed behind the refusals.
    let w = app.get_worker(&app.admin_token, "w-403").await;
    assert_eq!(w.json["status"], json!("idle"), "{}", w.text);
    let j = app.get_job(&app.admin_token, id).await;
    assert_ne!(j.json["status"], json!("cancelled"), "{}", j.text);
    app.stop().await;
}

/// A user with every scope but `admin`.
async fn almost_admin_token(app: &TestApp) -> String {
    let scopes = [
        "jobs:write",
        "supervisor:write",
        "resources:write",
        "jobs:read",
        "supervisor:read",
        "resources:read",
    ];
    app.user_token("almost", &scopes).await
}

#[tokio::test]
async fn only_admin_creates_users() {
    let app = spawn_app().await;
    // A user holding every scope but admin is still not an admin.
    let almost = almost_admin_token(&app).await;
    let body = json!({"username": "eve", "password": "eve-password-1", "scopes": ["admin"]});
    let r = app.create_user(&almost, &body).await;
    assert_detail(&r, 403, "Missing required scope: admin");
    assert_cannot_log_in(&app, "eve", "eve-password-1").await;
    app.stop().await;
}

#[tokio::test]
async fn duplicate_username_is_409_without_sql_in_the_detail() {
    let app = spawn_app().await;
    let body = json!({"username": "dave", "password": "amber-kite-77", "scopes": ["jobs:read"]});
    let r = app.create_user(&app.admin_token, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.create_user(&app.admin_token, &body).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let detail = r.json["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("string detail: {}", r.text));
    for leak in ["duplicate key", "violates", "constraint", "INSERT", "SQLSTATE"] {
        assert!(!detail.contains(leak), "409 detail leaks SQL: {}", r.text);
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_scope_is_422_and_creates_no_user() {
    let app = spawn_app().await;
    let body = json!({"username": "frank", "password": "frank-password-1", "scopes": ["jobs:read", "root"]});
    let r = app.create_user(&app.admin_token, &body).await;
    assert_body_invalid(&r, "unknown scope");
    assert_cannot_log_in(&app, "frank", "frank-password-1").await;
    app.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let app = spawn_app().await;
    app.user_token("gina", &["jobs:read"]).await;
    let wrong = app.login("gina", "not-her-password").await;
    let unknown = app.login("nobody-at-all", "not-her-password").await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert_eq!(unknown.status, 401, "{}", unknown.text);
    assert!(wrong.json["detail"].is_string(), "{}", wrong.text);
    assert_eq!(
        wrong.text, unknown.text,
        "wrong password and unknown user must be indistinguishable"
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_login_body_is_422() {
    let app = spawn_app().await;
    let no_password = json!({"username": "gina"});
    let r = app
        .send(Method::POST, "/api/auth/login", None, Some(&no_password))
        .await;
    assert_body_invalid(&r, "login without a password");
    app.stop().await;
}

/// An app allowing 3 logins per user and minute, with users `henry` (never
/// logged in) and `irene`.
async fn app_with_login_limit() -> TestApp {
    let app = spawn_app_with(&["--login-per-user-per-minute", "3"]).await;
    // Created without logging in, so every attempt counts.
    let body = json!({"username": "henry", "password": USER_PASSWORD, "scopes": ["jobs:read"]});
    let created = app.create_user(&app.admin_token, &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    app.user_token("irene", &["jobs:read"]).await;
    app
}

/// Logs in as `henry` with a wrong password until refused; answers the
/// statuses seen and the 429.
async fn exhaust_login_limit(app: &TestApp) -> (Vec<u16>, Reply) {
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = app.login("henry", "wrong-password").await;
        statuses.push(r.status);
        if r.status == 429 {
            return (statuses, r);
        }
        assert_eq!(r.status, 401, "{}", r.text);
    }
    panic!("no 429 after {statuses:?}")
}

#[tokio::test]
async fn login_attempts_over_the_per_user_limit_are_429_with_retry_after() {
    let app = app_with_login_limit().await;
    let (statuses, r) = exhaust_login_limit(&app).await;
    assert_eq!(
        statuses,
        vec![401, 401, 401, 429],
        "3 attempts per minute are allowed, the 4th is refused"
    );
    assert!(r.json["detail"].is_string(), "{}", r.text);
    let retry = r
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", r.headers))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!retry.trim().is_empty(), "empty Retry-After");
    if let Ok(secs) = retry.trim().parse::<u64>() {
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
    }
    app.stop().await;
}

/// The reply to `username` logging in with the right password once
/// `henry` has used up his login limit.
async fn login_after_henrys_limit(username: &str) -> Reply {
    let app = app_with_login_limit().await;
    exhaust_login_limit(&app).await;
    let r = app.login(username, USER_PASSWORD).await;
    app.stop().await;
    r
}

#[tokio::test]
async fn login_limit_refuses_the_right_password_too() {
    let r = login_after_henrys_limit("henry").await;
    assert_eq!(r.status, 429, "{}", r.text);
}

#[tokio::test]
async fn login_limit_is_per_user() {
    let r = login_after_henrys_limit("irene").await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// What the refused-token test arranges, so it can check afterwards that
/// no refused write took effect.
pub(crate) struct Targets {
    /// A job a refused cancel would have cancelled.
    pub(crate) job_id: Uuid,
    /// An allocation a refused release would have released.
    allocation_id: Uuid,
}

/// Worker `w-forged`, a job and an allocation, made by the admin.
pub(crate) async fn arrange_targets(app: &TestApp) -> Targets {
    app.register_worker("w-forged").await;
    let job_id = submit_ok(app, &app.admin_token, "forged").await;
    let allocation = allocate_ok(app, &app.admin_token, 1).await;
    let allocation_id = serde_json::from_value(allocation).expect("allocation_id");
    Targets {
        job_id,
        allocation_id,
    }
}

/// A valid body for the route at `path` (`None` for routes without one), so
/// a refused write would have had an effect had it been let through.
pub(crate) fn body_for(path: &str, targets: &Targets) -> Option<Value> {
    let body = match path {
        "/api/auth/users" => to_value(CreateUserRequest {
            username: "forger".into(),
            password: "forger-password".into(),
            scopes: vec!["admin".into()],
        }),
        "/api/resources/allocate" => to_value(AllocateRequest {
            workers: 1,
            job_id: None,
            ttl_seconds: None,
            pool: None,
        }),
        "/api/resources/release" => to_value(ReleaseRequest {
            allocation_id: targets.allocation_id,
        }),
        "/api/jobs/submit" => to_value(submission("forged submission")),
        "/api/jobs/cancel_batch" => Ok(json!({"job_ids": [targets.job_id]})),
        "/api/jobs/submit_batch" => to_value(BatchRequest {
            jobs: vec![submission("forged batch")],
        }),
        "/api/agents/credentials" => to_value(CredentialRequest {
            worker_id: "w-forger".into(),
        }),
        "/api/agents/register" => to_value(RegisterRequest {
            worker_id: "w-forger".into(),
            hostname: "forger.local".into(),
            capacity: 1,
            labels: Default::default(),
            version: "forged".into(),
            resources: Default::default(),
            isolation: None,
            pools: Vec::new(),
        }),
        _ => return None,
    };
    Some(body.expect("a request body serialises"))
}

/// A submission of `description` with every other field defaulted.
fn submission(description: &str) -> SubmitRequest {
    SubmitRequest {
        task_description: description.into(),
        ..Default::default()
    }
}

/// Asserts the state [`arrange_targets`] made is as it was.
pub(crate) async fn assert_targets_unchanged(app: &TestApp, targets: &Targets) {
    let admin = &app.admin_token;
    let w = app.get_worker(admin, "w-forged").await;
    assert_eq!(w.json["status"], json!("idle"), "{}", w.text);
    let workers = app.list_workers(admin, &[]).await;
    assert_eq!(
        workers.json["total"],
        json!(1),
        "no worker registered: {}",
        workers.text
    );
    let j = app.get_job(admin, targets.job_id).await;
    assert_ne!(j.json["status"], json!("cancelled"), "{}", j.text);
    assert_eq!(job_count(app).await, Some(1), "no job submitted");
    let quota = app.quotas(admin).await;
    assert_eq!(
        quota.json["allocated_workers"],
        json!(1),
        "the allocation is held: {}",
        quota.text
    );
    assert_cannot_log_in(app, "forger", "forger-password").await;
    let credentials = app.list_agent_credentials(admin).await;
    assert_eq!(
        credentials.json["total"],
        json!(0),
        "no credential issued: {}",
        credentials.text
    );
}

#[tokio::test]
async fn every_protected_route_refuses_expired_misaddressed_and_unsigned_tokens() {
    let app = spawn_app().await;
    let targets = arrange_targets(&app).await;
    let admin = admin_user(&app).await;
    let now = now_secs();
    let good = claims(admin.user_id, now - 10, now + 600);
    // Control: the same claims, correctly signed, are accepted.
    let r = app.me(&app.tokens.sign(&good).unwrap()).await;
    assert_eq!(r.status, 200, "a correctly signed token: {}", r.text);

    let tokens = forged_tokens(&app, &good);
    for route in protected_routes() {
        let path = concrete_path(route.path, targets.job_id, "w-forged");
        let body = body_for(route.path, &targets);
        for (what, token) in &tokens {
            let r = app
                .send(route.method.clone(), &path, Some(token), body.as_ref())
                .await;
            assert_invalid_credentials(&r, &format!("{what} token on {} {path}", route.method));
        }
    }
    assert_targets_unchanged(&app, &targets).await;
    app.stop().await;
}

#[tokio::test]
async fn every_protected_route_refuses_a_missing_token() {
    let app = spawn_app().await;
    for route in protected_routes() {
        let path = concrete_path(route.path, Uuid::new_v4(), "w-any");
        let r = app.send(route.method.clone(), &path, None, None).await;
        let what = format!("{} {path} without a token", route.method);
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert_www_authenticate_bearer(&r);
        let detail = r.json["detail"].as_str().unwrap_or_default();
        assert!(
            detail == NOT_AUTHENTICATED || detail == INVALID_CREDENTIALS,
            "{what}: {}",
            r.text
        );
    }
    app.stop().await;
}
