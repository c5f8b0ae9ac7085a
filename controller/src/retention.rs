//! Retention: what keeps Postgres from growing without bound. Finished jobs
//! older than `ORCH_JOB_RETENTION_DAYS` go with every row that names them,
//! idempotency keys older than their window, outbox rows the broker
//! confirmed long enough ago, and allocations ended and schedules' runs
//! handled as long ago as a finished job is kept.
//!
//! Only the reaper's leader runs it ([`Schedule::tick`], after its other
//! duties), every `ORCH_RETENTION_INTERVAL_SECONDS`. A pass deletes in
//! batches of [`BATCH`] rows (`crate::db::retention`), one short transaction
//! each, pausing between them, and stops after [`PASS_BUDGET`] so that the
//! reaper's probes and timeouts are never held up; a pass stopped with rows
//! left is followed by another at the reaper's next interval, until the
//! backlog is gone. Nothing unfinished is ever deleted, whatever its age,
//! and no unsent outbox row.

use crate::config::RetentionConfig;
use crate::db::retention::{self, Aged, Removed};
use crate::db::{Database, DbError};
use std::time::{Duration, Instant};

/// Rows one batch statement deletes at most (of jobs: jobs, each with its
/// events, shards, outbox rows and key): small enough that a batch's
/// transaction takes milliseconds, large enough that a backlog of a million
/// finished jobs goes in minutes.
pub const BATCH: i64 = 500;

/// How long one pass keeps starting batches: half the reaper's default
/// interval, so a backlog never takes the leader's whole loop.
pub const PASS_BUDGET: Duration = Duration::from_millis(500);

/// Pause between two batches, so the job flow's transactions and the WAL
/// writer get their turn while a backlog is deleted.
const BETWEEN_BATCHES: Duration = Duration::from_millis(10);

/// Counter of the rows retention deleted, labelled by `table`.
pub const METRIC: &str = "retention_rows_deleted_total";

/// How much one pass may do: rows per batch and time for batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows per batch statement.
    pub batch: i64,
    /// Time after which a pass starts no further batch.
    pub budget: Duration,
}

impl Limits {
    /// What the controller uses: [`BATCH`] and [`PASS_BUDGET`].
    pub const DEFAULT: Limits = Limits {
        batch: BATCH,
        budget: PASS_BUDGET,
    };
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Rows deleted, by table.
    pub removed: Removed,
    /// Batch statements run.
    pub batches: u32,
    /// Whether the pass stopped at its budget with rows left to delete.
    pub more: bool,
}

/// One kind of row a pass deletes, and its age.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Finished jobs older than this, with their rows.
    FinishedJobs(Duration),
    /// Rows of one table older than this.
    Older(Aged, Duration),
}

impl Step {
    /// The steps `config` asks for (an age of 0 keeps that kind forever).
    fn all(config: &RetentionConfig) -> Vec<Step> {
        [
            Step::FinishedJobs(config.jobs),
            Step::Older(Aged::EndedAllocations, config.jobs),
            Step::Older(Aged::ScheduleRuns, config.jobs),
            Step::Older(Aged::IdempotencyKeys, config.idempotency_keys),
            Step::Older(Aged::SentOutbox, config.sent_outbox),
        ]
        .into_iter()
        .filter(|step| !step.age().is_zero())
        .collect()
    }

    /// How old a row must be for this step to delete it.
    fn age(self) -> Duration {
        match self {
            Step::FinishedJobs(age) | Step::Older(_, age) => age,
        }
    }

    /// Runs one batch of this step; answers what it deleted and whether
    /// the batch was full (so more may be left).
    async fn batch(
        self,
        client: &mut deadpool_postgres::Client,
        batch: i64,
    ) -> Result<(Removed, bool), DbError> {
        let (removed, main) = match self {
            Step::FinishedJobs(age) => {
                let removed = retention::finished_jobs(client, age, batch).await?;
                (removed, removed.jobs)
            }
            Step::Older(what, age) => {
                let removed = retention::older_rows(client, what, age, batch).await?;
                (removed, removed.total())
            }
        };
        Ok((removed, main >= batch.unsigned_abs()))
    }
}

/// One retention pass under `config`: round after round, one batch of
/// each kind that still has rows to delete, until none has or `limits`'
/// budget is spent. Each batch's rows are counted in [`METRIC`] once
/// committed; a pass that deleted anything logs one line.
pub async fn run_pass(db: &Database, config: &RetentionConfig, limits: Limits) -> Result<Pass, DbError> {
    let started = Instant::now();
    let mut client = db.client().await?;
    let mut pass = Pass::default();
    let mut steps = Step::all(config);
    while !steps.is_empty() {
        let mut left = Vec::with_capacity(steps.len());
        for step in steps {
            let (removed, full) = step.batch(&mut client, limits.batch).await?;
            record(&removed);
            pass.removed.add(removed);
            pass.batches += 1;
            if full {
                left.push(step);
            }
        }
        steps = left;
        if steps.is_empty() {
            break;
        }
        if started.elapsed() >= limits.budget {
            pass.more = true;
            break;
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
    log_pass(&pass, started.elapsed());
    Ok(pass)
}

/// The one line of a pass that deleted something.
fn log_pass(pass: &Pass, took: Duration) {
    let r = pass.removed;
    if r.total() == 0 {
        return;
    }
    tracing::info!(
        jobs = r.jobs,
        job_events = r.job_events,
        job_shards = r.job_shards,
        outbox = r.outbox,
        idempotency_keys = r.idempotency_keys,
        allocations = r.allocations,
        schedule_runs = r.schedule_runs,
        batches = pass.batches,
        more = pass.more,
        took_ms = took.as_millis(),
        "retention pass deleted old rows"
    );
}

/// Shows the counter at 0 for every table before anything is deleted, so
/// that a rate over it starts from the first pass. Idempotent.
pub fn describe_metrics() {
    metrics::describe_counter!(
        METRIC,
        "Rows deleted by retention (finished jobs past their age and their rows, expired \
         idempotency keys, old sent outbox rows, old ended allocations, old runs of schedules), by table."
    );
    for (table, _) in Removed::default().by_table() {
        metrics::counter!(METRIC, "table" => table).increment(0);
    }
}

/// Counts `removed` in [`METRIC`], per table.
pub fn record(removed: &Removed) {
    for (table, n) in removed.by_table() {
        if n > 0 {
            metrics::counter!(METRIC, "table" => table).increment(n);
        }
    }
}

/// When the leader's next retention pass is due. A pass that stopped with
/// rows left makes the next one due at once (that is, at the reaper's next
/// interval); otherwise the next is an interval away. A failed pass is
/// logged and tried again an interval later.
#[derive(Debug)]
pub struct Schedule {
    /// The ages, windows and interval.
    config: RetentionConfig,
    /// When the next pass may start.
    next: Instant,
}

impl Schedule {
    /// A schedule whose first pass is due at once (a new leader catches up
    /// without waiting an interval).
    pub fn new(config: RetentionConfig) -> Schedule {
        describe_metrics();
        Schedule {
            config,
            next: Instant::now(),
        }
    }

    /// Runs a pass if one is due.
    pub async fn tick(&mut self, db: &Database) {
        if Instant::now() < self.next {
            return;
        }
        let more = match run_pass(db, &self.config, Limits::DEFAULT).await {
            Ok(pass) => pass.more,
            Err(e) => {
                tracing::warn!(error = ?e, "retention pass failed");
                false
            }
        };
        let wait = if more {
            Duration::ZERO
        } else {
            self.config.interval
        };
        self.next = Instant::now() + wait;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jobs: u64, keys: u64, outbox: u64) -> RetentionConfig {
        RetentionConfig {
            jobs: Duration::from_secs(jobs),
            idempotency_keys: Duration::from_secs(keys),
            sent_outbox: Duration::from_secs(outbox),
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn an_age_of_zero_keeps_that_kind_of_row() {
        assert_eq!(Step::all(&config(0, 0, 0)).len(), 0);
        assert_eq!(
            Step::all(&config(1, 1, 1)).len(),
            5,
            "jobs, allocations, schedule runs, keys, outbox"
        );
        let keys_only = Step::all(&config(0, 1, 0));
        assert!(matches!(
            keys_only[..],
            [Step::Older(Aged::IdempotencyKeys, d)] if d == Duration::from_secs(1)
        ));
    }

    #[test]
    fn the_metric_counts_each_table_deleted_from() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let removed = Removed {
            jobs: 3,
            job_events: 12,
            outbox: 5,
            ..Removed::default()
        };
        metrics::with_local_recorder(&recorder, || {
            describe_metrics();
            record(&removed);
            record(&removed);
        });
        let text = handle.render();
        for line in [
            "retention_rows_deleted_total{table=\"jobs\"} 6",
            "retention_rows_deleted_total{table=\"job_events\"} 24",
            "retention_rows_deleted_total{table=\"outbox\"} 10",
            "retention_rows_deleted_total{table=\"job_shards\"} 0",
            "retention_rows_deleted_total{table=\"allocations\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
