//! Retention under load: with `--aged-rows`, the jobs table starts with a
//! backlog of jobs finished past the default retention age, and the run
//! reports how fast the controller's leader deleted them while the load
//! ran, and how long it took after the load to delete the rest. Pruning
//! keeps up when, under load, it deletes faster than jobs finish.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The controller's default `--job-retention-days`, which the counted
/// backlog assumes.
const RETENTION_DAYS: i32 = 30;

/// How many days ago the aged jobs finished: one past [`RETENTION_DAYS`].
pub const AGED_DAYS: i32 = RETENTION_DAYS + 1;

/// How often the backlog is counted once the load is over.
const POLL: Duration = Duration::from_secs(2);

/// Counts the jobs past the default retention age ([`RETENTION_DAYS`]).
async fn aged(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM jobs WHERE finished_at < now() - make_interval(days => $1)",
            &[&RETENTION_DAYS],
        )
        .await?
        .get(0))
}

/// The backlog as the load starts.
pub struct Backlog {
    at_start: i64,
    started: Instant,
}

impl Backlog {
    /// Counts the backlog now, when the run filled one.
    pub async fn start(db: &tokio_postgres::Client, filled: i64) -> anyhow::Result<Option<Backlog>> {
        if filled <= 0 {
            return Ok(None);
        }
        Ok(Some(Backlog {
            at_start: aged(db).await?,
            started: Instant::now(),
        }))
    }

    /// After the load: what was deleted while it ran, then waits (until
    /// `deadline`) for the rest to go, and reports both rates.
    pub async fn finish(self, db: &tokio_postgres::Client, deadline: Instant) -> anyhow::Result<Value> {
        let load = self.started.elapsed();
        let at_end = aged(db).await?;
        let after = Instant::now();
        let mut left = at_end;
        while left > 0 && Instant::now() + POLL < deadline {
            tokio::time::sleep(POLL).await;
            left = aged(db).await?;
        }
        let rest = after.elapsed();
        let rate = |n: i64, took: Duration| n as f64 / took.as_secs_f64().max(0.001);
        Ok(json!({
            "aged_at_start": self.at_start,
            "deleted_during_load": self.at_start - at_end,
            "deleted_per_second_during_load": rate(self.at_start - at_end, load),
            "left_at_end_of_load": at_end,
            "seconds_to_clear_after_load": (left == 0).then_some(rest.as_secs_f64()),
            "deleted_per_second_after_load": rate(at_end - left, rest),
            "left": left,
        }))
    }
}

/// The readable line of the pruning figures, when there are some.
pub fn print_summary(pruning: &Value) {
    if pruning.is_null() {
        return;
    }
    let num = |key: &str| pruning[key].as_f64().unwrap_or(f64::NAN);
    println!(
        "pruning: {:.0} aged jobs at start; {:.0} deleted during the load ({:.0}/s); \
         {:.0} left at its end, deleted at {:.0}/s after it; {} left{}",
        num("aged_at_start"),
        num("deleted_during_load"),
        num("deleted_per_second_during_load"),
        num("left_at_end_of_load"),
        num("deleted_per_second_after_load"),
        num("left"),
        pruning["seconds_to_clear_after_load"]
            .as_f64()
            .map_or_else(String::new, |s| format!(" (cleared {s:.1} s after the load)"))
    );
}
