//! The supervisor API: listing and reading workers, their pause, resume and
//! terminate transitions, and the fleet's counts by status.

use crate::helpers::{
    app_with_workers, assert_detail, assert_worker_shape, call_routes_with, ids_of, register_workers, set,
    submit_ok, validation_items,
};
use integration_tests::{spawn_app, TestApp};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use uuid::Uuid;

/// Registers `w-a`, `w-b` and `w-c` and pauses `w-b`.
async fn three_workers_one_paused(app: &TestApp) {
    register_workers(app, &["w-a", "w-b", "w-c"]).await;
    let r = app.pause_worker(&app.admin_token, "w-b").await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn list_workers_shows_every_worker_with_the_total() {
    let app = spawn_app().await;
    let empty = app.list_workers(&app.admin_token, &[]).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.json, json!({"workers": [], "total": 0}));

    three_workers_one_paused(&app).await;
    let all = app.list_workers(&app.admin_token, &[]).await;
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
    app.stop().await;
}

#[tokio::test]
async fn list_workers_filters_by_status() {
    let app = spawn_app().await;
    three_workers_one_paused(&app).await;
    let admin = &app.admin_token;
    let idle = app.list_workers(admin, &[("status", "idle")]).await;
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

    let paused = app.list_workers(admin, &[("status", "paused")]).await;
    assert_eq!(paused.json["total"], json!(1), "{}", paused.text);
    assert_eq!(
        paused.json["workers"][0]["worker_id"],
        json!("w-b"),
        "{}",
        paused.text
    );
    let none = app.list_workers(admin, &[("status", "busy")]).await;
    assert_eq!(none.json, json!({"workers": [], "total": 0}), "{}", none.text);
    app.stop().await;
}

#[tokio::test]
async fn unknown_worker_status_filter_is_422() {
    let app = spawn_app().await;
    let bogus = app
        .list_workers(&app.admin_token, &[("status", "sleeping")])
        .await;
    assert_eq!(bogus.status, 422, "{}", bogus.text);
    validation_items(&bogus);
    app.stop().await;
}

#[tokio::test]
async fn get_worker_shows_what_the_database_holds() {
    let app = spawn_app().await;
    let registered = app.register_worker("w-get.1:x").await;
    let r = app.get_worker(&app.admin_token, "w-get.1:x").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let shown = assert_worker_shape(&r.json);
    assert_eq!(r.json["worker_id"], json!("w-get.1:x"));
    assert_eq!(r.json["status"], json!("idle"));
    assert_eq!(r.json["hostname"], json!("w-get.1:x.local"));
    assert_eq!(shown, registered, "the API shows what the database holds");
    app.stop().await;
}

#[tokio::test]
async fn every_worker_route_answers_404_for_an_unknown_worker() {
    let app = spawn_app().await;
    for (route, r) in call_routes_with(&app, "{worker_id}", Uuid::new_v4(), "ghost-7").await {
        assert_eq!(r.status, 404, "{route}: {}", r.text);
        assert_detail(&r, 404, "Worker ghost-7 not found");
    }
    app.stop().await;
}

#[tokio::test]
async fn pause_then_resume_returns_the_worker_to_idle() {
    let app = app_with_workers(&["w-p"]).await;
    let r = app.pause_worker(&app.admin_token, "w-p").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_worker_shape(&r.json);
    assert_eq!(r.json["worker_id"], json!("w-p"));
    assert_eq!(r.json["status"], json!("paused"));

    let r = app.resume_worker(&app.admin_token, "w-p").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], json!("idle"), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn repeating_pause_or_resume_is_409() {
    let app = app_with_workers(&["w-p"]).await;
    let admin = &app.admin_token;
    assert_eq!(app.pause_worker(admin, "w-p").await.status, 200);
    let r = app.pause_worker(admin, "w-p").await;
    assert_detail(&r, 409, "Invalid worker transition: paused -> paused");
    assert_eq!(app.resume_worker(admin, "w-p").await.status, 200);
    let r = app.resume_worker(admin, "w-p").await;
    assert_detail(&r, 409, "Invalid worker transition: idle -> idle");
    app.stop().await;
}

#[tokio::test]
async fn terminating_worker_refuses_pause_and_terminate() {
    let app = app_with_workers(&["w-p"]).await;
    let admin = &app.admin_token;
    let r = app.terminate_worker(admin, "w-p").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_worker_shape(&r.json);
    assert_eq!(r.json["status"], json!("terminating"), "{}", r.text);

    let r = app.pause_worker(admin, "w-p").await;
    assert_detail(&r, 409, "Invalid worker transition: terminating -> paused");
    let r = app.terminate_worker(admin, "w-p").await;
    assert_detail(&r, 409, "Invalid worker transition: terminating -> terminating");
    let r = app.get_worker(admin, "w-p").await;
    assert_eq!(r.json["status"], json!("terminating"), "{}", r.text);
    app.stop().await;
}

/// Four workers (two idle, one paused, one terminating) and three jobs, one
/// of them cancelled.
async fn arrange_fleet(app: &TestApp) {
    let admin = &app.admin_token;
    register_workers(app, &["m-1", "m-2", "m-3", "m-4"]).await;
    assert_eq!(app.pause_worker(admin, "m-2").await.status, 200);
    assert_eq!(app.terminate_worker(admin, "m-3").await.status, 200);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submit_ok(app, admin, &format!("metric {i}")).await);
    }
    assert_eq!(app.cancel_job(admin, ids[0]).await.status, 200);
}

/// The count of `key` in a by-status map (0 when absent).
fn count_of(m: &Map<String, Value>, key: &str) -> i64 {
    m.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// The sum of a by-status map.
fn total(m: &Map<String, Value>) -> i64 {
    m.values().filter_map(Value::as_i64).sum()
}

/// The by-status map `key` of the metrics body `body`.
fn by_status<'a>(body: &'a Value, key: &str) -> &'a Map<String, Value> {
    body[key]
        .as_object()
        .unwrap_or_else(|| panic!("{key} object: {body}"))
}

#[tokio::test]
async fn supervisor_metrics_count_workers_and_jobs_by_status() {
    let app = spawn_app().await;
    arrange_fleet(&app).await;
    let r = app.fleet_metrics(&app.admin_token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let workers = by_status(&r.json, "workers_by_status");
    assert_eq!(count_of(workers, "idle"), 2, "{}", r.text);
    assert_eq!(count_of(workers, "paused"), 1, "{}", r.text);
    assert_eq!(count_of(workers, "terminating"), 1, "{}", r.text);
    assert_eq!(total(workers), 4, "{}", r.text);
    let jobs = by_status(&r.json, "jobs_by_status");
    assert_eq!(count_of(jobs, "cancelled"), 1, "{}", r.text);
    assert_eq!(
        count_of(jobs, "pending") + count_of(jobs, "queued"),
        2,
        "two live jobs (pending or already queued): {}",
        r.text
    );
    assert_eq!(total(jobs), 3, "{}", r.text);
    for v in workers.values().chain(jobs.values()) {
        assert!(v.is_i64() || v.is_u64(), "counts are integers: {}", r.text);
    }
    app.stop().await;
}
