//! Managing users and taking their tokens back (`docs/api.md` §5): listing,
//! reading, changing and deleting users; a token losing what its user lost
//! within the revocation bound, on every replica; the last admin kept.

use crate::helpers::{
    assert_body_invalid, assert_cannot_log_in, assert_conflict, assert_detail, assert_invalid_credentials,
    assert_shape, claims, loc_starts_with, now_secs, submit_ok, utc_time, validation_items,
};
use integration_tests::{spawn_app, Reply, TestApp, TEST_JWT_SECRET, USER_PASSWORD};
use orchestrator_shared::api::error::BAD_LOGIN;
use orchestrator_shared::api::{UserAccount, UserList};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The controller's default revocation bound (`ORCH_TOKEN_RECHECK_MS`).
const BOUND: Duration = Duration::from_secs(2);

/// How often a test asks again while it waits for a revocation.
const POLL: Duration = Duration::from_millis(100);

/// Creates `username` with `scopes` through the admin API; answers its id
/// and a token of it.
async fn user_with_token(app: &TestApp, username: &str, scopes: &[&str]) -> (Uuid, String) {
    let token = app.user_token(username, scopes).await;
    let me = app.me(&token).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let id = Uuid::parse_str(me.json["user_id"].as_str().unwrap_or_default()).expect("user_id");
    (id, token)
}

/// The account the admin API shows for `user_id`.
async fn account(app: &TestApp, user_id: Uuid) -> UserAccount {
    let r = app.get_user(&app.admin_token, user_id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_shape(&r.json)
}

/// Sends `request` until its status is `status` or `BOUND` plus a second
/// has passed; answers the last reply and how long it took.
async fn poll_until<F, Fut>(status: u16, mut request: F) -> (Reply, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let started = Instant::now();
    loop {
        let r = request().await;
        if r.status == status || started.elapsed() > BOUND + Duration::from_secs(1) {
            return (r, started.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A PATCH that must succeed; answers the account.
async fn update_ok(app: &TestApp, user_id: Uuid, body: &Value) -> UserAccount {
    let r = app.update_user(&app.admin_token, user_id, body).await;
    assert_eq!(r.status, 200, "PATCH {body}: {}", r.text);
    assert_shape(&r.json)
}

#[tokio::test]
async fn a_cut_scope_leaves_earlier_tokens_within_the_bound_on_another_replica() {
    let app = spawn_app().await;
    let replica = app.spawn_replica(&[]).await;
    let (id, token) = user_with_token(&app, "cut", &["jobs:read", "supervisor:read"]).await;
    // The replica has read the user's row, and would keep using it.
    let r = replica.list_jobs(&token, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);

    update_ok(&app, id, &json!({"scopes": ["supervisor:read"]})).await;
    assert_detail(
        &app.list_jobs(&token, &[]).await,
        403,
        "Missing required scope: jobs:read",
    );
    let (r, took) = poll_until(403, || replica.list_jobs(&token, &[])).await;
    assert_detail(&r, 403, "Missing required scope: jobs:read");
    assert!(took <= BOUND + Duration::from_secs(1), "took {took:?}");
    // What the user kept still works with the same token, on both.
    for on in [&app, &replica] {
        let r = on.list_workers(&token, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn scopes_added_later_need_a_new_login() {
    let app = spawn_app().await;
    let (id, token) = user_with_token(&app, "grow", &["jobs:read"]).await;
    update_ok(&app, id, &json!({"scopes": ["jobs:read", "supervisor:read"]})).await;
    assert_detail(
        &app.list_workers(&token, &[]).await,
        403,
        "Missing required scope: supervisor:read",
    );
    let fresh = app.login_token("grow", USER_PASSWORD).await;
    let r = app.list_workers(&fresh, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_user_is_refused_until_enabled_and_then_only_new_tokens_work() {
    let app = spawn_app().await;
    let replica = app.spawn_replica(&[]).await;
    let (id, token) = user_with_token(&app, "dora", &["jobs:read"]).await;
    assert_eq!(replica.me(&token).await.status, 200);

    let off = update_ok(&app, id, &json!({"disabled": true})).await;
    assert!(off.disabled);
    assert_invalid_credentials(&app.me(&token).await, "a disabled user's token");
    let (r, took) = poll_until(401, || replica.me(&token)).await;
    assert_invalid_credentials(&r, &format!("on the replica after {took:?}"));
    let login = app.login("dora", USER_PASSWORD).await;
    let wrong = app.login("dora", "not-her-password").await;
    assert_detail(&login, 401, BAD_LOGIN);
    assert_eq!(
        login.text, wrong.text,
        "a disabled user looks like a wrong password"
    );

    let on = update_ok(&app, id, &json!({"disabled": false})).await;
    assert!(!on.disabled);
    assert_invalid_credentials(&app.me(&token).await, "a token from before the disabling");
    let fresh = app.login_token("dora", USER_PASSWORD).await;
    let r = replica.list_jobs(&fresh, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_user_is_gone_but_its_jobs_stay_and_its_name_is_free() {
    let app = spawn_app().await;
    let (id, token) = user_with_token(&app, "gone", &["jobs:write"]).await;
    let job = submit_ok(&app, &token, "history").await;

    let r = app.delete_user(&app.admin_token, id).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""), "{}", r.text);
    assert_invalid_credentials(&app.me(&token).await, "a deleted user's token");
    assert_cannot_log_in(&app, "gone", USER_PASSWORD).await;
    assert_detail(
        &app.get_user(&app.admin_token, id).await,
        404,
        &format!("User {id} not found"),
    );
    assert_detail(
        &app.delete_user(&app.admin_token, id).await,
        404,
        &format!("User {id} not found"),
    );
    let list: UserList = assert_shape(&app.list_users(&app.admin_token).await.json);
    assert!(list.users.iter().all(|u| u.user_id != id), "{list:?}");
    let kept = app.get_job(&app.admin_token, job).await;
    assert_eq!(kept.json["submitted_by"], json!(id.to_string()), "{}", kept.text);

    // The name is free; the new account is someone else.
    let (new_id, new_token) = user_with_token(&app, "gone", &["jobs:read"]).await;
    assert_ne!(new_id, id);
    assert_eq!(app.get_job(&new_token, job).await.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_new_password_takes_back_every_token() {
    let app = spawn_app().await;
    let (id, token) = user_with_token(&app, "pat", &["jobs:read"]).await;
    update_ok(&app, id, &json!({"password": "fresh-meadow-42"})).await;
    assert_invalid_credentials(&app.me(&token).await, "a token from before the new password");
    assert_cannot_log_in(&app, "pat", USER_PASSWORD).await;
    let fresh = app.login_token("pat", "fresh-meadow-42").await;
    assert_eq!(app.me(&fresh).await.status, 200);
    app.stop().await;
}

/// The configured admin's id.
async fn admin_id(app: &TestApp) -> Uuid {
    let me = app.me(&app.admin_token).await;
    Uuid::parse_str(me.json["user_id"].as_str().unwrap_or_default()).expect("user_id")
}

#[tokio::test]
async fn an_admin_cannot_lock_everyone_out_or_disable_itself() {
    let app = spawn_app().await;
    let admin = admin_id(&app).await;
    assert_conflict(
        &app.update_user(&app.admin_token, admin, &json!({"scopes": ["jobs:read"]}))
            .await,
    );
    assert_conflict(
        &app.update_user(&app.admin_token, admin, &json!({"disabled": true}))
            .await,
    );
    assert_conflict(&app.delete_user(&app.admin_token, admin).await);
    // A disabled second admin does not count.
    let (second, second_token) = user_with_token(&app, "second", &["admin"]).await;
    update_ok(&app, second, &json!({"disabled": true})).await;
    let r = app
        .update_user(&app.admin_token, admin, &json!({"scopes": []}))
        .await;
    assert_detail(
        &r,
        409,
        "The last enabled admin cannot be disabled, deleted or lose the admin scope",
    );
    let me = account(&app, admin).await;
    assert_eq!((me.scopes, me.disabled), (vec!["admin".to_owned()], false));
    assert_eq!(app.list_users(&app.admin_token).await.status, 200);

    // With another enabled admin, one may step down; its token then loses admin.
    update_ok(&app, second, &json!({"disabled": false})).await;
    assert_invalid_credentials(&app.me(&second_token).await, "disabled once");
    let second_token = app.login_token("second", USER_PASSWORD).await;
    update_ok(&app, admin, &json!({"scopes": ["jobs:read"]})).await;
    assert_detail(
        &app.list_users(&app.admin_token).await,
        403,
        "Missing required scope: admin",
    );
    let r = app
        .update_user(&second_token, second, &json!({"scopes": ["jobs:read"]}))
        .await;
    assert_conflict(&r);
    assert_eq!(app.list_users(&second_token).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn two_admins_removing_each_other_at_once_leave_one() {
    let app = spawn_app().await;
    let admin = admin_id(&app).await;
    let (second, second_token) = user_with_token(&app, "second", &["admin"]).await;
    let (disable, demote) = (json!({"disabled": true}), json!({"scopes": ["jobs:read"]}));
    let (a, b) = tokio::join!(
        app.update_user(&app.admin_token, second, &disable),
        app.update_user(&second_token, admin, &demote),
    );
    assert!(
        a.status != 200 || b.status != 200,
        "both succeeded: {} / {}",
        a.text,
        b.text
    );
    let client = app.db.client().await.expect("a connection");
    let mut enabled_admins = 0;
    for id in [admin, second] {
        let user = controller::db::users::get(&client, id).await.expect("the user");
        enabled_admins += usize::from(controller::db::users::is_enabled_admin(&user));
    }
    assert_eq!(enabled_admins, 1, "{} / {}", a.text, b.text);
    app.stop().await;
}

#[tokio::test]
async fn only_admins_manage_users_and_a_refusal_changes_nothing() {
    let app = spawn_app().await;
    let (target, _) = user_with_token(&app, "target", &["jobs:read"]).await;
    let almost = app
        .user_token("almost", &["jobs:write", "supervisor:write", "resources:write"])
        .await;
    let missing = "Missing required scope: admin";
    assert_detail(&app.list_users(&almost).await, 403, missing);
    assert_detail(&app.get_user(&almost, target).await, 403, missing);
    let body = json!({"scopes": ["admin"], "disabled": true, "password": "taken-over-77"});
    assert_detail(&app.update_user(&almost, target, &body).await, 403, missing);
    assert_detail(&app.delete_user(&almost, target).await, 403, missing);
    let kept = account(&app, target).await;
    assert_eq!(
        (kept.scopes, kept.disabled),
        (vec!["jobs:read".to_owned()], false)
    );
    app.login_token("target", USER_PASSWORD).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let (target, token) = user_with_token(&app, "mallory", &["jobs:read"]).await;
    let bad = [
        (json!({"scopes": ["jobs:read", "root"]}), "scopes"),
        (json!({"scopes": "admin"}), "scopes"),
        (json!({"disabled": "yes"}), "disabled"),
        (json!({"password": "short"}), "password"),
        (json!({"password": "password123"}), "password"),
        (json!({"password": "i-am-Mallory-9"}), "password"),
        (json!({"scopes": ["admin"], "password": "12345678"}), "password"),
    ];
    for (body, field) in bad {
        let r = app.update_user(&app.admin_token, target, &body).await;
        assert_body_invalid(&r, &format!("PATCH {body}"));
        let items = validation_items(&r);
        assert!(
            items.iter().any(|i| loc_starts_with(&i["loc"], &["body", field])),
            "{body}: {}",
            r.text
        );
    }
    let r = app
        .update_user(&app.admin_token, target, &json!([null, true]))
        .await;
    assert_body_invalid(&r, "an array for an object");
    let kept = account(&app, target).await;
    assert_eq!(
        (kept.scopes, kept.disabled),
        (vec!["jobs:read".to_owned()], false)
    );
    assert_eq!(app.me(&token).await.status, 200, "the token was not revoked");
    app.login_token("mallory", USER_PASSWORD).await;
    app.stop().await;
}

#[tokio::test]
async fn a_bad_id_is_422_an_unknown_user_404_and_an_empty_change_nothing() {
    let app = spawn_app().await;
    let (target, _) = user_with_token(&app, "plain", &["jobs:read"]).await;
    let r = app
        .send(
            reqwest::Method::PATCH,
            "/api/auth/users/not-a-uuid",
            Some(&app.admin_token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        loc_starts_with(&validation_items(&r)[0]["loc"], &["path"]),
        "{}",
        r.text
    );
    let unknown = Uuid::new_v4();
    let r = app
        .update_user(&app.admin_token, unknown, &json!({"disabled": true}))
        .await;
    assert_detail(&r, 404, &format!("User {unknown} not found"));
    let same = update_ok(&app, target, &json!({})).await;
    assert_eq!(same, account(&app, target).await);
    app.stop().await;
}

#[tokio::test]
async fn users_are_listed_and_read_without_secrets() {
    let app = spawn_app().await;
    let (id, _) = user_with_token(&app, "lister", &["jobs:read", "jobs:read", "resources:read"]).await;
    let r = app.list_users(&app.admin_token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list: UserList = assert_shape(&r.json);
    assert_eq!(list.total, list.users.len());
    let names: Vec<&str> = list.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["admin", "lister"], "by name");
    for item in r.json["users"].as_array().expect("users") {
        let account: UserAccount = assert_shape(item);
        utc_time(&item["created_at"]);
        assert!(!account.disabled);
    }
    let one = app.get_user(&app.admin_token, id).await;
    assert_eq!(one.json, r.json["users"][1], "{}", one.text);
    assert_eq!(
        one.json["scopes"],
        json!(["jobs:read", "resources:read"]),
        "no repeats"
    );
    for leak in ["argon2", USER_PASSWORD, "password", "token_version"] {
        assert!(!r.text.contains(leak), "{leak} in {}", r.text);
    }
    let unknown = Uuid::new_v4();
    assert_detail(
        &app.get_user(&app.admin_token, unknown).await,
        404,
        &format!("User {unknown} not found"),
    );
    app.stop().await;
}

/// A token for `user_id` exactly as controllers before token versions
/// issued them: no `ver` claim.
fn token_without_version(user_id: Uuid, scopes: &[&str]) -> String {
    let now = now_secs();
    let mut claims = serde_json::to_value(controller::auth::Claims {
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..claims(user_id, now, now + 600)
    })
    .expect("claims serialise");
    claims.as_object_mut().map(|c| c.remove("ver"));
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
    )
    .expect("signing")
}

#[tokio::test]
async fn tokens_issued_before_versions_count_as_version_zero() {
    let app = spawn_app().await;
    let (id, _) = user_with_token(&app, "old", &["jobs:read"]).await;
    let old = token_without_version(id, &["jobs:read"]);
    assert_eq!(app.list_jobs(&old, &[]).await.status, 200);
    update_ok(&app, id, &json!({"disabled": true})).await;
    update_ok(&app, id, &json!({"disabled": false})).await;
    assert_invalid_credentials(
        &app.list_jobs(&old, &[]).await,
        "a version-0 token after a revocation",
    );
    // A signed token naming no user is refused, an agent JWT too: agents
    // present credentials of their own.
    let nobody = Uuid::new_v4();
    assert_invalid_credentials(
        &app.me(&token_without_version(nobody, &["admin"])).await,
        "no such user",
    );
    let agent = token_without_version(nobody, &["agent"]);
    let register = json!({"worker_id": "w-legacy", "hostname": "h", "capacity": 1});
    let r = app.register_agent(&agent, &register).await;
    assert_invalid_credentials(&r, "an agent JWT that names no worker");
    app.stop().await;
}
