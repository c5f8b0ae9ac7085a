//! `/api/agents/*`: what worker agents call (each with a credential of its
//! own that names one worker id, scope `agent`), and how an admin issues,
//! lists and revokes those credentials. Not in the original contract;
//! documented in the OpenAPI document and `docs/api.md`.

use super::error::{in_own_task, valid, ApiError};
use super::extract::{ApiJson, ApiPath, Principal};
use super::AppState;
use crate::auth::agent_credential;
use crate::db::flow::GatheredClaims;
use crate::db::output::Stored;
use crate::db::{credentials, flow, output, pools, workers, DbError};
use crate::models::NewWorker;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use deadpool_postgres::Transaction;
use orchestrator_shared::api::{
    AgentCredential, ClaimBatchRequest, ClaimBatchResponse, ClaimDecision, ClaimRequest, ClaimResponse,
    CredentialList, CredentialRequest, IssuedCredential, OutputChunk, OutputStored, RegisterRequest,
    Registration, ShardWork, WorkClasses,
};
use uuid::Uuid;

/// Issues a credential for one worker id (admins only); the worker's
/// earlier credential, if any, stops working, and so does the broker login
/// its agent got with it. The token is in this answer only.
#[utoipa::path(post, path = "/api/agents/credentials", tag = "agents", security(("bearer" = [])), request_body = CredentialRequest,
    responses((status = 201, body = IssuedCredential), (status = 403, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn issue_credential(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<CredentialRequest>,
) -> Result<(StatusCode, Json<IssuedCredential>), ApiError> {
    valid(req.problems())?;
    let made = agent_credential::generate().map_err(|e| {
        tracing::error!(error = %e, "no agent credential made");
        ApiError::Internal
    })?;
    let client = state.db.client().await?;
    let (stored, replaced) = credentials::issue(
        &client,
        made.credential_id,
        &req.worker_id,
        &made.secret_sha256,
        Some(principal.user_id),
    )
    .await?;
    for earlier in replaced {
        state.credentials.forget(earlier);
    }
    end_broker_access(&state, &req.worker_id).await;
    tracing::info!(credential_id = %stored.credential_id, worker_id = %stored.worker_id, "agent credential issued");
    Ok((
        StatusCode::CREATED,
        Json(IssuedCredential {
            credential_id: stored.credential_id,
            worker_id: stored.worker_id,
            token: made.token,
            created_at: stored.created_at,
        }),
    ))
}

/// Ends the broker login `worker_id`'s agent got at its last registration
/// (a new registration, with a live credential, makes a new one). A broker
/// that cannot be told is logged: the login then lasts until the agent's
/// next registration, which its old credential can no longer make.
async fn end_broker_access(state: &AppState, worker_id: &str) {
    if let Some(accounts) = &state.accounts {
        if let Err(e) = accounts.revoke(worker_id).await {
            tracing::error!(%worker_id, error = %e, "the agent's broker login could not be revoked");
        }
    }
}

/// Lists every agent credential, newest first (admins only; no secrets).
#[utoipa::path(get, path = "/api/agents/credentials", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = CredentialList), (status = 403, body = super::error::ErrorBody)))]
pub async fn list_credentials(State(state): State<AppState>) -> Result<Json<CredentialList>, ApiError> {
    let client = state.db.client().await?;
    let credentials = credentials::list(&client).await?;
    Ok(Json(CredentialList {
        total: credentials.len(),
        credentials,
    }))
}

/// Revokes a credential (admins only): the broker access of its worker's
/// agent ends at once, and the controller refuses the credential within
/// the token recheck interval (at once on this replica). A registration
/// racing it is refused, or loses the broker login it got (see
/// `hold_credential`).
#[utoipa::path(delete, path = "/api/agents/credentials/{credential_id}", tag = "agents", security(("bearer" = [])),
    params(("credential_id" = Uuid, Path, description = "The credential")),
    responses((status = 200, body = AgentCredential, description = "the credential, revoked"),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody, description = "the broker could not end the agent's access; nothing changed")))]
pub async fn revoke_credential(
    State(state): State<AppState>,
    ApiPath(credential_id): ApiPath<Uuid>,
) -> Result<Json<AgentCredential>, ApiError> {
    // Revoked in the database first, the broker account ended while that
    // update holds the row, committed after: a registration racing this
    // one either set up its account before (ended here) or finds the
    // credential revoked (see `register`). A broker failure rolls back.
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let revoked = credentials::revoke(&tx, credential_id).await?;
    if let Some(accounts) = &state.accounts {
        accounts.revoke(&revoked.worker_id).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    state.credentials.forget(credential_id);
    tracing::info!(%credential_id, worker_id = %revoked.worker_id, "agent credential revoked");
    Ok(Json(revoked))
}

/// Registers (or re-registers) the credential's worker as a new
/// incarnation: the answer carries its generation (which the agent checks
/// control messages against), its status, `idle`, or `paused` if it was
/// paused, and (unless agents share one broker login) its own broker login
/// with a fresh password. The broker account is set up first: if the
/// broker cannot do it, the answer is a 503 and the worker's row is
/// unchanged. Registering any other worker id is a 403.
#[utoipa::path(post, path = "/api/agents/register", tag = "agents", security(("bearer" = [])), request_body = RegisterRequest,
    responses((status = 200, body = Registration), (status = 403, body = super::error::ErrorBody, description = "the credential names another worker"),
              (status = 422, body = super::error::ValidationBody),
              (status = 503, body = super::error::ErrorBody, description = "the database, or the broker (the agent's broker account), is unavailable")))]
pub async fn register(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<Registration>, ApiError> {
    valid(req.problems())?;
    principal.act_as(&req.worker_id)?;
    let pools = orchestrator_shared::pools::agent_pools(&req.pools);
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    hold_credential(&tx, &principal).await?;
    let broker = match &state.accounts {
        Some(accounts) => Some(accounts.provision(&req.worker_id, &pools).await?),
        None => None,
    };
    let worker = workers::register(
        &tx,
        &NewWorker {
            worker_id: req.worker_id,
            hostname: req.hostname,
            capacity: req.capacity,
            labels: req.labels,
            version: req.version,
            resources: req.resources,
            isolation: req.isolation,
            pools,
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(worker_id = %worker.worker_id, generation = worker.generation,
        status = %worker.status, own_broker_user = broker.is_some(), "agent registered");
    Ok(Json(Registration {
        worker,
        broker,
        event_batches: state.event_batches,
    }))
}

/// Holds the caller's credential live until the registration commits; one
/// revoked since the request was let in (a revocation racing it) is a 401.
async fn hold_credential(tx: &Transaction<'_>, principal: &Principal) -> Result<(), ApiError> {
    let Some(credential_id) = principal.credential_id else {
        return Ok(());
    };
    if credentials::hold_live(tx, credential_id).await? {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(super::error::INVALID_CREDENTIALS))
    }
}

/// The job classes whose queues the credential's worker should consume
/// (see `db::pools::worker_classes`); agents poll it to learn of classes
/// submitted after they started. The worker is the one the credential
/// names; a user's token is a 403.
#[utoipa::path(get, path = "/api/agents/classes", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = WorkClasses),
              (status = 403, body = super::error::ErrorBody, description = "not an agent credential")))]
pub async fn classes(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<WorkClasses>, ApiError> {
    let worker_id = principal.worker_id.clone().unwrap_or_default();
    principal.act_as(&worker_id)?;
    let client = state.db.client().await?;
    let classes = pools::worker_classes(&client, &worker_id).await?;
    Ok(Json(WorkClasses { classes }))
}

/// Asks whether the credential's worker may run a shard it received;
/// records the start and, with `run`, answers what to run. A claim for
/// another worker is a 403, for a worker that never registered a 409.
#[utoipa::path(post, path = "/api/agents/claim", tag = "agents", security(("bearer" = [])), request_body = ClaimRequest,
    responses((status = 200, body = ClaimResponse, description = "decision: run (with the work), skip or requeue"),
              (status = 403, body = super::error::ErrorBody, description = "the credential names another worker"),
              (status = 409, body = super::error::ErrorBody, description = "the worker has not registered"),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn claim(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    valid(req.problems())?;
    principal.act_as(&req.worker_id)?;
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let ((decision, reason), work) = flow::claim(&tx, &req, state.heartbeat_timeout).await?;
    tx.commit().await.map_err(DbError::from)?;
    count_claim(decision);
    Ok(Json(ClaimResponse {
        decision,
        reason,
        work,
    }))
}

/// Tries of a batch of claims that lost a deadlock to another transaction
/// (the relay marking jobs queued locks many job rows too): the other has
/// finished by the next try.
const CLAIM_BATCH_TRIES: u32 = 3;

/// Answers several claims of the credential's worker in one transaction,
/// each as `POST /api/agents/claim` would, in the request's order.
#[utoipa::path(post, path = "/api/agents/claims", tag = "agents", security(("bearer" = [])), request_body = ClaimBatchRequest,
    responses((status = 200, body = ClaimBatchResponse, description = "one answer per claim, in order"),
              (status = 403, body = super::error::ErrorBody, description = "the credential names another worker"),
              (status = 409, body = super::error::ErrorBody, description = "the worker has not registered"),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn claim_batch(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<ClaimBatchRequest>,
) -> Result<Json<ClaimBatchResponse>, ApiError> {
    valid(req.problems())?;
    principal.act_as(&req.worker_id)?;
    if req.claims.len() <= flow::GATHER_UP_TO {
        if let Some(answers) = gathered(&state, &req).await? {
            return Ok(Json(ClaimBatchResponse { answers }));
        }
    }
    let mut tries = 1;
    loop {
        match claim_batch_once(&state, &req).await {
            Err(e) if e.is_transient() && tries < CLAIM_BATCH_TRIES => tries += 1,
            Err(e) => return Err(e.into()),
            Ok(answers) => return Ok(Json(ClaimBatchResponse { answers })),
        }
    }
}

/// Answers `req` (of at most [`flow::GATHER_UP_TO`] claims) in a
/// transaction shared with whatever other agents' small claim requests are
/// waiting; `None` hands it back to be answered alone. The wait runs in a
/// task of its own ([`in_own_task`]).
async fn gathered(state: &AppState, req: &ClaimBatchRequest) -> Result<Option<Vec<ClaimResponse>>, ApiError> {
    let s = state.clone();
    let (worker_id, claims) = (req.worker_id.clone(), req.claims.clone());
    let turn = async move {
        s.claims
            .claim(&s.db, s.heartbeat_timeout, worker_id, claims)
            .await
    };
    match in_own_task("a gathered claim request", turn).await? {
        GatheredClaims::Done(answers) => Ok(Some(responses(answers))),
        GatheredClaims::Alone => Ok(None),
        GatheredClaims::Failed { unavailable } => Err(ApiError::shared_commit_failed(unavailable)),
    }
}

/// One try of [`claim_batch`] alone, committed.
async fn claim_batch_once(state: &AppState, req: &ClaimBatchRequest) -> Result<Vec<ClaimResponse>, DbError> {
    let client = state.db.client().await?;
    let answers = flow::claim_batch(client, &req.worker_id, &req.claims, state.heartbeat_timeout).await?;
    Ok(responses(answers))
}

/// A batch's answers as the API gives them, each counted.
fn responses(answers: Vec<(flow::Claim, Option<ShardWork>)>) -> Vec<ClaimResponse> {
    answers
        .into_iter()
        .map(|((decision, reason), work)| {
            count_claim(decision);
            ClaimResponse {
                decision,
                reason,
                work,
            }
        })
        .collect()
}

/// Counts an answered claim in `agent_claims_total{decision}`: with the
/// request counts, how well claims are batched and how many are skipped.
fn count_claim(decision: ClaimDecision) {
    let decision = match decision {
        ClaimDecision::Run => "run",
        ClaimDecision::Skip => "skip",
        ClaimDecision::Requeue => "requeue",
    };
    metrics::counter!("agent_claims_total", "decision" => decision).increment(1);
}

/// Stores a piece of the output of a shard the credential's worker runs
/// (sent while it runs, before its report). A piece stored before is
/// answered `stored: false` and changes nothing; a shard the worker does
/// not hold running is a 409, and a piece that would take the shard's
/// stored output past `--max-shard-output-bytes` a 413 (the agent then
/// stops sending that shard's output; its report still carries the tails).
#[utoipa::path(post, path = "/api/agents/output", tag = "agents", security(("bearer" = [])), request_body = OutputChunk,
    responses((status = 200, body = OutputStored),
              (status = 403, body = super::error::ErrorBody, description = "the credential names another worker"),
              (status = 409, body = super::error::ErrorBody, description = "the worker does not hold the shard running"),
              (status = 413, body = super::error::ErrorBody, description = "the body is over the limit, or the shard's stored output would pass the controller's cap"),
              (status = 422, body = super::error::ValidationBody)))]
pub async fn output(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(chunk): ApiJson<OutputChunk>,
) -> Result<Json<OutputStored>, ApiError> {
    let data = chunk.decoded().map_err(ApiError::Validation)?;
    principal.act_as(&chunk.worker_id)?;
    let client = state.db.client().await?;
    match output::store(&client, &chunk, &data, state.max_shard_output).await? {
        Stored::New => {
            let bytes = u64::try_from(data.len()).unwrap_or(u64::MAX);
            metrics::counter!("job_output_bytes_total", "stream" => chunk.stream.as_str()).increment(bytes);
            Ok(Json(OutputStored { stored: true }))
        }
        Stored::Duplicate => Ok(Json(OutputStored { stored: false })),
        Stored::OverCap => {
            metrics::counter!("agent_requests_refused_total", "reason" => "output_over_cap").increment(1);
            Err(ApiError::OutputCapped(state.max_shard_output))
        }
        Stored::NotHolder => {
            metrics::counter!("agent_requests_refused_total", "reason" => "output_not_holder").increment(1);
            Err(ApiError::Conflict(format!(
                "worker {} does not hold shard {} of attempt {} of job {} running",
                chunk.worker_id, chunk.shard_index, chunk.attempt, chunk.job_id
            )))
        }
    }
}
