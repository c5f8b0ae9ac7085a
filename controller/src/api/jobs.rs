//! `/api/jobs*`: submit, read, list, cancel. Users see their own jobs;
//! admins see every job (another user's job is a 404, not a 403, so ids do
//! not leak).

use super::error::{ApiError, FieldError};
use super::extract::{ApiJson, ApiPath, ApiQuery, Principal};
use super::supervisor::parse_filter;
use super::AppState;
use crate::db::jobs::{self, EventMeta, JobCursor, JobFilter, JobOutput};
use crate::db::{outbox, quotas, DbError};
use crate::models::{Job, JobEvent, Labels, NewJob};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use deadpool_postgres::GenericClient;
use orchestrator_shared::messages::{ControlCommand, CONTROL_EXCHANGE};
use orchestrator_shared::JobStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Longest task description, in characters.
pub const MAX_DESCRIPTION: usize = 10_000;
/// Most shards of one job.
pub const MAX_WORKERS: i64 = 64;
/// Longest per-attempt timeout: one week.
pub const MAX_TIMEOUT_SECONDS: i64 = 7 * 24 * 3600;
/// Most retries of one job.
pub const MAX_RETRIES: i64 = 100;

fn one() -> i64 {
    1
}

fn five() -> i64 {
    5
}

/// `POST /api/jobs/submit` body. Numbers are read wide and range-checked,
/// so an out-of-range value is a 422 naming the range, not a type error.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitRequest {
    /// What to do (1..=10000 characters); the executor's stdin.
    pub task_description: String,
    /// Shards, each on a different worker (1..=64, default 1).
    #[serde(default = "one")]
    pub required_workers: i64,
    /// Argument vector to run instead of the executor.
    pub command: Option<Vec<String>>,
    /// 0 (lowest) ..= 9, default 5.
    #[serde(default = "five")]
    pub priority: i64,
    /// Per-attempt limit in seconds.
    pub timeout_seconds: Option<i64>,
    /// Retries after a failure (0..=100, default 0).
    #[serde(default)]
    pub max_retries: i64,
    /// De-duplication key, unique per user (1..=255 characters).
    pub idempotency_key: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: Labels,
}

fn range(errors: &mut Vec<FieldError>, field: &str, value: i64, lo: i64, hi: i64) {
    if !(lo..=hi).contains(&value) {
        errors.push(FieldError::body(field, format!("must be between {lo} and {hi}")));
    }
}

fn check_texts(req: &SubmitRequest, errors: &mut Vec<FieldError>) {
    let len = req.task_description.chars().count();
    if len == 0 || len > MAX_DESCRIPTION {
        errors.push(FieldError::body(
            "task_description",
            format!("must be 1 to {MAX_DESCRIPTION} characters"),
        ));
    }
    if let Some(cmd) = &req.command {
        if cmd.is_empty() || cmd.len() > 4096 || cmd[0].is_empty() || cmd.iter().any(|a| a.contains('\0')) {
            errors.push(FieldError::body(
                "command",
                "must be 1 to 4096 arguments, the first non-empty, no NUL",
            ));
        }
    }
    if let Some(key) = &req.idempotency_key {
        let n = key.chars().count();
        if n == 0 || n > 255 {
            errors.push(FieldError::body("idempotency_key", "must be 1 to 255 characters"));
        }
    }
    let bad_label = |(k, v): (&String, &String)| k.is_empty() || k.len() > 128 || v.len() > 1024;
    if req.labels.len() > 64 || req.labels.iter().any(bad_label) {
        errors.push(FieldError::body(
            "labels",
            "at most 64 labels, keys 1..=128 bytes, values up to 1024",
        ));
    }
}

/// Checks every rule of the contract and returns the stored form.
pub fn validate_submission(req: SubmitRequest) -> Result<NewJob, ApiError> {
    let mut errors = Vec::new();
    check_texts(&req, &mut errors);
    range(
        &mut errors,
        "required_workers",
        req.required_workers,
        1,
        MAX_WORKERS,
    );
    range(&mut errors, "priority", req.priority, 0, 9);
    range(&mut errors, "max_retries", req.max_retries, 0, MAX_RETRIES);
    if let Some(t) = req.timeout_seconds {
        range(&mut errors, "timeout_seconds", t, 1, MAX_TIMEOUT_SECONDS);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Every number was range-checked above, so these conversions hold.
    let narrow = |v: i64| i32::try_from(v).unwrap_or(i32::MAX);
    Ok(NewJob {
        task_description: req.task_description,
        required_workers: narrow(req.required_workers),
        command: req.command,
        priority: narrow(req.priority),
        timeout_seconds: req.timeout_seconds.map(narrow),
        max_retries: narrow(req.max_retries),
        idempotency_key: req.idempotency_key,
        labels: req.labels,
    })
}

/// Submits a job: 201 with the new job, or 200 with the first job when the
/// idempotency key was already used with the same body.
#[utoipa::path(post, path = "/api/jobs/submit", tag = "jobs", security(("bearer" = [])), request_body = SubmitRequest,
    responses((status = 201, body = Job), (status = 200, body = Job, description = "idempotent replay"),
              (status = 409, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn submit(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let new = validate_submission(req)?;
    let mut client = state.db.client().await?;
    let quota = quotas::get(&client, principal.user_id, state.default_quota).await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let submitted = jobs::submit(&tx, principal.user_id, &new, quota).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.wake.notify_one();
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(submitted.job)))
}

/// The job if the caller may see it, else 404.
async fn visible(client: &impl GenericClient, principal: &Principal, job_id: Uuid) -> Result<Job, ApiError> {
    let job = jobs::get(client, job_id).await?;
    if job.submitted_by != principal.user_id && !principal.is_admin() {
        return Err(ApiError::NotFound(format!("Job {job_id} not found")));
    }
    Ok(job)
}

/// One job.
#[utoipa::path(get, path = "/api/jobs/{job_id}", tag = "jobs", security(("bearer" = [])), params(("job_id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(job_id): ApiPath<Uuid>,
) -> Result<Json<Job>, ApiError> {
    let client = state.db.client().await?;
    Ok(Json(visible(&client, &principal, job_id).await?))
}

/// Cancels a job: pending or queued ones at once; a running one is stopped
/// on its agents; a finished one is a 409.
#[utoipa::path(post, path = "/api/jobs/{job_id}/cancel", tag = "jobs", security(("bearer" = [])), params(("job_id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(job_id): ApiPath<Uuid>,
) -> Result<Json<Job>, ApiError> {
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    // Lock the row so the status read below cannot change under the
    // compare-and-set (the relay or a claim may be moving it right now).
    tx.execute(
        "SELECT 1 FROM jobs WHERE job_id = $1 FOR NO KEY UPDATE",
        &[&job_id],
    )
    .await
    .map_err(DbError::from)?;
    let job = visible(&tx, &principal, job_id).await?;
    let meta = EventMeta {
        reason: Some("cancelled by user".to_owned()),
        ..EventMeta::default()
    };
    let cancelled = jobs::transition(&tx, job_id, job.status, JobStatus::Cancelled, &meta).await?;
    if job.status == JobStatus::Running {
        let payload =
            serde_json::to_value(ControlCommand::CancelJob { job_id }).map_err(|_| ApiError::Internal)?;
        for worker in &job.assigned_workers {
            outbox::enqueue(&tx, CONTROL_EXCHANGE, worker, &payload, 9, Some(job_id)).await?;
        }
    }
    tx.commit().await.map_err(DbError::from)?;
    state.wake.notify_one();
    Ok(Json(cancelled))
}

/// `GET /api/jobs` query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only jobs in this status.
    pub status: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Lists jobs newest first, with cursor pagination.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = JobPage), (status = 422, body = super::error::ValidationBody)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let status = parse_filter::<JobStatus>(q.status.as_deref(), &all)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Validation(vec![FieldError::query(
            "limit",
            "must be between 1 and 500",
        )]));
    }
    let cursor = q
        .cursor
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<JobCursor>())
        .transpose()
        .map_err(|()| {
            ApiError::Validation(vec![FieldError::query(
                "cursor",
                "is not a cursor this API issued",
            )])
        })?;
    let filter = JobFilter {
        status,
        submitted_by: (!principal.is_admin()).then_some(principal.user_id),
    };
    let client = state.db.client().await?;
    let (jobs, next) = jobs::list(&client, filter, limit, cursor).await?;
    Ok(Json(JobPage {
        jobs,
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// A job's transitions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// Oldest first.
    pub events: Vec<JobEvent>,
}

/// Every transition of a job, oldest first.
#[utoipa::path(get, path = "/api/jobs/{job_id}/events", tag = "jobs", security(("bearer" = [])), params(("job_id" = Uuid, Path)),
    responses((status = 200, body = EventList), (status = 404, body = super::error::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(job_id): ApiPath<Uuid>,
) -> Result<Json<EventList>, ApiError> {
    let client = state.db.client().await?;
    visible(&client, &principal, job_id).await?;
    Ok(Json(EventList {
        events: jobs::events(&client, job_id).await?,
    }))
}

/// The tail of a job's stdout and stderr and its exit code.
#[utoipa::path(get, path = "/api/jobs/{job_id}/output", tag = "jobs", security(("bearer" = [])), params(("job_id" = Uuid, Path)),
    responses((status = 200, body = JobOutput), (status = 404, body = super::error::ErrorBody)))]
pub async fn output(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(job_id): ApiPath<Uuid>,
) -> Result<Json<JobOutput>, ApiError> {
    let client = state.db.client().await?;
    visible(&client, &principal, job_id).await?;
    Ok(Json(jobs::output(&client, job_id).await?))
}

/// Most jobs in one batch submission.
pub const MAX_BATCH: usize = 1000;

/// `POST /api/jobs/submit_batch` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchRequest {
    /// 1..=1000 submissions, each as for `/api/jobs/submit`.
    pub jobs: Vec<SubmitRequest>,
}

/// The jobs of a batch, in the order submitted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One job per submission (an earlier job for a reused idempotency key).
    pub jobs: Vec<Job>,
}

fn validate_batch(req: BatchRequest) -> Result<Vec<NewJob>, ApiError> {
    if req.jobs.is_empty() || req.jobs.len() > MAX_BATCH {
        return Err(ApiError::Validation(vec![FieldError::body(
            "jobs",
            format!("must hold 1 to {MAX_BATCH} jobs"),
        )]));
    }
    let mut errors = Vec::new();
    let mut valid = Vec::with_capacity(req.jobs.len());
    for (i, job) in req.jobs.into_iter().enumerate() {
        match validate_submission(job) {
            Ok(new) => valid.push(new),
            Err(ApiError::Validation(list)) => errors.extend(list.into_iter().map(|mut e| {
                e.loc.splice(1..1, ["jobs".to_owned(), i.to_string()]);
                e
            })),
            Err(other) => return Err(other),
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Submits up to 1,000 jobs all-or-nothing, with the rules of single
/// submission (validation, quotas, idempotency keys). 201 when any job was
/// created, 200 when every one was an idempotent replay.
#[utoipa::path(post, path = "/api/jobs/submit_batch", tag = "jobs", security(("bearer" = [])), request_body = BatchRequest,
    responses((status = 201, body = BatchResponse), (status = 200, body = BatchResponse, description = "all replays"),
              (status = 409, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn submit_batch(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<(StatusCode, Json<BatchResponse>), ApiError> {
    let news = validate_batch(req)?;
    let mut client = state.db.client().await?;
    let quota = quotas::get(&client, principal.user_id, state.default_quota).await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let submitted = jobs::submit_batch(&tx, principal.user_id, &news, quota).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.wake.notify_one();
    let status = if submitted.iter().any(|s| s.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(BatchResponse {
            jobs: submitted.into_iter().map(|s| s.job).collect(),
        }),
    ))
}
