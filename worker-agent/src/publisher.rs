//! Publishing [`AgentEvent`]s to the events exchange with publisher
//! confirms, on whichever broker connection is current. Connections come
//! and go (the session supervisor swaps the channel in and out); a report
//! that must arrive is retried until the broker confirms it, so a finished
//! shard is acknowledged only once the controller is sure to hear of it.
//! Every event carries the connection's broker user as its `user_id`:
//! RabbitMQ refuses a message whose `user_id` is not its publisher's, and
//! the controller applies an event about this worker only from its user.

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::Channel;
use orchestrator_shared::backoff::backoff;
use orchestrator_shared::broker::{persistent, EVENTS_ROUTING_KEY};
use orchestrator_shared::messages::{encode_events, AgentEvent, Topology};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest wait for one publish and its confirm; past it the connection is
/// presumed dead and the message is published again.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a publish did not get a positive confirm.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No broker connection right now.
    #[error("not connected to the broker")]
    NotConnected,
    /// The broker or the connection failed.
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message (negative confirm).
    #[error("the broker refused the message")]
    Nacked,
    /// No confirm within [`PUBLISH_TIMEOUT`].
    #[error("no confirm within {0:?}")]
    TimedOut(Duration),
    /// The event could not be encoded.
    #[error("encoding the event: {0}")]
    Encode(#[from] serde_json::Error),
    /// A name is longer than AMQP allows.
    #[error("broker name too long: {0}")]
    NameTooLong(String),
}

/// A session's way out: its confirm-mode channel and the broker user it
/// is logged in as.
#[derive(Debug, Clone)]
pub struct Link {
    /// The publishing channel, in confirm mode.
    pub channel: Channel,
    /// The `user_id` stamped on every event: the agent's own broker user,
    /// or `None` on a shared broker login (which stamps nothing, as before).
    pub user_id: Option<ShortString>,
}

/// Publishes agent events on the current confirm-mode channel.
#[derive(Debug)]
pub struct Publisher {
    /// The current session's link, if any.
    channel: watch::Sender<Option<Link>>,
    /// The events exchange.
    exchange: ShortString,
    /// Routing key of agent events.
    routing_key: ShortString,
}

impl Publisher {
    /// A publisher with no channel yet, for `topology`'s events exchange.
    pub fn new(topology: &Topology) -> Result<Self, PublishError> {
        let exchange = topology.events_exchange();
        let exchange =
            ShortString::try_new(exchange.clone()).map_err(|_| PublishError::NameTooLong(exchange))?;
        Ok(Publisher {
            channel: watch::channel(None).0,
            exchange,
            routing_key: ShortString::from(EVENTS_ROUTING_KEY),
        })
    }

    /// Switches to a new session's link (`None` while disconnected).
    pub fn set_channel(&self, link: Option<Link>) {
        self.channel.send_replace(link);
    }

    /// Whether a channel is available now.
    pub fn is_connected(&self) -> bool {
        self.channel.borrow().is_some()
    }

    /// One attempt: publish, wait for the confirm.
    pub async fn publish_once(&self, event: &AgentEvent, priority: u8) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(event)?;
        self.publish_payload(&payload, priority).await
    }

    /// Publishes `events` (in that order, as one message) until the broker
    /// confirms. While the agent is not stopping it never gives up; once
    /// `stopping` is set, it gives up after failing for `window` (the
    /// deliveries then stay unacknowledged, and the broker hands them out
    /// again). Several events need a controller that takes batches
    /// (`Registration::event_batches`).
    pub async fn publish_reliably(
        &self,
        events: &[AgentEvent],
        priority: u8,
        stopping: &watch::Sender<bool>,
        window: Duration,
    ) -> Result<(), PublishError> {
        let payload = encode_events(events)?;
        let mut changes = self.channel.subscribe();
        let mut give_up_at: Option<Instant> = None;
        let mut attempt = 0u32;
        loop {
            let error = match self.publish_payload(&payload, priority).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if *stopping.borrow() {
                let at = *give_up_at.get_or_insert_with(|| Instant::now() + window);
                if Instant::now() >= at {
                    return Err(error);
                }
            }
            tracing::warn!(%error, attempt, "publishing an agent event failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff(attempt)) => {}
                _ = changes.changed() => {}
            }
            attempt = attempt.saturating_add(1);
        }
    }

    async fn publish_payload(&self, payload: &[u8], priority: u8) -> Result<(), PublishError> {
        let link = self.channel.borrow().clone().ok_or(PublishError::NotConnected)?;
        let mut properties = persistent(priority);
        if let Some(user_id) = link.user_id {
            properties = properties.with_user_id(user_id);
        }
        let publish = async {
            let confirm = link
                .channel
                .basic_publish(
                    self.exchange.clone(),
                    self.routing_key.clone(),
                    BasicPublishOptions::default(),
                    payload,
                    properties,
                )
                .await?
                .await?;
            if confirm.is_ack() {
                Ok(())
            } else {
                Err(PublishError::Nacked)
            }
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, publish)
            .await
            .map_err(|_| PublishError::TimedOut(PUBLISH_TIMEOUT))?
    }
}
