//! The newest-first listing of jobs (`GET /api/jobs`) and its cursors.

use super::{from_row, job_columns};
use crate::db::{Cached, DbError};
use crate::models::Job;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use orchestrator_shared::JobStatus;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Position in the newest-first job listing: the last job of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    /// `created_at` of the last job shown. Parsing keeps it within what
    /// Postgres stores, so a cursor always becomes a filter, never an error.
    pub created_at: DateTime<Utc>,
    /// Its id (ties on `created_at` are broken by id).
    pub job_id: Uuid,
}

/// Most digits of a cursor's time: the API writes the creation time of a
/// job as non-negative microseconds since the epoch, and 17 digits reach
/// past the year 5000, well inside what chrono and Postgres hold (a time
/// outside their range was a 500), so a cursor of this shape always parses.
const MAX_CURSOR_DIGITS: usize = 17;

/// The one shape of a cursor (also the OpenAPI document's pattern):
/// `<micros>_<uuid as 32 lower-case hex digits>`, as [`JobCursor`]'s
/// `Display` writes it.
fn is_cursor_shape(micros: &str, id: &str) -> bool {
    (1..=MAX_CURSOR_DIGITS).contains(&micros.len())
        && micros.bytes().all(|b| b.is_ascii_digit())
        && id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl fmt::Display for JobCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.job_id.simple()
        )
    }
}

/// Parses a cursor as [`JobCursor`]'s `Display` writes it. A time that
/// chrono or Postgres cannot hold is refused: this API never issued such a
/// cursor (the 422 of `GET /api/jobs`), and it could only have become a
/// database error or, silently, no filter at all.
impl FromStr for JobCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (micros, id) = s.split_once('_').ok_or(())?;
        if !is_cursor_shape(micros, id) {
            return Err(());
        }
        let micros: i64 = micros.parse().map_err(|_| ())?;
        Ok(JobCursor {
            created_at: DateTime::from_timestamp_micros(micros).ok_or(())?,
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
    /// Only jobs submitted by this schedule.
    pub schedule_id: Option<Uuid>,
}

/// A page of jobs, newest first, after `cursor`, optionally of one status;
/// returns the page and the cursor of the next one (`None` at the end).
pub async fn list(
    client: &impl GenericClient,
    filter: JobFilter,
    limit: i64,
    cursor: Option<JobCursor>,
) -> Result<(Vec<Job>, Option<JobCursor>), DbError> {
    let after = cursor.map(|c| c.created_at);
    let after_id = cursor.map(|c| c.job_id);
    const SQL: &str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs j
         WHERE ($1::text IS NULL OR j.status = $1)
           AND ($2::timestamptz IS NULL OR (j.created_at, j.job_id) < ($2, $3))
           AND ($5::uuid IS NULL OR j.submitted_by = $5)
           AND ($6::uuid IS NULL OR j.schedule_id = $6)
         ORDER BY j.created_at DESC, j.job_id DESC LIMIT $4"
    );
    let status = filter.status.map(JobStatus::as_str);
    let rows = client
        .rows(
            SQL,
            &[
                &status,
                &after,
                &after_id,
                &(limit + 1),
                &filter.submitted_by,
                &filter.schedule_id,
            ],
        )
        .await?;
    let mut jobs = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let next = cut_page(&mut jobs, limit);
    Ok((jobs, next))
}

/// Cuts `jobs`, read with one row more than `limit`, to `limit`, and
/// answers the cursor of the next page (`None` when that extra row was
/// not there: this is the last page).
pub(super) fn cut_page(jobs: &mut Vec<Job>, limit: i64) -> Option<JobCursor> {
    if jobs.len() as i64 > limit {
        jobs.truncate(usize::try_from(limit).unwrap_or(0));
        jobs.last().map(|j| JobCursor {
            created_at: j.created_at,
            job_id: j.job_id,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_times_chrono_and_postgres_both_hold_are_cursors() {
        let id = Uuid::new_v4().simple();
        let max = 99_999_999_999_999_999_i64;
        for micros in [0, 1_764_460_800_000_000, max] {
            let text = format!("{micros}_{id}");
            let cursor: JobCursor = text.parse().unwrap_or_else(|()| panic!("{text}"));
            assert_eq!(cursor.to_string(), text);
        }
        for micros in [-1, max + 1, i64::MIN, i64::MAX] {
            assert!(format!("{micros}_{id}").parse::<JobCursor>().is_err(), "{micros}");
        }
        let hyphenated = Uuid::new_v4().hyphenated();
        assert!(format!("5_{hyphenated}").parse::<JobCursor>().is_err());
        assert!(format!("5_{}", id.to_string().to_uppercase())
            .parse::<JobCursor>()
            .is_err());
        let garbage = ["", "_", "12", "12_", "1_not-a-uuid"].map(str::to_owned);
        let bad_times = ["", "x", "1.5", "+-1"].map(|t| format!("{t}_{id}"));
        for text in garbage.iter().chain(&bad_times) {
            assert!(text.parse::<JobCursor>().is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn a_cursor_parses_exactly_when_its_time_has_the_issued_shape(micros in any::<i64>()) {
            let text = format!("{micros}_{}", Uuid::nil().simple());
            let in_range = (0..=99_999_999_999_999_999).contains(&micros);
            let parsed = text.parse::<JobCursor>();
            prop_assert_eq!(parsed.is_ok(), in_range);
            if let Ok(cursor) = parsed {
                prop_assert_eq!(cursor.to_string(), text);
            }
        }
    }
}
