//! Submission: one job or a batch, all-or-nothing. The job rows, their first
//! events, their idempotency keys and their dispatch messages (outbox) are
//! written in the caller's transaction, under a lock of the user's row, so
//! quotas and keys hold under concurrency.

use super::{from_row, get, job_columns, not_found};
use crate::db::{idempotency, outbox, pools, Cached, DbError};
use crate::models::{Job, NewJob, Quota};
use deadpool_postgres::{GenericClient, Transaction};
use orchestrator_shared::messages::{JobDispatch, WORK_EXCHANGE};
use orchestrator_shared::pools::JobClass;
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

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
        .ok_or_else(|| DbError::Invariant("a submission of one job answered none".into()))
}

/// Submits several jobs all-or-nothing under the same rules as [`submit`]:
/// one user lock, idempotency per job (also between jobs of the batch), and
/// the quota checked for the whole batch. Jobs with dependencies are held
/// back (no dispatch) until those finish (`deps::attach`). The result has
/// one entry per input, in order. The caller commits.
pub async fn submit_batch(
    tx: &Transaction<'_>,
    user_id: Uuid,
    news: &[NewJob],
    quota: Quota,
) -> Result<Vec<Submitted>, DbError> {
    let waiting = lock_user(tx, user_id).await?;
    submit_locked(tx, user_id, news, quota, waiting).await
}

/// [`submit_batch`] once the user's row is locked ([`lock_user`]) and
/// `waiting` of the user's jobs are known to wait.
pub(super) async fn submit_locked(
    tx: &Transaction<'_>,
    user_id: Uuid,
    news: &[NewJob],
    quota: Quota,
    waiting: i64,
) -> Result<Vec<Submitted>, DbError> {
    let plan = plan_batch(tx, user_id, news).await?;
    let fresh: Vec<&NewJob> = news
        .iter()
        .zip(&plan)
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n)
        .collect();
    check_submit_quota(waiting, &fresh, quota)?;
    let inserted = insert_many(tx, user_id, &fresh).await?;
    let mut out = answer_batch(tx, user_id, news, plan, inserted).await?;
    let mut held = super::deps::attach(tx, user_id, news, &out).await?;
    // Every new job's class, a held one's too: its dispatch, written when
    // its last dependency completes, goes to its class's queue.
    let created: Vec<&Job> = out.iter().filter(|s| s.created).map(|s| &s.job).collect();
    pools::register_classes(tx, &created).await?;
    let fresh_jobs: Vec<&Job> = created
        .into_iter()
        .filter(|j| !held.contains_key(&j.job_id))
        .collect();
    enqueue_dispatch_many(tx, &fresh_jobs, 0).await?;
    for s in out.iter_mut().filter(|s| s.created) {
        if let Some(job) = held.remove(&s.job.job_id) {
            s.job = job;
        }
    }
    Ok(out)
}

/// Locks the submitting user's row for the transaction and counts the
/// user's jobs that wait (pending or queued), for the quota: two
/// statements sent together, one round trip. The count is a statement of
/// its own, run once the lock is held, so it sees every job of a
/// submission that held the lock before (one statement that locked and
/// counted would count from a snapshot taken before its wait).
///
/// NO KEY UPDATE serialises this user's submissions (quota and keys) but,
/// unlike FOR UPDATE, not the foreign-key checks of every transaction that
/// updates one of the user's jobs twice (a claim marking it queued and then
/// running, a report writing output and then completing): with FOR UPDATE
/// those queued behind whole submit batches (measured: most of the lock
/// waits of a 5,000-job load run).
pub(super) async fn lock_user(tx: &Transaction<'_>, user_id: Uuid) -> Result<i64, DbError> {
    let params: [&(dyn ToSql + Sync); 1] = [&user_id];
    let (locked, waiting) = futures::try_join!(
        tx.row_opt(
            "SELECT 1 FROM users WHERE user_id = $1 FOR NO KEY UPDATE",
            &params
        ),
        tx.row(
            "SELECT count(*) FROM jobs WHERE submitted_by = $1 AND status IN ('pending', 'queued')",
            &params
        ),
    )?;
    match locked {
        Some(_) => Ok(waiting.try_get(0)?),
        None => Err(DbError::NotFound {
            kind: "User",
            id: user_id.to_string(),
        }),
    }
}

/// How a batch entry is answered without creating a job.
enum Replay {
    /// Its key was used before, for this job.
    Stored(Uuid),
    /// Its key was used earlier in the same batch.
    InBatch(String),
}

/// Pairs each entry with its job: a stored replay's, an earlier entry's with
/// the same key (created now or replayed), or a newly inserted one, whose
/// key is recorded now.
async fn answer_batch(
    tx: &Transaction<'_>,
    user_id: Uuid,
    news: &[NewJob],
    plan: Vec<Option<Replay>>,
    inserted: Vec<Job>,
) -> Result<Vec<Submitted>, DbError> {
    let mut inserted = inserted.into_iter();
    let mut by_key: HashMap<String, Job> = HashMap::new();
    let mut out = Vec::with_capacity(news.len());
    for (new, planned) in news.iter().zip(plan) {
        let (job, created) = match planned {
            Some(Replay::Stored(job_id)) => (get(tx, job_id).await?, false),
            Some(Replay::InBatch(key)) => match by_key.get(&key) {
                Some(job) => (job.clone(), false),
                None => {
                    return Err(DbError::Invariant(format!(
                        "key {key} answered before its first use"
                    )))
                }
            },
            None => {
                let job = inserted
                    .next()
                    .ok_or_else(|| DbError::Invariant("a job of the batch was not inserted".into()))?;
                if let Some(key) = &new.idempotency_key {
                    idempotency::insert(tx, user_id, key, &idempotency::request_hash(new)?, job.job_id)
                        .await?;
                }
                (job, true)
            }
        };
        if let Some(key) = &new.idempotency_key {
            by_key.entry(key.clone()).or_insert_with(|| job.clone());
        }
        out.push(Submitted { job, created });
    }
    Ok(out)
}

/// Decides, per entry, whether its idempotency key returns an existing job;
/// a key reused with a different body (stored or in the batch) is a 409.
async fn plan_batch(
    tx: &Transaction<'_>,
    user_id: Uuid,
    news: &[NewJob],
) -> Result<Vec<Option<Replay>>, DbError> {
    let mut seen: HashMap<&str, String> = HashMap::new();
    let mut plan = Vec::with_capacity(news.len());
    for new in news {
        let Some(key) = new.idempotency_key.as_deref() else {
            plan.push(None);
            continue;
        };
        let hash = idempotency::request_hash(new)?;
        let reused = || DbError::IdempotencyKeyReused { key: key.to_owned() };
        if let Some(first) = seen.get(key) {
            if *first != hash {
                return Err(reused());
            }
            plan.push(Some(Replay::InBatch(key.to_owned())));
            continue;
        }
        match idempotency::find(tx, user_id, key).await? {
            Some((_, stored)) if stored != hash => return Err(reused()),
            Some((job_id, _)) => plan.push(Some(Replay::Stored(job_id))),
            None => plan.push(None),
        }
        seen.insert(key, hash);
    }
    Ok(plan)
}

/// Refuses the batch if a job is wider than `max_workers` or the user's
/// `waiting` jobs and the batch's new ones would exceed `max_queued_jobs`.
fn check_submit_quota(waiting: i64, fresh: &[&NewJob], quota: Quota) -> Result<(), DbError> {
    if fresh.is_empty() {
        return Ok(());
    }
    if let Some(wide) = fresh.iter().find(|n| n.required_workers > quota.max_workers) {
        return Err(DbError::QuotaExceeded(format!(
            "Quota exceeded: job needs {} workers, max_workers is {}",
            wide.required_workers, quota.max_workers
        )));
    }
    let adding = i64::try_from(fresh.len()).unwrap_or(i64::MAX);
    if waiting + adding > i64::from(quota.max_queued_jobs) {
        return Err(DbError::QuotaExceeded(format!(
            "Quota exceeded: {waiting} jobs already waiting, max_queued_jobs is {}",
            quota.max_queued_jobs
        )));
    }
    Ok(())
}

/// The insert of [`insert_many`]: the batch arrives as one JSON array.
const INSERT_SQL: &str = concat!(
    "WITH src AS (
         SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(job_id uuid, task_description text,
             required_workers integer, command jsonb, priority smallint, labels jsonb,
             max_retries integer, timeout_seconds integer, idempotency_key text,
             memory_mb integer, cpu_millis integer, max_pids integer, pool text, selector jsonb)),
     j AS (
         INSERT INTO jobs (job_id, status, task_description, required_workers, command, priority,
                           labels, max_retries, timeout_seconds, idempotency_key, submitted_by,
                           memory_mb, cpu_millis, max_pids, pool, selector)
         SELECT job_id, 'pending', task_description, required_workers,
                CASE WHEN jsonb_typeof(command) = 'array'
                     THEN ARRAY(SELECT jsonb_array_elements_text(command)) END,
                priority, coalesce(labels, '{}'), max_retries, timeout_seconds, idempotency_key, $2,
                memory_mb, cpu_millis, max_pids, pool, coalesce(selector, '{}')
         FROM src RETURNING *),
     e AS (INSERT INTO job_events (job_id, from_status, to_status, reason)
           SELECT job_id, NULL, 'pending', 'submitted' FROM j)
     SELECT ",
    job_columns!(),
    " FROM j"
);

/// Inserts `news` and their first events in one statement and returns the
/// jobs in the same order. One round trip per batch instead of one per job
/// matters: the user's row stays locked, and the user's other submissions
/// wait, until the commit.
async fn insert_many(
    client: &impl GenericClient,
    user_id: Uuid,
    news: &[&NewJob],
) -> Result<Vec<Job>, DbError> {
    if news.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, batch) = insert_rows(news)?;
    let mut by_id: HashMap<Uuid, Job> = client
        .rows(INSERT_SQL, &[&batch, &user_id])
        .await?
        .iter()
        .map(|row| from_row(row).map(|job| (job.job_id, job)))
        .collect::<Result<_, _>>()?;
    ids.iter()
        .map(|id| by_id.remove(id).ok_or_else(|| not_found(*id)))
        .collect()
}

/// The new jobs' ids (in order) and their rows as the JSON array
/// [`INSERT_SQL`] reads.
fn insert_rows(news: &[&NewJob]) -> Result<(Vec<Uuid>, serde_json::Value), DbError> {
    let mut ids = Vec::with_capacity(news.len());
    let mut rows = Vec::with_capacity(news.len());
    for new in news {
        let priority = i16::try_from(new.priority)
            .map_err(|_| DbError::Invariant(format!("priority {} passed validation", new.priority)))?;
        // Time-ordered (UUIDv7): every index keyed by job id then grows at
        // its right edge, so a table of millions of finished jobs costs a
        // new job the same few hot pages as an empty one, not a random leaf
        // (and its full-page image after each checkpoint) per index.
        let job_id = Uuid::now_v7();
        ids.push(job_id);
        rows.push(serde_json::json!({
            "job_id": job_id, "task_description": new.task_description,
            "required_workers": new.required_workers, "command": new.command, "priority": priority,
            "labels": new.labels, "max_retries": new.max_retries,
            "timeout_seconds": new.timeout_seconds, "idempotency_key": new.idempotency_key,
            "memory_mb": new.limits.memory_mb, "cpu_millis": new.limits.cpu_millis(),
            "max_pids": new.limits.max_pids,
            "pool": new.pool, "selector": new.selector,
        }));
    }
    Ok((ids, serde_json::Value::Array(rows)))
}

/// The dispatch of shard `shard_index` of `job`'s attempt `attempt`.
fn dispatch(job: &Job, attempt: i32, shard_index: i32) -> Result<(serde_json::Value, i16), DbError> {
    let priority = i16::try_from(job.priority)
        .map_err(|_| DbError::Invariant(format!("job {} has priority {}", job.job_id, job.priority)))?;
    let msg = JobDispatch {
        job_id: job.job_id,
        attempt,
        shard_index,
        shard_count: job.required_workers,
        task_description: job.task_description.clone(),
        command: job.command.clone(),
        timeout_seconds: job.timeout_seconds,
        priority: job.priority,
    };
    let payload = serde_json::to_value(&msg)
        .map_err(|e| DbError::Invariant(format!("dispatch of job {}: {e}", job.job_id)))?;
    Ok((payload, priority))
}

/// Writes the dispatch of one shard of `job`'s attempt `attempt` again, to
/// be published no earlier than `delay_ms` from now (a shard that waits for
/// a worker of its own).
pub async fn enqueue_shard_dispatch(
    client: &impl GenericClient,
    job: &Job,
    attempt: i32,
    shard_index: i32,
    delay_ms: i64,
) -> Result<(), DbError> {
    let (payload, priority) = dispatch(job, attempt, shard_index)?;
    outbox::enqueue_delayed(
        client,
        WORK_EXCHANGE,
        &class_key(job),
        &payload,
        priority,
        Some(job.job_id),
        delay_ms,
    )
    .await?;
    Ok(())
}

/// The routing key of `job`'s class: its dispatches go to the queue of
/// its pool and selector (see `orchestrator_shared::pools`).
fn class_key(job: &Job) -> String {
    JobClass {
        pool: &job.pool,
        selector: &job.selector,
    }
    .routing_key()
}

/// The dispatch messages of one job class, in order, as
/// [`outbox::enqueue_many`] takes them.
#[derive(Default)]
struct ClassDispatches {
    /// The messages.
    payloads: Vec<serde_json::Value>,
    /// Their broker priorities.
    priorities: Vec<i16>,
    /// Their jobs.
    job_ids: Vec<Uuid>,
}

/// Writes the dispatch messages of every shard of `jobs`' next attempts,
/// one statement per job class among them (one for a batch of one class),
/// published no earlier than `delay_ms` from now (a retry's backoff, kept
/// in Postgres where it survives restarts).
pub async fn enqueue_dispatch_many(
    client: &impl GenericClient,
    jobs: &[&Job],
    delay_ms: i64,
) -> Result<(), DbError> {
    let mut by_class: Vec<(String, ClassDispatches)> = Vec::new();
    for job in jobs {
        let key = class_key(job);
        let at = match by_class.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                by_class.push((key, ClassDispatches::default()));
                by_class.len() - 1
            }
        };
        let (_, class) = &mut by_class[at];
        for shard_index in 0..job.required_workers {
            let (payload, priority) = dispatch(job, job.attempts + 1, shard_index)?;
            class.payloads.push(payload);
            class.priorities.push(priority);
            class.job_ids.push(job.job_id);
        }
    }
    for (key, c) in &by_class {
        outbox::enqueue_many(
            client,
            WORK_EXCHANGE,
            key,
            &c.payloads,
            &c.priorities,
            &c.job_ids,
            delay_ms,
        )
        .await?;
    }
    Ok(())
}
