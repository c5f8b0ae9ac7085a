//! The outbox relay: takes due outbox rows, publishes them with publisher
//! confirms and, once every confirm is in, deletes them (and marks their
//! jobs queued) in the transaction that claimed them.
//!
//! A row is published exactly as written or not at all. One that cannot be
//! (an exchange the topology does not declare, a name AMQP cannot carry, a
//! priority out of range, a payload that is not a message) is refused: it
//! is logged at error with its id, counted in `outbox_rows_refused_total`
//! and parked unsent ([`outbox::park`]), where it blocks no other row and is
//! never tried again until an operator fixes it. Publishing it anyway would
//! send it where no consumer reads and mark it sent: a lost job.

use super::classes::{ClassError, Declared};
use super::Flow;
use crate::db::outbox::{self, OutboxMessage};
use crate::db::{jobs, DbError};
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use orchestrator_shared::broker::{persistent, TopologyError};
use orchestrator_shared::messages::{
    Topology, CONTROL_EXCHANGE, EVENTS_EXCHANGE, MAX_PRIORITY, WORK_EXCHANGE,
};
use std::task::Poll;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Outbox rows published per transaction.
const RELAY_BATCH: i64 = 500;
/// [`RELAY_BATCH`] as a count of rows handled.
const RELAY_BATCH_ROWS: usize = RELAY_BATCH as usize;
/// Wait before trying again after Postgres failed a relay step.
const DB_RETRY: Duration = Duration::from_secs(1);
/// The logical exchanges outbox rows may name: those the topology declares
/// for them. Publishing to any other would fail on the broker, closing the
/// channel, and the row would come back first in every batch.
const EXCHANGES: [&str; 3] = [WORK_EXCHANGE, CONTROL_EXCHANGE, EVENTS_EXCHANGE];
/// The longest name AMQP carries (a short string).
const MAX_NAME_BYTES: usize = 255;
/// Name of the counter of refused rows, for alerts.
const REFUSED_METRIC: &str = "outbox_rows_refused_total";

/// Why a relay step failed: the relay waits out a database problem and
/// goes on, but a broker problem ends the connection (to reconnect).
#[derive(Debug, thiserror::Error)]
pub(super) enum RelayError {
    /// Postgres failed or could not be reached.
    #[error("outbox relay: database error")]
    Db(#[from] DbError),
    /// The broker failed a publish or a confirm.
    #[error("outbox relay: broker error")]
    Broker(#[from] lapin::Error),
}

impl From<ClassError> for RelayError {
    fn from(e: ClassError) -> Self {
        match e {
            ClassError::Db(e) => RelayError::Db(e),
            ClassError::Broker(TopologyError::Amqp(e)) => RelayError::Broker(e),
            ClassError::Broker(e) => {
                RelayError::Broker(lapin::Error::from(std::io::Error::other(e.to_string())))
            }
        }
    }
}

impl From<tokio_postgres::Error> for RelayError {
    fn from(e: tokio_postgres::Error) -> Self {
        RelayError::Db(e.into())
    }
}

/// Why an outbox row cannot be published as written.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    /// The exchange is none the topology declares.
    #[error("exchange {0:?} is not one the broker topology declares")]
    UnknownExchange(String),
    /// A name is longer than AMQP carries, or the routing key is empty.
    #[error("{what} of {len} bytes: AMQP needs 1 to 255")]
    BadName {
        /// "exchange" or "routing key".
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The priority is outside what the queues are declared with.
    #[error("priority {0} is outside 0..={MAX_PRIORITY}")]
    Priority(i16),
    /// The payload is no message: every message is a JSON object.
    #[error("payload is not a JSON object")]
    NotAnObject,
    /// The payload does not serialize.
    #[error("payload does not serialize")]
    Body(#[source] serde_json::Error),
    /// A work message whose routing key names no job class: no queue is
    /// bound for it.
    #[error("work routing key {0:?} names no job class")]
    NotAClass(String),
}

/// An outbox row checked and turned into what the broker takes.
#[derive(Debug)]
pub(super) struct Publication {
    /// The row, to delete after the confirm.
    message_id: i64,
    /// The job a dispatch of which this is, to mark queued once sent.
    queues_job: Option<Uuid>,
    /// Full exchange name (with the topology's prefix).
    exchange: ShortString,
    /// Routing key, as written.
    routing_key: ShortString,
    /// The JSON body, as written.
    body: Vec<u8>,
    /// Broker priority, as written.
    priority: u8,
    /// Whether it goes to the work exchange (its routing key names a job
    /// class, whose queue must exist first).
    work: bool,
}

/// Runs the relay on `ch` (a confirm channel) until the broker fails.
///
/// A batch smaller than the limit took every row due at its start; rows
/// written since woke `flow.wake`, so the relay waits for that (or the
/// poll) rather than asking again at once: an empty poll after every batch
/// was a transaction of three statements per dispatch at low rates.
pub(super) async fn relay(flow: &Flow, ch: &lapin::Channel) -> Result<(), lapin::Error> {
    register_metrics();
    let poll = flow.config.relay_poll;
    let mut declared = Declared::default();
    let mut stragglers_marked: Option<Instant> = None;
    loop {
        match relay_batch(flow, ch, &mut declared).await {
            Ok(batch) if batch.rows >= RELAY_BATCH_ROWS => {}
            Ok(batch) => {
                if stragglers_marked.is_none_or(|at| at.elapsed() >= poll) {
                    mark_stragglers(flow).await;
                    stragglers_marked = Some(Instant::now());
                }
                let wait = idle_wait(poll, batch.next_due_at, Instant::now());
                tokio::select! {
                    () = flow.wake.notified() => {},
                    () = tokio::time::sleep(wait) => {},
                }
            }
            Err(RelayError::Db(e)) => {
                tracing::warn!(error = ?e, "outbox relay: database error");
                tokio::time::sleep(DB_RETRY).await;
            }
            Err(RelayError::Broker(e)) => return Err(e),
        }
    }
}

/// Marks queued the published jobs a busy moment left pending (see
/// `jobs::mark_published_stragglers`), at most once a poll interval while
/// the relay is not behind; a failure waits for the next pass.
async fn mark_stragglers(flow: &Flow) {
    let marked = match flow.db.client().await {
        Ok(client) => jobs::mark_published_stragglers(&client).await,
        Err(e) => Err(e),
    };
    match marked {
        Ok(0) => {}
        Ok(n) => tracing::debug!(jobs = n, "published jobs marked queued after a busy moment"),
        Err(e) => tracing::warn!(error = ?e, "outbox relay: marking published jobs queued"),
    }
}

/// How long an idle relay waits for a wake-up before it asks again: the
/// poll interval, or less when a row falls due sooner. `next_due_at` is
/// fixed from the batch's start, so the time the batch took (publishing
/// and confirming) is not waited again: a delayed retry goes out when due,
/// not a batch's duration later.
fn idle_wait(poll: Duration, next_due_at: Option<Instant>, now: Instant) -> Duration {
    next_due_at.map_or(poll, |at| at.saturating_duration_since(now).min(poll))
}

/// What one relay batch did.
struct Relayed {
    /// The rows handled (0: nothing was due, or the broker refused one and
    /// the batch waits).
    rows: usize,
    /// When the earliest row not yet due then falls due
    /// ([`outbox::next_due_in`], counted from the batch's transaction's
    /// `now()`), placed from an instant taken just before that transaction
    /// began, so it errs early by a round trip at most, never late.
    next_due_at: Option<Instant>,
}

/// Publishes one batch of due outbox rows, waits for every confirm, then
/// deletes them (and marks their jobs queued) in the same transaction; rows
/// that cannot be published are parked in it. The time until the next row
/// falls due is read in the same round trip as the batch.
async fn relay_batch(
    flow: &Flow,
    ch: &lapin::Channel,
    declared: &mut Declared,
) -> Result<Relayed, RelayError> {
    let mut client = flow.db.client().await?;
    let started = Instant::now();
    let tx = client.transaction().await?;
    let (messages, next_due) =
        futures::try_join!(outbox::claim_due(&tx, RELAY_BATCH), outbox::next_due_in(&tx))?;
    let next_due_at = next_due.and_then(|due| started.checked_add(due));
    if messages.is_empty() {
        return Ok(Relayed { rows: 0, next_due_at });
    }
    let (ready, refused) = sort_out(&flow.topology, &messages);
    if !refused.is_empty() {
        let ids: Vec<i64> = refused.iter().map(|(id, _)| *id).collect();
        outbox::park(&tx, &ids).await?;
    }
    let sent: Vec<i64> = ready.iter().map(|p| p.message_id).collect();
    let queued: Vec<Uuid> = ready.iter().filter_map(|p| p.queues_job).collect();
    let classes = ready.iter().filter(|p| p.work).map(|p| p.routing_key.as_str());
    declared.ensure(ch, &flow.topology, &tx, classes).await?;
    let confirmed = publish_confirmed(ch, ready, flow.senders.controller()).await?;
    if confirmed {
        outbox::settle(&tx, &sent).await?;
        jobs::mark_queued(&tx, &queued).await?;
    }
    tx.commit().await?;
    report_refused(&refused);
    let rows = if confirmed { messages.len() } else { 0 };
    Ok(Relayed { rows, next_due_at })
}

/// Publishes every publication as `sender` (its `user_id`, which RabbitMQ
/// checks against the connection's user and consumers trust), then waits
/// for all their confirms. False if the broker refused one: nothing is
/// marked sent, and the whole batch goes out again later.
///
/// Every message of the batch is handed to the connection before any wait:
/// awaiting each publish until its frames were written cost a round trip
/// through lapin's I/O thread per message (3–7 ms for 50 at 500 jobs/s, a
/// third of the relay's cycle), while its first poll alone already queues
/// the frames and takes the delivery tag, so the batch keeps its order.
async fn publish_confirmed(
    ch: &lapin::Channel,
    mut ready: Vec<Publication>,
    sender: &ShortString,
) -> Result<bool, lapin::Error> {
    let mut confirms = Vec::with_capacity(ready.len());
    let mut writing = Vec::with_capacity(ready.len());
    for p in &mut ready {
        let props = persistent(p.priority).with_user_id(sender.clone());
        let options = BasicPublishOptions::default();
        // The names move into the publish (nothing reads them after); the
        // body is borrowed until its frames are written.
        let (exchange, routing_key) = (
            std::mem::take(&mut p.exchange),
            std::mem::take(&mut p.routing_key),
        );
        let mut publish = Box::pin(ch.basic_publish(exchange, routing_key, options, &p.body, props));
        match futures::poll!(publish.as_mut()) {
            Poll::Ready(confirm) => confirms.push(confirm?),
            Poll::Pending => writing.push(publish),
        }
    }
    for publish in writing {
        confirms.push(publish.await?);
    }
    for confirm in confirms {
        if !confirm.await?.is_ack() {
            tracing::warn!("broker refused a message; the batch will be published again");
            return Ok(false);
        }
    }
    Ok(true)
}

/// Splits claimed rows into those to publish (in order) and those refused,
/// with the reason.
fn sort_out(topology: &Topology, messages: &[OutboxMessage]) -> (Vec<Publication>, Vec<(i64, Refusal)>) {
    let mut ready = Vec::with_capacity(messages.len());
    let mut refused = Vec::new();
    for m in messages {
        match publication(topology, m) {
            Ok(p) => ready.push(p),
            Err(why) => refused.push((m.message_id, why)),
        }
    }
    (ready, refused)
}

/// Shows the refusal counter at 0 before any refusal, so that an alert on
/// its increase fires on the first one (a series that appears at 1 has no
/// increase to see). Idempotent.
fn register_metrics() {
    metrics::describe_counter!(
        REFUSED_METRIC,
        "Outbox rows the relay refused to publish (they cannot be published as written) and parked unsent."
    );
    metrics::counter!(REFUSED_METRIC).increment(0);
}

/// Logs and counts rows that were parked (once their parking committed).
fn report_refused(refused: &[(i64, Refusal)]) {
    for (message_id, why) in refused {
        tracing::error!(
            message_id,
            error = %why,
            "outbox row refused: it cannot be published as written; parked unsent"
        );
    }
    if !refused.is_empty() {
        metrics::counter!(REFUSED_METRIC).increment(refused.len() as u64);
    }
}

/// The row as the broker takes it, or why it cannot be published as
/// written. No field is defaulted: a fallback would publish something else
/// than the row says and then mark the row sent.
pub(super) fn publication(topology: &Topology, m: &OutboxMessage) -> Result<Publication, Refusal> {
    if !EXCHANGES.contains(&m.exchange.as_str()) {
        return Err(Refusal::UnknownExchange(m.exchange.clone()));
    }
    let priority = u8::try_from(m.priority)
        .ok()
        .filter(|p| *p <= MAX_PRIORITY)
        .ok_or(Refusal::Priority(m.priority))?;
    if !m.payload.is_object() {
        return Err(Refusal::NotAnObject);
    }
    let work = m.exchange == WORK_EXCHANGE;
    let named = (1..=MAX_NAME_BYTES).contains(&m.routing_key.len());
    if work && named && topology.class_queue(&m.routing_key).is_none() {
        return Err(Refusal::NotAClass(m.routing_key.clone()));
    }
    Ok(Publication {
        work,
        message_id: m.message_id,
        queues_job: m.job_id.filter(|_| m.exchange == WORK_EXCHANGE),
        exchange: name("exchange", topology.exchange(&m.exchange))?,
        routing_key: name("routing key", m.routing_key.clone())?,
        body: serde_json::to_vec(&m.payload).map_err(Refusal::Body)?,
        priority,
    })
}

/// `s` as an AMQP short string, refused if empty or too long.
fn name(what: &'static str, s: String) -> Result<ShortString, Refusal> {
    let len = s.len();
    if len == 0 || len > MAX_NAME_BYTES {
        return Err(Refusal::BadName { what, len });
    }
    ShortString::try_new(s).map_err(|_| Refusal::BadName { what, len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn an_idle_relay_waits_only_for_what_is_left_of_the_next_rows_delay() {
        let ms = Duration::from_millis;
        let started = Instant::now();
        // The batch took 30 ms to publish and confirm.
        let now = started + ms(30);
        // Nothing delayed: the poll interval.
        assert_eq!(idle_wait(ms(1000), None, now), ms(1000));
        // A retry due 200 ms after the batch started: 170 ms more, not 200.
        assert_eq!(idle_wait(ms(1000), Some(started + ms(200)), now), ms(170));
        // Already due by the time the batch ended: no wait at all.
        assert_eq!(idle_wait(ms(1000), Some(started + ms(20)), now), Duration::ZERO);
        // Due later than the poll: the poll comes first.
        assert_eq!(idle_wait(ms(1000), Some(started + ms(5000)), now), ms(1000));
    }

    fn topology() -> Topology {
        Topology::new("t1".to_owned())
    }

    /// A well-formed dispatch row for job `job`.
    fn row(message_id: i64) -> OutboxMessage {
        OutboxMessage {
            message_id,
            exchange: WORK_EXCHANGE.to_owned(),
            routing_key: "job".to_owned(),
            payload: json!({ "job_id": Uuid::nil(), "attempt": 1 }),
            priority: 7,
            job_id: Some(Uuid::nil()),
        }
    }

    #[test]
    fn a_well_formed_row_is_published_exactly_as_written() {
        let m = row(1);
        let p = publication(&topology(), &m).unwrap();
        assert_eq!(p.exchange.as_str(), "t1.work");
        assert_eq!(p.routing_key.as_str(), "job");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&p.body).unwrap(),
            m.payload
        );
        assert_eq!(
            (p.priority, p.message_id, p.queues_job),
            (7, 1, Some(Uuid::nil()))
        );
    }

    #[test]
    fn only_a_dispatch_queues_its_job() {
        let mut m = row(1);
        m.exchange = CONTROL_EXCHANGE.to_owned();
        m.routing_key = "w-1".to_owned();
        assert_eq!(publication(&topology(), &m).unwrap().queues_job, None);
    }

    #[test]
    fn an_exchange_name_too_long_for_amqp_is_refused_not_sent_to_the_default_exchange() {
        let long = Topology::new("p".repeat(300));
        let refusal = publication(&long, &row(1)).unwrap_err();
        assert!(
            matches!(
                refusal,
                Refusal::BadName {
                    what: "exchange",
                    len: 305
                }
            ),
            "{refusal:?}"
        );
    }

    #[test]
    fn an_unknown_or_empty_exchange_is_refused() {
        for exchange in ["", "nope", "t1.work"] {
            let mut m = row(1);
            m.exchange = exchange.to_owned();
            let refusal = publication(&topology(), &m).unwrap_err();
            assert!(
                matches!(&refusal, Refusal::UnknownExchange(x) if x == exchange),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn a_routing_key_that_is_empty_or_too_long_is_refused() {
        for len in [0, 256, 1000] {
            let mut m = row(1);
            m.routing_key = "k".repeat(len);
            let refusal = publication(&topology(), &m).unwrap_err();
            assert!(
                matches!(refusal, Refusal::BadName { what: "routing key", len: l } if l == len),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn a_priority_out_of_range_is_refused_not_clamped() {
        for priority in [-1, 10, 300] {
            let mut m = row(1);
            m.priority = priority;
            let refusal = publication(&topology(), &m).unwrap_err();
            assert!(
                matches!(refusal, Refusal::Priority(p) if p == priority),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn a_payload_that_is_no_message_is_refused() {
        for payload in [json!(null), json!("text"), json!(3), json!([1, 2])] {
            let mut m = row(1);
            m.payload = payload;
            let refusal = publication(&topology(), &m).unwrap_err();
            assert!(matches!(refusal, Refusal::NotAnObject), "{refusal:?}");
        }
    }

    #[test]
    fn a_work_row_must_name_a_job_class_to_be_published() {
        for key in ["job", "job.gpu", "job.gpu.0123456789abcdef0123456789abcdef"] {
            let mut m = row(1);
            m.routing_key = key.to_owned();
            assert!(publication(&topology(), &m).is_ok_and(|p| p.work), "{key}");
        }
        for key in ["jobs", "job.GPU", "job.gpu.nothex", "w-1"] {
            let mut m = row(1);
            m.routing_key = key.to_owned();
            let refusal = publication(&topology(), &m).unwrap_err();
            assert!(
                matches!(&refusal, Refusal::NotAClass(k) if k == key),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn a_bad_row_is_set_aside_and_the_others_go_out_in_order() {
        let mut bad = row(2);
        bad.routing_key = String::new();
        let (ready, refused) = sort_out(&topology(), &[row(1), bad, row(3)]);
        let ids: Vec<i64> = ready.iter().map(|p| p.message_id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 2);
    }

    proptest! {
        #[test]
        fn every_valid_row_is_published_as_written(
            exchange in proptest::sample::select(EXCHANGES.to_vec()),
            key in "[a-z0-9.-]{1,255}",
            priority in 0i16..=9,
            field in "[a-z]{1,10}",
            value in any::<i64>(),
        ) {
            // A work row's key must name a job class (see the test below).
            let key = if exchange == WORK_EXCHANGE { "job.gpu".to_owned() } else { key };
            let mut m = row(1);
            m.exchange = exchange.to_owned();
            m.routing_key = key.clone();
            m.priority = priority;
            m.payload = json!({ field: value });
            let p = publication(&topology(), &m).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(p.exchange.as_str(), topology().exchange(exchange));
            prop_assert_eq!(p.routing_key.as_str(), key);
            prop_assert_eq!(i16::from(p.priority), priority);
            let body: serde_json::Value = serde_json::from_slice(&p.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(body, m.payload);
        }
    }
}
