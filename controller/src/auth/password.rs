//! Argon2id password hashing with OWASP's parameters (m = 19 MiB, t = 2,
//! p = 1; the argon2 crate's defaults) and a random salt per password, stored
//! as a PHC string. Hashing costs tens of milliseconds of CPU, so the async
//! entry points run it on the blocking pool, never on a runtime thread.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Why hashing or verifying failed. A wrong password is `Mismatch`; a stored
/// hash that does not parse is `MalformedHash` (never a panic).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password does not match the hash.
    #[error("password does not match")]
    Mismatch,
    /// The stored hash is not a valid Argon2 PHC string.
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// The hasher itself failed (out of memory, RNG failure).
    #[error("password hashing failed")]
    Hashing,
    /// The blocking task was cancelled or panicked.
    #[error("password hashing task failed")]
    Task,
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes `password` with a fresh random salt (blocking; prefer [`hash`]).
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hashing)
}

/// Checks `password` against a stored PHC string (blocking; prefer
/// [`verify`]). The parameters come from the stored string.
pub fn verify_blocking(password: &str, stored: &str) -> Result<(), PasswordError> {
    let parsed = argon2::PasswordHash::new(stored).map_err(|_| PasswordError::MalformedHash)?;
    match hasher().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(()),
        Err(argon2::password_hash::Error::PasswordInvalid) => Err(PasswordError::Mismatch),
        Err(_) => Err(PasswordError::MalformedHash),
    }
}

/// Runs of Argon2 at once. Each takes 19 MiB and a core's worth of work
/// for tens of milliseconds; unbounded, a login flood ran hundreds at once
/// on the blocking pool (measured: 6 to 9 GB of RSS, kept by the allocator
/// afterwards). More than one per core would not finish sooner anyway: the
/// others wait here, asynchronously, in arrival order.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        tokio::sync::Semaphore::new(cores)
    })
}

/// Runs `work` on the blocking pool once a hashing permit is free.
async fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, PasswordError> {
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(|_| PasswordError::Task)?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| PasswordError::Task)
}

/// Hashes on the blocking pool, at most one run per core at once.
pub async fn hash(password: String) -> Result<String, PasswordError> {
    bounded(move || hash_blocking(&password)).await?
}

/// Verifies on the blocking pool, at most one run per core at once.
pub async fn verify(password: String, stored: String) -> Result<(), PasswordError> {
    bounded(move || verify_blocking(&password, &stored)).await?
}

/// A well-formed Argon2id hash with the parameters of real ones (random
/// salt and digest: no password matches it), verified against when a login
/// names an unknown user, so that case costs the same full Argon2 run as a
/// wrong password. A constant, so it cannot fail to exist: a decoy computed
/// at start-up that fell back to "" would silently turn the timing defence
/// off (an empty hash is refused at once as malformed).
pub const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$vioXQRnNBAHtJXkl7n52wA$plAJl0jOIxJ0WjWIFfhaqammCtonTTH8bj1JZ61Pnr4";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_phc_with_owasp_parameters() {
        let h = hash_blocking("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        verify_blocking("correct horse", &h).unwrap();
    }

    #[test]
    fn malformed_hash_is_an_error_not_a_panic() {
        assert!(matches!(
            verify_blocking("x", "not-a-hash"),
            Err(PasswordError::MalformedHash)
        ));
        assert!(matches!(
            verify_blocking("x", "$argon2id$v=19$garbage"),
            Err(PasswordError::MalformedHash)
        ));
    }

    #[test]
    fn the_decoy_hash_costs_a_full_verification_and_matches_nothing() {
        let real = hash_blocking("some password").unwrap();
        let params = |h: &str| h.split('$').nth(3).map(str::to_owned);
        assert_eq!(
            params(DECOY_HASH),
            params(&real),
            "decoy must cost what a real hash costs"
        );
        assert!(matches!(
            verify_blocking("decoy password for timing equality", DECOY_HASH),
            Err(PasswordError::Mismatch)
        ));
        assert!(matches!(
            verify_blocking("", DECOY_HASH),
            Err(PasswordError::Mismatch)
        ));
    }
}
