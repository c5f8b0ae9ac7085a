//! End to end: a real controller (in-process, real HTTP), real Postgres and
//! RabbitMQ in containers, and worker agents as real processes. Each test
//! has its own database, broker prefix and agents.

use integration_tests::cluster::Cluster;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_worker-agent");

async fn cluster_with(agents: &[(&str, u32)]) -> Cluster {
    let mut c = Cluster::start(AGENT).await;
    for (id, capacity) in agents {
        c.add_agent(id, *capacity).await;
    }
    c
}

fn id(job: &Value) -> String {
    job["job_id"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn complete_job_workflow() {
    let c = cluster_with(&[("wf-1", 2)]).await;
    let workers: Value = c
        .app
        .get("/api/supervisor/workers", &c.app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(workers["total"], 1);
    assert_eq!(workers["workers"][0]["status"], "idle");
    let quotas: Value = c
        .app
        .get("/api/resources/quotas", &c.app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(quotas["available_workers"], 1);
    let job = c
        .submit(
            &[
                "/bin/sh",
                "-c",
                "sleep 1; echo shard $SHARD_INDEX of $SHARD_COUNT; echo oops >&2",
            ],
            json!({}),
        )
        .await;
    assert_eq!(job["status"], "pending");
    let running = c.wait_status(&id(&job), "running").await;
    assert_eq!(running["assigned_workers"], json!(["wf-1"]));
    c.wait_worker("wf-1", |w| w["status"] == "busy").await;
    let done = c.wait_status(&id(&job), "completed").await;
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["attempts"], 1);
    let output: Value = c
        .app
        .get(&format!("/api/jobs/{}/output", id(&job)), &c.app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(output["stdout"], "shard 0 of 1\n");
    assert_eq!(output["stderr"], "oops\n");
    let steps: Vec<_> = c.transitions(&id(&job)).await;
    let to: Vec<&str> = steps.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(to, ["pending", "queued", "running", "completed"]);
}

#[tokio::test]
async fn worker_lifecycle_idle_busy_idle() {
    let c = cluster_with(&[("life-1", 1)]).await;
    let job = c.submit(&["sleep", "1"], json!({})).await;
    c.wait_worker("life-1", |w| w["status"] == "busy" && w["running_jobs"] == 1)
        .await;
    c.wait_status(&id(&job), "completed").await;
    let idle = c.wait_worker("life-1", |w| w["status"] == "idle").await;
    assert_eq!(idle["running_jobs"], 0);
}

#[tokio::test]
async fn resource_allocation_workflow() {
    let c = cluster_with(&[("res-1", 1), ("res-2", 1)]).await;
    let token = &c.app.admin_token;
    let q: Value = c
        .app
        .get("/api/resources/quotas", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(q["available_workers"], 2);
    let resp = c
        .app
        .post_json("/api/resources/allocate", token, &json!({"workers": 2}))
        .await;
    assert_eq!(resp.status(), 201);
    let alloc: Value = resp.json().await.unwrap();
    let q: Value = c
        .app
        .get("/api/resources/quotas", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (q["allocated_workers"].clone(), q["available_workers"].clone()),
        (json!(2), json!(0))
    );
    let refused = c
        .app
        .post_json("/api/resources/allocate", token, &json!({"workers": 1}))
        .await;
    assert_eq!(refused.status(), 409);
    let released = c
        .app
        .post_json(
            "/api/resources/release",
            token,
            &json!({"allocation_id": alloc["allocation_id"]}),
        )
        .await;
    assert_eq!(released.status(), 200);
    let q: Value = c
        .app
        .get("/api/resources/quotas", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(q["available_workers"], 2);
}

#[tokio::test]
async fn authentication_flow() {
    let c = cluster_with(&[]).await;
    let token = c.app.user_token("e2e-user", &["jobs:write"]).await;
    let me: Value = c.app.get("/api/auth/me", &token).await.json().await.unwrap();
    assert_eq!(me["username"], "e2e-user");
    let job = c
        .app
        .post_json("/api/jobs/submit", &token, &json!({"task_description": "x"}))
        .await;
    assert_eq!(job.status(), 201);
    assert_eq!(c.app.get("/api/supervisor/workers", &token).await.status(), 403);
    assert_eq!(c.app.get("/api/auth/me", "not-a-token").await.status(), 401);
}

#[tokio::test]
async fn three_hundred_jobs_over_three_agents_complete_exactly_once() {
    let c = cluster_with(&[("many-1", 4), ("many-2", 4), ("many-3", 4)]).await;
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(id(&c.submit(&["/bin/true"], json!({})).await));
    }
    for job_id in &ids {
        c.wait_status(job_id, "completed").await;
    }
    assert_eq!(
        c.count("SELECT count(*) FROM jobs WHERE status = 'completed'")
            .await,
        300
    );
    assert_eq!(c.duplicated_completions().await, 0, "a job completed twice");
    let runs = c
        .count("SELECT count(*) FROM job_shards WHERE status = 'completed'")
        .await;
    assert_eq!(runs, 300, "every job ran exactly once");
    let db = c.app.db.client().await.unwrap();
    let workers: HashSet<String> = db
        .query("SELECT DISTINCT worker_id FROM job_shards", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(workers.len(), 3, "all three agents took work");
}

#[tokio::test]
async fn agent_killed_mid_job_its_job_completes_elsewhere() {
    let mut c = cluster_with(&[("kill-a", 1)]).await;
    // A duration no other test uses, to find this job's processes.
    let seconds = format!("3.{}", std::process::id() % 1000 + 1000);
    let job = c.submit(&["sleep", &seconds], json!({})).await;
    c.wait_job(&id(&job), |j| j["assigned_workers"] == json!(["kill-a"]))
        .await;
    c.add_agent("kill-b", 1).await;
    c.kill_agent("kill-a").await;
    let done = c.wait_status(&id(&job), "completed").await;
    assert_eq!(done["assigned_workers"], json!(["kill-b"]));
    c.wait_worker("kill-a", |w| w["status"] == "offline").await;
    let transitions = c.transitions(&id(&job)).await;
    let completions = transitions.iter().filter(|(_, to)| to == "completed").count();
    assert_eq!(completions, 1, "{transitions:?}");
}

/// The processes running `sleep <seconds>` in the cgroups of agent
/// `worker_id` (a killed agent's job lives on until the agent is back).
fn sleeping_in(worker_id: &str, seconds: &str) -> Vec<u32> {
    let marker = format!("sleep\0{seconds}\0");
    let cgroup = format!("/orchestrator-agent-{worker_id}/");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let groups = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
            let ours = String::from_utf8_lossy(&cmdline) == marker && groups.contains(&cgroup);
            ours.then_some(pid)
        })
        .collect()
}

#[tokio::test]
async fn a_killed_agent_leaves_nothing_running_once_it_is_back() {
    let mut c = cluster_with(&[("orphan-a", 1)]).await;
    let seconds = format!("600.{}", std::process::id() % 1000 + 1000);
    let job = c
        .submit(&["sleep", &seconds], json!({"timeout_seconds": 30}))
        .await;
    c.wait_job(&id(&job), |j| j["status"] == "running").await;
    // Running once claimed; the child starts a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sleeping_in("orphan-a", &seconds).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.kill_agent("orphan-a").await;
    // SIGKILL gives the agent no chance to stop its job: it lives on, in
    // the agent's cgroup, until the agent starts again and sweeps it (the
    // agent may then run the job anew: that is another process).
    let orphans = sleeping_in("orphan-a", &seconds);
    assert_eq!(orphans.len(), 1, "the job should still run");
    c.start_agent("orphan-a", 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while orphans
        .iter()
        .any(|pid| sleeping_in("orphan-a", &seconds).contains(pid))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned job still runs after the agent's restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted agent may be running the job again: stop it, so the
    // test leaves nothing behind.
    let cancel = format!("/api/jobs/{}/cancel", id(&job));
    c.app.post(&cancel, &c.app.admin_token).await;
    c.wait_job(&id(&job), |j| j["status"] != "running" && j["status"] != "queued")
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sleeping_in("orphan-a", &seconds).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled job still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The controller falling behind on its events (here: one report stuck on
/// a row lock for longer than the heartbeat timeout, so every heartbeat
/// queues behind it) is not silence: the agent stays up and its other job
/// is not failed as "worker lost".
#[tokio::test]
async fn a_controller_behind_on_events_does_not_declare_live_agents_lost() {
    let c = cluster_with(&[("lag-a", 2)]).await;
    let short = c.submit(&["sleep", "1"], json!({"max_retries": 0})).await;
    let long = c.submit(&["sleep", "14"], json!({"max_retries": 0})).await;
    c.wait_status(&id(&short), "running").await;
    c.wait_status(&id(&long), "running").await;
    let mut db = c.app.db.client().await.unwrap_or_else(|e| panic!("{e}"));
    let lock = db.transaction().await.unwrap_or_else(|e| panic!("{e}"));
    let short_id: uuid::Uuid = id(&short).parse().unwrap_or_default();
    lock.execute("SELECT 1 FROM jobs WHERE job_id = $1 FOR UPDATE", &[&short_id])
        .await
        .unwrap_or_else(|e| panic!("locking the job: {e}"));
    // Heartbeat timeout 6 s, reaper every 250 ms: long past the point where
    // the agent's last applied heartbeat is stale.
    tokio::time::sleep(Duration::from_secs(9)).await;
    lock.commit().await.unwrap_or_else(|e| panic!("{e}"));
    c.wait_status(&id(&short), "completed").await;
    let done = c.wait_job(&id(&long), |j| j["status"] != "running").await;
    assert_eq!(done["status"], "completed", "{done}");
    let w = c
        .app
        .get("/api/supervisor/workers/lag-a", &c.app.admin_token)
        .await;
    let w: Value = w.json().await.unwrap_or_default();
    assert_ne!(w["status"], "offline", "{w}");
}

#[tokio::test]
async fn running_job_cancelled_stops_on_its_agent() {
    let c = cluster_with(&[("cancel-1", 1)]).await;
    let job = c.submit(&["sleep", "60"], json!({})).await;
    c.wait_status(&id(&job), "running").await;
    let resp = c
        .app
        .post(&format!("/api/jobs/{}/cancel", id(&job)), &c.app.admin_token)
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    // The agent stops the child and is free again well before the sleep ends.
    c.wait_worker("cancel-1", |w| w["status"] == "idle" && w["running_jobs"] == 0)
        .await;
    let next = c.submit(&["/bin/true"], json!({})).await;
    c.wait_status(&id(&next), "completed").await;
    assert_eq!(c.job(&id(&job)).await["status"], "cancelled");
}

#[tokio::test]
async fn job_past_its_timeout_is_timed_out() {
    let c = cluster_with(&[("timeout-1", 1)]).await;
    let job = c.submit(&["sleep", "60"], json!({"timeout_seconds": 1})).await;
    let done = c
        .wait_job(&id(&job), |j| {
            j["status"] != "pending" && j["status"] != "queued" && j["status"] != "running"
        })
        .await;
    assert_eq!(done["status"], "timed_out");
    let started = chrono::DateTime::parse_from_rfc3339(done["started_at"].as_str().unwrap()).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(done["finished_at"].as_str().unwrap()).unwrap();
    assert!(
        finished - started < chrono::Duration::seconds(10),
        "stopped promptly"
    );
}

#[tokio::test]
async fn job_failing_then_succeeding_on_retry() {
    let c = cluster_with(&[("retry-1", 1)]).await;
    let marker = std::env::temp_dir().join(format!("retry-{}", uuid::Uuid::new_v4()));
    let script = format!(
        "if [ -e {0} ]; then echo second; else touch {0}; exit 7; fi",
        marker.display()
    );
    let job = c
        .submit(&["/bin/sh", "-c", &script], json!({"max_retries": 2}))
        .await;
    let done = c
        .wait_job(&id(&job), |j| {
            j["status"] == "completed" || j["status"] == "failed"
        })
        .await;
    let _ = std::fs::remove_file(&marker);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["attempts"], 2);
    let steps = c.transitions(&id(&job)).await;
    assert!(steps.contains(&("running".into(), "queued".into())), "{steps:?}");
    let without_retries = c.submit(&["/bin/false"], json!({})).await;
    let failed = c.wait_status(&id(&without_retries), "failed").await;
    assert_eq!(failed["exit_code"], 1);
}

#[tokio::test]
async fn three_shard_job_runs_on_three_agents() {
    let c = cluster_with(&[("shard-1", 2), ("shard-2", 2), ("shard-3", 2)]).await;
    let job = c
        .submit(
            &["/bin/sh", "-c", "sleep 0.5; echo $SHARD_INDEX/$SHARD_COUNT"],
            json!({"required_workers": 3}),
        )
        .await;
    let done = c.wait_status(&id(&job), "completed").await;
    let workers: HashSet<&str> = done["assigned_workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(workers.len(), 3, "{done}");
    let db = c.app.db.client().await.unwrap();
    let shards: i64 = db
        .query_one(
            "SELECT count(DISTINCT shard_index) FROM job_shards WHERE status = 'completed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shards, 3);
}

#[tokio::test]
async fn pause_and_resume_reach_the_agent() {
    let c = cluster_with(&[("pause-1", 1)]).await;
    let token = &c.app.admin_token;
    let paused = c.app.post("/api/supervisor/workers/pause-1/pause", token).await;
    assert_eq!(paused.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let job = c.submit(&["/bin/true"], json!({})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        c.job(&id(&job)).await["status"],
        "queued",
        "a paused agent takes no work"
    );
    let resumed = c.app.post("/api/supervisor/workers/pause-1/resume", token).await;
    assert_eq!(resumed.status(), 200);
    c.wait_status(&id(&job), "completed").await;
}

#[tokio::test]
async fn terminate_drains_without_losing_the_running_job() {
    let mut c = cluster_with(&[("term-1", 1)]).await;
    let job = c.submit(&["sleep", "2"], json!({})).await;
    c.wait_status(&id(&job), "running").await;
    let resp = c
        .app
        .post("/api/supervisor/workers/term-1/terminate", &c.app.admin_token)
        .await;
    assert_eq!(resp.status(), 200);
    let status = c
        .wait_agent_exit("term-1")
        .await
        .expect("the agent exits after draining");
    assert!(status.success(), "{status:?}");
    c.wait_status(&id(&job), "completed").await;
    c.wait_worker("term-1", |w| w["status"] == "terminated").await;
}

/// How long a restarted agent is watched for exiting by itself: far longer
/// than it takes to register, consume its control queue and, were it to
/// obey a `Terminate` found there, drain an empty hand and exit.
const STAYS_UP: Duration = Duration::from_secs(5);

/// Waits until the outbox has published every control message queued so
/// far, so that they wait in the control queue before an agent starts.
async fn control_messages_published(c: &Cluster) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c
        .count("SELECT count(*) FROM outbox WHERE exchange = 'control' AND sent_at IS NULL")
        .await
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "control messages never published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that the agent `worker_id`, just started again, registered as
/// generation `generation`, stays up, and runs a job.
async fn stays_up_and_works(c: &mut Cluster, worker_id: &str, generation: i64) {
    let exited = c.agent_exit_within(worker_id, STAYS_UP).await;
    assert!(
        exited.is_none(),
        "the restarted agent exited ({exited:?}): it obeyed a command meant for its previous incarnation"
    );
    let w = c.wait_worker(worker_id, |w| w["generation"] == generation).await;
    assert_eq!(w["status"], "idle", "{w}");
    let job = c.submit(&["/bin/true"], json!({})).await;
    let done = c.wait_status(&id(&job), "completed").await;
    assert_eq!(done["assigned_workers"], json!([worker_id]));
    assert!(c.agent_running(worker_id));
}

/// Issue 14: an agent logs in to the broker as a user of its own. When the
/// broker no longer knows that user (deleted, as when a broker loses its
/// users; its connection closed), the agent registers again for a new login
/// (a new generation) and goes on running jobs.
#[tokio::test]
async fn an_agent_whose_broker_user_is_deleted_registers_again_and_keeps_working() {
    let mut c = cluster_with(&[("relogin-1", 1)]).await;
    let job = c.submit(&["/bin/true"], json!({})).await;
    c.wait_status(&id(&job), "completed").await;
    c.broker_accounts()
        .revoke("relogin-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stays_up_and_works(&mut c, "relogin-1", 2).await;
}

/// Issue 13, finding 8: a `Terminate` queued while no agent consumed the
/// worker's control queue (the agent had died) waits there, since the queue
/// is durable and named by the worker id; the next agent started under the
/// id must drop it as meant for its previous incarnation, not exit.
#[tokio::test]
async fn a_restarted_agent_ignores_a_terminate_meant_for_its_previous_incarnation() {
    let mut c = cluster_with(&[("stale-1", 1)]).await;
    c.kill_agent("stale-1").await;
    // Dead but not yet missed (heartbeat timeout 6 s): the terminate is
    // accepted, and its message waits in the queue with nobody consuming.
    let r = c.app.terminate_worker(&c.app.admin_token, "stale-1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    control_messages_published(&c).await;
    c.start_agent("stale-1", 1).await;
    stays_up_and_works(&mut c, "stale-1", 2).await;
}

/// The fuzzer's loop: a terminated worker cannot be resumed (nor terminated
/// again, which queued one more `Terminate` for nobody), and an agent
/// started again under its id is a new incarnation that stays up, recorded
/// as such.
#[tokio::test]
async fn a_terminated_worker_is_not_resumed_and_its_next_agent_stays_up() {
    let mut c = cluster_with(&[("loop-1", 1)]).await;
    let admin = c.app.admin_token.clone();
    let r = c.app.terminate_worker(&admin, "loop-1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let exit = c.wait_agent_exit("loop-1").await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    c.wait_worker("loop-1", |w| w["status"] == "terminated").await;
    let r = c.app.resume_worker(&admin, "loop-1").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.json["detail"], "Invalid worker transition: terminated -> idle");
    let r = c.app.terminate_worker(&admin, "loop-1").await;
    assert_eq!(r.status, 409, "{}", r.text);
    c.start_agent("loop-1", 1).await;
    stays_up_and_works(&mut c, "loop-1", 2).await;
    let recorded = c
        .count(
            "SELECT count(*) FROM worker_events WHERE worker_id = 'loop-1' AND generation = 2
             AND from_status = 'terminated' AND to_status = 'idle' AND reason = 'registered'",
        )
        .await;
    assert_eq!(recorded, 1, "the new incarnation is recorded");
}

/// A pause holds the worker id, not one process: an agent that restarts
/// while its worker is paused registers paused, takes no work until
/// resumed, and then does.
#[tokio::test]
async fn a_paused_worker_stays_paused_when_its_agent_restarts() {
    let mut c = cluster_with(&[("hold-1", 1)]).await;
    let admin = c.app.admin_token.clone();
    let r = c.app.pause_worker(&admin, "hold-1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    control_messages_published(&c).await;
    c.kill_agent("hold-1").await;
    c.start_agent("hold-1", 1).await;
    let w = c.wait_worker("hold-1", |w| w["generation"] == 2).await;
    assert_eq!(w["status"], "paused", "{w}");
    let job = c.submit(&["/bin/true"], json!({})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        c.job(&id(&job)).await["status"],
        "queued",
        "a restarted agent of a paused worker takes no work"
    );
    assert_eq!(c.worker("hold-1").await["status"], "paused");
    let r = c.app.resume_worker(&admin, "hold-1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.wait_status(&id(&job), "completed").await;
}

/// The sum of the controller's metric lines (from its `/metrics`) that
/// start with `series` and contain `with`.
async fn metric_sum(c: &Cluster, series: &str, with: &str) -> u64 {
    let url = format!("{}/metrics", c.app.base_url);
    let text = reqwest::get(url).await.unwrap().text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(series) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

/// Claim requests the controller has answered so far, single or batched.
async fn claim_requests(c: &Cluster) -> u64 {
    metric_sum(c, "http_requests_total{", "route=\"/api/agents/claim").await
}

/// Claims the controller has answered so far, each claim of a batch
/// counted.
async fn claims_answered(c: &Cluster) -> u64 {
    metric_sum(c, "agent_claims_total{", "").await
}

/// A busy agent's claims go out in batches: eight deliveries that arrive at
/// once cost fewer than eight requests (one each before batching), and
/// every job still runs exactly once.
#[tokio::test]
async fn a_busy_agents_claims_go_out_in_batches() {
    let c = cluster_with(&[("batch-1", 8)]).await;
    let admin = c.app.admin_token.clone();
    let r = c.app.pause_worker(&admin, "batch-1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.wait_worker("batch-1", |w| w["status"] == "paused").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(id(&c.submit(&["/bin/true"], json!({})).await));
    }
    for job_id in &ids {
        c.wait_status(job_id, "queued").await;
    }
    let (requests, claims) = (claim_requests(&c).await, claims_answered(&c).await);
    let r = c.app.resume_worker(&admin, "batch-1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    for job_id in &ids {
        c.wait_status(job_id, "completed").await;
    }
    let requests = claim_requests(&c).await - requests;
    let claims = claims_answered(&c).await - claims;
    assert_eq!(claims, 8, "one claim per delivery");
    assert!(requests < 8, "{requests} requests for 8 claims arriving at once");
    assert_eq!(c.duplicated_completions().await, 0, "a job completed twice");
}

#[tokio::test]
async fn a_job_wider_than_the_fleet_waits_without_a_claim_loop_and_runs_when_a_worker_joins() {
    let mut c = cluster_with(&[("wide-1", 2), ("wide-2", 2)]).await;
    let job = c
        .submit(&["/bin/sh", "-c", "sleep 20"], json!({"required_workers": 3}))
        .await;
    let running = c.wait_job(&id(&job), |j| j["waiting_for"].is_string()).await;
    assert!(
        running["waiting_for"]
            .as_str()
            .unwrap_or_default()
            .contains("3 shards: 2 live"),
        "the job says what it waits for: {running}"
    );
    let before = claims_answered(&c).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let claims = claims_answered(&c).await - before;
    assert!(claims > 0, "the shard is offered again while it waits");
    // Re-offered after 0.25, 0.5, 1, 2, 4 s...: a handful, where handing the
    // shard back to the broker made about two claims a second.
    assert!(claims <= 8, "{claims} claims in 8 s for one waiting shard");
    c.add_agent("wide-3", 2).await;
    let started = c.wait_job(&id(&job), |j| j["waiting_for"].is_null()).await;
    assert_eq!(started["status"], "running", "{started}");
    let workers = started["assigned_workers"].as_array().map_or(0, Vec::len);
    assert_eq!(workers, 3, "each shard on its own worker: {started}");
}

/// Whoever can publish to the broker (its password leaked, or a forged
/// agent's broker login) cannot choose what an agent runs: a dispatch for a
/// real job, carrying a command of the attacker's, is claimed like any
/// other, and the agent runs the job's own command from the claim's answer.
#[tokio::test]
async fn a_forged_dispatch_carrying_a_command_does_not_run_it() {
    let mut c = Cluster::start(AGENT).await;
    let marker = std::env::temp_dir().join(format!("forged-{}", uuid::Uuid::new_v4()));
    let job = c.submit(&["/bin/echo", "the job's own command"], json!({})).await;
    let job_id: uuid::Uuid = id(&job).parse().unwrap_or_default();
    let forged = orchestrator_shared::messages::JobDispatch {
        job_id,
        attempt: 1,
        shard_index: 0,
        shard_count: 1,
        task_description: "forged".into(),
        command: Some(vec!["/usr/bin/touch".into(), marker.display().to_string()]),
        timeout_seconds: None,
        priority: 9,
    };
    // Ahead of the real dispatch (higher priority), before any agent runs.
    c.publish_forged_dispatch(&forged).await;
    c.add_agent("forged-1", 1).await;
    let done = c.wait_status(&id(&job), "completed").await;
    let output = c
        .app
        .get(&format!("/api/jobs/{}/output", id(&job)), &c.app.admin_token)
        .await;
    let output: Value = output.json().await.unwrap_or_default();
    assert!(output.to_string().contains("the job's own command"), "{output}");
    assert!(!marker.exists(), "the forged command ran");
    assert_eq!(done["attempts"], 1, "{done}");
}

/// Revoking an agent's credential ends its access at once: the broker
/// closes its connection, it cannot register again, it goes offline, and
/// work submitted afterwards runs on other agents only.
#[tokio::test]
async fn a_revoked_agent_is_refused_by_the_controller_and_the_broker() {
    let mut c = cluster_with(&[("revoked-1", 1)]).await;
    let list = c.app.get("/api/agents/credentials", &c.app.admin_token).await;
    let list: Value = list.json().await.unwrap_or_default();
    let credential_id = list["credentials"][0]["credential_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let revoked = c
        .app
        .revoke_agent_credential(&c.app.admin_token, &credential_id)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    c.wait_worker("revoked-1", |w| w["status"] == "offline").await;
    let job = c.submit(&["/bin/echo", "after"], json!({})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(
        c.job(&id(&job)).await["status"],
        "completed",
        "the revoked agent ran it"
    );
    let body = json!({"worker_id": "revoked-1", "hostname": "h", "capacity": 1});
    let token = c.credentials["revoked-1"].clone();
    let again = c.app.post_json("/api/agents/register", &token, &body).await;
    assert_eq!(again.status(), 401);
    c.add_agent("fresh-1", 1).await;
    let done = c.wait_status(&id(&job), "completed").await;
    assert_eq!(done["assigned_workers"], json!(["fresh-1"]));
}

/// Submits `n` jobs that run `/bin/true` and waits until each completed.
async fn run_quick_jobs(c: &Cluster, n: usize) {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(id(&c.submit(&["/bin/true"], json!({})).await));
    }
    for job_id in &ids {
        c.wait_status(job_id, "completed").await;
    }
}

/// Two controller replicas with no load balancer, and an agent given both
/// URLs (A first): jobs complete through A; once A stops (its port then
/// refuses connections), jobs submitted through B complete too, each
/// exactly once, and the agent claims them through B.
#[tokio::test]
async fn an_agent_given_two_replicas_keeps_working_when_the_first_stops() {
    let mut c = Cluster::start(AGENT).await;
    let b = c.add_replica().await;
    c.agent_controller_url = Some(format!("{},{b}", c.app.base_url));
    c.add_agent("fo-1", 2).await;
    run_quick_jobs(&c, 5).await;
    c.stop_controller_for_replica().await;
    assert_eq!(c.app.base_url, b, "the cluster now speaks to B");
    let claimed_through_b = claim_requests(&c).await;
    run_quick_jobs(&c, 10).await;
    assert!(
        claim_requests(&c).await > claimed_through_b,
        "the agent never claimed through B"
    );
    let completed = "SELECT count(*) FROM jobs WHERE status = 'completed'";
    assert_eq!(c.count(completed).await, 15);
    assert_eq!(c.duplicated_completions().await, 0, "a job completed twice");
    let runs = c
        .count("SELECT count(*) FROM job_shards WHERE status = 'completed'")
        .await;
    assert_eq!(runs, 15, "every job ran exactly once");
    assert_eq!(
        c.worker("fo-1").await["generation"],
        1,
        "the agent never registered again"
    );
}

/// An agent whose first controller URL is a port where nothing listens
/// registers through the second and runs jobs.
#[tokio::test]
async fn an_agent_whose_first_controller_url_is_dead_registers_through_the_second() {
    let mut c = Cluster::start(AGENT).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    c.agent_controller_url = Some(format!("{dead_url},{}", c.app.base_url));
    c.add_agent("fo-dead", 1).await;
    run_quick_jobs(&c, 2).await;
    assert_eq!(c.duplicated_completions().await, 0, "a job completed twice");
}

/// Creates a schedule through the API; answers its id.
async fn schedule(c: &Cluster, body: Value) -> String {
    let resp = c.app.post_json("/api/schedules", &c.app.admin_token, &body).await;
    assert_eq!(resp.status(), 201);
    let made: Value = resp.json().await.unwrap();
    made["schedule_id"].as_str().unwrap_or_default().to_owned()
}

/// The schedule's runs, newest first, once one of them has a job for which
/// `done` holds (a job as `GET /api/jobs/{id}` shows it).
async fn wait_run(c: &Cluster, schedule_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + integration_tests::cluster::WAIT;
    loop {
        let path = format!("/api/schedules/{schedule_id}");
        let detail: Value = c.app.get(&path, &c.app.admin_token).await.json().await.unwrap();
        for run in detail["runs"].as_array().into_iter().flatten() {
            if let Some(job_id) = run["job_id"].as_str() {
                let job = c.job(job_id).await;
                if done(&job) {
                    return job;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run as waited for: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn scheduled_jobs_run_on_agents_and_cancel_previous_stops_a_running_one() {
    let c = cluster_with(&[("sched-1", 2)]).await;
    let echo = schedule(
        &c,
        json!({"name": "echo", "cron": "* * * * * *",
               "template": {"task_description": "echo", "command": ["/bin/echo", "tick"]}}),
    )
    .await;
    let done = wait_run(&c, &echo, |j| j["status"] == "completed").await;
    assert_eq!(done["schedule_id"], json!(echo));
    let sleeper = schedule(
        &c,
        json!({"name": "sleeper", "cron": "*/2 * * * * *", "overlap": "cancel_previous",
               "template": {"task_description": "sleep", "command": ["sleep", "60"]}}),
    )
    .await;
    let running = wait_run(&c, &sleeper, |j| j["status"] == "running").await;
    // The next tick cancels it on its agent, then submits the next one.
    let stopped = c.wait_job(&id(&running), |j| j["status"] == "cancelled").await;
    assert_eq!(stopped["schedule_id"], json!(sleeper));
    for schedule_id in [&echo, &sleeper] {
        let deleted = c.app.delete_schedule(&c.app.admin_token, schedule_id).await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
    }
}
