//! Claims: an agent asks whether it may run a shard it received; the first
//! shard of an attempt starts the job, a redelivered shard is taken over,
//! anything finished or stale is skipped.

use super::{lock_job, parse_status};
use crate::db::jobs::{self, EventMeta};
use crate::db::{workers, Cached, DbError};
use deadpool_postgres::Transaction;
use orchestrator_shared::api::{ClaimDecision, ClaimRequest};
use orchestrator_shared::backoff::Backoff;
use orchestrator_shared::{JobStatus, ShardStatus};
use std::time::Duration;

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
        return defer(tx, req).await;
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

/// Starts the job's attempt with this shard.
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

/// Records the shard as running on the claiming agent; a job that was
/// waiting for a worker no longer is (same statement: no extra round trip).
async fn insert_shard(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<(), DbError> {
    tx.exec(
        "WITH s AS (INSERT INTO job_shards (job_id, shard_index, attempt, worker_id, status)
                    VALUES ($1, $2, $3, $4, 'running'))
         UPDATE jobs SET waiting_for = NULL WHERE job_id = $1 AND waiting_for IS NOT NULL",
        &[&req.job_id, &req.shard_index, &req.attempt, &req.worker_id],
    )
    .await?;
    Ok(())
}

/// The delays of a shard that waits for a worker of its own: a quarter of a
/// second first (another agent is usually free), doubling to 30 s, so a job
/// wider than the live fleet costs a claim every 30 s, not two a second.
const DEFER: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

/// The claiming agent already runs another shard of this job, and each
/// shard needs a worker of its own. Rather than handing the delivery back
/// to the broker (which offered it again at once, to an agent that could
/// not take it either: a claim loop), the shard is dispatched again through
/// the outbox after a growing delay, the job says what it waits for, and
/// the agent is told to drop this delivery.
async fn defer(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<Claim, DbError> {
    let row = tx
        .row(
            "UPDATE jobs SET deferrals = deferrals + 1,
                 waiting_for = format('waiting for a worker for each of its %s shards: %s live',
                     required_workers, (SELECT count(*) FROM workers WHERE status IN ('idle', 'busy')))
             WHERE job_id = $1 RETURNING deferrals",
            &[&req.job_id],
        )
        .await?;
    let deferrals: i32 = row.try_get(0)?;
    let delay = DEFER.delay(u32::try_from(deferrals.saturating_sub(1)).unwrap_or(0));
    let job = jobs::get(tx, req.job_id).await?;
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    jobs::enqueue_shard_dispatch(tx, &job, req.attempt, req.shard_index, delay_ms).await?;
    let reason = format!("deferred {delay:?}: this worker runs another shard of the job");
    Ok((ClaimDecision::Skip, reason))
}

/// A claim for a shard of a job already running this attempt.
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
    let status: ShardStatus = parse_status(&row, "status")?;
    if status != ShardStatus::Running {
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
