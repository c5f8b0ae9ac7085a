//! The limits at the HTTP edge (issue 13): login guesses are slowed per
//! username and client, so an attacker cannot lock the owner out, and
//! `X-Forwarded-For` is believed only from a trusted proxy; `/metrics` keeps
//! a fixed label set whatever methods clients invent; slow and lying clients
//! are cut off instead of holding connections.

use integration_tests::{spawn_app, spawn_app_with, TestApp, ADMIN_PASSWORD, ADMIN_USER, USER_PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The address the test app listens on, and so the source of a "proxy"
/// in front of it.
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// Another client on the loopback network: the one guessing passwords.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A third client: the account's owner.
const OWNER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Guesses `username`'s password `times` from `source` (forwarded for
/// `forwarded_for` if given); answers the statuses, each a 401 or a 429.
async fn guess(
    app: &TestApp,
    source: IpAddr,
    forwarded_for: Option<&str>,
    username: &str,
    times: usize,
) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(times);
    for _ in 0..times {
        let r = app
            .login_from(source, forwarded_for, username, "not-the-password")
            .await;
        assert!(matches!(r.status, 401 | 429), "{}: {}", r.status, r.text);
        statuses.push(r.status);
    }
    statuses
}

#[tokio::test]
async fn the_owner_logs_in_from_a_fresh_client_after_50_wrong_guesses_from_another() {
    let app = spawn_app().await;
    let statuses = guess(&app, ATTACKER, None, ADMIN_USER, 50).await;
    assert!(statuses.contains(&429), "the guesser is slowed: {statuses:?}");
    let r = app.login_from(OWNER, None, ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(r.status, 200, "the owner is not locked out: {}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn usernames_differing_in_case_are_limited_apart() {
    let app = spawn_app().await;
    let body = json!({"username": "ADMIN", "password": USER_PASSWORD, "scopes": []});
    let created = app.create_user(&app.admin_token, &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let statuses = guess(&app, ATTACKER, None, ADMIN_USER, 15).await;
    assert!(statuses.contains(&429), "admin's guesser is slowed: {statuses:?}");
    let r = app.login_from(ATTACKER, None, "ADMIN", USER_PASSWORD).await;
    assert_eq!(r.status, 200, "ADMIN does not share admin's limit: {}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.1/32"]).await;
    // Behind the proxy every client shares its address; the header tells
    // the guesser and the owner apart.
    let statuses = guess(&app, PROXY, Some("203.0.113.9"), ADMIN_USER, 15).await;
    assert!(statuses.contains(&429), "the guesser is slowed: {statuses:?}");
    let r = app
        .login_from(PROXY, Some("198.51.100.7"), ADMIN_USER, ADMIN_PASSWORD)
        .await;
    assert_eq!(r.status, 200, "the owner behind the proxy: {}", r.text);
    // From any other peer the header is ignored: a new one on every guess
    // does not make the guesser a new client.
    let mut statuses = Vec::new();
    for i in 0..15 {
        let forwarded_for = format!("192.0.2.{i}");
        let r = app
            .login_from(ATTACKER, Some(&forwarded_for), ADMIN_USER, "not-the-password")
            .await;
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&429),
        "a spoofed header is ignored: {statuses:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn made_up_methods_are_counted_as_other_in_metrics() {
    let app = spawn_app().await;
    let name = format!("INVENTED{}", uuid::Uuid::new_v4().simple()).to_uppercase();
    let method = Method::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let r = app.send(method, "/healthz", None, None).await;
    assert_eq!(r.status, 405, "{}", r.text);
    let path = format!("/invented-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(app.get_open(&path).await.status, 404);
    let metrics = app.get_open("/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    for invented in [&name, &path] {
        assert!(
            !metrics.text.contains(invented.as_str()),
            "{invented} became a label: {}",
            metrics.text
        );
    }
    assert!(metrics.text.contains(r#"method="other""#), "{}", metrics.text);
    assert!(metrics.text.contains(r#"route="unmatched""#), "{}", metrics.text);
    app.stop().await;
}

/// Reads from `stream` until the server closes it (or resets it) or
/// `within` has passed; answers what arrived and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (received, false),
            Ok(Ok(0) | Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends one more header line every `every` until the server hangs up or
/// `limit` passes; answers how long the server kept the connection.
async fn dribble_headers(stream: &mut TcpStream, every: Duration, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let mut line = 0;
    while started.elapsed() < limit {
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {} // a response to the cut-off request, if any
            Err(_) => {
                line += 1;
                let header = format!("x-drip-{line}: still here\r\n");
                if stream.write_all(header.as_bytes()).await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test]
async fn a_client_dribbling_headers_is_cut_off_after_the_header_read_timeout() {
    let app = spawn_app_with(&["--header-read-timeout-seconds", "1"]).await;
    let mut stream = app.connect_raw().await;
    let head = stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n").await;
    assert!(head.is_ok(), "{head:?}");
    let held = dribble_headers(&mut stream, Duration::from_millis(200), Duration::from_secs(8)).await;
    assert!(
        held.is_some_and(|held| held < Duration::from_secs(3)),
        "a 1 s header timeout held the connection for {held:?}"
    );
    app.stop().await;
}

/// The body of an HTTP response that arrived whole, as JSON.
fn response_json(raw: &[u8]) -> Value {
    let text = String::from_utf8_lossy(raw);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_at_once() {
    let app = spawn_app().await;
    let mut stream = app.connect_raw().await;
    let request = b"POST /api/auth/login HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
                    content-length: 10000000000\r\n\r\n{";
    let sent = stream.write_all(request).await;
    assert!(sent.is_ok(), "{sent:?}");
    let started = Instant::now();
    let (raw, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "after {:?}: {text}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        response_json(&raw),
        json!({"detail": "Request body is larger than the limit of 1048576 bytes"}),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let app = spawn_app_with(&["--max-connections", "2"]).await;
    let held = [app.connect_raw().await, app.connect_raw().await];
    let mut waiting = app.connect_raw().await;
    let sent = waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await;
    assert!(sent.is_ok(), "{sent:?}");
    let (early, _) = read_until_closed(&mut waiting, Duration::from_secs(1)).await;
    assert!(
        early.is_empty(),
        "answered beyond the cap: {}",
        String::from_utf8_lossy(&early)
    );
    drop(held);
    let (raw, closed) = read_until_closed(&mut waiting, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        closed && text.starts_with("HTTP/1.1 200"),
        "once a slot is free: {text}"
    );
    app.stop().await;
}
