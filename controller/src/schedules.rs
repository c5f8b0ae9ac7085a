//! Firing schedules: each pass of the reaper's leader submits the jobs of
//! the ticks that came due, exactly once per tick.
//!
//! - [`plan`] (pure): given where a schedule stands and the time, which
//!   ticks to fire on time, and what to do with the latest one missed.
//! - [`fire_due`]: one transaction per schedule: the schedule locked (`SKIP
//!   LOCKED`: another replica firing it is not waited for), each tick's run
//!   row claimed through its unique key (a tick handled before, by anyone,
//!   is not handled again), the job submitted through the normal submission
//!   (job and outbox rows in the same transaction; the relay publishes it),
//!   then the schedule's latest tick moved forward.

use crate::api::jobs::validate_submission;
use crate::db::schedules::StoredSchedule;
use crate::db::{flow, jobs, quotas, schedules, DbError};
use crate::models::Quota;
use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::Transaction;
use orchestrator_shared::api::{Cadence, Overlap, RunOutcome};
use std::time::Duration;

/// Why a job of a `cancel_previous` schedule was cancelled (its event's reason).
const CANCELLED_BY_NEXT_TICK: &str = "cancelled by its schedule's next tick (cancel_previous)";
/// Counter of handled ticks, by outcome.
const METRIC: &str = "schedule_runs_total";
/// Most on-time ticks one pass fires for one schedule: a per-second
/// schedule with the default grace has 60; past this bound the rest wait
/// for the next pass rather than hold the schedule's lock for long.
const MAX_TICKS_PER_PASS: usize = 600;

/// What firing needs beyond the database.
#[derive(Debug, Clone, Copy)]
pub struct Firing {
    /// A tick no older than this is fired normally; of older missed ones
    /// only the latest is handled (caught up or recorded missed).
    pub grace: Duration,
    /// Quota of owners without their own.
    pub default_quota: Quota,
}

/// One tick to handle and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The tick.
    pub at: DateTime<Utc>,
    /// `Fired` (on time), `CaughtUp` (late, fired anyway) or `Missed`.
    pub outcome: RunOutcome,
}

/// The ticks of a schedule to handle now, oldest first: those after `last`
/// (the latest handled) and at most `now`. A tick older than `grace` was
/// missed (no controller ran); of those only the latest counts, fired as
/// `CaughtUp` when `catch_up` is set and recorded `Missed` otherwise. The
/// others are fired on time (`Fired`).
pub fn plan(
    cadence: &Cadence,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
    catch_up: bool,
) -> Vec<Tick> {
    let grace = TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX);
    let cutoff = now.checked_sub_signed(grace).unwrap_or(DateTime::<Utc>::MIN_UTC);
    // Ticks fall on whole seconds: the latest second strictly before the
    // cutoff is the newest a late tick can be.
    let whole = cutoff.timestamp();
    let probe_secs = if cutoff.timestamp_subsec_nanos() == 0 {
        whole - 1
    } else {
        whole
    };
    let probe = DateTime::from_timestamp(probe_secs, 0).unwrap_or(cutoff);
    let mut ticks = Vec::new();
    if let Some(late) = cadence.latest_at_or_before(probe).filter(|t| *t > last) {
        let outcome = if catch_up {
            RunOutcome::CaughtUp
        } else {
            RunOutcome::Missed
        };
        ticks.push(Tick { at: late, outcome });
    }
    let from = last.max(probe);
    let on_time = std::iter::successors(cadence.next_after(from), |t| cadence.next_after(*t))
        .take_while(|t| *t <= now)
        .filter(|t| *t > last)
        .take(MAX_TICKS_PER_PASS)
        .map(|at| Tick {
            at,
            outcome: RunOutcome::Fired,
        });
    ticks.extend(on_time);
    ticks
}

/// Shows the counter at 0 for every outcome before any tick, so that a
/// rate over it starts from the first. Idempotent.
pub fn describe_metrics() {
    metrics::describe_counter!(
        METRIC,
        "Ticks of schedules handled by the leader, by outcome (fired, caught_up, skipped, missed, failed)."
    );
    for outcome in RunOutcome::ALL {
        metrics::counter!(METRIC, "outcome" => outcome.as_str()).increment(0);
    }
}

/// Fires every enabled schedule's due ticks, one transaction per schedule
/// with a tick due (the others cost no transaction: one read tells them
/// apart). A schedule that fails is logged and tried again next pass; the
/// others go on.
pub async fn fire_due(db: &crate::db::Database, firing: Firing) -> Result<usize, DbError> {
    let standing = {
        let client = db.client().await?;
        schedules::enabled(&client).await?
    };
    let now = Utc::now();
    let mut handled = 0;
    for s in standing.into_iter().filter(|s| is_due(s, now)) {
        match fire_one(db, firing, s.schedule_id).await {
            Ok(n) => handled += n,
            Err(e) => tracing::warn!(schedule_id = %s.schedule_id, error = ?e, "firing a schedule failed"),
        }
    }
    Ok(handled)
}

/// Whether a tick of the schedule falls after its latest handled one and
/// by `now`. A schedule whose cron or zone no longer parses counts as due,
/// so that firing reports it.
fn is_due(s: &schedules::Standing, now: DateTime<Utc>) -> bool {
    Cadence::parse(&s.cron, &s.timezone).map_or(true, |c| c.next_after(s.last_tick).is_some_and(|t| t <= now))
}

/// Handles one schedule's due ticks in one transaction; the ticks handled.
async fn fire_one(
    db: &crate::db::Database,
    firing: Firing,
    schedule_id: uuid::Uuid,
) -> Result<usize, DbError> {
    let mut client = db.client().await?;
    let mut tx = client.transaction().await?;
    let Some(stored) = schedules::lock_enabled(&tx, schedule_id).await? else {
        return Ok(0);
    };
    let s = &stored.schedule;
    let cadence = Cadence::parse(&s.cron, &s.timezone)
        .map_err(|_| DbError::Corrupt(format!("schedule {schedule_id}: cron or zone")))?;
    let ticks = plan(&cadence, stored.last_tick, Utc::now(), firing.grace, s.catch_up);
    let Some(latest) = ticks.last().map(|t| t.at) else {
        return Ok(0);
    };
    let quota = quotas::get(&tx, s.owner, firing.default_quota).await?;
    let mut outcomes = Vec::new();
    for tick in ticks {
        if let Some(outcome) = handle_tick(&mut tx, &stored, tick, quota).await? {
            outcomes.push(outcome);
        }
    }
    schedules::advance(&tx, schedule_id, latest).await?;
    tx.commit().await?;
    for outcome in &outcomes {
        metrics::counter!(METRIC, "outcome" => outcome.as_str()).increment(1);
    }
    Ok(outcomes.len())
}

/// Handles one tick if its run row is this call's to claim: records it
/// missed, skips it or cancels the previous job per the overlap policy,
/// and submits the template. `None` if the tick was handled before.
async fn handle_tick(
    tx: &mut Transaction<'_>,
    stored: &StoredSchedule,
    tick: Tick,
    quota: Quota,
) -> Result<Option<RunOutcome>, DbError> {
    let id = stored.schedule.schedule_id;
    if !schedules::claim_run(&*tx, id, tick.at, tick.outcome).await? {
        return Ok(None);
    }
    if tick.outcome == RunOutcome::Missed {
        return Ok(Some(RunOutcome::Missed));
    }
    if settle_overlap(tx, stored).await? {
        schedules::record_run(&*tx, id, tick.at, RunOutcome::Skipped, None, None).await?;
        return Ok(Some(RunOutcome::Skipped));
    }
    let outcome = submit(tx, stored, tick, quota).await?;
    Ok(Some(outcome))
}

/// Applies the overlap policy to the previous job if it is unfinished:
/// true if this tick is to be skipped; under `cancel_previous` the job is
/// cancelled (stopped on its agents if it runs).
async fn settle_overlap(tx: &Transaction<'_>, stored: &StoredSchedule) -> Result<bool, DbError> {
    let s = &stored.schedule;
    if s.overlap == Overlap::Allow {
        return Ok(false);
    }
    let Some(previous) = schedules::previous_job(tx, s.schedule_id).await? else {
        return Ok(false);
    };
    let job = jobs::lock(tx, previous).await?;
    if job.status.is_terminal() {
        return Ok(false);
    }
    match s.overlap {
        Overlap::Skip => Ok(true),
        Overlap::Allow | Overlap::CancelPrevious => {
            flow::cancel_because(tx, &job, CANCELLED_BY_NEXT_TICK).await?;
            Ok(false)
        }
    }
}

/// Submits the template for `tick` in a savepoint: a quota's refusal rolls
/// back only the submission and records the run `failed` with the reason.
async fn submit(
    tx: &mut Transaction<'_>,
    stored: &StoredSchedule,
    tick: Tick,
    quota: Quota,
) -> Result<RunOutcome, DbError> {
    let s = &stored.schedule;
    let new = validate_submission(s.template.clone())
        .map_err(|_| DbError::Corrupt(format!("schedule {}: template", s.schedule_id)))?;
    let savepoint = tx.transaction().await?;
    match jobs::submit(&savepoint, s.owner, &new, quota).await {
        Ok(mut submitted) => {
            schedules::tag_job(&savepoint, &mut submitted.job, s.schedule_id).await?;
            savepoint.commit().await?;
            let job_id = Some(submitted.job.job_id);
            schedules::record_run(&*tx, s.schedule_id, tick.at, tick.outcome, job_id, None).await?;
            Ok(tick.outcome)
        }
        Err(DbError::QuotaExceeded(why)) => {
            savepoint.rollback().await?;
            schedules::record_run(&*tx, s.schedule_id, tick.at, RunOutcome::Failed, None, Some(&why)).await?;
            Ok(RunOutcome::Failed)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn ticks(cron: &str, last: &str, now: &str, grace_s: u64, catch_up: bool) -> Vec<(String, RunOutcome)> {
        let cadence = Cadence::parse(cron, "UTC").unwrap();
        plan(
            &cadence,
            at(last),
            at(now),
            Duration::from_secs(grace_s),
            catch_up,
        )
        .into_iter()
        .map(|t| (t.at.format("%H:%M:%S").to_string(), t.outcome))
        .collect()
    }

    fn fired(times: &[&str]) -> Vec<(String, RunOutcome)> {
        times
            .iter()
            .map(|t| ((*t).to_owned(), RunOutcome::Fired))
            .collect()
    }

    #[test]
    fn nothing_is_due_before_the_next_tick() {
        assert!(ticks(
            "* * * * *",
            "2026-01-01T12:00:00Z",
            "2026-01-01T12:00:59.9Z",
            60,
            false
        )
        .is_empty());
    }

    #[test]
    fn a_tick_within_the_grace_fires_on_time() {
        let got = ticks(
            "* * * * *",
            "2026-01-01T12:00:00Z",
            "2026-01-01T12:01:05Z",
            60,
            false,
        );
        assert_eq!(got, fired(&["12:01:00"]));
        let edge = ticks(
            "* * * * *",
            "2026-01-01T12:00:00Z",
            "2026-01-01T12:02:00Z",
            60,
            false,
        );
        assert_eq!(
            edge,
            fired(&["12:01:00", "12:02:00"]),
            "exactly the grace old is on time"
        );
    }

    #[test]
    fn of_ticks_missed_past_the_grace_only_the_latest_is_handled() {
        let (last, now) = ("2026-01-01T12:00:00Z", "2026-01-01T12:05:30Z");
        let missed = ticks("* * * * *", last, now, 60, false);
        let mut expected = vec![("12:04:00".to_owned(), RunOutcome::Missed)];
        expected.extend(fired(&["12:05:00"]));
        assert_eq!(missed, expected);
        let caught = ticks("* * * * *", last, now, 60, true);
        expected[0].1 = RunOutcome::CaughtUp;
        assert_eq!(caught, expected);
    }

    #[test]
    fn a_schedule_made_mid_second_starts_at_the_next_whole_one() {
        let got = ticks(
            "* * * * * *",
            "2026-01-01T12:00:00.300Z",
            "2026-01-01T12:00:02.100Z",
            60,
            false,
        );
        assert_eq!(got, fired(&["12:00:01", "12:00:02"]));
    }

    #[test]
    fn a_handled_tick_is_not_planned_again() {
        let got = ticks(
            "* * * * * *",
            "2026-01-01T12:00:02Z",
            "2026-01-01T12:00:02.900Z",
            1,
            true,
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_long_outage_of_a_per_second_schedule_is_bounded() {
        let got = ticks(
            "* * * * * *",
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            3,
            false,
        );
        assert_eq!(
            got.len(),
            5,
            "one missed tick and the four no older than the grace: {got:?}"
        );
        assert_eq!(got[0], ("23:59:56".to_owned(), RunOutcome::Missed));
    }

    #[test]
    fn a_schedule_is_due_only_once_a_tick_follows_its_last() {
        let standing = |cron: &str, zone: &str| schedules::Standing {
            schedule_id: uuid::Uuid::nil(),
            cron: cron.to_owned(),
            timezone: zone.to_owned(),
            last_tick: at("2026-01-01T10:00:00Z"),
        };
        let every_minute = standing("* * * * *", "UTC");
        assert!(!is_due(&every_minute, at("2026-01-01T10:00:59Z")));
        assert!(is_due(&every_minute, at("2026-01-01T10:01:00Z")));
        assert!(is_due(&every_minute, at("2026-01-02T00:00:00Z")), "long past");
        let noon_in_tokyo = standing("0 12 * * *", "Asia/Tokyo");
        assert!(!is_due(&noon_in_tokyo, at("2026-01-02T02:59:59Z")));
        assert!(is_due(&noon_in_tokyo, at("2026-01-02T03:00:00Z")));
        assert!(
            is_due(&standing("not a cron", "UTC"), at("2026-01-01T10:00:01Z")),
            "firing reports what no longer parses"
        );
    }
}
