//! The job flow's state changes, driven by agents: claiming a shard,
//! finishing it, heartbeats, and the reaper's decisions about lost workers
//! and overdue jobs. Each public function runs inside the caller's
//! transaction (those of `claims`, and `complete_succeeded_at_once`, in one
//! of their own on the connection they are given) and locks the job row
//! first, so concurrent reports about one
//! job are applied one at a time; fencing on (job, attempt, shard, worker)
//! makes duplicate and stale reports change nothing.
//!
//! - [`claim`](mod@claim): may this agent run this shard now?
//! - [`claims`]: many claims in one transaction, one agent's or several.
//! - [`gather`]: several agents' claim requests in shared transactions.
//! - [`finish`](mod@finish): a shard's report, failures, retries, cancels.
//! - [`reports`]: a batch's plain successes applied set-based.
//! - [`liveness`]: heartbeats, stopped agents, lost agents, overdue jobs.

mod claim;
mod claims;
mod finish;
mod gather;
mod liveness;
mod reports;

pub use claim::{claim, Claim};
pub use claims::claim_batch;
pub use finish::{abandon, cancel, cancel_because, finish, Finished};
pub use gather::{ClaimGather, GatheredClaims, GATHER_UP_TO};
pub use liveness::{heartbeat, overdue_jobs, probe, shards_of, stale_workers, stopped};
pub use reports::{all_plain, complete_succeeded, complete_succeeded_at_once, Completed};

use super::{parse_limits, parse_status, Cached, DbError};
use deadpool_postgres::{GenericClient, Transaction};
use orchestrator_shared::api::ShardWork;
use orchestrator_shared::backoff::Backoff;
use orchestrator_shared::JobStatus;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// The job row fields the flow decides on.
#[derive(Debug, Clone, Copy)]
struct Locked {
    status: JobStatus,
    attempts: i32,
    required_workers: i32,
    max_retries: i32,
}

/// The columns [`Locked`] is read from, first in every locking query.
const LOCKED_COLUMNS: &str = "status, attempts, required_workers, max_retries";

impl Locked {
    /// Reads the [`LOCKED_COLUMNS`] at the start of `row`.
    fn from_row(row: &tokio_postgres::Row) -> Result<Locked, DbError> {
        Ok(Locked {
            status: parse_status(row, "status")?,
            attempts: row.try_get(1)?,
            required_workers: row.try_get(2)?,
            max_retries: row.try_get(3)?,
        })
    }
}

/// Locks the job row for the transaction and reads what the flow decides
/// on; `None` for an unknown job.
async fn lock_job(tx: &Transaction<'_>, job_id: Uuid) -> Result<Option<Locked>, DbError> {
    let sql = format!("SELECT {LOCKED_COLUMNS} FROM jobs WHERE job_id = $1 FOR NO KEY UPDATE");
    let row = tx.row_opt(&sql, &[&job_id]).await?;
    row.as_ref().map(Locked::from_row).transpose()
}

/// What a shard runs, read by name from a row of `jobs` that holds
/// `task_description`, `command`, `timeout_seconds`, `required_workers` and
/// the limit columns: the work a claim's `run` answer carries.
fn shard_work(row: &tokio_postgres::Row) -> Result<ShardWork, DbError> {
    Ok(ShardWork {
        task_description: row.try_get("task_description")?,
        command: row.try_get("command")?,
        timeout_seconds: row.try_get("timeout_seconds")?,
        shard_count: row.try_get("required_workers")?,
        limits: parse_limits(row)?,
    })
}

/// The job ids that occur exactly once in `ids`: what a batch may decide
/// set-based (a job named twice is left to the one-at-a-time rules, which
/// see the first decision before the second).
fn named_once(ids: impl IntoIterator<Item = Uuid>) -> HashSet<Uuid> {
    let mut seen: HashMap<Uuid, bool> = HashMap::new();
    for id in ids {
        seen.entry(id).and_modify(|once| *once = false).or_insert(true);
    }
    seen.into_iter()
        .filter_map(|(id, once)| once.then_some(id))
        .collect()
}

/// Retry timing: exponential from `base`, capped at `max`, with ±20% jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based), jittered.
    pub fn delay(&self, attempt: i32, jitter_unit: f64) -> Duration {
        let retry = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0);
        let raw = Backoff::new(self.base, self.max).delay(retry);
        raw.mul_f64(0.8 + 0.4 * jitter_unit.clamp(0.0, 1.0))
    }
}

/// The largest batch whose statements [`plan_once_sql`] runs with generic
/// plans: what one agent of a few slots sends, one claim or report at a
/// time. A generic plan takes an array parameter for about ten elements,
/// so for such a batch it is the plan a custom one would be. Larger batches
/// keep a plan made for their size: with 16 here, 100,000 no-op jobs ran
/// 5–7 % slower (2,856 and 2,917 jobs/s against 3,084 and 3,094); with 4,
/// within the sitting's noise (3,128 and 2,676 against 3,202 and 2,834).
pub const PLAN_ONCE_UP_TO: usize = 4;

/// Sends `sql`, if any (a transaction's `BEGIN`, `SET LOCAL` or `COMMIT`
/// travelling with its statements), as a simple query.
async fn send_if(client: &impl GenericClient, sql: Option<&str>) -> Result<(), tokio_postgres::Error> {
    match sql {
        Some(sql) => client.batch_execute(sql).await,
        None => Ok(()),
    }
}

/// The `SET LOCAL` of [`plan_once_sql`], as a literal so that it can be joined
/// to a `BEGIN` at compile time.
macro_rules! generic_plans {
    () => {
        "SET LOCAL plan_cache_mode = force_generic_plan"
    };
}
pub(crate) use generic_plans;

/// The statement, sent first in a transaction (with its `BEGIN` where that
/// travels with its statements, `db::at_once`), that runs the rest of its
/// prepared statements with their generic plans, made once per connection,
/// instead of a plan made afresh for every call, when the batch has at
/// most [`PLAN_ONCE_UP_TO`] items; `None` for larger batches.
///
/// Claims and reports are a few statements over arrays (`unnest`,
/// `= ANY`). Postgres's plan cache kept choosing custom plans for them
/// (`pg_stat_statements`: as many plans as calls), since only a custom
/// plan sees how long the arrays are and so looks cheaper. Planning those
/// common-table expressions cost more than running them: one agent of four
/// slots running 10 ms jobs spent 1.96 s of 8 planning the claim, the
/// report and the release of dependents, against 0.99 s running them, and
/// `GetCachedPlan` was 11.5 % of the whole box's CPU. With generic plans
/// there, Postgres took 1.58–2.25 ms per job against 2.41–3.24.
///
/// A generic plan is only as good as the statistics it was made with: it
/// is made again whenever its tables are vacuumed or analysed (the
/// relation's cache is invalidated). Without autovacuum keeping up (the
/// image's 5 s naptime, migration V20's thresholds), plans made while the
/// tables were nearly empty were kept as they grew, and 100,000 no-op jobs
/// ran at 1,261 and 2,257 jobs/s against 3,110–3,290. `SET LOCAL` ends with
/// the transaction, so nothing else on the connection plans differently.
pub fn plan_once_sql(batch: usize) -> Option<&'static str> {
    (batch <= PLAN_ONCE_UP_TO).then_some(generic_plans!())
}

#[cfg(test)]
mod tests {
    use super::finish::rand_unit;
    use super::*;

    #[test]
    fn retry_delay_grows_caps_and_jitters_within_twenty_percent() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(p.delay(10, 0.5), Duration::from_secs(1));
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(80));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(120));
        assert_eq!(p.delay(i32::MIN, 0.5), Duration::from_millis(100));
        assert!((0.0..=1.0).contains(&rand_unit()));
    }
}
