//! Authentication: Argon2id password hashing (always off the async runtime),
//! JWT issue and verification pinned to one configured algorithm, and
//! whether a token's user still stands (revocation).

pub mod agent_credential;
pub mod jwt;
pub mod password;
pub mod standing;

pub use jwt::{Claims, JwtError, TokenIssuer};
pub use password::PasswordError;
