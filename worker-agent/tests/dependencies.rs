//! End to end, job dependencies with real agents: a graph submitted in one
//! batch runs in dependency order, a failed job cancels what depends on it,
//! and a fan-out of 10,000 jobs runs its leaves only after its root.

use integration_tests::cluster::Cluster;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_worker-agent");

/// Submits `jobs` as one batch by the admin; answers the jobs' ids.
async fn batch(c: &Cluster, jobs: &[Value]) -> Vec<String> {
    let resp = c
        .app
        .post_json(
            "/api/jobs/submit_batch",
            &c.app.admin_token,
            &json!({ "jobs": jobs }),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap_or_default();
    body["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|j| j["job_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A job named `key` running `command`, after `deps`.
fn node(key: &str, command: &[&str], deps: &[&str]) -> Value {
    json!({"key": key, "task_description": key, "command": command, "depends_on": deps})
}

/// The job's start and end times.
fn times(job: &Value) -> (String, String) {
    let at = |k: &str| {
        job[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} of {job}"))
            .to_owned()
    };
    (at("started_at"), at("finished_at"))
}

/// Whether `a` finished before `b` started.
fn before(a: &Value, b: &Value) -> bool {
    let (a, b) = (times(a).1, times(b).0);
    chrono::DateTime::parse_from_rfc3339(&a).unwrap() <= chrono::DateTime::parse_from_rfc3339(&b).unwrap()
}

#[tokio::test]
async fn a_diamond_runs_in_order_on_real_agents_and_a_failure_cancels_downstream() {
    let mut c = Cluster::start(AGENT).await;
    c.add_agent("dep-1", 4).await;
    c.add_agent("dep-2", 4).await;
    let sleep = ["/bin/sh", "-c", "sleep 0.3"];
    let ids = batch(
        &c,
        &[
            node("a", &sleep, &[]),
            node("b", &sleep, &["a"]),
            node("c", &sleep, &["a"]),
            node("d", &sleep, &["b", "c"]),
        ],
    )
    .await;
    let d = c.wait_status(&ids[3], "completed").await;
    let (a, b, cc) = (c.job(&ids[0]).await, c.job(&ids[1]).await, c.job(&ids[2]).await);
    assert!(before(&a, &b) && before(&a, &cc), "{a} {b} {cc}");
    assert!(before(&b, &d) && before(&cc, &d), "{b} {cc} {d}");

    let ids = batch(
        &c,
        &[
            node("a", &["/bin/true"], &[]),
            node("b", &["/bin/false"], &["a"]),
            node("c", &["/bin/true"], &["a"]),
            node("d", &["/bin/true"], &["b", "c"]),
        ],
    )
    .await;
    c.wait_status(&ids[1], "failed").await;
    let d = c.wait_status(&ids[3], "cancelled").await;
    assert_eq!(d["error"], format!("dependency {} ended failed", ids[1]));
    assert_eq!(d["started_at"], Value::Null, "never ran: {d}");
}

#[tokio::test]
async fn a_fan_out_of_ten_thousand_jobs_runs_its_leaves_after_its_root() {
    let mut c = Cluster::start(AGENT).await;
    c.add_agent("fan-1", 16).await;
    c.add_agent("fan-2", 16).await;
    let mut jobs = vec![node("root", &["/bin/sh", "-c", "sleep 1"], &[])];
    jobs.extend((1..10_000).map(|i| json!({"task_description": format!("leaf {i}"), "command": ["/bin/true"], "depends_on": ["root"]})));
    let started = Instant::now();
    let ids = batch(&c, &jobs).await;
    let submitted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = c
            .count(
                "SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed', 'cancelled', 'timed_out')",
            )
            .await;
        if done == 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of 10,000 finished in 600 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = started.elapsed();
    let completed = c
        .count("SELECT count(*) FROM jobs WHERE status = 'completed'")
        .await;
    assert_eq!(completed, 10_000);
    let early = c
        .count(&format!(
            "SELECT count(*) FROM jobs j, jobs r WHERE r.job_id = '{}' AND j.job_id <> r.job_id
               AND j.started_at < r.finished_at",
            ids[0]
        ))
        .await;
    assert_eq!(early, 0, "no leaf started before its root finished");
    assert_eq!(c.duplicated_completions().await, 0);
    eprintln!(
        "10,000-job fan-out on 2 agents x 16: submitted in {submitted:?}, all completed after {took:?}"
    );
}
