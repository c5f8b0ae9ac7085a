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
use orchestrator_shared::validate::{is_valid_worker_id, WORKER_ID_RULE};
use orchestrator_shared::{StateTransitionError, WorkerStatus};

/// Parses an optional status filter, 422 naming the allowed values (an
/// empty one too: it names no status).
pub fn parse_filter<T: std::str::FromStr>(raw: Option<&str>, all: &[&str]) -> Result<Option<T>, ApiError> {
    raw.map(|s| {
        s.parse::<T>().map_err(|_| {
            ApiError::Validation(vec![FieldError::query(
                "status",
                format!("must be one of: {}", all.join(", ")),
            )])
        })
    })
    .transpose()
}

/// `worker_id` from a path, or a 422 at `["path", "worker_id"]` if it
/// breaks the worker-id rule: such an id can name no worker (registration
/// refuses it), and one holding a NUL would reach Postgres, which refuses
/// it with an error. A valid id that names no worker stays a 404.
fn checked_worker_id(worker_id: &str) -> Result<&str, ApiError> {
    if is_valid_worker_id(worker_id) {
        Ok(worker_id)
    } else {
        Err(ApiError::Validation(vec![FieldError::path(
            "worker_id",
            WORKER_ID_RULE,
        )]))
    }
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
    params(("worker_id" = String, Path, pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$")), responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody),
    (status = 422, body = super::error::ValidationBody)))]
pub async fn get_worker(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Json<Worker>, ApiError> {
    let worker_id = checked_worker_id(&worker_id)?;
    let client = state.db.client().await?;
    Ok(Json(workers::get(&client, worker_id).await?))
}

/// Moves the worker to the status `target` picks from its current one (a
/// refusal `target` gives is the 409) and queues `command` for its agent,
/// in one transaction.
async fn steer(
    state: &AppState,
    worker_id: &str,
    target: impl Fn(&Worker) -> Result<WorkerStatus, StateTransitionError>,
    command: ControlCommand,
) -> Result<Worker, ApiError> {
    let worker_id = checked_worker_id(worker_id)?;
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let updated = workers::steer(&tx, worker_id, target, &command).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.wake.notify_one();
    Ok(updated)
}

/// Pauses a worker: it finishes what it runs and takes nothing new.
#[utoipa::path(post, path = "/api/supervisor/workers/{worker_id}/pause", tag = "supervisor", security(("bearer" = [])),
    params(("worker_id" = String, Path, pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$")),
    responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Json<Worker>, ApiError> {
    steer(
        &state,
        &worker_id,
        |_| Ok(WorkerStatus::Paused),
        ControlCommand::Pause,
    )
    .await
    .map(Json)
}

/// Resumes a paused worker (idle, or busy while jobs still run); a worker
/// in any other status is a 409 (a terminated one above all: resuming it
/// made it idle, so terminable again, with no agent left to obey).
#[utoipa::path(post, path = "/api/supervisor/workers/{worker_id}/resume", tag = "supervisor", security(("bearer" = [])),
    params(("worker_id" = String, Path, pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$")),
    responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Json<Worker>, ApiError> {
    let target = |w: &Worker| w.status.resumed(w.running_jobs);
    steer(&state, &worker_id, target, ControlCommand::Resume)
        .await
        .map(Json)
}

/// Terminates a worker: it drains and exits; no job is lost.
#[utoipa::path(post, path = "/api/supervisor/workers/{worker_id}/terminate", tag = "supervisor", security(("bearer" = [])),
    params(("worker_id" = String, Path, pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$")),
    responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn terminate(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
) -> Result<Json<Worker>, ApiError> {
    steer(
        &state,
        &worker_id,
        |_| Ok(WorkerStatus::Terminating),
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
