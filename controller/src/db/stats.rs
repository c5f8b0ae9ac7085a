//! Aggregate figures for the supervisor's metrics, `/metrics` and quotas.

use super::{Cached, DbError};
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::{DurationStats, FleetStats, UserUsage};
use std::collections::BTreeMap;
use uuid::Uuid;

async fn counts_by_status(
    client: &impl GenericClient,
    table: &str,
    all: &[&str],
) -> Result<BTreeMap<String, i64>, DbError> {
    let mut map: BTreeMap<String, i64> = all.iter().map(|s| ((*s).to_owned(), 0)).collect();
    let sql = format!("SELECT status, count(*) FROM {table} GROUP BY status");
    for row in client.rows(&sql, &[]).await? {
        map.insert(row.try_get(0)?, row.try_get(1)?);
    }
    Ok(map)
}

/// Workers by status.
pub async fn workers_by_status(client: &impl GenericClient) -> Result<BTreeMap<String, i64>, DbError> {
    let all: Vec<&str> = orchestrator_shared::WorkerStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    counts_by_status(client, "workers", &all).await
}

/// Jobs by status.
pub async fn jobs_by_status(client: &impl GenericClient) -> Result<BTreeMap<String, i64>, DbError> {
    let all: Vec<&str> = orchestrator_shared::JobStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    counts_by_status(client, "jobs", &all).await
}

/// Everything in [`FleetStats`].
pub async fn fleet(client: &impl GenericClient) -> Result<FleetStats, DbError> {
    let jobs_by_status = jobs_by_status(client).await?;
    let queue_depth = jobs_by_status.get("pending").copied().unwrap_or(0)
        + jobs_by_status.get("queued").copied().unwrap_or(0);
    let started = client
        .row(
            "SELECT avg(d), percentile_cont(0.95) WITHIN GROUP (ORDER BY d) FROM
               (SELECT extract(epoch FROM started_at - created_at)::float8 AS d FROM jobs
                WHERE started_at > now() - interval '1 minute') s",
            &[],
        )
        .await?;
    let finished = client
        .row(
            "SELECT avg(d), percentile_cont(0.95) WITHIN GROUP (ORDER BY d),
                    count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed') FROM
               (SELECT status, extract(epoch FROM finished_at - started_at)::float8 AS d FROM jobs
                WHERE finished_at > now() - interval '1 minute') s",
            &[],
        )
        .await?;
    Ok(FleetStats {
        workers_by_status: workers_by_status(client).await?,
        jobs_by_status,
        queue_depth,
        completed_last_minute: finished.try_get(2)?,
        failed_last_minute: finished.try_get(3)?,
        submit_to_start_seconds: DurationStats {
            mean: started.try_get(0)?,
            p95: started.try_get(1)?,
        },
        start_to_finish_seconds: DurationStats {
            mean: finished.try_get(0)?,
            p95: finished.try_get(1)?,
        },
    })
}

/// Usage of every user, or of one when `only` is given.
pub async fn usage(client: &impl GenericClient, only: Option<Uuid>) -> Result<Vec<UserUsage>, DbError> {
    let rows = client
        .rows(
            "SELECT u.user_id, u.username,
               (SELECT coalesce(sum(workers), 0)::bigint FROM allocations a WHERE a.user_id = u.user_id AND a.status = 'active'),
               (SELECT count(*) FROM jobs j WHERE j.submitted_by = u.user_id AND j.status = 'running'),
               (SELECT coalesce(sum(extract(epoch FROM j.finished_at - j.started_at) * j.required_workers), 0)::float8
                  FROM jobs j WHERE j.submitted_by = u.user_id AND j.finished_at IS NOT NULL AND j.started_at IS NOT NULL)
             FROM users u WHERE ($1::uuid IS NULL OR u.user_id = $1) ORDER BY u.username",
            &[&only],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(UserUsage {
                user_id: r.try_get(0)?,
                username: r.try_get(1)?,
                allocated_workers: r.try_get(2)?,
                running_jobs: r.try_get(3)?,
                worker_seconds: r.try_get(4)?,
            })
        })
        .collect()
}

/// A user's running and waiting (pending or queued) job counts.
pub async fn user_job_counts(client: &impl GenericClient, user_id: Uuid) -> Result<(i64, i64), DbError> {
    let row = client
        .row(
            "SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status IN ('pending', 'queued'))
             FROM jobs WHERE submitted_by = $1 AND status IN ('running', 'pending', 'queued')",
            &[&user_id],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}
