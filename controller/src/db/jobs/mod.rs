//! Queries on `jobs` and `job_events`. Submission writes the job, its first
//! event, its idempotency key and its outbox messages in one transaction;
//! every later change is one compare-and-set statement that also writes the
//! event row, so a transition and its history can never disagree.

use super::{idempotency, outbox, parse_status, Cached, DbError};
use crate::models::{Job, JobEvent, Labels, NewJob, Quota};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use orchestrator_shared::api::JobOutput;
use orchestrator_shared::messages::{JobDispatch, WORK_EXCHANGE, WORK_ROUTING_KEY};
use orchestrator_shared::{JobStatus, StateMachine};
use std::fmt;
use std::str::FromStr;
use tokio_postgres::Row;
use uuid::Uuid;

/// Columns of a job row (alias `j`), plus the workers of its current attempt.
const COLUMNS: &str = "j.job_id, j.status, j.task_description, j.required_workers, j.command, \
    j.priority, j.labels, j.attempts, j.max_retries, j.timeout_seconds, j.idempotency_key, \
    j.submitted_by, j.created_at, j.started_at, j.finished_at, j.exit_code, j.error, \
    ARRAY(SELECT s.worker_id FROM job_shards s WHERE s.job_id = j.job_id AND s.attempt = j.attempts \
          AND s.worker_id IS NOT NULL ORDER BY s.shard_index) AS assigned_workers";

fn from_row(row: &Row) -> Result<Job, DbError> {
    let labels: serde_json::Value = row.try_get("labels")?;
    let priority: i16 = row.try_get("priority")?;
    Ok(Job {
        job_id: row.try_get("job_id")?,
        status: parse_status(row, "status")?,
        task_description: row.try_get("task_description")?,
        required_workers: row.try_get("required_workers")?,
        command: row.try_get("command")?,
        priority: i32::from(priority),
        labels: serde_json::from_value::<Labels>(labels).unwrap_or_default(),
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
    })
}

fn not_found(job_id: Uuid) -> DbError {
    DbError::NotFound {
        kind: "Job",
        id: job_id.to_string(),
    }
}

/// What a submission produced: the job, and whether this call created it
/// (false when an idempotency key returned an earlier job).
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The new job, or the one first created under the same key.
    pub job: Job,
    /// True if this call created the job.
    pub created: bool,
}

/// Submits a job for `user_id` inside `tx`: locks the user's row (so quota
/// checks and idempotency hold under concurrency), applies the idempotency
/// key, checks the quota, then writes job, first event, key and one outbox
/// message per shard. The caller commits.
pub async fn submit(
    tx: &Transaction<'_>,
    user_id: Uuid,
    new: &NewJob,
    quota: Quota,
) -> Result<Submitted, DbError> {
    submit_batch(tx, user_id, std::slice::from_ref(new), quota)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| DbError::Conflict("empty submission".into()))
}

/// Submits several jobs all-or-nothing under the same rules as [`submit`]:
/// one user lock, idempotency per job (also between jobs of the batch), and
/// the quota checked for the whole batch. The result has one entry per
/// input, in order. The caller commits.
pub async fn submit_batch(
    tx: &Transaction<'_>,
    user_id: Uuid,
    news: &[NewJob],
    quota: Quota,
) -> Result<Vec<Submitted>, DbError> {
    // NO KEY UPDATE serialises this user's submissions (quota and keys) but,
    // unlike FOR UPDATE, not the foreign-key checks of every transaction
    // that updates one of the user's jobs twice (a claim marking it queued
    // and then running, a report writing output and then completing): with
    // FOR UPDATE those queued behind whole submit batches (measured: most
    // of the lock waits of a 5,000-job load run).
    let locked = tx
        .row_opt(
            "SELECT 1 FROM users WHERE user_id = $1 FOR NO KEY UPDATE",
            &[&user_id],
        )
        .await?;
    if locked.is_none() {
        return Err(DbError::NotFound {
            kind: "User",
            id: user_id.to_string(),
        });
    }
    let plan = plan_batch(tx, user_id, news).await?;
    let fresh: Vec<&NewJob> = news
        .iter()
        .zip(&plan)
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n)
        .collect();
    check_submit_quota(tx, user_id, &fresh, quota).await?;
    let mut inserted = insert_many(tx, user_id, &fresh).await?.into_iter();
    let mut created: std::collections::HashMap<String, Job> = Default::default();
    let mut out = Vec::with_capacity(news.len());
    for (new, planned) in news.iter().zip(plan) {
        let submitted = match planned {
            Some(Replay::Stored(job_id)) => Submitted {
                job: get(tx, job_id).await?,
                created: false,
            },
            Some(Replay::InBatch(key)) => match created.get(&key) {
                Some(job) => Submitted {
                    job: job.clone(),
                    created: false,
                },
                None => {
                    return Err(DbError::Conflict(format!(
                        "Idempotency key {key} repeated in the batch"
                    )))
                }
            },
            None => {
                let job = inserted
                    .next()
                    .ok_or_else(|| DbError::Conflict("a job of the batch was not inserted".into()))?;
                if let Some(key) = &new.idempotency_key {
                    idempotency::insert(tx, user_id, key, &idempotency::request_hash(new), job.job_id)
                        .await?;
                    created.insert(key.clone(), job.clone());
                }
                Submitted { job, created: true }
            }
        };
        out.push(submitted);
    }
    let fresh_jobs: Vec<&Job> = out.iter().filter(|s| s.created).map(|s| &s.job).collect();
    enqueue_dispatch_many(tx, &fresh_jobs, 0).await?;
    Ok(out)
}

/// How a batch entry is answered without creating a job.
enum Replay {
    /// Its key was used before, for this job.
    Stored(Uuid),
    /// Its key was used earlier in the same batch.
    InBatch(String),
}

/// Decides, per entry, whether its idempotency key returns an existing job;
/// a key reused with a different body (stored or in the batch) is a 409.
async fn plan_batch(
    tx: &Transaction<'_>,
    user_id: Uuid,
    news: &[NewJob],
) -> Result<Vec<Option<Replay>>, DbError> {
    let mut seen: std::collections::HashMap<&str, String> = Default::default();
    let mut plan = Vec::with_capacity(news.len());
    for new in news {
        let Some(key) = new.idempotency_key.as_deref() else {
            plan.push(None);
            continue;
        };
        let hash = idempotency::request_hash(new);
        let conflict = || {
            DbError::Conflict(format!(
                "Idempotency key {key} was already used with a different request"
            ))
        };
        if let Some(first) = seen.get(key) {
            if *first != hash {
                return Err(conflict());
            }
            plan.push(Some(Replay::InBatch(key.to_owned())));
            continue;
        }
        match idempotency::find(tx, user_id, key).await? {
            Some((_, stored)) if stored != hash => return Err(conflict()),
            Some((job_id, _)) => plan.push(Some(Replay::Stored(job_id))),
            None => plan.push(None),
        }
        seen.insert(key, hash);
    }
    Ok(plan)
}

async fn check_submit_quota(
    client: &impl GenericClient,
    user_id: Uuid,
    fresh: &[&NewJob],
    quota: Quota,
) -> Result<(), DbError> {
    if fresh.is_empty() {
        return Ok(());
    }
    if let Some(wide) = fresh.iter().find(|n| n.required_workers > quota.max_workers) {
        return Err(DbError::Conflict(format!(
            "Quota exceeded: job needs {} workers, max_workers is {}",
            wide.required_workers, quota.max_workers
        )));
    }
    let waiting: i64 = client
        .row(
            "SELECT count(*) FROM jobs WHERE submitted_by = $1 AND status IN ('pending', 'queued')",
            &[&user_id],
        )
        .await?
        .try_get(0)?;
    let adding = i64::try_from(fresh.len()).unwrap_or(i64::MAX);
    if waiting + adding > i64::from(quota.max_queued_jobs) {
        return Err(DbError::Conflict(format!(
            "Quota exceeded: {waiting} jobs already waiting, max_queued_jobs is {}",
            quota.max_queued_jobs
        )));
    }
    Ok(())
}

/// Inserts `news` and their first events in one statement (the batch
/// travels as one JSON array) and returns the jobs in the same order. One
/// round trip per batch instead of one per job matters: the user's row
/// stays locked, and the user's other submissions wait, until the commit.
async fn insert_many(
    client: &impl GenericClient,
    user_id: Uuid,
    news: &[&NewJob],
) -> Result<Vec<Job>, DbError> {
    if news.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = Vec::with_capacity(news.len());
    for new in news {
        let priority =
            i16::try_from(new.priority).map_err(|_| DbError::Conflict("priority out of range".into()))?;
        rows.push(serde_json::json!({
            "job_id": Uuid::new_v4(), "task_description": new.task_description,
            "required_workers": new.required_workers, "command": new.command, "priority": priority,
            "labels": new.labels, "max_retries": new.max_retries,
            "timeout_seconds": new.timeout_seconds, "idempotency_key": new.idempotency_key,
        }));
    }
    let ids: Vec<Uuid> = rows
        .iter()
        .filter_map(|r| r["job_id"].as_str().and_then(|id| id.parse().ok()))
        .collect();
    let sql = format!(
        "WITH src AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(job_id uuid, task_description text,
                 required_workers integer, command jsonb, priority smallint, labels jsonb,
                 max_retries integer, timeout_seconds integer, idempotency_key text)),
         j AS (
             INSERT INTO jobs (job_id, status, task_description, required_workers, command, priority,
                               labels, max_retries, timeout_seconds, idempotency_key, submitted_by)
             SELECT job_id, 'pending', task_description, required_workers,
                    CASE WHEN jsonb_typeof(command) = 'array'
                         THEN ARRAY(SELECT jsonb_array_elements_text(command)) END,
                    priority, coalesce(labels, '{{}}'), max_retries, timeout_seconds, idempotency_key, $2
             FROM src RETURNING *),
         e AS (INSERT INTO job_events (job_id, from_status, to_status, reason)
               SELECT job_id, NULL, 'pending', 'submitted' FROM j)
         SELECT {COLUMNS} FROM j"
    );
    let batch = serde_json::Value::Array(rows);
    let mut by_id: std::collections::HashMap<Uuid, Job> = client
        .rows(&sql, &[&batch, &user_id])
        .await?
        .iter()
        .map(|row| from_row(row).map(|job| (job.job_id, job)))
        .collect::<Result<_, _>>()?;
    ids.iter()
        .map(|id| by_id.remove(id).ok_or_else(|| not_found(*id)))
        .collect()
}

/// Writes the dispatch messages of every shard of `jobs`' next attempts in
/// one statement, published no earlier than `delay_ms` from now (a retry's
/// backoff, kept in Postgres where it survives restarts).
pub async fn enqueue_dispatch_many(
    client: &impl GenericClient,
    jobs: &[&Job],
    delay_ms: i64,
) -> Result<(), DbError> {
    let mut payloads = Vec::new();
    let mut priorities: Vec<i16> = Vec::new();
    let mut ids = Vec::new();
    for job in jobs {
        for shard_index in 0..job.required_workers {
            let msg = JobDispatch {
                job_id: job.job_id,
                attempt: job.attempts + 1,
                shard_index,
                shard_count: job.required_workers,
                task_description: job.task_description.clone(),
                command: job.command.clone(),
                timeout_seconds: job.timeout_seconds,
                priority: job.priority,
            };
            payloads.push(serde_json::to_value(&msg).unwrap_or_default());
            priorities.push(i16::try_from(job.priority).unwrap_or(0));
            ids.push(job.job_id);
        }
    }
    outbox::enqueue_many(
        client,
        WORK_EXCHANGE,
        WORK_ROUTING_KEY,
        &payloads,
        &priorities,
        &ids,
        delay_ms,
    )
    .await
}

/// Marks jobs whose dispatch messages the broker confirmed as `queued`
/// (those still `pending`; a job cancelled meanwhile stays cancelled), with
/// their event rows, in one statement.
pub async fn mark_queued(client: &impl GenericClient, job_ids: &[Uuid]) -> Result<u64, DbError> {
    JobStatus::Pending.transition(JobStatus::Queued)?;
    Ok(client
        .exec(
            "WITH j AS (UPDATE jobs SET status = 'queued', queued_at = now()
                        WHERE job_id = ANY($1) AND status = 'pending' RETURNING job_id, attempts)
             INSERT INTO job_events (job_id, from_status, to_status, reason, attempt)
             SELECT job_id, 'pending', 'queued', 'published', attempts FROM j",
            &[&job_ids],
        )
        .await?)
}

/// One job by id.
pub async fn get(client: &impl GenericClient, job_id: Uuid) -> Result<Job, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs j WHERE j.job_id = $1");
    let row = client.row_opt(&sql, &[&job_id]).await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| not_found(job_id))
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
    let sql = format!(
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
         SELECT {COLUMNS} FROM j"
    );
    let row = client
        .row_opt(
            &sql,
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
        Some(row) => from_row(&row),
        None => {
            let current = get(client, job_id).await?;
            Err(current.status.transition(to).err().map_or_else(
                || DbError::Conflict(format!("Job {job_id} changed concurrently")),
                DbError::Transition,
            ))
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

/// Position in the newest-first job listing: the last job of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    /// `created_at` of the last job shown, in microseconds since the epoch.
    pub created_micros: i64,
    /// Its id (ties on `created_at` are broken by id).
    pub job_id: Uuid,
}

impl fmt::Display for JobCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.created_micros, self.job_id.simple())
    }
}

impl FromStr for JobCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (micros, id) = s.split_once('_').ok_or(())?;
        Ok(JobCursor {
            created_micros: micros.parse().map_err(|_| ())?,
            job_id: Uuid::parse_str(id).map_err(|_| ())?,
        })
    }
}

/// Which jobs a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this user.
    pub submitted_by: Option<Uuid>,
}

/// A job's recorded output.
pub async fn output(client: &impl GenericClient, job_id: Uuid) -> Result<JobOutput, DbError> {
    let row = client
        .row_opt(
            "SELECT status, stdout_tail, stderr_tail, exit_code FROM jobs WHERE job_id = $1",
            &[&job_id],
        )
        .await?
        .ok_or_else(|| not_found(job_id))?;
    Ok(JobOutput {
        job_id,
        status: parse_status(&row, "status")?,
        stdout: row.try_get(1)?,
        stderr: row.try_get(2)?,
        exit_code: row.try_get(3)?,
    })
}

/// A page of jobs, newest first, after `cursor`, optionally of one status;
/// returns the page and the cursor of the next one (`None` at the end).
pub async fn list(
    client: &impl GenericClient,
    filter: JobFilter,
    limit: i64,
    cursor: Option<JobCursor>,
) -> Result<(Vec<Job>, Option<JobCursor>), DbError> {
    let after: Option<DateTime<Utc>> = cursor.and_then(|c| DateTime::from_timestamp_micros(c.created_micros));
    let after_id = cursor.map(|c| c.job_id);
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs j
         WHERE ($1::text IS NULL OR j.status = $1)
           AND ($2::timestamptz IS NULL OR (j.created_at, j.job_id) < ($2, $3))
           AND ($5::uuid IS NULL OR j.submitted_by = $5)
         ORDER BY j.created_at DESC, j.job_id DESC LIMIT $4"
    );
    let status = filter.status.map(JobStatus::as_str);
    let rows = client
        .rows(
            &sql,
            &[&status, &after, &after_id, &(limit + 1), &filter.submitted_by],
        )
        .await?;
    let mut jobs = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let next = if jobs.len() as i64 > limit {
        jobs.truncate(usize::try_from(limit).unwrap_or(0));
        jobs.last().map(|j| JobCursor {
            created_micros: j.created_at.timestamp_micros(),
            job_id: j.job_id,
        })
    } else {
        None
    };
    Ok((jobs, next))
}
