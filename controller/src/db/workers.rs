//! Queries on `workers`. Status changes are compare-and-set against the
//! worker state machine, so two racing operators cannot both "win". Each
//! registration starts a new incarnation of the worker (its `generation`),
//! and registrations and lifecycle changes are recorded in `worker_events`
//! by the statement that makes them.

use super::{control, parse_json, parse_limits, parse_status, refused_transition, Cached, DbError};
use crate::models::{Isolation, Labels, NewWorker, Worker};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use orchestrator_shared::messages::ControlCommand;
use orchestrator_shared::{StateMachine, StateTransitionError, WorkerStatus};
use tokio_postgres::Row;

const COLUMNS: &str = "worker_id, status, hostname, capacity, running_jobs, labels, version, \
                       registered_at, last_heartbeat_at, generation, \
                       memory_mb, cpu_millis, max_pids, isolation, pools";

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
        generation: row.try_get("generation")?,
        resources: parse_limits(row)?,
        isolation: parse_json::<Option<Isolation>>(row, "isolation")?,
        pools: row.try_get("pools")?,
    })
}

/// The 404 of an unknown worker id.
pub(crate) fn not_found(worker_id: &str) -> DbError {
    DbError::NotFound {
        kind: "Worker",
        id: worker_id.to_owned(),
    }
}

/// Registers an agent, or re-registers one that restarted under the same
/// id, as a new incarnation: the generation goes up by one (every control
/// message queued before carries an older one, which the new agent drops),
/// and the worker comes back with a fresh heartbeat, no running shards and
/// its new description. Its status: a `paused` worker stays paused (a pause
/// is the operator's hold on the worker id, not on one process, and the
/// answer tells the agent to start paused); any other becomes `idle`, a
/// `terminating` or `terminated` one included (the incarnation told to stop
/// is gone; a process that starts under the id again, typically by a
/// restart policy, is a new worker). Not a move of the state machine, but
/// recorded in `worker_events` with the status it replaces. Call inside a
/// transaction, so that the status recorded as replaced is exact.
pub async fn register(client: &impl GenericClient, w: &NewWorker) -> Result<Worker, DbError> {
    let labels = serde_json::to_value(&w.labels).map_err(|e| DbError::Invariant(format!("labels: {e}")))?;
    let isolation = w
        .isolation
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| DbError::Invariant(format!("isolation: {e}")))?;
    let before = client
        .row_opt(
            "SELECT status FROM workers WHERE worker_id = $1 FOR NO KEY UPDATE",
            &[&w.worker_id],
        )
        .await?
        .map(|row| row.try_get::<_, String>(0))
        .transpose()?;
    let sql = format!("{REGISTER_SQL} SELECT {COLUMNS} FROM w");
    let offer = &w.resources;
    let row = client
        .row(
            &sql,
            &[
                &w.worker_id,
                &w.hostname,
                &w.capacity,
                &labels,
                &w.version,
                &before,
                &offer.memory_mb,
                &offer.cpu_millis(),
                &offer.max_pids,
                &isolation,
                &w.pools,
            ],
        )
        .await?;
    from_row(&row)
}

/// The upsert of [`register`] and its `worker_events` row; the caller
/// selects the worker's columns from `w`.
const REGISTER_SQL: &str = "WITH w AS (
         INSERT INTO workers (worker_id, status, hostname, capacity, labels, version,
                              memory_mb, cpu_millis, max_pids, isolation, pools)
         VALUES ($1, 'idle', $2, $3, $4, $5, $7, $8, $9, $10, $11)
         ON CONFLICT (worker_id) DO UPDATE SET
             status = CASE WHEN workers.status = 'paused' THEN 'paused' ELSE 'idle' END,
             generation = workers.generation + 1,
             hostname = EXCLUDED.hostname, capacity = EXCLUDED.capacity,
             labels = EXCLUDED.labels, version = EXCLUDED.version, running_jobs = 0,
             memory_mb = EXCLUDED.memory_mb, cpu_millis = EXCLUDED.cpu_millis,
             max_pids = EXCLUDED.max_pids, isolation = EXCLUDED.isolation,
             pools = EXCLUDED.pools, last_heartbeat_at = now()
         RETURNING *),
     e AS (INSERT INTO worker_events (worker_id, generation, from_status, to_status, reason)
           SELECT worker_id, generation, $6::text, status, 'registered' FROM w)";

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
    generation: i64,
) -> Result<Worker, DbError> {
    let sql = format!(
        "UPDATE workers SET last_heartbeat_at = now(), running_jobs = $2
         WHERE worker_id = $1 AND ($3::bigint = 0 OR generation = $3) RETURNING {COLUMNS}"
    );
    let row = client
        .row_opt(&sql, &[&worker_id, &running_jobs, &generation])
        .await?;
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
    client.exec(record_claim_sql!("$1"), &[&worker_id]).await?;
    Ok(())
}

/// The statement of [`claimed`], for the workers named by `$worker`, a
/// placeholder (such as `"$1"`) or a sub-select of worker ids: a literal,
/// so that the claim batch's one-statement path (`flow::claims`) can embed
/// it as a CTE for every worker it started a shard for, and the rule
/// (idle, or unheard of for a second; a held row is skipped) stays in one
/// place.
macro_rules! record_claim_sql {
    ($worker:literal) => {
        concat!(
            "UPDATE workers SET last_heartbeat_at = now(),
                    status = CASE WHEN status = 'idle' THEN 'busy' ELSE status END
             WHERE worker_id IN (SELECT worker_id FROM workers WHERE worker_id IN (",
            $worker,
            ")
                                  AND (status = 'idle' OR last_heartbeat_at < now() - interval '1 second')
                                FOR NO KEY UPDATE SKIP LOCKED)"
        )
    };
}
pub(crate) use record_claim_sql;

/// An operator's steer of a worker (pause, resume, terminate): locks its
/// row, moves it to the status `target` picks from its current one (or
/// refuses with the error `target` gives), and queues `command` for its
/// agent, stamped with its generation, all in the caller's transaction. The
/// lock matters: heartbeats flip idle and busy concurrently, and the
/// compare-and-set must see the status it read; a registration waits for
/// it, so the stamp is the generation of the agent the change concerns.
pub async fn steer(
    client: &impl GenericClient,
    worker_id: &str,
    target: impl Fn(&Worker) -> Result<WorkerStatus, StateTransitionError>,
    command: &ControlCommand,
) -> Result<Worker, DbError> {
    client
        .exec(
            "SELECT 1 FROM workers WHERE worker_id = $1 FOR NO KEY UPDATE",
            &[&worker_id],
        )
        .await?;
    let current = get(client, worker_id).await?;
    let to = target(&current)?;
    let reason = format!("{} requested", command.name());
    let updated = transition_because(client, worker_id, current.status, to, Some(&reason)).await?;
    control::queue(client, worker_id, command, None).await?;
    Ok(updated)
}

/// Moves a worker from `expected` to `to` if the state machine allows it and
/// the worker is still in `expected`. Of several racing calls exactly one
/// succeeds; the others get `Transition` (current status differs) errors.
/// Recorded in `worker_events` without a reason, like every change but the
/// idle/busy flips of load (see [`transition_because`]).
pub async fn transition(
    client: &impl GenericClient,
    worker_id: &str,
    expected: WorkerStatus,
    to: WorkerStatus,
) -> Result<Worker, DbError> {
    transition_because(client, worker_id, expected, to, None).await
}

/// Statuses between which a worker moves with its load alone (a claim, a
/// heartbeat): such moves are not lifecycle events and are not recorded.
const LOAD: [WorkerStatus; 2] = [WorkerStatus::Idle, WorkerStatus::Busy];

/// [`transition`] with the reason recorded in its `worker_events` row; the
/// change and its row are one statement, so they never disagree. A move
/// between idle and busy writes no row: heartbeats and claims make it for
/// every job, and `running_jobs` already shows it.
pub async fn transition_because(
    client: &impl GenericClient,
    worker_id: &str,
    expected: WorkerStatus,
    to: WorkerStatus,
    reason: Option<&str>,
) -> Result<Worker, DbError> {
    expected.transition(to)?;
    let record = !(LOAD.contains(&expected) && LOAD.contains(&to));
    let sql = format!(
        "WITH w AS (UPDATE workers SET status = $3 WHERE worker_id = $1 AND status = $2 RETURNING *),
              e AS (INSERT INTO worker_events (worker_id, generation, from_status, to_status, reason)
                    SELECT worker_id, generation, $2, $3, $4 FROM w WHERE $5)
         SELECT {COLUMNS} FROM w"
    );
    let row = client
        .row_opt(
            &sql,
            &[&worker_id, &expected.as_str(), &to.as_str(), &reason, &record],
        )
        .await?;
    match row {
        Some(row) => from_row(&row),
        None => {
            let current = get(client, worker_id).await?;
            Err(refused_transition(
                current.status,
                to,
                "Worker",
                worker_id.to_owned(),
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
    let row = client
        .row(
            "WITH old AS (SELECT worker_id, status FROM workers
                          WHERE worker_id = $1 AND status = ANY($2) AND last_heartbeat_at < $4
                          FOR NO KEY UPDATE),
                  w AS (UPDATE workers SET status = $3 FROM old WHERE workers.worker_id = old.worker_id
                        RETURNING workers.worker_id, workers.generation, old.status AS from_status),
                  e AS (INSERT INTO worker_events (worker_id, generation, from_status, to_status, reason)
                        SELECT worker_id, generation, from_status, $3, 'heartbeats missed' FROM w)
             SELECT count(*) FROM w",
            &[&worker_id, &from, &WorkerStatus::Offline.as_str(), &since],
        )
        .await?;
    Ok(row.try_get::<_, i64>(0)? > 0)
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

/// One recorded step of a worker's lifecycle: a registration (which may
/// keep the status, e.g. paused) or a change of status other than the
/// idle/busy flips of load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEvent {
    /// The incarnation it happened to.
    pub generation: i64,
    /// The status before; `None` for the first registration.
    pub from: Option<WorkerStatus>,
    /// The status after.
    pub to: WorkerStatus,
    /// Why, when the writer knew (`registered`, `pause requested`, ...).
    pub reason: Option<String>,
    /// When (the database's clock).
    pub at: DateTime<Utc>,
}

/// A worker's recorded lifecycle, oldest first: what an operator reads to
/// learn how often an agent restarted and who paused or stopped it.
pub async fn events(client: &impl GenericClient, worker_id: &str) -> Result<Vec<WorkerEvent>, DbError> {
    get(client, worker_id).await?;
    let rows = client
        .rows(
            "SELECT generation, from_status, to_status, reason, at FROM worker_events
             WHERE worker_id = $1 ORDER BY event_id",
            &[&worker_id],
        )
        .await?;
    rows.iter().map(event_from_row).collect()
}

fn event_from_row(row: &Row) -> Result<WorkerEvent, DbError> {
    let from: Option<String> = row.try_get("from_status")?;
    Ok(WorkerEvent {
        generation: row.try_get("generation")?,
        from: from.map(|s| s.parse()).transpose()?,
        to: parse_status(row, "to_status")?,
        reason: row.try_get("reason")?,
        at: row.try_get("at")?,
    })
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
