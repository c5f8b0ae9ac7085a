//! The wire types of two extension routes that `orchestrator_shared::api`
//! does not define: `GET /api/jobs/search` and `POST /api/jobs/cancel_batch`
//! (docs/api.md). The controller keeps its own copies of them; these are
//! the client's reading of the same contract, and go once `shared` holds
//! them.

use orchestrator_shared::api::Job;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most ids one `POST /api/jobs/cancel_batch` may name (the contract's
/// bound: a page of the largest size); more are sent in several requests.
pub const MAX_CANCEL_BATCH: usize = 500;

/// `GET /api/jobs/search` query. Every filter is optional and sent only
/// when given, so the server's defaults apply; the status stays text, as
/// in `ListQuery`, for the server to judge.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SearchQuery {
    /// Only jobs in this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only jobs submitted by this user name (exact).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Only jobs carrying this label, `key=value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Only jobs created at or after this RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only jobs created before this RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Only jobs one of whose shards this worker took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Page size, 1..=500 (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page of the same search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A page of a search: the jobs, the cursor of the next page, and how many
/// jobs match in all, which `GET /api/jobs` does not say.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SearchPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    /// Jobs matching the filters, on every page.
    pub total: i64,
}

/// The body of `POST /api/jobs/cancel_batch`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CancelBatchRequest {
    /// The jobs to cancel: 1 to [`MAX_CANCEL_BATCH`] ids.
    pub job_ids: Vec<Uuid>,
}

/// A job a bulk cancel left as it was, and why: what its single cancel
/// would have answered (`Job <id> not found`, `Invalid job transition: ...`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CancelRefusal {
    /// The job.
    pub job_id: Uuid,
    /// The server's reason.
    pub detail: String,
}

/// What a bulk cancel did: each named job is in exactly one of the lists.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CancelBatchResult {
    /// Jobs now cancelled.
    pub cancelled: Vec<Uuid>,
    /// Jobs left as they were.
    pub refused: Vec<CancelRefusal>,
}
