//! The controller's side of RabbitMQ: one supervised connection that
//! declares the topology, runs the outbox relay (publish with confirms, then
//! mark sent) and consumes agents' events (apply, commit, then ack). Any
//! broker error drops the connection and reconnects with capped backoff;
//! nothing is lost, because the outbox row stays unsent and the event stays
//! unacknowledged until their effect is recorded.

use crate::config::FlowConfig;
use crate::db::flow::{self, Finished, RetryPolicy};
use crate::db::{jobs, outbox, Database, DbError};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{FieldTable, ShortString};
use orchestrator_shared::broker::{declare, persistent};
use orchestrator_shared::messages::{AgentEvent, Topology, WORK_EXCHANGE};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Shortest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts (a restarted broker is found
/// within this long of coming back).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Outbox rows published per transaction.
const RELAY_BATCH: i64 = 500;
/// Unacknowledged events the controller holds at once.
const EVENTS_PREFETCH: u16 = 256;

/// Whether the broker connection is open, and since when. Cheap to clone.
#[derive(Clone, Default)]
pub struct BrokerStatus(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl BrokerStatus {
    /// True while a connection is open and the topology declared.
    pub fn is_up(&self) -> bool {
        self.up_for().is_some()
    }

    /// How long the current connection has been up (`None`: down). The
    /// reaper trusts missing heartbeats (which travel through the broker)
    /// only after its own link has been up for a whole heartbeat timeout.
    pub fn up_for(&self) -> Option<Duration> {
        self.0.lock().ok().and_then(|g| g.map(|since| since.elapsed()))
    }

    fn set(&self, up: bool) {
        if let Ok(mut g) = self.0.lock() {
            match (up, g.is_some()) {
                (true, false) => *g = Some(std::time::Instant::now()),
                (false, _) => *g = None,
                _ => {}
            }
        }
    }
}

/// The wait before reconnection attempt `n` (0-based): doubling from
/// [`MIN_BACKOFF`], capped at [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX_BACKOFF)
}

/// What the broker side needs, shared by its tasks.
#[derive(Clone)]
pub struct Flow {
    /// Postgres.
    pub db: Database,
    /// Broker names.
    pub topology: Topology,
    /// Timings.
    pub config: FlowConfig,
    /// Woken after a commit that wrote outbox rows, so they go out at once.
    pub wake: Arc<Notify>,
    /// Connection state for `/readyz`.
    pub status: BrokerStatus,
}

impl Flow {
    /// Retry timing from the configuration.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(self.config.retry_base_ms),
            max: Duration::from_millis(self.config.retry_max_ms),
        }
    }
}

/// Keeps a connection to `url` and its relay and consumer running until
/// the task is dropped.
pub async fn supervise(url: String, flow: Flow) {
    let mut attempt = 0;
    loop {
        if let Err(e) = connect_and_run(&url, &flow, &mut attempt).await {
            tracing::warn!(error = %e, attempt, "broker connection ended");
        }
        flow.status.set(false);
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

async fn connect_and_run(url: &str, flow: &Flow, attempt: &mut u32) -> Result<(), lapin::Error> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let setup = conn.create_channel().await?;
    if let Err(e) = declare(&setup, &flow.topology).await {
        tracing::error!(error = %e, "declaring the broker topology failed");
        return Ok(());
    }
    let publish = conn.create_channel().await?;
    publish.confirm_select(Default::default()).await?;
    let consume = conn.create_channel().await?;
    consume
        .basic_qos(EVENTS_PREFETCH, BasicQosOptions::default())
        .await?;
    let queue = ShortString::from(flow.topology.events_queue());
    let tag = ShortString::from(format!("controller-{}", uuid::Uuid::new_v4().simple()));
    let consumer = consume
        .basic_consume(queue, tag, BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    tracing::info!("broker connected, topology declared");
    flow.status.set(true);
    *attempt = 0;
    tokio::select! {
        r = relay(flow, &publish) => r,
        r = consume_events(flow, consumer) => r,
    }
}

/// A relay step failed: a database problem (wait and go on) or a broker
/// problem (reconnect).
enum StepError {
    Db(DbError),
    Broker(lapin::Error),
}

impl From<DbError> for StepError {
    fn from(e: DbError) -> Self {
        StepError::Db(e)
    }
}

impl From<tokio_postgres::Error> for StepError {
    fn from(e: tokio_postgres::Error) -> Self {
        StepError::Db(e.into())
    }
}

impl From<lapin::Error> for StepError {
    fn from(e: lapin::Error) -> Self {
        StepError::Broker(e)
    }
}

async fn relay(flow: &Flow, ch: &lapin::Channel) -> Result<(), lapin::Error> {
    let poll = Duration::from_millis(flow.config.relay_poll_ms);
    loop {
        match relay_batch(flow, ch).await {
            Ok(0) => {
                tokio::select! {
                    () = flow.wake.notified() => {},
                    () = tokio::time::sleep(poll) => {},
                }
            }
            Ok(_) => {}
            Err(StepError::Db(e)) => {
                tracing::warn!(error = ?e, "outbox relay: database error");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(StepError::Broker(e)) => return Err(e),
        }
    }
}

/// Publishes one batch of due outbox rows, waits for every confirm, then
/// marks them sent (and their jobs queued) in the same transaction.
async fn relay_batch(flow: &Flow, ch: &lapin::Channel) -> Result<usize, StepError> {
    let mut client = flow.db.client().await?;
    let tx = client.transaction().await?;
    let messages = outbox::claim_due(&tx, RELAY_BATCH).await?;
    if messages.is_empty() {
        return Ok(0);
    }
    let mut confirms = Vec::with_capacity(messages.len());
    for m in &messages {
        let body = serde_json::to_vec(&m.payload).unwrap_or_default();
        let exchange = ShortString::try_new(flow.topology.exchange(&m.exchange)).unwrap_or_default();
        let key = ShortString::try_new(m.routing_key.clone()).unwrap_or_default();
        let priority = u8::try_from(m.priority).unwrap_or(0);
        let props = persistent(priority);
        confirms.push(
            ch.basic_publish(exchange, key, BasicPublishOptions::default(), &body, props)
                .await?,
        );
    }
    for confirm in confirms {
        if !confirm.await?.is_ack() {
            tracing::warn!("broker refused a message; the batch will be published again");
            return Ok(0);
        }
    }
    let ids: Vec<i64> = messages.iter().map(|m| m.message_id).collect();
    let job_ids: Vec<uuid::Uuid> = messages
        .iter()
        .filter(|m| m.exchange == WORK_EXCHANGE)
        .filter_map(|m| m.job_id)
        .collect();
    outbox::mark_sent(&tx, &ids).await?;
    jobs::mark_queued(&tx, &job_ids).await?;
    tx.commit().await?;
    Ok(messages.len())
}

async fn consume_events(flow: &Flow, mut consumer: lapin::Consumer) -> Result<(), lapin::Error> {
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let event: AgentEvent = match serde_json::from_slice(&delivery.data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "dropping a malformed agent event");
                delivery.reject(BasicRejectOptions { requeue: false }).await?;
                continue;
            }
        };
        loop {
            match apply_event(flow, &event).await {
                Ok(()) => break,
                Err(e) if e.is_unavailable() => {
                    tracing::warn!("database unavailable; holding the agent event");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(error = ?e, ?event, "agent event could not be applied");
                    break;
                }
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
        lapin::ConnectionState::Closed,
    )))
}

/// Applies one agent event in its own transaction.
pub async fn apply_event(flow: &Flow, event: &AgentEvent) -> Result<(), DbError> {
    let mut client = flow.db.client().await?;
    match event {
        AgentEvent::Heartbeat {
            worker_id,
            running,
            paused,
        } => flow::heartbeat(&client, worker_id, running.len(), *paused).await,
        AgentEvent::Stopped { worker_id } => flow::stopped(&client, worker_id).await,
        AgentEvent::ShardFinished {
            worker_id,
            job_id,
            attempt,
            shard_index,
            outcome,
            exit_code,
            stdout_tail,
            stderr_tail,
            error,
        } => {
            let finished = Finished {
                worker_id: worker_id.clone(),
                job_id: *job_id,
                attempt: *attempt,
                shard_index: *shard_index,
                outcome: *outcome,
                exit_code: *exit_code,
                stdout_tail: stdout_tail.clone(),
                stderr_tail: stderr_tail.clone(),
                error: error.clone(),
            };
            let tx = client.transaction().await?;
            let what = flow::finish(&tx, &finished, flow.retry()).await?;
            tx.commit().await?;
            flow.wake.notify_one();
            tracing::debug!(%job_id, attempt, shard_index, what, "shard report applied");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(0), MIN_BACKOFF);
        assert_eq!(backoff(1), MIN_BACKOFF * 2);
        assert_eq!(backoff(3), MIN_BACKOFF * 8);
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
