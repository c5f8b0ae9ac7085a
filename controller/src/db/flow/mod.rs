//! The job flow's state changes, driven by agents: claiming a shard,
//! finishing it, heartbeats, and the reaper's decisions about lost workers
//! and overdue jobs. Each public function runs inside the caller's
//! transaction and locks the job row first, so concurrent reports about one
//! job are applied one at a time; fencing on (job, attempt, shard, worker)
//! makes duplicate and stale reports change nothing.

use super::jobs::{self, EventMeta};
use super::{outbox, parse_status, workers, Cached, DbError};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use orchestrator_shared::api::{ClaimDecision, ClaimRequest};
use orchestrator_shared::messages::{ControlCommand, ShardOutcome, CONTROL_EXCHANGE};
use orchestrator_shared::{JobStatus, WorkerStatus};
use std::time::Duration;
use uuid::Uuid;

/// The job row fields the flow decides on.
#[derive(Debug, Clone, Copy)]
struct Locked {
    status: JobStatus,
    attempts: i32,
    required_workers: i32,
    max_retries: i32,
}

async fn lock_job(tx: &Transaction<'_>, job_id: Uuid) -> Result<Option<Locked>, DbError> {
    let row = tx
        .row_opt(
            "SELECT status, attempts, required_workers, max_retries FROM jobs WHERE job_id = $1 FOR NO KEY UPDATE",
            &[&job_id],
        )
        .await?;
    row.map(|r| {
        Ok(Locked {
            status: parse_status(&r, "status")?,
            attempts: r.try_get(1)?,
            required_workers: r.try_get(2)?,
            max_retries: r.try_get(3)?,
        })
    })
    .transpose()
}

/// A claim's answer, with the reason in words for the agent's log.
pub type Claim = (ClaimDecision, String);

/// Decides whether `req.worker_id` may run the shard now, recording the
/// start when it may: the first shard of a queued attempt moves the job to
/// `running`; a shard held by an agent whose channel closed (the broker
/// redelivered it) is taken over; anything finished or stale is skipped.
pub async fn claim(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<Claim, DbError> {
    let Some(job) = lock_job(tx, req.job_id).await? else {
        return Ok((ClaimDecision::Skip, "unknown job".into()));
    };
    let current = match job.status {
        // The relay published the message but has not yet committed the
        // job as queued: record that step here (the relay's own update
        // then finds nothing pending and changes nothing).
        JobStatus::Pending if req.attempt == job.attempts + 1 => {
            jobs::mark_queued(tx, &[req.job_id]).await?;
            false
        }
        JobStatus::Queued if req.attempt == job.attempts + 1 => false,
        JobStatus::Running if req.attempt == job.attempts => true,
        status => {
            return Ok((
                ClaimDecision::Skip,
                format!("job is {status} at attempt {}", job.attempts),
            ))
        }
    };
    if req.shard_index < 0 || req.shard_index >= job.required_workers {
        return Ok((ClaimDecision::Skip, "no such shard".into()));
    }
    let other_shard = tx
        .row_opt(
            "SELECT 1 FROM job_shards WHERE job_id = $1 AND attempt = $2 AND worker_id = $3 AND shard_index <> $4",
            &[&req.job_id, &req.attempt, &req.worker_id, &req.shard_index],
        )
        .await?;
    if other_shard.is_some() {
        return Ok((
            ClaimDecision::Requeue,
            "this worker runs another shard of the job".into(),
        ));
    }
    let decision = if current {
        claim_running(tx, req).await?
    } else {
        start_job(tx, req).await?
    };
    if decision.0 == ClaimDecision::Run {
        workers::claimed(tx, &req.worker_id).await?;
    }
    Ok(decision)
}

async fn start_job(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<Claim, DbError> {
    let meta = EventMeta {
        worker_id: Some(req.worker_id.clone()),
        reason: Some(format!("started attempt {}", req.attempt)),
        ..EventMeta::default()
    };
    jobs::transition(tx, req.job_id, JobStatus::Queued, JobStatus::Running, &meta).await?;
    insert_shard(tx, req).await?;
    Ok((ClaimDecision::Run, "started".into()))
}

async fn insert_shard(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<(), DbError> {
    tx.exec(
        "INSERT INTO job_shards (job_id, shard_index, attempt, worker_id, status) VALUES ($1, $2, $3, $4, 'running')",
        &[&req.job_id, &req.shard_index, &req.attempt, &req.worker_id],
    )
    .await?;
    Ok(())
}

async fn claim_running(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<Claim, DbError> {
    let holder = tx
        .row_opt(
            "SELECT worker_id, status FROM job_shards WHERE job_id = $1 AND shard_index = $2 AND attempt = $3",
            &[&req.job_id, &req.shard_index, &req.attempt],
        )
        .await?;
    let Some(row) = holder else {
        insert_shard(tx, req).await?;
        return Ok((ClaimDecision::Run, "shard started".into()));
    };
    let worker: Option<String> = row.try_get(0)?;
    let status: String = row.try_get(1)?;
    if status != "running" {
        return Ok((ClaimDecision::Skip, format!("shard already {status}")));
    }
    if worker.as_deref() == Some(req.worker_id.as_str()) {
        return Ok((ClaimDecision::Run, "resumed after redelivery".into()));
    }
    if !req.redelivered {
        return Ok((ClaimDecision::Requeue, "shard held by another worker".into()));
    }
    tx.exec(
        "UPDATE job_shards SET worker_id = $4, started_at = now() WHERE job_id = $1 AND shard_index = $2 AND attempt = $3",
        &[&req.job_id, &req.shard_index, &req.attempt, &req.worker_id],
    )
    .await?;
    Ok((
        ClaimDecision::Run,
        format!("taken over from {}", worker.unwrap_or_default()),
    ))
}

/// A finished shard as an agent reported it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Reporting agent.
    pub worker_id: String,
    /// The job.
    pub job_id: Uuid,
    /// The attempt it ran.
    pub attempt: i32,
    /// The shard.
    pub shard_index: i32,
    /// How it ended.
    pub outcome: ShardOutcome,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Tail of stdout.
    pub stdout_tail: String,
    /// Tail of stderr.
    pub stderr_tail: String,
    /// Failure text.
    pub error: Option<String>,
}

fn shard_status(outcome: ShardOutcome) -> &'static str {
    match outcome {
        ShardOutcome::Succeeded => "completed",
        ShardOutcome::Failed => "failed",
        ShardOutcome::Cancelled => "cancelled",
        ShardOutcome::TimedOut => "timed_out",
    }
}

/// Retry timing: exponential from `base`, capped at `max`, with ±20% jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based), jittered.
    pub fn delay(&self, attempt: i32, jitter_unit: f64) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let raw = self.base.saturating_mul(2u32.saturating_pow(exp)).min(self.max);
        raw.mul_f64(0.8 + 0.4 * jitter_unit.clamp(0.0, 1.0))
    }
}

/// Applies a finished shard. Only the shard's current holder, for the job's
/// current attempt, while the job runs, changes the job; anything else is
/// recorded on the shard at most. Returns what happened, for the log.
pub async fn finish(tx: &Transaction<'_>, f: &Finished, retry: RetryPolicy) -> Result<&'static str, DbError> {
    let Some(job) = lock_job(tx, f.job_id).await? else {
        return Ok("unknown job");
    };
    let Some(completed_before) = record_shard(tx, f).await? else {
        return Ok("duplicate or stale report");
    };
    if job.status != JobStatus::Running || f.attempt != job.attempts {
        return Ok("recorded on the shard, job not running this attempt");
    }
    let meta = EventMeta {
        worker_id: Some(f.worker_id.clone()),
        reason: f.error.clone(),
        exit_code: f.exit_code,
        error: f.error.clone(),
        stdout_tail: Some(f.stdout_tail.clone()),
        stderr_tail: Some(f.stderr_tail.clone()),
    };
    if f.outcome != ShardOutcome::Succeeded {
        let to = if f.outcome == ShardOutcome::TimedOut {
            JobStatus::TimedOut
        } else {
            JobStatus::Failed
        };
        return fail_or_retry(tx, f.job_id, job, to, meta, retry).await;
    }
    if completed_before + 1 < i64::from(job.required_workers) {
        tx.exec(
            "UPDATE jobs SET stdout_tail = $2, stderr_tail = $3 WHERE job_id = $1",
            &[&f.job_id, &f.stdout_tail, &f.stderr_tail],
        )
        .await?;
        return Ok("shard completed");
    }
    let meta = EventMeta {
        reason: Some("all shards succeeded".into()),
        ..meta
    };
    jobs::transition(tx, f.job_id, JobStatus::Running, JobStatus::Completed, &meta).await?;
    Ok("job completed")
}

/// Records the report on its shard (only the holder's running shard of that
/// attempt changes) and, in the same statement, counts the attempt's shards
/// that had completed before it. `None` if no shard matched (a duplicate or
/// stale report).
async fn record_shard(tx: &Transaction<'_>, f: &Finished) -> Result<Option<i64>, DbError> {
    let row = tx
        .row(
            "WITH s AS (UPDATE job_shards SET status = $5, finished_at = now(), exit_code = $6
                        WHERE job_id = $1 AND shard_index = $2 AND attempt = $3 AND worker_id = $4
                          AND status = 'running' RETURNING 1)
             SELECT (SELECT count(*) FROM s),
                    (SELECT count(*) FROM job_shards WHERE job_id = $1 AND attempt = $3 AND status = 'completed')",
            &[&f.job_id, &f.shard_index, &f.attempt, &f.worker_id, &shard_status(f.outcome), &f.exit_code],
        )
        .await?;
    let updated: i64 = row.try_get(0)?;
    Ok((updated > 0).then_some(row.try_get(1)?))
}

/// After a failed shard: stop the attempt's other shards, then re-queue the
/// job with backoff if retries remain, else finish it as `to`.
async fn fail_or_retry(
    tx: &Transaction<'_>,
    job_id: Uuid,
    job: Locked,
    to: JobStatus,
    meta: EventMeta,
    retry: RetryPolicy,
) -> Result<&'static str, DbError> {
    cancel_running_shards(tx, job_id, job.attempts).await?;
    if job.attempts <= job.max_retries {
        let meta = EventMeta {
            reason: Some(format!(
                "retry after attempt {}: {}",
                job.attempts,
                meta.reason.clone().unwrap_or_default()
            )),
            ..meta
        };
        let queued = jobs::transition(tx, job_id, JobStatus::Running, JobStatus::Queued, &meta).await?;
        let delay = retry.delay(job.attempts, rand_unit());
        jobs::enqueue_dispatch_many(
            tx,
            &[&queued],
            i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
        )
        .await?;
        return Ok("job re-queued for a retry");
    }
    jobs::transition(tx, job_id, JobStatus::Running, to, &meta).await?;
    Ok("job failed")
}

fn rand_unit() -> f64 {
    f64::from(Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX)
}

/// Marks the attempt's still-running shards cancelled and tells their
/// agents to stop them.
pub async fn cancel_running_shards(tx: &Transaction<'_>, job_id: Uuid, attempt: i32) -> Result<(), DbError> {
    let rows = tx
        .rows(
            "UPDATE job_shards SET status = 'cancelled', finished_at = now()
             WHERE job_id = $1 AND attempt = $2 AND status = 'running' RETURNING worker_id",
            &[&job_id, &attempt],
        )
        .await?;
    let payload = serde_json::to_value(ControlCommand::CancelJob { job_id }).unwrap_or_default();
    for row in rows {
        let worker: Option<String> = row.try_get(0)?;
        if let Some(worker) = worker {
            outbox::enqueue(tx, CONTROL_EXCHANGE, &worker, &payload, 9, Some(job_id)).await?;
        }
    }
    Ok(())
}

/// Applies a heartbeat: records it, and moves the worker between idle and
/// busy (or back from offline) to match what it runs.
pub async fn heartbeat(
    client: &impl GenericClient,
    worker_id: &str,
    running: usize,
    paused: bool,
) -> Result<(), DbError> {
    let n = i32::try_from(running).unwrap_or(i32::MAX);
    let w = match workers::heartbeat(client, worker_id, n).await {
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
        Ok(_) | Err(DbError::Transition(_)) | Err(DbError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// An agent drained and exited: it ends `terminated`.
pub async fn stopped(client: &impl GenericClient, worker_id: &str) -> Result<(), DbError> {
    let w = match workers::get(client, worker_id).await {
        Ok(w) => w,
        Err(DbError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
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
    for &job_id in &jobs {
        let reason = format!("worker {worker_id} lost");
        let what = abandon(tx, job_id, JobStatus::Failed, reason, retry).await?;
        tracing::warn!(%job_id, %worker_id, what, "job of a lost agent handled");
    }
    Ok(jobs.len())
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

/// The job's running attempt lost its worker (or ran past its timeout):
/// fail or retry it as a failed shard would.
pub async fn abandon(
    tx: &Transaction<'_>,
    job_id: Uuid,
    to: JobStatus,
    reason: String,
    retry: RetryPolicy,
) -> Result<&'static str, DbError> {
    let Some(job) = lock_job(tx, job_id).await? else {
        return Ok("unknown job");
    };
    if job.status != JobStatus::Running {
        return Ok("job no longer running");
    }
    let meta = EventMeta {
        reason: Some(reason.clone()),
        error: Some(reason),
        ..EventMeta::default()
    };
    fail_or_retry(tx, job_id, job, to, meta, retry).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_caps_and_jitters_within_twenty_percent() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(p.delay(10, 0.5), Duration::from_secs(1));
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(80));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(120));
        assert_eq!(p.delay(i32::MIN, 0.5), Duration::from_millis(100));
        assert!((0.0..=1.0).contains(&rand_unit()));
    }
}
