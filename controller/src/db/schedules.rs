//! Queries on `schedules` and `schedule_runs`: the API's reads and writes,
//! and the leader's firing steps (lock a due schedule, claim a tick's run
//! row through its unique key, record what became of it).

use super::{parse_json, parse_status, Cached, DbError};
use crate::models::Job;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::schedules::MAX_CURSOR;
use orchestrator_shared::api::{Overlap, RunOutcome, Schedule, ScheduleRun, SubmitRequest};
use std::fmt;
use std::str::FromStr;
use tokio_postgres::Row;
use uuid::Uuid;

/// A stored schedule: what the API shows (its `next_fire_times` left
/// empty: they are computed, not stored) and where firing stands.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchedule {
    /// The schedule.
    pub schedule: Schedule,
    /// The latest tick handled; firing plans from it.
    pub last_tick: DateTime<Utc>,
}

/// A schedule's fields as the API checked them, for an insert or a
/// replacement: those of a creation request (the cron and zone parsed, the
/// template valid).
pub type ScheduleFields = orchestrator_shared::api::CreateScheduleRequest;

const COLUMNS: &str = "schedule_id, name, cron, timezone, template, enabled, overlap, catch_up, owner, \
                       last_tick, created_at, updated_at";

fn from_row(row: &Row) -> Result<StoredSchedule, DbError> {
    let overlap: String = row.try_get("overlap")?;
    let overlap =
        Overlap::parse(&overlap).ok_or_else(|| DbError::Corrupt(format!("schedule overlap {overlap}")))?;
    Ok(StoredSchedule {
        schedule: Schedule {
            schedule_id: row.try_get("schedule_id")?,
            name: row.try_get("name")?,
            cron: row.try_get("cron")?,
            timezone: row.try_get("timezone")?,
            template: parse_json(row, "template")?,
            enabled: row.try_get("enabled")?,
            overlap,
            catch_up: row.try_get("catch_up")?,
            owner: row.try_get("owner")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            next_fire_times: Vec::new(),
        },
        last_tick: row.try_get("last_tick")?,
    })
}

fn not_found(schedule_id: Uuid) -> DbError {
    DbError::NotFound {
        kind: "Schedule",
        id: schedule_id.to_string(),
    }
}

fn template_json(template: &SubmitRequest) -> Result<serde_json::Value, DbError> {
    serde_json::to_value(template).map_err(|e| DbError::Invariant(format!("template: {e}")))
}

/// Writes `fields` with `sql`, whose parameters are the schedule's id,
/// the fields in their order and an owner; answers the row it returns.
async fn write(
    client: &impl GenericClient,
    sql: &str,
    schedule_id: Uuid,
    fields: &ScheduleFields,
    owner: Option<Uuid>,
) -> Result<Option<StoredSchedule>, DbError> {
    let template = template_json(&fields.template)?;
    let row = client
        .row_opt(
            sql,
            &[
                &schedule_id,
                &fields.name,
                &fields.cron,
                &fields.timezone,
                &template,
                &fields.enabled,
                &fields.overlap.as_str(),
                &fields.catch_up,
                &owner,
            ],
        )
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Stores a new schedule of `owner`; its ticks count from now.
pub async fn insert(
    client: &impl GenericClient,
    owner: Uuid,
    fields: &ScheduleFields,
) -> Result<StoredSchedule, DbError> {
    let sql = format!(
        "INSERT INTO schedules (schedule_id, name, cron, timezone, template, enabled, overlap, catch_up,
                                owner, last_tick)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now()) RETURNING {COLUMNS}"
    );
    write(client, &sql, Uuid::new_v4(), fields, Some(owner))
        .await?
        .ok_or_else(|| DbError::Invariant("an insert returned no row".into()))
}

/// One schedule by id.
pub async fn get(client: &impl GenericClient, schedule_id: Uuid) -> Result<StoredSchedule, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE schedule_id = $1");
    let row = client.row_opt(&sql, &[&schedule_id]).await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| not_found(schedule_id))
}

/// Position in the by-name listing of schedules: the last schedule of a
/// page. Both its name and its id are kept, so the next page starts right
/// after it even if that schedule is renamed or deleted meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleCursor {
    /// Name of the last schedule shown (never NUL, which Postgres text
    /// cannot hold: so a cursor always becomes a filter, never a database
    /// error).
    pub name: String,
    /// Its id (ties on the name are broken by id).
    pub schedule_id: Uuid,
}

/// Written as URL-safe base64 without padding of the id's 16 bytes then
/// the name's UTF-8 bytes: any name round-trips, and the text needs no
/// escaping in a query string.
impl fmt::Display for ScheduleCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = self.schedule_id.as_bytes().to_vec();
        bytes.extend_from_slice(self.name.as_bytes());
        f.write_str(&URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// The shortest text of a cursor: 22 characters carry the id's 16 bytes.
const MIN_CURSOR: usize = 22;

/// Reads the cursor's base64 whatever its last character's spare bits
/// hold: see [`ScheduleCursor`]'s `FromStr`.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Parses a cursor. Every text of the documented shape (22 to
/// [`MAX_CURSOR`] characters of the URL-safe base64 alphabet, the OpenAPI
/// pattern) is a position in the listing, so a client that follows the
/// document never meets a 422: a last character that carries no whole
/// byte is dropped, spare bits are ignored, and a name that is not UTF-8
/// or holds NUL is read with U+FFFD in their place. A cursor this API
/// issued reads back exactly; any other starts the page somewhere.
/// Text of another shape is refused.
impl FromStr for ScheduleCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let shaped = (MIN_CURSOR..=MAX_CURSOR).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !shaped {
            return Err(());
        }
        let whole = if s.len() % 4 == 1 { &s[..s.len() - 1] } else { s };
        let bytes = LENIENT.decode(whole).map_err(|_| ())?;
        let (id, name) = bytes.split_at_checked(16).ok_or(())?;
        Ok(ScheduleCursor {
            name: String::from_utf8_lossy(name).replace('\0', "\u{FFFD}"),
            schedule_id: Uuid::from_slice(id).map_err(|_| ())?,
        })
    }
}

/// A page of schedules (of `owner` only, if given) by name, then id, after
/// `after`: at most `limit` (every one when `None`). Answers the page and
/// the cursor of the next one (`None` at the end, and always without a
/// limit).
pub async fn list(
    client: &impl GenericClient,
    owner: Option<Uuid>,
    limit: Option<i64>,
    after: Option<&ScheduleCursor>,
) -> Result<(Vec<StoredSchedule>, Option<ScheduleCursor>), DbError> {
    // `LIMIT NULL` is no limit; one row more than asked tells whether
    // another page follows.
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules
          WHERE ($1::uuid IS NULL OR owner = $1)
            AND ($2::text IS NULL OR (name, schedule_id) > ($2, $3::uuid))
          ORDER BY name, schedule_id LIMIT $4"
    );
    let name = after.map(|c| c.name.as_str());
    let id = after.map(|c| c.schedule_id);
    let peek = limit.map(|l| l.saturating_add(1));
    let rows = client.rows(&sql, &[&owner, &name, &id, &peek]).await?;
    let mut page = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let next = match limit.and_then(|l| usize::try_from(l).ok()) {
        Some(limit) if page.len() > limit => {
            page.truncate(limit);
            page.last().map(|s| ScheduleCursor {
                name: s.schedule.name.clone(),
                schedule_id: s.schedule.schedule_id,
            })
        }
        _ => None,
    };
    Ok((page, next))
}

/// Replaces a schedule's fields (only if `owner` owns it, when given). A
/// schedule resumed, or given a new cron or zone, counts its ticks from
/// now: those passed while it was paused, or under the old cadence, are
/// neither fired nor recorded missed.
pub async fn update(
    client: &impl GenericClient,
    schedule_id: Uuid,
    fields: &ScheduleFields,
    owner: Option<Uuid>,
) -> Result<StoredSchedule, DbError> {
    let sql = format!(
        "UPDATE schedules SET name = $2, cron = $3, timezone = $4, template = $5, overlap = $7,
                catch_up = $8, updated_at = now(),
                last_tick = CASE WHEN ($6 AND NOT enabled) OR cron <> $3 OR timezone <> $4
                                 THEN greatest(last_tick, now()) ELSE last_tick END,
                enabled = $6
         WHERE schedule_id = $1 AND ($9::uuid IS NULL OR owner = $9) RETURNING {COLUMNS}"
    );
    write(client, &sql, schedule_id, fields, owner)
        .await?
        .ok_or_else(|| not_found(schedule_id))
}

/// Deletes a schedule and its runs; its jobs stay (their `schedule_id`
/// becomes null).
pub async fn delete(client: &impl GenericClient, schedule_id: Uuid) -> Result<(), DbError> {
    let deleted = client
        .exec("DELETE FROM schedules WHERE schedule_id = $1", &[&schedule_id])
        .await?;
    if deleted == 0 {
        return Err(not_found(schedule_id));
    }
    Ok(())
}

/// The latest `limit` runs of a schedule, newest first, with their jobs'
/// current statuses.
pub async fn runs(
    client: &impl GenericClient,
    schedule_id: Uuid,
    limit: i64,
) -> Result<Vec<ScheduleRun>, DbError> {
    const SQL: &str =
        "SELECT r.fire_time, r.outcome, r.job_id, j.status AS job_status, r.error, r.recorded_at
                       FROM schedule_runs r LEFT JOIN jobs j ON j.job_id = r.job_id
                       WHERE r.schedule_id = $1 ORDER BY r.fire_time DESC LIMIT $2";
    let rows = client.rows(SQL, &[&schedule_id, &limit]).await?;
    rows.iter()
        .map(|row| {
            let outcome: String = row.try_get("outcome")?;
            let job_status: Option<String> = row.try_get("job_status")?;
            Ok(ScheduleRun {
                fire_time: row.try_get("fire_time")?,
                outcome: RunOutcome::parse(&outcome)
                    .ok_or_else(|| DbError::Corrupt(format!("run outcome {outcome}")))?,
                job_id: row.try_get("job_id")?,
                job_status: match job_status {
                    Some(_) => Some(parse_status(row, "job_status")?),
                    None => None,
                },
                error: row.try_get("error")?,
                recorded_at: row.try_get("recorded_at")?,
            })
        })
        .collect()
}

/// Where an enabled schedule stands: enough to tell, without a
/// transaction, whether a tick of it is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// The schedule.
    pub schedule_id: Uuid,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub timezone: String,
    /// The latest tick handled.
    pub last_tick: DateTime<Utc>,
}

/// The enabled schedules of owners still enabled (a disabled or deleted
/// user's schedules do not fire), the ones firing looks at, in one read.
pub async fn enabled(client: &impl GenericClient) -> Result<Vec<Standing>, DbError> {
    let rows = client
        .rows(
            "SELECT s.schedule_id, s.cron, s.timezone, s.last_tick
               FROM schedules s JOIN users u ON u.user_id = s.owner
              WHERE s.enabled AND NOT u.disabled ORDER BY s.last_tick",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Standing {
                schedule_id: r.try_get(0)?,
                cron: r.try_get(1)?,
                timezone: r.try_get(2)?,
                last_tick: r.try_get(3)?,
            })
        })
        .collect()
}

/// The schedule, locked for the transaction, if it is still enabled and no
/// other transaction holds it (another replica firing it: skipped, not
/// waited for).
pub async fn lock_enabled(
    client: &impl GenericClient,
    schedule_id: Uuid,
) -> Result<Option<StoredSchedule>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE schedule_id = $1 AND enabled FOR NO KEY UPDATE SKIP LOCKED"
    );
    let row = client.row_opt(&sql, &[&schedule_id]).await?;
    row.as_ref().map(from_row).transpose()
}

/// Claims the run row of one tick: true if this call made it, false if the
/// tick was handled before (by this replica or another, before a restart
/// or not). The row's outcome is set by [`record_run`] in the same
/// transaction.
pub async fn claim_run(
    client: &impl GenericClient,
    schedule_id: Uuid,
    fire_time: DateTime<Utc>,
    outcome: RunOutcome,
) -> Result<bool, DbError> {
    let claimed = client
        .exec(
            "INSERT INTO schedule_runs (schedule_id, fire_time, outcome) VALUES ($1, $2, $3)
             ON CONFLICT (schedule_id, fire_time) DO NOTHING",
            &[&schedule_id, &fire_time, &outcome.as_str()],
        )
        .await?;
    Ok(claimed == 1)
}

/// Sets what became of a claimed tick.
pub async fn record_run(
    client: &impl GenericClient,
    schedule_id: Uuid,
    fire_time: DateTime<Utc>,
    outcome: RunOutcome,
    job_id: Option<Uuid>,
    error: Option<&str>,
) -> Result<(), DbError> {
    client
        .exec(
            "UPDATE schedule_runs SET outcome = $3, job_id = $4, error = $5
             WHERE schedule_id = $1 AND fire_time = $2",
            &[&schedule_id, &fire_time, &outcome.as_str(), &job_id, &error],
        )
        .await?;
    Ok(())
}

/// Moves a schedule's latest handled tick forward (never back).
pub async fn advance(
    client: &impl GenericClient,
    schedule_id: Uuid,
    tick: DateTime<Utc>,
) -> Result<(), DbError> {
    client
        .exec(
            "UPDATE schedules SET last_tick = greatest(last_tick, $2) WHERE schedule_id = $1",
            &[&schedule_id, &tick],
        )
        .await?;
    Ok(())
}

/// The job of the schedule's latest run that submitted one, if any.
pub async fn previous_job(client: &impl GenericClient, schedule_id: Uuid) -> Result<Option<Uuid>, DbError> {
    let row = client
        .row_opt(
            "SELECT job_id FROM schedule_runs WHERE schedule_id = $1 AND job_id IS NOT NULL
             ORDER BY fire_time DESC LIMIT 1",
            &[&schedule_id],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Marks `job` as submitted by the schedule.
pub async fn tag_job(client: &impl GenericClient, job: &mut Job, schedule_id: Uuid) -> Result<(), DbError> {
    client
        .exec(
            "UPDATE jobs SET schedule_id = $2 WHERE job_id = $1",
            &[&job.job_id, &schedule_id],
        )
        .await?;
    job.schedule_id = Some(schedule_id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_shared::api::schedules::MAX_NAME;
    use proptest::prelude::*;

    fn cursor(name: &str) -> ScheduleCursor {
        ScheduleCursor {
            name: name.to_owned(),
            schedule_id: Uuid::new_v4(),
        }
    }

    #[test]
    fn names_that_need_escaping_round_trip_in_url_safe_text() {
        let longest = "\u{10FFFF}".repeat(MAX_NAME);
        for name in [
            "a",
            "with space",
            "100%",
            "a/b?c=d&e#f",
            "ünïcødé 名前",
            "+=_-",
            &longest,
        ] {
            let c = cursor(name);
            let text = c.to_string();
            assert!(text.len() <= MAX_CURSOR, "{name}: {} chars", text.len());
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{text}"
            );
            assert_eq!(text.parse::<ScheduleCursor>(), Ok(c), "{name}");
        }
    }

    #[test]
    fn only_text_outside_the_documented_shape_is_refused() {
        let id = Uuid::new_v4();
        let encode = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let with_name = |name: &[u8]| [id.as_bytes().as_slice(), name].concat();
        let refused = [
            String::new(),
            "garbage!".to_owned(),
            "not base64 at all".to_owned(),
            encode(&id.as_bytes()[..15]),
            format!("{}=", encode(&with_name(b"ab"))),
            "A".repeat(MAX_CURSOR + 1),
        ];
        for text in &refused {
            assert!(text.parse::<ScheduleCursor>().is_err(), "{text:?}");
        }
        let padded_std = base64::engine::general_purpose::STANDARD.encode(with_name(b"ab?>"));
        assert!(padded_std.contains(['+', '/', '=']), "{padded_std}");
        assert!(padded_std.parse::<ScheduleCursor>().is_err(), "{padded_std}");
    }

    #[test]
    fn a_cursor_of_the_shape_but_not_issued_is_still_a_position() {
        let id = Uuid::new_v4();
        let with_name = |name: &[u8]| URL_SAFE_NO_PAD.encode([id.as_bytes().as_slice(), name].concat());
        for (text, name) in [
            (with_name(b""), ""),
            (with_name(b"a\0b"), "a\u{FFFD}b"),
            (with_name(&[0xff, b'x']), "\u{FFFD}x"),
            (format!("{}A", with_name(b"ab")), "ab"),
        ] {
            let c = text.parse::<ScheduleCursor>();
            assert_eq!(
                c,
                Ok(ScheduleCursor {
                    name: name.to_owned(),
                    schedule_id: id
                }),
                "{text}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_stored_name_round_trips(name in "[^\u{0}]{1,200}", id in any::<u128>()) {
            let c = ScheduleCursor { name, schedule_id: Uuid::from_u128(id) };
            let text = c.to_string();
            prop_assert!(text.len() <= MAX_CURSOR);
            prop_assert_eq!(text.parse::<ScheduleCursor>(), Ok(c));
        }

        #[test]
        fn every_text_of_the_documented_shape_is_a_position(text in "[A-Za-z0-9_-]{22,1088}") {
            let c = text.parse::<ScheduleCursor>();
            prop_assert!(c.as_ref().is_ok_and(|c| !c.name.contains('\0')), "{text}: {c:?}");
        }
    }
}
