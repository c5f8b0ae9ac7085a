//! Per-job resource limits (`memory_mb`, `cpu`, `max_pids`) and agents'
//! offers and isolation reports: stored at submission and registration,
//! shown on every job and worker, refused out of range with nothing
//! stored, and handed to the agent in the claim's `work`.

use crate::helpers::{assert_job_shape, assert_worker_shape, job_count, job_id, validation_items};
use integration_tests::{Reply, TestApp};
use serde_json::{json, Value};

/// The three limits as a JSON object, as a claim's `work.limits` shows them.
fn limits(memory_mb: Value, cpu: Value, max_pids: Value) -> Value {
    json!({"memory_mb": memory_mb, "cpu": cpu, "max_pids": max_pids})
}

/// The three limit fields of a job body.
fn limits_of(job: &Value) -> Value {
    limits(
        job["memory_mb"].clone(),
        job["cpu"].clone(),
        job["max_pids"].clone(),
    )
}

/// Asserts `r` is the contract's 422 naming `["body", field]`.
fn assert_invalid_field(r: &Reply, field: &str, what: &str) {
    assert_eq!(r.status, 422, "{what}: {}", r.text);
    let named = validation_items(r)
        .iter()
        .any(|item| item["loc"] == json!(["body", field]));
    assert!(named, "{what}: the 422 must name {field}: {}", r.text);
}

/// Issues a credential for `worker_id` and registers it with `body`
/// (`worker_id`, `hostname` and `capacity` filled in); answers the token
/// and the reply.
async fn register(app: &TestApp, worker_id: &str, mut body: Value) -> (String, Reply) {
    let token = app.agent_credential(worker_id).await;
    body["worker_id"] = json!(worker_id);
    body["hostname"] = json!("node-1");
    body["capacity"] = json!(2);
    let r = app.register_agent(&token, &body).await;
    (token, r)
}

#[tokio::test]
async fn limits_are_stored_and_shown_and_unset_ones_are_null() {
    let app = integration_tests::spawn_app().await;
    let admin = &app.admin_token;
    let body = json!({"task_description": "bounded", "memory_mb": 512, "cpu": 0.5, "max_pids": 64});
    let r = app.submit_job(admin, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_job_shape(&r.json);
    let expected = limits(json!(512), json!(0.5), json!(64));
    assert_eq!(limits_of(&r.json), expected, "the submit answer: {}", r.text);
    let got = app.get_job(admin, job_id(&r.json)).await;
    let job = assert_job_shape(&got.json);
    assert_eq!(limits_of(&got.json), expected, "GET: {}", got.text);
    assert_eq!(job.limits.cpu, Some(0.5), "0.5 CPU round-trips exactly");

    let plain = app
        .submit_job(admin, &json!({"task_description": "unbounded"}))
        .await;
    assert_eq!(plain.status, 201, "{}", plain.text);
    let got = app.get_job(admin, job_id(&plain.json)).await;
    assert_job_shape(&got.json);
    assert_eq!(
        limits_of(&got.json),
        limits(Value::Null, Value::Null, Value::Null)
    );
    for key in ["memory_mb", "cpu", "max_pids"] {
        assert!(got.json.get(key).is_some(), "{key} shown as null: {}", got.text);
    }
    let listed = app.list_jobs(admin, &[]).await;
    let first = &listed.json["jobs"][1];
    assert_eq!(limits_of(first), expected, "the listing too: {}", listed.text);
    app.stop().await;
}

#[tokio::test]
async fn each_limit_out_of_range_or_not_a_number_is_422_and_stores_nothing() {
    let app = integration_tests::spawn_app().await;
    let cases = [
        ("memory_mb", json!(3)),
        ("memory_mb", json!(1_048_577)),
        ("memory_mb", json!("512")),
        ("cpu", json!(0)),
        ("cpu", json!(2000)),
        ("cpu", json!("half")),
        ("max_pids", json!(0)),
        ("max_pids", json!(4_194_305)),
        ("max_pids", json!(1.5)),
    ];
    for (field, value) in cases {
        let mut body = json!({"task_description": "bad limits"});
        body[field] = value.clone();
        let r = app.submit_job(&app.admin_token, &body).await;
        assert_invalid_field(&r, field, &format!("{field} = {value}"));
    }
    let r = app
        .submit_batch(
            &app.admin_token,
            &[json!({"task_description": "x", "cpu": 0.001})],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["detail"][0]["loc"], json!(["body", "jobs", "0", "cpu"]));
    assert_eq!(job_count(&app).await, Some(0), "nothing stored");
    app.stop().await;
}

#[tokio::test]
async fn a_batch_stores_each_jobs_own_limits() {
    let app = integration_tests::spawn_app().await;
    let batch = [
        json!({"task_description": "a", "memory_mb": 4}),
        json!({"task_description": "b"}),
        json!({"task_description": "c", "cpu": 1024, "max_pids": 4_194_304}),
    ];
    let r = app.submit_batch(&app.admin_token, &batch).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let expected = [
        limits(json!(4), Value::Null, Value::Null),
        limits(Value::Null, Value::Null, Value::Null),
        limits(Value::Null, json!(1024.0), json!(4_194_304)),
    ];
    let created = r.json["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(created.len(), 3, "{}", r.text);
    for (job, want) in created.iter().zip(&expected) {
        let got = app.get_job(&app.admin_token, job_id(job)).await;
        assert_eq!(&limits_of(&got.json), want, "{}", got.text);
    }
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_reused_with_other_limits_is_409() {
    let app = integration_tests::spawn_app().await;
    let admin = &app.admin_token;
    let body =
        json!({"task_description": "keyed", "idempotency_key": "k-limits", "memory_mb": 256, "cpu": 0.25});
    let first = app.submit_job(admin, &body).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = app.submit_job(admin, &body).await;
    assert_eq!(again.status, 200, "the same limits replay: {}", again.text);
    assert_eq!(job_id(&again.json), job_id(&first.json));
    let mut other = body.clone();
    other["memory_mb"] = json!(512);
    let r = app.submit_job(admin, &other).await;
    assert_eq!(r.status, 409, "other limits: {}", r.text);
    let mut none = body;
    if let Some(fields) = none.as_object_mut() {
        fields.remove("cpu");
    }
    let r = app.submit_job(admin, &none).await;
    assert_eq!(r.status, 409, "a limit left out: {}", r.text);
    let plain = json!({"task_description": "keyed", "idempotency_key": "k-plain"});
    assert_eq!(app.submit_job(admin, &plain).await.status, 201);
    assert_eq!(
        app.submit_job(admin, &plain).await.status,
        200,
        "no limits replays"
    );
    assert_eq!(job_count(&app).await, Some(2));
    app.stop().await;
}

#[tokio::test]
async fn a_registration_shows_its_resources_and_isolation() {
    let app = integration_tests::spawn_app().await;
    let isolation = json!({"job_user": "orchestrator-job", "cgroup": "v1", "disabled": []});
    let offer = limits(json!(16384), json!(4.5), Value::Null);
    let body = json!({"resources": offer, "isolation": isolation});
    let (token, r) = register(&app, "w-iso", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["resources"], offer, "the registration answer: {}", r.text);
    assert_eq!(r.json["isolation"], isolation, "{}", r.text);
    let got = app.get_worker(&app.admin_token, "w-iso").await;
    assert_worker_shape(&got.json);
    assert_eq!(got.json["resources"], offer, "{}", got.text);
    assert_eq!(got.json["isolation"], isolation, "{}", got.text);
    let listed = app.list_workers(&app.admin_token, &[]).await;
    assert_eq!(
        listed.json["workers"][0]["isolation"], isolation,
        "{}",
        listed.text
    );

    // An agent that predates the report registers again: both are cleared.
    let old = json!({"worker_id": "w-iso", "hostname": "node-1", "capacity": 2});
    let r = app.register_agent(&token, &old).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = app.get_worker(&app.admin_token, "w-iso").await;
    assert_worker_shape(&got.json);
    assert_eq!(got.json["isolation"], Value::Null, "{}", got.text);
    assert_eq!(
        got.json["resources"],
        limits(Value::Null, Value::Null, Value::Null)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_registration_with_a_bad_isolation_report_or_offer_is_422() {
    let app = integration_tests::spawn_app().await;
    let long = "x".repeat(257);
    let bodies = [
        (
            "isolation",
            json!({"isolation": {"job_user": long, "cgroup": "v2", "disabled": []}}),
        ),
        ("isolation", json!({"isolation": {"disabled": vec!["off"; 17]}})),
        ("isolation", json!({"isolation": {"cgroup": "v1\u{0}"}})),
        ("memory_mb", json!({"resources": {"memory_mb": 3}})),
        ("cpu", json!({"resources": {"cpu": 0}})),
    ];
    for (field, body) in bodies {
        let (_, r) = register(&app, "w-bad", body.clone()).await;
        assert_invalid_field(&r, field, &format!("{body}"));
    }
    let r = app.get_worker(&app.admin_token, "w-bad").await;
    assert_eq!(r.status, 404, "nothing registered: {}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn the_claim_hands_the_agent_the_jobs_limits() {
    let app = integration_tests::spawn_app().await;
    let (token, r) = register(&app, "w-run", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let claim_of = |job| json!({"worker_id": "w-run", "job_id": job, "attempt": 1, "shard_index": 0, "redelivered": false});
    let bounded = json!({"task_description": "bounded", "memory_mb": 2048, "cpu": 0.125, "max_pids": 100});
    let job = job_id(&app.submit_job(&app.admin_token, &bounded).await.json);
    let r = app.claim_shard(&token, &claim_of(job)).await;
    assert_eq!(r.json["decision"], "run", "{}", r.text);
    let expected = limits(json!(2048), json!(0.125), json!(100));
    assert_eq!(r.json["work"]["limits"], expected, "{}", r.text);

    let plain = json!({"task_description": "unbounded"});
    let job = job_id(&app.submit_job(&app.admin_token, &plain).await.json);
    let r = app.claim_shard(&token, &claim_of(job)).await;
    assert_eq!(r.json["decision"], "run", "{}", r.text);
    let none = limits(Value::Null, Value::Null, Value::Null);
    assert_eq!(r.json["work"]["limits"], none, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn the_database_refuses_limits_outside_the_contract() {
    let app = integration_tests::spawn_app().await;
    let job = job_id(
        &app.submit_job(&app.admin_token, &json!({"task_description": "x"}))
            .await
            .json,
    );
    let client = app.db.client().await.unwrap();
    for set in ["memory_mb = 3", "cpu_millis = 9", "max_pids = 0"] {
        let sql = format!("UPDATE jobs SET {set} WHERE job_id = $1");
        let refused = client.execute(sql.as_str(), &[&job]).await;
        assert!(refused.is_err(), "{set} must break a CHECK");
    }
    app.register_worker("w-db").await;
    let refused = client
        .execute(
            "UPDATE workers SET isolation = '[]' WHERE worker_id = 'w-db'",
            &[],
        )
        .await;
    assert!(refused.is_err(), "isolation is an object or null");
    app.stop().await;
}
