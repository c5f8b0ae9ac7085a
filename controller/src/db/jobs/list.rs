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
    const SQL: &str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs j
         WHERE ($1::text IS NULL OR j.status = $1)
           AND ($2::timestamptz IS NULL OR (j.created_at, j.job_id) < ($2, $3))
           AND ($5::uuid IS NULL OR j.submitted_by = $5)
         ORDER BY j.created_at DESC, j.job_id DESC LIMIT $4"
    );
    let status = filter.status.map(JobStatus::as_str);
    let rows = client
        .rows(
            SQL,
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
