//! Shard reports of a batch, applied set-based where the outcome is plain.
//! Most reports say that the one shard of a running job succeeded, which
//! completes the job; [`finish`](super::finish::finish) does that with
//! three statements per report. Here the batch's job rows are locked in id
//! order by one statement, and every such report is applied by one more:
//! shards recorded (only the holder's running shard of that attempt
//! changes, as alone), jobs completed, events written. Anything else
//! (failures, wider jobs, a second report of one job in the batch, a job
//! not running that attempt) is left to the single report's rules, which
//! the caller applies in order after these.

use super::{Finished, Locked, LOCKED_COLUMNS};
use crate::db::{Cached, DbError};
use deadpool_postgres::Transaction;
use orchestrator_shared::messages::ShardOutcome;
use orchestrator_shared::{JobStatus, StateMachine};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Applies the plain successes among `reports` (see the module's doc) and
/// answers, for each report, whether it has been applied here: its
/// outcome decided (job completed, or nothing changed because the report
/// was not the holder's); `false` ones are the caller's to apply.
pub async fn complete_succeeded(tx: &Transaction<'_>, reports: &[&Finished]) -> Result<Vec<bool>, DbError> {
    if reports.is_empty() {
        return Ok(Vec::new());
    }
    let locked = lock_jobs(tx, reports).await?;
    let mut seen = HashSet::new();
    let plain: Vec<bool> = reports
        .iter()
        .map(|f| {
            let completes = locked.get(&f.job_id).is_some_and(|job| {
                job.status == JobStatus::Running && job.attempts == f.attempt && job.required_workers == 1
            });
            f.outcome == ShardOutcome::Succeeded && completes && seen.insert(f.job_id)
        })
        .collect();
    let chosen: Vec<&Finished> = reports
        .iter()
        .zip(&plain)
        .filter(|(_, p)| **p)
        .map(|(f, _)| *f)
        .collect();
    complete(tx, &chosen).await?;
    Ok(plain)
}

/// Locks the reports' job rows in id order (one statement) and reads what
/// the flow decides on.
async fn lock_jobs(tx: &Transaction<'_>, reports: &[&Finished]) -> Result<HashMap<Uuid, Locked>, DbError> {
    let mut ids: Vec<Uuid> = reports.iter().map(|f| f.job_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!(
        "SELECT {LOCKED_COLUMNS}, job_id FROM jobs WHERE job_id = ANY($1) ORDER BY job_id FOR NO KEY UPDATE"
    );
    let rows = tx.rows(&sql, &[&ids]).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("job_id")?, Locked::from_row(r)?)))
        .collect()
}

/// Records each report on its shard if the reporter holds it running, and
/// completes the jobs whose shard it recorded, with their events: one
/// statement. `chosen` holds at most one report per job, each for a job
/// locked, running that attempt, with one shard.
async fn complete(tx: &Transaction<'_>, chosen: &[&Finished]) -> Result<(), DbError> {
    if chosen.is_empty() {
        return Ok(());
    }
    JobStatus::Running.transition(JobStatus::Completed)?;
    let ids: Vec<Uuid> = chosen.iter().map(|f| f.job_id).collect();
    let attempts: Vec<i32> = chosen.iter().map(|f| f.attempt).collect();
    let shards: Vec<i32> = chosen.iter().map(|f| f.shard_index).collect();
    let workers: Vec<&str> = chosen.iter().map(|f| f.worker_id.as_str()).collect();
    let codes: Vec<Option<i32>> = chosen.iter().map(|f| f.exit_code).collect();
    let stdout: Vec<&str> = chosen.iter().map(|f| f.stdout_tail.as_str()).collect();
    let stderr: Vec<&str> = chosen.iter().map(|f| f.stderr_tail.as_str()).collect();
    let errors: Vec<Option<&str>> = chosen.iter().map(|f| f.error.as_deref()).collect();
    tx.exec(
        "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::int[],
                                         $6::text[], $7::text[], $8::text[])
                    AS r(job_id, attempt, shard_index, worker_id, exit_code, stdout_tail, stderr_tail, error)),
         s AS (UPDATE job_shards SET status = 'completed', finished_at = now(), exit_code = r.exit_code
               FROM r
               WHERE job_shards.job_id = r.job_id AND job_shards.shard_index = r.shard_index
                 AND job_shards.attempt = r.attempt AND job_shards.worker_id = r.worker_id
                 AND job_shards.status = 'running'
               RETURNING job_shards.job_id),
         j AS (UPDATE jobs SET status = 'completed', finished_at = greatest(now(), jobs.started_at),
                      exit_code = coalesce(r.exit_code, jobs.exit_code), error = coalesce(r.error, jobs.error),
                      stdout_tail = r.stdout_tail, stderr_tail = r.stderr_tail
               FROM r
               WHERE jobs.job_id = r.job_id AND jobs.job_id IN (SELECT job_id FROM s)
                 AND jobs.status = 'running' AND jobs.attempts = r.attempt
               RETURNING jobs.job_id, jobs.attempts, r.worker_id)
         INSERT INTO job_events (job_id, from_status, to_status, worker_id, reason, attempt)
         SELECT job_id, 'running', 'completed', worker_id, 'all shards succeeded', attempts FROM j",
        &[&ids, &attempts, &shards, &workers, &codes, &stdout, &stderr, &errors],
    )
    .await?;
    Ok(())
}
