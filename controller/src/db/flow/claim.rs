//! Claims: an agent asks whether it may run a shard it received; the first
//! shard of an attempt starts the job, a shard whose holder is gone is
//! taken over, anything finished or stale is skipped. A `run` answer
//! carries what to run, from the job's row: the agent never runs what a
//! broker message says.
//!
//! Takeover is never on the claiming agent's word alone. The broker marks
//! a delivery redelivered when its previous holder's channel closed, but
//! any agent can say so; the shard changes hands only when the controller
//! itself sees the holder gone: offline, stopped, failed, registered again
//! since (a new incarnation), or silent for longer than the heartbeat
//! timeout. Otherwise the shard is marked as wanted and dispatched again
//! after a short delay; if the reaper then finds the holder lost, it hands
//! the shard to that next claim instead of failing the job.

use super::{parse_status, shard_work, Locked, LOCKED_COLUMNS};
use crate::db::jobs::{self, EventMeta};
use crate::db::{workers, Cached, DbError};
use deadpool_postgres::Transaction;
use orchestrator_shared::api::{ClaimDecision, ClaimRequest, ShardWork};
use orchestrator_shared::backoff::Backoff;
use orchestrator_shared::{JobStatus, ShardStatus};
use std::time::Duration;

/// A claim's answer, with the reason in words for the agent's log.
pub type Claim = (ClaimDecision, String);

/// Who claims: the request, the claiming worker's current generation
/// (which the shard records), and how long a holder may be silent before
/// it counts as gone.
#[derive(Debug, Clone, Copy)]
struct Claimant<'a> {
    /// The claim, its worker id already checked against the credential.
    req: &'a ClaimRequest,
    /// The claiming worker's registration generation.
    generation: i64,
    /// The heartbeat timeout.
    silent_after: Duration,
}

/// Decides whether `req.worker_id` (already checked against the caller's
/// credential) may run the shard now, recording the start when it may (see
/// the module's doc); with `run`, answers what to run. `silent_after` is
/// the heartbeat timeout. A worker that never registered is
/// `NotRegistered`.
pub async fn claim(
    tx: &Transaction<'_>,
    req: &ClaimRequest,
    silent_after: Duration,
) -> Result<(Claim, Option<ShardWork>), DbError> {
    let answer = decide_claim(tx, req, silent_after).await?;
    if answer.0 .0 == ClaimDecision::Run {
        workers::claimed(tx, &req.worker_id).await?;
    }
    Ok(answer)
}

/// [`claim`] without marking the worker busy, which a batch of claims does
/// once for all of them.
pub(super) async fn decide_claim(
    tx: &Transaction<'_>,
    req: &ClaimRequest,
    silent_after: Duration,
) -> Result<(Claim, Option<ShardWork>), DbError> {
    let Some((job, work, generation, placed)) = lock_for_claim(tx, req).await? else {
        return Ok(((ClaimDecision::Skip, "unknown job".into()), None));
    };
    let generation = generation.ok_or_else(|| DbError::NotRegistered(req.worker_id.clone()))?;
    if !placed && !job.status.is_terminal() {
        return Ok((elsewhere(tx, req).await?, None));
    }
    let who = Claimant {
        req,
        generation,
        silent_after,
    };
    let decision = decide(tx, who, job).await?;
    if decision.0 != ClaimDecision::Run {
        return Ok((decision, None));
    }
    Ok((decision, Some(work)))
}

/// Locks the job row and reads, in the same statement, what the flow
/// decides on, what the shard runs, the claiming worker's generation
/// (`None`: it never registered), and whether the worker may run the job
/// at all (its pool and selector; an unregistered worker may); `None` for
/// an unknown job.
async fn lock_for_claim(
    tx: &Transaction<'_>,
    req: &ClaimRequest,
) -> Result<Option<(Locked, ShardWork, Option<i64>, bool)>, DbError> {
    let sql = format!(
        "SELECT {LOCKED_COLUMNS}, task_description, command, timeout_seconds,
                memory_mb, cpu_millis, max_pids,
                (SELECT generation FROM workers WHERE worker_id = $2) AS generation,
                coalesce((SELECT jobs.pool = ANY(w.pools) AND w.labels @> jobs.selector
                          FROM workers w WHERE w.worker_id = $2), true) AS placed
         FROM jobs WHERE job_id = $1 FOR NO KEY UPDATE"
    );
    let row = tx.row_opt(&sql, &[&req.job_id, &req.worker_id]).await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some((
        Locked::from_row(&r)?,
        shard_work(&r)?,
        r.try_get("generation")?,
        r.try_get("placed")?,
    )))
}

/// The claiming worker is not of the job's pool or lacks a label its
/// selector requires: the broker routes a job only to its class's queue,
/// which only matching agents consume, so this is defence in depth (a
/// worker that re-registered with other labels while it still held a
/// delivery). The delivery is dropped and the shard dispatched again to
/// its class's queue after a growing delay, as a deferral: handing it back
/// to the broker could offer it to the same agent at once, in a loop.
async fn elsewhere(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<Claim, DbError> {
    let delay = dispatch_again(tx, req, DEFER).await?;
    Ok((
        ClaimDecision::Skip,
        format!(
            "this worker is not of the job's pool or lacks its selector's labels; offered again in {delay:?}"
        ),
    ))
}

/// The decision of [`claim`] on the locked `job`, recorded.
async fn decide(tx: &Transaction<'_>, who: Claimant<'_>, job: Locked) -> Result<Claim, DbError> {
    let req = who.req;
    let current = match job.status {
        // The relay published the message but has not yet committed the
        // job as queued: record that step here (the relay's own update
        // then finds nothing pending and changes nothing).
        JobStatus::Pending if req.attempt == job.attempts + 1 => {
            if jobs::mark_queued(tx, &[req.job_id]).await? == 0 {
                // No dispatch was written: it waits for dependencies.
                return Ok((ClaimDecision::Skip, "job waits for its dependencies".into()));
            }
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
    if current {
        claim_running(tx, who).await
    } else {
        start_job(tx, who).await
    }
}

/// Starts the job's attempt with this shard.
async fn start_job(tx: &Transaction<'_>, who: Claimant<'_>) -> Result<Claim, DbError> {
    let req = who.req;
    let meta = EventMeta {
        worker_id: Some(req.worker_id.clone()),
        reason: Some(format!("started attempt {}", req.attempt)),
        ..EventMeta::default()
    };
    jobs::transition(tx, req.job_id, JobStatus::Queued, JobStatus::Running, &meta).await?;
    insert_shard(tx, who).await?;
    Ok((ClaimDecision::Run, "started".into()))
}

/// Records the shard as running on the claiming agent's incarnation; a
/// job that was waiting for a worker no longer is (same statement: no
/// extra round trip).
async fn insert_shard(tx: &Transaction<'_>, who: Claimant<'_>) -> Result<(), DbError> {
    let req = who.req;
    tx.exec(
        "WITH s AS (INSERT INTO job_shards (job_id, shard_index, attempt, worker_id, worker_generation, status)
                    VALUES ($1, $2, $3, $4, $5, 'running'))
         UPDATE jobs SET waiting_for = NULL WHERE job_id = $1 AND waiting_for IS NOT NULL",
        &[&req.job_id, &req.shard_index, &req.attempt, &req.worker_id, &who.generation],
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
    tx.exec(
        "UPDATE jobs SET waiting_for = format('waiting for a worker for each of its %s shards: %s live',
             required_workers, (SELECT count(*) FROM workers WHERE status IN ('idle', 'busy')))
         WHERE job_id = $1",
        &[&req.job_id],
    )
    .await?;
    let delay = dispatch_again(tx, req, DEFER).await?;
    let reason = format!("deferred {delay:?}: this worker runs another shard of the job");
    Ok((ClaimDecision::Skip, reason))
}

/// The delays of a shard another agent wants to take over while its holder
/// still looks alive: short, and at most 5 s, so that once the holder is
/// found lost the shard moves on within seconds.
const TAKEOVER_RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

/// Dispatches the shard of `req` again through the outbox after a delay
/// that grows with the job's deferrals, on `backoff`; answers the delay.
async fn dispatch_again(
    tx: &Transaction<'_>,
    req: &ClaimRequest,
    backoff: Backoff,
) -> Result<Duration, DbError> {
    let row = tx
        .row(
            "UPDATE jobs SET deferrals = deferrals + 1 WHERE job_id = $1 RETURNING deferrals",
            &[&req.job_id],
        )
        .await?;
    let deferrals: i32 = row.try_get(0)?;
    let delay = backoff.delay(u32::try_from(deferrals.saturating_sub(1)).unwrap_or(0));
    let job = jobs::get(tx, req.job_id).await?;
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    jobs::enqueue_shard_dispatch(tx, &job, req.attempt, req.shard_index, delay_ms).await?;
    Ok(delay)
}

/// A claim for a shard of a job already running this attempt.
async fn claim_running(tx: &Transaction<'_>, who: Claimant<'_>) -> Result<Claim, DbError> {
    let req = who.req;
    let holder = tx
        .row_opt(
            "SELECT worker_id, status, takeover_wanted_at IS NOT NULL FROM job_shards
             WHERE job_id = $1 AND shard_index = $2 AND attempt = $3",
            &[&req.job_id, &req.shard_index, &req.attempt],
        )
        .await?;
    let Some(row) = holder else {
        insert_shard(tx, who).await?;
        return Ok((ClaimDecision::Run, "shard started".into()));
    };
    let worker: Option<String> = row.try_get(0)?;
    let status: ShardStatus = parse_status(&row, "status")?;
    let wanted: bool = row.try_get(2)?;
    if status != ShardStatus::Running {
        return Ok((ClaimDecision::Skip, format!("shard already {status}")));
    }
    if worker.as_deref() == Some(req.worker_id.as_str()) {
        return Ok((ClaimDecision::Run, "resumed after redelivery".into()));
    }
    if !req.redelivered && !wanted {
        return Ok((ClaimDecision::Requeue, "shard held by another worker".into()));
    }
    let holder = worker.unwrap_or_default();
    if holder_gone(tx, req, who.silent_after).await? {
        take_over(tx, who).await?;
        return Ok((
            ClaimDecision::Run,
            format!("taken over from {holder}, which is gone"),
        ));
    }
    tx.exec(
        "UPDATE job_shards SET takeover_wanted_at = coalesce(takeover_wanted_at, now())
         WHERE job_id = $1 AND shard_index = $2 AND attempt = $3",
        &[&req.job_id, &req.shard_index, &req.attempt],
    )
    .await?;
    let delay = dispatch_again(tx, req, TAKEOVER_RETRY).await?;
    Ok((
        ClaimDecision::Skip,
        format!("held by {holder}, which looks alive; offered again in {delay:?}"),
    ))
}

/// Whether the shard's holder, as the controller sees it, no longer runs
/// it: no such worker, offline, stopped or failed, a newer incarnation
/// than the one that claimed it, or silent past the heartbeat timeout.
async fn holder_gone(
    tx: &Transaction<'_>,
    req: &ClaimRequest,
    silent_after: Duration,
) -> Result<bool, DbError> {
    let ms = i64::try_from(silent_after.as_millis()).unwrap_or(i64::MAX);
    let row = tx
        .row(
            "SELECT NOT EXISTS (
                 SELECT 1 FROM job_shards s JOIN workers w ON w.worker_id = s.worker_id
                 WHERE s.job_id = $1 AND s.shard_index = $2 AND s.attempt = $3
                   AND w.status IN ('idle', 'busy', 'paused', 'terminating')
                   AND (s.worker_generation IS NULL OR w.generation = s.worker_generation)
                   AND w.last_heartbeat_at >= now() - make_interval(secs => $4::bigint / 1000.0))",
            &[&req.job_id, &req.shard_index, &req.attempt, &ms],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Moves the shard to the claiming agent's incarnation.
async fn take_over(tx: &Transaction<'_>, who: Claimant<'_>) -> Result<(), DbError> {
    let req = who.req;
    tx.exec(
        "UPDATE job_shards SET worker_id = $4, worker_generation = $5, started_at = now(), takeover_wanted_at = NULL
         WHERE job_id = $1 AND shard_index = $2 AND attempt = $3",
        &[&req.job_id, &req.shard_index, &req.attempt, &req.worker_id, &who.generation],
    )
    .await?;
    Ok(())
}
