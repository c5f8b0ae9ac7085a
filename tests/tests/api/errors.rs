//! The contract's error shapes for bad request bodies: 413 over the body
//! limit, and 422 lists locating each problem of a submission. (401, 403,
//! 404 and 409 are checked with the routes that answer them.)

use crate::helpers::{body_validation_items, job_count, loc_starts_with};
use integration_tests::{spawn_app, spawn_app_with};
use serde_json::{json, Value};

#[tokio::test]
async fn body_over_the_limit_is_413_with_detail() {
    let app = spawn_app_with(&["--body-limit-bytes", "2048"]).await;
    let big = "x".repeat(10 * 1024);
    let r = app
        .submit_job(&app.admin_token, &json!({"task_description": big}))
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(
        r.json["detail"].is_string(),
        "413 body must be {{\"detail\": ...}}: {}",
        r.text
    );
    // Under the limit still works, and nothing was stored by the refusal.
    let r = app
        .submit_job(&app.admin_token, &json!({"task_description": "small"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(job_count(&app).await, Some(1), "the refused body stored nothing");
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_submission_is_422() {
    let app = spawn_app().await;
    let req = app
        .http
        .post(app.url("/api/jobs/submit"))
        .bearer_auth(&app.admin_token)
        .header("Content-Type", "application/json")
        .body("{\"task_description\": \"x\",");
    let r = app.send_request(req).await;
    assert_eq!(r.status, 422, "malformed JSON: {}", r.text);
    body_validation_items(&r);
    app.stop().await;
}

/// Submissions that break one rule each, with where the 422 must point.
fn invalid_submissions() -> Vec<(Value, [&'static str; 2])> {
    let workers = ["body", "required_workers"];
    let description = ["body", "task_description"];
    let priority = ["body", "priority"];
    vec![
        (json!({"task_description": "x", "required_workers": "x"}), workers),
        (json!({"required_workers": 1}), description),
        (json!({"task_description": "x", "required_workers": 0}), workers),
        (json!({"task_description": "x", "required_workers": 65}), workers),
        (json!({"task_description": "x", "priority": 10}), priority),
        (json!({"task_description": "x", "priority": -1}), priority),
        (json!({"task_description": ""}), description),
        (json!({"task_description": "y".repeat(10_001)}), description),
        (json!({"task_description": 5}), description),
        (
            json!({"task_description": "x", "labels": {"a": 1}}),
            ["body", "labels"],
        ),
    ]
}

#[tokio::test]
async fn invalid_submissions_are_422_in_the_contract_shape() {
    let app = spawn_app().await;
    for (body, loc) in invalid_submissions() {
        let r = app.submit_job(&app.admin_token, &body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        let items = body_validation_items(&r);
        assert!(
            items.iter().any(|i| loc_starts_with(&i["loc"], &loc)),
            "{body}: expected loc {loc:?}, got {}",
            r.text
        );
        if loc == ["body", "required_workers"] {
            assert_eq!(items[0]["loc"], json!(["body", "required_workers"]), "{}", r.text);
        }
    }
    assert_eq!(job_count(&app).await, Some(0), "no invalid submission was stored");
    app.stop().await;
}

#[tokio::test]
async fn submissions_at_the_boundaries_are_accepted() {
    let app = spawn_app().await;
    for body in [
        json!({"task_description": "z".repeat(10_000), "required_workers": 64, "priority": 9}),
        json!({"task_description": "z", "required_workers": 1, "priority": 0}),
    ] {
        let r = app.submit_job(&app.admin_token, &body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    app.stop().await;
}
