//! Idempotency keys: one job per (user, key). The stored request hash tells
//! a retry of the same submission (answer with the first job) from the same
//! key reused with another body (409).

use super::{is_unique_violation, Cached, DbError};
use crate::models::NewJob;
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A stable hash of a submission's content (labels are a sorted map, so the
/// JSON is canonical), to compare a retried body with the first one.
/// Serialising a `NewJob` (strings, numbers, a string map) cannot fail; if
/// it ever did, hashing nothing would make every such key look reused, so
/// it is an invariant break instead.
pub fn request_hash(job: &NewJob) -> Result<String, DbError> {
    let canonical =
        serde_json::to_vec(job).map_err(|e| DbError::Invariant(format!("hashing a submission: {e}")))?;
    Ok(hex::encode(Sha256::digest(canonical)))
}

/// The job and request hash stored under `key` for this user, if any. A
/// key found is locked (`FOR KEY SHARE`, until the caller's transaction
/// ends), so retention cannot delete it, or its job, between this answer
/// and the replay that reads the job; a key retention is deleting right
/// now is waited for and then not found.
pub async fn find(
    client: &impl GenericClient,
    user_id: Uuid,
    key: &str,
) -> Result<Option<(Uuid, String)>, DbError> {
    let row = client
        .row_opt(
            "SELECT job_id, request_hash FROM idempotency_keys WHERE user_id = $1 AND key = $2
             FOR KEY SHARE",
            &[&user_id, &key],
        )
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

/// Records `key` for `job_id`. A key the user already used is `IdempotencyKeyReused`
/// (the database's unique key decides, so this holds under concurrency).
pub async fn insert(
    client: &impl GenericClient,
    user_id: Uuid,
    key: &str,
    hash: &str,
    job_id: Uuid,
) -> Result<(), DbError> {
    match client
        .exec(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, job_id) VALUES ($1, $2, $3, $4)",
            &[&user_id, &key, &hash, &job_id],
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(DbError::IdempotencyKeyReused { key: key.to_owned() }),
        Err(e) => Err(e.into()),
    }
}
