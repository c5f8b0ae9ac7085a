//! `/api/jobs*`: submit, read, list, cancel. Users see their own jobs;
//! admins see every job (another user's job is a 404, not a 403, so ids do
//! not leak).

use super::error::{in_own_task, valid, ApiError, FieldError};
use super::extract::{ApiJson, ApiPath, ApiQuery, Principal};
use super::supervisor::parse_filter;
use super::AppState;
use crate::db::jobs::gather::Gathered;
use crate::db::jobs::{self, JobCursor, JobFilter};
use crate::db::{flow, pools, DbError};
use crate::models::{Job, NewJob};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::deps::{self, Dependency};
use orchestrator_shared::api::jobs::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use orchestrator_shared::api::{
    BatchRequest, BatchResponse, EventList, JobGraph, JobOutput, JobPage, ListQuery, OutputQuery,
    SubmitRequest,
};
use orchestrator_shared::JobStatus;
use std::str::FromStr;
use uuid::Uuid;

/// The stored form of a submission that broke no rule (422 otherwise).
/// Its `depends_on` must be job ids (keys name jobs of a batch only).
pub fn validate_submission(req: SubmitRequest) -> Result<NewJob, ApiError> {
    valid(req.problems())?;
    let depends_on = deps::resolve_single(&req).map_err(ApiError::Validation)?;
    Ok(stored(req, depends_on))
}

/// The stored form of a checked submission with its resolved
/// dependencies. Every number was range-checked, so the narrowing
/// conversions hold.
fn stored(req: SubmitRequest, depends_on: Vec<Dependency>) -> NewJob {
    let narrow = |v: i64| i32::try_from(v).unwrap_or(i32::MAX);
    NewJob {
        limits: req.limits(),
        pool: req.pool().to_owned(),
        required_workers: narrow(req.required_workers()),
        priority: narrow(req.priority()),
        max_retries: narrow(req.max_retries()),
        timeout_seconds: req.timeout_seconds.map(narrow),
        task_description: req.task_description,
        command: req.command,
        idempotency_key: req.idempotency_key,
        labels: req.labels,
        selector: req.selector,
        depends_on,
        run_on_failure: req.run_on_failure,
    }
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
    let submitted = write_jobs(&state, principal.user_id, vec![new])
        .await
        .map_err(unbatched)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::from(DbError::Invariant("a submission of one job answered none".into())))?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(submitted.job)))
}

/// Writes `news` for `user_id`, all-or-nothing: in a transaction shared
/// with other submissions when none of its jobs depends on another (see
/// [`jobs::gather`]), else, or when handed back, in one of its own.
async fn write_jobs(
    state: &AppState,
    user_id: Uuid,
    news: Vec<NewJob>,
) -> Result<Vec<jobs::Submitted>, ApiError> {
    let news = if news.iter().all(|n| n.depends_on.is_empty()) {
        match gathered(state, user_id, news).await? {
            Ok(submitted) => return Ok(submitted),
            Err(news) => news,
        }
    } else {
        news
    };
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let submitted = jobs::gather::write_batch(&tx, state.default_quota, user_id, &news).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.wake.notify_one();
    Ok(submitted)
}

/// Writes `news` with whatever other submissions are waiting; `Err` hands
/// them back to be written alone. The wait runs in a task of its own
/// ([`in_own_task`]).
async fn gathered(
    state: &AppState,
    user_id: Uuid,
    news: Vec<NewJob>,
) -> Result<Result<Vec<jobs::Submitted>, Vec<NewJob>>, ApiError> {
    let s = state.clone();
    let turn = async move { s.submissions.submit(&s.db, s.default_quota, user_id, news).await };
    match in_own_task("a gathered submission", turn).await? {
        Gathered::Done(submitted) => {
            state.wake.notify_one();
            Ok(Ok(submitted))
        }
        Gathered::Alone(news) => Ok(Err(news)),
        Gathered::Failed { unavailable } => Err(ApiError::shared_commit_failed(unavailable)),
    }
}

/// A single submission's 422 located as the single body's
/// (`body.depends_on.0`), not as the one-job batch it is submitted as
/// (`body.jobs.0.depends_on.0`).
fn unbatched(e: ApiError) -> ApiError {
    match e {
        ApiError::Validation(mut problems) => {
            for p in &mut problems {
                if p.loc.get(1).map(String::as_str) == Some("jobs") && p.loc.len() > 2 {
                    p.loc.drain(1..3);
                }
            }
            ApiError::Validation(problems)
        }
        other => other,
    }
}

/// The jobs a job depends on and the jobs that depend on it, each way
/// breadth-first to at most 50 levels and 500 jobs (`truncated` says when
/// more exist), with the edges among them.
#[utoipa::path(get, path = "/api/jobs/{job_id}/graph", tag = "jobs", security(("bearer" = [])), params(("job_id" = Uuid, Path)),
    responses((status = 200, body = JobGraph), (status = 404, body = super::error::ErrorBody)))]
pub async fn graph(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(job_id): ApiPath<Uuid>,
) -> Result<Json<JobGraph>, ApiError> {
    let mut client = state.db.client().await?;
    // One snapshot for the whole walk, so the levels agree with each other.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(DbError::from)?;
    visible(&tx, &principal, job_id).await?;
    let graph = jobs::deps::graph(&tx, job_id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(graph))
}

/// The job if the caller may see it, else 404.
pub(super) async fn visible(
    client: &impl GenericClient,
    principal: &Principal,
    job_id: Uuid,
) -> Result<Job, ApiError> {
    let job = jobs::get(client, job_id).await?;
    check_visible(&job, principal)?;
    Ok(job)
}

/// A 404 for another user's job (unless the caller is an admin), the same
/// answer as for an unknown id, so job ids do not leak.
fn check_visible(job: &Job, principal: &Principal) -> Result<(), ApiError> {
    if job.submitted_by != principal.user_id && !principal.is_admin() {
        return Err(ApiError::NotFound(format!("Job {} not found", job.job_id)));
    }
    Ok(())
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
    let mut job = visible(&client, &principal, job_id).await?;
    pools::explain_waiting(&client, &mut job).await?;
    Ok(Json(job))
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
    let cancelled = cancel_visible(&state, &principal, job_id).await?;
    state.wake.notify_one();
    Ok(Json(cancelled))
}

/// Cancels `job_id` if the caller may see it, in a transaction of its own
/// (also each job of a bulk cancel, `super::job_search`).
pub(super) async fn cancel_visible(
    state: &AppState,
    principal: &Principal,
    job_id: Uuid,
) -> Result<Job, ApiError> {
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    // Locked, so the status the cancel decides on cannot change under its
    // compare-and-set (the relay or a claim may be moving it right now).
    let job = jobs::lock(&tx, job_id).await?;
    check_visible(&job, principal)?;
    let cancelled = flow::cancel(&tx, &job).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(cancelled)
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
    let (limit, cursor) = page_of(q.limit, q.cursor.as_deref())?;
    let filter = JobFilter {
        status,
        submitted_by: (!principal.is_admin()).then_some(principal.user_id),
        schedule_id: schedule_filter(q.schedule.as_deref())?,
    };
    let client = state.db.client().await?;
    let (jobs, next) = jobs::list(&client, filter, limit, cursor).await?;
    Ok(Json(JobPage {
        jobs,
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// The page size (default 50, 1 to 500) and the cursor (empty: the first
/// page) of a job listing, or the 422 naming the bad one; also those of
/// the dashboard's search (`super::job_search`).
pub(super) fn page_of(
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<(i64, Option<JobCursor>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if let Some(problem) = limit_problem(limit) {
        return Err(ApiError::Validation(vec![problem]));
    }
    let cursor = cursor_of(cursor).map_err(|problem| ApiError::Validation(vec![problem]))?;
    Ok((limit, cursor))
}

/// The page-size rule of every listing (jobs, search, schedules): 1 to
/// [`MAX_PAGE_LIMIT`]; the 422 item when `limit` breaks it.
pub(super) fn limit_problem(limit: i64) -> Option<FieldError> {
    (!(1..=MAX_PAGE_LIMIT).contains(&limit))
        .then(|| FieldError::query("limit", format!("must be between 1 and {MAX_PAGE_LIMIT}")))
}

/// A listing's `cursor`: absent or empty, the first page; else the
/// position it names, or the 422 item when it is none this API issued.
pub(super) fn cursor_of<C: FromStr<Err = ()>>(cursor: Option<&str>) -> Result<Option<C>, FieldError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(str::parse::<C>)
        .transpose()
        .map_err(|()| FieldError::query("cursor", "is not a cursor this API issued"))
}

/// The `schedule` filter of `GET /api/jobs`: a schedule's id; empty or
/// anything else is a 422 (not a filter silently dropped).
fn schedule_filter(raw: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    raw.map(|s| {
        Uuid::parse_str(s).map_err(|_| {
            ApiError::Validation(vec![FieldError::query(
                "schedule",
                "must be a schedule id (a UUID)",
            )])
        })
    })
    .transpose()
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

/// A job's stdout and stderr, whole (up to the agent's cap) or the byte
/// range asked for, of one shard of its latest attempt, and its exit code.
#[utoipa::path(get, path = "/api/jobs/{job_id}/output", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = Uuid, Path), OutputQuery),
    responses((status = 200, body = JobOutput), (status = 404, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn output(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> Result<Json<JobOutput>, ApiError> {
    valid(q.problems())?;
    let client = state.db.client().await?;
    visible(&client, &principal, job_id).await?;
    let range = (q.offset.unwrap_or(0), q.limit.unwrap_or(i64::MAX));
    Ok(Json(
        jobs::output(&client, job_id, q.shard.unwrap_or(0), range).await?,
    ))
}

fn validate_batch(req: BatchRequest) -> Result<Vec<NewJob>, ApiError> {
    valid(req.problems())?;
    let resolved = deps::resolve_batch(&req.jobs).map_err(ApiError::Validation)?;
    Ok(req
        .jobs
        .into_iter()
        .zip(resolved)
        .map(|(job, d)| stored(job, d))
        .collect())
}

/// Submits up to 10,000 jobs all-or-nothing (a whole dependency graph), with the rules of single
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
    let submitted = write_jobs(&state, principal.user_id, news).await?;
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
