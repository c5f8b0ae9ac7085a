//! Control messages to agents (pause, resume, terminate, cancel a job),
//! queued in the outbox in the caller's transaction so a message goes out
//! exactly when the change that causes it commits, each stamped with the
//! generation of the worker it is meant for, so that an agent registered
//! later under the same id drops it instead of obeying it.

use super::{outbox, workers, Cached, DbError};
use deadpool_postgres::GenericClient;
use orchestrator_shared::messages::{ControlCommand, ControlMessage, CONTROL_EXCHANGE, MAX_PRIORITY};
use uuid::Uuid;

/// Broker priority of every control message: the highest, so a cancel or a
/// pause is never stuck behind work in a busy broker.
pub const CONTROL_PRIORITY: i16 = MAX_PRIORITY as i16;

/// Queues `command` for the agent `worker_id` (its control queue's routing
/// key is its worker id), stamped with the worker's current generation;
/// `job_id` ties the message to a job, if any. The generation is read by a
/// statement of its own, after the caller's changes, so it sees every
/// registration committed before them.
pub async fn queue(
    client: &impl GenericClient,
    worker_id: &str,
    command: &ControlCommand,
    job_id: Option<Uuid>,
) -> Result<(), DbError> {
    let row = client
        .row_opt(
            "SELECT generation FROM workers WHERE worker_id = $1",
            &[&worker_id],
        )
        .await?;
    let row = row.ok_or_else(|| workers::not_found(worker_id))?;
    let message = ControlMessage {
        command: command.clone(),
        generation: Some(row.try_get(0)?),
    };
    let payload = serde_json::to_value(&message)
        .map_err(|e| DbError::Invariant(format!("control message {message:?}: {e}")))?;
    outbox::enqueue(
        client,
        CONTROL_EXCHANGE,
        worker_id,
        &payload,
        CONTROL_PRIORITY,
        job_id,
    )
    .await?;
    Ok(())
}

/// Stops a job's attempt on its agents: the attempt's still-running shards
/// are marked cancelled and each of their agents is told to stop its child.
/// The one rule for a user's cancel and for a failed shard's siblings.
pub async fn stop_job_on_agents(
    client: &impl GenericClient,
    job_id: Uuid,
    attempt: i32,
) -> Result<(), DbError> {
    let rows = client
        .rows(
            "UPDATE job_shards SET status = 'cancelled', finished_at = now()
             WHERE job_id = $1 AND attempt = $2 AND status = 'running' RETURNING worker_id",
            &[&job_id, &attempt],
        )
        .await?;
    let command = ControlCommand::CancelJob { job_id };
    for row in rows {
        let worker: Option<String> = row.try_get(0)?;
        if let Some(worker) = worker {
            queue(client, &worker, &command, Some(job_id)).await?;
        }
    }
    Ok(())
}
