//! Races the API must win: one idempotency key submitted fifty times at
//! once, fifty allocations competing for five workers, and concurrent
//! submissions sharing transactions yet each answered as if alone (its own
//! job, its own quota refusal); and what submissions, and an idle
//! controller, cost the database (transactions, the relay's polls).

use crate::helpers::{app_with_workers, job_count, submit_ok, wait_queued};
use integration_tests::{spawn_app, spawn_app_with, TestApp};
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

#[tokio::test]
async fn concurrent_submissions_share_commits_and_each_is_answered_its_own_job() {
    let app = spawn_app().await;
    let other = app.user_token("sharer", &["jobs:write"]).await;
    let bodies: Vec<(String, serde_json::Value)> = (0..40)
        .map(|i| {
            let token = if i % 4 == 0 {
                other.clone()
            } else {
                app.admin_token.clone()
            };
            (token, json!({"task_description": format!("shared-{i}")}))
        })
        .collect();
    let replies =
        futures::future::join_all(bodies.iter().map(|(token, body)| app.submit_job(token, body))).await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(
            r.json["task_description"],
            json!(format!("shared-{i}")),
            "{}",
            r.text
        );
    }
    let ids: HashSet<_> = replies.iter().map(|r| r.json["job_id"].clone()).collect();
    assert_eq!(ids.len(), 40, "forty jobs");
    // A job's created_at is its transaction's start: forty submissions
    // written one transaction each would show forty distinct times.
    let c = app.db.client().await.unwrap();
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT created_at), count(*) FILTER (WHERE submitted_by <> (SELECT user_id FROM users WHERE username = 'sharer')) FROM jobs",
            &[],
        )
        .await
        .unwrap();
    let (jobs, transactions, admins): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((jobs, admins), (40, 30), "each job stored for its own submitter");
    assert!(
        transactions * 2 <= jobs,
        "{jobs} concurrent submissions took {transactions} transactions"
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_submissions_past_the_queued_quota_create_exactly_the_quota() {
    let app = spawn_app_with(&["--default-max-queued-jobs", "5"]).await;
    let token = app.user_token("quota-racer", &["jobs:write"]).await;
    let bodies: Vec<_> = (0..20)
        .map(|i| json!({"task_description": format!("q-{i}")}))
        .collect();
    let replies = futures::future::join_all(bodies.iter().map(|b| app.submit_job(&token, b))).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 5, "the quota's five");
    for r in replies.iter().filter(|r| r.status != 201) {
        assert_eq!(r.status, 409, "{}", r.text);
        assert!(r.text.contains("max_queued_jobs"), "{}", r.text);
    }
    assert_eq!(job_count(&app).await, Some(5), "five jobs stored");
    app.stop().await;
}

/// The relay's polls of the outbox in this test's database so far, from
/// `pg_stat_statements` (which the project's Postgres image preloads).
async fn relay_polls(app: &TestApp) -> i64 {
    let c = app.db.client().await.unwrap();
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    c.query_one(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query LIKE 'SELECT message_id, exchange, routing_key%FROM outbox%'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn jobs_submitted_one_at_a_time_cost_the_relay_one_poll_each() {
    // A poll interval longer than the test: every poll counted is one the
    // relay made because it was woken, or because it asked again at once.
    let app = spawn_app_with(&["--relay-poll-ms", "600000"]).await;
    let job = submit_ok(&app, &app.admin_token, "warm-up").await;
    wait_queued(&app, job).await;
    let before = relay_polls(&app).await;
    const JOBS: i64 = 10;
    for i in 0..JOBS {
        let job = submit_ok(&app, &app.admin_token, &format!("one-{i}")).await;
        wait_queued(&app, job).await;
    }
    let polls = relay_polls(&app).await - before;
    assert!(
        polls <= JOBS + 1,
        "{JOBS} jobs, each published before the next was submitted, took {polls} polls of the outbox"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_idle_controller_does_not_poll_the_outbox_on_every_reaper_pass() {
    // Reaper passes every 50 ms, relay polls never on their own: a poll
    // counted here is one a reaper pass that wrote nothing woke.
    let app = spawn_app_with(&["--relay-poll-ms", "600000", "--reaper-interval-ms", "50"]).await;
    let before = relay_polls(&app).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let polls = relay_polls(&app).await - before;
    assert!(
        polls <= 1,
        "an idle controller polled the outbox {polls} times in a second of reaper passes"
    );
    app.stop().await;
}
