//! Worker allocations. Allocating takes one transaction-scoped advisory
//! lock, so two concurrent allocations (of any users) are serialised and can
//! never together exceed a quota or the free workers.

use super::locks::AdvisoryLock;
use super::{pools, Cached, DbError};
use crate::models::{Allocation, AllocationStatus, Quota};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use uuid::Uuid;

const COLUMNS: &str = "allocation_id, job_id, workers, status, created_at, expires_at, released_at, pool";

fn from_row(row: &Row) -> Result<Allocation, DbError> {
    let status: String = row.try_get("status")?;
    Ok(Allocation {
        allocation_id: row.try_get("allocation_id")?,
        job_id: row.try_get("job_id")?,
        workers: row.try_get("workers")?,
        status: AllocationStatus::parse(&status)
            .ok_or_else(|| DbError::Corrupt(format!("allocation status {status:?}")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        released_at: row.try_get("released_at")?,
        pool: row.try_get("pool")?,
    })
}

fn not_found(id: Uuid) -> DbError {
    DbError::NotFound {
        kind: "Allocation",
        id: id.to_string(),
    }
}

/// What an allocation request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRequest {
    /// Workers wanted.
    pub workers: i32,
    /// The job they are for, if any (must exist; the API checks that the
    /// caller may see it).
    pub job_id: Option<Uuid>,
    /// Lifetime in seconds: every allocation lapses (the API applies the
    /// configured default when the client gives none).
    pub ttl_seconds: i64,
    /// Workers of this pool only (its per-pool quota applies); `None`: any.
    pub pool: Option<String>,
}

/// Marks active allocations past their `expires_at` as expired, so they stop
/// counting against quotas.
pub async fn expire_lapsed(client: &impl GenericClient) -> Result<u64, DbError> {
    Ok(client
        .exec(
            "UPDATE allocations SET status = 'expired', released_at = now()
             WHERE status = 'active' AND expires_at IS NOT NULL AND expires_at <= now()",
            &[],
        )
        .await?)
}

/// Workers this user holds in active allocations.
pub async fn allocated_workers(client: &impl GenericClient, user_id: Uuid) -> Result<i64, DbError> {
    Ok(client
        .row(
            "SELECT coalesce(sum(workers), 0)::bigint FROM allocations WHERE user_id = $1 AND status = 'active'",
            &[&user_id],
        )
        .await?
        .try_get(0)?)
}

/// Live workers (idle or busy) not held by any active allocation.
pub async fn free_workers(client: &impl GenericClient) -> Result<i64, DbError> {
    Ok(client
        .row(
            "SELECT (SELECT count(*) FROM workers WHERE status IN ('idle', 'busy'))
                  - (SELECT coalesce(sum(workers), 0) FROM allocations WHERE status = 'active')",
            &[],
        )
        .await?
        .try_get::<_, i64>(0)?
        .max(0))
}

/// Allocates workers for `user_id` inside `tx` if both the user's quota and
/// the free workers allow it; otherwise `QuotaExceeded` or `NotEnoughWorkers`. The caller commits.
pub async fn allocate(
    tx: &Transaction<'_>,
    user_id: Uuid,
    req: AllocationRequest,
    quota: Quota,
) -> Result<Allocation, DbError> {
    tx.exec(
        "SELECT pg_advisory_xact_lock($1)",
        &[&AdvisoryLock::Allocation.key()],
    )
    .await?;
    expire_lapsed(tx).await?;
    let held = allocated_workers(tx, user_id).await?;
    let wanted = i64::from(req.workers);
    if held + wanted > i64::from(quota.max_workers) {
        return Err(DbError::QuotaExceeded(format!(
            "Quota exceeded: {held} workers allocated, {wanted} more requested, max_workers is {}",
            quota.max_workers
        )));
    }
    let free = free_workers(tx).await?;
    if wanted > free {
        return Err(DbError::NotEnoughWorkers { wanted, free });
    }
    if let Some(pool) = &req.pool {
        pools::check_allocation(tx, user_id, pool, wanted, free).await?;
    }
    if let Some(job_id) = req.job_id {
        check_job(tx, job_id).await?;
    }
    let sql = format!(
        "INSERT INTO allocations (allocation_id, user_id, job_id, workers, expires_at, pool)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::bigint), $6)
         RETURNING {COLUMNS}"
    );
    let row = tx
        .row(
            &sql,
            &[
                &Uuid::new_v4(),
                &user_id,
                &req.job_id,
                &req.workers,
                &req.ttl_seconds,
                &req.pool,
            ],
        )
        .await?;
    from_row(&row)
}

/// `NotFound` unless job `job_id` exists.
async fn check_job(client: &impl GenericClient, job_id: Uuid) -> Result<(), DbError> {
    match client
        .row_opt("SELECT 1 FROM jobs WHERE job_id = $1", &[&job_id])
        .await?
    {
        Some(_) => Ok(()),
        None => Err(DbError::NotFound {
            kind: "Job",
            id: job_id.to_string(),
        }),
    }
}

/// One allocation by id, if it belongs to `user_id` (another user's
/// allocation is reported as not found, not as forbidden).
pub async fn get(client: &impl GenericClient, user_id: Uuid, id: Uuid) -> Result<Allocation, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM allocations WHERE allocation_id = $1 AND user_id = $2");
    let row = client.row_opt(&sql, &[&id, &user_id]).await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| not_found(id))
}

/// The newest `limit` allocations of `user_id` (any status), newest first:
/// what the dashboard lists, each active one with its release button.
pub async fn list_of(
    client: &impl GenericClient,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<Allocation>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM allocations WHERE user_id = $1
         ORDER BY created_at DESC, allocation_id DESC LIMIT $2"
    );
    let rows = client.rows(&sql, &[&user_id, &limit]).await?;
    rows.iter().map(from_row).collect()
}

/// Releases an allocation. Releasing one that is already released or
/// expired is harmless and returns it unchanged.
pub async fn release(client: &impl GenericClient, user_id: Uuid, id: Uuid) -> Result<Allocation, DbError> {
    let sql = format!(
        "UPDATE allocations SET status = 'released', released_at = now()
         WHERE allocation_id = $1 AND user_id = $2 AND status = 'active' RETURNING {COLUMNS}"
    );
    match client.row_opt(&sql, &[&id, &user_id]).await? {
        Some(row) => from_row(&row),
        None => get(client, user_id, id).await,
    }
}
