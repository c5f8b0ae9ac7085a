//! Work that must not run twice at once: probing silent agents (the probe,
//! once applied, marks a lost one offline and handles its jobs), timing out overdue jobs, expiring allocations. Only
//! the controller replica holding a Postgres advisory lock (on a dedicated
//! connection, held while it lives) does it; when that replica dies its
//! connection drops and another takes over.

use crate::broker::Flow;
use crate::db::{allocations, flow, outbox, DbError};
use orchestrator_shared::broker::EVENTS_ROUTING_KEY;
use orchestrator_shared::messages::{AgentEvent, EVENTS_EXCHANGE};
use orchestrator_shared::JobStatus;
use std::collections::hash_map::{Entry, HashMap};
use std::time::{Duration, Instant};
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
        let mut probes = Probes::default();
        while !client.is_closed() {
            if let Err(e) = reap_once(flow, &mut probes).await {
                tracing::warn!(error = ?e, "reaper pass failed");
            }
            tokio::time::sleep(interval).await;
        }
        tracing::warn!("reaper leadership lost");
    }
    driver.abort();
    Ok(())
}

/// Liveness probes in flight, so a silent worker gets one per heartbeat
/// timeout rather than one per pass.
#[derive(Debug, Default)]
pub struct Probes {
    sent: HashMap<String, Instant>,
}

impl Probes {
    /// Whether `worker_id` is due a probe now; if so, remembers it as sent.
    fn due(&mut self, worker_id: &str, every: Duration) -> bool {
        let now = Instant::now();
        self.sent.retain(|_, at| now.duration_since(*at) < every);
        match self.sent.entry(worker_id.to_owned()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(now);
                true
            }
        }
    }
}

/// One pass: probes for silent agents, overdue jobs, lapsed allocations.
///
/// A silent agent is not declared lost here: its heartbeats travel through
/// the events queue, behind everything it and the others sent earlier, so
/// silence may only mean this controller is behind. A liveness probe goes
/// into the same queue instead (through the outbox), and the agent is lost
/// only if, once the probe comes out, no heartbeat came out before it.
pub async fn reap_once(flow: &Flow, probes: &mut Probes) -> Result<(), DbError> {
    let mut client = flow.db.client().await?;
    allocations::expire_lapsed(&client).await?;
    let timeout = Duration::from_millis(flow.config.heartbeat_timeout_ms);
    // While our own link is down (or only just back) a probe could not go
    // out anyway, and silence proves nothing.
    let heard = flow.status.up_for().is_some_and(|up| up >= timeout);
    let stale = if heard {
        flow::stale_workers(&client, timeout).await?
    } else {
        Vec::new()
    };
    for (worker_id, since) in stale {
        if probes.due(&worker_id, timeout) {
            let probe = AgentEvent::LivenessProbe { worker_id, since };
            let payload = serde_json::to_value(&probe).unwrap_or_default();
            outbox::enqueue(&client, EVENTS_EXCHANGE, EVENTS_ROUTING_KEY, &payload, 0, None).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_worker_gets_one_probe_per_period() {
        let mut probes = Probes::default();
        let period = Duration::from_millis(40);
        assert!(probes.due("a", period));
        assert!(!probes.due("a", period), "a second probe within the period");
        assert!(probes.due("b", period), "another worker is probed on its own");
        std::thread::sleep(period);
        assert!(probes.due("a", period), "probed again once the period is over");
    }
}
