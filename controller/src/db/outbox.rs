//! The transactional outbox: messages written in the same transaction as the
//! change that causes them, published later by the relay with confirms, and
//! deleted only after the broker confirmed them ([`settle`]).

use super::locks::AdvisoryLock;
use super::{Cached, DbError};
use deadpool_postgres::GenericClient;
use orchestrator_shared::messages::WORK_EXCHANGE;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// Monotonic id (publish order).
    pub message_id: i64,
    /// Target exchange.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// JSON body.
    pub payload: serde_json::Value,
    /// Broker priority 0..=9.
    pub priority: i16,
    /// The job it concerns, if any.
    pub job_id: Option<Uuid>,
}

/// Adds a message; call inside the transaction that makes it necessary.
pub async fn enqueue(
    client: &impl GenericClient,
    exchange: &str,
    routing_key: &str,
    payload: &serde_json::Value,
    priority: i16,
    job_id: Option<Uuid>,
) -> Result<i64, DbError> {
    enqueue_delayed(client, exchange, routing_key, payload, priority, job_id, 0).await
}

/// Like [`enqueue`], published no earlier than `delay_ms` from now (retry
/// backoff kept in Postgres, where it survives restarts).
pub async fn enqueue_delayed(
    client: &impl GenericClient,
    exchange: &str,
    routing_key: &str,
    payload: &serde_json::Value,
    priority: i16,
    job_id: Option<Uuid>,
    delay_ms: i64,
) -> Result<i64, DbError> {
    let row = client
        .row(
            "INSERT INTO outbox (exchange, routing_key, payload, priority, job_id, available_at)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::bigint / 1000.0)) RETURNING message_id",
            &[&exchange, &routing_key, payload, &priority, &job_id, &delay_ms],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Adds one message per element of `payloads` (with the matching priority
/// and job) in one statement, in order; call inside the transaction that
/// makes them necessary.
pub async fn enqueue_many(
    client: &impl GenericClient,
    exchange: &str,
    routing_key: &str,
    payloads: &[serde_json::Value],
    priorities: &[i16],
    job_ids: &[Uuid],
    delay_ms: i64,
) -> Result<(), DbError> {
    if payloads.is_empty() {
        return Ok(());
    }
    client
        .exec(
            "INSERT INTO outbox (exchange, routing_key, payload, priority, job_id, available_at)
             SELECT $1, $2, m.payload, m.priority, m.job_id, now() + make_interval(secs => $6::bigint / 1000.0)
             FROM unnest($3::jsonb[], $4::smallint[], $5::uuid[]) WITH ORDINALITY AS m(payload, priority, job_id, n)
             ORDER BY m.n",
            &[&exchange, &routing_key, &payloads, &priorities, &job_ids, &delay_ms],
        )
        .await?;
    Ok(())
}

/// Up to `limit` unsent messages that are due, earliest due first (then
/// in the order written), locked with `SKIP LOCKED` so several relays
/// never publish the same row at once. Call inside a transaction that
/// lives until [`settle`].
///
/// Only one relay at a time takes messages other than dispatches
/// (control messages and probes): the one whose transaction holds
/// [`AdvisoryLock::OrderedPublish`]. Skipping locked rows would otherwise let a second
/// controller's relay publish an agent's resume while the first still held
/// the pause written before it, unconfirmed: the agent would end paused
/// while the fleet view says it is not. Dispatches are not ordered by
/// anything that matters (the claim decides what runs), so every relay
/// takes them. A relay that finds the lock taken skips the other rows: the
/// holder, or the next batch, publishes them in the order written.
///
/// The order is the unsent-message index's own, and sorting is turned off
/// for the transaction, so a poll reads its `limit` rows from the index's
/// start whatever the table's statistics say. Ordered by id alone, a poll
/// under a burst (whose rows the statistics had not seen yet) read and
/// sorted every due row: with 16,000 waiting, 14–94 ms and a sort spilled
/// to disk per poll of 256, so draining a backlog of N cost N² / 256.
pub async fn claim_due(client: &impl GenericClient, limit: i64) -> Result<Vec<OutboxMessage>, DbError> {
    // Sent together, one round trip: Postgres runs them in order.
    let params: [&(dyn ToSql + Sync); 3] = [&limit, &WORK_EXCHANGE, &AdvisoryLock::OrderedPublish.key()];
    let ((), rows) = futures::try_join!(
        client.batch_execute("SET LOCAL enable_sort = off"),
        client.rows(
            "SELECT message_id, exchange, routing_key, payload, priority, job_id FROM outbox
             WHERE sent_at IS NULL AND available_at <= now()
               AND (exchange = $2 OR pg_try_advisory_xact_lock($3))
             ORDER BY available_at, message_id LIMIT $1 FOR UPDATE SKIP LOCKED",
            &params,
        )
    )?;
    rows.iter()
        .map(|r| {
            Ok(OutboxMessage {
                message_id: r.try_get(0)?,
                exchange: r.try_get(1)?,
                routing_key: r.try_get(2)?,
                payload: r.try_get(3)?,
                priority: r.try_get(4)?,
                job_id: r.try_get(5)?,
            })
        })
        .collect()
}

/// How long until the earliest unsent message that is not due yet (a
/// retry's or a deferred dispatch's `available_at`) falls due, from the
/// transaction's start; `None` when there is none. Parked messages
/// (`infinity`) never fall due. The relay, when idle, sleeps no longer than
/// this, so such a message goes out when it falls due rather than at the
/// next poll after that.
///
/// Sent after [`claim_due`] in its transaction (sorting off), it reads one
/// entry of the unsent-message index, from `now()` on, whatever the
/// table's statistics say. Written with `min()` instead, 30,000 no-op jobs
/// cost Postgres 0.35–0.38 ms each against 0.28–0.35 without the read
/// (three alternated pairs); this form, 0.25–0.27 against 0.26–0.30.
pub async fn next_due_in(client: &impl GenericClient) -> Result<Option<std::time::Duration>, DbError> {
    let row = client
        .row_opt(
            "SELECT extract(epoch FROM available_at - now())::float8 FROM outbox
             WHERE sent_at IS NULL AND available_at > now() AND available_at < 'infinity'
             ORDER BY available_at, message_id LIMIT 1",
            &[],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let seconds: f64 = row.try_get(0)?;
    Ok(std::time::Duration::try_from_secs_f64(seconds.max(0.0)).ok())
}

/// Removes messages the broker confirmed: the queue holds them now.
///
/// Deleted, not marked sent: nothing reads a sent row, and marking wrote a
/// whole new version of the row (payload and three index entries) that
/// retention then deleted anyway; a delete writes only the old version's
/// end. (Rows marked sent by earlier versions are still aged out by
/// retention.)
pub async fn settle(client: &impl GenericClient, ids: &[i64]) -> Result<u64, DbError> {
    Ok(client
        .exec(
            "DELETE FROM outbox WHERE message_id = ANY($1) AND sent_at IS NULL",
            &[&ids],
        )
        .await?)
}

/// Sets aside messages the relay refused (they cannot be published as
/// written): they stay unsent, so they are counted by [`unsent_count`] and
/// kept for an operator to inspect, but are never due again, so they
/// neither block the rows behind them nor come back every batch. To send a
/// repaired row: `UPDATE outbox SET available_at = now() WHERE message_id = ..`.
pub async fn park(client: &impl GenericClient, ids: &[i64]) -> Result<u64, DbError> {
    Ok(client
        .exec(
            "UPDATE outbox SET available_at = 'infinity'
             WHERE message_id = ANY($1) AND sent_at IS NULL",
            &[&ids],
        )
        .await?)
}

/// Number of messages not yet sent (a readiness and metrics figure).
pub async fn unsent_count(client: &impl GenericClient) -> Result<i64, DbError> {
    Ok(client
        .row("SELECT count(*) FROM outbox WHERE sent_at IS NULL", &[])
        .await?
        .try_get(0)?)
}
