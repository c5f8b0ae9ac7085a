//! `/api/supervisor/*`: watch and steer the fleet. Pause, resume and
//! terminate change the worker's status (compare-and-set against the worker
//! state machine) and write the agent's control message to the outbox in the
//! same transaction, so the command reaches the agent exactly when the
//! change is recorded.

use super::error::{ApiError, FieldError};
use super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::db::stats;
use crate::db::{workers, DbError};
use crate::models::Worker;
use axum::extract::State;
use axum::Json;
use orchestrator_shared::api::{FleetStats, WorkerFilter, WorkerList};
use orchestrator_shared::messages::ControlCommand;
use orchestrator_shared::WorkerStatus;

/// Parses an optional status filter, 422 naming the allowed values.
pub fn parse_filter<T: std::str::FromStr>(raw: Option<&str>, all: &[&str]) -> Result<Option<T>, ApiError> {
    raw.filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<T>().map_err(|_| {
                ApiError::Validation(vec![FieldError::query(
                    "status",
                    format!("must be one of: {}", all.join(", ")),
                )])
            })
        })
        .transpose()
}

/// Lists workers, optionally of one status.
#[utoipa::path(get, path = "/api/supervisor/workers", tag = "supervisor", security(("bearer" = [])), params(WorkerFilter),
    responses((status = 200, body = WorkerList), (status = 422, body = super::error::ValidationBody)))]
pub async fn list_workers(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<WorkerFilter>,
) -> Result<Json<WorkerList>, ApiError> {
    let all: Vec<&str> = WorkerStatus::ALL.iter().map(|s| s.as_str()).collect();
    let status = parse_filter::<WorkerStatus>(filter.status.as_deref(), &all)?;
    let client = state.db.client().await?;
    let workers = workers::list(&client, status).await?;
    Ok(Json(WorkerList {
        total: workers.len(),
        workers,
    }))
}

/// One worker.
#[utoipa::path(get, path = "/api/supervisor/workers/{worker_id}", tag = "supervisor", security(("bearer" = [])),
    params(("worker_id" = String, Path)), responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_worker(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Json<Worker>, ApiError> {
    let client = state.db.client().await?;
    Ok(Json(workers::get(&client, &worker_id).await?))
}

/// Moves the worker to the status `target` picks from its current one and
/// queues `command` for its agent, in one transaction.
async fn steer(
    state: &AppState,
    worker_id: &str,
    target: impl Fn(&Worker) -> WorkerStatus,
    command: ControlCommand,
) -> Result<Worker, ApiError> {
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let updated = workers::steer(&tx, worker_id, target, &command).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.wake.notify_one();
    Ok(updated)
}

/// Pauses a worker: it finishes what it runs and takes nothing new.
#[utoipa::path(post, path = "/api/supervisor/workers/{worker_id}/pause", tag = "supervisor", security(("bearer" = [])),
    params(("worker_id" = String, Path)),
    responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Json<Worker>, ApiError> {
    steer(
        &state,
        &worker_id,
        |_| WorkerStatus::Paused,
        ControlCommand::Pause,
    )
    .await
    .map(Json)
}

/// Resumes a paused worker (idle, or busy while jobs still run).
#[utoipa::path(post, path = "/api/supervisor/workers/{worker_id}/resume", tag = "supervisor", security(("bearer" = [])),
    params(("worker_id" = String, Path)),
    responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Json<Worker>, ApiError> {
    let target = |w: &Worker| {
        if w.status == WorkerStatus::Paused && w.running_jobs > 0 {
            WorkerStatus::Busy
        } else {
            WorkerStatus::Idle
        }
    };
    steer(&state, &worker_id, target, ControlCommand::Resume)
        .await
        .map(Json)
}

/// Terminates a worker: it drains and exits; no job is lost.
#[utoipa::path(post, path = "/api/supervisor/workers/{worker_id}/terminate", tag = "supervisor", security(("bearer" = [])),
    params(("worker_id" = String, Path)),
    responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn terminate(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Json<Worker>, ApiError> {
    steer(
        &state,
        &worker_id,
        |_| WorkerStatus::Terminating,
        ControlCommand::Terminate,
    )
    .await
    .map(Json)
}

/// Fleet figures: workers and jobs by status, queue depth, last-minute
/// throughput and latencies.
#[utoipa::path(get, path = "/api/supervisor/metrics", tag = "supervisor", security(("bearer" = [])),
    responses((status = 200, body = FleetStats)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Json<FleetStats>, ApiError> {
    let client = state.db.client().await?;
    Ok(Json(stats::fleet(&client).await?))
}
