//! JWT issue and verification. The algorithm is pinned by configuration and
//! verification accepts only that one (so `alg: none` and algorithm
//! confusion fail); `iss`, `aud`, `exp` and `nbf` are required and checked
//! with a small leeway.

use crate::config::{AuthConfig, JwtAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The claims of an access token, as the contract lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not valid before.
    pub nbf: u64,
    /// Expires at.
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Unique token id.
    pub jti: String,
    /// The user's token version at issue: the token is accepted only while
    /// the user's version is still this one (disabling, deleting or a new
    /// password bumps it). Tokens issued before versions existed have
    /// none and count as version 0.
    #[serde(default)]
    pub ver: i64,
}

/// Why a token was refused or could not be made. The API maps every
/// verification failure to the same 401 body, so the variants exist for
/// logs and tests, not for clients.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The configured secret is too short for the algorithm.
    #[error("JWT secret must be at least {0} bytes for the configured algorithm")]
    WeakSecret(usize),
    /// Signing failed.
    #[error("token encoding failed")]
    Encode(#[source] jsonwebtoken::errors::Error),
    /// The token is invalid: malformed, forged, expired, wrong issuer,
    /// audience or algorithm.
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// Issues and verifies tokens with one key, one algorithm, one issuer and
/// one audience, all from configuration.
#[derive(Clone)]
pub struct TokenIssuer {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_seconds: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    /// Builds the issuer; refuses a secret shorter than the hash output.
    pub fn new(cfg: &AuthConfig) -> Result<Self, JwtError> {
        let (algorithm, min_len) = match cfg.jwt_algorithm {
            JwtAlgorithm::Hs256 => (Algorithm::HS256, 32),
            JwtAlgorithm::Hs384 => (Algorithm::HS384, 48),
            JwtAlgorithm::Hs512 => (Algorithm::HS512, 64),
        };
        let secret = cfg.jwt_secret.expose().as_bytes();
        if secret.len() < min_len {
            return Err(JwtError::WeakSecret(min_len));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&cfg.jwt_issuer]);
        validation.set_audience(&[&cfg.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = cfg.jwt_leeway.as_secs();
        Ok(TokenIssuer {
            algorithm,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: cfg.jwt_issuer.clone(),
            audience: cfg.jwt_audience.clone(),
            ttl_seconds: cfg.token_ttl.as_secs(),
        })
    }

    /// Lifetime of issued tokens (the login response's `expires_in`).
    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds
    }

    /// Signs a token for `user_id` with `scopes` and the user's token
    /// `version`, valid from now for the TTL.
    pub fn issue(&self, user_id: Uuid, scopes: &[String], version: i64) -> Result<String, JwtError> {
        self.sign_new(user_id, scopes, version, self.ttl_seconds)
    }

    /// Signs a token valid for `ttl_seconds` (agent tokens live longer than
    /// users' access tokens; they name no user, so carry version 0).
    pub fn issue_for(&self, user_id: Uuid, scopes: &[String], ttl_seconds: u64) -> Result<String, JwtError> {
        self.sign_new(user_id, scopes, 0, ttl_seconds)
    }

    /// Signs fresh claims: now, a new `jti`, the configured issuer and audience.
    fn sign_new(
        &self,
        user_id: Uuid,
        scopes: &[String],
        version: i64,
        ttl_seconds: u64,
    ) -> Result<String, JwtError> {
        let now = now_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            scopes: scopes.to_vec(),
            iat: now,
            nbf: now,
            exp: now + ttl_seconds,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::new_v4().to_string(),
            ver: version,
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims with the configured key and algorithm (tests
    /// use it to make expired or mis-addressed tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.encoding).map_err(JwtError::Encode)
    }

    /// Verifies signature, algorithm, `iss`, `aud`, `exp` and `nbf`, and
    /// returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(JwtError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cfg(alg: JwtAlgorithm, secret: &str) -> AuthConfig {
        AuthConfig {
            jwt_secret: Secret::new(secret),
            jwt_algorithm: alg,
            jwt_issuer: "iss".into(),
            jwt_audience: "aud".into(),
            token_ttl: std::time::Duration::from_secs(60),
            jwt_leeway: std::time::Duration::ZERO,
            admin_username: None,
            admin_password: None,
        }
    }

    #[test]
    fn short_secret_is_refused_per_algorithm() {
        assert!(matches!(
            TokenIssuer::new(&cfg(JwtAlgorithm::Hs256, "short")),
            Err(JwtError::WeakSecret(32))
        ));
        assert!(matches!(
            TokenIssuer::new(&cfg(JwtAlgorithm::Hs512, &"k".repeat(48))),
            Err(JwtError::WeakSecret(64))
        ));
        assert!(TokenIssuer::new(&cfg(JwtAlgorithm::Hs384, &"k".repeat(48))).is_ok());
    }

    #[test]
    fn token_of_another_hmac_algorithm_is_refused() {
        let a = TokenIssuer::new(&cfg(JwtAlgorithm::Hs512, &"k".repeat(64))).unwrap();
        let b = TokenIssuer::new(&cfg(JwtAlgorithm::Hs256, &"k".repeat(64))).unwrap();
        let token = a.issue(Uuid::new_v4(), &[], 0).unwrap();
        assert!(a.verify(&token).is_ok());
        assert!(b.verify(&token).is_err());
    }
}
