//! Faults of the shared parts, each on a multi-host deployment of its own
//! (every part in its container, TLS on every link): two controller
//! replicas serving at once with the leader killed, Postgres killed and
//! started again, and the broker killed (SIGKILL, not a clean stop) and
//! started again, each mid-run. Whatever happens, every job ends
//! `completed` exactly once, nothing is left unsent, no shard ran on two
//! agents at once, and no agent is left busy with nothing.

use integration_tests::multihost::{Deployment, Leftovers, Outcome};
use std::time::{Duration, Instant};

/// Jobs submitted before each fault.
const JOBS: usize = 200;
/// Each job sleeps long enough for the fault to land mid-run.
const JOB: &[&str] = &["/bin/sh", "-c", "sleep 0.4"];
/// How long a killed part stays down.
const DOWN: Duration = Duration::from_secs(5);
/// Longest wait for a replica to notice anything.
const NOTICE: Duration = Duration::from_secs(60);

fn all_completed_once(jobs: &[String]) -> Outcome {
    Outcome {
        completed: i64::try_from(jobs.len()).unwrap_or(i64::MAX),
        not_completed: 0,
        completed_twice: 0,
        never_completed_event: 0,
    }
}

/// Waits until every job of `batches` has ended, then checks each ended
/// `completed` once and nothing was left behind.
async fn check_all(d: &Deployment, batches: &[&[String]]) -> anyhow::Result<()> {
    for ids in batches {
        d.wait_all_ended(ids).await?;
        assert_eq!(d.outcome(ids).await?, all_completed_once(ids));
    }
    assert_eq!(d.settled_leftovers().await?, Leftovers::default());
    Ok(())
}

/// The index of the replica whose `/metrics` says it runs the reaper,
/// once exactly one of the replicas answering does (a killed one does not
/// answer).
async fn wait_leader(d: &Deployment, replicas: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + NOTICE;
    loop {
        let mut leaders = Vec::new();
        for i in 0..replicas {
            if let Ok(text) = d.metrics_of(i).await {
                if text.lines().any(|l| l.trim() == "reaper_leader 1") {
                    leaders.push(i);
                }
            }
        }
        if let [only] = leaders[..] {
            return Ok(only);
        }
        anyhow::ensure!(Instant::now() < deadline, "no single leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls the current replica's `/readyz` until `part` is `state` there
/// (`"down"` with a 503, or `"up"` with a 200 once everything is up).
async fn wait_ready_state(d: &Deployment, part: &str, state: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + NOTICE;
    loop {
        let last = d.readyz().await;
        if let Ok((status, body)) = &last {
            let want = if state == "down" { 503 } else { 200 };
            if *status == want && body[part] == state {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "readyz never said {part} {state}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until replica `index` answers again (after a network cut).
async fn wait_answers(d: &Deployment, index: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + NOTICE;
    while d.metrics_of(index).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "replica {index} never answered again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[tokio::test]
async fn two_replicas_serve_at_once_and_leadership_survives_a_cut_and_a_kill() -> anyhow::Result<()> {
    let mut d = Deployment::start_replicated(2, 3, 4).await?;
    let first = wait_leader(&d, 2).await?;
    let second = 1 - first;
    d.use_replica(first).await?;
    let through_first = d.submit_jobs(JOBS / 2, JOB).await?;
    d.use_replica(second).await?;
    let through_second = d.submit_jobs(JOBS / 2, JOB).await?;
    d.wait_completed(30).await?;

    // The leader cut off the network: its lock's session goes silent, and
    // the other replica takes over; back on the network, it does not lead.
    d.disconnect(&d.controller(first))?;
    assert_eq!(wait_leader(&d, 2).await?, second, "leadership did not move");
    d.reconnect(&d.controller(first))?;
    wait_answers(&d, first).await?;
    assert_eq!(wait_leader(&d, 2).await?, second, "two leaders after the cut");

    // The new leader killed: leadership comes back; the survivor's relay
    // publishes new work and its reaper notices a killed agent.
    d.kill(&d.controller(second))?;
    d.use_replica(first).await?;
    assert_eq!(wait_leader(&d, 2).await?, first, "leadership did not move back");
    let after = d.submit_jobs(50, JOB).await?;
    let agent = d.agent_names()[0].clone();
    d.kill(&agent)?;
    d.wait_worker(&agent, "offline").await?;
    check_all(&d, &[&through_first, &through_second, &after]).await
}

/// Kills `container` mid-run, checks `/readyz` names `part` down, starts it
/// again after [`DOWN`], and checks every job, those submitted while it was
/// down included, completes once.
async fn killed_mid_run(container_of: fn(&Deployment) -> String, part: &str) -> anyhow::Result<()> {
    let d = Deployment::start(2, 4).await?;
    let ids = d.submit_jobs(JOBS, JOB).await?;
    d.wait_completed(30).await?;
    let done: i64 = d
        .db()
        .await?
        .query_one("SELECT count(*) FROM jobs WHERE status = 'completed'", &[])
        .await?
        .get(0);
    assert!(done < JOBS as i64, "every job had ended before the fault");
    let container = container_of(&d);
    d.kill(&container)?;
    let down_at = Instant::now();
    wait_ready_state(&d, part, "down").await?;
    tokio::time::sleep(DOWN.saturating_sub(down_at.elapsed())).await;
    d.start_again(&container)?;
    wait_ready_state(&d, part, "up").await?;
    let after = d.submit_jobs(50, JOB).await?;
    check_all(&d, &[&ids, &after]).await
}

#[tokio::test]
async fn postgres_killed_mid_run_loses_nothing() -> anyhow::Result<()> {
    killed_mid_run(|d| d.infra_names().0, "postgres").await
}

#[tokio::test]
async fn broker_killed_mid_run_loses_nothing() -> anyhow::Result<()> {
    killed_mid_run(|d| d.infra_names().1, "broker").await
}
