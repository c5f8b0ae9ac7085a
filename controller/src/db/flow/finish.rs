//! Shard reports and their consequences: completing the job when its last
//! shard succeeds, failing or retrying it when one fails, and cancelling.

use super::{lock_job, Locked, RetryPolicy};
use crate::db::jobs::{self, EventMeta};
use crate::db::{control, Cached, DbError};
use crate::models::Job;
use deadpool_postgres::Transaction;
use orchestrator_shared::messages::ShardOutcome;
use orchestrator_shared::JobStatus;
use uuid::Uuid;

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
            &[&f.job_id, &f.shard_index, &f.attempt, &f.worker_id, &f.outcome.shard_status().as_str(), &f.exit_code],
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
    control::stop_job_on_agents(tx, job_id, job.attempts).await?;
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

/// A uniform number in [0, 1] for retry jitter.
pub(super) fn rand_unit() -> f64 {
    f64::from(Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX)
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

/// A user's cancel of `job` (locked by the caller): it ends `cancelled` at
/// once, and a running attempt is stopped on its agents. A finished job is
/// the state machine's refusal (409).
pub async fn cancel(tx: &Transaction<'_>, job: &Job) -> Result<Job, DbError> {
    cancel_because(tx, job, "cancelled by user").await
}

/// A cancel as [`cancel`]'s, its event saying `reason` (a schedule's
/// `cancel_previous` says so rather than naming the user).
pub async fn cancel_because(tx: &Transaction<'_>, job: &Job, reason: &str) -> Result<Job, DbError> {
    let meta = EventMeta {
        reason: Some(reason.to_owned()),
        ..EventMeta::default()
    };
    let cancelled = jobs::transition(tx, job.job_id, job.status, JobStatus::Cancelled, &meta).await?;
    if job.status == JobStatus::Running {
        control::stop_job_on_agents(tx, job.job_id, job.attempts).await?;
    }
    Ok(cancelled)
}
