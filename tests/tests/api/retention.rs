//! Retention as a client sees it: the controller's own passes (leader only,
//! every `--retention-interval-seconds`) make a finished job past its age
//! answer 404 and forget an idempotency key past its window, so the same
//! key then makes a new job; `/metrics` counts the rows deleted.

use crate::helpers::{job_id, metric, submit_ok};
use integration_tests::{spawn_app_with, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Generous bound for a pass to happen (they are due every second here).
const PASS_WAIT: Duration = Duration::from_secs(60);

/// Moves job `id`'s submission and finish 31 days into the past, and the
/// idempotency key `key` 25 hours: both past the default ages.
async fn as_if_long_ago(app: &TestApp, id: Uuid, key: &str) {
    let c = app.db.client().await.unwrap();
    c.execute(
        "UPDATE jobs SET created_at = now() - interval '32 days',
                queued_at = CASE WHEN queued_at IS NULL THEN NULL ELSE now() - interval '32 days' END,
                finished_at = now() - interval '31 days'
         WHERE job_id = $1",
        &[&id],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = $1",
        &[&key],
    )
    .await
    .unwrap();
}

/// Waits until GET of job `id` answers 404 and key `key` is forgotten.
async fn wait_until_gone(app: &TestApp, token: &str, id: Uuid, key: &str) {
    let c = app.db.client().await.unwrap();
    let started = Instant::now();
    loop {
        let status = app.get_job(token, id).await.status;
        let keys: i64 = c
            .query_one("SELECT count(*) FROM idempotency_keys WHERE key = $1", &[&key])
            .await
            .unwrap()
            .get(0);
        if status == 404 && keys == 0 {
            return;
        }
        assert!(
            started.elapsed() < PASS_WAIT,
            "job {id}: {status}, key rows {keys}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_old_finished_job_answers_404_and_an_expired_key_makes_a_new_job() {
    let app = spawn_app_with(&["--retention-interval-seconds", "1", "--reaper-interval-ms", "100"]).await;
    let token = app.user_token("rhea", &["jobs:read", "jobs:write"]).await;
    let old = submit_ok(&app, &token, "finished long ago").await;
    assert_eq!(app.cancel_job(&token, old).await.status, 200);
    let keyed = json!({"task_description": "nightly", "idempotency_key": "nightly-1"});
    let first = app.submit_job(&token, &keyed).await;
    assert_eq!(first.status, 201, "{}", first.text);
    as_if_long_ago(&app, old, "nightly-1").await;

    wait_until_gone(&app, &token, old, "nightly-1").await;
    let detail = app.job_events(&token, old).await;
    assert_eq!(detail.status, 404, "its events are gone too: {}", detail.text);
    assert_eq!(detail.json["detail"], format!("Job {old} not found"));
    let kept = app.get_job(&token, job_id(&first.json)).await;
    assert_eq!(kept.status, 200, "the keyed job itself stays: {}", kept.text);
    let again = app.submit_job(&token, &keyed).await;
    assert_eq!(
        again.status, 201,
        "a forgotten key makes a new job: {}",
        again.text
    );
    assert_ne!(job_id(&again.json), job_id(&first.json));
    for (table, n) in [("jobs", 1.0), ("idempotency_keys", 1.0)] {
        let series = format!("retention_rows_deleted_total{{table=\"{table}\"}}");
        assert_eq!(metric(&app, &series).await, n, "{series}");
    }
}
