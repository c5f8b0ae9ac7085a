//! `/api/agents/*`: what worker agents call (with an agent token, scope
//! `agent`), and how an admin issues such a token. Not in the original
//! contract; documented in the OpenAPI document.

use super::error::{valid, ApiError};
use super::extract::ApiJson;
use super::AppState;
use crate::db::{flow, workers, DbError};
use crate::models::NewWorker;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use orchestrator_shared::api::{AgentToken, ClaimRequest, ClaimResponse, RegisterRequest, Registration};
use orchestrator_shared::Scope;
use uuid::Uuid;

/// Issues an agent token (admins only).
#[utoipa::path(post, path = "/api/agents/tokens", tag = "agents", security(("bearer" = [])),
    responses((status = 201, body = AgentToken), (status = 403, body = super::error::ErrorBody)))]
pub async fn issue_token(State(state): State<AppState>) -> Result<(StatusCode, Json<AgentToken>), ApiError> {
    let ttl = state.agent_token_ttl;
    let token = state
        .tokens
        .issue_for(Uuid::new_v4(), &[Scope::Agent.as_str().to_owned()], ttl)
        .map_err(|_| ApiError::Internal)?;
    Ok((
        StatusCode::CREATED,
        Json(AgentToken {
            agent_token: token,
            expires_in: ttl,
        }),
    ))
}

/// Registers (or re-registers) an agent as a new incarnation: the answer
/// carries its generation (which the agent checks control messages
/// against), its status, `idle`, or `paused` if it was paused, and (unless
/// agents share one broker login) its own broker login with a fresh
/// password. The broker account is set up first: if the broker cannot do
/// it, the answer is a 503 and the worker's row is unchanged.
#[utoipa::path(post, path = "/api/agents/register", tag = "agents", security(("bearer" = [])), request_body = RegisterRequest,
    responses((status = 200, body = Registration), (status = 422, body = super::error::ValidationBody),
              (status = 503, body = super::error::ErrorBody, description = "the database, or the broker (the agent's broker account), is unavailable")))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<Registration>, ApiError> {
    valid(req.problems())?;
    let broker = match &state.accounts {
        Some(accounts) => Some(accounts.provision(&req.worker_id).await?),
        None => None,
    };
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let worker = workers::register(
        &tx,
        &NewWorker {
            worker_id: req.worker_id,
            hostname: req.hostname,
            capacity: req.capacity,
            labels: req.labels,
            version: req.version,
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(worker_id = %worker.worker_id, generation = worker.generation,
        status = %worker.status, own_broker_user = broker.is_some(), "agent registered");
    Ok(Json(Registration { worker, broker }))
}

/// Asks whether the agent may run a shard it received; records the start.
#[utoipa::path(post, path = "/api/agents/claim", tag = "agents", security(("bearer" = [])), request_body = ClaimRequest,
    responses((status = 200, body = ClaimResponse, description = "decision: run, skip or requeue"),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn claim(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    valid(req.problems())?;
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let (decision, reason) = flow::claim(&tx, &req).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(ClaimResponse { decision, reason }))
}
