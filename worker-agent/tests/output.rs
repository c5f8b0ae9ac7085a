//! A command job's output as a user reads it, with real agents: whole
//! (far past the report's 64 KiB tail), each stream counted, and cut at
//! the agent's cap with a marker, or at the controller's, while the job
//! still completes.

use integration_tests::cluster::Cluster;
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_worker-agent");

fn id(job: &Value) -> String {
    job["job_id"].as_str().unwrap_or_default().to_owned()
}

/// `GET /api/jobs/{id}/output{query}` as the admin.
async fn output(c: &Cluster, job: &str, query: &str) -> Value {
    let r = c
        .app
        .get(&format!("/api/jobs/{job}/output{query}"), &c.app.admin_token)
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap_or_default()
}

/// What `seq 1 N` prints.
fn numbers(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

#[tokio::test]
async fn a_job_printing_far_more_than_the_tail_gives_its_whole_output() {
    let mut c = Cluster::start(AGENT).await;
    c.add_agent("out-e2e-1", 1).await;
    let job = c
        .submit(&["/bin/sh", "-c", "seq 1 60000; echo done >&2"], json!({}))
        .await;
    let done = c.wait_status(&id(&job), "completed").await;
    assert_eq!(done["exit_code"], 0);
    let expected = numbers(60000);
    assert!(expected.len() > 4 * 64 * 1024);
    let out = output(&c, &id(&job), "").await;
    assert_eq!(out["stdout"].as_str().map(str::len), Some(expected.len()));
    assert!(out["stdout"] == json!(expected), "the whole stdout, in order");
    assert_eq!(out["stderr"], "done\n");
    assert_eq!(
        (out["stdout_bytes"].as_u64(), out["stderr_bytes"].as_u64()),
        (Some(expected.len() as u64), Some(5))
    );
    assert_eq!(
        (out["truncated"].clone(), out["attempt"].clone()),
        (json!(false), json!(1))
    );
    let range = output(&c, &id(&job), "?offset=6&limit=8").await;
    assert_eq!(range["stdout"], "4\n5\n6\n7\n");
}

#[tokio::test]
async fn output_past_the_agents_cap_ends_with_a_marker_and_the_job_completes() {
    let mut c = Cluster::start(AGENT).await;
    c.agent_args = vec!["--output-cap-bytes".into(), "1000".into()];
    c.add_agent("out-e2e-2", 1).await;
    let job = c.submit(&["/bin/sh", "-c", "seq 1 100000"], json!({})).await;
    let done = c.wait_status(&id(&job), "completed").await;
    assert_eq!(done["exit_code"], 0, "the job went on past the cap");
    let out = output(&c, &id(&job), "").await;
    assert_eq!(out["truncated"], true);
    let stdout = out["stdout"].as_str().unwrap_or_default();
    assert_eq!(&stdout[..1000], &numbers(100000)[..1000]);
    assert!(stdout[1000..].contains("output truncated"), "{}", &stdout[1000..]);
}

#[tokio::test]
async fn output_past_the_controllers_cap_is_not_stored_and_the_agent_stops_sending_it() {
    let mut c = Cluster::start_with(AGENT, &["--max-shard-output-bytes", "1000"]).await;
    c.add_agent("out-e2e-cap", 1).await;
    let job = c
        .submit(&["/bin/sh", "-c", "echo first; sleep 1; seq 1 100000"], json!({}))
        .await;
    let done = c.wait_status(&id(&job), "completed").await;
    assert_eq!(done["exit_code"], 0, "the job went on past the controller's cap");
    let out = output(&c, &id(&job), "").await;
    assert_eq!(
        (out["stdout"].clone(), out["stdout_bytes"].clone()),
        (json!("first\n"), json!(6)),
        "only the piece within the cap is stored"
    );
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(done[k].as_str().unwrap()).unwrap();
    let ran = (at("finished_at") - at("started_at")).num_seconds();
    assert!(
        ran < 15,
        "a refused piece is not retried for the agent's 30 s of patience: ran {ran} s"
    );
}

#[tokio::test]
async fn a_job_that_prints_nothing_has_empty_output_and_streaming_can_be_turned_off() {
    let mut c = Cluster::start(AGENT).await;
    c.agent_args = vec!["--stream-output".into(), "false".into()];
    c.add_agent("out-e2e-3", 1).await;
    let job = c.submit(&["/bin/sh", "-c", "seq 1 30000"], json!({})).await;
    c.wait_status(&id(&job), "completed").await;
    let out = output(&c, &id(&job), "").await;
    assert_eq!(
        out["stdout_bytes"],
        64 * 1024,
        "without streaming, the report's tail: {}",
        out["stdout_bytes"]
    );
    let silent = c.submit(&["/bin/true"], json!({})).await;
    c.wait_status(&id(&silent), "completed").await;
    let out = output(&c, &id(&silent), "").await;
    assert_eq!(
        (out["stdout"].clone(), out["stdout_bytes"].clone()),
        (json!(""), json!(0))
    );
}
