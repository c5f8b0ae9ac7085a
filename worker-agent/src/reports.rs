//! Shard reports gathered into messages. Each report published alone is a
//! message for the broker to store, confirm, deliver and have acknowledged,
//! and a delivery for the controller; on a busy agent that was about half
//! of the broker's work per job. When the controller takes batches
//! (`Registration::event_batches`), reports take turns ([`orchestrator_shared::batches`]):
//! at most [`IN_FLIGHT`] messages wait for their confirm at once, and
//! whoever gets a turn publishes every report finished by then as one
//! message. A lone report still goes out at once, alone. Every report of a
//! message shares its fate: all confirmed, or (an agent draining with the
//! broker unreachable) all given up, their deliveries left unacknowledged.

use crate::publisher::{PublishError, Publisher};
use orchestrator_shared::batches::Batches;
use orchestrator_shared::messages::{AgentEvent, MAX_EVENTS_PER_MESSAGE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Messages waiting for their confirm at once: two, so the next batch
/// gathers while one is being confirmed and a slow confirm does not stop
/// every report.
const IN_FLIGHT: usize = 2;
/// Most bytes of output (the reports' tails and errors) in one message: a
/// report may carry two 64 KiB tails, and a batch of them must stay a
/// message the broker and the controller handle in passing.
const MAX_MESSAGE_OUTPUT: usize = 1024 * 1024;

/// What a report learns: confirmed, or why the agent gave up on it.
pub type ReportResult = Result<(), Arc<PublishError>>;

/// A report waiting for its turn.
pub struct Report {
    /// The `ShardFinished` event.
    event: AgentEvent,
    /// Its job's priority (the message takes its batch's highest).
    priority: u8,
}

/// The agent's shard reports, batched when the controller takes batches.
pub struct Reports {
    /// Reports waiting for a turn.
    batches: Batches<Report, ReportResult>,
    /// Whether the controller this agent registered with takes several
    /// events in one message.
    batched: AtomicBool,
}

impl Reports {
    /// Reports sent one message each until [`Reports::set_batched`].
    pub fn new() -> Self {
        Reports {
            batches: Batches::new(
                IN_FLIGHT,
                MAX_EVENTS_PER_MESSAGE,
                MAX_MESSAGE_OUTPUT,
                output_bytes,
            ),
            batched: AtomicBool::new(false),
        }
    }

    /// Follows the latest registration answer: whether its controller
    /// takes several events in one message.
    pub fn set_batched(&self, batched: bool) {
        self.batched.store(batched, Ordering::Relaxed);
    }

    /// Publishes `event` until the broker confirms it (see
    /// [`Publisher::publish_reliably`] for `stopping` and `window`), in one
    /// message with whatever other reports are waiting.
    pub async fn publish(
        &self,
        publisher: &Publisher,
        event: AgentEvent,
        priority: u8,
        stopping: &watch::Sender<bool>,
        window: Duration,
    ) -> ReportResult {
        if !self.batched.load(Ordering::Relaxed) {
            let one = std::slice::from_ref(&event);
            return publisher
                .publish_reliably(one, priority, stopping, window)
                .await
                .map_err(Arc::new);
        }
        let send = |batch: Vec<Report>| async move {
            let priority = batch.iter().map(|r| r.priority).max().unwrap_or(0);
            let events: Vec<AgentEvent> = batch.into_iter().map(|r| r.event).collect();
            let result = publisher
                .publish_reliably(&events, priority, stopping, window)
                .await
                .map_err(Arc::new);
            vec![result; events.len()]
        };
        self.batches
            .submit(Report { event, priority }, send)
            .await
            .unwrap_or_else(|| Err(Arc::new(PublishError::NotConnected)))
    }
}

impl Default for Reports {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports")
            .field("batched", &self.batched.load(Ordering::Relaxed))
            .field("queued", &self.batches.queued())
            .finish()
    }
}

/// A report's weight in its message: the output it carries.
fn output_bytes(report: &Report) -> usize {
    match &report.event {
        AgentEvent::ShardFinished {
            stdout_tail,
            stderr_tail,
            error,
            ..
        } => stdout_tail.len() + stderr_tail.len() + error.as_ref().map_or(0, String::len),
        _ => 0,
    }
}
