//! The API over HTTPS: a client that trusts the controller's CA logs in; one
//! that trusts another CA is refused with a certificate error; plain HTTP
//! on the HTTPS port gets a clear 400; a slow handshake is cut off; and
//! the controller will not start with neither a certificate nor an explicit
//! `--insecure-http`.

use integration_tests::{fresh_database, spawn_https_app, test_config, TestTls, ADMIN_USER};
use orchestrator_shared::tls::{tls_failure, TlsFailure};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the controller answers a plain-HTTP request on its HTTPS port.
const PLAIN_HTTP_DETAIL: &str = "this port speaks HTTPS; use https://";

fn test_tls() -> TestTls {
    TestTls::new(&["localhost", "127.0.0.1"]).unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test]
async fn a_client_trusting_the_ca_logs_in_over_https() {
    let tls = test_tls();
    let app = spawn_https_app(&tls, &[]).await;
    assert!(app.base_url.starts_with("https://"), "{}", app.base_url);
    let me = app.me(&app.admin_token).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["username"], ADMIN_USER, "{}", me.text);
    app.stop().await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused_with_a_certificate_error() {
    let tls = test_tls();
    let app = spawn_https_app(&tls, &[]).await;
    let stranger = test_tls().client().unwrap_or_else(|e| panic!("{e:#}"));
    let err = stranger
        .get(app.url("/healthz"))
        .send()
        .await
        .err()
        .unwrap_or_else(|| panic!("a client trusting another CA was answered"));
    assert_eq!(
        tls_failure(&err),
        Some(TlsFailure::Untrusted(
            "it is signed by a CA this client does not trust".into()
        )),
        "{err:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_https_port_gets_a_clear_400() {
    let tls = test_tls();
    let app = spawn_https_app(&tls, &[]).await;
    let plain = app.base_url.replace("https://", "http://");
    let resp = reqwest::get(format!("{plain}/api/auth/me"))
        .await
        .unwrap_or_else(|e| panic!("plain HTTP got no answer: {e}"));
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["detail"], PLAIN_HTTP_DETAIL, "{body}");
    // The port still serves HTTPS afterwards.
    assert_eq!(app.me(&app.admin_token).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_cut_off() {
    let tls = test_tls();
    let app = spawn_https_app(&tls, &["--header-read-timeout-seconds", "1"]).await;
    let addr = app.base_url.replace("https://localhost", "127.0.0.1");
    for opening in [&b""[..], &[0x16, 0x03, 0x01][..]] {
        let mut stream = TcpStream::connect(&addr).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(opening).await.unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let mut sink = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "a client that sent {opening:?} was not disconnected: {closed:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "closed too early"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_controller_will_not_start_without_tls_or_insecure_http() {
    let test_db = fresh_database().await;
    let mut config = test_config(&test_db.url, &[]);
    config.tls.insecure_http = false;
    let err = controller::app::App::build(config)
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_else(|| panic!("the controller started with neither TLS nor --insecure-http"));
    assert!(
        err.contains("--tls-cert-file") && err.contains("--insecure-http"),
        "{err}"
    );
}
