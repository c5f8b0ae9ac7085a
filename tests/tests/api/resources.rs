//! The resources API: the caller's quota and what is left of it, allocating
//! workers within it, and releasing them.

use crate::helpers::{
    allocate_ok, app_with_workers, assert_body_invalid, assert_conflict, assert_detail, assert_quota_shape,
    register_workers, submit_ok, utc_time,
};
use integration_tests::{spawn_app, spawn_app_with, TestApp};
use orchestrator_shared::api::QuotaView;
use serde_json::json;
use uuid::Uuid;

/// An app whose users may hold 2 workers, with live workers `q-1` to `q-3`
/// and a paused `q-4`.
async fn quota_app() -> TestApp {
    let app = spawn_app_with(&["--default-max-workers", "2"]).await;
    register_workers(&app, &["q-1", "q-2", "q-3", "q-4"]).await;
    let r = app.pause_worker(&app.admin_token, "q-4").await;
    assert_eq!(r.status, 200, "{}", r.text);
    app
}

/// The admin holds one worker and has two jobs waiting.
async fn use_some_quota(app: &TestApp) {
    allocate_ok(app, &app.admin_token, 1).await;
    for i in 0..2 {
        submit_ok(app, &app.admin_token, &format!("q {i}")).await;
    }
}

/// The quota answer of a user without usage under `--default-max-workers
/// 2`, when `available` workers are free.
fn unused_quota(available: i64) -> QuotaView {
    QuotaView {
        max_workers: 2,
        allocated_workers: 0,
        available_workers: available,
        max_concurrent_jobs: 10_000,
        running_jobs: 0,
        max_queued_jobs: 1_000_000,
        queued_jobs: 0,
        pools: Vec::new(),
    }
}

/// The caller's quota answer, checked against `QuotaView`.
async fn quota_of(app: &TestApp, token: &str) -> QuotaView {
    let r = app.quotas(token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_quota_shape(&r.json)
}

#[tokio::test]
async fn quotas_show_the_limits_and_no_usage_at_first() {
    let app = spawn_app_with(&["--default-max-workers", "2"]).await;
    let quota = quota_of(&app, &app.admin_token).await;
    assert_eq!(quota, unused_quota(0), "no workers yet");
    app.stop().await;
}

#[tokio::test]
async fn available_workers_are_free_live_workers_capped_by_the_quota() {
    let app = quota_app().await;
    let quota = quota_of(&app, &app.admin_token).await;
    assert_eq!(
        quota,
        unused_quota(2),
        "three free live workers, capped by max_workers 2"
    );
    app.stop().await;
}

#[tokio::test]
async fn quotas_track_allocations_and_queued_jobs() {
    let app = quota_app().await;
    use_some_quota(&app).await;
    let quota = quota_of(&app, &app.admin_token).await;
    let used = QuotaView {
        allocated_workers: 1,
        queued_jobs: 2,
        ..unused_quota(1)
    };
    assert_eq!(quota, used, "the quota leaves 1");
    app.stop().await;
}

#[tokio::test]
async fn quotas_are_the_callers_own() {
    let app = quota_app().await;
    use_some_quota(&app).await;
    // Another user has nothing allocated.
    let other = app.user_token("quota-other", &["resources:read"]).await;
    let quota = quota_of(&app, &other).await;
    assert_eq!(quota, unused_quota(2), "two unallocated live workers");
    app.stop().await;
}

/// An app whose users may hold 2 workers, with 3 free workers.
async fn allocation_app() -> TestApp {
    let app = spawn_app_with(&["--default-max-workers", "2"]).await;
    register_workers(&app, &["a-1", "a-2", "a-3"]).await;
    app
}

#[tokio::test]
async fn allocate_within_the_quota_is_201_active_until_its_ttl() {
    let app = allocation_app().await;
    let admin = &app.admin_token;
    let id = submit_ok(&app, admin, "needs workers").await;
    let body = json!({"workers": 2, "job_id": id, "ttl_seconds": 600});
    let r = app.allocate(admin, &body).await;
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
    app.stop().await;
}

#[tokio::test]
async fn allocate_over_the_quota_is_409() {
    let app = allocation_app().await;
    let admin = &app.admin_token;
    // 3 free workers, max_workers 2.
    assert_conflict(&app.allocate(admin, &json!({"workers": 3})).await);
    allocate_ok(&app, admin, 2).await;
    // The quota is used up.
    assert_conflict(&app.allocate(admin, &json!({"workers": 1})).await);
    app.stop().await;
}

#[tokio::test]
async fn allocate_beyond_the_free_workers_is_409() {
    let app = allocation_app().await;
    allocate_ok(&app, &app.admin_token, 2).await;
    // Another user: within quota, but only one worker is left free.
    let other = app.user_token("alloc-other", &["resources:write"]).await;
    assert_conflict(&app.allocate(&other, &json!({"workers": 2})).await);
    let r = app.allocate(&other, &json!({"workers": 1})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json["job_id"].is_null(), "{}", r.text);
    assert!(r.json.get("expires_at").is_some(), "{}", r.text);
    assert_eq!(r.json["status"], json!("active"), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn invalid_allocation_requests_are_422() {
    let app = allocation_app().await;
    let other = app.user_token("alloc-other", &["resources:write"]).await;
    for body in [json!({"workers": 0}), json!({"workers": "two"}), json!({})] {
        let r = app.allocate(&other, &body).await;
        assert_body_invalid(&r, &body.to_string());
    }
    app.stop().await;
}

/// An app with one worker, `r-1`, held by the admin's allocation (returned).
async fn one_worker_held() -> (TestApp, serde_json::Value) {
    let app = app_with_workers(&["r-1"]).await;
    let alloc_id = allocate_ok(&app, &app.admin_token, 1).await;
    (app, alloc_id)
}

#[tokio::test]
async fn release_marks_the_allocation_released_and_frees_its_workers() {
    let (app, alloc_id) = one_worker_held().await;
    let admin = &app.admin_token;
    // The only worker is held.
    let r = app.allocate(admin, &json!({"workers": 1})).await;
    assert_eq!(r.status, 409, "{}", r.text);

    let r = app.release(admin, &alloc_id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["allocation_id"], alloc_id, "{}", r.text);
    assert_eq!(r.json["status"], json!("released"), "{}", r.text);
    assert_eq!(r.json["workers"], json!(1), "{}", r.text);
    // The worker is free again.
    allocate_ok(&app, admin, 1).await;
    app.stop().await;
}

#[tokio::test]
async fn releasing_twice_is_harmless() {
    let (app, alloc_id) = one_worker_held().await;
    let first = app.release(&app.admin_token, &alloc_id).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let again = app.release(&app.admin_token, &alloc_id).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["status"], json!("released"), "{}", again.text);
    app.stop().await;
}

#[tokio::test]
async fn release_of_an_unknown_allocation_is_404() {
    let app = spawn_app().await;
    let unknown = Uuid::new_v4();
    let r = app.release(&app.admin_token, &json!(unknown)).await;
    assert_detail(&r, 404, &format!("Allocation {unknown} not found"));
    app.stop().await;
}

#[tokio::test]
async fn release_with_a_malformed_id_is_422() {
    let app = spawn_app().await;
    let r = app.release(&app.admin_token, &json!("not-a-uuid")).await;
    assert_body_invalid(&r, "a malformed allocation id");
    app.stop().await;
}
