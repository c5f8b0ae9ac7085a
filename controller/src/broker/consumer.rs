//! The agent-event consumer: gathers deliveries from the events queue into
//! batches (the first delivery, then whatever else arrives within the
//! batch window, up to the batch's most events: a delivery carries one
//! event or, from a busy agent, an array of them), drops heartbeats a
//! newer one of the same agent supersedes, has the batch applied and
//! acknowledges it with one multiple ack once its effect is committed. An
//! event whose sender may not send it (`super::senders`) is dropped before
//! the batch is applied.

use super::apply::apply_held;
use super::Flow;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use orchestrator_shared::messages::{decode_events, AgentEvent, EventsError};
use std::collections::HashSet;
use std::time::Duration;

/// Fewest unacknowledged events the controller lets the broker push to it,
/// so deliveries keep streaming in even when batching is turned down.
const EVENTS_PREFETCH: u16 = 256;
/// Batches' worth of events the broker may push ahead of the consumer: the
/// next batch is already here when the current one is acknowledged.
const EVENTS_PREFETCH_BATCHES: u16 = 2;
/// Counts the events applied and the messages that carried them, so that
/// how many reports agents gather into one message can be read off
/// `/metrics` (the benchmarks print it).
pub const EVENTS_METRIC: &str = "broker_events_received_total";
/// See [`EVENTS_METRIC`].
pub const MESSAGES_METRIC: &str = "broker_event_messages_received_total";

/// Unacknowledged events the controller holds at once for batches of at
/// most `batch_max`: enough for a full batch and the next one.
pub fn events_prefetch(batch_max: u16) -> u16 {
    batch_max
        .saturating_mul(EVENTS_PREFETCH_BATCHES)
        .max(EVENTS_PREFETCH)
}

/// One delivery and the events it carries (or why it carries none).
struct Received {
    /// The delivery, to acknowledge or reject.
    delivery: Delivery,
    /// Its events, in order.
    events: Result<Vec<AgentEvent>, EventsError>,
}

impl Received {
    fn new(delivery: Delivery) -> Self {
        let events = decode_events(&delivery.data);
        Received { delivery, events }
    }

    /// How many events it adds to its batch.
    fn len(&self) -> usize {
        self.events.as_ref().map_or(0, Vec::len)
    }
}

/// Consumes and settles events batch after batch until the consumer ends
/// (always an error: the connection is then re-established).
pub(super) async fn consume_events(flow: &Flow, mut consumer: lapin::Consumer) -> Result<(), lapin::Error> {
    super::senders::register_metrics();
    metrics::describe_counter!(EVENTS_METRIC, "Agent events received from the events queue.");
    metrics::describe_counter!(
        MESSAGES_METRIC,
        "Messages that carried them (one event, or several)."
    );
    let max = usize::from(flow.config.event_batch_max.max(1));
    let window = flow.config.event_batch_window;
    while let Some(deliveries) = next_batch(&mut consumer, max, window).await? {
        handle_batch(flow, deliveries).await?;
    }
    Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
        lapin::ConnectionState::Closed,
    )))
}

/// Waits for one delivery, then takes whatever else arrives within
/// `window` of it, until the batch holds `max` events or more (a message
/// holds at most `MAX_EVENTS_PER_MESSAGE`, so a batch stays within
/// `max` plus that). `None` once the consumer has ended.
async fn next_batch(
    consumer: &mut lapin::Consumer,
    max: usize,
    window: Duration,
) -> Result<Option<Vec<Received>>, lapin::Error> {
    let Some(first) = consumer.next().await else {
        return Ok(None);
    };
    let first = Received::new(first?);
    let mut events = first.len();
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + window;
    while events < max {
        // `next` is cancel-safe: a delivery is taken only when ready, so
        // the timeout never loses one.
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(delivery)) => {
                let received = Received::new(delivery?);
                events += received.len();
                batch.push(received);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Some(batch))
}

/// Settles one batch of deliveries: malformed ones are rejected at once
/// (they never reach the database); events their sender may not send are
/// dropped; the others are applied, and only once their outcome is
/// committed acknowledged with one multiple ack on the last well-formed
/// delivery. The channel carries only this consumer and batches are
/// handled one after the other, so that ack covers exactly this batch's
/// well-formed deliveries, dropped ones included (the rejected ones are
/// settled already).
async fn handle_batch(flow: &Flow, deliveries: Vec<Received>) -> Result<(), lapin::Error> {
    let mut events = Vec::with_capacity(deliveries.len());
    let (mut messages, mut carried_events) = (0u64, 0u64);
    let mut last = None;
    for Received {
        delivery,
        events: carried,
    } in deliveries
    {
        match carried {
            Ok(carried) => {
                messages += 1;
                carried_events += carried.len() as u64;
                let sender = delivery.properties.user_id().as_ref();
                events.extend(carried.into_iter().filter(|e| flow.senders.admits(sender, e)));
                last = Some(delivery);
            }
            Err(e) => {
                tracing::warn!(error = %e, "dropping a malformed agent event");
                delivery.reject(BasicRejectOptions { requeue: false }).await?;
            }
        }
    }
    // Once a batch, not once a delivery: each `counter!` is a registry lookup.
    metrics::counter!(MESSAGES_METRIC).increment(messages);
    metrics::counter!(EVENTS_METRIC).increment(carried_events);
    let Some(last) = last else {
        return Ok(());
    };
    let received = events.len();
    let events = coalesce_heartbeats(events);
    tracing::debug!(received, applied = events.len(), "agent event batch");
    if !events.is_empty() && apply_held(flow, &events).await {
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

#[cfg(test)]
mod tests {
    use super::*;

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
                generation: 1,
            },
            1 => AgentEvent::Stopped {
                worker_id,
                generation: 1,
            },
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
            | AgentEvent::Stopped { worker_id, .. }
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
