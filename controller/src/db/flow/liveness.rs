//! Whether agents are alive: heartbeats move workers between idle and busy,
//! a stopped agent ends terminated, a silent one gets a liveness probe and,
//! if still silent, goes offline with its jobs failed or retried; jobs past
//! their timeout are found for the reaper.

use super::finish::abandon;
use super::RetryPolicy;
use crate::db::{workers, Cached, DbError};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use orchestrator_shared::{JobStatus, WorkerStatus};
use std::time::Duration;
use uuid::Uuid;

/// Applies a heartbeat: records it, and moves the worker between idle and
/// busy (or back from offline) to match what it runs.
pub async fn heartbeat(
    client: &impl GenericClient,
    worker_id: &str,
    running: usize,
    paused: bool,
    generation: i64,
) -> Result<(), DbError> {
    let n = i32::try_from(running).unwrap_or(i32::MAX);
    let w = match workers::heartbeat(client, worker_id, n, generation).await {
        Ok(w) => w,
        Err(DbError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let target = match (w.status, paused, n > 0) {
        (WorkerStatus::Offline | WorkerStatus::Failed, true, _) => WorkerStatus::Idle,
        (WorkerStatus::Idle | WorkerStatus::Offline | WorkerStatus::Failed, false, true) => {
            WorkerStatus::Busy
        }
        (WorkerStatus::Busy | WorkerStatus::Offline | WorkerStatus::Failed, false, false) => {
            WorkerStatus::Idle
        }
        _ => return Ok(()),
    };
    match workers::transition(client, worker_id, w.status, target).await {
        Ok(_) | Err(DbError::Transition(_)) | Err(DbError::ChangedConcurrently { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// An agent drained and exited: it ends `terminated`.
pub async fn stopped(client: &impl GenericClient, worker_id: &str, generation: i64) -> Result<(), DbError> {
    let w = match workers::get(client, worker_id).await {
        Ok(w) => w,
        Err(DbError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if generation != 0 && generation != w.generation {
        tracing::info!(%worker_id, generation, current = w.generation, "Stopped of an earlier incarnation ignored");
        return Ok(());
    }
    if matches!(
        w.status,
        WorkerStatus::Idle | WorkerStatus::Busy | WorkerStatus::Paused
    ) {
        workers::transition(client, worker_id, w.status, WorkerStatus::Terminating).await?;
    }
    match workers::transition_to(client, worker_id, WorkerStatus::Terminated).await {
        Ok(_) | Err(DbError::Transition(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Workers whose last heartbeat is older than `timeout` and who are not
/// already offline or gone, with the database's clock at the time of the
/// check (the `since` of their liveness probes).
pub async fn stale_workers(
    client: &impl GenericClient,
    timeout: Duration,
) -> Result<Vec<(String, DateTime<Utc>)>, DbError> {
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let rows = client
        .rows(
            "SELECT worker_id, now() FROM workers WHERE status IN ('idle', 'busy', 'paused', 'terminating')
             AND last_heartbeat_at < now() - make_interval(secs => $1::bigint / 1000.0)",
            &[&ms],
        )
        .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// Applies a liveness probe: if `worker_id` has sent no heartbeat since
/// `since` (every event it sent before the probe is applied by now), it
/// goes offline and each job it was running fails or is retried. Returns
/// how many jobs that touched; a worker that spoke up meanwhile is left
/// alone.
pub async fn probe(
    tx: &Transaction<'_>,
    worker_id: &str,
    since: DateTime<Utc>,
    retry: RetryPolicy,
) -> Result<usize, DbError> {
    if !workers::mark_lost(tx, worker_id, since).await? {
        return Ok(0);
    }
    tracing::warn!(%worker_id, "agent missed its heartbeats: offline");
    let jobs = shards_of(tx, worker_id).await?;
    let wanted = wanted_shards_of(tx, worker_id).await?;
    for &job_id in &jobs {
        if wanted.contains(&job_id) {
            // Another agent asked for the shard (its delivery came back to
            // the broker) and is offered it again shortly: that claim now
            // finds the holder offline and takes it over, so the job keeps
            // its attempt instead of failing.
            tracing::info!(%job_id, %worker_id, "shard of a lost agent left to the agent taking it over");
            continue;
        }
        let reason = format!("worker {worker_id} lost");
        let what = abandon(tx, job_id, JobStatus::Failed, reason, retry).await?;
        tracing::warn!(%job_id, %worker_id, what, "job of a lost agent handled");
    }
    Ok(jobs.len())
}

/// Jobs whose running shard held by `worker_id` another agent has asked to
/// take over (see `claim`).
async fn wanted_shards_of(client: &impl GenericClient, worker_id: &str) -> Result<Vec<Uuid>, DbError> {
    let rows = client
        .rows(
            "SELECT job_id FROM job_shards
             WHERE worker_id = $1 AND status = 'running' AND takeover_wanted_at IS NOT NULL",
            &[&worker_id],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Running shards of current attempts held by `worker_id`.
pub async fn shards_of(client: &impl GenericClient, worker_id: &str) -> Result<Vec<Uuid>, DbError> {
    let rows = client
        .rows(
            "SELECT DISTINCT s.job_id FROM job_shards s JOIN jobs j ON j.job_id = s.job_id
             WHERE s.worker_id = $1 AND s.status = 'running' AND s.attempt = j.attempts AND j.status = 'running'",
            &[&worker_id],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Running jobs whose current attempt started more than their timeout plus
/// `grace` ago (the agent should have stopped them; this is the backstop).
pub async fn overdue_jobs(client: &impl GenericClient, grace: Duration) -> Result<Vec<Uuid>, DbError> {
    let ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let rows = client
        .rows(
            "SELECT j.job_id FROM jobs j WHERE j.status = 'running' AND j.timeout_seconds IS NOT NULL
               AND (SELECT min(s.started_at) FROM job_shards s WHERE s.job_id = j.job_id AND s.attempt = j.attempts)
                   < now() - make_interval(secs => j.timeout_seconds + $1::bigint / 1000.0)",
            &[&ms],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}
