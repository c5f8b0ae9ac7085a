//! Per-user limits. A user without a row gets the controller's default.

use super::{Cached, DbError};
use crate::models::Quota;
use deadpool_postgres::GenericClient;
use uuid::Uuid;

/// The user's own limits, or `default` when none are stored.
pub async fn get(client: &impl GenericClient, user_id: Uuid, default: Quota) -> Result<Quota, DbError> {
    let row = client
        .row_opt(
            "SELECT max_workers, max_concurrent_jobs, max_queued_jobs FROM quotas WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    match row {
        Some(r) => Ok(Quota {
            max_workers: r.try_get(0)?,
            max_concurrent_jobs: r.try_get(1)?,
            max_queued_jobs: r.try_get(2)?,
        }),
        None => Ok(default),
    }
}

/// Stores (or replaces) the user's limits. Negative limits are refused by
/// the schema.
pub async fn set(client: &impl GenericClient, user_id: Uuid, q: Quota) -> Result<(), DbError> {
    client
        .exec(
            "INSERT INTO quotas (user_id, max_workers, max_concurrent_jobs, max_queued_jobs)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET max_workers = EXCLUDED.max_workers,
                 max_concurrent_jobs = EXCLUDED.max_concurrent_jobs,
                 max_queued_jobs = EXCLUDED.max_queued_jobs",
            &[
                &user_id,
                &q.max_workers,
                &q.max_concurrent_jobs,
                &q.max_queued_jobs,
            ],
        )
        .await?;
    Ok(())
}
