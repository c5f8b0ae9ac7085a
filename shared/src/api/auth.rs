//! `/api/auth/*`: logging in, the caller's identity, and creating users.

use super::error::FieldError;
use crate::Scope;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Shortest password accepted for new users.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted, in bytes (bounds the hashing work).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest username, in characters.
pub const MAX_USERNAME: usize = 128;

/// `POST /api/auth/login` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A fresh access token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The caller, as `GET /api/auth/me` shows it (and a new user, as
/// `POST /api/auth/users` answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// User id (the token's `sub`).
    pub user_id: Uuid,
    /// Login name.
    pub username: String,
    /// Scopes of the user.
    pub scopes: Vec<String>,
}

/// `POST /api/auth/users` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserRequest {
    /// Login name, 1–128 characters, unique.
    pub username: String,
    /// Password, at least 8 characters.
    pub password: String,
    /// Scopes to grant (see the contract's list).
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl CreateUserRequest {
    /// Every rule of the contract this request breaks.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let name_len = self.username.chars().count();
        if name_len == 0 || name_len > MAX_USERNAME || self.username.chars().any(char::is_whitespace) {
            errors.push(FieldError::body(
                "username",
                format!("must be 1 to {MAX_USERNAME} characters without spaces"),
            ));
        }
        if self.password.chars().count() < MIN_PASSWORD_LEN || self.password.len() > MAX_PASSWORD_BYTES {
            errors.push(FieldError::body(
                "password",
                format!("must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_BYTES} characters"),
            ));
        }
        for scope in &self.scopes {
            if scope.parse::<Scope>().is_err() {
                errors.push(FieldError::body("scopes", format!("unknown scope: {scope}")));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_password_or_token() {
        let login = LoginRequest {
            username: "alice".into(),
            password: "hunter22".into(),
        };
        assert!(!format!("{login:?}").contains("hunter22"));
        let token = TokenResponse {
            access_token: "eyJsecret".into(),
            token_type: "bearer".into(),
            expires_in: 1,
            scopes: vec![],
        };
        assert!(!format!("{token:?}").contains("eyJsecret"));
    }

    #[test]
    fn new_user_rules_name_each_field() {
        let req = CreateUserRequest {
            username: "a b".into(),
            password: "short".into(),
            scopes: vec!["root".into()],
        };
        let locs: Vec<String> = req.problems().iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.username", "body.password", "body.scopes"]);
    }
}
