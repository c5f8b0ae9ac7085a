//! Shard reports of a batch, applied set-based where the outcome is plain.
//! Most reports say that the one shard of a running job succeeded, which
//! completes the job; [`finish`](super::finish::finish) does that with
//! three statements per report. Here every such report of the batch is
//! applied by one statement: shards recorded (only the holder's running
//! shard of that attempt changes, as alone), jobs completed, events
//! written. Anything else (failures, wider jobs, a job reported more than
//! once in the batch, a job not running that attempt) is left to the single
//! report's rules, which the caller applies in order after these. The
//! completed jobs' dependents are released in the same transaction, the
//! first step of that release sent with the statement.
//!
//! A batch of nothing but such reports is applied in a transaction of its
//! own sent at once ([`AtOnce`]): `BEGIN`, the statement and the first step
//! of the release go out together, then `COMMIT` (after the release's other
//! steps when a job had dependents), two round trips where there were four
//! ([`complete_succeeded_at_once`]).

use super::{named_once, Finished};
use crate::db::at_once::AtOnce;
use crate::db::jobs::deps;
use crate::db::DbError;
use deadpool_postgres::{GenericClient, Transaction};
use orchestrator_shared::messages::ShardOutcome;
use orchestrator_shared::{JobStatus, StateMachine};
use std::collections::HashSet;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

/// Whether `f` is a plain success among `reports`: a success, and its
/// job's only report there.
fn candidates(reports: &[&Finished]) -> Vec<bool> {
    let once = named_once(reports.iter().map(|f| f.job_id));
    reports
        .iter()
        .map(|f| f.outcome == ShardOutcome::Succeeded && once.contains(&f.job_id))
        .collect()
}

/// Whether every one of `reports` is a plain success (see the module's
/// doc), so that they may be applied by [`complete_succeeded_at_once`].
pub fn all_plain(reports: &[&Finished]) -> bool {
    candidates(reports).into_iter().all(|c| c)
}

/// What [`complete_succeeded`] did with a batch's reports.
#[derive(Debug, PartialEq, Eq)]
pub struct Completed {
    /// For each report, whether it has been applied here: its outcome
    /// decided (job completed, or nothing changed because the report was
    /// not the holder's); `false` ones are the caller's to apply.
    pub applied: Vec<bool>,
    /// Whether a completed job had a pending dependent, whose dispatch may
    /// now be in the outbox: the caller wakes the relay once committed.
    pub released: bool,
}

impl Completed {
    /// Nothing applied, nothing released.
    fn none(reports: usize) -> Completed {
        Completed {
            applied: vec![false; reports],
            released: false,
        }
    }
}

/// Applies the plain successes among `reports` (see the module's doc)
/// inside `tx`.
pub async fn complete_succeeded(tx: &Transaction<'_>, reports: &[&Finished]) -> Result<Completed, DbError> {
    let flags = candidates(reports);
    let chosen = Completes::of(reports, &flags)?;
    if chosen.ids.is_empty() {
        return Ok(Completed::none(reports.len()));
    }
    let head = super::plan_once_sql(chosen.ids.len());
    let (taken, released) = complete_and_release(tx, head, &chosen).await?;
    Ok(Completed {
        applied: answers(reports, &flags, &taken),
        released,
    })
}

/// [`complete_succeeded`] for a batch of nothing but plain successes
/// ([`all_plain`]), in a transaction of its own on `conn`, sent at once
/// and committed before it answers.
pub async fn complete_succeeded_at_once(
    conn: &mut AtOnce,
    reports: &[&Finished],
) -> Result<Completed, DbError> {
    let flags = candidates(reports);
    let chosen = Completes::of(reports, &flags)?;
    if chosen.ids.is_empty() {
        return Ok(Completed::none(reports.len()));
    }
    let begin = conn.begin(chosen.ids.len());
    let sent = complete_and_release(conn.client(), Some(begin), &chosen).await;
    let (taken, released) = conn.or_roll_back(sent).await?;
    let commit = conn.client().batch_execute("COMMIT").await;
    conn.or_roll_back(commit).await?;
    conn.ended();
    Ok(Completed {
        applied: answers(reports, &flags, &taken),
        released,
    })
}

/// Sends `head` (the transaction's `BEGIN`, or its `SET LOCAL`, if any),
/// [`COMPLETE`] and the first step of the release of the completed jobs'
/// dependents together, in that order (both statements prepared first: a
/// cache hit sends nothing), then the release's other steps; answers the
/// jobs the statement took, and whether a dependent was touched.
async fn complete_and_release(
    client: &impl GenericClient,
    head: Option<&str>,
    chosen: &Completes<'_>,
) -> Result<(HashSet<Uuid>, bool), DbError> {
    let (complete, release) = futures::try_join!(
        client.prepare_cached(COMPLETE),
        client.prepare_cached(deps::RELEASE_FINISHED_HERE)
    )?;
    let (params, finished) = (chosen.params(), [&chosen.ids as &(dyn ToSql + Sync)]);
    let ((), rows, dependents) = futures::try_join!(
        super::send_if(client, head),
        client.query(&complete, &params),
        client.query(&release, &finished)
    )?;
    let released = deps::release_rows(client, &dependents).await?;
    Ok((taken(&rows)?, released))
}

/// For each report, whether it was a candidate its statement took.
fn answers(reports: &[&Finished], flags: &[bool], taken: &HashSet<Uuid>) -> Vec<bool> {
    reports
        .iter()
        .zip(flags)
        .map(|(f, &candidate)| candidate && taken.contains(&f.job_id))
        .collect()
}

/// The jobs [`COMPLETE`] took, from its rows.
fn taken(rows: &[Row]) -> Result<HashSet<Uuid>, DbError> {
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// [`COMPLETE`]'s parameters for the candidates among a batch's reports,
/// one array per column.
struct Completes<'a> {
    /// The jobs.
    ids: Vec<Uuid>,
    /// The reported attempts.
    attempts: Vec<i32>,
    /// The reported shards.
    shards: Vec<i32>,
    /// The reporting workers.
    workers: Vec<&'a str>,
    /// The exit codes.
    codes: Vec<Option<i32>>,
    /// The output's last bytes.
    stdout: Vec<&'a str>,
    /// The error output's last bytes.
    stderr: Vec<&'a str>,
    /// The agents' errors.
    errors: Vec<Option<&'a str>>,
}

impl<'a> Completes<'a> {
    /// The parameters of the `reports` flagged in `flags`, after checking
    /// that the state machine allows what the statement does.
    fn of(reports: &[&'a Finished], flags: &[bool]) -> Result<Self, DbError> {
        JobStatus::Running.transition(JobStatus::Completed)?;
        let chosen: Vec<&'a Finished> = reports
            .iter()
            .zip(flags)
            .filter(|(_, &c)| c)
            .map(|(f, _)| *f)
            .collect();
        Ok(Completes {
            ids: chosen.iter().map(|f| f.job_id).collect(),
            attempts: chosen.iter().map(|f| f.attempt).collect(),
            shards: chosen.iter().map(|f| f.shard_index).collect(),
            workers: chosen.iter().map(|f| f.worker_id.as_str()).collect(),
            codes: chosen.iter().map(|f| f.exit_code).collect(),
            stdout: chosen.iter().map(|f| f.stdout_tail.as_str()).collect(),
            stderr: chosen.iter().map(|f| f.stderr_tail.as_str()).collect(),
            errors: chosen.iter().map(|f| f.error.as_deref()).collect(),
        })
    }

    /// `$1`–`$8` of [`COMPLETE`].
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.ids,
            &self.attempts,
            &self.shards,
            &self.workers,
            &self.codes,
            &self.stdout,
            &self.stderr,
            &self.errors,
        ]
    }
}

/// One statement: of the candidates (at most one report per job), takes those
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
/// `$1`–`$8` the reports' job ids, attempts, shard indexes, workers, exit
/// codes, output tails and errors.
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
