//! What the dashboard's jobs pages need beyond `GET /api/jobs`: a search
//! with more filters and the count of what matches
//! (`GET /api/jobs/search`), and the cancellation of many jobs at once
//! (`POST /api/jobs/cancel_batch`), each job in its own transaction exactly
//! as `POST /api/jobs/{job_id}/cancel` does it. Visibility is the same:
//! a user finds and cancels only their own jobs; an admin any. Their wire
//! types are `orchestrator_shared::api::search`'s, which the CLI reads too.

use super::error::{valid, ApiError, FieldError};
use super::extract::{ApiJson, ApiQuery, Principal};
use super::jobs::{cancel_visible, page_of};
use super::supervisor::parse_filter;
use super::AppState;
use crate::db::jobs::{self, JobSearch};
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use orchestrator_shared::api::{
    CancelBatchRequest, CancelBatchResult, CancelRefusal, SearchPage, SearchQuery,
};
use orchestrator_shared::JobStatus;

/// Jobs matching every given filter, newest first, with the total count.
#[utoipa::path(get, path = "/api/jobs/search", tag = "jobs", security(("bearer" = [])), params(SearchQuery),
    responses((status = 200, body = SearchPage), (status = 422, body = super::error::ValidationBody)))]
pub async fn search(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<SearchPage>, ApiError> {
    let (limit, cursor) = page_of(q.limit, q.cursor.as_deref())?;
    let filter = filter_of(&q, &principal)?;
    let client = state.db.client().await?;
    let (jobs, next, total) = jobs::search(&client, &filter, limit, cursor).await?;
    Ok(Json(SearchPage {
        jobs,
        next_cursor: next.map(|c| c.to_string()),
        total,
    }))
}

/// The filters of a search query, each checked (a 422 names the first bad one).
fn filter_of(q: &SearchQuery, principal: &Principal) -> Result<JobSearch, ApiError> {
    let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let label = q
        .label
        .as_deref()
        .map(|text| match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(serde_json::json!({ key: value })),
            _ => Err(query_error("label", "must be key=value".to_owned())),
        })
        .transpose()?;
    let nonempty = |field: &'static str, value: &Option<String>| match value.as_deref() {
        Some("") => Err(query_error(field, "must not be empty".to_owned())),
        Some(text) if text.contains('\0') => Err(query_error(field, "must not contain NUL".to_owned())),
        other => Ok(other.map(str::to_owned)),
    };
    Ok(JobSearch {
        status: parse_filter::<JobStatus>(q.status.as_deref(), &all)?,
        visible_to: (!principal.is_admin()).then_some(principal.user_id),
        username: nonempty("user", &q.user)?,
        labels: label,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        worker_id: nonempty("worker", &q.worker)?,
    })
}

/// An RFC 3339 time from the query, or a 422 at `field`.
fn time(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|text| {
        // RFC 3339 allows a lower-case `t` and `z`.
        DateTime::parse_from_rfc3339(&text.to_ascii_uppercase())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| query_error(field, "must be an RFC 3339 time".to_owned()))
    })
    .transpose()
}

fn query_error(field: &str, msg: String) -> ApiError {
    ApiError::Validation(vec![FieldError::query(field, msg)])
}

/// Cancels each named job the caller may cancel, one transaction each;
/// the others are listed with the reason they were left.
#[utoipa::path(post, path = "/api/jobs/cancel_batch", tag = "jobs", security(("bearer" = [])),
    request_body = CancelBatchRequest,
    responses((status = 200, body = CancelBatchResult), (status = 422, body = super::error::ValidationBody)))]
pub async fn cancel_batch(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<CancelBatchRequest>,
) -> Result<Json<CancelBatchResult>, ApiError> {
    valid(req.problems())?;
    let mut result = CancelBatchResult {
        cancelled: Vec::new(),
        refused: Vec::new(),
    };
    for job_id in req.job_ids {
        match cancel_visible(&state, &principal, job_id).await {
            Ok(_) => result.cancelled.push(job_id),
            Err(ApiError::Conflict(detail) | ApiError::NotFound(detail)) => {
                result.refused.push(CancelRefusal { job_id, detail });
            }
            Err(other) => return Err(other),
        }
    }
    state.wake.notify_one();
    Ok(Json(result))
}
