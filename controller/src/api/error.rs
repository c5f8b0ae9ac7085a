//! The one place errors become HTTP responses. Every body is
//! `{"detail": ...}` as the contract fixes it; no body carries SQL, a stack
//! trace or a secret (database errors are logged, not returned).

use crate::broker::AccountError;
use crate::db::DbError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use orchestrator_shared::api::error::{
    ErrorBody, FieldError, ValidationBody, BAD_LOGIN, INVALID_CREDENTIALS, NOT_AUTHENTICATED,
};

/// Every way a request can fail, each with its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no, or a bad, token (or wrong login).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: a valid token without the route's scope.
    #[error("Missing required scope: {0}")]
    Forbidden(String),
    /// 403: a valid credential used for what it does not name (an agent
    /// credential for another worker, or a user's token where an agent's
    /// is needed); the text says which.
    #[error("{0}")]
    NotYours(String),
    /// 403: a write authenticated by the session cookie without the
    /// session's CSRF token in `X-CSRF-Token` (see `api::session`).
    #[error("{0}")]
    Csrf(&'static str),
    /// 404: unknown id; the text names it.
    #[error("{0}")]
    NotFound(String),
    /// 409: forbidden transition, exceeded quota, reused idempotency key.
    #[error("{0}")]
    Conflict(String),
    /// 413: body over the limit.
    #[error("Request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 413: a shard's stored output would pass the controller's cap (in
    /// bytes); nothing more of it is stored.
    #[error("The shard's stored output would pass the controller's cap of {0} bytes (--max-shard-output-bytes); nothing more of it is stored")]
    OutputCapped(i64),
    /// 422: invalid input.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 429: too many login attempts; retry after this many seconds.
    #[error("Too many login attempts; retry in {0} seconds")]
    TooManyRequests(u64),
    /// 503: a dependency is down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; details only in the log.
    #[error("Internal server error")]
    Internal,
}

impl ApiError {
    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::NotYours(_) | ApiError::Csrf(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) | ApiError::OutputCapped(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Postgres could not be reached (503): a query's failure, or a shared
    /// submission commit's.
    pub(super) fn database_unavailable() -> ApiError {
        ApiError::Unavailable("Database unavailable".to_owned())
    }

    /// A shared transaction's failed commit (submissions or claims):
    /// whether it took is unknown, so it is never retried; 503 when
    /// Postgres could not be reached, else 500.
    pub(super) fn shared_commit_failed(unavailable: bool) -> ApiError {
        if unavailable {
            ApiError::database_unavailable()
        } else {
            ApiError::Internal
        }
    }
}

/// Awaits `turn` in a task of its own. A gathered request's turn writes
/// and answers other requests too, so it must not be dropped with this
/// request when its client goes away. A task that ends without an answer
/// (a panic) is logged as `what` and answered 500.
pub(super) async fn in_own_task<T: Send + 'static>(
    what: &'static str,
    turn: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(turn).await.map_err(|e| {
        tracing::error!(error = %e, "{what}'s task ended without an answer");
        ApiError::Internal
    })
}

/// `Ok` when a request broke no rule, else the 422 that lists every
/// problem (the shared types' `problems()` feed this).
pub fn valid(problems: Vec<FieldError>) -> Result<(), ApiError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(problems))
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = ?e, "database unavailable");
            return ApiError::database_unavailable();
        }
        match e {
            DbError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            DbError::InvalidDependencies(problems) => ApiError::Validation(problems),
            DbError::Transition(_)
            | DbError::QuotaExceeded(_)
            | DbError::IdempotencyKeyReused { .. }
            | DbError::AlreadyExists { .. }
            | DbError::InUse { .. }
            | DbError::LastAdmin
            | DbError::NotEnoughWorkers { .. }
            | DbError::NotRegistered(_)
            | DbError::ChangedConcurrently { .. } => ApiError::Conflict(e.to_string()),
            DbError::Invariant(_) => {
                tracing::error!(error = %e, "a controller invariant broke");
                ApiError::Internal
            }
            other => {
                tracing::error!(error = ?other, "database error");
                ApiError::Internal
            }
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::TopologyMissing(_) => {
                tracing::warn!(error = %e, "agent's broker account not set up");
                ApiError::Unavailable(
                    "Broker not ready: its topology is not declared yet; try again".to_owned(),
                )
            }
            AccountError::Unreachable(_) | AccountError::Status { .. } => {
                tracing::error!(error = %e, "agent's broker account not set up");
                ApiError::Unavailable(
                    "Broker unavailable: the agent's broker account could not be set up".to_owned(),
                )
            }
            AccountError::InvalidAmqpUrl
            | AccountError::InvalidManagementUrl
            | AccountError::Client(_)
            | AccountError::NoRandomness => {
                tracing::error!(error = %e, "agent's broker account not set up");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match &self {
            ApiError::Validation(errors) => (
                status,
                axum::Json(ValidationBody {
                    detail: errors.clone(),
                }),
            )
                .into_response(),
            other => (
                status,
                axum::Json(ErrorBody {
                    detail: other.to_string(),
                }),
            )
                .into_response(),
        };
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_shared::StateTransitionError;

    #[test]
    fn database_errors_map_to_contract_statuses() {
        let nf: ApiError = DbError::NotFound {
            kind: "Job",
            id: "x".into(),
        }
        .into();
        assert_eq!(
            (nf.status(), nf.to_string()),
            (StatusCode::NOT_FOUND, "Job x not found".to_owned())
        );
        let t = StateTransitionError {
            machine: "job",
            from: "completed".into(),
            to: "cancelled".into(),
        };
        let c: ApiError = DbError::Transition(t).into();
        assert_eq!(c.status(), StatusCode::CONFLICT);
        assert_eq!(c.to_string(), "Invalid job transition: completed -> cancelled");
        let q: ApiError = DbError::QuotaExceeded("Quota exceeded".into()).into();
        assert_eq!(q.status(), StatusCode::CONFLICT);
        let key: ApiError = DbError::IdempotencyKeyReused { key: "k".into() }.into();
        assert_eq!(key.status(), StatusCode::CONFLICT);
    }

    #[test]
    fn a_broken_invariant_is_a_500_that_says_nothing_of_it() {
        let e: ApiError = DbError::Invariant("a job of the batch was not inserted".into()).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.to_string(), "Internal server error");
        let corrupt: ApiError = DbError::Corrupt("labels".into()).into();
        assert_eq!(corrupt.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn unauthorized_carries_the_bearer_challenge_and_429_retry_after() {
        let r = ApiError::Unauthorized(INVALID_CREDENTIALS).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let r = ApiError::TooManyRequests(0).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            ApiError::Forbidden("jobs:write".into()).to_string(),
            "Missing required scope: jobs:write"
        );
    }
}
