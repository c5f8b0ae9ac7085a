//! Applying agent events to Postgres: a batch in one transaction and one
//! commit (a batch of plain successes sent at once, and a second only for
//! a report its statement left undecided); while Postgres is unavailable
//! the batch is held and tried again; any other failure falls back to one
//! transaction per event, so a refused event is dropped alone and never
//! stalls the queue.

use super::Flow;
use crate::db::at_once::AtOnce;
use crate::db::flow::{self, Finished, RetryPolicy};
use crate::db::DbError;
use deadpool_postgres::Transaction;
use orchestrator_shared::messages::{last_bytes, AgentEvent, MAX_TAIL_BYTES};
use std::time::Duration;

/// Wait before trying again to apply events Postgres could not take.
const HOLD_RETRY: Duration = Duration::from_secs(1);
/// Extra tries of an event that lost a deadlock or a serialization
/// conflict: the other transaction has finished by then, and a report
/// dropped for a conflict would leave its job running.
const TRANSIENT_RETRIES: u32 = 3;

/// Applies `events` and returns whether they may have written outbox rows
/// (a retry's dispatch, a released dependent's): the caller wakes the
/// relay. First all in one transaction; while
/// Postgres is unavailable the batch is held and tried again; if it fails
/// for any other reason (an event Postgres or the state machines refuse, a
/// deadlock), each event is applied in its own transaction, so one bad
/// event costs its batch one fallback and never stalls the queue.
pub(super) async fn apply_held(flow: &Flow, events: &[AgentEvent]) -> bool {
    loop {
        match apply_batch(flow, events).await {
            Ok(finished) => return finished,
            Err(e) if e.is_unavailable() => {
                tracing::warn!(
                    events = events.len(),
                    "database unavailable; holding the agent events"
                );
                tokio::time::sleep(HOLD_RETRY).await;
            }
            Err(e) => {
                tracing::warn!(error = ?e, events = events.len(), "event batch failed; applying one by one");
                break;
            }
        }
    }
    let mut finished = false;
    for event in events {
        finished |= apply_one_held(flow, event).await;
    }
    finished
}

/// Applies a batch in one transaction and one commit: first the plain
/// successes among its shard reports, set-based (one statement for all of
/// them, see `flow::complete_succeeded`; a job's completion never depends
/// on the batch's other events), then every other event in order. Any
/// error rolls the whole batch back (the caller decides what next). No
/// savepoint per event: refused events are rare, and two round trips per
/// event for savepoints were a third of a report's cost. A batch of
/// nothing but plain successes, the common case under load, goes as a
/// transaction sent at once instead ([`apply_plain_at_once`]).
async fn apply_batch(flow: &Flow, events: &[AgentEvent]) -> Result<bool, DbError> {
    let mut conn = AtOnce::new(flow.db.client().await?);
    let reports: Vec<Option<Finished>> = events.iter().map(shard_report).collect();
    let refs: Vec<&Finished> = reports.iter().flatten().collect();
    if refs.len() == events.len() && flow::all_plain(&refs) {
        return apply_plain_at_once(flow, conn, &refs).await;
    }
    let tx = conn.transaction().await?;
    let completed = flow::complete_succeeded(&tx, &refs).await?;
    let mut applied = completed.applied.into_iter();
    let mut finished = completed.released;
    for (event, report) in events.iter().zip(&reports) {
        finished |= match report {
            // One answer per report, in order (the guard runs once for
            // each). Reports applied set-based wrote outbox rows only for
            // the dependents they released (`completed.released`).
            Some(_) if applied.next().unwrap_or(false) => false,
            Some(report) => apply_report(&tx, report, flow.retry()).await?,
            None => apply_in(&tx, event, flow.retry()).await?,
        };
    }
    tx.commit().await?;
    Ok(finished)
}

/// Applies a batch of plain successes (`flow::all_plain`) in a transaction
/// sent at once and committed (`flow::complete_succeeded_at_once`: two
/// round trips where the usual transaction took four). A report that
/// statement did not decide (a job of several shards, one no longer
/// running that attempt) is applied by the single report's rules in one
/// more transaction; should that fail, applying the whole batch again
/// changes nothing already committed, since every report is fenced.
async fn apply_plain_at_once(flow: &Flow, mut conn: AtOnce, reports: &[&Finished]) -> Result<bool, DbError> {
    let completed = flow::complete_succeeded_at_once(&mut conn, reports).await?;
    let rest: Vec<&Finished> = reports
        .iter()
        .zip(completed.applied)
        .filter(|(_, applied)| !applied)
        .map(|(report, _)| *report)
        .collect();
    if rest.is_empty() {
        return Ok(completed.released);
    }
    let tx = conn.transaction().await?;
    for report in rest {
        apply_report(&tx, report, flow.retry()).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Applies one event in its own transaction, holding it while Postgres is
/// unavailable and trying a transient conflict again a few times; any other
/// failure is logged and the event dropped. Returns whether it was an
/// applied shard report.
async fn apply_one_held(flow: &Flow, event: &AgentEvent) -> bool {
    let mut conflicts = 0;
    loop {
        match apply_event(flow, event).await {
            Ok(report) => return report,
            Err(e) if e.is_unavailable() => {
                tracing::warn!("database unavailable; holding the agent event");
                tokio::time::sleep(HOLD_RETRY).await;
            }
            Err(e) if e.is_transient() && conflicts < TRANSIENT_RETRIES => {
                conflicts += 1;
                tracing::debug!(error = ?e, conflicts, "agent event conflicted; trying again");
            }
            Err(e) => {
                tracing::error!(error = ?e, ?event, "agent event could not be applied");
                return false;
            }
        }
    }
}

/// Applies one agent event in its own transaction (the fallback when its
/// batch could not commit). Returns whether it was a shard report, after
/// which the caller wakes the relay.
pub async fn apply_event(flow: &Flow, event: &AgentEvent) -> Result<bool, DbError> {
    let mut client = flow.db.client().await?;
    let tx = client.transaction().await?;
    let report = apply_in(&tx, event, flow.retry()).await?;
    tx.commit().await?;
    Ok(report)
}

/// Applies one agent event inside `tx` (a batch's or its own
/// transaction). Returns whether it may have written outbox rows (a shard report,
/// or a probe that found a lost worker's jobs).
async fn apply_in(tx: &Transaction<'_>, event: &AgentEvent, retry: RetryPolicy) -> Result<bool, DbError> {
    match event {
        AgentEvent::Heartbeat {
            worker_id,
            running,
            paused,
            generation,
        } => flow::heartbeat(tx, worker_id, running.len(), *paused, *generation)
            .await
            .map(|()| false),
        AgentEvent::Stopped {
            worker_id,
            generation,
        } => flow::stopped(tx, worker_id, *generation).await.map(|()| false),
        AgentEvent::LivenessProbe { worker_id, since } => flow::probe(tx, worker_id, *since, retry)
            .await
            .map(|jobs| jobs > 0),
        AgentEvent::ShardFinished { .. } => match shard_report(event) {
            Some(finished) => apply_report(tx, &finished, retry).await,
            None => Ok(false),
        },
    }
}

/// Applies one shard report inside `tx` by the single report's rules.
/// Returns true: it may have written outbox rows (a retry's dispatch).
async fn apply_report(
    tx: &Transaction<'_>,
    finished: &Finished,
    retry: RetryPolicy,
) -> Result<bool, DbError> {
    let what = flow::finish(tx, finished, retry).await?;
    let (job_id, attempt, shard) = (finished.job_id, finished.attempt, finished.shard_index);
    tracing::debug!(%job_id, attempt, shard_index = shard, what, "shard report applied");
    Ok(true)
}

/// The shard report inside a `ShardFinished` event.
fn shard_report(event: &AgentEvent) -> Option<Finished> {
    let AgentEvent::ShardFinished {
        worker_id,
        job_id,
        attempt,
        shard_index,
        outcome,
        exit_code,
        stdout_tail,
        stderr_tail,
        error,
    } = event
    else {
        return None;
    };
    Some(Finished {
        worker_id: worker_id.clone(),
        job_id: *job_id,
        attempt: *attempt,
        shard_index: *shard_index,
        outcome: *outcome,
        exit_code: *exit_code,
        stdout_tail: storable(stdout_tail),
        stderr_tail: storable(stderr_tail),
        error: error.as_deref().map(storable),
    })
}

/// `text` as Postgres can store it, and as much of it as a report may
/// carry: a NUL (U+0000), which a job may well print and Postgres refuses
/// in `text`, becomes U+FFFD (without this a report of such output was
/// refused whole, and its job never finished); of a text longer than
/// [`MAX_TAIL_BYTES`] (an agent that does not bound its tails) only the
/// last bytes are kept (cut again after the replacement, which is longer).
fn storable(text: &str) -> String {
    let replaced = last_bytes(text, MAX_TAIL_BYTES).replace('\0', "\u{FFFD}");
    last_bytes(&replaced, MAX_TAIL_BYTES).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_with_nul_is_stored_with_a_replacement_character() {
        assert_eq!(storable("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(storable("plain"), "plain");
    }

    #[test]
    fn of_a_tail_longer_than_a_report_may_carry_only_its_end_is_stored() {
        let long = format!("{}end", "x".repeat(MAX_TAIL_BYTES));
        let stored = storable(&long);
        assert_eq!(stored.len(), MAX_TAIL_BYTES);
        assert!(stored.ends_with("xend"));
    }
}
