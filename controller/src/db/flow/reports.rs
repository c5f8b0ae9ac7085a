//! Shard reports of a batch, applied set-based where the outcome is plain.
//! Most reports say that the one shard of a running job succeeded, which
//! completes the job; [`finish`](super::finish::finish) does that with
//! three statements per report. Here every such report of the batch is
//! applied by one statement: shards recorded (only the holder's running
//! shard of that attempt changes, as alone), jobs completed, events
//! written. Anything else (failures, wider jobs, a job reported more than
//! once in the batch, a job not running that attempt) is left to the single
//! report's rules, which the caller applies in order after these, in a
//! transaction of its own. The completed jobs' dependents are released in
//! the same transaction as their completion, which is sent at once
//! ([`AtOnce`]): `BEGIN`, the statement and the first step of the release
//! go out together, then `COMMIT` (after the release's other steps when a
//! job had dependents), two round trips where there were four.

use super::{named_once, Finished};
use crate::db::at_once::AtOnce;
use crate::db::jobs::deps;
use crate::db::DbError;
use orchestrator_shared::messages::ShardOutcome;
use orchestrator_shared::{JobStatus, StateMachine};
use std::collections::HashSet;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// Applies the plain successes among `reports` (see the module's doc),
/// committed on `conn`, and answers, for each report, whether it has been
/// applied here: its outcome decided (job completed, or nothing changed
/// because the report was not the holder's); `false` ones are the
/// caller's to apply.
pub async fn complete_succeeded(conn: &mut AtOnce, reports: &[&Finished]) -> Result<Vec<bool>, DbError> {
    let once = named_once(reports.iter().map(|f| f.job_id));
    let candidate = |f: &Finished| f.outcome == ShardOutcome::Succeeded && once.contains(&f.job_id);
    let chosen: Vec<&Finished> = reports.iter().copied().filter(|f| candidate(f)).collect();
    let applied = complete(conn, &chosen).await?;
    Ok(reports
        .iter()
        .map(|f| candidate(f) && applied.contains(&f.job_id))
        .collect())
}

/// In one statement: of `chosen` (at most one report per job), takes those
/// whose job runs that attempt with one shard, records each on its shard
/// if the reporter holds it running, and completes the jobs whose shard it
/// recorded, with their events (a job that stopped running meanwhile, e.g.
/// cancelled, is not completed: its shard alone records the report, as the
/// single report's rules do). Answers the jobs taken.
///
/// The shard is matched on the worker with `IS NOT DISTINCT FROM` (the
/// same as `=` here: a report always names its worker) so that the planner
/// cannot look shards up through `job_shards_worker`, the index of a
/// worker's running shards: under load its entries for shards completed
/// since the last vacuum made each lookup walk hundreds of them (EXPLAIN
/// ANALYZE mid-run: 416 rows removed per report, 73 of 133 ms), where the
/// job's own shards are one or two entries. The jobs' status is tested
/// as `(status = 'running') IS TRUE` for the same reason: with a bare
/// `status = 'running'` the planner could reach the jobs through
/// `jobs_status_created` and walk every entry left there by jobs that
/// were running since the last vacuum. A `loadgen` whose completion poll
/// scanned that index (marking those entries dead as it went) hid it;
/// polling every 250 ms instead of 50, reports took 168 ms a call
/// against 34 and finished jobs 5 s after they started.
///
/// Sent with its transaction's `BEGIN` and with the first step of the
/// release of the completed jobs' dependents
/// ([`deps::RELEASE_FINISHED_HERE`]); committed before it answers.
async fn complete(conn: &mut AtOnce, chosen: &[&Finished]) -> Result<HashSet<Uuid>, DbError> {
    if chosen.is_empty() {
        return Ok(HashSet::new());
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
    let params: [&(dyn ToSql + Sync); 8] = [
        &ids, &attempts, &shards, &workers, &codes, &stdout, &stderr, &errors,
    ];
    // Prepared first (a cache hit sends nothing), so that the three go out
    // together and in this order.
    let statement = conn.client().prepare_cached(COMPLETE).await?;
    let release = conn.client().prepare_cached(deps::RELEASE_FINISHED_HERE).await?;
    let begin = conn.begin(chosen.len());
    let c = conn.client();
    let finished: [&(dyn ToSql + Sync); 1] = [&ids];
    let ((), rows, dependents) = futures::try_join!(
        c.batch_execute(begin),
        c.query(&statement, &params),
        c.query(&release, &finished)
    )?;
    if !dependents.is_empty() {
        deps::release_rows(c, &dependents).await?;
    }
    c.batch_execute("COMMIT").await?;
    conn.ended();
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// [`complete`]'s statement: `$1`–`$8` the reports' job ids, attempts,
/// shard indexes, workers, exit codes, output tails and errors.
const COMPLETE: &str = "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::int[],
                                             $6::text[], $7::text[], $8::text[])
                        AS r(job_id, attempt, shard_index, worker_id, exit_code, stdout_tail, stderr_tail, error)),
             q AS (SELECT r.* FROM r JOIN jobs ON jobs.job_id = r.job_id
                   WHERE (jobs.status = 'running') IS TRUE AND jobs.attempts = r.attempt
                     AND jobs.required_workers = 1),
             s AS (UPDATE job_shards SET status = 'completed', finished_at = now(), exit_code = q.exit_code
                   FROM q
                   WHERE job_shards.job_id = q.job_id AND job_shards.shard_index = q.shard_index
                     AND job_shards.attempt = q.attempt AND job_shards.worker_id IS NOT DISTINCT FROM q.worker_id
                     AND job_shards.status = 'running'
                   RETURNING q.*),
             j AS (UPDATE jobs SET status = 'completed', finished_at = greatest(now(), jobs.started_at),
                          exit_code = coalesce(s.exit_code, jobs.exit_code), error = coalesce(s.error, jobs.error),
                          stdout_tail = s.stdout_tail, stderr_tail = s.stderr_tail
                   FROM s
                   WHERE jobs.job_id = s.job_id AND (jobs.status = 'running') IS TRUE
                     AND jobs.attempts = s.attempt
                   RETURNING jobs.job_id, jobs.attempts, s.worker_id),
             e AS (INSERT INTO job_events (job_id, from_status, to_status, worker_id, reason, attempt)
                   SELECT job_id, 'running', 'completed', worker_id, 'all shards succeeded', attempts FROM j)
             SELECT job_id FROM q";
