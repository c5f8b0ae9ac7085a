//! Queries on `jobs` and `job_events`: reading a job, its history and its
//! output, and moving it between statuses. Every change is one
//! compare-and-set statement that also writes the event row, so a
//! transition and its history can never disagree.
//!
//! - [`submit`](mod@submit): submission (job, first event, idempotency key and outbox
//!   messages in one transaction).
//! - [`list`](mod@list): the newest-first listing and its cursors.
//! - [`deps`]: dependencies: recorded at submission, released when a job
//!   finishes (every final transition calls [`deps::release`]), the graph.
//! - [`search`](mod@search): the dashboard's listing with more filters and a count.
//! - [`gather`]: concurrent submissions written in shared transactions.

pub mod deps;
pub mod gather;
mod list;
mod search;
mod submit;

pub use list::{list, JobCursor, JobFilter};
pub use search::{search, JobSearch};
pub use submit::{enqueue_dispatch_many, enqueue_shard_dispatch, submit, submit_batch, Submitted};

use super::output;
use super::{parse_json, parse_limits, parse_status, refused_transition, Cached, DbError};
use crate::models::{Job, JobEvent, Labels};
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::JobOutput;
use orchestrator_shared::{JobStatus, StateMachine};
use tokio_postgres::Row;
use uuid::Uuid;

/// Columns of a job row (alias `j`), plus the workers of its current
/// attempt and the jobs it depends on (one probe of `job_dependencies`'
/// primary key); a macro so statements can be `concat!`ed into constants.
macro_rules! job_columns {
    () => {
        "j.job_id, j.status, j.task_description, j.required_workers, j.command, \
         j.priority, j.labels, j.attempts, j.max_retries, j.timeout_seconds, j.idempotency_key, \
         j.submitted_by, j.created_at, j.started_at, j.finished_at, j.exit_code, j.error, j.waiting_for, \
         j.memory_mb, j.cpu_millis, j.max_pids, j.schedule_id, j.pool, j.selector, j.run_on_failure, \
         ARRAY(SELECT s.worker_id FROM job_shards s WHERE s.job_id = j.job_id AND s.attempt = j.attempts \
               AND s.worker_id IS NOT NULL ORDER BY s.shard_index) AS assigned_workers, \
         ARRAY(SELECT e.depends_on FROM job_dependencies e WHERE e.job_id = j.job_id \
               ORDER BY e.depends_on) AS depends_on"
    };
}
use job_columns;

fn from_row(row: &Row) -> Result<Job, DbError> {
    let priority: i16 = row.try_get("priority")?;
    Ok(Job {
        job_id: row.try_get("job_id")?,
        status: parse_status(row, "status")?,
        task_description: row.try_get("task_description")?,
        required_workers: row.try_get("required_workers")?,
        command: row.try_get("command")?,
        priority: i32::from(priority),
        labels: parse_json::<Labels>(row, "labels")?,
        attempts: row.try_get("attempts")?,
        max_retries: row.try_get("max_retries")?,
        timeout_seconds: row.try_get("timeout_seconds")?,
        idempotency_key: row.try_get("idempotency_key")?,
        submitted_by: row.try_get("submitted_by")?,
        assigned_workers: row.try_get("assigned_workers")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        exit_code: row.try_get("exit_code")?,
        error: row.try_get("error")?,
        waiting_for: row.try_get("waiting_for")?,
        limits: parse_limits(row)?,
        schedule_id: row.try_get("schedule_id")?,
        pool: row.try_get("pool")?,
        selector: parse_json::<Labels>(row, "selector")?,
        depends_on: row.try_get("depends_on")?,
        run_on_failure: row.try_get("run_on_failure")?,
    })
}

fn not_found(job_id: Uuid) -> DbError {
    DbError::NotFound {
        kind: "Job",
        id: job_id.to_string(),
    }
}

/// The end of both statements that mark published jobs `queued`: given
/// `l`, the pending jobs locked to mark, the update and its event rows; a
/// macro so the statements are `concat!`ed into constants.
macro_rules! mark_locked_queued {
    () => {
        ", j AS (UPDATE jobs SET status = 'queued', queued_at = now() FROM l
                 WHERE jobs.job_id = l.job_id AND (jobs.status = 'pending') IS TRUE
                 RETURNING jobs.job_id, jobs.attempts)
         INSERT INTO job_events (job_id, from_status, to_status, reason, attempt)
         SELECT job_id, 'pending', 'queued', 'published', attempts FROM j"
    };
}

/// Marks jobs whose dispatch messages the broker confirmed as `queued`
/// (those still `pending` and waiting for no dependency, as every job with
/// a dispatch is; a job cancelled meanwhile stays cancelled), with
/// their event rows, in one statement. A job whose row another transaction
/// holds is skipped rather than waited for: that is a claim, which records
/// the step itself, or a cancel, which ends the job (waiting made the relay
/// and the agents' claims queue behind each other's locks); anything else
/// is caught later by [`mark_published_stragglers`]. The caller's own
/// locks are no obstacle (a claim marks its locked job with this).
pub async fn mark_queued(client: &impl GenericClient, job_ids: &[Uuid]) -> Result<u64, DbError> {
    const SQL: &str = concat!(
        "WITH l AS (SELECT job_id FROM jobs WHERE job_id = ANY($1) AND (status = 'pending') IS TRUE
                      AND deps_waiting = 0
                    ORDER BY job_id FOR NO KEY UPDATE SKIP LOCKED)",
        mark_locked_queued!()
    );
    JobStatus::Pending.transition(JobStatus::Queued)?;
    Ok(client.exec(SQL, &[&job_ids]).await?)
}

/// Marks `queued` every `pending` job whose dispatch is no longer waiting
/// in the outbox (it was published: a submission writes the job and its
/// outbox rows together) and that [`mark_queued`] skipped while another
/// transaction held it. The relay runs this when it has caught up, at most
/// once a poll interval.
pub async fn mark_published_stragglers(client: &impl GenericClient) -> Result<u64, DbError> {
    const SQL: &str = concat!(
        "WITH l AS (SELECT job_id FROM jobs j WHERE status = 'pending' AND deps_waiting = 0
                      AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sent_at IS NULL AND o.job_id = j.job_id)
                    ORDER BY job_id FOR NO KEY UPDATE SKIP LOCKED)",
        mark_locked_queued!()
    );
    JobStatus::Pending.transition(JobStatus::Queued)?;
    Ok(client.exec(SQL, &[]).await?)
}

/// One job by id.
pub async fn get(client: &impl GenericClient, job_id: Uuid) -> Result<Job, DbError> {
    const SQL: &str = concat!("SELECT ", job_columns!(), " FROM jobs j WHERE j.job_id = $1");
    let row = client.row_opt(SQL, &[&job_id]).await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| not_found(job_id))
}

/// One job by id, its row locked until the transaction ends, so that a
/// decision taken on its status (a user's cancel) cannot be overtaken by the
/// relay or a claim moving it meanwhile. The read is a second statement, so
/// it sees the row as the lock left it.
pub async fn lock(client: &impl GenericClient, job_id: Uuid) -> Result<Job, DbError> {
    client
        .exec(
            "SELECT 1 FROM jobs WHERE job_id = $1 FOR NO KEY UPDATE",
            &[&job_id],
        )
        .await?;
    get(client, job_id).await
}

/// Who did a transition and why; written into the job's event row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventMeta {
    /// The worker involved, if any.
    pub worker_id: Option<String>,
    /// Why, in words.
    pub reason: Option<String>,
    /// Exit code to record (for finishing transitions).
    pub exit_code: Option<i32>,
    /// Error text to record (for failures).
    pub error: Option<String>,
    /// Output to record on the job (a shard report's last bytes), written by
    /// the transition itself rather than by a second update of the row.
    pub stdout_tail: Option<String>,
    /// See `stdout_tail`.
    pub stderr_tail: Option<String>,
}

/// The compare-and-set of [`transition`]: the update (counting attempts,
/// stamping times, recording output) and its event row in one statement.
const TRANSITION_SQL: &str = concat!(
    "WITH j AS (
         UPDATE jobs SET status = $3,
             attempts = attempts + CASE WHEN $3 = 'running' THEN 1 ELSE 0 END,
             queued_at = CASE WHEN $3 = 'queued' THEN now() ELSE queued_at END,
             started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
             finished_at = CASE WHEN $3 IN ('completed', 'failed', 'cancelled', 'timed_out')
                                THEN greatest(now(), started_at) ELSE finished_at END,
             exit_code = coalesce($6, exit_code),
             error = coalesce($7, error),
             stdout_tail = coalesce($8, stdout_tail),
             stderr_tail = coalesce($9, stderr_tail)
         WHERE job_id = $1 AND status = $2 RETURNING *),
     e AS (INSERT INTO job_events (job_id, from_status, to_status, worker_id, reason, attempt)
           SELECT job_id, $2, $3, $4, $5, attempts FROM j)
     SELECT ",
    job_columns!(),
    " FROM j"
);

/// Moves a job from `expected` to `to` in one statement that also writes the
/// event row: of racing calls exactly one succeeds. A refused call gets the
/// state machine's error for the job's actual status (409 in the API), or
/// `NotFound`.
pub async fn transition(
    client: &impl GenericClient,
    job_id: Uuid,
    expected: JobStatus,
    to: JobStatus,
    meta: &EventMeta,
) -> Result<Job, DbError> {
    expected.transition(to)?;
    let row = client
        .row_opt(
            TRANSITION_SQL,
            &[
                &job_id,
                &expected.as_str(),
                &to.as_str(),
                &meta.worker_id,
                &meta.reason,
                &meta.exit_code,
                &meta.error,
                &meta.stdout_tail,
                &meta.stderr_tail,
            ],
        )
        .await?;
    match row {
        Some(row) => {
            if to.is_terminal() {
                deps::release(client, &[job_id]).await?;
            }
            from_row(&row)
        }
        None => {
            let current = get(client, job_id).await?;
            Err(refused_transition(current.status, to, "Job", job_id.to_string()))
        }
    }
}

/// Moves a job to `to` from whatever status it is in now, if the state
/// machine allows it (e.g. a user's cancel).
pub async fn transition_to(
    client: &impl GenericClient,
    job_id: Uuid,
    to: JobStatus,
    meta: &EventMeta,
) -> Result<Job, DbError> {
    let current = get(client, job_id).await?;
    transition(client, job_id, current.status, to, meta).await
}

/// Every recorded transition of a job, oldest first.
pub async fn events(client: &impl GenericClient, job_id: Uuid) -> Result<Vec<JobEvent>, DbError> {
    let exists = client
        .row_opt("SELECT 1 FROM jobs WHERE job_id = $1", &[&job_id])
        .await?;
    if exists.is_none() {
        return Err(not_found(job_id));
    }
    let rows = client
        .rows(
            "SELECT from_status, to_status, at, worker_id, reason FROM job_events
             WHERE job_id = $1 ORDER BY event_id",
            &[&job_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let from: Option<String> = r.try_get(0)?;
            Ok(JobEvent {
                from: from.map(|s| s.parse()).transpose()?,
                to: parse_status(r, "to_status")?,
                at: r.try_get(2)?,
                worker_id: r.try_get(3)?,
                reason: r.try_get(4)?,
            })
        })
        .collect()
}

/// A job's recorded output: of `shard` in its latest attempt, the bytes
/// `offset..offset + limit` of each stream, from the streamed pieces when
/// there are any, else from the tails of the finished report.
pub async fn output(
    client: &impl GenericClient,
    job_id: Uuid,
    shard_index: i32,
    (offset, limit): (i64, i64),
) -> Result<JobOutput, DbError> {
    let row = client
        .row_opt(
            "SELECT status, stdout_tail, stderr_tail, exit_code, attempts FROM jobs WHERE job_id = $1",
            &[&job_id],
        )
        .await?
        .ok_or_else(|| not_found(job_id))?;
    let attempt: i32 = row.try_get(4)?;
    let range = output::Range {
        job_id,
        shard_index,
        attempt,
        offset,
        limit,
    };
    let (stdout, stderr) = match output::read(client, range).await? {
        Some(streamed) => (Some(streamed.0), Some(streamed.1)),
        None => (
            tail_as_stream(row.try_get(1)?, offset, limit),
            tail_as_stream(row.try_get(2)?, offset, limit),
        ),
    };
    let text =
        |s: &Option<output::StreamOutput>| s.as_ref().map(|s| String::from_utf8_lossy(&s.bytes).into_owned());
    let total = |s: &Option<output::StreamOutput>| s.as_ref().map_or(0, |s| s.total);
    Ok(JobOutput {
        job_id,
        status: parse_status(&row, "status")?,
        stdout: text(&stdout),
        stderr: text(&stderr),
        exit_code: row.try_get(3)?,
        attempt: (attempt > 0).then_some(attempt),
        shard: shard_index,
        stdout_bytes: total(&stdout),
        stderr_bytes: total(&stderr),
        truncated: [&stdout, &stderr]
            .iter()
            .any(|s| s.as_ref().is_some_and(|s| s.truncated)),
    })
}

/// A report's tail as a stream of bytes, cut to the range asked for.
fn tail_as_stream(tail: Option<String>, offset: i64, limit: i64) -> Option<output::StreamOutput> {
    let bytes = tail?.into_bytes();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    let end = start
        .saturating_add(usize::try_from(limit).unwrap_or(usize::MAX))
        .min(bytes.len());
    Some(output::StreamOutput {
        total: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        bytes: bytes.get(start..end).unwrap_or_default().to_vec(),
        truncated: false,
    })
}
