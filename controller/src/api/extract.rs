//! Extractors that turn every kind of bad input into the contract's error
//! shape (422 list, 413), and the one layer that checks tokens and scopes.

use super::error::{ApiError, FieldError, INVALID_CREDENTIALS, NOT_AUTHENTICATED};
use super::AppState;
use crate::auth::agent_credential;
use crate::auth::standing::judge;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use orchestrator_shared::Scope;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// A JSON body whose failures are the contract's 413 and 422 responses.
/// Every body of the contract is a JSON object: serde's derive would also
/// read a struct from an array (`["admin", "password"]` as a login), which
/// the schema refuses, so anything but an object is a 422 before it is read.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.body_limit_for(req.uri().path());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::Validation(vec![FieldError {
                    loc: vec!["body".into()],
                    msg: "could not read the request body".into(),
                    kind: "value_error".into(),
                }])
            }
        })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError::Validation(vec![FieldError {
                loc: vec!["body".into()],
                msg: "must be a JSON object".into(),
                kind: "type_error".into(),
            }]));
        }
        parse_json(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::Validation(vec![e]))
    }
}

/// Parses `bytes` as `T`, describing the first problem with its location.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        describe(&path, e.into_inner())
    })?;
    de.end().map_err(|e| describe(".", e))?;
    Ok(value)
}

fn describe(path: &str, err: serde_json::Error) -> FieldError {
    use serde_json::error::Category;
    let full = err.to_string();
    let msg = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m)
        .to_owned();
    let mut loc = vec!["body".to_owned()];
    loc.extend(
        path.split('.')
            .filter(|s| !s.is_empty() && *s != "?")
            .map(str::to_owned),
    );
    let kind = match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => "json_invalid",
        Category::Data if msg.starts_with("missing field") => {
            if let Some(field) = msg.split('`').nth(1) {
                loc.push(field.to_owned());
            }
            "missing"
        }
        Category::Data if msg.starts_with("invalid type") => "type_error",
        Category::Data => "value_error",
    };
    FieldError {
        loc,
        msg,
        kind: kind.to_owned(),
    }
}

/// A path parameter whose parse failure is a 422 naming it.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| {
                let key = match &e {
                    PathRejection::FailedToDeserializePathParams(f) => match f.kind() {
                        ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::DeserializeError { key, .. } => {
                            key.clone()
                        }
                        _ => "path".to_owned(),
                    },
                    _ => "path".to_owned(),
                };
                ApiError::Validation(vec![FieldError::path(&key, e.body_text())])
            })
    }
}

/// A query string whose parse failure is a 422.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let _ = state;
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." { "query".to_owned() } else { field };
                let msg = e.into_inner().to_string();
                ApiError::Validation(vec![FieldError::query(&field, msg)])
            })
    }
}

/// The caller, as proven by a verified token whose user still stands.
/// Inserted by [`authorize`]; handlers take it as an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub user_id: Uuid,
    /// The scopes this request may use: those both the token and the
    /// user's current scopes grant (see `auth::standing`).
    pub scopes: Vec<String>,
    /// For an agent's credential, the one worker it names (and then
    /// `user_id` is nil and `scopes` is `agent` alone); `None` for a user.
    pub worker_id: Option<String>,
    /// For an agent's credential, which credential it is (a registration
    /// holds it live while it sets up the agent's broker account).
    pub credential_id: Option<Uuid>,
}

impl Principal {
    /// The caller as the agent of `worker_id`: its credential must name
    /// exactly that worker, else a 403 that says why (and nothing changes).
    pub fn act_as(&self, worker_id: &str) -> Result<(), ApiError> {
        match self.worker_id.as_deref() {
            Some(own) if own == worker_id => Ok(()),
            Some(own) => {
                metrics::counter!("agent_requests_refused_total", "reason" => "other_worker").increment(1);
                tracing::warn!(
                    credential_worker = own,
                    asked_for = worker_id,
                    "agent acted as another worker: refused"
                );
                Err(ApiError::NotYours(format!(
                    "this agent credential is for worker {own}, not {worker_id}"
                )))
            }
            None => {
                metrics::counter!("agent_requests_refused_total", "reason" => "not_an_agent").increment(1);
                Err(ApiError::NotYours(
                    "only an agent credential (issued by POST /api/agents/credentials) may act as a worker"
                        .to_owned(),
                ))
            }
        }
    }

    /// Whether the caller holds `admin` (sees every user's jobs and usage).
    pub fn is_admin(&self) -> bool {
        orchestrator_shared::scope::has_scope(&self.scopes, Scope::Admin)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            tracing::error!("route has no authorization layer");
            ApiError::Internal
        })
    }
}

/// What [`authorize`] needs: the app and the route's required scope
/// (`None`: any valid token).
#[derive(Clone)]
pub struct Guard {
    /// The shared state (token verifier).
    pub state: AppState,
    /// Scope the route requires.
    pub scope: Option<Scope>,
}

/// The one check of every protected route: a valid token of a user who
/// still stands (401 otherwise), from the `Authorization` header or the
/// browser session cookie (a write by cookie must carry its CSRF token:
/// 403 otherwise, see `super::session`), that grants the route's scope (403
/// otherwise).
pub async fn authorize(
    State(guard): State<Guard>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = super::session::credential(req.method(), req.headers())?;
    let principal = admit(&guard.state, &token, guard.scope).await?;
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// The caller `token` proves, if it grants `scope` (`None`: any valid
/// token): the check [`authorize`] makes of every request, and a long
/// response (the output stream) makes again while it lasts.
pub(super) async fn admit(
    state: &AppState,
    token: &str,
    scope: Option<Scope>,
) -> Result<Principal, ApiError> {
    let principal = principal_from_token(state, token).await?;
    if let Some(required) = scope {
        if !orchestrator_shared::scope::has_scope(&principal.scopes, required) {
            return Err(ApiError::Forbidden(required.to_string()));
        }
    }
    Ok(principal)
}

/// The token of an `Authorization: Bearer <token>` header.
pub(super) fn bearer_token(value: Option<&axum::http::HeaderValue>) -> Result<&str, ApiError> {
    let value = value.ok_or(ApiError::Unauthorized(NOT_AUTHENTICATED))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized(INVALID_CREDENTIALS))?;
    let (kind, token) = text
        .split_once(' ')
        .ok_or(ApiError::Unauthorized(INVALID_CREDENTIALS))?;
    if !kind.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(INVALID_CREDENTIALS));
    }
    Ok(token.trim())
}

/// The caller a token proves: an agent credential's worker, or a JWT's
/// user after its signature, claims and current standing (disabled,
/// deleted, token version, scopes) are checked.
async fn principal_from_token(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    if agent_credential::looks_like_credential(token) {
        return agent_principal(state, token).await;
    }
    let claims = state.tokens.verify(token).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        ApiError::Unauthorized(INVALID_CREDENTIALS)
    })?;
    let user_id = Uuid::parse_str(&claims.sub).map_err(|_| ApiError::Unauthorized(INVALID_CREDENTIALS))?;
    let standing = state.standing.standing(&state.db, user_id, claims.ver).await?;
    let scopes = judge(&claims.scopes, claims.ver, standing.as_deref()).map_err(|refusal| {
        tracing::debug!(%user_id, %refusal, "token refused");
        ApiError::Unauthorized(INVALID_CREDENTIALS)
    })?;
    Ok(Principal {
        user_id,
        scopes,
        worker_id: None,
        credential_id: None,
    })
}

/// The agent an agent credential proves: live, and its secret right.
async fn agent_principal(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let Some((credential_id, worker_id)) = state.credentials.worker_of(&state.db, token).await? else {
        metrics::counter!("agent_requests_refused_total", "reason" => "bad_credential").increment(1);
        tracing::debug!("agent credential refused: unknown, revoked or wrong");
        return Err(ApiError::Unauthorized(INVALID_CREDENTIALS));
    };
    Ok(Principal {
        user_id: Uuid::nil(),
        scopes: vec![Scope::Agent.as_str().to_owned()],
        worker_id: Some(worker_id),
        credential_id: Some(credential_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: i32,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    #[test]
    fn json_problems_are_located() {
        let e = parse_json::<Body>(b"{\"name\": \"x\"}").unwrap_err();
        assert_eq!(
            (e.loc, e.kind.as_str()),
            (vec!["body".to_owned(), "count".to_owned()], "missing")
        );
        let e = parse_json::<Body>(br#"{"name": "x", "count": "many"}"#).unwrap_err();
        assert_eq!(e.loc, ["body", "count"]);
        assert_eq!(e.kind, "type_error");
        assert!(!e.msg.contains("line"), "{}", e.msg);
        let e = parse_json::<Body>(br#"{"name": "x", "count": 1, "inner": {"flag": 3}}"#).unwrap_err();
        assert_eq!(e.loc, ["body", "inner", "flag"]);
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(
            (e.loc, e.kind.as_str()),
            (vec!["body".to_owned()], "json_invalid")
        );
        let e = parse_json::<Body>(br#"{"name": "x", "count": 1} trailing"#).unwrap_err();
        assert_eq!(e.kind, "json_invalid");
        assert!(parse_json::<Body>(br#"{"name": "x", "count": 1}"#).is_ok());
    }
}
