//! Allocations found wanting by an attack on the running API: another
//! user's job id must look like an unknown one (no existence oracle), and
//! every allocation must lapse (a default lifetime, a configurable ceiling).

use crate::helpers::{assert_body_invalid, register_workers, submit_ok, utc_time};
use integration_tests::{spawn_app_with, TestApp};
use serde_json::json;
use uuid::Uuid;

/// An app with two free workers and a user `mallory` allowed to allocate.
async fn app_and_mallory(extra: &[&str]) -> (TestApp, String) {
    let app = spawn_app_with(extra).await;
    register_workers(&app, &["r-1", "r-2"]).await;
    let mallory = app
        .user_token("mallory", &["resources:write", "jobs:write"])
        .await;
    (app, mallory)
}

#[tokio::test]
async fn allocating_for_another_users_job_is_the_404_of_an_unknown_job() {
    let (app, mallory) = app_and_mallory(&[]).await;
    let theirs = submit_ok(&app, &app.admin_token, "the admin's job").await;
    let unknown = Uuid::new_v4();
    let for_theirs = app
        .allocate(&mallory, &json!({"workers": 1, "job_id": theirs}))
        .await;
    let for_unknown = app
        .allocate(&mallory, &json!({"workers": 1, "job_id": unknown}))
        .await;
    assert_eq!(for_theirs.status, 404, "{}", for_theirs.text);
    assert_eq!(for_unknown.status, 404, "{}", for_unknown.text);
    let shown = |r: &integration_tests::Reply, id: &Uuid| {
        r.json["detail"]
            .as_str()
            .map(|d| d.replace(&id.to_string(), "ID"))
    };
    assert_eq!(shown(&for_theirs, &theirs), shown(&for_unknown, &unknown));
    let mine = submit_ok(&app, &mallory, "mallory's job").await;
    let for_mine = app
        .allocate(&mallory, &json!({"workers": 1, "job_id": mine}))
        .await;
    assert_eq!(for_mine.status, 201, "{}", for_mine.text);
    app.stop().await;
}

#[tokio::test]
async fn an_allocation_without_a_ttl_lapses_after_the_default_lifetime() {
    let (app, mallory) = app_and_mallory(&["--allocation-default-ttl-seconds", "120"]).await;
    let r = app.allocate(&mallory, &json!({"workers": 1})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let expires = utc_time(&r.json["expires_at"]);
    let expected = chrono::Utc::now() + chrono::Duration::seconds(120);
    assert!((expires - expected).num_seconds().abs() < 30, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn a_ttl_over_the_configured_ceiling_is_refused() {
    let (app, mallory) = app_and_mallory(&["--allocation-max-ttl-seconds", "600"]).await;
    let r = app
        .allocate(&mallory, &json!({"workers": 1, "ttl_seconds": 601}))
        .await;
    assert_body_invalid(&r, "ttl_seconds");
    let ok = app
        .allocate(&mallory, &json!({"workers": 1, "ttl_seconds": 600}))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    app.stop().await;
}
