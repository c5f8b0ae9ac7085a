//! Agent credentials: bearer tokens that name exactly one worker id.
//!
//! A token is `orca_<credential id, 32 hex>_<secret, 43 base64url>`: the id
//! finds the row in one primary-key lookup, and only the SHA-256 of the
//! 32-byte secret is stored. The secret is random, not chosen by a person,
//! so a fast hash resists guessing as well as Argon2 would and the check
//! stays cheap enough for every claim. Each controller keeps a reading of a
//! credential for at most the recheck interval (the same bound as users'
//! tokens), so a revocation made on any replica reaches every replica's
//! checks within it.

use crate::db::credentials::{self, CredentialRow};
use crate::db::{Database, DbError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use orchestrator_shared::api::agents::CREDENTIAL_PREFIX;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Bytes of randomness in a credential's secret.
const SECRET_BYTES: usize = 32;
/// Most credentials whose readings are kept at once (one per agent that
/// called within the interval); beyond it, eviction costs queries only.
const MAX_ENTRIES: u64 = 50_000;

/// The system's generator gave no randomness: no credential can be made.
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed")]
pub struct NoRandomness;

/// A freshly made credential: what is stored and what is shown once.
pub struct NewCredential {
    /// Its id.
    pub credential_id: Uuid,
    /// The whole bearer token, for the agent.
    pub token: String,
    /// SHA-256 of the secret, for the database.
    pub secret_sha256: [u8; 32],
}

/// Makes a credential with a new id and a new random secret.
pub fn generate() -> Result<NewCredential, NoRandomness> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|_| NoRandomness)?;
    let credential_id = Uuid::new_v4();
    let encoded = URL_SAFE_NO_PAD.encode(secret);
    Ok(NewCredential {
        credential_id,
        token: format!("{CREDENTIAL_PREFIX}{}_{encoded}", credential_id.simple()),
        secret_sha256: Sha256::digest(encoded.as_bytes()).into(),
    })
}

/// Whether `token` has the shape of an agent credential (as opposed to a
/// user's JWT); it may still be wrong or revoked.
pub fn looks_like_credential(token: &str) -> bool {
    token.starts_with(CREDENTIAL_PREFIX)
}

/// The id a token names and the SHA-256 of the secret it presents;
/// `None` when it is not shaped like a credential at all.
pub fn parse(token: &str) -> Option<(Uuid, [u8; 32])> {
    let rest = token.strip_prefix(CREDENTIAL_PREFIX)?;
    let (id, secret) = rest.split_at_checked(32)?;
    let secret = secret.strip_prefix('_')?;
    if secret.len() != 43
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let credential_id = Uuid::try_parse(id).ok()?;
    Some((credential_id, Sha256::digest(secret.as_bytes()).into()))
}

/// Equality of two digests in time that does not depend on where they
/// differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A reading of one credential's row and when it was taken.
#[derive(Clone)]
struct Reading {
    row: Option<CredentialRow>,
    read_at: Instant,
}

/// Per-credential readings of `agent_credentials`, each used for at most
/// the recheck interval (moka: bounded, concurrent, with a time to live).
pub struct CredentialCache {
    readings: moka::sync::Cache<Uuid, Reading>,
    recheck: Duration,
}

impl CredentialCache {
    /// An empty cache whose readings serve for `recheck`.
    pub fn new(recheck: Duration) -> Self {
        CredentialCache {
            readings: moka::sync::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(recheck)
                .build(),
            recheck,
        }
    }

    /// The credential `token` is and the worker id it proves, or `None`
    /// when the token is malformed, unknown, revoked or its secret is wrong.
    pub async fn worker_of(&self, db: &Database, token: &str) -> Result<Option<(Uuid, String)>, DbError> {
        let Some((credential_id, presented)) = parse(token) else {
            return Ok(None);
        };
        let row = match self.readings.get(&credential_id) {
            Some(reading) if reading.read_at.elapsed() < self.recheck => reading.row,
            _ => {
                let read_at = Instant::now();
                let client = db.client().await?;
                let row = credentials::lookup(&client, credential_id).await?;
                drop(client);
                let reading = Reading {
                    row: row.clone(),
                    read_at,
                };
                self.readings.insert(credential_id, reading);
                row
            }
        };
        Ok(row
            .filter(|r| !r.revoked && same_digest(&r.secret_sha256, &presented))
            .map(|r| (credential_id, r.worker_id)))
    }

    /// Drops the reading of `credential_id` after this controller revoked
    /// it, so its own next request sees the revocation at once.
    pub fn forget(&self, credential_id: Uuid) {
        self.readings.invalidate(&credential_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_to_its_id_and_hash() {
        let made = generate().unwrap();
        assert!(looks_like_credential(&made.token));
        assert_eq!(made.token.len(), CREDENTIAL_PREFIX.len() + 32 + 1 + 43);
        let (id, hash) = parse(&made.token).unwrap();
        assert_eq!(id, made.credential_id);
        assert!(same_digest(&hash, &made.secret_sha256));
        assert_ne!(generate().unwrap().token, made.token, "fresh secrets");
    }

    #[test]
    fn a_changed_secret_has_another_hash_and_bad_shapes_do_not_parse() {
        let made = generate().unwrap();
        let mut other = made.token.clone();
        let last = if other.ends_with('A') { "B" } else { "A" };
        other.replace_range(other.len() - 1.., last);
        let (_, hash) = parse(&other).unwrap();
        assert!(!same_digest(&hash, &made.secret_sha256));
        for bad in [
            "",
            "orca_",
            "eyJhbGciOiJIUzI1NiJ9.e30.x",
            &made.token[..made.token.len() - 1],
            &format!("{}x", made.token),
            &made.token.replace('_', "-"),
            &format!("orca_{}_{}", "z".repeat(32), "a".repeat(43)),
            &format!("orca_{}_{}", "0".repeat(32), "a+".repeat(21) + "a"),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
