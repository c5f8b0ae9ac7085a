//! The controller's side of RabbitMQ: one supervised connection that
//! declares the topology, runs the outbox relay (publish with confirms, then
//! mark sent) and consumes agents' events in batches (apply them all in one
//! transaction, commit, then ack). Any
//! broker error drops the connection and reconnects with capped backoff;
//! nothing is lost, because the outbox row stays unsent and the event stays
//! unacknowledged until their effect is recorded.

use crate::config::FlowConfig;
use crate::db::flow::{self, Finished, RetryPolicy};
use crate::db::{jobs, outbox, Database, DbError};
use deadpool_postgres::Transaction;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{FieldTable, ShortString};
use orchestrator_shared::broker::{broker_uri, declare, persistent};
use orchestrator_shared::messages::{AgentEvent, Topology, WORK_EXCHANGE};
use std::collections::HashSet;
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
/// Fewest unacknowledged events the controller lets the broker push to it,
/// so deliveries keep streaming in even when batching is turned down.
const EVENTS_PREFETCH: u16 = 256;
/// Batches' worth of events the broker may push ahead of the consumer: the
/// next batch is already here when the current one is acknowledged.
const EVENTS_PREFETCH_BATCHES: u16 = 2;
/// Wait before trying again to apply events Postgres could not take.
const HOLD_RETRY: Duration = Duration::from_secs(1);
/// Extra tries of an event that lost a deadlock or a serialization
/// conflict: the other transaction has finished by then, and a report
/// dropped for a conflict would leave its job running.
const TRANSIENT_RETRIES: u32 = 3;

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

/// Unacknowledged events the controller holds at once for batches of at
/// most `batch_max`: enough for a full batch and the next one.
pub fn events_prefetch(batch_max: u16) -> u16 {
    batch_max
        .saturating_mul(EVENTS_PREFETCH_BATCHES)
        .max(EVENTS_PREFETCH)
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
    let conn =
        lapin::Connection::connect_uri(broker_uri(url)?, lapin::ConnectionProperties::default()).await?;
    let setup = conn.create_channel().await?;
    if let Err(e) = declare(&setup, &flow.topology).await {
        tracing::error!(error = %e, "declaring the broker topology failed");
        return Ok(());
    }
    let publish = conn.create_channel().await?;
    publish.confirm_select(Default::default()).await?;
    let consume = conn.create_channel().await?;
    consume
        .basic_qos(
            events_prefetch(flow.config.event_batch_max),
            BasicQosOptions::default(),
        )
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
    let max = usize::from(flow.config.event_batch_max.max(1));
    let window = Duration::from_millis(flow.config.event_batch_window_ms);
    while let Some(deliveries) = next_batch(&mut consumer, max, window).await? {
        handle_batch(flow, deliveries).await?;
    }
    Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
        lapin::ConnectionState::Closed,
    )))
}

/// Waits for one delivery, then takes whatever else arrives within
/// `window` of it, up to `max` in all. `None` once the consumer has ended.
async fn next_batch(
    consumer: &mut lapin::Consumer,
    max: usize,
    window: Duration,
) -> Result<Option<Vec<Delivery>>, lapin::Error> {
    let Some(first) = consumer.next().await else {
        return Ok(None);
    };
    let mut batch = vec![first?];
    let deadline = tokio::time::Instant::now() + window;
    while batch.len() < max {
        // `next` is cancel-safe: a delivery is taken only when ready, so
        // the timeout never loses one.
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(delivery)) => batch.push(delivery?),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Some(batch))
}

/// Settles one batch of deliveries: malformed ones are rejected at once
/// (they never reach the database); the others are applied, and only once
/// their outcome is committed acknowledged with one multiple ack on the
/// last of them. The channel carries only this consumer and batches are
/// handled one after the other, so that ack covers exactly this batch's
/// well-formed deliveries (the rejected ones are settled already).
async fn handle_batch(flow: &Flow, deliveries: Vec<Delivery>) -> Result<(), lapin::Error> {
    let mut events = Vec::with_capacity(deliveries.len());
    let mut last = None;
    for delivery in deliveries {
        match serde_json::from_slice::<AgentEvent>(&delivery.data) {
            Ok(event) => {
                events.push(event);
                last = Some(delivery);
            }
            Err(e) => {
                tracing::warn!(error = %e, "dropping a malformed agent event");
                delivery.reject(BasicRejectOptions { requeue: false }).await?;
            }
        }
    }
    let Some(last) = last else {
        return Ok(());
    };
    let received = events.len();
    let events = coalesce_heartbeats(events);
    tracing::debug!(received, applied = events.len(), "agent event batch");
    if apply_held(flow, &events).await {
        flow.wake.notify_one();
    }
    last.ack(BasicAckOptions { multiple: true }).await?;
    Ok(())
}

/// Drops every heartbeat that a later heartbeat of the same worker in the
/// same batch supersedes: a heartbeat carries the agent's whole state, so
/// only the newest one matters. A liveness probe of the worker is a
/// barrier (the probe must see the heartbeats sent before it, so the
/// newest of those stays too). Everything else, and the order of what is
/// kept, is unchanged (a worker's report and then its `Stopped` still
/// apply in that order).
fn coalesce_heartbeats(events: Vec<AgentEvent>) -> Vec<AgentEvent> {
    let mut newer: HashSet<&str> = HashSet::new();
    let mut keep: Vec<bool> = events
        .iter()
        .rev()
        .map(|event| match event {
            AgentEvent::Heartbeat { worker_id, .. } => newer.insert(worker_id.as_str()),
            AgentEvent::LivenessProbe { worker_id, .. } => {
                newer.remove(worker_id.as_str());
                true
            }
            _ => true,
        })
        .collect();
    keep.reverse();
    events
        .into_iter()
        .zip(keep)
        .filter_map(|(event, keep)| keep.then_some(event))
        .collect()
}

/// Applies `events` and returns whether a shard report was among them (the
/// relay may have outbox rows to send). First all in one transaction; while
/// Postgres is unavailable the batch is held and tried again; if it fails
/// for any other reason (an event Postgres or the state machines refuse, a
/// deadlock), each event is applied in its own transaction, so one bad
/// event costs its batch one fallback and never stalls the queue.
async fn apply_held(flow: &Flow, events: &[AgentEvent]) -> bool {
    loop {
        match apply_batch(flow, events).await {
            Ok(finished) => return finished,
            Err(e) if e.is_unavailable() => {
                tracing::warn!(
                    events = events.len(),
                    "database unavailable; holding the agent events"
                );
                tokio::time::sleep(HOLD_RETRY).await;
            }
            Err(e) => {
                tracing::warn!(error = ?e, events = events.len(), "event batch failed; applying one by one");
                break;
            }
        }
    }
    let mut finished = false;
    for event in events {
        finished |= apply_one_held(flow, event).await;
    }
    finished
}

/// Applies a batch in one transaction and one commit, in order. Any error
/// rolls the whole batch back (the caller decides what next). No savepoint
/// per event: refused events are rare, and two round trips per event for
/// savepoints were a third of a report's cost.
async fn apply_batch(flow: &Flow, events: &[AgentEvent]) -> Result<bool, DbError> {
    let mut client = flow.db.client().await?;
    let tx = client.transaction().await?;
    let mut finished = false;
    for event in events {
        finished |= apply_in(&tx, event, flow.retry()).await?;
    }
    tx.commit().await?;
    Ok(finished)
}

/// Applies one event in its own transaction, holding it while Postgres is
/// unavailable and trying a transient conflict again a few times; any other
/// failure is logged and the event dropped. Returns whether it was an
/// applied shard report.
async fn apply_one_held(flow: &Flow, event: &AgentEvent) -> bool {
    let mut conflicts = 0;
    loop {
        match apply_event(flow, event).await {
            Ok(report) => return report,
            Err(e) if e.is_unavailable() => {
                tracing::warn!("database unavailable; holding the agent event");
                tokio::time::sleep(HOLD_RETRY).await;
            }
            Err(e) if e.is_transient() && conflicts < TRANSIENT_RETRIES => {
                conflicts += 1;
                tracing::debug!(error = ?e, conflicts, "agent event conflicted; trying again");
            }
            Err(e) => {
                tracing::error!(error = ?e, ?event, "agent event could not be applied");
                return false;
            }
        }
    }
}

/// Applies one agent event in its own transaction (the fallback when its
/// batch could not commit). Returns whether it was a shard report, after
/// which the caller wakes the relay.
pub async fn apply_event(flow: &Flow, event: &AgentEvent) -> Result<bool, DbError> {
    let mut client = flow.db.client().await?;
    let tx = client.transaction().await?;
    let report = apply_in(&tx, event, flow.retry()).await?;
    tx.commit().await?;
    Ok(report)
}

/// Applies one agent event inside `tx` (a batch's or its own
/// transaction). Returns whether it may have written outbox rows (a shard report,
/// or a probe that found a lost worker's jobs).
async fn apply_in(tx: &Transaction<'_>, event: &AgentEvent, retry: RetryPolicy) -> Result<bool, DbError> {
    match event {
        AgentEvent::Heartbeat {
            worker_id,
            running,
            paused,
        } => flow::heartbeat(tx, worker_id, running.len(), *paused)
            .await
            .map(|()| false),
        AgentEvent::Stopped { worker_id } => flow::stopped(tx, worker_id).await.map(|()| false),
        AgentEvent::LivenessProbe { worker_id, since } => flow::probe(tx, worker_id, *since, retry)
            .await
            .map(|jobs| jobs > 0),
        AgentEvent::ShardFinished { .. } => {
            let Some(finished) = shard_report(event) else {
                return Ok(false);
            };
            let what = flow::finish(tx, &finished, retry).await?;
            let (job_id, attempt, shard) = (finished.job_id, finished.attempt, finished.shard_index);
            tracing::debug!(%job_id, attempt, shard_index = shard, what, "shard report applied");
            Ok(true)
        }
    }
}

/// The shard report inside a `ShardFinished` event.
fn shard_report(event: &AgentEvent) -> Option<Finished> {
    let AgentEvent::ShardFinished {
        worker_id,
        job_id,
        attempt,
        shard_index,
        outcome,
        exit_code,
        stdout_tail,
        stderr_tail,
        error,
    } = event
    else {
        return None;
    };
    Some(Finished {
        worker_id: worker_id.clone(),
        job_id: *job_id,
        attempt: *attempt,
        shard_index: *shard_index,
        outcome: *outcome,
        exit_code: *exit_code,
        stdout_tail: stdout_tail.clone(),
        stderr_tail: stderr_tail.clone(),
        error: error.clone(),
    })
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

    #[test]
    fn prefetch_holds_two_batches_and_never_shrinks_below_the_old_value() {
        assert_eq!(events_prefetch(256), 512);
        assert_eq!(events_prefetch(1), EVENTS_PREFETCH);
        assert_eq!(events_prefetch(u16::MAX), u16::MAX);
    }

    /// Events whose position in the input is readable back: the sequence
    /// number rides in a field each kind has.
    fn event(kind: u8, worker: u8, seq: i32) -> AgentEvent {
        let worker_id = format!("w{worker}");
        match kind {
            0 => AgentEvent::Heartbeat {
                worker_id,
                running: vec![orchestrator_shared::messages::RunningShard {
                    job_id: uuid::Uuid::nil(),
                    attempt: 1,
                    shard_index: seq,
                }],
                paused: false,
            },
            1 => AgentEvent::Stopped { worker_id },
            3 => AgentEvent::LivenessProbe {
                worker_id,
                since: chrono::DateTime::UNIX_EPOCH,
            },
            _ => AgentEvent::ShardFinished {
                worker_id,
                job_id: uuid::Uuid::nil(),
                attempt: 1,
                shard_index: seq,
                outcome: orchestrator_shared::messages::ShardOutcome::Succeeded,
                exit_code: Some(0),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
                error: None,
            },
        }
    }

    fn worker(e: &AgentEvent) -> &str {
        match e {
            AgentEvent::Heartbeat { worker_id, .. }
            | AgentEvent::Stopped { worker_id }
            | AgentEvent::LivenessProbe { worker_id, .. }
            | AgentEvent::ShardFinished { worker_id, .. } => worker_id,
        }
    }

    fn is_heartbeat(e: &AgentEvent) -> bool {
        matches!(e, AgentEvent::Heartbeat { .. })
    }

    fn is_probe(e: &AgentEvent) -> bool {
        matches!(e, AgentEvent::LivenessProbe { .. })
    }

    #[test]
    fn a_heartbeat_before_a_probe_of_its_worker_is_kept() {
        let input = vec![event(0, 1, 0), event(3, 1, 1), event(0, 1, 2)];
        assert_eq!(coalesce_heartbeats(input.clone()), input);
    }

    #[test]
    fn only_the_newest_heartbeat_of_each_worker_survives_in_place() {
        let input = vec![
            event(0, 1, 0),
            event(2, 1, 1),
            event(0, 2, 2),
            event(0, 1, 3),
            event(1, 1, 4),
        ];
        let kept = coalesce_heartbeats(input.clone());
        assert_eq!(
            kept,
            vec![
                input[1].clone(),
                input[2].clone(),
                input[3].clone(),
                input[4].clone()
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn coalescing_keeps_order_and_the_newest_heartbeat_per_worker(
            spec in proptest::collection::vec((0u8..4, 0u8..4), 0..60)
        ) {
            let input: Vec<AgentEvent> = spec
                .iter()
                .zip(0..)
                .map(|(&(kind, w), seq)| event(kind, w, seq))
                .collect();
            let kept = coalesce_heartbeats(input.clone());
            // A subsequence of the input: nothing reordered, nothing invented.
            let mut rest = input.iter();
            for k in &kept {
                proptest::prop_assert!(rest.any(|e| e == k), "reordered or invented: {k:?}");
            }
            for w in 0..4u8 {
                let name = format!("w{w}");
                let of = |v: &[AgentEvent]| -> Vec<AgentEvent> {
                    v.iter().filter(|e| worker(e) == name).cloned().collect()
                };
                let (before, after) = (of(&input), of(&kept));
                let others = |v: &[AgentEvent]| -> Vec<AgentEvent> {
                    v.iter().filter(|e| !is_heartbeat(e)).cloned().collect()
                };
                proptest::prop_assert_eq!(others(&before), others(&after));
                // A probe of the worker is a barrier: the newest heartbeat
                // before it and the newest after it both survive.
                let newest: Vec<AgentEvent> = before
                    .split(is_probe)
                    .filter_map(|segment| segment.iter().rev().find(|e| is_heartbeat(e)).cloned())
                    .collect();
                let beats: Vec<AgentEvent> = after.iter().filter(|e| is_heartbeat(e)).cloned().collect();
                proptest::prop_assert_eq!(beats, newest);
            }
        }
    }
}
