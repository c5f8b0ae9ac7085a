//! `POST /api/agents/output` and `GET /api/jobs/{job_id}/output` without a
//! real agent: pieces of a running shard stored in order, a retried piece
//! changing nothing, a piece from an agent not holding the shard refused,
//! byte ranges and their 422s, and the pieces gone with their job.

use super::helpers::{submit_ok, wait_queued};
use base64::Engine as _;
use integration_tests::{spawn_app_with, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Registers `worker_id`, submits a job and claims its shard as that
/// worker (so it holds it running); answers the agent token and the job.
async fn running_job(app: &TestApp, worker_id: &str) -> (String, Uuid) {
    let token = app.agent_credential(worker_id).await;
    let body = json!({"worker_id": worker_id, "hostname": "h", "capacity": 8});
    assert_eq!(app.register_agent(&token, &body).await.status, 200);
    let job = submit_ok(app, &app.admin_token, "streams output").await;
    wait_queued(app, job).await;
    let claim =
        json!({"worker_id": worker_id, "job_id": job, "attempt": 1, "shard_index": 0, "redelivered": false});
    let r = app.claim_shard(&token, &claim).await;
    assert_eq!(r.json["decision"], "run", "{}", r.text);
    (token, job)
}

/// A piece of shard 0 of attempt 1 of `job` from `worker_id`.
fn piece(worker_id: &str, job: Uuid, seq: i64, stream: &str, text: &str) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(text);
    json!({"worker_id": worker_id, "job_id": job, "attempt": 1, "shard_index": 0,
           "seq": seq, "stream": stream, "data": data})
}

#[tokio::test]
async fn pieces_are_stored_once_in_order_and_read_whole_or_by_range() {
    let app = spawn_app_with(&[]).await;
    let (token, job) = running_job(&app, "out-1").await;
    for (seq, stream, text) in [
        (1, "stdout", "world\n"),
        (0, "stdout", "hello "),
        (2, "stderr", "oops\n"),
    ] {
        let r = app
            .post_output(&token, &piece("out-1", job, seq, stream, text))
            .await;
        assert_eq!(
            (r.status, r.json["stored"].clone()),
            (200, json!(true)),
            "{}",
            r.text
        );
    }
    let again = app
        .post_output(&token, &piece("out-1", job, 1, "stdout", "something else"))
        .await;
    assert_eq!(
        (again.status, again.json["stored"].clone()),
        (200, json!(false)),
        "{}",
        again.text
    );

    let out = app.job_output(&app.admin_token, job).await;
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(
        out.json["stdout"], "hello world\n",
        "in order, the retry changed nothing"
    );
    assert_eq!(out.json["stderr"], "oops\n");
    let counts = (
        &out.json["stdout_bytes"],
        &out.json["stderr_bytes"],
        &out.json["attempt"],
        &out.json["shard"],
    );
    assert_eq!(counts, (&json!(12), &json!(5), &json!(1), &json!(0)));
    assert_eq!(out.json["truncated"], false);
    app.stop().await;
}

#[tokio::test]
async fn byte_ranges_are_served_and_bad_query_values_are_422() {
    let app = spawn_app_with(&[]).await;
    let (token, job) = running_job(&app, "out-6").await;
    let r = app
        .post_output(&token, &piece("out-6", job, 0, "stdout", "hello world\n"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let range = app
        .job_output_with(&app.admin_token, job, "offset=6&limit=5")
        .await;
    assert_eq!(range.status, 200, "{}", range.text);
    assert_eq!(
        (range.json["stdout"].clone(), range.json["stderr"].clone()),
        (json!("world"), json!(""))
    );
    assert_eq!(
        range.json["stdout_bytes"], 12,
        "the whole length, whatever the range"
    );
    for bad in [
        "offset=",
        "limit=",
        "shard=",
        "limit=0",
        "offset=-1",
        "shard=64",
        "shard=x",
    ] {
        let r = app.job_output_with(&app.admin_token, job, bad).await;
        assert_eq!(r.status, 422, "?{bad}: {}", r.text);
    }
    for bad in ["shard=", "shard=99"] {
        let r = app
            .get(&format!("/api/jobs/{job}/output/stream?{bad}"), &app.admin_token)
            .await;
        assert_eq!(r.status(), 422, "stream ?{bad}");
    }
    let missing = app
        .get(
            &format!("/api/jobs/{}/output/stream", Uuid::new_v4()),
            &app.admin_token,
        )
        .await;
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn a_range_across_several_pieces_is_cut_at_the_right_bytes() {
    let app = spawn_app_with(&[]).await;
    let (token, job) = running_job(&app, "out-8").await;
    for (seq, text) in [(0, "abc"), (1, "def"), (2, "ghi")] {
        let r = app
            .post_output(&token, &piece("out-8", job, seq, "stdout", text))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let e = app
        .post_output(&token, &piece("out-8", job, 3, "stderr", "oops"))
        .await;
    assert_eq!(e.status, 200, "{}", e.text);
    for (query, stdout, stderr) in [
        ("offset=2&limit=5", "cdefg", "ps"),
        ("offset=3&limit=3", "def", "s"),
        ("offset=0&limit=1", "a", "o"),
        ("offset=8", "i", ""),
        ("offset=9", "", ""),
        ("offset=4000000000&limit=10", "", ""),
        ("offset=1", "bcdefghi", "ops"),
    ] {
        let r = app.job_output_with(&app.admin_token, job, query).await;
        assert_eq!(r.status, 200, "?{query}: {}", r.text);
        assert_eq!(
            (r.json["stdout"].clone(), r.json["stderr"].clone()),
            (json!(stdout), json!(stderr)),
            "?{query}"
        );
        assert_eq!(
            (r.json["stdout_bytes"].clone(), r.json["stderr_bytes"].clone()),
            (json!(9), json!(4))
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_piece_from_an_agent_not_holding_the_shard_is_refused_and_bad_pieces_are_422() {
    let app = spawn_app_with(&[]).await;
    let (token, job) = running_job(&app, "out-2").await;
    let other = app.agent_credential("out-3").await;
    let body = json!({"worker_id": "out-3", "hostname": "h", "capacity": 8});
    assert_eq!(app.register_agent(&other, &body).await.status, 200);
    let r = app
        .post_output(&other, &piece("out-3", job, 0, "stdout", "forged"))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = app
        .post_output(&other, &piece("out-2", job, 0, "stdout", "forged"))
        .await;
    assert_eq!(r.status, 403, "another worker's name: {}", r.text);
    let mut bad = piece("out-2", job, 0, "stdout", "x");
    bad["data"] = json!("not base64!");
    assert_eq!(app.post_output(&token, &bad).await.status, 422);
    assert_eq!(app.post_output(&token, &json!([1, 2])).await.status, 422);
    let out = app.job_output(&app.admin_token, job).await;
    assert_eq!(
        (out.json["stdout"].clone(), out.json["stdout_bytes"].clone()),
        (Value::Null, json!(0))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_shards_stored_output_stops_at_the_controllers_cap() {
    let app = spawn_app_with(&["--max-shard-output-bytes", "10"]).await;
    let (token, job) = running_job(&app, "out-cap").await;
    let post = |seq, text: &'static str| {
        let body = piece("out-cap", job, seq, "stdout", text);
        let (app, token) = (&app, &token);
        async move { app.post_output(token, &body).await }
    };
    assert_eq!(post(0, "hello").await.json["stored"], true);
    let over = post(1, "world!").await;
    assert_eq!(over.status, 413, "5 + 6 bytes pass the cap of 10: {}", over.text);
    assert!(
        over.text.contains("10 bytes"),
        "the answer names the cap: {}",
        over.text
    );
    assert_eq!(
        post(1, "abcde").await.json["stored"],
        true,
        "the refused piece counted nothing"
    );
    let retry = post(0, "hello").await;
    assert_eq!(
        (retry.status, retry.json["stored"].clone()),
        (200, json!(false)),
        "{}",
        retry.text
    );
    assert_eq!(post(2, "x").await.status, 413, "the shard is at its cap");
    let out = app.job_output(&app.admin_token, job).await;
    assert_eq!(
        (out.json["stdout"].clone(), out.json["stdout_bytes"].clone()),
        (json!("helloabcde"), json!(10))
    );
    app.stop().await;
}

#[tokio::test]
async fn pieces_sent_at_once_cannot_pass_the_cap_together() {
    let app = spawn_app_with(&["--max-shard-output-bytes", "10"]).await;
    let (token, job) = running_job(&app, "out-race").await;
    let sends = (0..30).map(|seq| {
        let body = piece("out-race", job, seq, "stdout", "y");
        let (app, token) = (&app, &token);
        async move { app.post_output(token, &body).await.status }
    });
    let statuses = futures::future::join_all(sends).await;
    let stored = statuses.iter().filter(|s| **s == 200).count();
    let capped = statuses.iter().filter(|s| **s == 413).count();
    assert_eq!((stored, capped), (10, 20), "{statuses:?}");
    let out = app.job_output(&app.admin_token, job).await;
    assert_eq!(out.json["stdout"], "y".repeat(10));
    app.stop().await;
}

/// Reads `resp`'s body until it holds `wanted` (bounded, so a missing
/// event fails the test instead of hanging it); answers all read so far.
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains(wanted) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk()).await;
        match chunk {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("no {wanted:?} in the stream ({other:?}): {seen}"),
        }
    }
}

#[tokio::test]
async fn the_live_stream_replays_follows_and_ends_with_the_job() {
    let app = spawn_app_with(&[]).await;
    let (token, job) = running_job(&app, "out-5").await;
    assert_eq!(
        app.post_output(&token, &piece("out-5", job, 0, "stdout", "first\n"))
            .await
            .status,
        200
    );
    let mut resp = reqwest::Client::new()
        .get(app.url(&format!("/api/jobs/{job}/output/stream")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let mut seen = String::new();
    read_until(&mut resp, &mut seen, "first").await;
    assert!(seen.contains("event: output") && seen.contains("id: 0"), "{seen}");
    assert_eq!(
        app.post_output(&token, &piece("out-5", job, 1, "stderr", "second\n"))
            .await
            .status,
        200
    );
    read_until(&mut resp, &mut seen, "second").await;
    assert!(seen.contains(r#""stream":"stderr""#), "{seen}");
    assert_eq!(app.cancel_job(&app.admin_token, job).await.status, 200);
    read_until(&mut resp, &mut seen, "event: end").await;
    assert!(seen.contains(r#""status":"cancelled""#), "{seen}");
    assert!(
        resp.chunk().await.ok().flatten().is_none(),
        "the stream closes after end"
    );
    app.stop().await;
}

/// Opens `job`'s live stream as the admin, with `Last-Event-ID` set to
/// each of `last_ids` (none, one, or several headers).
async fn open_stream(app: &TestApp, job: Uuid, query: &str, last_ids: &[&[u8]]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(app.url(&format!("/api/jobs/{job}/output/stream{query}")))
        .bearer_auth(&app.admin_token);
    for id in last_ids {
        let value = reqwest::header::HeaderValue::from_bytes(id).expect("a header value");
        req = req.header("Last-Event-ID", value);
    }
    req.send().await.expect("the stream answers")
}

/// The `id`s of the `output` events in `seen`, in order.
fn output_ids(seen: &str) -> Vec<String> {
    seen.lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_client_reconnecting_with_last_event_id_gets_only_the_pieces_after_it() {
    let app = spawn_app_with(&[]).await;
    let (token, job) = running_job(&app, "out-7").await;
    for seq in 0..=3 {
        let r = app
            .post_output(
                &token,
                &piece("out-7", job, seq, "stdout", &format!("piece-{seq}\n")),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let mut resp = open_stream(&app, job, "", &[b"1"]).await;
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    read_until(&mut resp, &mut seen, "piece-3").await;
    let live = piece("out-7", job, 4, "stdout", "piece-4\n");
    assert_eq!(app.post_output(&token, &live).await.status, 200);
    read_until(&mut resp, &mut seen, "piece-4").await;
    assert_eq!(app.cancel_job(&app.admin_token, job).await.status, 200);
    read_until(&mut resp, &mut seen, "event: end").await;
    assert_eq!(output_ids(&seen), ["2", "3", "4"], "{seen}");
    assert!(!seen.contains("piece-0") && !seen.contains("piece-1"), "{seen}");
    // An EventSource reconnects after `end` too: with the last id it saw,
    // it gets only `end` again.
    let again = open_stream(&app, job, "", &[b"4"]).await;
    let body = tokio::time::timeout(Duration::from_secs(30), again.text())
        .await
        .expect("the ended stream closes")
        .expect("a body");
    assert!(
        output_ids(&body).is_empty() && body.contains("event: end"),
        "{body}"
    );
    // An empty header is no id at all: everything is replayed.
    let whole = open_stream(&app, job, "", &[b""]).await;
    let body = tokio::time::timeout(Duration::from_secs(30), whole.text())
        .await
        .expect("the ended stream closes")
        .expect("a body");
    assert_eq!(output_ids(&body), ["0", "1", "2", "3", "4"], "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_last_event_id_that_is_not_a_piece_number_is_422() {
    let app = spawn_app_with(&[]).await;
    let job = submit_ok(&app, &app.admin_token, "bad resume").await;
    let bad: [&[&[u8]]; 8] = [
        &[b"x"],
        &[b"-1"],
        &[b"+1"],
        &[b"1.5"],
        &[b"0x10"],
        &[b"99999999999999999999"],
        &[b"\xff"],
        &[b"1", b"2"],
    ];
    for ids in bad {
        let r = open_stream(&app, job, "", ids).await;
        assert_eq!(r.status(), 422, "Last-Event-ID {ids:?}");
        let body: Value = r.json().await.expect("a JSON body");
        assert_eq!(body["detail"].as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["header", "Last-Event-ID"]),
            "{body}"
        );
        assert_eq!(body["detail"][0]["type"], "value_error", "{body}");
    }
    let both = open_stream(&app, job, "?shard=99", &[b"x"]).await;
    assert_eq!(both.status(), 422);
    let body: Value = both.json().await.expect("a JSON body");
    assert_eq!(
        body["detail"].as_array().map(Vec::len),
        Some(2),
        "every problem: {body}"
    );
    app.stop().await;
}
