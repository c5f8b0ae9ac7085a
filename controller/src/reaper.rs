//! Work that must not run twice at once: probing silent agents (the probe,
//! once applied, marks a lost one offline and handles its jobs), timing out
//! overdue jobs, expiring allocations, and (on its own, longer interval)
//! retention's passes (`crate::retention`), and firing schedules' due
//! ticks (`crate::schedules`). Only the controller replica holding a
//! Postgres advisory lock (on a dedicated connection, held while it lives)
//! does it; when that replica dies its connection drops and another takes
//! over.

use crate::broker::Flow;
use crate::config::RetentionConfig;
use crate::db::locks::AdvisoryLock;
use crate::db::{allocations, flow, outbox, DbError, PgTarget};
use crate::schedules::Firing;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use orchestrator_shared::broker::EVENTS_ROUTING_KEY;
use orchestrator_shared::messages::{AgentEvent, EVENTS_EXCHANGE};
use orchestrator_shared::JobStatus;
use std::collections::hash_map::{Entry, HashMap};
use std::time::{Duration, Instant};

/// Server-side keepalives of the lock's session: a leader cut off the
/// network (its session gone silent, not closed) loses the lock to another
/// replica within about idle + interval × count = 11 s, instead of the
/// operating system's two hours.
const LOCK_SESSION_KEEPALIVES: &str =
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3";
/// Longest the leader waits for its lock connection to answer before each
/// pass; past it, it stops leading rather than reap on a lock it may have
/// lost (a cut-off leader's session is ended by the server's keepalives).
const LOCK_CHECK: Duration = Duration::from_secs(3);

/// Why a leadership attempt or a reaper pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// The lock connection failed or Postgres refused the lock query (the
    /// attempt is retried after an interval).
    #[error("reaper lock connection failed")]
    Lock(#[source] tokio_postgres::Error),
    /// A query of the pass failed (the pass is tried again next interval).
    #[error("reaper pass failed")]
    Db(#[from] DbError),
    /// A liveness probe does not serialize: it is not sent at all, rather
    /// than sent as something that is no probe.
    #[error("liveness probe of {worker_id} does not serialize")]
    Probe {
        /// The worker the probe was for.
        worker_id: String,
        /// Why serialization failed.
        #[source]
        source: serde_json::Error,
    },
}

impl From<tokio_postgres::Error> for ReaperError {
    fn from(e: tokio_postgres::Error) -> Self {
        ReaperError::Db(e.into())
    }
}

/// Gauge that is 1 on the replica running the reaper and 0 on the others,
/// so operators (and the replica tests) see where leadership is.
const LEADER_GAUGE: &str = "reaper_leader";

/// Runs forever: wins leadership when it can, then reaps every interval
/// and runs retention's passes when they are due.
pub async fn run(database: PgTarget, flow: Flow, retention: RetentionConfig, firing: Firing) {
    let interval = flow.config.reaper_interval.max(Duration::from_millis(50));
    metrics::gauge!(LEADER_GAUGE).set(0.0);
    crate::schedules::describe_metrics();
    loop {
        match lead(&database, &flow, interval, retention, firing).await {
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "reaper leadership attempt failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Holds the lock and reaps until the lock connection fails. Returns at
/// once if another replica leads.
async fn lead(
    database: &PgTarget,
    flow: &Flow,
    interval: Duration,
    retention: RetentionConfig,
    firing: Firing,
) -> Result<(), ReaperError> {
    let (client, driver) = database.connect().await.map_err(ReaperError::Lock)?;
    let leader = match client.batch_execute(LOCK_SESSION_KEEPALIVES).await {
        Ok(()) => client
            .query_one(
                "SELECT pg_try_advisory_lock($1)",
                &[&AdvisoryLock::ReaperLeader.key()],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0)),
        Err(e) => Err(e),
    };
    if matches!(leader, Ok(true)) {
        tracing::info!("this controller now runs the reaper");
        metrics::gauge!(LEADER_GAUGE).set(1.0);
        let mut probes = Probes::default();
        let mut retention = crate::retention::Schedule::new(retention);
        while still_holds(&client).await {
            if let Err(e) = reap_once(flow, &mut probes).await {
                tracing::warn!(error = ?e, "reaper pass failed");
            }
            fire_schedules(flow, firing).await;
            retention.tick(&flow.db).await;
            if let Err(e) = crate::db::timeline::sample_queue_depth(&flow.db).await {
                tracing::warn!(error = ?e, "sampling the queue depth failed");
            }
            tokio::time::sleep(interval).await;
        }
        metrics::gauge!(LEADER_GAUGE).set(0.0);
        tracing::warn!("reaper leadership lost");
    }
    driver.abort();
    leader.map(|_| ()).map_err(ReaperError::Lock)
}

/// Fires the schedules' due ticks; the relay is woken when jobs were
/// submitted. A failure is logged and the ticks wait for the next pass.
async fn fire_schedules(flow: &Flow, firing: Firing) {
    match crate::schedules::fire_due(&flow.db, firing).await {
        Ok(0) => {}
        Ok(_) => flow.wake.notify_one(),
        Err(e) => tracing::warn!(error = ?e, "firing schedules failed"),
    }
}

/// Whether the lock connection still answers, within [`LOCK_CHECK`] (the
/// session, and so the lock, is then still ours).
async fn still_holds(client: &tokio_postgres::Client) -> bool {
    !client.is_closed()
        && matches!(
            tokio::time::timeout(LOCK_CHECK, client.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
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
///
/// The relay is woken only when the pass wrote to the outbox (a probe, a
/// retry): woken every pass, it polled an empty outbox once a second.
pub async fn reap_once(flow: &Flow, probes: &mut Probes) -> Result<(), ReaperError> {
    let mut client = flow.db.client().await?;
    allocations::expire_lapsed(&client).await?;
    let probed = probe_silent(flow, &client, probes).await?;
    let grace = flow.config.timeout_grace;
    let overdue = flow::overdue_jobs(&client, grace).await?;
    for &job_id in &overdue {
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
    if probed > 0 || !overdue.is_empty() {
        flow.wake.notify_one();
    }
    Ok(())
}

/// Writes a liveness probe into the outbox for every worker silent for a
/// heartbeat timeout that is due one; answers how many it wrote. A probe
/// that cannot be written as the message it is, is refused and logged,
/// never sent as something else.
async fn probe_silent(
    flow: &Flow,
    client: &impl GenericClient,
    probes: &mut Probes,
) -> Result<usize, ReaperError> {
    let timeout = flow.config.heartbeat_timeout;
    // While our own link is down (or only just back) a probe could not go
    // out anyway, and silence proves nothing.
    let heard = flow.status.up_for().is_some_and(|up| up >= timeout);
    if !heard {
        return Ok(0);
    }
    let mut written = 0;
    for (worker_id, since) in flow::stale_workers(client, timeout).await? {
        if !probes.due(&worker_id, timeout) {
            continue;
        }
        match probe_payload(worker_id, since) {
            Ok(payload) => {
                outbox::enqueue(client, EVENTS_EXCHANGE, EVENTS_ROUTING_KEY, &payload, 0, None).await?;
                written += 1;
            }
            Err(e) => tracing::error!(error = %e, "liveness probe refused"),
        }
    }
    Ok(written)
}

/// The outbox payload of a liveness probe of `worker_id`, silent since
/// `since`.
fn probe_payload(worker_id: String, since: DateTime<Utc>) -> Result<serde_json::Value, ReaperError> {
    let probe = AgentEvent::LivenessProbe {
        worker_id: worker_id.clone(),
        since,
    };
    serde_json::to_value(&probe).map_err(|source| ReaperError::Probe { worker_id, source })
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

    #[test]
    fn a_probe_is_written_as_the_probe_it_is() {
        let since = chrono::DateTime::UNIX_EPOCH;
        let payload = probe_payload("w-1".to_owned(), since).unwrap();
        let back: AgentEvent = serde_json::from_value(payload).unwrap();
        let expected = AgentEvent::LivenessProbe {
            worker_id: "w-1".to_owned(),
            since,
        };
        assert_eq!(back, expected);
    }
}
