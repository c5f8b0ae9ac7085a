//! `/api/auth/users` and `/api/auth/users/{user_id}` beyond creation
//! (admins only): list, read, change (scopes, disabled, password,
//! per-pool quotas) and delete users. Every change that takes rights away reaches the tokens
//! issued before it through the one authorization check
//! (`auth::standing`); this controller forgets its reading of the user at
//! once, the others within the revocation bound.

use super::error::{valid, ApiError, ErrorBody, ValidationBody};
use super::extract::{ApiJson, ApiPath, Principal};
use super::AppState;
use crate::auth::password;
use crate::db::users::{self, UserChange};
use crate::db::{pools, DbError};
use crate::models::User;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::auth::distinct_scopes;
use orchestrator_shared::api::{UpdateUserRequest, UserAccount, UserList};
use std::collections::BTreeMap;
use uuid::Uuid;

/// How the users routes show `user`, with its per-pool quotas.
fn account(user: User, pool_quotas: BTreeMap<String, i64>) -> UserAccount {
    UserAccount {
        user_id: user.user_id,
        username: user.username,
        scopes: user.scopes,
        disabled: user.disabled,
        created_at: user.created_at,
        pool_quotas,
    }
}

/// `user` as [`account`] shows it, its per-pool quotas read through `client`.
async fn account_of(client: &impl GenericClient, user: User) -> Result<UserAccount, ApiError> {
    let mut quotas = pools::quotas_of(client, Some(&[user.user_id])).await?;
    let own = quotas.remove(&user.user_id).unwrap_or_default();
    Ok(account(user, own))
}

/// Every user that is not deleted, disabled ones included, by name.
#[utoipa::path(get, path = "/api/auth/users", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<UserList>, ApiError> {
    let client = state.db.client().await?;
    let mut quotas = pools::quotas_of(&client, None).await?;
    let users: Vec<UserAccount> = users::list(&client)
        .await?
        .into_iter()
        .map(|user| {
            let own = quotas.remove(&user.user_id).unwrap_or_default();
            account(user, own)
        })
        .collect();
    Ok(Json(UserList {
        total: users.len(),
        users,
    }))
}

/// One user (a deleted one is 404).
#[utoipa::path(get, path = "/api/auth/users/{user_id}", tag = "auth", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = UserAccount), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<Uuid>,
) -> Result<Json<UserAccount>, ApiError> {
    let client = state.db.client().await?;
    let user = users::get(&client, user_id).await?;
    Ok(Json(account_of(&client, user).await?))
}

/// Changes a user's scopes, disabled flag, password or per-pool quotas
/// (all or nothing). Disabling or a new
/// password takes back every token of the user; a scope cut applies to
/// them too. Refused (409) when it would disable the caller or leave no
/// enabled admin.
#[utoipa::path(patch, path = "/api/auth/users/{user_id}", tag = "auth", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)), request_body = UpdateUserRequest,
    responses((status = 200, body = UserAccount), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ValidationBody)))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserAccount>, ApiError> {
    valid(req.problems())?;
    if req.disabled == Some(true) && principal.user_id == user_id {
        return Err(ApiError::Conflict(
            "You cannot disable your own account; another admin can".to_owned(),
        ));
    }
    let change = UserChange {
        scopes: req.scopes.as_deref().map(distinct_scopes),
        disabled: req.disabled,
        password_hash: new_password_hash(&state, user_id, &req).await?,
    };
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let user = users::update(&tx, user_id, &change).await?;
    if let Some(changes) = &req.pool_quotas {
        pools::change_quotas(&tx, user_id, &changes.limits()).await?;
    }
    let user = account_of(&tx, user).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.standing.forget(user_id);
    tracing::info!(%user_id, by = %principal.user_id, scopes = ?user.scopes, disabled = user.disabled,
        new_password = change.password_hash.is_some(), pool_quotas = ?user.pool_quotas, "user changed");
    Ok(Json(user))
}

/// The hash of the request's new password, if it has one that meets the
/// rules for the user `user_id` (404 if there is no such user, 422 if it
/// breaks a rule). Hashed on the blocking pool, before any transaction.
async fn new_password_hash(
    state: &AppState,
    user_id: Uuid,
    req: &UpdateUserRequest,
) -> Result<Option<String>, ApiError> {
    let Some(password) = &req.password else {
        return Ok(None);
    };
    let client = state.db.client().await?;
    let user = users::get(&client, user_id).await?;
    drop(client);
    valid(req.password_problems_for(&user.username))?;
    let hash = password::hash(password.clone())
        .await
        .map_err(|_| ApiError::Internal)?;
    Ok(Some(hash))
}

/// Deletes a user: it can no longer log in, its tokens are refused, its
/// name is free for a new account, its allocations are released; its row
/// stays for the history of its jobs, which are left as they are. Refused
/// (409) for the caller's own account and for the last enabled admin.
#[utoipa::path(delete, path = "/api/auth/users/{user_id}", tag = "auth", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(user_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    if principal.user_id == user_id {
        return Err(ApiError::Conflict(
            "You cannot delete your own account; another admin can".to_owned(),
        ));
    }
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let user = users::mark_deleted(&tx, user_id).await?;
    tx.commit().await.map_err(DbError::from)?;
    state.standing.forget(user_id);
    tracing::info!(%user_id, username = %user.username, by = %principal.user_id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}
