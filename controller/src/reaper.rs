//! Work that must not run twice at once: marking silent agents offline and
//! handling their jobs, timing out overdue jobs, expiring allocations. Only
//! the controller replica holding a Postgres advisory lock (on a dedicated
//! connection, held while it lives) does it; when that replica dies its
//! connection drops and another takes over.

use crate::broker::Flow;
use crate::db::{allocations, flow, workers, DbError};
use orchestrator_shared::{JobStatus, WorkerStatus};
use std::time::Duration;
use tokio_postgres::NoTls;

/// Advisory lock key of the reaper's leadership ("REAPER" in ASCII).
const LEADER_LOCK: i64 = 0x5245_4150_4552;

/// Runs forever: wins leadership when it can, then reaps every interval.
pub async fn run(database_url: String, flow: Flow) {
    let interval = Duration::from_millis(flow.config.reaper_interval_ms.max(50));
    loop {
        match lead(&database_url, &flow, interval).await {
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "reaper leadership attempt failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Holds the lock and reaps until the lock connection fails. Returns at
/// once if another replica leads.
async fn lead(url: &str, flow: &Flow, interval: Duration) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let leader: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await?
        .get(0);
    if leader {
        tracing::info!("this controller now runs the reaper");
        while !client.is_closed() {
            if let Err(e) = reap_once(flow).await {
                tracing::warn!(error = ?e, "reaper pass failed");
            }
            tokio::time::sleep(interval).await;
        }
        tracing::warn!("reaper leadership lost");
    }
    driver.abort();
    Ok(())
}

/// One pass: lost agents, overdue jobs, lapsed allocations.
pub async fn reap_once(flow: &Flow) -> Result<(), DbError> {
    let mut client = flow.db.client().await?;
    allocations::expire_lapsed(&client).await?;
    let timeout = Duration::from_millis(flow.config.heartbeat_timeout_ms);
    // Heartbeats travel through the broker: while our own link is down (or
    // only just back), silence proves nothing about the agents.
    let heard = flow.status.up_for().is_some_and(|up| up >= timeout);
    let stale = if heard {
        flow::stale_workers(&client, timeout).await?
    } else {
        Vec::new()
    };
    for worker_id in stale {
        match workers::transition_to(&client, &worker_id, WorkerStatus::Offline).await {
            Ok(_) => tracing::warn!(%worker_id, "agent missed its heartbeats: offline"),
            Err(DbError::Transition(_) | DbError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
        for job_id in flow::shards_of(&client, &worker_id).await? {
            let tx = client.transaction().await?;
            let what = flow::abandon(
                &tx,
                job_id,
                JobStatus::Failed,
                format!("worker {worker_id} lost"),
                flow.retry(),
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(%job_id, %worker_id, what, "job of a lost agent handled");
        }
    }
    let grace = Duration::from_millis(flow.config.timeout_grace_ms);
    for job_id in flow::overdue_jobs(&client, grace).await? {
        let tx = client.transaction().await?;
        let what = flow::abandon(
            &tx,
            job_id,
            JobStatus::TimedOut,
            "timed out".to_owned(),
            flow.retry(),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(%job_id, what, "overdue job handled by the controller");
    }
    flow.wake.notify_one();
    Ok(())
}
