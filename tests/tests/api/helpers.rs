//! What the API tests share besides the named requests on `TestApp`: the
//! contract's shapes checked against the shared types, the error bodies,
//! token forging, route-table paths, and short fixtures that arrange state
//! through the API.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use controller::api::protected_routes;
use controller::auth::Claims;
use integration_tests::{spawn_app, Reply, TestApp, ADMIN_USER, TEST_JWT_SECRET};
use orchestrator_shared::api::error::INVALID_CREDENTIALS;
use orchestrator_shared::api::{Job, JobEvent, QuotaView, Worker};
use orchestrator_shared::{JobStatus, WorkerStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

// ------------------------------------------------------------- shapes ---

/// The top-level keys of a JSON object.
fn keys(v: &Value) -> HashSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// Reads `body` as the shared type `T` and checks it holds exactly `T`'s
/// fields, so the server neither drops nor adds one.
pub fn assert_shape<T: DeserializeOwned + Serialize>(body: &Value) -> T {
    let typed: T = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not a {}: {e}: {body}", std::any::type_name::<T>()));
    let expected = serde_json::to_value(&typed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        keys(body),
        keys(&expected),
        "{} fields: {body}",
        std::any::type_name::<T>()
    );
    typed
}

/// A `Job` exactly as `orchestrator_shared::api::Job` defines it, with UTC
/// timestamps.
pub fn assert_job_shape(body: &Value) -> Job {
    let job: Job = assert_shape(body);
    utc_time(&body["created_at"]);
    let status = body["status"].as_str().unwrap_or_default();
    assert!(JobStatus::ALL.iter().any(|s| s.as_str() == status), "{body}");
    job
}

/// A `Worker` exactly as `orchestrator_shared::api::Worker` defines it,
/// with UTC timestamps.
pub fn assert_worker_shape(body: &Value) -> Worker {
    let worker: Worker = assert_shape(body);
    let status = body["status"].as_str().unwrap_or_default();
    assert!(WorkerStatus::ALL.iter().any(|s| s.as_str() == status), "{body}");
    utc_time(&body["registered_at"]);
    utc_time(&body["last_heartbeat_at"]);
    worker
}

/// The quota answer exactly as `QuotaView` defines it (every count an
/// integer).
pub fn assert_quota_shape(body: &Value) -> QuotaView {
    assert_shape(body)
}

/// A job event exactly as `JobEvent` defines it, at a UTC time.
pub fn assert_event_shape(body: &Value) -> JobEvent {
    let event: JobEvent = assert_shape(body);
    utc_time(&body["at"]);
    event
}

/// Parses an RFC 3339 timestamp and checks it is in UTC.
pub fn utc_time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp string: {v}"));
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("RFC 3339 {s}: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "UTC: {s}");
    t.with_timezone(&chrono::Utc)
}

// ------------------------------------------------------------- errors ---

/// The contract's `{"detail": "..."}` error with this status.
pub fn assert_detail(r: &Reply, status: u16, detail: &str) {
    assert_eq!(r.status, status, "expected {status} {detail:?}, got {}", r.text);
    assert_eq!(r.json, json!({"detail": detail}), "body of the {status}");
}

/// A 409 whose detail is text.
pub fn assert_conflict(r: &Reply) {
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.json["detail"].is_string(), "{}", r.text);
}

/// The challenge every 401 carries.
pub fn assert_www_authenticate_bearer(r: &Reply) {
    let value = r.header("www-authenticate");
    assert!(
        value == "Bearer" || value.starts_with("Bearer "),
        "WWW-Authenticate must be Bearer, got {value:?}"
    );
}

/// The 401 of a token that is present but not acceptable.
pub fn assert_invalid_credentials(r: &Reply, what: &str) {
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
pub fn validation_items(r: &Reply) -> &Vec<Value> {
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
pub fn body_validation_items(r: &Reply) -> &Vec<Value> {
    let items = validation_items(r);
    for item in items {
        assert_eq!(item["loc"][0], json!("body"), "loc starts with body: {}", r.text);
    }
    items
}

/// A 422 about the request body, in the contract's shape.
pub fn assert_body_invalid(r: &Reply, what: &str) {
    assert_eq!(r.status, 422, "{what}: {}", r.text);
    body_validation_items(r);
}

/// Whether a 422 item's `loc` begins with `prefix`.
pub fn loc_starts_with(loc: &Value, prefix: &[&str]) -> bool {
    let Some(loc) = loc.as_array() else {
        return false;
    };
    loc.len() >= prefix.len() && prefix.iter().zip(loc).all(|(p, l)| l == p)
}

// -------------------------------------------------------------- values ---

/// The `job_id` of a job body.
pub fn job_id(job: &Value) -> Uuid {
    Uuid::parse_str(job["job_id"].as_str().unwrap_or_default()).unwrap_or_else(|_| panic!("job_id in {job}"))
}

/// The `key` of every item, in order.
pub fn ids_of(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A JSON array of strings as a set.
pub fn string_set(v: &Value) -> HashSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `items` as a set of owned strings.
pub fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// How many items the array `key` of a reply holds.
pub fn count(r: &Reply, key: &str) -> Option<usize> {
    r.json[key].as_array().map(Vec::len)
}

/// The value of the metric line that starts with `series` (0 if absent).
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get_open("/metrics").await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

// ------------------------------------------------------------ fixtures ---

/// Submits a job described `description` and returns its id.
pub async fn submit_ok(app: &TestApp, token: &str, description: &str) -> Uuid {
    let r = app
        .submit_job(token, &json!({ "task_description": description }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    job_id(&r.json)
}

/// Waits (bounded) until the relay has published `job` and marked it queued.
pub async fn wait_queued(app: &TestApp, job: Uuid) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let j = app.get_job(&app.admin_token, job).await;
        if j.json["status"] == "queued" {
            return;
        }
        assert!(Instant::now() < deadline, "job never queued: {}", j.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Allocates `workers` workers and returns the allocation id.
pub async fn allocate_ok(app: &TestApp, token: &str, workers: u32) -> Value {
    let r = app.allocate(token, &json!({ "workers": workers })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["allocation_id"].clone()
}

/// Registers a worker under every id.
pub async fn register_workers(app: &TestApp, ids: &[&str]) {
    for id in ids {
        app.register_worker(id).await;
    }
}

/// A fresh app with the workers `ids` registered.
pub async fn app_with_workers(ids: &[&str]) -> TestApp {
    let app = spawn_app().await;
    register_workers(&app, ids).await;
    app
}

/// A fresh app with one job, described `description`, submitted by the
/// admin; answers the app and the job's id.
pub async fn app_with_job(description: &str) -> (TestApp, Uuid) {
    let app = spawn_app().await;
    let id = submit_ok(&app, &app.admin_token, description).await;
    (app, id)
}

/// Asserts `username` cannot log in with `password` (e.g. was never
/// created).
pub async fn assert_cannot_log_in(app: &TestApp, username: &str, password: &str) {
    let login = app.login(username, password).await;
    assert_eq!(login.status, 401, "{username} must not exist: {}", login.text);
}

/// How many jobs the admin sees (up to 500).
pub async fn job_count(app: &TestApp) -> Option<usize> {
    let list = app.list_jobs(&app.admin_token, &[("limit", "500")]).await;
    assert_eq!(list.status, 200, "{}", list.text);
    count(&list, "jobs")
}

/// `template` (a route path such as `/api/jobs/{job_id}`) with its
/// parameters filled in (`{user_id}` with the UUID given for jobs); fails
/// on a parameter it does not know, so a new one is noticed.
pub fn concrete_path(template: &str, job_id: Uuid, worker_id: &str) -> String {
    let path = template
        .replace("{job_id}", &job_id.to_string())
        .replace("{worker_id}", worker_id)
        .replace("{user_id}", &job_id.to_string())
        .replace("{credential_id}", &job_id.to_string())
        .replace("{schedule_id}", &job_id.to_string());
    assert!(!path.contains('{'), "unknown path parameter in {template}");
    path
}

/// Calls, as the admin, every protected route whose path holds `param`
/// (e.g. `{job_id}`), its parameters filled with `job_id` and `worker_id`;
/// answers each route's name and reply. Fails if no route has `param`.
pub async fn call_routes_with(
    app: &TestApp,
    param: &str,
    job_id: Uuid,
    worker_id: &str,
) -> Vec<(String, Reply)> {
    let mut replies = Vec::new();
    for route in protected_routes().into_iter().filter(|r| r.path.contains(param)) {
        let path = concrete_path(route.path, job_id, worker_id);
        let r = app
            .send(route.method.clone(), &path, Some(&app.admin_token), None)
            .await;
        replies.push((format!("{} {path}", route.method), r));
    }
    assert!(!replies.is_empty(), "no route has {param}");
    replies
}

// -------------------------------------------------------------- tokens ---

/// The configured admin's row.
pub async fn admin_user(app: &TestApp) -> controller::models::User {
    let client = app.db.client().await.unwrap();
    controller::db::users::find_by_username(&client, ADMIN_USER)
        .await
        .unwrap()
        .expect("the configured admin exists")
}

/// Seconds since the epoch, for token times.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims as the app issues them (default issuer and audience).
pub fn claims(user_id: Uuid, iat: u64, exp: u64) -> Claims {
    Claims {
        sub: user_id.to_string(),
        scopes: vec!["admin".into()],
        iat,
        nbf: iat,
        exp,
        iss: "orchestrator".into(),
        aud: "orchestrator-api".into(),
        jti: Uuid::new_v4().to_string(),
        ver: 0,
    }
}

/// A token with `alg: none` and an empty signature.
pub fn unsigned_token(claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

/// `claims` signed with `key` under `alg`, bypassing the app's issuer.
pub fn sign_with(alg: jsonwebtoken::Algorithm, key: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

/// Tokens for the admin that the app must refuse, each named: expired, for
/// another audience or issuer, not yet valid, unsigned, signed with another
/// algorithm or key. `good` are the admin's valid claims they derive from.
pub fn forged_tokens(app: &TestApp, good: &Claims) -> Vec<(&'static str, String)> {
    let sign = |c: Claims| app.tokens.sign(&c).unwrap();
    let other_key = b"another-secret-that-is-long-enough-for-hs256";
    let now = now_secs();
    let user_id = Uuid::parse_str(&good.sub).unwrap();
    vec![
        ("expired", sign(claims(user_id, now - 7200, now - 3600))),
        (
            "wrong aud",
            sign(Claims {
                aud: "someone-else".into(),
                ..good.clone()
            }),
        ),
        (
            "wrong iss",
            sign(Claims {
                iss: "someone-else".into(),
                ..good.clone()
            }),
        ),
        (
            "nbf in the future",
            sign(Claims {
                nbf: now + 3600,
                ..good.clone()
            }),
        ),
        ("alg none", unsigned_token(good)),
        (
            "alg HS512",
            sign_with(jsonwebtoken::Algorithm::HS512, TEST_JWT_SECRET.as_bytes(), good),
        ),
        (
            "other key",
            sign_with(jsonwebtoken::Algorithm::HS256, other_key, good),
        ),
    ]
}
