//! Many claims of one agent answered in one transaction. Every answer is
//! the one [`claim`](super::claim::claim) gives alone; what changes is the
//! cost. The batch's job rows are locked at once in id order (so two
//! batches never wait on each other in a cycle), and the common case, the
//! first claim of a queued job's next attempt (or of a pending one, which
//! the relay has published but not yet marked queued), is recorded for the
//! whole batch by one statement: the jobs become `running`, their events and
//! their shards are written together. Anything else (a shard of a running
//! job, a redelivery, two shards of one job in the batch) is decided one
//! claim at a time by the single claim's rules, inside the same
//! transaction.

use super::claim::{decide_claim, Claim};
use super::{named_once, shard_work};
use crate::db::{workers, Cached, DbError};
use deadpool_postgres::Transaction;
use orchestrator_shared::api::{ClaimDecision, ShardClaim, ShardWork};
use orchestrator_shared::{JobStatus, StateMachine, WorkerStatus};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Answers `claims` of `worker_id` (already checked against the caller's
/// credential), in their order; `silent_after` is the heartbeat timeout.
/// A worker that never registered is `NotRegistered`, whatever it claims.
pub async fn claim_batch(
    tx: &Transaction<'_>,
    worker_id: &str,
    claims: &[ShardClaim],
    silent_after: Duration,
) -> Result<Vec<(Claim, Option<ShardWork>)>, DbError> {
    // Sent together, one round trip; Postgres runs them in order, so the
    // batch's rows are locked in id order before any is started (a small
    // batch's with the plans its statements were given once).
    let ((), (), mut started) = futures::try_join!(
        super::plan_once(tx, claims.len()),
        lock_batch(tx, worker_id, claims),
        start_fresh(tx, worker_id, claims)
    )?;
    let mut answers: Vec<Option<(Claim, Option<ShardWork>)>> = claims
        .iter()
        .map(|c| {
            let work = started.remove(&c.job_id)?;
            Some(((ClaimDecision::Run, "started".to_owned()), Some(work)))
        })
        .collect();
    let mut rest: Vec<usize> = (0..claims.len()).filter(|&i| answers[i].is_none()).collect();
    rest.sort_by_key(|&i| claims[i].job_id);
    let mut ran_one_by_one = false;
    for i in rest {
        let answer = decide_claim(tx, &claims[i].by(worker_id), silent_after).await?;
        ran_one_by_one |= answer.0 .0 == ClaimDecision::Run;
        answers[i] = Some(answer);
    }
    // The one-statement path recorded its starts on the worker itself.
    if ran_one_by_one {
        workers::claimed(tx, worker_id).await?;
    }
    Ok(answers.into_iter().flatten().collect())
}

/// Locks the batch's job rows in id order and checks that the worker has
/// registered (`NotRegistered` if not), in one statement.
async fn lock_batch(tx: &Transaction<'_>, worker_id: &str, claims: &[ShardClaim]) -> Result<(), DbError> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.job_id).collect();
    let row = tx
        .row(
            "WITH l AS (SELECT job_id FROM jobs WHERE job_id = ANY($1) ORDER BY job_id FOR NO KEY UPDATE)
             SELECT (SELECT count(*) FROM l), (SELECT generation FROM workers WHERE worker_id = $2)",
            &[&ids, &worker_id],
        )
        .await?;
    let generation: Option<i64> = row.try_get(1)?;
    match generation {
        Some(_) => Ok(()),
        None => Err(DbError::NotRegistered(worker_id.to_owned())),
    }
}

/// The claims the one-statement path may decide: a fresh delivery (not
/// redelivered) of a job that appears once in the batch.
fn fresh(claims: &[ShardClaim]) -> Vec<ShardClaim> {
    let once = named_once(claims.iter().map(|c| c.job_id));
    claims
        .iter()
        .filter(|c| !c.redelivered && once.contains(&c.job_id))
        .copied()
        .collect()
}

/// [`start_fresh`]'s statement: `$1`–`$3` the claims' job ids, attempts
/// and shard indexes, `$4` the worker.
const START_FRESH: &str = concat!(
    "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[]) AS r(job_id, attempt, shard_index)),
             o AS MATERIALIZED (SELECT jobs.job_id, jobs.status AS was FROM jobs JOIN r ON r.job_id = jobs.job_id),
             j AS (UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1,
                          queued_at = CASE WHEN jobs.status = 'pending' THEN now() ELSE jobs.queued_at END,
                          started_at = coalesce(jobs.started_at, now()), waiting_for = NULL
                   FROM r
                   WHERE jobs.job_id = r.job_id AND (jobs.status IN ('pending', 'queued')) IS TRUE
                     AND jobs.attempts + 1 = r.attempt AND jobs.deps_waiting = 0
                     AND r.shard_index >= 0 AND r.shard_index < jobs.required_workers
                     AND EXISTS (SELECT 1 FROM workers w WHERE w.worker_id = $4
                                 AND jobs.pool = ANY(w.pools) AND w.labels @> jobs.selector)
                   RETURNING jobs.job_id, jobs.attempts, r.shard_index, jobs.task_description, jobs.command,
                             jobs.timeout_seconds, jobs.required_workers, jobs.memory_mb, jobs.cpu_millis, jobs.max_pids),
             e AS (INSERT INTO job_events (job_id, from_status, to_status, worker_id, reason, attempt)
                   SELECT job_id, f, t, w, why, a FROM (
                       SELECT j.job_id, 'pending' AS f, 'queued' AS t, NULL::text AS w, 'published' AS why,
                              j.attempts - 1 AS a, 0 AS step
                       FROM j JOIN o ON o.job_id = j.job_id WHERE o.was = 'pending'
                       UNION ALL
                       SELECT job_id, 'queued', 'running', $4, 'started attempt ' || attempts, attempts, 1 FROM j
                   ) x ORDER BY job_id, step),
             s AS (INSERT INTO job_shards (job_id, shard_index, attempt, worker_id, worker_generation, status)
                   SELECT job_id, shard_index, attempts, $4,
                          (SELECT generation FROM workers WHERE worker_id = $4), 'running' FROM j),
             w AS (",
    workers::record_claim_sql!("$4"),
    " AND EXISTS (SELECT 1 FROM j))
             SELECT * FROM j"
);

/// Starts, in one statement, every fresh claim whose job is `queued` (or
/// still `pending`: the relay published it but has not yet committed that,
/// and the claim records it, as alone) at the attempt before the claimed
/// one with the shard in range: the job becomes `running` with the attempt
/// counted, its events and its shard (held by this incarnation) are
/// written (with the worker's current registration generation), and it no
/// longer waits for a worker; if any started, the worker's row records the
/// claim as [`workers::claimed`] would (busy, heard from), in the same
/// statement rather than a round trip of its own. A job the worker may not
/// run (its pool, its selector), or any job of a worker that never
/// registered, is left to the single claim's rules, which refuse it.
/// Answers the started jobs' work by job id; the caller decides the others
/// one by one.
async fn start_fresh(
    tx: &Transaction<'_>,
    worker_id: &str,
    claims: &[ShardClaim],
) -> Result<HashMap<Uuid, ShardWork>, DbError> {
    let fresh = fresh(claims);
    if fresh.is_empty() {
        return Ok(HashMap::new());
    }
    JobStatus::Pending.transition(JobStatus::Queued)?;
    JobStatus::Queued.transition(JobStatus::Running)?;
    WorkerStatus::Idle.transition(WorkerStatus::Busy)?;
    let ids: Vec<Uuid> = fresh.iter().map(|c| c.job_id).collect();
    let attempts: Vec<i32> = fresh.iter().map(|c| c.attempt).collect();
    let shards: Vec<i32> = fresh.iter().map(|c| c.shard_index).collect();
    let rows = tx
        .rows(START_FRESH, &[&ids, &attempts, &shards, &worker_id])
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("job_id")?, shard_work(r)?)))
        .collect()
}
