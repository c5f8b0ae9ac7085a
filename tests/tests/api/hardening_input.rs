//! Issue 13, findings 1, 2, 7 and 11: input that used to reach Postgres
//! and come back as a 500 (a NUL character in any text, a cursor outside
//! the time range), agent registrations without bounds, and weak accounts.
//! Each is now the contract's 422, located at the field that breaks a rule.

use crate::helpers::{assert_cannot_log_in, count, job_count, submit_ok, validation_items};
use chrono::{DateTime, Utc};
use integration_tests::{spawn_app, Reply, TestApp, ADMIN_PASSWORD, ADMIN_USER};
use orchestrator_shared::Secret;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// A text with a NUL in the middle, which Postgres refuses in `text` and
/// `jsonb` columns.
const NUL: &str = "a\u{0}b";

/// A password that breaks none of the strength rules.
const GOOD_PASSWORD: &str = "correct-horse-battery-9";

/// Asserts `r` is the contract's 422 with a `value_error` at `loc`.
fn assert_invalid_at(r: &Reply, loc: &[&str], what: &str) {
    assert_eq!(r.status, 422, "{what}: {}", r.text);
    let hit = validation_items(r)
        .iter()
        .any(|item| item["loc"] == json!(loc) && item["type"] == json!("value_error"));
    assert!(hit, "{what}: the 422 must name {loc:?}: {}", r.text);
}

/// Asks, as the admin, for a user `username` with `password`.
async fn create_user(app: &TestApp, username: &str, password: &str) -> Reply {
    let body = json!({"username": username, "password": password, "scopes": ["jobs:read"]});
    app.create_user(&app.admin_token, &body).await
}

/// A registration of `id` that breaks no rule but, maybe, `field` set to
/// `value`.
fn registration_with(id: &str, field: &str, value: Value) -> Value {
    let mut body = json!({"worker_id": id, "hostname": "node-1", "capacity": 2, "labels": {"gpu": "a100"}, "version": "0.3.1"});
    body[field] = value;
    body
}

/// The admin's replies of the four routes that take `{worker_id}`, each
/// with its name.
async fn worker_routes(app: &TestApp, worker_id: &str) -> [(&'static str, Reply); 4] {
    let admin = &app.admin_token;
    [
        ("get", app.get_worker(admin, worker_id).await),
        ("pause", app.pause_worker(admin, worker_id).await),
        ("resume", app.resume_worker(admin, worker_id).await),
        ("terminate", app.terminate_worker(admin, worker_id).await),
    ]
}

/// Asserts one user logs in with [`GOOD_PASSWORD`] under each of `typed`.
async fn assert_logs_in_as(app: &TestApp, typed: &[&str]) {
    for name in typed {
        let r = app.login(name, GOOD_PASSWORD).await;
        assert_eq!(r.status, 200, "log in as {name:?}: {}", r.text);
    }
}

/// A fresh credential for the agent of `worker_id`, issued by the admin.
async fn agent_token(app: &TestApp, worker_id: &str) -> String {
    app.agent_credential(worker_id).await
}

// ------------------------------------------------------ 1. NUL is a 422 ---

#[tokio::test]
async fn nul_in_a_submitted_text_is_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"task_description": NUL}), "task_description"),
        (
            json!({"task_description": "x", "labels": {"a\u{0}b": "v"}}),
            "labels",
        ),
        (json!({"task_description": "x", "labels": {"k": NUL}}), "labels"),
        (
            json!({"task_description": "x", "idempotency_key": NUL}),
            "idempotency_key",
        ),
        (
            json!({"task_description": "x", "command": ["/bin/echo", NUL]}),
            "command",
        ),
    ];
    for (body, field) in cases {
        let r = app.submit_job(&app.admin_token, &body).await;
        assert_invalid_at(&r, &["body", field], &format!("submit {body}"));
        let batch = [json!({"task_description": "fine"}), body.clone()];
        let r = app.submit_batch(&app.admin_token, &batch).await;
        assert_invalid_at(&r, &["body", "jobs", "1", field], &format!("batch {body}"));
    }
    assert_eq!(job_count(&app).await, Some(0), "no refused submission was stored");
    app.stop().await;
}

#[tokio::test]
async fn nul_in_a_username_is_422_on_creation_and_on_login() {
    let app = spawn_app().await;
    let r = create_user(&app, NUL, GOOD_PASSWORD).await;
    assert_invalid_at(&r, &["body", "username"], "create a user named with a NUL");
    let r = app.login(NUL, GOOD_PASSWORD).await;
    assert_invalid_at(&r, &["body", "username"], "log in with a NUL in the name");
    app.stop().await;
}

#[tokio::test]
async fn login_refuses_overlong_names_and_passwords_before_checking_them() {
    let app = spawn_app().await;
    let r = app.login(&"a".repeat(129), GOOD_PASSWORD).await;
    assert_invalid_at(&r, &["body", "username"], "a 129-character name");
    let r = app.login(ADMIN_USER, &"p".repeat(1025)).await;
    assert_invalid_at(&r, &["body", "password"], "a 1025-byte password");
    // A wrong password within the bounds is still the plain 401.
    assert_cannot_log_in(&app, ADMIN_USER, "not-the-admin-password").await;
    app.stop().await;
}

#[tokio::test]
async fn a_worker_id_in_the_path_that_breaks_the_rule_is_422_and_an_unknown_one_404() {
    let app = spawn_app().await;
    for bad in ["a%00b", "a%20b", "%C3%A9", &"w".repeat(129)] {
        for (action, r) in worker_routes(&app, bad).await {
            assert_invalid_at(&r, &["path", "worker_id"], &format!("{action} {bad}"));
        }
    }
    for (action, r) in worker_routes(&app, "ghost-1").await {
        assert_eq!(r.status, 404, "{action} of a valid but unknown id: {}", r.text);
    }
    app.stop().await;
}

#[tokio::test]
async fn nul_in_an_agent_registration_is_422_naming_the_field() {
    let app = spawn_app().await;
    let token = agent_token(&app, "w-nul").await;
    let with = |field: &str, value: Value| registration_with("w-nul", field, value);
    let cases = [
        (with("hostname", json!(NUL)), "hostname"),
        (with("version", json!(NUL)), "version"),
        (with("labels", json!({"a\u{0}b": "v"})), "labels"),
        (with("labels", json!({"k": NUL})), "labels"),
    ];
    for (body, field) in cases {
        let r = app.register_agent(&token, &body).await;
        assert_invalid_at(&r, &["body", field], &format!("register {body}"));
    }
    let r = app.get_worker(&app.admin_token, "w-nul").await;
    assert_eq!(r.status, 404, "no refused registration was stored: {}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn a_claim_from_an_invalid_worker_id_is_422() {
    let app = spawn_app().await;
    let token = agent_token(&app, "w-broken").await;
    let job = submit_ok(&app, &app.admin_token, "claimed by a broken agent").await;
    for bad in [NUL, "", "..", "a b"] {
        let body =
            json!({"worker_id": bad, "job_id": job, "attempt": 1, "shard_index": 0, "redelivered": false});
        let r = app.claim_shard(&token, &body).await;
        assert_invalid_at(&r, &["body", "worker_id"], &format!("claim as {bad:?}"));
    }
    app.stop().await;
}

// ------------------------------------------- 2. cursors out of range ---

#[tokio::test]
async fn a_cursor_outside_the_time_range_is_422_not_500_nor_the_first_page() {
    let app = spawn_app().await;
    submit_ok(&app, &app.admin_token, "listed").await;
    let id = Uuid::new_v4().simple().to_string();
    let chrono_max = DateTime::<Utc>::MAX_UTC.timestamp_micros();
    // Postgres's earliest instant less one (the attack's cursor), a time
    // before the epoch, past chrono's range, and the extremes.
    for micros in [-210_866_803_200_000_001, -1, chrono_max + 1, i64::MAX, i64::MIN] {
        let cursor = format!("{micros}_{id}");
        let r = app.list_jobs(&app.admin_token, &[("cursor", &cursor)]).await;
        assert_invalid_at(&r, &["query", "cursor"], &cursor);
    }
    // The ends of the range are cursors: nothing before the first, every
    // job before the last.
    for (micros, jobs) in [(0, 0), (99_999_999_999_999_999_i64, 1)] {
        let cursor = format!("{micros}_{id}");
        let r = app.list_jobs(&app.admin_token, &[("cursor", &cursor)]).await;
        assert_eq!(r.status, 200, "{cursor}: {}", r.text);
        assert_eq!(count(&r, "jobs"), Some(jobs), "{cursor}: {}", r.text);
    }
    app.stop().await;
}

// ------------------------------------ 7. agent registrations are bounded ---

#[tokio::test]
async fn agent_registration_is_held_to_the_label_and_length_bounds() {
    let app = spawn_app().await;
    let token = agent_token(&app, "w-bounds").await;
    let with = |field: &str, value: Value| registration_with("w-bounds", field, value);
    let labels = |n: usize| Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect());
    let cases = [
        (with("labels", labels(5000)), "labels"),
        (with("labels", labels(65)), "labels"),
        (with("labels", json!({"k".repeat(129): "v"})), "labels"),
        (with("labels", json!({"": "v"})), "labels"),
        (with("labels", json!({"k": "v".repeat(1025)})), "labels"),
        (with("version", json!("9".repeat(500 * 1024))), "version"),
        (with("version", json!("9".repeat(129))), "version"),
        (with("hostname", json!("h".repeat(256))), "hostname"),
    ];
    for (body, field) in cases {
        let r = app.register_agent(&token, &body).await;
        let what = format!(
            "register with a {field} of {} bytes",
            body[field].to_string().len()
        );
        assert_invalid_at(&r, &["body", field], &what);
    }
    let at_the_limits = json!({"worker_id": "w-bounds", "hostname": "h".repeat(255), "capacity": 1,
        "labels": labels(64), "version": "9".repeat(128)});
    let r = app.register_agent(&token, &at_the_limits).await;
    assert_eq!(r.status, 200, "every field at its limit: {}", r.text);
    app.stop().await;
}

// ------------------------------------------------ 11. weak accounts ---

#[tokio::test]
async fn weak_passwords_are_422_and_create_no_user() {
    let app = spawn_app().await;
    let cases = [
        ("mallory", "12345678"),
        ("mallory", "        "),
        ("mallory", "password1"),
        ("mallory", "QWERTYUIOP"),
        ("mallory1", "mallory1"),
        ("mallory", "MALLORY-likes-cheese"),
        ("mallory", "short"),
    ];
    for (name, password) in cases {
        let r = create_user(&app, name, password).await;
        assert_invalid_at(&r, &["body", "password"], &format!("{name} / {password:?}"));
        assert_cannot_log_in(&app, name, password).await;
    }
    let r = create_user(&app, "mallory", GOOD_PASSWORD).await;
    assert_eq!(r.status, 201, "a strong password: {}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn usernames_outside_the_character_set_are_422() {
    let app = spawn_app().await;
    let names = [
        "bell\u{7}name",
        "evil\u{202E}nimda",
        "\u{0430}dmin",
        "adm\u{0456}n",
        "zero\u{200B}width",
        "tab\tname",
        "a b",
        "",
        &"n".repeat(129),
        "slash/name",
        "o'hara",
    ];
    for name in names {
        let r = create_user(&app, name, GOOD_PASSWORD).await;
        assert_invalid_at(&r, &["body", "username"], &format!("{name:?}"));
    }
    for name in ["alice.smith", "Bob_99", "ops+ci@example.org", "x-y", "7"] {
        let r = create_user(&app, name, GOOD_PASSWORD).await;
        assert_eq!(r.status, 201, "{name}: {}", r.text);
    }
    app.stop().await;
}

#[tokio::test]
async fn usernames_are_stored_nfkc_normalised_and_log_in_as_typed_either_way() {
    let app = spawn_app().await;
    let fullwidth = "\u{FF42}\u{FF4F}\u{FF42}.smith";
    let r = create_user(&app, fullwidth, GOOD_PASSWORD).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json["username"],
        json!("bob.smith"),
        "stored normalised: {}",
        r.text
    );
    assert_logs_in_as(&app, &["bob.smith", fullwidth]).await;
    // The fullwidth look-alike of the admin is the admin's name, taken.
    let r = create_user(&app, "\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}", GOOD_PASSWORD).await;
    assert_eq!(r.status, 409, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn the_bootstrap_admin_goes_through_the_same_username_rules() {
    let app = spawn_app().await;
    let password = Secret::new(GOOD_PASSWORD);
    let created =
        controller::bootstrap::ensure_admin(&app.db, "\u{FF52}\u{FF4F}\u{FF4F}\u{FF54}", &password).await;
    assert!(matches!(created, Ok(true)), "{created:?}");
    assert_logs_in_as(&app, &["root", "\u{FF52}\u{FF4F}\u{FF4F}\u{FF54}"]).await;
    let again = controller::bootstrap::ensure_admin(&app.db, "root", &password).await;
    assert!(matches!(again, Ok(false)), "the same admin again: {again:?}");
    let refused = controller::bootstrap::ensure_admin(&app.db, "evil\u{202E}nimda", &password).await;
    assert!(refused.is_err(), "an admin name outside the rule: {refused:?}");
    app.stop().await;
}

/// Every body of the contract is a JSON object. serde would read a struct
/// from an array too (`["admin", "password"]` as a login), so an array,
/// number or string body is a 422 at `body` on every route that takes one,
/// and changes nothing.
#[tokio::test]
async fn a_body_that_is_not_an_object_is_422_on_every_route() {
    let app = spawn_app().await;
    let me = app.me(&app.admin_token).await;
    let admin_id = me.json["user_id"].as_str().unwrap().to_owned();
    let login = json!([ADMIN_USER, ADMIN_PASSWORD]);
    let r = app
        .send(Method::POST, "/api/auth/login", None, Some(&login))
        .await;
    assert_invalid_body(&r, "a login as an array");
    for body in [json!([null, null, null]), json!(5), json!("x")] {
        let r = app.update_user(&app.admin_token, &admin_id, &body).await;
        assert_invalid_body(&r, &format!("a user update {body}"));
        let r = app.submit_job(&app.admin_token, &body).await;
        assert_invalid_body(&r, &format!("a submission {body}"));
    }
    let r = app.submit_job(&app.admin_token, &json!(["from an array"])).await;
    assert_invalid_body(&r, "a submission as a one-element array");
    assert_eq!(job_count(&app).await, Some(0), "no job was made");
    assert_eq!(
        app.me(&app.admin_token).await.json,
        me.json,
        "the admin is unchanged"
    );
    app.stop().await;
}

/// Asserts `r` is the contract's 422 naming the body itself.
fn assert_invalid_body(r: &Reply, what: &str) {
    assert_eq!(r.status, 422, "{what}: {}", r.text);
    assert_eq!(
        validation_items(r)[0]["loc"],
        json!(["body"]),
        "{what}: {}",
        r.text
    );
}
