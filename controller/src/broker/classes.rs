//! Job classes' queues (see `orchestrator_shared::pools`): the relay
//! declares a class's queue, bound to the work exchange under the class's
//! routing key, before it publishes the class's first message on a
//! connection, and records in Postgres that the queue exists, so agents
//! are told of it (they consume only declared queues). Publishing first
//! would lose the message: a direct exchange drops what no queue is bound
//! for.

use crate::db::{pools, DbError};
use orchestrator_shared::broker::{declare_class_queue, TopologyError};
use orchestrator_shared::messages::{Topology, WORK_ROUTING_KEY};
use std::collections::HashSet;

/// Class routing keys declared on the current connection. Declarations are
/// idempotent and durable, so a new connection starts empty and declares
/// each class again once (a broker that lost its queues gets them back).
#[derive(Debug, Default)]
pub(super) struct Declared(HashSet<String>);

impl Declared {
    /// Declares the queue of every class among `keys` not declared on this
    /// connection yet, then records them declared in `tx`.
    pub(super) async fn ensure<'k>(
        &mut self,
        ch: &lapin::Channel,
        topology: &Topology,
        tx: &deadpool_postgres::Transaction<'_>,
        keys: impl Iterator<Item = &'k str>,
    ) -> Result<(), ClassError> {
        let mut fresh: Vec<String> = Vec::new();
        for key in keys {
            if key != WORK_ROUTING_KEY && !self.0.contains(key) && !fresh.iter().any(|k| k == key) {
                fresh.push(key.to_owned());
            }
        }
        for key in &fresh {
            declare_class_queue(ch, topology, key).await?;
        }
        if !fresh.is_empty() {
            pools::mark_declared(tx, &fresh).await?;
            tracing::info!(classes = ?fresh, "job class queues declared");
        }
        self.0.extend(fresh);
        Ok(())
    }
}

/// Why a class's queue could not be declared or recorded.
#[derive(Debug, thiserror::Error)]
pub(super) enum ClassError {
    /// The broker refused the declaration.
    #[error("declaring a job class queue")]
    Broker(#[from] TopologyError),
    /// Postgres failed to record it.
    #[error("recording a job class queue declared")]
    Db(#[from] DbError),
}
