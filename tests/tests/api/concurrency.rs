//! Races the API must win: one idempotency key submitted fifty times at
//! once, and fifty allocations competing for five workers.

use crate::helpers::{app_with_workers, job_count};
use integration_tests::spawn_app;
use serde_json::json;
use std::collections::HashSet;

#[tokio::test]
async fn concurrent_submissions_with_one_idempotency_key_create_one_job() {
    let app = spawn_app().await;
    let body = json!({"task_description": "once", "idempotency_key": "race-key"});
    let replies = futures::future::join_all((0..50).map(|_| app.submit_job(&app.admin_token, &body))).await;
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
    assert_eq!(job_count(&app).await, Some(1), "one job stored");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_allocations_never_exceed_the_free_workers() {
    let app = app_with_workers(&["c-0", "c-1", "c-2", "c-3", "c-4"]).await;
    let body = json!({"workers": 1});
    let replies = futures::future::join_all((0..50).map(|_| app.allocate(&app.admin_token, &body))).await;
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
    let q = app.quotas(&app.admin_token).await;
    assert_eq!(q.json["allocated_workers"], json!(5), "{}", q.text);
    assert_eq!(q.json["available_workers"], json!(0), "{}", q.text);
    app.stop().await;
}
