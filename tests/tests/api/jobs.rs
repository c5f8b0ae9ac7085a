//! The job API: submitting (alone, in batches, idempotently), reading,
//! cancelling, a job's events and output, and listing with pages and a
//! status filter.

use crate::helpers::{
    app_with_job, assert_detail, assert_event_shape, assert_job_shape, call_routes_with, count, ids_of,
    job_count, job_id, submit_ok, utc_time, validation_items,
};
use integration_tests::{spawn_app, Reply, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

/// A submission that sets every field, with idempotency key `key-1`.
fn full_submission() -> Value {
    json!({
        "task_description": "full",
        "required_workers": 3,
        "command": ["sh", "-c", "echo hi"],
        "priority": 9,
        "timeout_seconds": 30,
        "max_retries": 2,
        "idempotency_key": "key-1",
        "labels": {"team": "infra"}
    })
}

/// An app and a token of user `submitter` (scope jobs:write).
async fn app_with_submitter() -> (TestApp, String) {
    let app = spawn_app().await;
    let token = app.user_token("submitter", &["jobs:write"]).await;
    (app, token)
}

/// Submits [`full_submission`] as `token` and checks it was created.
async fn submit_full(app: &TestApp, token: &str) -> Reply {
    let first = app.submit_job(token, &full_submission()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    first
}

#[tokio::test]
async fn submit_job_is_201_pending_with_the_defaults() {
    let (app, token) = app_with_submitter().await;
    let me = app.me(&token).await;
    let r = app
        .submit_job(&token, &json!({"task_description": "plain"}))
        .await;
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
    for k in [
        "command",
        "timeout_seconds",
        "idempotency_key",
        "started_at",
        "finished_at",
        "exit_code",
        "error",
    ] {
        assert!(r.json[k].is_null(), "{k}: {}", r.text);
    }
    assert_eq!(r.json["submitted_by"], me.json["user_id"], "{}", r.text);
    let created = utc_time(&r.json["created_at"]);
    assert!((chrono::Utc::now() - created).num_seconds().abs() < 60);
    app.stop().await;
}

#[tokio::test]
async fn submit_job_keeps_every_given_field() {
    let (app, token) = app_with_submitter().await;
    let first = submit_full(&app, &token).await;
    assert_job_shape(&first.json);
    assert_eq!(first.json["status"], json!("pending"));
    assert_eq!(first.json["required_workers"], json!(3));
    assert_eq!(first.json["command"], json!(["sh", "-c", "echo hi"]));
    assert_eq!(first.json["priority"], json!(9));
    assert_eq!(first.json["timeout_seconds"], json!(30));
    assert_eq!(first.json["max_retries"], json!(2));
    assert_eq!(first.json["idempotency_key"], json!("key-1"));
    assert_eq!(first.json["labels"], json!({"team": "infra"}));
    app.stop().await;
}

#[tokio::test]
async fn resubmitting_with_the_same_key_and_body_returns_the_same_job() {
    let (app, token) = app_with_submitter().await;
    let first = submit_full(&app, &token).await;
    let again = app.submit_job(&token, &full_submission()).await;
    assert_eq!(again.status, 200, "same key, same body: {}", again.text);
    assert_job_shape(&again.json);
    assert_eq!(again.json["job_id"], first.json["job_id"]);
    assert_eq!(job_count(&app).await, Some(1), "nothing created by the replay");
    app.stop().await;
}

#[tokio::test]
async fn reusing_a_key_with_another_body_is_409() {
    let (app, token) = app_with_submitter().await;
    submit_full(&app, &token).await;
    let mut changed = full_submission();
    changed["priority"] = json!(1);
    let r = app.submit_job(&token, &changed).await;
    assert_eq!(r.status, 409, "same key, other body: {}", r.text);
    assert!(r.json["detail"].is_string(), "{}", r.text);
    assert_eq!(job_count(&app).await, Some(1), "nothing created by the conflict");
    app.stop().await;
}

#[tokio::test]
async fn idempotency_keys_are_per_user() {
    let (app, token) = app_with_submitter().await;
    let first = submit_full(&app, &token).await;
    // Another user's key-1 is a new job.
    let other = app.user_token("submitter-2", &["jobs:write"]).await;
    let r = app.submit_job(&other, &full_submission()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_ne!(r.json["job_id"], first.json["job_id"]);
    app.stop().await;
}

#[tokio::test]
async fn get_job_shows_the_submitted_job() {
    let app = spawn_app().await;
    let admin = &app.admin_token;
    let body = json!({"task_description": "fetch me", "labels": {"a": "b"}});
    let s = app.submit_job(admin, &body).await;
    let id = job_id(&s.json);
    let r = app.get_job(admin, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_job_shape(&r.json);
    assert_eq!(r.json["job_id"], json!(id.to_string()));
    assert_eq!(r.json["task_description"], json!("fetch me"));
    assert_eq!(r.json["labels"], json!({"a": "b"}));
    assert_eq!(r.json["created_at"], s.json["created_at"]);
    let status = r.json["status"].as_str().unwrap_or_default();
    assert!(status == "pending" || status == "queued", "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn every_job_route_answers_404_for_an_unknown_job() {
    let app = spawn_app().await;
    let unknown = Uuid::new_v4();
    for (route, r) in call_routes_with(&app, "{job_id}", unknown, "unused").await {
        assert_eq!(r.status, 404, "{route}: {}", r.text);
        assert_detail(&r, 404, &format!("Job {unknown} not found"));
    }
    app.stop().await;
}

#[tokio::test]
async fn malformed_job_id_is_422_at_the_path() {
    let app = spawn_app().await;
    let r = app.get_job(&app.admin_token, "not-a-uuid").await;
    assert_eq!(r.status, 422, "{}", r.text);
    let items = validation_items(&r);
    assert_eq!(items[0]["loc"], json!(["path", "job_id"]), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn cancel_pending_job_finishes_it() {
    let (app, id) = app_with_job("cancel me").await;
    let r = app.cancel_job(&app.admin_token, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_job_shape(&r.json);
    assert_eq!(r.json["status"], json!("cancelled"), "{}", r.text);
    assert_eq!(r.json["job_id"], json!(id.to_string()));
    assert!(
        !r.json["finished_at"].is_null(),
        "a cancelled job is finished: {}",
        r.text
    );
    app.stop().await;
}

#[tokio::test]
async fn second_cancel_is_409() {
    let (app, id) = app_with_job("cancel me").await;
    let admin = &app.admin_token;
    assert_eq!(app.cancel_job(admin, id).await.status, 200);
    let r = app.cancel_job(admin, id).await;
    assert_detail(&r, 409, "Invalid job transition: cancelled -> cancelled");
    let r = app.get_job(admin, id).await;
    assert_eq!(r.json["status"], json!("cancelled"), "{}", r.text);
    app.stop().await;
}

/// The events of job `id`, each checked against `JobEvent`.
async fn events_of(app: &TestApp, id: Uuid) -> (Reply, Vec<Value>) {
    let r = app.job_events(&app.admin_token, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let events = r.json["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events array: {}", r.text))
        .clone();
    assert!(!events.is_empty(), "{}", r.text);
    for e in &events {
        assert_event_shape(e);
    }
    (r, events)
}

#[tokio::test]
async fn job_events_start_with_the_submission() {
    let (app, id) = app_with_job("history").await;
    let (r, events) = events_of(&app, id).await;
    assert!(events[0]["from"].is_null(), "{}", r.text);
    assert_eq!(events[0]["to"], json!("pending"), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn job_events_chain_oldest_first_up_to_the_cancel() {
    let (app, id) = app_with_job("history").await;
    assert_eq!(app.cancel_job(&app.admin_token, id).await.status, 200);
    let (r, events) = events_of(&app, id).await;
    let last = events.last().unwrap();
    assert_eq!(last["to"], json!("cancelled"), "{}", r.text);
    let before_last = &events[events.len() - 2]["to"];
    assert_eq!(last["from"], *before_last, "events chain: {}", r.text);
    let times: Vec<_> = events.iter().map(|e| utc_time(&e["at"])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn job_output_before_any_run_has_no_exit_code() {
    let (app, id) = app_with_job("no output yet").await;
    let r = app.job_output(&app.admin_token, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.is_object(), "{}", r.text);
    assert!(r.json.get("exit_code").is_some(), "{}", r.text);
    assert!(r.json["exit_code"].is_null(), "{}", r.text);
    app.stop().await;
}

/// Submits seven jobs and returns their ids, oldest first.
async fn seven_jobs(app: &TestApp) -> Vec<String> {
    let mut submitted = Vec::new();
    for i in 0..7 {
        let id = submit_ok(app, &app.admin_token, &format!("page {i}")).await;
        submitted.push(id.to_string());
    }
    submitted
}

/// The ids of the jobs of a page.
fn page_ids(r: &Reply) -> Vec<String> {
    let jobs = r.json["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("jobs: {}", r.text));
    ids_of(jobs, "job_id")
}

/// Follows `next_cursor` through pages of 3 and returns every id seen.
async fn walk_pages_of_three(app: &TestApp) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 1..=4 {
        let mut query = vec![("limit", "3")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let r = app.list_jobs(&app.admin_token, &query).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let jobs = r.json["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("jobs: {}", r.text));
        assert!(jobs.len() <= 3, "limit honoured: {}", r.text);
        if page == 1 {
            assert_eq!(jobs.len(), 3, "{}", r.text);
        }
        for j in jobs {
            assert_job_shape(j);
        }
        seen.extend(page_ids(&r));
        assert!(r.json.get("next_cursor").is_some(), "next_cursor key: {}", r.text);
        match &r.json["next_cursor"] {
            Value::Null => return seen,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor must be a string or null: {other}"),
        }
    }
    panic!("pagination does not end after 4 pages: {seen:?}")
}

#[tokio::test]
async fn list_jobs_pages_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    let submitted = seven_jobs(&app).await;
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();
    let seen = walk_pages_of_three(&app).await;
    assert_eq!(seen, newest_first, "every job once, newest first");
    app.stop().await;
}

#[tokio::test]
async fn list_jobs_default_limit_lists_all_seven_and_ends() {
    let app = spawn_app().await;
    let submitted = seven_jobs(&app).await;
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();
    let r = app.list_jobs(&app.admin_token, &[]).await;
    assert_eq!(page_ids(&r), newest_first);
    assert!(r.json["next_cursor"].is_null(), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn list_jobs_filters_by_status() {
    let app = spawn_app().await;
    let submitted = seven_jobs(&app).await;
    for id in [&submitted[1], &submitted[4]] {
        assert_eq!(app.cancel_job(&app.admin_token, id).await.status, 200);
    }
    let r = app.list_jobs(&app.admin_token, &[("status", "cancelled")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        page_ids(&r),
        vec![submitted[4].clone(), submitted[1].clone()],
        "{}",
        r.text
    );
    assert!(r.json["next_cursor"].is_null(), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn list_jobs_accepts_limits_from_1_to_500() {
    let app = spawn_app().await;
    seven_jobs(&app).await;
    let r = app.list_jobs(&app.admin_token, &[("limit", "500")]).await;
    assert_eq!(r.status, 200, "limit 500 is allowed: {}", r.text);
    let r = app.list_jobs(&app.admin_token, &[("limit", "1")]).await;
    assert_eq!(r.status, 200, "limit 1 is allowed: {}", r.text);
    assert_eq!(count(&r, "jobs"), Some(1), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn bad_list_parameters_are_422_naming_the_parameter() {
    let app = spawn_app().await;
    // Every bad parameter is checked before any assertion fails, so a
    // failure lists all of them.
    let mut wrong = Vec::new();
    for (param, value) in [
        ("limit", "0"),
        ("limit", "501"),
        ("limit", "ten"),
        ("cursor", "garbage"),
        ("status", "sleeping"),
    ] {
        let r = app.list_jobs(&app.admin_token, &[(param, value)]).await;
        let located = r.json["detail"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["loc"] == json!(["query", param])));
        if r.status != 422 || !located {
            wrong.push(format!("?{param}={value}: {} {}", r.status, r.text));
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

#[tokio::test]
async fn batch_submission_creates_every_job_in_order() {
    let app = spawn_app().await;
    let jobs: Vec<Value> = (0..5)
        .map(|i| json!({"task_description": format!("b{i}"), "priority": i}))
        .collect();
    let r = app.submit_batch(&app.admin_token, &jobs).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json["jobs"].as_array().unwrap();
    assert_eq!(created.len(), 5);
    assert_eq!(created[3]["task_description"], "b3");
    assert_eq!(created[3]["priority"], 3);
    app.stop().await;
}

/// Job ids are time-ordered (UUIDv7), so a client can sort by id and every
/// index keyed by job id grows at its end: a batch's ids ascend in its
/// order, and a later submission's id is above them all.
#[tokio::test]
async fn job_ids_are_time_ordered() {
    let app = spawn_app().await;
    let jobs: Vec<Value> = (0..20)
        .map(|i| json!({"task_description": format!("o{i}")}))
        .collect();
    let r = app.submit_batch(&app.admin_token, &jobs).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut ids: Vec<Uuid> = r.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().parse().unwrap())
        .collect();
    let later = app
        .submit_job(&app.admin_token, &json!({"task_description": "later"}))
        .await;
    assert_eq!(later.status, 201, "{}", later.text);
    ids.push(later.json["job_id"].as_str().unwrap().parse().unwrap());
    assert!(
        ids.iter().all(|id| id.get_version_num() == 7),
        "not UUIDv7: {ids:?}"
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "not ascending: {ids:?}");
    app.stop().await;
}

#[tokio::test]
async fn batch_with_one_bad_entry_is_422_naming_its_index() {
    let app = spawn_app().await;
    let bad = [
        json!({"task_description": "ok"}),
        json!({"task_description": "x", "required_workers": 0}),
    ];
    let r = app.submit_batch(&app.admin_token, &bad).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.json["detail"][0]["loc"],
        json!(["body", "jobs", "1", "required_workers"])
    );
    assert_eq!(
        job_count(&app).await,
        Some(0),
        "the refused batch created nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn empty_or_oversized_batch_is_422() {
    let app = spawn_app().await;
    let empty = app.submit_batch(&app.admin_token, &[]).await;
    assert_eq!(empty.status, 422, "{}", empty.text);
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({"task_description": "x"})).collect();
    let r = app.submit_batch(&app.admin_token, &too_many).await;
    assert_eq!(r.status, 422, "{}", r.text);
    app.stop().await;
}

/// A batch of one job with idempotency key `batch-k`, submitted once.
async fn keyed_batch(app: &TestApp) -> (Vec<Value>, Reply) {
    let keyed = vec![json!({"task_description": "k", "idempotency_key": "batch-k"})];
    let first = app.submit_batch(&app.admin_token, &keyed).await;
    assert_eq!(first.status, 201, "{}", first.text);
    (keyed, first)
}

#[tokio::test]
async fn batch_replay_with_the_same_key_returns_the_same_job() {
    let app = spawn_app().await;
    let (keyed, first) = keyed_batch(&app).await;
    let replay = app.submit_batch(&app.admin_token, &keyed).await;
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(replay.json["jobs"][0]["job_id"], first.json["jobs"][0]["job_id"]);
    app.stop().await;
}

#[tokio::test]
async fn batch_reusing_a_key_with_another_body_is_409_and_creates_nothing() {
    let app = spawn_app().await;
    keyed_batch(&app).await;
    let clash = [
        json!({"task_description": "new"}),
        json!({"task_description": "other", "idempotency_key": "batch-k"}),
    ];
    let r = app.submit_batch(&app.admin_token, &clash).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        job_count(&app).await,
        Some(1),
        "the refused batch created nothing"
    );
    app.stop().await;
}
