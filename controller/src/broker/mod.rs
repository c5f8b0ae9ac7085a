//! The controller's side of RabbitMQ: one supervised connection that
//! declares the topology, runs the outbox relay (publish with confirms, then
//! mark sent) and consumes agents' events in batches (apply them all in one
//! transaction, commit, then ack). Any broker error drops the connection and
//! reconnects with capped backoff; nothing is lost, because the outbox row
//! stays unsent and the event stays unacknowledged until their effect is
//! recorded.
//!
//! # Layout
//! - `connection`: connect, declare, run the relay and the consumer side by
//!   side, reconnect with backoff; [`BrokerStatus`] for `/readyz`.
//! - `relay`: the outbox relay: due rows out with publisher confirms, then
//!   marked sent; rows that cannot be published as written are refused.
//! - `classes`: a job class's queue declared (and recorded) before the
//!   relay publishes the class's first message.
//! - `consumer`: the agent-event consumer: gathering deliveries into
//!   batches, coalescing heartbeats, settling the batch.
//! - `apply`: applying events to Postgres, a batch per transaction, falling
//!   back to one transaction per event.
//! - [`senders`]: which broker user may send which event.
//! - [`accounts`]: one broker user per agent, provisioned at registration
//!   and revoked, through `management` (the broker's HTTP API).

pub mod accounts;
mod apply;
mod classes;
mod connection;
mod consumer;
mod management;
mod relay;
pub mod senders;

pub use accounts::{AccountError, BrokerAccounts};
pub use apply::apply_event;
pub use connection::{supervise, BrokerLink, BrokerStatus};
pub use consumer::events_prefetch;
pub use senders::Senders;

use crate::config::FlowConfig;
use crate::db::flow::RetryPolicy;
use crate::db::Database;
use orchestrator_shared::messages::Topology;
use std::sync::Arc;
use tokio::sync::Notify;

/// What the broker side needs, shared by its tasks (the relay, the
/// consumer and the reaper), so each gets one value instead of five.
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
    /// Who may send which event, and the controller's own broker user.
    pub senders: Senders,
}

impl Flow {
    /// Retry timing from the configuration, which every transition that may
    /// retry a job needs.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            base: self.config.retry_base,
            max: self.config.retry_max,
        }
    }
}
