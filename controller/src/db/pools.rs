//! Pools and selectors in Postgres: the job classes (see
//! `orchestrator_shared::pools`) submissions introduce and the relay
//! declares, the classes an agent is told to consume, why a queued job
//! of a class no live agent matches waits, and per-pool quotas (how many
//! workers of a pool a user may hold allocated).
//!
//! Matching is the same rule everywhere: a worker matches a job when the
//! job's pool is one of the worker's `pools` and the worker's `labels`
//! contain the job's `selector` (jsonb containment, `@>`).

use super::{parse_json, Cached, DbError};
use crate::models::{Job, Labels};
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::{PoolQuotaView, WorkClass};
use orchestrator_shared::pools::{JobClass, DEFAULT_POOL};
use orchestrator_shared::JobStatus;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// Records the classes of `jobs` other than the default one (whose queue
/// the topology declares), so the relay declares their queues and agents
/// learn of them; one statement, nothing for a batch of default jobs.
pub async fn register_classes(client: &impl GenericClient, jobs: &[&Job]) -> Result<(), DbError> {
    let mut keys: Vec<String> = Vec::new();
    let mut pools: Vec<String> = Vec::new();
    let mut selectors: Vec<serde_json::Value> = Vec::new();
    for job in jobs {
        let class = JobClass {
            pool: &job.pool,
            selector: &job.selector,
        };
        let key = class.routing_key();
        if class.is_default() || keys.contains(&key) {
            continue;
        }
        let selector =
            serde_json::to_value(&job.selector).map_err(|e| DbError::Invariant(format!("selector: {e}")))?;
        keys.push(key);
        pools.push(job.pool.clone());
        selectors.push(selector);
    }
    if keys.is_empty() {
        return Ok(());
    }
    client
        .exec(
            "INSERT INTO job_classes (routing_key, pool, selector)
             SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])
             ON CONFLICT (routing_key) DO NOTHING",
            &[&keys, &pools, &selectors],
        )
        .await?;
    Ok(())
}

/// Records that the queues of the classes routed by `keys` exist on the
/// broker (the relay declared them), so agents may be told of them.
pub async fn mark_declared(client: &impl GenericClient, keys: &[String]) -> Result<(), DbError> {
    client
        .exec(
            "UPDATE job_classes SET declared_at = now() WHERE routing_key = ANY($1) AND declared_at IS NULL",
            &[&keys],
        )
        .await?;
    Ok(())
}

/// The classes whose queues `worker_id` consumes: the default class if it
/// serves pool `default`, and every declared class of one of its pools
/// whose selector its labels satisfy. Empty for an unknown worker.
pub async fn worker_classes(client: &impl GenericClient, worker_id: &str) -> Result<Vec<WorkClass>, DbError> {
    let rows = client
        .rows(
            "SELECT c.routing_key, c.pool, c.selector FROM job_classes c JOIN workers w ON w.worker_id = $1
             WHERE c.declared_at IS NOT NULL AND c.pool = ANY(w.pools) AND w.labels @> c.selector
             UNION ALL
             SELECT $2, $3, '{}'::jsonb FROM workers w WHERE w.worker_id = $1 AND $3 = ANY(w.pools)
             ORDER BY 1",
            &[
                &worker_id,
                &orchestrator_shared::messages::WORK_ROUTING_KEY,
                &DEFAULT_POOL,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(WorkClass {
                routing_key: r.try_get(0)?,
                pool: r.try_get(1)?,
                selector: parse_json::<Labels>(r, "selector")?,
            })
        })
        .collect()
}

/// Fills in why `job` waits when it is queued, names a pool or a selector,
/// has no other reason recorded, and no live agent (idle or busy) of its
/// pool carries its selector: `no live agent in pool gpu with zone=eu-1`.
/// Computed on read (one indexed query, only for such jobs), so it is
/// true the moment a matching agent registers or is lost, with no writer
/// to keep it so. Jobs of the default class are left as they were.
pub async fn explain_waiting(client: &impl GenericClient, job: &mut Job) -> Result<(), DbError> {
    let class = JobClass {
        pool: &job.pool,
        selector: &job.selector,
    };
    if job.status != JobStatus::Queued || job.waiting_for.is_some() || class.is_default() {
        return Ok(());
    }
    let selector =
        serde_json::to_value(&job.selector).map_err(|e| DbError::Invariant(format!("selector: {e}")))?;
    let live: bool = client
        .row(
            "SELECT EXISTS (SELECT 1 FROM workers WHERE status IN ('idle', 'busy')
                            AND $1 = ANY(pools) AND labels @> $2)",
            &[&job.pool, &selector],
        )
        .await?
        .try_get(0)?;
    if !live {
        job.waiting_for = Some(class.no_agent_reason());
    }
    Ok(())
}

/// Applies an admin's change of `user_id`'s per-pool quotas (`Some(n)`:
/// at most `n` workers of the pool; `None`: the pool's limit lifted), in
/// one statement, in the caller's transaction. The pools lifted and set
/// are distinct (one change names a pool once), so the statement's delete
/// and insert never meet on a row.
pub async fn change_quotas(
    client: &impl GenericClient,
    user_id: Uuid,
    changes: &[(String, Option<i32>)],
) -> Result<(), DbError> {
    let lifted: Vec<&str> = changes
        .iter()
        .filter(|(_, limit)| limit.is_none())
        .map(|(pool, _)| pool.as_str())
        .collect();
    let (pools, limits): (Vec<&str>, Vec<i32>) = changes
        .iter()
        .filter_map(|(pool, limit)| limit.map(|n| (pool.as_str(), n)))
        .unzip();
    client
        .exec(
            "WITH lifted AS (DELETE FROM pool_quotas WHERE user_id = $1 AND pool = ANY($2))
             INSERT INTO pool_quotas (user_id, pool, max_workers)
             SELECT $1, p, n FROM unnest($3::text[], $4::int[]) AS c(p, n)
             ON CONFLICT (user_id, pool) DO UPDATE SET max_workers = EXCLUDED.max_workers",
            &[&user_id, &lifted, &pools, &limits],
        )
        .await?;
    Ok(())
}

/// The per-pool quotas of `user_ids` (every user's when `None`): user to
/// pool to limit; a user without any is absent.
pub async fn quotas_of(
    client: &impl GenericClient,
    user_ids: Option<&[Uuid]>,
) -> Result<HashMap<Uuid, BTreeMap<String, i64>>, DbError> {
    let rows = client
        .rows(
            "SELECT user_id, pool, max_workers::bigint FROM pool_quotas
             WHERE $1::uuid[] IS NULL OR user_id = ANY($1)",
            &[&user_ids],
        )
        .await?;
    let mut quotas: HashMap<Uuid, BTreeMap<String, i64>> = HashMap::new();
    for r in &rows {
        quotas
            .entry(r.try_get(0)?)
            .or_default()
            .insert(r.try_get(1)?, r.try_get(2)?);
    }
    Ok(quotas)
}

/// Live (idle or busy) workers of `pool` not held by an active allocation
/// of that pool, and never more than `free_overall` (allocations that name
/// no pool hold workers of some pool too).
async fn free_in_pool(client: &impl GenericClient, pool: &str, free_overall: i64) -> Result<i64, DbError> {
    let free: i64 = client
        .row(
            "SELECT (SELECT count(*) FROM workers WHERE status IN ('idle', 'busy') AND $1 = ANY(pools))
                  - (SELECT coalesce(sum(workers), 0) FROM allocations WHERE status = 'active' AND pool = $1)",
            &[&pool],
        )
        .await?
        .try_get(0)?;
    Ok(free.clamp(0, free_overall.max(0)))
}

/// `user_id`'s limit in each pool it has one for, what it holds there and
/// what it could still take (within `free_overall` live, unallocated
/// workers), by pool name.
pub async fn quota_views(
    client: &impl GenericClient,
    user_id: Uuid,
    free_overall: i64,
) -> Result<Vec<PoolQuotaView>, DbError> {
    let rows = client
        .rows(
            "SELECT q.pool, q.max_workers::bigint,
                    (SELECT coalesce(sum(a.workers), 0)::bigint FROM allocations a
                     WHERE a.user_id = q.user_id AND a.status = 'active' AND a.pool = q.pool)
             FROM pool_quotas q WHERE q.user_id = $1 ORDER BY q.pool",
            &[&user_id],
        )
        .await?;
    let mut views = Vec::with_capacity(rows.len());
    for r in &rows {
        let (pool, max_workers, allocated_workers): (String, i64, i64) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let room = (max_workers - allocated_workers).max(0);
        let available_workers = free_in_pool(client, &pool, free_overall).await?.min(room);
        views.push(PoolQuotaView {
            pool,
            max_workers,
            allocated_workers,
            available_workers,
        });
    }
    Ok(views)
}

/// Refuses an allocation of `wanted` workers of `pool` by `user_id` that
/// its quota in the pool (if it has one) or the pool's free workers do not
/// allow: `QuotaExceeded` or `NotEnoughWorkers`. Call under the
/// allocations' lock, after the overall checks.
pub async fn check_allocation(
    client: &impl GenericClient,
    user_id: Uuid,
    pool: &str,
    wanted: i64,
    free_overall: i64,
) -> Result<(), DbError> {
    let row = client
        .row(
            "SELECT (SELECT max_workers FROM pool_quotas WHERE user_id = $1 AND pool = $2),
                    (SELECT coalesce(sum(workers), 0)::bigint FROM allocations
                     WHERE user_id = $1 AND status = 'active' AND pool = $2)",
            &[&user_id, &pool],
        )
        .await?;
    let (max, held): (Option<i32>, i64) = (row.try_get(0)?, row.try_get(1)?);
    if let Some(max) = max {
        if held + wanted > i64::from(max) {
            return Err(DbError::QuotaExceeded(format!(
                "Quota exceeded: {held} workers of pool {pool} allocated, {wanted} more requested, max_workers of pool {pool} is {max}"
            )));
        }
    }
    let free = free_in_pool(client, pool, free_overall).await?;
    if wanted > free {
        return Err(DbError::NotEnoughWorkers { wanted, free });
    }
    Ok(())
}
