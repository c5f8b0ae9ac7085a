//! Pools and selectors in Postgres: the job classes (see
//! `orchestrator_shared::pools`) submissions introduce and the relay
//! declares, the classes an agent is told to consume, and why a queued
//! job of a class no live agent matches waits.
//!
//! Matching is the same rule everywhere: a worker matches a job when the
//! job's pool is one of the worker's `pools` and the worker's `labels`
//! contain the job's `selector` (jsonb containment, `@>`).

use super::{parse_json, Cached, DbError};
use crate::models::{Job, Labels};
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::WorkClass;
use orchestrator_shared::pools::{JobClass, DEFAULT_POOL};
use orchestrator_shared::JobStatus;

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
