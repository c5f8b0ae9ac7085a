//! Browser sessions: the token in an `HttpOnly` cookie, and the CSRF rule
//! for every request that cookie authenticates.
//!
//! `POST /api/auth/session` checks a login exactly as `POST /api/auth/login`
//! does, then sets two cookies instead of returning the token:
//! - [`SESSION_COOKIE`]: the JWT; `HttpOnly` (no script can read it),
//!   `SameSite=Strict`, `Path=/`, and `Secure` when the controller serves
//!   HTTPS;
//! - [`CSRF_COOKIE`]: the session's CSRF token, readable by the page's
//!   script (not `HttpOnly`), which must send it back in the
//!   [`CSRF_HEADER`] header of every request that is not `GET`/`HEAD`.
//!
//! The CSRF token is derived from the session token ([`csrf_token`]): it
//! is bound to that session and needs no server-side state, and a page of
//! another origin can neither read the cookie nor compute the value.
//!
//! [`credential`] is what the one admission layer
//! ([`super::extract::authorize`]) and the output stream read: an
//! `Authorization` header as before, else the session cookie, refused
//! with a 403 when a state-changing request lacks the matching header.

use super::auth_routes::authenticate;
use super::client_ip::ClientIp;
use super::error::{ApiError, INVALID_CREDENTIALS, NOT_AUTHENTICATED};
use super::extract::{bearer_token, ApiJson};
use super::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchestrator_shared::api::LoginRequest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The cookie that carries a browser session's JWT.
pub const SESSION_COOKIE: &str = "orch_session";
/// The cookie that carries the session's CSRF token, for the page's script.
pub const CSRF_COOKIE: &str = "orch_csrf";
/// The header in which a cookie-authenticated request repeats the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Domain separation of the CSRF derivation, so the value is never the
/// hash of the token some other part of the system might compute.
const CSRF_CONTEXT: &[u8] = b"orchestrator csrf v1\0";
/// The detail of a cookie-authenticated write without the right CSRF header.
pub const CSRF_REFUSED: &str =
    "CSRF check failed: a request authenticated by the session cookie must repeat the orch_csrf cookie in X-CSRF-Token";

/// What a session login answers: everything but the token itself, which
/// only the `HttpOnly` cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionResponse {
    /// The value to send in `X-CSRF-Token` with every request that is not
    /// `GET`/`HEAD` (also in the `orch_csrf` cookie).
    pub csrf_token: String,
    /// Seconds until the session (its token) expires.
    pub expires_in: u64,
    /// Scopes the session grants.
    pub scopes: Vec<String>,
}

/// Logs in and starts a browser session: the token goes into an
/// `HttpOnly; SameSite=Strict` cookie (`Secure` over HTTPS), never into the
/// body.
#[utoipa::path(post, path = "/api/auth/session", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = SessionResponse,
               description = "Sets the `orch_session` (HttpOnly) and `orch_csrf` cookies"),
              (status = 401, body = super::error::ErrorBody),
              (status = 422, body = super::error::ValidationBody), (status = 429, body = super::error::ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let issued = authenticate(&state, ip, req).await?;
    let csrf = csrf_token(&issued.access_token);
    let body = SessionResponse {
        csrf_token: csrf.clone(),
        expires_in: issued.expires_in,
        scopes: issued.scopes,
    };
    let age = issued.expires_in.to_string();
    let secure = state.secure_cookies;
    let cookies = [
        cookie(SESSION_COOKIE, &issued.access_token, &age, true, secure)?,
        cookie(CSRF_COOKIE, &csrf, &age, false, secure)?,
    ];
    let mut response = Json(body).into_response();
    for value in cookies {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Ends a browser session: both cookies are cleared. When the session
/// cookie is present the CSRF header must match it, so another site cannot
/// log the user out.
#[utoipa::path(delete, path = "/api/auth/session", tag = "auth",
    params(("X-CSRF-Token" = Option<String>, Header, description = "The session's CSRF token (required with the session cookie)")),
    responses((status = 204, description = "Cookies cleared"), (status = 403, body = super::error::ErrorBody)))]
pub async fn end(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = cookie_value(&headers, SESSION_COOKIE) {
        check_csrf(&headers, &token)?;
    }
    let secure = state.secure_cookies;
    let cleared = [
        cookie(SESSION_COOKIE, "", "0", true, secure)?,
        cookie(CSRF_COOKIE, "", "0", false, secure)?,
    ];
    let mut response = StatusCode::NO_CONTENT.into_response();
    for value in cleared {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The token a request presents: its `Authorization: Bearer` header when
/// it has one (unchanged), else its session cookie, which on any method
/// but `GET`/`HEAD` is accepted only with the matching [`CSRF_HEADER`].
pub(super) fn credential(method: &Method, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return bearer_token(Some(value)).map(str::to_owned);
    }
    let token = cookie_value(headers, SESSION_COOKIE).ok_or(ApiError::Unauthorized(NOT_AUTHENTICATED))?;
    if token.is_empty() {
        return Err(ApiError::Unauthorized(INVALID_CREDENTIALS));
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
        check_csrf(headers, &token)?;
    }
    Ok(token)
}

/// The CSRF token of a session token: a hash of it under a fixed context,
/// so it is bound to that session and unguessable without it.
pub fn csrf_token(session_token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(CSRF_CONTEXT);
    hash.update(session_token.as_bytes());
    hex::encode(hash.finalize())
}

/// `Ok` when the request's [`CSRF_HEADER`] is the CSRF token of
/// `session_token`, else the 403 that says what is missing.
fn check_csrf(headers: &HeaderMap, session_token: &str) -> Result<(), ApiError> {
    let expected = csrf_token(session_token);
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match sent {
        Some(sent) if constant_time_eq(sent.trim().as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::Csrf(CSRF_REFUSED)),
    }
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// A `Set-Cookie` value with the session's flags.
fn cookie(
    name: &str,
    value: &str,
    max_age: &str,
    http_only: bool,
    secure: bool,
) -> Result<HeaderValue, ApiError> {
    let mut text = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Strict");
    if http_only {
        text.push_str("; HttpOnly");
    }
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).map_err(|_| {
        tracing::error!(cookie = name, "a session cookie is not a valid header value");
        ApiError::Internal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn cookie_reads_only_the_named_session() {
        let h = headers(&[
            ("cookie", "a=1; orch_session=tok; orch_csrf=x"),
            ("cookie", "b=2"),
        ]);
        assert_eq!(cookie_value(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie_value(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie_value(&h, "orch"), None);
    }

    #[test]
    fn writes_by_cookie_need_the_bound_csrf_header() {
        let csrf = csrf_token("tok");
        let cookie = ("cookie", "orch_session=tok");
        assert_eq!(credential(&Method::GET, &headers(&[cookie])).unwrap(), "tok");
        assert!(matches!(
            credential(&Method::POST, &headers(&[cookie])),
            Err(ApiError::Csrf(_))
        ));
        let other = csrf_token("another");
        assert!(matches!(
            credential(&Method::POST, &headers(&[cookie, ("x-csrf-token", &other)])),
            Err(ApiError::Csrf(_))
        ));
        let ok = credential(&Method::DELETE, &headers(&[cookie, ("x-csrf-token", &csrf)]));
        assert_eq!(ok.unwrap(), "tok");
    }

    #[test]
    fn a_bearer_header_wins_and_needs_no_csrf() {
        let h = headers(&[("authorization", "Bearer abc"), ("cookie", "orch_session=tok")]);
        assert_eq!(credential(&Method::POST, &h).unwrap(), "abc");
        assert!(matches!(
            credential(&Method::GET, &HeaderMap::new()),
            Err(ApiError::Unauthorized(NOT_AUTHENTICATED))
        ));
    }

    #[test]
    fn cookies_carry_the_flags() {
        let c = cookie(SESSION_COOKIE, "t", "60", true, true).unwrap();
        let text = c.to_str().unwrap();
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=60"] {
            assert!(text.contains(flag), "{text}");
        }
        let plain = cookie(CSRF_COOKIE, "t", "60", false, false).unwrap();
        assert!(!plain.to_str().unwrap().contains("HttpOnly"));
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }
}
