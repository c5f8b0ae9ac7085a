//! Authentication: Argon2id password hashing (always off the async runtime)
//! and JWT issue and verification pinned to one configured algorithm.

pub mod jwt;
pub mod password;

pub use jwt::{Claims, JwtError, TokenIssuer};
pub use password::PasswordError;
