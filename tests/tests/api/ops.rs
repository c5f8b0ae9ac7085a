//! The unauthenticated operational routes: liveness, readiness, Prometheus
//! metrics, the OpenAPI document and its HTML page.

use integration_tests::{spawn_app, Reply, TestApp};
use std::time::{Duration, Instant};

#[tokio::test]
async fn healthz_is_200() {
    let app = spawn_app().await;
    let r = app.get_open("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.stop().await;
}

/// How long a fresh controller may take to report ready: its broker link
/// comes up in the background after start, and a failed first attempt is
/// retried after at most 5 s.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Asks `/readyz` until it answers 200 or [`READY_WITHIN`] has passed;
/// answers the last reply. Every answer, ready or not, must be JSON.
async fn readyz_once_connected(app: &TestApp) -> Reply {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let r = app.get_open("/readyz").await;
        assert!(r.json.is_object(), "readyz answers JSON: {}", r.text);
        if r.status == 200 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readyz_answers_json_and_200_once_connected() {
    let app = spawn_app().await;
    let r = readyz_once_connected(&app).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_counting_requests() {
    let app = spawn_app().await;
    // Some traffic, then the counters.
    assert_eq!(app.me(&app.admin_token).await.status, 200);
    let r = app.get_open("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let content_type = r.header("content-type");
    assert!(
        content_type.starts_with("text/plain"),
        "Prometheus text: {content_type}"
    );
    assert!(r.text.contains("http_requests_total"), "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_is_served() {
    let app = spawn_app().await;
    let r = app.get_open("/api/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json["openapi"].is_string(),
        "openapi key: {}",
        &r.text[..r.text.len().min(300)]
    );
    assert!(r.json["paths"].is_object(), "paths object");
    app.stop().await;
}

#[tokio::test]
async fn docs_page_is_html() {
    let app = spawn_app().await;
    let mut docs = app.get_open("/docs").await;
    if docs.status != 200 {
        docs = app.get_open("/docs/").await;
    }
    assert_eq!(docs.status, 200, "docs page: {}", docs.text);
    let content_type = docs.header("content-type");
    assert!(
        content_type.starts_with("text/html"),
        "docs content type {content_type}"
    );
    assert!(docs.text.to_lowercase().contains("<html"), "{}", docs.text);
    app.stop().await;
}
