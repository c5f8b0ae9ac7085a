//! Queries on `workers`. Status changes are compare-and-set against the
//! worker state machine, so two racing operators cannot both "win".

use super::{control, parse_json, parse_status, Cached, DbError};
use crate::models::{Labels, NewWorker, Worker};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use orchestrator_shared::messages::ControlCommand;
use orchestrator_shared::{StateMachine, WorkerStatus};
use tokio_postgres::Row;

const COLUMNS: &str = "worker_id, status, hostname, capacity, running_jobs, labels, version, \
                       registered_at, last_heartbeat_at";

fn from_row(row: &Row) -> Result<Worker, DbError> {
    Ok(Worker {
        worker_id: row.try_get("worker_id")?,
        status: parse_status(row, "status")?,
        hostname: row.try_get("hostname")?,
        capacity: row.try_get("capacity")?,
        running_jobs: row.try_get("running_jobs")?,
        labels: parse_json::<Labels>(row, "labels")?,
        version: row.try_get("version")?,
        registered_at: row.try_get("registered_at")?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
    })
}

fn not_found(worker_id: &str) -> DbError {
    DbError::NotFound {
        kind: "Worker",
        id: worker_id.to_owned(),
    }
}

/// Registers an agent, or re-registers one that restarted under the same id:
/// it comes back `idle` with a fresh heartbeat and its new description.
pub async fn register(client: &impl GenericClient, w: &NewWorker) -> Result<Worker, DbError> {
    let labels = serde_json::to_value(&w.labels).map_err(|e| DbError::Invariant(format!("labels: {e}")))?;
    let sql = format!(
        "INSERT INTO workers (worker_id, status, hostname, capacity, labels, version)
         VALUES ($1, 'idle', $2, $3, $4, $5)
         ON CONFLICT (worker_id) DO UPDATE SET
             status = 'idle', hostname = EXCLUDED.hostname, capacity = EXCLUDED.capacity,
             labels = EXCLUDED.labels, version = EXCLUDED.version, running_jobs = 0,
             last_heartbeat_at = now()
         RETURNING {COLUMNS}"
    );
    let row = client
        .row(
            &sql,
            &[&w.worker_id, &w.hostname, &w.capacity, &labels, &w.version],
        )
        .await?;
    from_row(&row)
}

/// One worker by id.
pub async fn get(client: &impl GenericClient, worker_id: &str) -> Result<Worker, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM workers WHERE worker_id = $1");
    let row = client.row_opt(&sql, &[&worker_id]).await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| not_found(worker_id))
}

/// Every worker, optionally only those in `status`, ordered by id.
pub async fn list(client: &impl GenericClient, status: Option<WorkerStatus>) -> Result<Vec<Worker>, DbError> {
    let sql =
        format!("SELECT {COLUMNS} FROM workers WHERE ($1::text IS NULL OR status = $1) ORDER BY worker_id");
    let status = status.map(WorkerStatus::as_str);
    let rows = client.rows(&sql, &[&status]).await?;
    rows.iter().map(from_row).collect()
}

/// Records a heartbeat and the number of jobs the agent says it runs.
pub async fn heartbeat(
    client: &impl GenericClient,
    worker_id: &str,
    running_jobs: i32,
) -> Result<Worker, DbError> {
    let sql = format!(
        "UPDATE workers SET last_heartbeat_at = now(), running_jobs = $2
         WHERE worker_id = $1 RETURNING {COLUMNS}"
    );
    let row = client.row_opt(&sql, &[&worker_id, &running_jobs]).await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| not_found(worker_id))
}

/// Records that `worker_id` has just claimed a shard: an idle worker
/// becomes busy, and the claim counts as a heartbeat. A worker that is not
/// idle and was heard from less than a second ago is left alone, and so is
/// one whose row another transaction holds (an event batch applying its
/// heartbeat, or another of its claims, which record the same thing).
/// Otherwise every claim would wait for the worker's row lock until the
/// holder commits, and all of one agent's claims would queue behind each
/// other and behind the event batches (measured: 42 ms of waiting per
/// claim with 2 agents of capacity 16, then 2 ms once only one claim a
/// second wrote). Heartbeats keep the status right either way.
pub async fn claimed(client: &impl GenericClient, worker_id: &str) -> Result<(), DbError> {
    WorkerStatus::Idle.transition(WorkerStatus::Busy)?;
    client
        .exec(
            "UPDATE workers SET last_heartbeat_at = now(),
                    status = CASE WHEN status = $2 THEN $3 ELSE status END
             WHERE worker_id = (SELECT worker_id FROM workers WHERE worker_id = $1
                                  AND (status = $2 OR last_heartbeat_at < now() - interval '1 second')
                                FOR NO KEY UPDATE SKIP LOCKED)",
            &[
                &worker_id,
                &WorkerStatus::Idle.as_str(),
                &WorkerStatus::Busy.as_str(),
            ],
        )
        .await?;
    Ok(())
}

/// An operator's steer of a worker (pause, resume, terminate): locks its
/// row, moves it to the status `target` picks from its current one, and
/// queues `command` for its agent, all in the caller's transaction. The
/// lock matters: heartbeats flip idle and busy concurrently, and the
/// compare-and-set must see the status it read.
pub async fn steer(
    client: &impl GenericClient,
    worker_id: &str,
    target: impl Fn(&Worker) -> WorkerStatus,
    command: &ControlCommand,
) -> Result<Worker, DbError> {
    client
        .exec(
            "SELECT 1 FROM workers WHERE worker_id = $1 FOR NO KEY UPDATE",
            &[&worker_id],
        )
        .await?;
    let current = get(client, worker_id).await?;
    let updated = transition(client, worker_id, current.status, target(&current)).await?;
    control::queue(client, worker_id, command, None).await?;
    Ok(updated)
}

/// Moves a worker from `expected` to `to` if the state machine allows it and
/// the worker is still in `expected`. Of several racing calls exactly one
/// succeeds; the others get `Transition` (current status differs) errors.
pub async fn transition(
    client: &impl GenericClient,
    worker_id: &str,
    expected: WorkerStatus,
    to: WorkerStatus,
) -> Result<Worker, DbError> {
    expected.transition(to)?;
    let sql =
        format!("UPDATE workers SET status = $3 WHERE worker_id = $1 AND status = $2 RETURNING {COLUMNS}");
    let row = client
        .row_opt(&sql, &[&worker_id, &expected.as_str(), &to.as_str()])
        .await?;
    match row {
        Some(row) => from_row(&row),
        None => {
            let current = get(client, worker_id).await?;
            Err(current.status.transition(to).err().map_or_else(
                || DbError::ChangedConcurrently {
                    kind: "Worker",
                    id: worker_id.to_owned(),
                },
                DbError::Transition,
            ))
        }
    }
}

/// Marks a live worker offline if no heartbeat of it was recorded since
/// `since`; returns whether it did. The statuses it leaves are exactly the
/// ones the state machine lets go offline.
pub async fn mark_lost(
    client: &impl GenericClient,
    worker_id: &str,
    since: DateTime<Utc>,
) -> Result<bool, DbError> {
    let from: Vec<&str> = LIVE
        .iter()
        .filter(|s| s.transition(WorkerStatus::Offline).is_ok())
        .map(|s| s.as_str())
        .collect();
    let n = client
        .exec(
            "UPDATE workers SET status = $3 WHERE worker_id = $1 AND status = ANY($2) AND last_heartbeat_at < $4",
            &[&worker_id, &from, &WorkerStatus::Offline.as_str(), &since],
        )
        .await?;
    Ok(n > 0)
}

/// Statuses of a worker the controller still expects heartbeats from.
const LIVE: [WorkerStatus; 4] = [
    WorkerStatus::Idle,
    WorkerStatus::Busy,
    WorkerStatus::Paused,
    WorkerStatus::Terminating,
];

/// Moves a worker to `to` from whatever status it is in now, if allowed.
pub async fn transition_to(
    client: &impl GenericClient,
    worker_id: &str,
    to: WorkerStatus,
) -> Result<Worker, DbError> {
    let current = get(client, worker_id).await?;
    transition(client, worker_id, current.status, to).await
}

/// Removes a worker; its shard history keeps a null worker id.
pub async fn delete(client: &impl GenericClient, worker_id: &str) -> Result<(), DbError> {
    let n = client
        .exec("DELETE FROM workers WHERE worker_id = $1", &[&worker_id])
        .await?;
    if n == 0 {
        return Err(not_found(worker_id));
    }
    Ok(())
}
