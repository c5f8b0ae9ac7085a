//! The last hour minute by minute, for the dashboard's charts: jobs that
//! finished per minute (from `jobs.finished_at`) and the queue depth the
//! reaper's leader samples into `queue_depth_samples` (migration V15), so
//! the history survives a controller restart and every replica serves the
//! same one.

use super::{Cached, Database, DbError};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

/// Shortest time between two queue depth samples, whichever replica leads
/// (a pass that comes sooner writes nothing): a handful per minute is what
/// a per-minute chart needs.
pub const SAMPLE_EVERY_SECONDS: f64 = 10.0;

/// The longest span the timeline answers, in minutes (a day).
pub const MAX_MINUTES: i32 = 1440;

/// One minute of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TimelinePoint {
    /// The minute's start (UTC).
    pub minute: DateTime<Utc>,
    /// Jobs that finished `completed` within the minute.
    pub completed: i64,
    /// Jobs that finished `failed` or `timed_out` within the minute.
    pub failed: i64,
    /// Highest sampled queue depth (pending + queued) within the minute;
    /// `null` when no sample was taken (no controller led then).
    pub queue_depth: Option<i64>,
}

/// Records the current queue depth unless a sample younger than
/// [`SAMPLE_EVERY_SECONDS`] exists, and forgets samples older than two
/// days (the chart shows an hour; the bound keeps the table small). Called by the reaper's leader on each pass.
pub async fn sample_queue_depth(db: &Database) -> Result<(), DbError> {
    let client = db.client().await?;
    client
        .exec(
            "INSERT INTO queue_depth_samples (sampled_at, depth)
             SELECT now(), count(*) FROM jobs WHERE status IN ('pending', 'queued')
             HAVING NOT EXISTS (SELECT 1 FROM queue_depth_samples
                                WHERE sampled_at > now() - make_interval(secs => $1))
             ON CONFLICT (sampled_at) DO NOTHING",
            &[&SAMPLE_EVERY_SECONDS],
        )
        .await?;
    client
        .exec(
            "DELETE FROM queue_depth_samples WHERE sampled_at < now() - interval '2 days'",
            &[],
        )
        .await?;
    Ok(())
}

/// The last `minutes` minutes (the current one last), every minute
/// present, zeros included.
pub async fn last_minutes(client: &impl GenericClient, minutes: i32) -> Result<Vec<TimelinePoint>, DbError> {
    let rows = client
        .rows(
            "WITH span AS (SELECT date_trunc('minute', now()) - make_interval(mins => $1 - 1) AS since),
             minutes AS (
               SELECT generate_series(since, date_trunc('minute', now()), interval '1 minute') AS minute
               FROM span),
             finished AS (
               SELECT date_trunc('minute', finished_at) AS minute,
                      count(*) FILTER (WHERE status = 'completed') AS completed,
                      count(*) FILTER (WHERE status IN ('failed', 'timed_out')) AS failed
               FROM jobs, span WHERE finished_at >= span.since GROUP BY 1),
             depth AS (
               SELECT date_trunc('minute', sampled_at) AS minute, max(depth) AS depth
               FROM queue_depth_samples, span WHERE sampled_at >= span.since GROUP BY 1)
             SELECT m.minute, coalesce(f.completed, 0), coalesce(f.failed, 0), d.depth
             FROM minutes m
             LEFT JOIN finished f ON f.minute = m.minute
             LEFT JOIN depth d ON d.minute = m.minute
             ORDER BY m.minute",
            &[&minutes],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(TimelinePoint {
                minute: row.try_get(0)?,
                completed: row.try_get(1)?,
                failed: row.try_get(2)?,
                queue_depth: row.try_get(3)?,
            })
        })
        .collect()
}
