//! Multi-host faults: the controller and every agent run in containers of
//! their own on a private network, built from the project's images, and the
//! hosts fail as real ones do (killed, cut off, restarted, added) while
//! hundreds of jobs run. Whatever happens, every job must end `completed`,
//! and exactly once.

use integration_tests::multihost::{Deployment, Outcome};
use std::time::{Duration, Instant};

/// Jobs each run submits.
const JOBS: usize = 300;
/// Each job sleeps long enough for the faults to land mid-run.
const JOB: &[&str] = &["/bin/sh", "-c", "sleep 0.4"];

/// How long an agent stays cut off the network.
const CUT: Duration = Duration::from_secs(20);

fn all_completed_once(jobs: usize) -> Outcome {
    let n = i64::try_from(jobs).unwrap_or(i64::MAX);
    Outcome {
        completed: n,
        not_completed: 0,
        completed_twice: 0,
        never_completed_event: 0,
    }
}

#[tokio::test]
async fn agents_killed_cut_off_and_added_still_complete_every_job_once() -> anyhow::Result<()> {
    let mut d = Deployment::start(3, 4).await?;
    let agents = d.agent_names();
    let (killed, cut) = (&agents[0], &agents[1]);
    let ids = d.submit_jobs(JOBS, JOB).await?;

    d.wait_completed(30).await?;
    d.kill(killed)?;
    d.disconnect(cut)?;
    let cut_at = Instant::now();
    let fourth = d.add_agent(4).await?;
    // The controller notices the silent agent while it is cut off.
    d.wait_worker(cut, "offline").await?;
    assert!(
        cut_at.elapsed() < CUT,
        "the cut-off agent was noticed only after {:?}",
        cut_at.elapsed()
    );
    tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;
    d.reconnect(cut)?;

    d.wait_all_ended(&ids).await?;
    assert_eq!(d.outcome(&ids).await?, all_completed_once(JOBS));
    let killed_worker = d.wait_worker(killed, "offline").await?;
    assert_eq!(killed_worker["status"], "offline");
    // The cut-off agent comes back and takes work again.
    d.wait_worker(cut, "idle").await?;
    let db = d.db().await?;
    let by_fourth: i64 = db
        .query_one(
            "SELECT count(DISTINCT job_id) FROM job_shards WHERE worker_id = $1 AND status = 'completed'",
            &[&fourth],
        )
        .await?
        .get(0);
    assert!(by_fourth > 0, "the agent added mid-run completed no job");
    report(&d, &ids).await
}

/// Prints how the work was spread and how many jobs needed another attempt
/// (the figures the closing notes quote).
async fn report(d: &Deployment, ids: &[String]) -> anyhow::Result<()> {
    let db = d.db().await?;
    let retried: i64 = db
        .query_one("SELECT count(*) FROM jobs WHERE attempts > 1", &[])
        .await?
        .get(0);
    let rows = db
        .query(
            "SELECT worker_id || ':' || status, count(*) FROM job_shards
             GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?;
    let per_agent: Vec<String> = rows
        .iter()
        .map(|r| format!("{}={}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    eprintln!(
        "multihost: {} jobs checked, {retried} needed another attempt, shards per agent and status: {}",
        ids.len(),
        per_agent.join(" ")
    );
    Ok(())
}

#[tokio::test]
async fn controller_restarted_mid_run_still_completes_every_job_once() -> anyhow::Result<()> {
    let mut d = Deployment::start(3, 4).await?;
    let ids = d.submit_jobs(JOBS, JOB).await?;

    d.wait_completed(50).await?;
    d.restart_controller().await?;
    let db = d.db().await?;
    let done_at_restart: i64 = db
        .query_one("SELECT count(*) FROM jobs WHERE status = 'completed'", &[])
        .await?
        .get(0);
    assert!(
        done_at_restart < JOBS as i64,
        "every job had ended before the controller came back; the restart was not mid-run"
    );
    // Jobs submitted to the restarted controller run too.
    let more = d.submit_jobs(50, JOB).await?;

    d.wait_all_ended(&ids).await?;
    d.wait_all_ended(&more).await?;
    assert_eq!(d.outcome(&ids).await?, all_completed_once(JOBS));
    assert_eq!(d.outcome(&more).await?, all_completed_once(50));
    for agent in d.agent_names() {
        let w = d.get(&format!("/api/supervisor/workers/{agent}")).await?;
        assert!(
            w["status"] == "idle" || w["status"] == "busy",
            "agent {agent} did not survive the controller's restart: {w}"
        );
    }
    let all: Vec<String> = ids.iter().chain(&more).cloned().collect();
    report(&d, &all).await
}

/// What a job finds out about the agent that runs it and the job beside
/// it, as the agent runs in its container as deployed.
const PROBE: &str = r#"id -un
agent=""
for p in /proc/[0-9]*; do
  tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q '^/usr/local/bin/worker-agent' && agent="${p#/proc/}"
done
[ -n "$agent" ] && echo "agent-found"
cat "/proc/$agent/environ" >/dev/null 2>&1 && echo "read-agent-environ" || echo "no-agent-environ"
ls /var/lib/orchestrator-agent/work/*/ >/dev/null 2>&1 && echo "listed-workdirs" || echo "no-workdir-list"
cat "$(cat /tmp/first-job-dir)/secret" >/dev/null 2>&1 && echo "read-other-job" || echo "no-other-job"
"#;

#[tokio::test]
async fn a_job_in_a_deployed_agent_cannot_read_the_agent_or_the_job_beside_it() -> anyhow::Result<()> {
    let d = Deployment::start(1, 2).await?;
    let agent = d.agent_names()[0].clone();
    let worker = d.get(&format!("/api/supervisor/workers/{agent}")).await?;
    let isolation = &worker["isolation"];
    assert_eq!(isolation["cgroup"], "v1", "{worker}");
    assert_eq!(
        isolation["job_user"], "orchestrator-job-0..orchestrator-job-1",
        "{worker}"
    );
    assert_eq!(isolation["disabled"], serde_json::json!([]), "{worker}");
    // The first job leaves a secret in its working directory (readable by
    // anyone who can reach it) and says where, then waits.
    let first = "umask 022; echo s3cret > secret; pwd > /tmp/first-job-dir; sleep 8";
    let first = d.submit_jobs(1, &["/bin/sh", "-c", first]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = d.submit_jobs(1, &["/bin/sh", "-c", PROBE]).await?;
    let job = d.wait_ended(&second[0]).await?;
    assert_eq!(job["status"], "completed", "{job}");
    let output = d.get(&format!("/api/jobs/{}/output", second[0])).await?;
    let stdout = output["stdout"].as_str().unwrap_or_default();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "orchestrator-job-1",
            "agent-found",
            "no-agent-environ",
            "no-workdir-list",
            "no-other-job"
        ],
        "{output}"
    );
    assert_eq!(d.wait_ended(&first[0]).await?["status"], "completed");
    Ok(())
}
