//! `GET /api/jobs/search` and `POST /api/jobs/cancel_batch`: what the
//! dashboard's jobs pages (and `orchestrator jobs search` / `cancel`) need
//! beyond `GET /api/jobs`: more filters with the count of what matches, and
//! the cancellation of many jobs at once.
//!
//! The doc comments of these types are the OpenAPI document's descriptions
//! (with the `openapi` feature); notes for Rust readers only are `//`
//! comments.

use super::error::{count_problem, FieldError};
use super::jobs::Job;
#[cfg(feature = "openapi")]
use crate::JobStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most jobs one bulk cancel names: a page of the largest size. A client
/// with more sends them in several requests.
pub const MAX_CANCEL_BATCH: usize = 500;

/// The query of `GET /api/jobs/search`; every filter is optional.
// Each filter is sent only when given, so the server's defaults apply. The
// status and times stay text, as in `ListQuery`, so that a bad one is the
// contract's 422 naming the field, not a parse failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct SearchQuery {
    /// A job status (§9).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<JobStatus>))]
    pub status: Option<String>,
    /// The submitter's user name (exact).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(min_length = 1, pattern = "^[^\\u0000]+$"))]
    pub user: Option<String>,
    /// One label as `key=value`: only jobs carrying it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(pattern = "^[^=\\u0000]+=[^\\u0000]*$"))]
    pub label: Option<String>,
    /// Created at or after this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, format = DateTime))]
    pub since: Option<String>,
    /// Created before this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, format = DateTime))]
    pub until: Option<String>,
    /// A worker id: only jobs one of whose shards it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(min_length = 1, pattern = "^[^\\u0000]+$"))]
    pub worker: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500))]
    pub limit: Option<i64>,
    /// A `next_cursor` of an earlier page of the same search.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(pattern = "^([0-9]{1,17}_[0-9a-f]{32})?$"))]
    pub cursor: Option<String>,
}

/// A page of a search.
// Unlike `JobPage`, it says how many jobs match in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    /// How many jobs match the filters in all (every page).
    pub total: i64,
}

/// The body of `POST /api/jobs/cancel_batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelBatchRequest {
    /// The jobs to cancel: 1 to 500 ids.
    // 500: MAX_CANCEL_BATCH.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 500))]
    pub job_ids: Vec<Uuid>,
}

impl CancelBatchRequest {
    /// The rule the request breaks, if any: it names 1 to
    /// [`MAX_CANCEL_BATCH`] jobs (each job is then judged on its own).
    pub fn problems(&self) -> Vec<FieldError> {
        let len = self.job_ids.len();
        count_problem("job_ids", len, MAX_CANCEL_BATCH, "name", "jobs")
            .into_iter()
            .collect()
    }
}

/// A job a bulk cancel left as it was, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelRefusal {
    /// The job.
    pub job_id: Uuid,
    /// What `POST /api/jobs/{job_id}/cancel` would have answered.
    // E.g. `Job <id> not found`, `Invalid job transition: ...`.
    pub detail: String,
}

/// What a bulk cancel did.
// Each named job is in exactly one of the lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelBatchResult {
    /// Jobs now cancelled.
    pub cancelled: Vec<Uuid>,
    /// Jobs left as they were (finished already, unknown or not the caller's).
    pub refused: Vec<CancelRefusal>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_given_filters_are_sent() {
        let query = SearchQuery {
            user: Some("ada".into()),
            limit: Some(10),
            ..SearchQuery::default()
        };
        let json = serde_json::to_value(&query).unwrap();
        assert_eq!(json, serde_json::json!({"user": "ada", "limit": 10}));
    }

    #[test]
    fn a_cancel_names_1_to_500_jobs() {
        let ids = |n: usize| CancelBatchRequest {
            job_ids: (0..n).map(|i| Uuid::from_u128(i as u128)).collect(),
        };
        assert_eq!(ids(1).problems(), []);
        assert_eq!(ids(MAX_CANCEL_BATCH).problems(), []);
        for bad in [0, MAX_CANCEL_BATCH + 1] {
            let problems = ids(bad).problems();
            let locs: Vec<String> = problems.iter().map(FieldError::location).collect();
            assert_eq!(locs, ["body.job_ids"]);
            assert_eq!(problems[0].msg, "must name 1 to 500 jobs");
        }
    }

    #[test]
    fn a_cancel_with_an_unknown_field_is_refused() {
        let json = serde_json::json!({"job_ids": [], "force": true});
        let err = serde_json::from_value::<CancelBatchRequest>(json).unwrap_err();
        assert!(err.to_string().contains("unknown field `force`"), "{err}");
    }
}
