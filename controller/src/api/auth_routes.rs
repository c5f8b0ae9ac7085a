//! `/api/auth/*`: login, the caller's identity, and user creation by admins.

use super::error::{ApiError, FieldError};
use super::extract::{ApiJson, Principal};
use super::AppState;
use crate::auth::password;
use crate::db::users;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use orchestrator_shared::Scope;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use utoipa::ToSchema;
use uuid::Uuid;

/// The 401 detail of a failed login, the same for an unknown user and a
/// wrong password.
pub const BAD_LOGIN: &str = "Incorrect username or password";
/// Shortest password accepted for new users.
pub const MIN_PASSWORD_LEN: usize = 8;

/// `POST /api/auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A fresh access token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Scopes it grants.
    pub scopes: Vec<String>,
}

/// The caller, as `GET /api/auth/me` shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// User id (the token's `sub`).
    pub user_id: Uuid,
    /// Login name.
    pub username: String,
    /// Scopes of the user.
    pub scopes: Vec<String>,
}

/// `POST /api/auth/users` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUserRequest {
    /// Login name, 1–128 characters, unique.
    pub username: String,
    /// Password, at least 8 characters.
    pub password: String,
    /// Scopes to grant (see the contract's list).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The peer address, when the server knows it (absent for in-process calls).
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Exchanges a username and password for a token.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody), (status = 429, body = super::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    state
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
        .map_or_else(|| password::decoy_hash().to_owned(), |u| u.password_hash.clone());
    let verified = password::verify(req.password, stored).await;
    let user = match (user, verified) {
        (Some(user), Ok(())) => user,
        (_, Err(password::PasswordError::Task)) => return Err(ApiError::Internal),
        _ => return Err(ApiError::Unauthorized(BAD_LOGIN)),
    };
    let token = state.tokens.issue(user.user_id, &user.scopes).map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        ApiError::Internal
    })?;
    Ok(Json(TokenResponse {
        access_token: token,
        token_type: "bearer".to_owned(),
        expires_in: state.tokens.ttl_seconds(),
        scopes: user.scopes,
    }))
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

fn validate_new_user(req: &CreateUserRequest) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let name_len = req.username.chars().count();
    if name_len == 0 || name_len > 128 || req.username.chars().any(char::is_whitespace) {
        errors.push(FieldError::body(
            "username",
            "must be 1 to 128 characters without spaces",
        ));
    }
    if req.password.chars().count() < MIN_PASSWORD_LEN || req.password.len() > 1024 {
        errors.push(FieldError::body("password", "must be 8 to 1024 characters"));
    }
    for scope in &req.scopes {
        if scope.parse::<Scope>().is_err() {
            errors.push(FieldError::body("scopes", format!("unknown scope: {scope}")));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Creates a user (admins only).
#[utoipa::path(post, path = "/api/auth/users", tag = "auth", security(("bearer" = [])), request_body = CreateUserRequest,
    responses((status = 201, body = Me), (status = 403, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ValidationBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<Me>), ApiError> {
    validate_new_user(&req)?;
    let mut scopes = req.scopes.clone();
    scopes.dedup();
    let hash = password::hash(req.password)
        .await
        .map_err(|_| ApiError::Internal)?;
    let client = state.db.client().await?;
    let user = users::create(&client, &req.username, &hash, &scopes).await?;
    Ok((
        StatusCode::CREATED,
        Json(Me {
            user_id: user.user_id,
            username: user.username,
            scopes: user.scopes,
        }),
    ))
}
