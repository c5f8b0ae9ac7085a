//! Pools and labels end to end: a real controller, real Postgres and
//! RabbitMQ, and agent processes serving different pools with different
//! labels. Every job must run only where it matches, and a job no live
//! agent matches waits (saying why) until one joins.

use integration_tests::cluster::{Cluster, WAIT};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_worker-agent");

/// How many jobs the routing scenario submits, spread over four classes.
const JOBS: usize = 200;

/// Starts agent `worker_id` (capacity 4) with extra flags.
async fn add_agent(c: &mut Cluster, worker_id: &str, flags: &[&str]) {
    c.agent_args = flags.iter().map(|f| (*f).to_owned()).collect();
    c.add_agent(worker_id, 4).await;
}

/// The job placement of entry `i` of the scenario: default pool, the gpu
/// pool with no selector, gpu with `zone=a`, gpu with `zone=b`.
fn placement(i: usize) -> Value {
    match i % 4 {
        0 => json!({}),
        1 => json!({"pool": "gpu"}),
        2 => json!({"pool": "gpu", "selector": {"zone": "a"}}),
        _ => json!({"pool": "gpu", "selector": {"zone": "b"}}),
    }
}

/// The workers a job of entry `i` may run on.
fn allowed(i: usize) -> &'static [&'static str] {
    match i % 4 {
        0 => &["pool-default"],
        1 => &["pool-gpu-a", "pool-gpu-b"],
        2 => &["pool-gpu-a"],
        _ => &["pool-gpu-b"],
    }
}

/// Submits the scenario's jobs in one batch; answers them in order.
async fn submit_all(c: &Cluster) -> Vec<Value> {
    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| {
            let mut job = json!({"task_description": format!("pools {i}"), "command": ["true"]});
            if let (Some(j), Some(p)) = (job.as_object_mut(), placement(i).as_object()) {
                j.extend(p.clone());
            }
            job
        })
        .collect();
    let reply = c.app.submit_batch(&c.app.admin_token, &jobs).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json["jobs"].as_array().cloned().unwrap_or_default()
}

/// Polls until every job of `ids` has completed; answers them.
async fn wait_completed(c: &Cluster, ids: &[String]) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.push(c.job(id).await);
        }
        if jobs.iter().all(|j| j["status"] == "completed") {
            return jobs;
        }
        let stuck: Vec<&Value> = jobs
            .iter()
            .filter(|j| j["status"] != "completed")
            .take(3)
            .collect();
        assert!(started.elapsed() < WAIT, "jobs never completed, e.g. {stuck:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every job of the scenario ran on one agent it matches, and each gpu
/// agent ran at least the jobs only it matches.
fn assert_each_ran_where_it_matches(done: &[Value]) {
    for (i, job) in done.iter().enumerate() {
        let ran_on = job["assigned_workers"].as_array().cloned().unwrap_or_default();
        assert_eq!(ran_on.len(), 1, "job {i}: {job}");
        let worker = ran_on[0].as_str().unwrap_or_default();
        let placed = placement(i);
        assert!(allowed(i).contains(&worker), "job {i} ({placed}) ran on {worker}");
        assert_eq!(
            job["pool"],
            placed.get("pool").cloned().unwrap_or(json!("default"))
        );
    }
    for w in ["pool-gpu-a", "pool-gpu-b"] {
        let ran = done
            .iter()
            .filter(|j| j["assigned_workers"] == json!([w]))
            .count();
        assert!(ran >= JOBS / 4, "{w} ran only {ran} jobs");
    }
}

#[tokio::test]
async fn jobs_run_only_on_agents_of_their_pool_whose_labels_match() {
    let mut c = Cluster::start(AGENT).await;
    add_agent(&mut c, "pool-default", &[]).await;
    add_agent(
        &mut c,
        "pool-gpu-a",
        &["--pool", "gpu", "--label", "zone=a", "--classes-poll-ms", "200"],
    )
    .await;
    add_agent(
        &mut c,
        "pool-gpu-b",
        &["--pool", "gpu", "--label", "zone=b", "--classes-poll-ms", "200"],
    )
    .await;
    let worker = c.worker("pool-gpu-a").await;
    assert_eq!(worker["pools"], json!(["gpu"]));
    assert_eq!(worker["labels"], json!({"zone": "a"}));
    assert_eq!(c.worker("pool-default").await["pools"], json!(["default"]));

    let started = Instant::now();
    let submitted = submit_all(&c).await;
    assert_eq!(submitted.len(), JOBS);
    let ids: Vec<String> = submitted
        .iter()
        .map(|j| j["job_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let done = wait_completed(&c, &ids).await;
    println!("{JOBS} jobs over 4 classes completed in {:?}", started.elapsed());
    assert_each_ran_where_it_matches(&done);

    // Two shards need two distinct matching agents: both gpu agents.
    let wide = c
        .submit(&["true"], json!({"pool": "gpu", "required_workers": 2}))
        .await;
    let wide = c
        .wait_status(wide["job_id"].as_str().unwrap_or_default(), "completed")
        .await;
    let mut on: Vec<&str> = wide["assigned_workers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    on.sort_unstable();
    assert_eq!(on, ["pool-gpu-a", "pool-gpu-b"]);
}

#[tokio::test]
async fn a_job_no_live_agent_matches_waits_saying_why_then_runs_when_one_joins() {
    let mut c = Cluster::start(AGENT).await;
    add_agent(
        &mut c,
        "wait-gpu-a",
        &["--pool", "gpu", "--label", "zone=a", "--classes-poll-ms", "200"],
    )
    .await;
    let job = c
        .submit(&["true"], json!({"pool": "gpu", "selector": {"zone": "c"}}))
        .await;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let waiting = c
        .wait_job(&id, |j| j["status"] == "queued" && !j["waiting_for"].is_null())
        .await;
    assert_eq!(waiting["waiting_for"], "no live agent in pool gpu with zone=c");
    // It stays queued, not failed, while nothing can run it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = c.job(&id).await;
    assert_eq!(still["status"], "queued", "{still}");
    assert_eq!(still["attempts"], 0, "{still}");

    add_agent(
        &mut c,
        "wait-gpu-c",
        &["--pool", "gpu", "--label", "zone=c", "--classes-poll-ms", "200"],
    )
    .await;
    let done = c.wait_status(&id, "completed").await;
    assert_eq!(done["assigned_workers"], json!(["wait-gpu-c"]));
    assert!(done["waiting_for"].is_null(), "{done}");
}

#[tokio::test]
async fn a_dependent_in_a_pool_of_its_own_runs_there_once_its_dependency_completes() {
    let mut c = Cluster::start(AGENT).await;
    add_agent(&mut c, "dep-default", &[]).await;
    add_agent(
        &mut c,
        "dep-gpu",
        &["--pool", "gpu", "--label", "zone=d", "--classes-poll-ms", "200"],
    )
    .await;
    // The gpu job's class is new and its job is held (not dispatched) at
    // submission: its queue must still exist, and its agent consume it,
    // when the dependency's completion dispatches it.
    let jobs = [
        json!({"key": "first", "task_description": "first", "command": ["sleep", "1"]}),
        json!({"task_description": "then on gpu", "command": ["true"], "pool": "gpu",
               "selector": {"zone": "d"}, "depends_on": ["first"]}),
    ];
    let reply = c.app.submit_batch(&c.app.admin_token, &jobs).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = |i: usize| {
        reply.json["jobs"][i]["job_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let first = c.wait_status(&id(0), "completed").await;
    assert_eq!(first["assigned_workers"], json!(["dep-default"]));
    let then = c.wait_status(&id(1), "completed").await;
    assert_eq!(then["assigned_workers"], json!(["dep-gpu"]));
}
