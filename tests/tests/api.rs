//! Black-box tests of the controller's HTTP API (shared/spec/api.md), each
//! against a real controller on a port of its own with its own database:
//! authentication and scopes, the supervisor, resource and job APIs, the
//! contract's error shapes (401, 403, 404, 409, 413, 422, 429), pagination,
//! idempotency and quotas under concurrency, and the unauthenticated routes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use controller::auth::Claims;
use integration_tests::{spawn_app, spawn_app_with, TestApp, ADMIN_USER, TEST_JWT_SECRET};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Every field of the contract's `Job`.
const JOB_FIELDS: [&str; 18] = [
    "job_id",
    "status",
    "task_description",
    "required_workers",
    "command",
    "priority",
    "labels",
    "attempts",
    "max_retries",
    "timeout_seconds",
    "idempotency_key",
    "submitted_by",
    "assigned_workers",
    "created_at",
    "started_at",
    "finished_at",
    "exit_code",
    "error",
];

/// Every field of the contract's `Worker`.
const WORKER_FIELDS: [&str; 9] = [
    "worker_id",
    "status",
    "hostname",
    "capacity",
    "running_jobs",
    "labels",
    "version",
    "registered_at",
    "last_heartbeat_at",
];

/// Every key of the contract's quota answer.
const QUOTA_FIELDS: [&str; 7] = [
    "max_workers",
    "allocated_workers",
    "available_workers",
    "max_concurrent_jobs",
    "running_jobs",
    "max_queued_jobs",
    "queued_jobs",
];

const INVALID_CREDENTIALS: &str = "Invalid authentication credentials";

// ---------------------------------------------------------------- auth ---

#[tokio::test]
async fn database_dependency_injection_serves_the_admin_from_the_database() {
    let app = spawn_app().await;
    let r = reply(app.get("/api/auth/me", &app.admin_token).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let admin = admin_user(&app).await;
    assert_eq!(r.json["user_id"], json!(admin.user_id.to_string()), "{}", r.text);
    assert_eq!(r.json["username"], json!(ADMIN_USER), "{}", r.text);
    let scopes = string_set(&r.json["scopes"]);
    assert!(scopes.contains("admin"), "{}", r.text);
    assert_eq!(scopes, admin.scopes.iter().cloned().collect::<HashSet<_>>());
    app.stop().await;
}

#[tokio::test]
async fn current_user_comes_from_a_valid_token() {
    let app = spawn_app().await;
    let created = reply(
        app.post_json(
            "/api/auth/users",
            &app.admin_token,
            &json!({"username": "carol", "password": "carol-password-1", "scopes": ["jobs:read", "resources:write"]}),
        )
        .await,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["username"], json!("carol"), "{}", created.text);
    assert!(
        !created.text.contains("carol-password-1") && !created.text.contains("argon2"),
        "the created user must not echo the password or its hash: {}",
        created.text
    );

    let login = reply(app.login("carol", "carol-password-1").await).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.json["token_type"], json!("bearer"), "{}", login.text);
    assert_eq!(login.json["expires_in"], json!(3600), "{}", login.text);
    assert_eq!(
        string_set(&login.json["scopes"]),
        set(&["jobs:read", "resources:write"]),
        "{}",
        login.text
    );
    let token = login.json["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let me = reply(app.get("/api/auth/me", &token).await).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["username"], json!("carol"), "{}", me.text);
    assert_eq!(
        string_set(&me.json["scopes"]),
        set(&["jobs:read", "resources:write"]),
        "{}",
        me.text
    );
    let user_id = me.json["user_id"].as_str().expect("user_id");
    assert!(Uuid::parse_str(user_id).is_ok(), "{}", me.text);
    if let Some(id) = created.json.get("user_id") {
        assert_eq!(id, &me.json["user_id"], "{} vs {}", created.text, me.text);
    }
    // The admin's token names someone else.
    let admin_me = reply(app.get("/api/auth/me", &app.admin_token).await).await;
    assert_ne!(admin_me.json["user_id"], me.json["user_id"]);
    app.stop().await;
}

#[tokio::test]
async fn invalid_or_missing_token_is_401_with_www_authenticate() {
    let app = spawn_app().await;
    for bad in ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"] {
        let r = reply(
            app.http
                .get(app.url("/api/auth/me"))
                .header("Authorization", format!("Bearer {bad}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_invalid_credentials(&r, &format!("token {bad:?}"));
    }
    // Not a bearer scheme at all.
    let r = reply(
        app.http
            .get(app.url("/api/auth/me"))
            .header("Authorization", "Basic YWRtaW46YWRtaW4tcGFzc3dvcmQ=")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401, "Basic auth: {}", r.text);
    assert_www_authenticate_bearer(&r);

    // Missing token: 401, "Not authenticated" is allowed.
    let r = reply(app.http.get(app.url("/api/auth/me")).send().await.unwrap()).await;
    println!(
        "missing token: {} {:?}",
        r.text,
        r.headers.get("www-authenticate")
    );
    assert_eq!(r.status, 401, "missing token: {}", r.text);
    assert_www_authenticate_bearer(&r);
    let detail = r.json["detail"].as_str().unwrap_or_default();
    assert!(
        detail == "Not authenticated" || detail == INVALID_CREDENTIALS,
        "missing token: {}",
        r.text
    );
    app.stop().await;
}

#[tokio::test]
async fn write_scope_implies_read_and_admin_can_do_everything() {
    let app = spawn_app().await;
    app.register_worker("w-scope").await;

    // jobs:write reads the jobs it writes.
    let writer = app.user_token("writer", &["jobs:write"]).await;
    let job = submit(&app, &writer, &json!({"task_description": "scoped"})).await;
    assert_eq!(job.status, 201, "{}", job.text);
    let id = job_id(&job.json);
    for path in [
        format!("/api/jobs/{id}"),
        format!("/api/jobs/{id}/events"),
        format!("/api/jobs/{id}/output"),
        "/api/jobs".to_owned(),
    ] {
        let r = reply(app.get(&path, &writer).await).await;
        assert_eq!(r.status, 200, "jobs:write GET {path}: {}", r.text);
    }
    // supervisor:write reads the supervisor; resources:write reads resources.
    let sup = app.user_token("sup", &["supervisor:write"]).await;
    for path in [
        "/api/supervisor/workers",
        "/api/supervisor/workers/w-scope",
        "/api/supervisor/metrics",
    ] {
        let r = reply(app.get(path, &sup).await).await;
        assert_eq!(r.status, 200, "supervisor:write GET {path}: {}", r.text);
    }
    let res = app.user_token("res", &["resources:write"]).await;
    for path in ["/api/resources/quotas", "/api/resources/usage"] {
        let r = reply(app.get(path, &res).await).await;
        assert_eq!(r.status, 200, "resources:write GET {path}: {}", r.text);
    }

    // admin: every read and every write.
    let admin = &app.admin_token;
    for path in [
        "/api/auth/me",
        "/api/supervisor/workers",
        "/api/supervisor/workers/w-scope",
        "/api/supervisor/metrics",
        "/api/resources/quotas",
        "/api/resources/usage",
        "/api/jobs",
    ] {
        let r = reply(app.get(path, admin).await).await;
        assert_eq!(r.status, 200, "admin GET {path}: {}", r.text);
    }
    let r = reply(app.get(&format!("/api/jobs/{id}"), admin).await).await;
    assert_eq!(r.status, 200, "admin GET job: {}", r.text);
    let admin_job = submit(&app, admin, &json!({"task_description": "by admin"})).await;
    assert_eq!(admin_job.status, 201, "{}", admin_job.text);
    let r = reply(
        app.post(&format!("/api/jobs/{}/cancel", job_id(&admin_job.json)), admin)
            .await,
    )
    .await;
    assert_eq!(r.status, 200, "admin cancel: {}", r.text);
    let r = reply(app.post("/api/supervisor/workers/w-scope/pause", admin).await).await;
    assert_eq!(r.status, 200, "admin pause: {}", r.text);
    let r = reply(app.post("/api/supervisor/workers/w-scope/resume", admin).await).await;
    assert_eq!(r.status, 200, "admin resume: {}", r.text);
    let alloc = reply(
        app.post_json("/api/resources/allocate", admin, &json!({"workers": 1}))
            .await,
    )
    .await;
    assert_eq!(alloc.status, 201, "admin allocate: {}", alloc.text);
    let r = reply(
        app.post_json(
            "/api/resources/release",
            admin,
            &json!({"allocation_id": alloc.json["allocation_id"]}),
        )
        .await,
    )
    .await;
    assert_eq!(r.status, 200, "admin release: {}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn missing_scope_is_403_naming_the_scope() {
    let app = spawn_app().await;
    app.register_worker("w-403").await;
    let job = submit(&app, &app.admin_token, &json!({"task_description": "target"})).await;
    let id = job_id(&job.json);

    let reader = app.user_token("reader", &["jobs:read"]).await;
    let r = submit(&app, &reader, &json!({"task_description": "not allowed"})).await;
    assert_detail(&r, 403, "Missing required scope: jobs:write");
    let r = reply(app.post(&format!("/api/jobs/{id}/cancel"), &reader).await).await;
    assert_detail(&r, 403, "Missing required scope: jobs:write");
    // Read is not write; and one area's scope opens no other area.
    let r = reply(app.get("/api/jobs", &reader).await).await;
    assert_eq!(r.status, 200, "jobs:read reads: {}", r.text);
    let r = reply(app.get("/api/supervisor/workers", &reader).await).await;
    assert_detail(&r, 403, "Missing required scope: supervisor:read");
    let r = reply(app.get("/api/resources/quotas", &reader).await).await;
    assert_detail(&r, 403, "Missing required scope: resources:read");

    let sup_reader = app.user_token("sup-reader", &["supervisor:read"]).await;
    let r = reply(app.post("/api/supervisor/workers/w-403/pause", &sup_reader).await).await;
    assert_detail(&r, 403, "Missing required scope: supervisor:write");
    let res_reader = app.user_token("res-reader", &["resources:read"]).await;
    let r = reply(
        app.post_json("/api/resources/allocate", &res_reader, &json!({"workers": 1}))
            .await,
    )
    .await;
    assert_detail(&r, 403, "Missing required scope: resources:write");
    let writer = app.user_token("jobs-writer", &["jobs:write"]).await;
    let r = reply(app.get("/api/supervisor/metrics", &writer).await).await;
    assert_detail(&r, 403, "Missing required scope: supervisor:read");

    // Nothing changed behind the refusals.
    let w = reply(app.get("/api/supervisor/workers/w-403", &app.admin_token).await).await;
    assert_eq!(w.json["status"], json!("idle"), "{}", w.text);
    let j = reply(app.get(&format!("/api/jobs/{id}"), &app.admin_token).await).await;
    assert_ne!(j.json["status"], json!("cancelled"), "{}", j.text);
    app.stop().await;
}

#[tokio::test]
async fn admin_creates_users_others_cannot_duplicates_conflict_unknown_scopes_are_422() {
    let app = spawn_app().await;
    let body = json!({"username": "dave", "password": "dave-password-1", "scopes": ["jobs:read"]});
    let r = reply(app.post_json("/api/auth/users", &app.admin_token, &body).await).await;
    assert_eq!(r.status, 201, "{}", r.text);

    // A user holding every scope but admin is still not an admin.
    let almost = app
        .user_token(
            "almost",
            &[
                "jobs:write",
                "supervisor:write",
                "resources:write",
                "jobs:read",
                "supervisor:read",
                "resources:read",
            ],
        )
        .await;
    let r = reply(
        app.post_json(
            "/api/auth/users",
            &almost,
            &json!({"username": "eve", "password": "eve-password-1", "scopes": ["admin"]}),
        )
        .await,
    )
    .await;
    assert_detail(&r, 403, "Missing required scope: admin");
    assert_eq!(
        app.login("eve", "eve-password-1").await.status(),
        401,
        "eve must not exist"
    );

    // Duplicate username.
    let r = reply(app.post_json("/api/auth/users", &app.admin_token, &body).await).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let detail = r.json["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("string detail: {}", r.text));
    for leak in ["duplicate key", "violates", "constraint", "INSERT", "SQLSTATE"] {
        assert!(!detail.contains(leak), "409 detail leaks SQL: {}", r.text);
    }

    // Unknown scope.
    let r = reply(
        app.post_json(
            "/api/auth/users",
            &app.admin_token,
            &json!({"username": "frank", "password": "frank-password-1", "scopes": ["jobs:read", "root"]}),
        )
        .await,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    body_validation_items(&r);
    assert_eq!(
        app.login("frank", "frank-password-1").await.status(),
        401,
        "frank must not exist"
    );
    app.stop().await;
}

#[tokio::test]
async fn login_success_shape_and_same_401_for_wrong_password_and_unknown_user() {
    let app = spawn_app().await;
    app.user_token("gina", &["jobs:read"]).await;
    let wrong = reply(app.login("gina", "not-her-password").await).await;
    let unknown = reply(app.login("nobody-at-all", "not-her-password").await).await;
    println!("login 401: {} / {}", wrong.text, unknown.text);
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert_eq!(unknown.status, 401, "{}", unknown.text);
    assert!(wrong.json["detail"].is_string(), "{}", wrong.text);
    assert_eq!(
        wrong.text, unknown.text,
        "wrong password and unknown user must be indistinguishable"
    );
    // Malformed login bodies are validation errors, not 500s.
    let r = reply(
        app.http
            .post(app.url("/api/auth/login"))
            .json(&json!({"username": "gina"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    body_validation_items(&r);
    app.stop().await;
}

#[tokio::test]
async fn login_attempts_over_the_per_user_limit_are_429_with_retry_after() {
    let app = spawn_app_with(&["--login-per-user-per-minute", "3"]).await;
    // Created without logging in, so every attempt below counts.
    let created = app
        .post_json(
            "/api/auth/users",
            &app.admin_token,
            &json!({"username": "henry", "password": "password-123", "scopes": ["jobs:read"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    app.user_token("irene", &["jobs:read"]).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..12 {
        let r = reply(app.login("henry", "wrong-password").await).await;
        statuses.push(r.status);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let r = limited.unwrap_or_else(|| panic!("no 429 after {statuses:?}"));
    println!("429: {} retry-after {:?}", r.text, r.headers.get("retry-after"));
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
    // The right password does not get around the limit either.
    let r = reply(app.login("henry", "password-123").await).await;
    assert_eq!(r.status, 429, "{}", r.text);
    // The limit is per user: another user still logs in.
    let r = reply(app.login("irene", "password-123").await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn every_protected_route_refuses_expired_misaddressed_and_unsigned_tokens() {
    let app = spawn_app().await;
    app.register_worker("w-forged").await;
    let job = submit(&app, &app.admin_token, &json!({"task_description": "forged"})).await;
    let id = job_id(&job.json);
    let alloc = reply(
        app.post_json(
            "/api/resources/allocate",
            &app.admin_token,
            &json!({"workers": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(alloc.status, 201, "{}", alloc.text);
    let admin = admin_user(&app).await;
    let now = now_secs();
    let good = claims(admin.user_id, now - 10, now + 600);

    // Control: the same claims, correctly signed, are accepted.
    let valid = app.tokens.sign(&good).unwrap();
    let r = reply(app.get("/api/auth/me", &valid).await).await;
    assert_eq!(r.status, 200, "a correctly signed token: {}", r.text);

    let expired = app
        .tokens
        .sign(&claims(admin.user_id, now - 7200, now - 3600))
        .unwrap();
    let wrong_aud = app
        .tokens
        .sign(&Claims {
            aud: "someone-else".into(),
            ..good.clone()
        })
        .unwrap();
    let wrong_iss = app
        .tokens
        .sign(&Claims {
            iss: "someone-else".into(),
            ..good.clone()
        })
        .unwrap();
    let not_yet = app
        .tokens
        .sign(&Claims {
            nbf: now + 3600,
            ..good.clone()
        })
        .unwrap();
    let alg_none = unsigned_token(&good);
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-that-is-long-enough-for-hs256"),
    )
    .unwrap();
    let tokens = [
        ("expired", expired),
        ("wrong aud", wrong_aud),
        ("wrong iss", wrong_iss),
        ("nbf in the future", not_yet),
        ("alg none", alg_none),
        ("alg HS512", hs512),
        ("other key", other_key),
    ];

    let alloc_id = alloc.json["allocation_id"].clone();
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/auth/me".into(), None),
        (
            "POST",
            "/api/auth/users".into(),
            Some(json!({"username": "forger", "password": "forger-password", "scopes": ["admin"]})),
        ),
        ("GET", "/api/supervisor/workers".into(), None),
        ("GET", "/api/supervisor/workers/w-forged".into(), None),
        ("POST", "/api/supervisor/workers/w-forged/pause".into(), None),
        ("POST", "/api/supervisor/workers/w-forged/resume".into(), None),
        ("POST", "/api/supervisor/workers/w-forged/terminate".into(), None),
        ("GET", "/api/supervisor/metrics".into(), None),
        ("GET", "/api/resources/quotas".into(), None),
        (
            "POST",
            "/api/resources/allocate".into(),
            Some(json!({"workers": 1})),
        ),
        (
            "POST",
            "/api/resources/release".into(),
            Some(json!({"allocation_id": alloc_id})),
        ),
        ("GET", "/api/resources/usage".into(), None),
        (
            "POST",
            "/api/jobs/submit".into(),
            Some(json!({"task_description": "forged submission"})),
        ),
        ("GET", format!("/api/jobs/{id}"), None),
        ("POST", format!("/api/jobs/{id}/cancel"), None),
        ("GET", "/api/jobs".into(), None),
        ("GET", format!("/api/jobs/{id}/events"), None),
        ("GET", format!("/api/jobs/{id}/output"), None),
    ];
    for (what, token) in &tokens {
        for (method, path, body) in &routes {
            let mut req = match *method {
                "GET" => app.http.get(app.url(path)),
                _ => app.http.post(app.url(path)),
            };
            req = req.bearer_auth(token);
            if let Some(body) = body {
                req = req.json(body);
            }
            let r = reply(req.send().await.unwrap()).await;
            assert_invalid_credentials(&r, &format!("{what} token on {method} {path}"));
        }
    }

    // None of the refused writes took effect.
    let w = reply(
        app.get("/api/supervisor/workers/w-forged", &app.admin_token)
            .await,
    )
    .await;
    assert_eq!(w.json["status"], json!("idle"), "{}", w.text);
    let j = reply(app.get(&format!("/api/jobs/{id}"), &app.admin_token).await).await;
    assert_ne!(j.json["status"], json!("cancelled"), "{}", j.text);
    let list = reply(app.get("/api/jobs", &app.admin_token).await).await;
    assert_eq!(
        list.json["jobs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.text
    );
    assert_eq!(app.login("forger", "forger-password").await.status(), 401);
    app.stop().await;
}

// ---------------------------------------------------------- supervisor ---

#[tokio::test]
async fn list_workers_with_total_and_status_filter() {
    let app = spawn_app().await;
    let empty = reply(app.get("/api/supervisor/workers", &app.admin_token).await).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.json, json!({"workers": [], "total": 0}));

    for id in ["w-a", "w-b", "w-c"] {
        app.register_worker(id).await;
    }
    let r = reply(
        app.post("/api/supervisor/workers/w-b/pause", &app.admin_token)
            .await,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let all = reply(app.get("/api/supervisor/workers", &app.admin_token).await).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(all.json["total"], json!(3), "{}", all.text);
    let workers = all.json["workers"].as_array().expect("workers array");
    assert_eq!(workers.len(), 3, "{}", all.text);
    for w in workers {
        assert_worker_shape(w);
    }
    assert_eq!(
        ids_of(workers, "worker_id").into_iter().collect::<HashSet<_>>(),
        set(&["w-a", "w-b", "w-c"])
    );
    let a = workers.iter().find(|w| w["worker_id"] == "w-a").unwrap();
    assert_eq!(a["hostname"], json!("w-a.local"));
    assert_eq!(a["capacity"], json!(4));
    assert_eq!(a["running_jobs"], json!(0));
    assert_eq!(a["version"], json!("test"));
    assert_eq!(a["labels"], json!({}));

    let idle = reply(
        app.get("/api/supervisor/workers?status=idle", &app.admin_token)
            .await,
    )
    .await;
    assert_eq!(idle.status, 200, "{}", idle.text);
    assert_eq!(idle.json["total"], json!(2), "{}", idle.text);
    let idle_workers = idle.json["workers"].as_array().unwrap();
    assert_eq!(
        ids_of(idle_workers, "worker_id")
            .into_iter()
            .collect::<HashSet<_>>(),
        set(&["w-a", "w-c"])
    );
    assert!(
        idle_workers.iter().all(|w| w["status"] == "idle"),
        "{}",
        idle.text
    );

    let paused = reply(
        app.get("/api/supervisor/workers?status=paused", &app.admin_token)
            .await,
    )
    .await;
    assert_eq!(paused.json["total"], json!(1), "{}", paused.text);
    assert_eq!(
        paused.json["workers"][0]["worker_id"],
        json!("w-b"),
        "{}",
        paused.text
    );
    let none = reply(
        app.get("/api/supervisor/workers?status=busy", &app.admin_token)
            .await,
    )
    .await;
    assert_eq!(none.json, json!({"workers": [], "total": 0}), "{}", none.text);

    // A status that does not exist is a validation error.
    let bogus = reply(
        app.get("/api/supervisor/workers?status=sleeping", &app.admin_token)
            .await,
    )
    .await;
    assert_eq!(bogus.status, 422, "{}", bogus.text);
    validation_items(&bogus);
    app.stop().await;
}

#[tokio::test]
async fn get_worker_and_404_for_unknown() {
    let app = spawn_app().await;
    let registered = app.register_worker("w-get.1:x").await;
    let r = reply(
        app.get("/api/supervisor/workers/w-get.1:x", &app.admin_token)
            .await,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_worker_shape(&r.json);
    assert_eq!(r.json["worker_id"], json!("w-get.1:x"));
    assert_eq!(r.json["status"], json!("idle"));
    assert_eq!(r.json["hostname"], json!("w-get.1:x.local"));
    let back: controller::models::Worker = serde_json::from_value(r.json.clone()).unwrap();
    assert_eq!(back, registered, "the API shows what the database holds");

    let r = reply(app.get("/api/supervisor/workers/ghost-7", &app.admin_token).await).await;
    assert_detail(&r, 404, "Worker ghost-7 not found");
    app.stop().await;
}

#[tokio::test]
async fn pause_resume_terminate_workers_and_409_on_forbidden_transitions() {
    let app = spawn_app().await;
    app.register_worker("w-p").await;
    let admin = &app.admin_token;

    let r = reply(app.post("/api/supervisor/workers/w-p/pause", admin).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_worker_shape(&r.json);
    assert_eq!(r.json["worker_id"], json!("w-p"));
    assert_eq!(r.json["status"], json!("paused"));

    let r = reply(app.post("/api/supervisor/workers/w-p/pause", admin).await).await;
    assert_detail(&r, 409, "Invalid worker transition: paused -> paused");

    let r = reply(app.post("/api/supervisor/workers/w-p/resume", admin).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], json!("idle"), "{}", r.text);

    let r = reply(app.post("/api/supervisor/workers/w-p/resume", admin).await).await;
    assert_detail(&r, 409, "Invalid worker transition: idle -> idle");

    let r = reply(app.post("/api/supervisor/workers/w-p/terminate", admin).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_worker_shape(&r.json);
    assert_eq!(r.json["status"], json!("terminating"), "{}", r.text);

    let r = reply(app.post("/api/supervisor/workers/w-p/pause", admin).await).await;
    assert_detail(&r, 409, "Invalid worker transition: terminating -> paused");
    let r = reply(app.post("/api/supervisor/workers/w-p/terminate", admin).await).await;
    assert_detail(&r, 409, "Invalid worker transition: terminating -> terminating");
    let r = reply(app.get("/api/supervisor/workers/w-p", admin).await).await;
    assert_eq!(r.json["status"], json!("terminating"), "{}", r.text);

    for action in ["pause", "resume", "terminate"] {
        let r = reply(
            app.post(&format!("/api/supervisor/workers/nobody/{action}"), admin)
                .await,
        )
        .await;
        assert_detail(&r, 404, "Worker nobody not found");
    }
    app.stop().await;
}

#[tokio::test]
async fn supervisor_metrics_count_workers_and_jobs_by_status() {
    let app = spawn_app().await;
    let admin = &app.admin_token;
    for id in ["m-1", "m-2", "m-3", "m-4"] {
        app.register_worker(id).await;
    }
    assert_eq!(
        app.post("/api/supervisor/workers/m-2/pause", admin)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post("/api/supervisor/workers/m-3/terminate", admin)
            .await
            .status(),
        200
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = submit(&app, admin, &json!({"task_description": format!("metric {i}")})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(job_id(&r.json));
    }
    assert_eq!(
        app.post(&format!("/api/jobs/{}/cancel", ids[0]), admin)
            .await
            .status(),
        200
    );

    let r = reply(app.get("/api/supervisor/metrics", admin).await).await;
    println!("metrics: {}", r.text);
    assert_eq!(r.status, 200, "{}", r.text);
    let workers = r.json["workers_by_status"]
        .as_object()
        .unwrap_or_else(|| panic!("workers_by_status object: {}", r.text));
    let count = |m: &serde_json::Map<String, Value>, k: &str| m.get(k).and_then(Value::as_i64).unwrap_or(0);
    assert_eq!(count(workers, "idle"), 2, "{}", r.text);
    assert_eq!(count(workers, "paused"), 1, "{}", r.text);
    assert_eq!(count(workers, "terminating"), 1, "{}", r.text);
    assert_eq!(
        workers.values().filter_map(Value::as_i64).sum::<i64>(),
        4,
        "{}",
        r.text
    );
    let jobs = r.json["jobs_by_status"]
        .as_object()
        .unwrap_or_else(|| panic!("jobs_by_status object: {}", r.text));
    assert_eq!(count(jobs, "cancelled"), 1, "{}", r.text);
    assert_eq!(
        count(jobs, "pending") + count(jobs, "queued"),
        2,
        "two live jobs (pending or already queued): {}",
        r.text
    );
    assert_eq!(
        jobs.values().filter_map(Value::as_i64).sum::<i64>(),
        3,
        "{}",
        r.text
    );
    for v in workers.values().chain(jobs.values()) {
        assert!(v.is_i64() || v.is_u64(), "counts are integers: {}", r.text);
    }
    app.stop().await;
}

// ----------------------------------------------------------- resources ---

#[tokio::test]
async fn quotas_report_all_seven_keys_as_integers_and_track_usage() {
    let app = spawn_app_with(&["--default-max-workers", "2"]).await;
    let admin = &app.admin_token;
    let r = reply(app.get("/api/resources/quotas", admin).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for key in QUOTA_FIELDS {
        assert!(
            r.json[key].is_i64() || r.json[key].is_u64(),
            "{key} must be an integer: {}",
            r.text
        );
    }
    assert_eq!(r.json["max_workers"], json!(2), "{}", r.text);
    assert_eq!(r.json["allocated_workers"], json!(0), "{}", r.text);
    assert_eq!(
        r.json["available_workers"],
        json!(0),
        "no workers yet: {}",
        r.text
    );
    assert_eq!(r.json["running_jobs"], json!(0), "{}", r.text);
    assert_eq!(r.json["queued_jobs"], json!(0), "{}", r.text);
    assert_eq!(r.json["max_concurrent_jobs"], json!(10_000), "{}", r.text);
    assert_eq!(r.json["max_queued_jobs"], json!(1_000_000), "{}", r.text);

    for id in ["q-1", "q-2", "q-3", "q-4"] {
        app.register_worker(id).await;
    }
    assert_eq!(
        app.post("/api/supervisor/workers/q-4/pause", admin)
            .await
            .status(),
        200
    );
    let r = reply(app.get("/api/resources/quotas", admin).await).await;
    assert_eq!(
        r.json["available_workers"],
        json!(2),
        "three free live workers, capped by max_workers 2: {}",
        r.text
    );
    let a = reply(
        app.post_json("/api/resources/allocate", admin, &json!({"workers": 1}))
            .await,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    for i in 0..2 {
        let s = submit(&app, admin, &json!({"task_description": format!("q {i}")})).await;
        assert_eq!(s.status, 201, "{}", s.text);
    }
    let r = reply(app.get("/api/resources/quotas", admin).await).await;
    assert_eq!(r.json["allocated_workers"], json!(1), "{}", r.text);
    assert_eq!(
        r.json["available_workers"],
        json!(1),
        "quota leaves 1: {}",
        r.text
    );
    assert_eq!(r.json["queued_jobs"], json!(2), "{}", r.text);
    assert_eq!(r.json["running_jobs"], json!(0), "{}", r.text);

    // The numbers are the caller's own: another user has nothing allocated.
    let other = app.user_token("quota-other", &["resources:read"]).await;
    let r = reply(app.get("/api/resources/quotas", &other).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["allocated_workers"], json!(0), "{}", r.text);
    assert_eq!(r.json["queued_jobs"], json!(0), "{}", r.text);
    assert_eq!(
        r.json["available_workers"],
        json!(2),
        "two unallocated live workers: {}",
        r.text
    );
    app.stop().await;
}

#[tokio::test]
async fn allocate_returns_201_and_409_over_quota_or_free_workers() {
    let app = spawn_app_with(&["--default-max-workers", "2"]).await;
    let admin = &app.admin_token;
    for id in ["a-1", "a-2", "a-3"] {
        app.register_worker(id).await;
    }
    let job = submit(&app, admin, &json!({"task_description": "needs workers"})).await;
    let id = job_id(&job.json);

    // Over the quota (3 free workers, max_workers 2).
    let r = reply(
        app.post_json("/api/resources/allocate", admin, &json!({"workers": 3}))
            .await,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.json["detail"].is_string(), "{}", r.text);

    let r = reply(
        app.post_json(
            "/api/resources/allocate",
            admin,
            &json!({"workers": 2, "job_id": id, "ttl_seconds": 600}),
        )
        .await,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        Uuid::parse_str(r.json["allocation_id"].as_str().unwrap_or_default()).is_ok(),
        "{}",
        r.text
    );
    assert_eq!(r.json["workers"], json!(2), "{}", r.text);
    assert_eq!(r.json["job_id"], json!(id.to_string()), "{}", r.text);
    assert_eq!(r.json["status"], json!("active"), "{}", r.text);
    let expires = utc_time(&r.json["expires_at"]);
    let in_ten_minutes = chrono::Utc::now() + chrono::Duration::seconds(600);
    assert!(
        (expires - in_ten_minutes).num_seconds().abs() < 60,
        "expires_at about ttl_seconds from now: {}",
        r.text
    );

    // The quota is used up.
    let r = reply(
        app.post_json("/api/resources/allocate", admin, &json!({"workers": 1}))
            .await,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.json["detail"].is_string(), "{}", r.text);

    // Another user: within quota, but only one worker is left free.
    let other = app.user_token("alloc-other", &["resources:write"]).await;
    let r = reply(
        app.post_json("/api/resources/allocate", &other, &json!({"workers": 2}))
            .await,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.json["detail"].is_string(), "{}", r.text);
    let r = reply(
        app.post_json("/api/resources/allocate", &other, &json!({"workers": 1}))
            .await,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json["job_id"].is_null(), "{}", r.text);
    assert!(r.json.get("expires_at").is_some(), "{}", r.text);
    assert_eq!(r.json["status"], json!("active"), "{}", r.text);

    // Bad requests are validation errors.
    for body in [json!({"workers": 0}), json!({"workers": "two"}), json!({})] {
        let r = reply(app.post_json("/api/resources/allocate", &other, &body).await).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        body_validation_items(&r);
    }
    app.stop().await;
}

#[tokio::test]
async fn release_marks_released_twice_is_harmless_unknown_is_404() {
    let app = spawn_app().await;
    let admin = &app.admin_token;
    app.register_worker("r-1").await;
    let a = reply(
        app.post_json("/api/resources/allocate", admin, &json!({"workers": 1}))
            .await,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let alloc_id = a.json["allocation_id"].clone();
    // The only worker is held.
    let r = reply(
        app.post_json("/api/resources/allocate", admin, &json!({"workers": 1}))
            .await,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);

    let r = reply(
        app.post_json(
            "/api/resources/release",
            admin,
            &json!({"allocation_id": alloc_id}),
        )
        .await,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["allocation_id"], alloc_id, "{}", r.text);
    assert_eq!(r.json["status"], json!("released"), "{}", r.text);
    assert_eq!(r.json["workers"], json!(1), "{}", r.text);

    let again = reply(
        app.post_json(
            "/api/resources/release",
            admin,
            &json!({"allocation_id": alloc_id}),
        )
        .await,
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["status"], json!("released"), "{}", again.text);

    // The worker is free again.
    let r = reply(
        app.post_json("/api/resources/allocate", admin, &json!({"workers": 1}))
            .await,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let unknown = Uuid::new_v4();
    let r = reply(
        app.post_json(
            "/api/resources/release",
            admin,
            &json!({"allocation_id": unknown}),
        )
        .await,
    )
    .await;
    assert_detail(&r, 404, &format!("Allocation {unknown} not found"));
    let r = reply(
        app.post_json(
            "/api/resources/release",
            admin,
            &json!({"allocation_id": "not-a-uuid"}),
        )
        .await,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    body_validation_items(&r);
    app.stop().await;
}

// ---------------------------------------------------------------- jobs ---

#[tokio::test]
async fn submit_job_is_201_pending_with_every_field_and_idempotent() {
    let app = spawn_app().await;
    let token = app.user_token("submitter", &["jobs:write"]).await;
    let me = reply(app.get("/api/auth/me", &token).await).await;

    let r = submit(&app, &token, &json!({"task_description": "plain"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_job_shape(&r.json);
    assert_eq!(r.json["status"], json!("pending"), "{}", r.text);
    assert_eq!(r.json["task_description"], json!("plain"));
    assert_eq!(r.json["required_workers"], json!(1), "default 1: {}", r.text);
    assert_eq!(r.json["priority"], json!(5), "default 5: {}", r.text);
    assert_eq!(r.json["max_retries"], json!(0), "default 0: {}", r.text);
    assert_eq!(r.json["attempts"], json!(0), "{}", r.text);
    assert_eq!(r.json["labels"], json!({}), "{}", r.text);
    assert_eq!(r.json["assigned_workers"], json!([]), "{}", r.text);
    assert!(r.json["command"].is_null(), "{}", r.text);
    assert!(r.json["timeout_seconds"].is_null(), "{}", r.text);
    assert!(r.json["idempotency_key"].is_null(), "{}", r.text);
    for k in ["started_at", "finished_at", "exit_code", "error"] {
        assert!(r.json[k].is_null(), "{k}: {}", r.text);
    }
    assert_eq!(r.json["submitted_by"], me.json["user_id"], "{}", r.text);
    let created = utc_time(&r.json["created_at"]);
    assert!((chrono::Utc::now() - created).num_seconds().abs() < 60);

    let full = json!({
        "task_description": "full",
        "required_workers": 3,
        "command": ["sh", "-c", "echo hi"],
        "priority": 9,
        "timeout_seconds": 30,
        "max_retries": 2,
        "idempotency_key": "key-1",
        "labels": {"team": "infra"}
    });
    let first = submit(&app, &token, &full).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_job_shape(&first.json);
    assert_eq!(first.json["status"], json!("pending"));
    assert_eq!(first.json["required_workers"], json!(3));
    assert_eq!(first.json["command"], json!(["sh", "-c", "echo hi"]));
    assert_eq!(first.json["priority"], json!(9));
    assert_eq!(first.json["timeout_seconds"], json!(30));
    assert_eq!(first.json["max_retries"], json!(2));
    assert_eq!(first.json["idempotency_key"], json!("key-1"));
    assert_eq!(first.json["labels"], json!({"team": "infra"}));

    let again = submit(&app, &token, &full).await;
    assert_eq!(again.status, 200, "same key, same body: {}", again.text);
    assert_job_shape(&again.json);
    assert_eq!(again.json["job_id"], first.json["job_id"]);

    let mut changed = full.clone();
    changed["priority"] = json!(1);
    let r = submit(&app, &token, &changed).await;
    assert_eq!(r.status, 409, "same key, other body: {}", r.text);
    assert!(r.json["detail"].is_string(), "{}", r.text);

    // The key is per user: another user's key-1 is a new job.
    let other = app.user_token("submitter-2", &["jobs:write"]).await;
    let r = submit(&app, &other, &full).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_ne!(r.json["job_id"], first.json["job_id"]);

    let list = reply(app.get("/api/jobs?limit=500", &app.admin_token).await).await;
    assert_eq!(
        list.json["jobs"].as_array().map(Vec::len),
        Some(3),
        "nothing created by the replay or the conflict: {}",
        list.text
    );
    app.stop().await;
}

#[tokio::test]
async fn get_job_200_unknown_404_malformed_id_422() {
    let app = spawn_app().await;
    let admin = &app.admin_token;
    let s = submit(
        &app,
        admin,
        &json!({"task_description": "fetch me", "labels": {"a": "b"}}),
    )
    .await;
    let id = job_id(&s.json);
    let r = reply(app.get(&format!("/api/jobs/{id}"), admin).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_job_shape(&r.json);
    assert_eq!(r.json["job_id"], json!(id.to_string()));
    assert_eq!(r.json["task_description"], json!("fetch me"));
    assert_eq!(r.json["labels"], json!({"a": "b"}));
    assert_eq!(r.json["created_at"], s.json["created_at"]);
    let status = r.json["status"].as_str().unwrap_or_default();
    assert!(status == "pending" || status == "queued", "{}", r.text);

    let unknown = Uuid::new_v4();
    let r = reply(app.get(&format!("/api/jobs/{unknown}"), admin).await).await;
    assert_detail(&r, 404, &format!("Job {unknown} not found"));

    let r = reply(app.get("/api/jobs/not-a-uuid", admin).await).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let items = validation_items(&r);
    assert_eq!(items[0]["loc"], json!(["path", "job_id"]), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn cancel_pending_job_then_409_on_second_cancel() {
    let app = spawn_app().await;
    let admin = &app.admin_token;
    let s = submit(&app, admin, &json!({"task_description": "cancel me"})).await;
    let id = job_id(&s.json);
    let r = reply(app.post(&format!("/api/jobs/{id}/cancel"), admin).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_job_shape(&r.json);
    assert_eq!(r.json["status"], json!("cancelled"), "{}", r.text);
    assert_eq!(r.json["job_id"], json!(id.to_string()));
    assert!(
        !r.json["finished_at"].is_null(),
        "a cancelled job is finished: {}",
        r.text
    );

    let r = reply(app.post(&format!("/api/jobs/{id}/cancel"), admin).await).await;
    assert_detail(&r, 409, "Invalid job transition: cancelled -> cancelled");
    let r = reply(app.get(&format!("/api/jobs/{id}"), admin).await).await;
    assert_eq!(r.json["status"], json!("cancelled"), "{}", r.text);

    let unknown = Uuid::new_v4();
    let r = reply(app.post(&format!("/api/jobs/{unknown}/cancel"), admin).await).await;
    assert_detail(&r, 404, &format!("Job {unknown} not found"));
    app.stop().await;
}

#[tokio::test]
async fn job_events_and_output() {
    let app = spawn_app().await;
    let admin = &app.admin_token;
    let s = submit(&app, admin, &json!({"task_description": "history"})).await;
    let id = job_id(&s.json);

    let r = reply(app.get(&format!("/api/jobs/{id}/events"), admin).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let events = r.json["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events array: {}", r.text));
    assert!(!events.is_empty(), "{}", r.text);
    for e in events {
        for k in ["from", "to", "at", "worker_id", "reason"] {
            assert!(e.get(k).is_some(), "event without {k}: {}", r.text);
        }
        utc_time(&e["at"]);
    }
    assert!(events[0]["from"].is_null(), "{}", r.text);
    assert_eq!(events[0]["to"], json!("pending"), "{}", r.text);

    assert_eq!(
        app.post(&format!("/api/jobs/{id}/cancel"), admin).await.status(),
        200
    );
    let r = reply(app.get(&format!("/api/jobs/{id}/events"), admin).await).await;
    let events = r.json["events"].as_array().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["to"], json!("cancelled"), "{}", r.text);
    let before_last = &events[events.len() - 2]["to"];
    assert_eq!(last["from"], *before_last, "events chain: {}", r.text);
    let times: Vec<_> = events.iter().map(|e| utc_time(&e["at"])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {}", r.text);

    let fresh = submit(&app, admin, &json!({"task_description": "no output yet"})).await;
    let fresh_id = job_id(&fresh.json);
    let r = reply(app.get(&format!("/api/jobs/{fresh_id}/output"), admin).await).await;
    println!("output: {}", r.text);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.is_object(), "{}", r.text);
    assert!(r.json.get("exit_code").is_some(), "{}", r.text);
    assert!(r.json["exit_code"].is_null(), "{}", r.text);

    let unknown = Uuid::new_v4();
    for what in ["events", "output"] {
        let r = reply(app.get(&format!("/api/jobs/{unknown}/{what}"), admin).await).await;
        assert_detail(&r, 404, &format!("Job {unknown} not found"));
    }
    app.stop().await;
}

#[tokio::test]
async fn list_jobs_pages_newest_first_with_cursor_and_status_filter() {
    let app = spawn_app().await;
    let admin = &app.admin_token;
    let mut submitted = Vec::new();
    for i in 0..7 {
        let r = submit(&app, admin, &json!({"task_description": format!("page {i}")})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        submitted.push(job_id(&r.json).to_string());
    }
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            None => app.url("/api/jobs?limit=3"),
            Some(c) => url_with_query(&app, "/api/jobs", &[("limit", "3"), ("cursor", c)]),
        };
        let r = get_url(&app, &url, admin).await;
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        assert!(pages <= 4, "pagination does not end: {}", r.text);
        let jobs = r.json["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("jobs: {}", r.text));
        assert!(jobs.len() <= 3, "limit honoured: {}", r.text);
        if pages == 1 {
            assert_eq!(jobs.len(), 3, "{}", r.text);
        }
        for j in jobs {
            assert_job_shape(j);
        }
        seen.extend(ids_of(jobs, "job_id"));
        assert!(r.json.get("next_cursor").is_some(), "next_cursor key: {}", r.text);
        match &r.json["next_cursor"] {
            Value::Null => break,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor must be a string or null: {other}"),
        }
    }
    assert_eq!(seen, newest_first, "every job once, newest first");

    // Default limit lists all seven, and ends the listing.
    let r = reply(app.get("/api/jobs", admin).await).await;
    assert_eq!(ids_of(r.json["jobs"].as_array().unwrap(), "job_id"), newest_first);
    assert!(r.json["next_cursor"].is_null(), "{}", r.text);

    for id in [&submitted[1], &submitted[4]] {
        assert_eq!(
            app.post(&format!("/api/jobs/{id}/cancel"), admin).await.status(),
            200
        );
    }
    let r = reply(app.get("/api/jobs?status=cancelled", admin).await).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        ids_of(r.json["jobs"].as_array().unwrap(), "job_id"),
        vec![submitted[4].clone(), submitted[1].clone()],
        "{}",
        r.text
    );
    assert!(r.json["next_cursor"].is_null(), "{}", r.text);

    let r = reply(app.get("/api/jobs?limit=500", admin).await).await;
    assert_eq!(r.status, 200, "limit 500 is allowed: {}", r.text);
    let r = reply(app.get("/api/jobs?limit=1", admin).await).await;
    assert_eq!(r.status, 200, "limit 1 is allowed: {}", r.text);
    assert_eq!(r.json["jobs"].as_array().map(Vec::len), Some(1), "{}", r.text);
    // Every bad parameter is checked before any assertion fails, so a
    // failure lists all of them.
    let mut wrong = Vec::new();
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=garbage", "cursor"),
        ("status=sleeping", "status"),
    ] {
        let r = reply(app.get(&format!("/api/jobs?{query}"), admin).await).await;
        let located = r.json["detail"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["loc"] == json!(["query", param])));
        if r.status != 422 || !located {
            wrong.push(format!("?{query}: {} {}", r.status, r.text));
        } else {
            validation_items(&r);
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 422 with loc [\"query\", <param>]:\n{}",
        wrong.join("\n")
    );
    app.stop().await;
}

// ------------------------------------------------------ error contract ---

#[tokio::test]
async fn body_over_the_limit_is_413_with_detail() {
    let app = spawn_app_with(&["--body-limit-bytes", "2048"]).await;
    let big = "x".repeat(10 * 1024);
    let r = submit(&app, &app.admin_token, &json!({"task_description": big})).await;
    println!("413: {} {:?}", r.text, r.headers);
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(
        r.json["detail"].is_string(),
        "413 body must be {{\"detail\": ...}}: {}",
        r.text
    );
    // Under the limit still works, and nothing was stored by the refusal.
    let r = submit(&app, &app.admin_token, &json!({"task_description": "small"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let list = reply(app.get("/api/jobs", &app.admin_token).await).await;
    assert_eq!(
        list.json["jobs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.text
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_submissions_are_422_in_the_contract_shape() {
    let app = spawn_app().await;
    let token = &app.admin_token;

    // Malformed JSON.
    let r = reply(
        app.http
            .post(app.url("/api/jobs/submit"))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body("{\"task_description\": \"x\",")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 422, "malformed JSON: {}", r.text);
    body_validation_items(&r);

    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"task_description": "x", "required_workers": "x"}),
            vec!["body", "required_workers"],
        ),
        (json!({"required_workers": 1}), vec!["body", "task_description"]),
        (
            json!({"task_description": "x", "required_workers": 0}),
            vec!["body", "required_workers"],
        ),
        (
            json!({"task_description": "x", "required_workers": 65}),
            vec!["body", "required_workers"],
        ),
        (
            json!({"task_description": "x", "priority": 10}),
            vec!["body", "priority"],
        ),
        (
            json!({"task_description": "x", "priority": -1}),
            vec!["body", "priority"],
        ),
        (json!({"task_description": ""}), vec!["body", "task_description"]),
        (
            json!({"task_description": "y".repeat(10_001)}),
            vec!["body", "task_description"],
        ),
        (json!({"task_description": 5}), vec!["body", "task_description"]),
        (
            json!({"task_description": "x", "labels": {"a": 1}}),
            vec!["body", "labels"],
        ),
    ];
    for (body, loc) in cases {
        let r = submit(&app, token, &body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        let items = body_validation_items(&r);
        assert!(
            items.iter().any(|i| loc_starts_with(&i["loc"], &loc)),
            "{body}: expected loc {loc:?}, got {}",
            r.text
        );
        if loc == ["body", "required_workers"] {
            assert_eq!(items[0]["loc"], json!(["body", "required_workers"]), "{}", r.text);
        }
    }
    // Boundaries are accepted.
    for body in [
        json!({"task_description": "z".repeat(10_000), "required_workers": 64, "priority": 9}),
        json!({"task_description": "z", "required_workers": 1, "priority": 0}),
    ] {
        let r = submit(&app, token, &body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let list = reply(app.get("/api/jobs", token).await).await;
    assert_eq!(
        list.json["jobs"].as_array().map(Vec::len),
        Some(2),
        "no invalid submission was stored: {}",
        list.text
    );
    app.stop().await;
}

// --------------------------------------------------------- concurrency ---

#[tokio::test]
async fn concurrent_submissions_with_one_idempotency_key_create_one_job() {
    let app = spawn_app().await;
    let body = json!({"task_description": "once", "idempotency_key": "race-key"});
    let replies = futures::future::join_all((0..50).map(|_| submit(&app, &app.admin_token, &body))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    for r in &replies {
        assert!(r.status == 200 || r.status == 201, "{}: {}", r.status, r.text);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "exactly one creation: {statuses:?}"
    );
    let ids: HashSet<_> = replies.iter().map(|r| r.json["job_id"].clone()).collect();
    assert_eq!(ids.len(), 1, "one job id: {ids:?}");
    let list = reply(app.get("/api/jobs", &app.admin_token).await).await;
    assert_eq!(
        list.json["jobs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.text
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_allocations_never_exceed_the_free_workers() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.register_worker(&format!("c-{i}")).await;
    }
    let body = json!({"workers": 1});
    let replies = futures::future::join_all((0..50).map(|_| async {
        reply(
            app.post_json("/api/resources/allocate", &app.admin_token, &body)
                .await,
        )
        .await
    }))
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "exactly the five free workers: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        45,
        "the rest are 409: {statuses:?}"
    );
    let ids: HashSet<_> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.json["allocation_id"].clone())
        .collect();
    assert_eq!(ids.len(), 5);
    let q = reply(app.get("/api/resources/quotas", &app.admin_token).await).await;
    assert_eq!(q.json["allocated_workers"], json!(5), "{}", q.text);
    assert_eq!(q.json["available_workers"], json!(0), "{}", q.text);
    app.stop().await;
}

// ------------------------------------------------- unauthenticated routes ---

#[tokio::test]
async fn health_readiness_metrics_openapi_and_docs() {
    let app = spawn_app().await;
    let r = reply(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = reply(app.http.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    println!("readyz: {}", r.text);
    assert!(r.json.is_object(), "readyz answers JSON: {}", r.text);

    // Some traffic, then the counters.
    assert_eq!(app.get("/api/auth/me", &app.admin_token).await.status(), 200);
    let r = reply(app.http.get(app.url("/metrics")).send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let content_type = header(&r, "content-type");
    assert!(
        content_type.starts_with("text/plain"),
        "Prometheus text: {content_type}"
    );
    assert!(r.text.contains("http_requests_total"), "{}", r.text);

    let r = reply(app.http.get(app.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json["openapi"].is_string(),
        "openapi key: {}",
        &r.text[..r.text.len().min(300)]
    );
    let paths = r.json["paths"].as_object().expect("paths object");
    for path in [
        "/api/auth/login",
        "/api/auth/me",
        "/api/auth/users",
        "/api/supervisor/workers",
        "/api/supervisor/workers/{worker_id}",
        "/api/supervisor/workers/{worker_id}/pause",
        "/api/supervisor/workers/{worker_id}/resume",
        "/api/supervisor/workers/{worker_id}/terminate",
        "/api/supervisor/metrics",
        "/api/resources/quotas",
        "/api/resources/allocate",
        "/api/resources/release",
        "/api/resources/usage",
        "/api/jobs/submit",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
        "/api/jobs",
        "/api/jobs/{job_id}/events",
        "/api/jobs/{job_id}/output",
    ] {
        assert!(
            paths.contains_key(path),
            "OpenAPI lacks {path}; has {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }

    let mut docs = reply(app.http.get(app.url("/docs")).send().await.unwrap()).await;
    if docs.status != 200 {
        docs = reply(app.http.get(app.url("/docs/")).send().await.unwrap()).await;
    }
    assert_eq!(docs.status, 200, "docs page: {}", docs.text);
    assert!(
        header(&docs, "content-type").starts_with("text/html"),
        "docs content type {}",
        header(&docs, "content-type")
    );
    assert!(docs.text.to_lowercase().contains("<html"), "{}", docs.text);
    app.stop().await;
}

// ------------------------------------------------------------- helpers ---

/// A response read to the end: status, headers, text and (if any) JSON.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    json: Value,
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

async fn submit(app: &TestApp, token: &str, body: &Value) -> Reply {
    reply(app.post_json("/api/jobs/submit", token, body).await).await
}

async fn get_url(app: &TestApp, url: &str, token: &str) -> Reply {
    reply(app.http.get(url).bearer_auth(token).send().await.unwrap()).await
}

/// `path` with a percent-encoded query string, as a full URL.
fn url_with_query(app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse(&app.url(path)).unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.to_string()
}

fn header(r: &Reply, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn assert_detail(r: &Reply, status: u16, detail: &str) {
    assert_eq!(r.status, status, "expected {status} {detail:?}, got {}", r.text);
    assert_eq!(r.json, json!({"detail": detail}), "body of the {status}");
}

fn assert_www_authenticate_bearer(r: &Reply) {
    let value = header(r, "www-authenticate");
    assert!(
        value == "Bearer" || value.starts_with("Bearer "),
        "WWW-Authenticate must be Bearer, got {value:?}"
    );
}

fn assert_invalid_credentials(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text);
    assert_eq!(
        r.json,
        json!({"detail": INVALID_CREDENTIALS}),
        "{what}: {}",
        r.text
    );
    assert_www_authenticate_bearer(r);
}

/// The contract's 422 list: `{"detail": [{"loc": ["body", ...], "msg", "type"}]}`.
fn validation_items(r: &Reply) -> &Vec<Value> {
    let items = r.json["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("422 detail must be a list: {}", r.text));
    assert!(!items.is_empty(), "{}", r.text);
    for item in items {
        let loc = item["loc"]
            .as_array()
            .unwrap_or_else(|| panic!("loc must be a list: {}", r.text));
        assert!(!loc.is_empty(), "{}", r.text);
        let first = loc[0].as_str().unwrap_or_default();
        assert!(
            ["body", "query", "path"].contains(&first),
            "loc starts with body, query or path: {}",
            r.text
        );
        assert!(item["msg"].is_string(), "msg: {}", r.text);
        assert!(item["type"].is_string(), "type: {}", r.text);
    }
    items
}

/// Like [`validation_items`], for a request body: every `loc` starts with "body".
fn body_validation_items(r: &Reply) -> &Vec<Value> {
    let items = validation_items(r);
    for item in items {
        assert_eq!(item["loc"][0], json!("body"), "loc starts with body: {}", r.text);
    }
    items
}

fn loc_starts_with(loc: &Value, prefix: &[&str]) -> bool {
    let Some(loc) = loc.as_array() else {
        return false;
    };
    loc.len() >= prefix.len() && prefix.iter().zip(loc).all(|(p, l)| l == p)
}

fn assert_job_shape(job: &Value) {
    for k in JOB_FIELDS {
        assert!(job.get(k).is_some(), "Job without {k}: {job}");
    }
    assert!(
        Uuid::parse_str(job["job_id"].as_str().unwrap_or_default()).is_ok(),
        "{job}"
    );
    assert!(
        Uuid::parse_str(job["submitted_by"].as_str().unwrap_or_default()).is_ok(),
        "{job}"
    );
    utc_time(&job["created_at"]);
    let status = job["status"].as_str().unwrap_or_default();
    assert!(
        [
            "pending",
            "queued",
            "running",
            "completed",
            "failed",
            "cancelled",
            "timed_out"
        ]
        .contains(&status),
        "{job}"
    );
}

fn assert_worker_shape(w: &Value) {
    for k in WORKER_FIELDS {
        assert!(w.get(k).is_some(), "Worker without {k}: {w}");
    }
    let status = w["status"].as_str().unwrap_or_default();
    assert!(
        [
            "idle",
            "busy",
            "paused",
            "terminating",
            "terminated",
            "failed",
            "offline"
        ]
        .contains(&status),
        "{w}"
    );
    utc_time(&w["registered_at"]);
    utc_time(&w["last_heartbeat_at"]);
}

/// Parses an RFC 3339 timestamp and checks it is in UTC.
fn utc_time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp string: {v}"));
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("RFC 3339 {s}: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "UTC: {s}");
    t.with_timezone(&chrono::Utc)
}

fn job_id(job: &Value) -> Uuid {
    Uuid::parse_str(job["job_id"].as_str().unwrap_or_default()).unwrap_or_else(|_| panic!("job_id in {job}"))
}

fn ids_of(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn string_set(v: &Value) -> HashSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn admin_user(app: &TestApp) -> controller::models::User {
    let client = app.db.client().await.unwrap();
    controller::db::users::find_by_username(&client, ADMIN_USER)
        .await
        .unwrap()
        .expect("the configured admin exists")
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims as the app issues them (default issuer and audience).
fn claims(user_id: Uuid, iat: u64, exp: u64) -> Claims {
    Claims {
        sub: user_id.to_string(),
        scopes: vec!["admin".into()],
        iat,
        nbf: iat,
        exp,
        iss: "orchestrator".into(),
        aud: "orchestrator-api".into(),
        jti: Uuid::new_v4().to_string(),
    }
}

/// A token with `alg: none` and an empty signature.
fn unsigned_token(claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

#[tokio::test]
async fn batch_submission_is_all_or_nothing_with_the_single_submit_rules() {
    let app = spawn_app().await;
    let token = &app.admin_token;
    let jobs: Vec<Value> = (0..5)
        .map(|i| json!({"task_description": format!("b{i}"), "priority": i}))
        .collect();
    let resp = app
        .post_json("/api/jobs/submit_batch", token, &json!({"jobs": jobs}))
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    let created = body["jobs"].as_array().unwrap();
    assert_eq!(created.len(), 5);
    assert_eq!(created[3]["task_description"], "b3");
    assert_eq!(created[3]["priority"], 3);

    // One bad entry refuses the whole batch, naming its index.
    let bad = json!({"jobs": [{"task_description": "ok"}, {"task_description": "x", "required_workers": 0}]});
    let resp = app.post_json("/api/jobs/submit_batch", token, &bad).await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "jobs", "1", "required_workers"])
    );
    let empty = app
        .post_json("/api/jobs/submit_batch", token, &json!({"jobs": []}))
        .await;
    assert_eq!(empty.status(), 422);
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"task_description": "x"})).collect();
    let resp = app
        .post_json("/api/jobs/submit_batch", token, &json!({"jobs": too_many}))
        .await;
    assert_eq!(resp.status(), 422);

    // Idempotency keys: a replay returns the same job; a key reused with
    // another body refuses the batch and creates nothing.
    let keyed = json!({"jobs": [{"task_description": "k", "idempotency_key": "batch-k"}]});
    let first: Value = app
        .post_json("/api/jobs/submit_batch", token, &keyed)
        .await
        .json()
        .await
        .unwrap();
    let replay = app.post_json("/api/jobs/submit_batch", token, &keyed).await;
    assert_eq!(replay.status(), 200);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["jobs"][0]["job_id"], first["jobs"][0]["job_id"]);
    let clash = json!({"jobs": [{"task_description": "new"}, {"task_description": "other", "idempotency_key": "batch-k"}]});
    assert_eq!(
        app.post_json("/api/jobs/submit_batch", token, &clash)
            .await
            .status(),
        409
    );
    let page: Value = app.get("/api/jobs?limit=500", token).await.json().await.unwrap();
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        6,
        "the refused batches created nothing"
    );
}
