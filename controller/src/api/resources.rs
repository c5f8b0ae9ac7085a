//! `/api/resources/*`: quotas, allocations and usage.

use super::error::{valid, ApiError, FieldError};
use super::extract::{ApiJson, Principal};
use super::AppState;
use crate::config::AllocationTtl;
use crate::db::allocations::{self, AllocationRequest};
use crate::db::stats;
use crate::db::{pools, quotas, DbError};
use crate::models::Allocation;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use orchestrator_shared::api::resources::MAX_TTL_SECONDS;
use orchestrator_shared::api::{AllocateRequest, QuotaView, ReleaseRequest, UsageView};

/// The caller's quota and its remaining room.
#[utoipa::path(get, path = "/api/resources/quotas", tag = "resources", security(("bearer" = [])),
    responses((status = 200, body = QuotaView)))]
pub async fn quotas(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<QuotaView>, ApiError> {
    let client = state.db.client().await?;
    allocations::expire_lapsed(&client).await?;
    let quota = quotas::get(&client, principal.user_id, state.default_quota).await?;
    let allocated = allocations::allocated_workers(&client, principal.user_id).await?;
    let free = allocations::free_workers(&client).await?;
    let (running, queued) = stats::user_job_counts(&client, principal.user_id).await?;
    let room = (i64::from(quota.max_workers) - allocated).max(0);
    let pools = pools::quota_views(&client, principal.user_id, free).await?;
    Ok(Json(QuotaView {
        max_workers: quota.max_workers.into(),
        allocated_workers: allocated,
        available_workers: free.min(room),
        max_concurrent_jobs: quota.max_concurrent_jobs.into(),
        running_jobs: running,
        max_queued_jobs: quota.max_queued_jobs.into(),
        queued_jobs: queued,
        pools,
    }))
}

/// The allocation's lifetime in seconds: the one asked for, else the
/// configured default; over the configured maximum is a 422 naming it.
fn lifetime(req: &AllocateRequest, ttl: AllocationTtl) -> Result<i64, ApiError> {
    let max = ttl.max.as_secs().min(MAX_TTL_SECONDS.unsigned_abs());
    let asked = req
        .ttl_seconds
        .map_or(ttl.default.as_secs().min(max), i64::unsigned_abs);
    if asked > max {
        return Err(ApiError::Validation(vec![FieldError::body(
            "ttl_seconds",
            format!("must be between 1 and {max}"),
        )]));
    }
    i64::try_from(asked).map_err(|_| ApiError::Internal)
}

/// Reserves workers; 409 if the quota or the free workers do not allow it.
#[utoipa::path(post, path = "/api/resources/allocate", tag = "resources", security(("bearer" = [])), request_body = AllocateRequest,
    responses((status = 201, body = Allocation), (status = 404, body = super::error::ErrorBody, description = "job_id names no job the caller may see"),
              (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn allocate(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<AllocateRequest>,
) -> Result<(StatusCode, Json<Allocation>), ApiError> {
    valid(req.problems())?;
    let ttl_seconds = lifetime(&req, state.allocation_ttl)?;
    let mut client = state.db.client().await?;
    if let Some(job_id) = req.job_id {
        // Another user's job is the 404 of an unknown one: no oracle of ids.
        super::jobs::visible(&client, &principal, job_id).await?;
    }
    let quota = quotas::get(&client, principal.user_id, state.default_quota).await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let request = AllocationRequest {
        workers: req.workers,
        job_id: req.job_id,
        ttl_seconds,
        pool: req.pool,
    };
    let allocation = allocations::allocate(&tx, principal.user_id, request, quota).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(allocation)))
}

/// Releases an allocation; releasing twice is harmless.
#[utoipa::path(post, path = "/api/resources/release", tag = "resources", security(("bearer" = [])), request_body = ReleaseRequest,
    responses((status = 200, body = Allocation), (status = 404, body = super::error::ErrorBody)))]
pub async fn release(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<Json<Allocation>, ApiError> {
    let client = state.db.client().await?;
    Ok(Json(
        allocations::release(&client, principal.user_id, req.allocation_id).await?,
    ))
}

/// Allocated workers, running jobs and worker-seconds per user (every user
/// for admins, else the caller alone).
#[utoipa::path(get, path = "/api/resources/usage", tag = "resources", security(("bearer" = [])),
    responses((status = 200, body = UsageView)))]
pub async fn usage(State(state): State<AppState>, principal: Principal) -> Result<Json<UsageView>, ApiError> {
    let client = state.db.client().await?;
    let only = (!principal.is_admin()).then_some(principal.user_id);
    Ok(Json(UsageView {
        users: stats::usage(&client, only).await?,
    }))
}
