//! The dashboard's job search (`GET /api/jobs/search`): the newest-first
//! listing of [`super::list`](fn@super::list) with more filters (user name, a label, a
//! creation-time window, a worker that ran a shard), and the number of
//! jobs that match, which the page shows before a bulk cancel.

use super::list::{cut_page, JobCursor};
use super::{from_row, job_columns, Cached, DbError};
use crate::models::Job;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use orchestrator_shared::JobStatus;
use uuid::Uuid;

/// Which jobs a search shows; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSearch {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this user (the caller's visibility: a non-admin's own id).
    pub visible_to: Option<Uuid>,
    /// Only jobs submitted by the user of this name.
    pub username: Option<String>,
    /// Only jobs whose labels include all of these (a JSON object).
    pub labels: Option<serde_json::Value>,
    /// Only jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only jobs one of whose shards (any attempt) this worker took.
    pub worker_id: Option<String>,
}

/// The filter both statements share; `$1`..`$7` are [`JobSearch`]'s fields.
macro_rules! search_filter {
    () => {
        " FROM jobs j
         WHERE ($1::text IS NULL OR j.status = $1)
           AND ($2::uuid IS NULL OR j.submitted_by = $2)
           AND ($3::text IS NULL OR j.submitted_by IN (SELECT u.user_id FROM users u WHERE u.username = $3))
           AND ($4::jsonb IS NULL OR j.labels @> $4)
           AND ($5::timestamptz IS NULL OR j.created_at >= $5)
           AND ($6::timestamptz IS NULL OR j.created_at < $6)
           AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM job_shards s
                                            WHERE s.job_id = j.job_id AND s.worker_id = $7))"
    };
}

/// A page of matching jobs, newest first, after `cursor`, the cursor of
/// the next page (`None` at the end), and how many jobs match in all.
pub async fn search(
    client: &impl GenericClient,
    filter: &JobSearch,
    limit: i64,
    cursor: Option<JobCursor>,
) -> Result<(Vec<Job>, Option<JobCursor>, i64), DbError> {
    const PAGE: &str = concat!(
        "SELECT ",
        job_columns!(),
        search_filter!(),
        " AND ($8::timestamptz IS NULL OR (j.created_at, j.job_id) < ($8, $9))
         ORDER BY j.created_at DESC, j.job_id DESC LIMIT $10"
    );
    const COUNT: &str = concat!("SELECT count(*)", search_filter!());
    let status = filter.status.map(JobStatus::as_str);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &status,
        &filter.visible_to,
        &filter.username,
        &filter.labels,
        &filter.since,
        &filter.until,
        &filter.worker_id,
    ];
    let after = cursor.map(|c| c.created_at);
    let after_id = cursor.map(|c| c.job_id);
    let more = limit + 1;
    let mut page_params = params.to_vec();
    page_params.extend::<[&(dyn tokio_postgres::types::ToSql + Sync); 3]>([&after, &after_id, &more]);
    let rows = client.rows(PAGE, &page_params).await?;
    let total: i64 = client.row(COUNT, &params).await?.try_get(0)?;
    let mut jobs = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let next = cut_page(&mut jobs, limit);
    Ok((jobs, next, total))
}
