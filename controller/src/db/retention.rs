//! Deleting what retention no longer keeps (see `crate::retention` for when
//! and how often): one batch of the oldest rows per call, one statement in
//! a short transaction of its own, so no lock is held for long and a pass
//! can stop between any two batches.
//!
//! Every batch locks its rows `FOR UPDATE SKIP LOCKED`, so a row some other
//! transaction holds (a late report on a finished job, a replayed
//! idempotency key) is left for a later pass instead of waited for; and
//! every transaction sets a short `lock_timeout`, so the cascades never wait
//! long on anything either. No batch ever deletes an unsent outbox row: a
//! finished job that still has one (a row the relay parked for an operator)
//! is kept with all its rows.

use super::{Cached, DbError};
use orchestrator_shared::JobStatus;
use std::time::Duration;

/// Longest a retention statement waits for a row lock before it gives up
/// (the pass then ends and the next one tries again): retention is never
/// worth holding up the job flow.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '2s'";

/// Rows one batch (or a whole pass) deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Finished jobs.
    pub jobs: u64,
    /// Events of those jobs.
    pub job_events: u64,
    /// Shards of those jobs.
    pub job_shards: u64,
    /// Sent outbox rows: of those jobs, or sent long enough ago.
    pub outbox: u64,
    /// Idempotency keys: of those jobs, or past their window.
    pub idempotency_keys: u64,
    /// Allocations ended (released or expired) long enough ago.
    pub allocations: u64,
    /// Runs of schedules handled as long ago as finished jobs are kept.
    pub schedule_runs: u64,
}

impl Removed {
    /// Each table's count, named as the metric's `table` label names it.
    pub fn by_table(&self) -> [(&'static str, u64); 7] {
        [
            ("jobs", self.jobs),
            ("job_events", self.job_events),
            ("job_shards", self.job_shards),
            ("outbox", self.outbox),
            ("idempotency_keys", self.idempotency_keys),
            ("allocations", self.allocations),
            ("schedule_runs", self.schedule_runs),
        ]
    }

    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.by_table().iter().map(|(_, n)| n).sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: Removed) {
        self.jobs += other.jobs;
        self.job_events += other.job_events;
        self.job_shards += other.job_shards;
        self.outbox += other.outbox;
        self.idempotency_keys += other.idempotency_keys;
        self.allocations += other.allocations;
        self.schedule_runs += other.schedule_runs;
    }
}

/// One batch of finished jobs: the oldest by finish time, at most `$2`,
/// finished longer than `$1` seconds ago, in a final status (`$3`), with no
/// unsent outbox row; each deleted with its events, shards, sent outbox
/// rows and idempotency key. The children are deleted by the statement
/// itself so that it can count them (the cascades then find nothing left);
/// an allocation naming the job keeps its row, unlinked by the foreign key.
const FINISHED_JOBS_SQL: &str = "
    WITH doomed AS (
        SELECT job_id FROM jobs j
        WHERE finished_at < now() - make_interval(secs => $1) AND status = ANY($3)
          AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = j.job_id AND o.sent_at IS NULL)
        ORDER BY finished_at LIMIT $2
        FOR UPDATE SKIP LOCKED),
    ev AS (DELETE FROM job_events e USING doomed d WHERE e.job_id = d.job_id RETURNING 1),
    sh AS (DELETE FROM job_shards s USING doomed d WHERE s.job_id = d.job_id RETURNING 1),
    ob AS (DELETE FROM outbox o USING doomed d
           WHERE o.job_id = d.job_id AND o.sent_at IS NOT NULL RETURNING 1),
    ik AS (DELETE FROM idempotency_keys k USING doomed d WHERE k.job_id = d.job_id RETURNING 1),
    jb AS (DELETE FROM jobs USING doomed d WHERE jobs.job_id = d.job_id RETURNING 1)
    SELECT (SELECT count(*) FROM jb), (SELECT count(*) FROM ev), (SELECT count(*) FROM sh),
           (SELECT count(*) FROM ob), (SELECT count(*) FROM ik)";

/// Deletes one batch of at most `batch` jobs that finished more than
/// `older_than` ago, with every row that names them.
pub async fn finished_jobs(
    client: &mut deadpool_postgres::Client,
    older_than: Duration,
    batch: i64,
) -> Result<Removed, DbError> {
    let finals: Vec<&str> = JobStatus::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect();
    let tx = client.transaction().await?;
    tx.batch_execute(LOCK_TIMEOUT).await?;
    let row = tx
        .row(FINISHED_JOBS_SQL, &[&older_than.as_secs_f64(), &batch, &finals])
        .await?;
    let count = |i: usize| -> Result<u64, DbError> {
        let n: i64 = row.try_get(i)?;
        Ok(n.unsigned_abs())
    };
    let removed = Removed {
        jobs: count(0)?,
        job_events: count(1)?,
        job_shards: count(2)?,
        outbox: count(3)?,
        idempotency_keys: count(4)?,
        allocations: 0,
        schedule_runs: 0,
    };
    tx.commit().await?;
    Ok(removed)
}

/// Which rows a batch of [`older_rows`] deletes: the table, the key that
/// names one row, the time column that ages it (indexed, in V10).
#[derive(Debug, Clone, Copy)]
pub enum Aged {
    /// Idempotency keys, aged by `created_at`: a key is forgotten once its
    /// window is over, while its job stays.
    IdempotencyKeys,
    /// Outbox rows the broker confirmed, aged by `sent_at`. Nothing reads a
    /// sent row (the relay takes unsent ones; a pending job counts as
    /// published when none of its rows is unsent), so it is only a trail.
    SentOutbox,
    /// Allocations released or expired, aged by `released_at`.
    EndedAllocations,
    /// Runs of schedules, aged by `recorded_at` (indexed in V11): kept as
    /// long as finished jobs, so a run outlives its job only briefly.
    ScheduleRuns,
}

impl Aged {
    /// The batch's statement: lock the oldest `$2` rows older than `$1`
    /// seconds that nobody holds, delete them, count them.
    fn sql(self) -> &'static str {
        match self {
            Aged::IdempotencyKeys => {
                "WITH doomed AS (
                     SELECT user_id, key FROM idempotency_keys
                     WHERE created_at < now() - make_interval(secs => $1)
                     ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED),
                 gone AS (DELETE FROM idempotency_keys k USING doomed d
                          WHERE k.user_id = d.user_id AND k.key = d.key RETURNING 1)
                 SELECT count(*) FROM gone"
            }
            Aged::SentOutbox => {
                "WITH doomed AS (
                     SELECT message_id FROM outbox
                     WHERE sent_at < now() - make_interval(secs => $1)
                     ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED),
                 gone AS (DELETE FROM outbox o USING doomed d
                          WHERE o.message_id = d.message_id AND o.sent_at IS NOT NULL RETURNING 1)
                 SELECT count(*) FROM gone"
            }
            Aged::EndedAllocations => {
                "WITH doomed AS (
                     SELECT allocation_id FROM allocations
                     WHERE released_at < now() - make_interval(secs => $1) AND status <> 'active'
                     ORDER BY released_at LIMIT $2 FOR UPDATE SKIP LOCKED),
                 gone AS (DELETE FROM allocations a USING doomed d
                          WHERE a.allocation_id = d.allocation_id RETURNING 1)
                 SELECT count(*) FROM gone"
            }
            Aged::ScheduleRuns => {
                "WITH doomed AS (
                     SELECT schedule_id, fire_time FROM schedule_runs
                     WHERE recorded_at < now() - make_interval(secs => $1)
                     ORDER BY recorded_at LIMIT $2 FOR UPDATE SKIP LOCKED),
                 gone AS (DELETE FROM schedule_runs r USING doomed d
                          WHERE r.schedule_id = d.schedule_id AND r.fire_time = d.fire_time RETURNING 1)
                 SELECT count(*) FROM gone"
            }
        }
    }

    /// These counts as a [`Removed`].
    fn removed(self, n: u64) -> Removed {
        match self {
            Aged::IdempotencyKeys => Removed {
                idempotency_keys: n,
                ..Removed::default()
            },
            Aged::SentOutbox => Removed {
                outbox: n,
                ..Removed::default()
            },
            Aged::EndedAllocations => Removed {
                allocations: n,
                ..Removed::default()
            },
            Aged::ScheduleRuns => Removed {
                schedule_runs: n,
                ..Removed::default()
            },
        }
    }
}

/// Deletes one batch of at most `batch` rows of `what` older than
/// `older_than`.
pub async fn older_rows(
    client: &mut deadpool_postgres::Client,
    what: Aged,
    older_than: Duration,
    batch: i64,
) -> Result<Removed, DbError> {
    let tx = client.transaction().await?;
    tx.batch_execute(LOCK_TIMEOUT).await?;
    let row = tx.row(what.sql(), &[&older_than.as_secs_f64(), &batch]).await?;
    let n: i64 = row.try_get(0)?;
    tx.commit().await?;
    Ok(what.removed(n.unsigned_abs()))
}
