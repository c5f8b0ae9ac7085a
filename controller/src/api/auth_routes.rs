//! `/api/auth/*`: login, the caller's identity, and user creation by admins
//! (the other users routes are in [`super::users`]).

use super::client_ip::ClientIp;
use super::error::{valid, ApiError, BAD_LOGIN};
use super::extract::{ApiJson, Principal};
use super::AppState;
use crate::auth::password;
use crate::db::users;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use orchestrator_shared::api::auth::distinct_scopes;
use orchestrator_shared::api::{CreateUserRequest, LoginRequest, Me, TokenResponse};

/// Exchanges a username and password for a token.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody), (status = 429, body = super::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    authenticate(&state, ip, req).await.map(Json)
}

/// Checks a login (rate limit, password, standing) and issues its token:
/// what both the bearer login and the browser session login
/// (`super::session`) answer with.
pub(super) async fn authenticate(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    req: LoginRequest,
) -> Result<TokenResponse, ApiError> {
    valid(req.problems())?;
    let attempt = state
        .login_limiter
        .check(ip, &req.username)
        .map_err(ApiError::TooManyRequests)?;
    let client = state.db.client().await?;
    let user = users::find_by_username(&client, &req.username).await?;
    drop(client);
    // An unknown user is checked against a decoy hash, so both failures
    // take the same time and give the same answer.
    let stored = user
        .as_ref()
        .map_or_else(|| password::DECOY_HASH.to_owned(), |u| u.password_hash.clone());
    let verified = password::verify(req.password, stored).await;
    // A disabled user's password is checked too, so its refusal takes the
    // same time and gives the same answer as a wrong password.
    let user = match (user, verified) {
        (Some(user), Ok(())) if !user.disabled => {
            state.login_limiter.succeeded(attempt);
            user
        }
        (_, Err(password::PasswordError::Task)) => return Err(ApiError::Internal),
        _ => return Err(ApiError::Unauthorized(BAD_LOGIN)),
    };
    let token = state
        .tokens
        .issue(user.user_id, &user.scopes, user.token_version)
        .map_err(|e| {
            tracing::error!(error = %e, "token signing failed");
            ApiError::Internal
        })?;
    Ok(TokenResponse {
        access_token: token,
        token_type: "bearer".to_owned(),
        expires_in: state.tokens.ttl_seconds(),
        scopes: user.scopes,
    })
}

/// The caller's identity.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = super::error::ErrorBody)))]
pub async fn me(State(state): State<AppState>, principal: Principal) -> Result<Json<Me>, ApiError> {
    let client = state.db.client().await?;
    let user = users::get(&client, principal.user_id)
        .await
        .map_err(|e| match e {
            crate::db::DbError::NotFound { .. } => ApiError::Unauthorized(super::error::INVALID_CREDENTIALS),
            other => other.into(),
        })?;
    Ok(Json(Me {
        user_id: user.user_id,
        username: user.username,
        scopes: user.scopes,
    }))
}

/// Creates a user (admins only), under the NFKC form of the name asked for,
/// which is what a login looks up.
#[utoipa::path(post, path = "/api/auth/users", tag = "auth", security(("bearer" = [])), request_body = CreateUserRequest,
    responses((status = 201, body = Me), (status = 403, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ValidationBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<Me>), ApiError> {
    valid(req.problems())?;
    let username = req.normalized_username();
    let scopes = distinct_scopes(&req.scopes);
    let hash = password::hash(req.password)
        .await
        .map_err(|_| ApiError::Internal)?;
    let client = state.db.client().await?;
    let user = users::create(&client, &username, &hash, &scopes).await?;
    Ok((
        StatusCode::CREATED,
        Json(Me {
            user_id: user.user_id,
            username: user.username,
            scopes: user.scopes,
        }),
    ))
}
