//! What the dashboard at `/ui` relies on: its files served under a strict
//! Content-Security-Policy; the overview's timeline (queue depth sampled by
//! the reaper's leader, kept across a restart) and live stream; the job
//! search with its filters and count, and bulk cancel.

use crate::helpers::{register_workers, submit_ok};
use controller::ui::{ASSETS, CONTENT_SECURITY_POLICY};
use integration_tests::{spawn_app, Reply, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn every_ui_response_carries_the_strict_policy() {
    let app = spawn_app().await;
    let mut paths: Vec<String> = ASSETS.iter().map(|a| format!("/ui/{}", a.name)).collect();
    paths.extend(["/ui".to_owned(), "/ui/".to_owned(), "/ui/missing.js".to_owned()]);
    for path in &paths {
        let r = app.get_open(path).await;
        let expected = if path.ends_with("missing.js") { 404 } else { 200 };
        assert_eq!(r.status, expected, "{path}: {}", r.text);
        assert_eq!(
            r.header("content-security-policy"),
            CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{path}");
    }
    let policy = CONTENT_SECURITY_POLICY;
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{policy}"
    );
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing from {policy}");
    }
    let page = app.get_open("/ui/").await;
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{:?}",
        page.headers
    );
    let script = app.get_open("/ui/app.js").await;
    assert!(
        script.header("content-type").starts_with("text/javascript"),
        "{:?}",
        script.headers
    );
    let missing = app.get_open("/ui/missing.js").await;
    assert_eq!(missing.json, json!({"detail": "Not Found"}));
    app.stop().await;
}

async fn timeline(app: &TestApp, token: &str, query: &str) -> Reply {
    app.send(
        Method::GET,
        &format!("/api/stats/timeline{query}"),
        Some(token),
        None,
    )
    .await
}

/// The highest queue depth any minute of the timeline shows.
fn peak_depth(r: &Reply) -> i64 {
    r.json["points"]
        .as_array()
        .map(|points| {
            points
                .iter()
                .filter_map(|p| p["queue_depth"].as_i64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn the_timeline_has_every_minute_and_is_refused_without_supervisor_read() {
    let app = spawn_app().await;
    let r = timeline(&app, &app.admin_token, "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let points = r.json["points"].as_array().expect("points");
    assert_eq!(points.len(), 60, "{}", r.text);
    assert!(
        points.iter().all(|p| p["completed"] == 0 && p["failed"] == 0),
        "{}",
        r.text
    );
    let five = timeline(&app, &app.admin_token, "?minutes=5").await;
    assert_eq!(five.json["points"].as_array().map(Vec::len), Some(5));
    for bad in ["?minutes=0", "?minutes=1441", "?minutes=x"] {
        let r = timeline(&app, &app.admin_token, bad).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert_eq!(
            r.json["detail"][0]["loc"],
            json!(["query", "minutes"]),
            "{}",
            r.text
        );
    }
    let reader = app.user_token("reader", &["jobs:read"]).await;
    let refused = timeline(&app, &reader, "").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    app.stop().await;
}

#[tokio::test]
async fn queue_depth_history_is_sampled_and_survives_a_restart() {
    let app = spawn_app().await;
    for n in 0..3 {
        submit_ok(&app, &app.admin_token, &format!("waiting {n}")).await;
    }
    let started = Instant::now();
    loop {
        let r = timeline(&app, &app.admin_token, "").await;
        if peak_depth(&r) >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no sample of 3 waiting jobs: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let app = app.restart(Duration::from_millis(100), &[]).await;
    let r = timeline(&app, &app.admin_token, "").await;
    assert!(
        peak_depth(&r) >= 3,
        "the sample is gone after a restart: {}",
        r.text
    );
    app.stop().await;
}

#[tokio::test]
async fn the_overview_stream_sends_the_fleet_and_the_timeline() {
    let app = spawn_app().await;
    register_workers(&app, &["w-o1", "w-o2"]).await;
    let resp = app
        .http
        .get(app.url("/api/stats/stream"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("the stream");
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") && Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await;
        match chunk {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    assert!(text.contains("event: overview\n"), "{text}");
    assert!(
        text.contains("retry: 500\n"),
        "the client is told when to reconnect: {text}"
    );
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let overview: Value = serde_json::from_str(data).expect("JSON data");
    assert_eq!(overview["fleet"]["workers_by_status"]["idle"], 2, "{overview}");
    assert_eq!(overview["timeline"]["points"].as_array().map(Vec::len), Some(60));
    app.stop().await;
}

async fn search(app: &TestApp, token: &str, query: &str) -> Reply {
    app.send(
        Method::GET,
        &format!("/api/jobs/search?{query}"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn search_filters_by_user_label_status_and_time_and_counts() {
    let app = spawn_app().await;
    let alice = app.user_token("alice", &["jobs:write"]).await;
    let labelled = json!({"task_description": "nightly", "labels": {"team": "vfx"}});
    let r = app.submit_job(&alice, &labelled).await;
    assert_eq!(r.status, 201, "{}", r.text);
    submit_ok(&app, &alice, "plain").await;
    submit_ok(&app, &app.admin_token, "admin's").await;
    let all = search(&app, &app.admin_token, "").await;
    assert_eq!(all.json["total"], 3, "{}", all.text);
    let by_user = search(&app, &app.admin_token, "user=alice").await;
    assert_eq!(by_user.json["total"], 2, "{}", by_user.text);
    let by_label = search(&app, &app.admin_token, "label=team%3Dvfx").await;
    assert_eq!(by_label.json["total"], 1, "{}", by_label.text);
    assert_eq!(by_label.json["jobs"][0]["task_description"], "nightly");
    let future = search(&app, &app.admin_token, "since=2999-01-01T00:00:00Z").await;
    assert_eq!(future.json["total"], 0, "{}", future.text);
    let past = search(
        &app,
        &app.admin_token,
        "until=2999-01-01T00:00:00Z&status=cancelled",
    )
    .await;
    assert_eq!(past.json["total"], 0, "{}", past.text);
    let own = search(&app, &alice, "").await;
    assert_eq!(own.json["total"], 2, "alice sees only her own: {}", own.text);
    let paged = search(&app, &app.admin_token, "limit=2").await;
    assert_eq!(paged.json["jobs"].as_array().map(Vec::len), Some(2));
    let cursor = paged.json["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let rest = search(&app, &app.admin_token, &format!("limit=2&cursor={cursor}")).await;
    assert_eq!(
        rest.json["jobs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        rest.text
    );
    app.stop().await;
}

#[tokio::test]
async fn search_refuses_bad_filters_with_422() {
    let app = spawn_app().await;
    for (bad, field) in [
        ("label=novalue", "label"),
        ("since=yesterday", "since"),
        ("status=", "status"),
        ("limit=0", "limit"),
    ] {
        let r = search(&app, &app.admin_token, bad).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert_eq!(
            r.json["detail"][0]["loc"],
            json!(["query", field]),
            "{bad}: {}",
            r.text
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn bulk_cancel_cancels_own_jobs_and_reports_the_rest() {
    let app = spawn_app().await;
    let alice = app.user_token("alice", &["jobs:write"]).await;
    let mine = submit_ok(&app, &alice, "mine").await;
    let theirs = submit_ok(&app, &app.admin_token, "admin's").await;
    let body = json!({"job_ids": [mine, theirs]});
    let r = app
        .send(Method::POST, "/api/jobs/cancel_batch", Some(&alice), Some(&body))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["cancelled"], json!([mine]), "{}", r.text);
    assert_eq!(r.json["refused"][0]["job_id"], json!(theirs), "{}", r.text);
    assert_eq!(r.json["refused"][0]["detail"], format!("Job {theirs} not found"));
    let admin_job = app.get_job(&app.admin_token, theirs).await;
    assert_ne!(admin_job.json["status"], "cancelled", "{}", admin_job.text);
    let again = app
        .send(
            Method::POST,
            "/api/jobs/cancel_batch",
            Some(&alice),
            Some(&json!({"job_ids": [mine]})),
        )
        .await;
    assert_eq!(again.json["cancelled"], json!([]), "{}", again.text);
    assert!(
        again.json["refused"][0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled"),
        "{}",
        again.text
    );
    let empty = app
        .send(
            Method::POST,
            "/api/jobs/cancel_batch",
            Some(&alice),
            Some(&json!({"job_ids": []})),
        )
        .await;
    assert_eq!(empty.status, 422, "{}", empty.text);
    app.stop().await;
}

#[tokio::test]
async fn allocations_are_listed_for_their_owner_only() {
    let app = spawn_app().await;
    register_workers(&app, &["w-a1"]).await;
    let held = crate::helpers::allocate_ok(&app, &app.admin_token, 1).await;
    let list = app
        .send(
            Method::GET,
            "/api/resources/allocations",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(
        list.json["allocations"][0]["allocation_id"], held,
        "{}",
        list.text
    );
    let other = app.user_token("bob", &["resources:read"]).await;
    let theirs = app
        .send(Method::GET, "/api/resources/allocations", Some(&other), None)
        .await;
    assert_eq!(theirs.json, json!({"allocations": []}), "{}", theirs.text);
    app.stop().await;
}
