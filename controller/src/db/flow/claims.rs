//! Many claims answered in one transaction: one agent's batch, or the
//! batches of several agents gathered by [`gather`](super::gather). Every
//! answer is the one [`claim`](super::claim::claim) gives alone; what
//! changes is the cost. The group's job rows are locked at once in id
//! order (so two groups never wait on each other in a cycle), and the
//! common case, the first claim of a queued job's next attempt (or of a
//! pending one, which the relay has published but not yet marked queued),
//! is recorded for the whole group by one statement: the jobs become
//! `running`, their events and their shards are written together, and each
//! claiming worker is marked busy. Anything else (a shard of a running
//! job, a redelivery, two shards of one job in the group, even from two
//! agents) is decided one claim at a time by the single claim's rules,
//! inside the same transaction.
//!
//! When every claim of the group is of the common case, the transaction is
//! first sent at once ([`AtOnce`]: `BEGIN`, the lock, a start statement
//! that starts all of the claims or none, and `COMMIT`, in one round
//! trip). Only if it started none (a job cancelled meanwhile, a worker
//! that never registered, ...) is the group answered by the usual
//! transaction. Either way the group is one transaction: all of it is
//! recorded or, on an error, none.

use super::claim::{decide_claim, Claim};
use super::{named_once, shard_work};
use crate::db::at_once::AtOnce;
use crate::db::{workers, DbError};
use deadpool_postgres::{GenericClient, Object, Transaction};
use orchestrator_shared::api::{ClaimDecision, ShardClaim, ShardWork};
use orchestrator_shared::{JobStatus, StateMachine, WorkerStatus};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// One agent's claims in a group answered together: several agents'
/// claims share its statements and its commits.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The claiming worker, already checked against its credential.
    pub worker_id: &'a str,
    /// Its claims, in its request's order.
    pub claims: &'a [ShardClaim],
}

/// A part's answers in its claims' order; `None` when its worker never
/// registered (nothing of the part was recorded).
pub type PartAnswers = Option<Vec<(Claim, Option<ShardWork>)>>;

/// A group's answers so far, in the order of its flattened claims.
type Answers = Vec<Option<(Claim, Option<ShardWork>)>>;

/// Answers `claims` of `worker_id` (already checked against the caller's
/// credential), in their order, committed on `client`; `silent_after` is
/// the heartbeat timeout. A worker that never registered is
/// `NotRegistered`, whatever it claims.
pub async fn claim_batch(
    client: Object,
    worker_id: &str,
    claims: &[ShardClaim],
    silent_after: Duration,
) -> Result<Vec<(Claim, Option<ShardWork>)>, DbError> {
    let mut answers = claim_parts(client, &[Part { worker_id, claims }], silent_after).await?;
    answers
        .pop()
        .flatten()
        .ok_or_else(|| DbError::NotRegistered(worker_id.to_owned()))
}

/// Answers several agents' claims in one transaction, committed on
/// `client`, each part as [`claim_batch`] would answer it alone: first as
/// one round trip when every claim is fresh ([`start_all_at_once`]), else
/// in the usual transaction ([`claim_parts_in`]). A part whose worker never
/// registered is answered `None`.
pub async fn claim_parts(
    client: Object,
    parts: &[Part<'_>],
    silent_after: Duration,
) -> Result<Vec<PartAnswers>, DbError> {
    let flat: Vec<(&str, &ShardClaim)> = parts
        .iter()
        .flat_map(|p| p.claims.iter().map(move |c| (p.worker_id, c)))
        .collect();
    let mut conn = AtOnce::new(client);
    if let Some(answers) = start_all_at_once(&mut conn, parts, &flat).await? {
        return Ok(answers);
    }
    let tx = conn.transaction().await?;
    let answers = claim_parts_in(&tx, parts, &flat, silent_after).await?;
    tx.commit().await?;
    Ok(answers)
}

/// Answers the group inside `tx`: the rows of every part's jobs are locked
/// together in one id order (so two groups, or a group and a lone batch,
/// never wait on each other in a cycle), the fresh claims of every part
/// start in one statement, and the rest are decided one at a time in job
/// id order.
async fn claim_parts_in(
    tx: &Transaction<'_>,
    parts: &[Part<'_>],
    flat: &[(&str, &ShardClaim)],
    silent_after: Duration,
) -> Result<Vec<PartAnswers>, DbError> {
    // A small group's statements with the plans they were given once.
    let head = super::plan_once_sql(flat.len());
    let fresh = fresh(flat);
    let (mut registered, mut started) =
        lock_and_start(tx, head, (START_FRESH, &fresh), parts, flat, None).await?;
    let mut answers = started_answers(flat, &mut started, &mut registered);
    let mut rest: Vec<usize> = (0..flat.len())
        .filter(|&i| answers[i].is_none() && registered.contains(flat[i].0))
        .collect();
    rest.sort_by_key(|&i| flat[i].1.job_id);
    let mut ran_one_by_one = BTreeSet::new();
    for i in rest {
        let (worker_id, claim) = flat[i];
        let answer = decide_claim(tx, &claim.by(worker_id), silent_after).await?;
        if answer.0 .0 == ClaimDecision::Run {
            ran_one_by_one.insert(worker_id);
        }
        answers[i] = Some(answer);
    }
    // The one-statement path recorded its starts on the workers themselves.
    for worker_id in ran_one_by_one {
        workers::claimed(tx, worker_id).await?;
    }
    Ok(split(parts, &registered, answers))
}

/// The group's answers for the claims the start statement started (`Run`
/// with their work, taken out of `started`), `None` for the others. A
/// worker whose registration committed between the lock and the start has
/// starts recorded: it counts as registered, so that they are answered (and
/// kept) rather than handed back as never registered.
fn started_answers(
    flat: &[(&str, &ShardClaim)],
    started: &mut HashMap<Uuid, ShardWork>,
    registered: &mut HashSet<String>,
) -> Answers {
    flat.iter()
        .map(|(worker_id, c)| {
            let work = started.remove(&c.job_id)?;
            registered.insert((*worker_id).to_owned());
            Some(((ClaimDecision::Run, "started".to_owned()), Some(work)))
        })
        .collect()
}

/// The group's answers cut into its parts, `None` for a part whose worker
/// never registered.
fn split(
    parts: &[Part<'_>],
    registered: &HashSet<String>,
    answers: Vec<Option<(Claim, Option<ShardWork>)>>,
) -> Vec<PartAnswers> {
    let mut answers = answers.into_iter();
    parts
        .iter()
        .map(|p| {
            let mine: Vec<_> = answers.by_ref().take(p.claims.len()).collect();
            if registered.contains(p.worker_id) {
                mine.into_iter().collect()
            } else {
                None
            }
        })
        .collect()
}

/// [`lock_and_start`]'s lock: `$1` the job ids, `$2` the workers.
const LOCK_PARTS: &str =
    "WITH l AS (SELECT job_id FROM jobs WHERE job_id = ANY($1) ORDER BY job_id FOR NO KEY UPDATE)
     SELECT (SELECT count(*) FROM l), ARRAY(SELECT worker_id FROM workers WHERE worker_id = ANY($2))";

/// Sends `head` (the transaction's `BEGIN`, or its `SET LOCAL`, if any),
/// the lock of the group's rows in id order ([`LOCK_PARTS`], which also
/// answers which workers have registered), `starting`'s start statement
/// over its claims (none sent for none) and `tail` (its `COMMIT`, if any)
/// together, in that order (both statements prepared first: a cache hit
/// sends nothing): the group's rows are locked before any is started.
/// Answers the registered workers and the started work by job id.
async fn lock_and_start(
    client: &impl GenericClient,
    head: Option<&str>,
    (start_sql, starting): (&str, &[(&str, &ShardClaim)]),
    parts: &[Part<'_>],
    flat: &[(&str, &ShardClaim)],
    tail: Option<&str>,
) -> Result<(HashSet<String>, HashMap<Uuid, ShardWork>), DbError> {
    let (lock, start) = futures::try_join!(
        client.prepare_cached(LOCK_PARTS),
        client.prepare_cached(start_sql)
    )?;
    let ids: Vec<Uuid> = flat.iter().map(|(_, c)| c.job_id).collect();
    let workers: Vec<&str> = parts.iter().map(|p| p.worker_id).collect();
    let c = Starts::of(starting)?;
    let (lock_params, start_params) = ([&ids as &(dyn ToSql + Sync), &workers], c.params());
    let start = async {
        if starting.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&start, &start_params).await
    };
    let ((), locked, rows, ()) = futures::try_join!(
        super::send_if(client, head),
        client.query_one(&lock, &lock_params),
        start,
        super::send_if(client, tail)
    )?;
    Ok((registered(&locked)?, started_work(&rows)?))
}

/// The registered workers in a row of [`LOCK_PARTS`].
fn registered(row: &tokio_postgres::Row) -> Result<HashSet<String>, DbError> {
    let registered: Vec<String> = row.try_get(1)?;
    Ok(registered.into_iter().collect())
}

/// The claims the one-statement path may decide: a fresh delivery (not
/// redelivered) of a job that appears once in the group.
fn fresh<'a>(flat: &[(&'a str, &'a ShardClaim)]) -> Vec<(&'a str, &'a ShardClaim)> {
    let once = named_once(flat.iter().map(|(_, c)| c.job_id));
    flat.iter()
        .filter(|(_, c)| !c.redelivered && once.contains(&c.job_id))
        .copied()
        .collect()
}

/// Whether claim `r` may start its job (locked, as `jobs`) on the
/// one-statement path.
macro_rules! startable {
    () => {
        "jobs.job_id = r.job_id AND (jobs.status IN ('pending', 'queued')) IS TRUE
         AND jobs.attempts + 1 = r.attempt AND jobs.deps_waiting = 0
         AND r.shard_index >= 0 AND r.shard_index < jobs.required_workers
         AND EXISTS (SELECT 1 FROM workers w WHERE w.worker_id = r.worker_id
                     AND jobs.pool = ANY(w.pools) AND w.labels @> jobs.selector)"
    };
}

/// A start statement: `$1`–`$4` the claims' job ids, attempts, shard
/// indexes and claiming workers. `start_sql!(every)` starts the rows only
/// when every claim may start (the common-table expression `ok` answers
/// that); `start_sql!()` starts those that may.
macro_rules! start_sql {
    () => { start_sql!(@ [] "") };
    (every) => { start_sql!(@ [
        "ok AS MATERIALIZED (SELECT count(*) = cardinality($1::uuid[]) AS every FROM r JOIN jobs ON ",
        startable!(),
        "),
             ",
    ] " AND (SELECT every FROM ok)") };
    (@ [$($ok:tt)*] $every:literal) => { concat!(
    "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[]) AS r(job_id, attempt, shard_index, worker_id)),
             o AS MATERIALIZED (SELECT jobs.job_id, jobs.status AS was FROM jobs JOIN r ON r.job_id = jobs.job_id),
             ",
        $($ok)*
        "j AS (UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1,
                          queued_at = CASE WHEN jobs.status = 'pending' THEN now() ELSE jobs.queued_at END,
                          started_at = coalesce(jobs.started_at, now()), waiting_for = NULL
                   FROM r
                   WHERE ",
        startable!(),
        $every,
        "
                   RETURNING jobs.job_id, jobs.attempts, r.shard_index, r.worker_id, jobs.task_description,
                             jobs.command, jobs.timeout_seconds, jobs.required_workers, jobs.memory_mb,
                             jobs.cpu_millis, jobs.max_pids),
             e AS (INSERT INTO job_events (job_id, from_status, to_status, worker_id, reason, attempt)
                   SELECT job_id, f, t, w, why, a FROM (
                       SELECT j.job_id, 'pending' AS f, 'queued' AS t, NULL::text AS w, 'published' AS why,
                              j.attempts - 1 AS a, 0 AS step
                       FROM j JOIN o ON o.job_id = j.job_id WHERE o.was = 'pending'
                       UNION ALL
                       SELECT job_id, 'queued', 'running', worker_id, 'started attempt ' || attempts, attempts, 1 FROM j
                   ) x ORDER BY job_id, step),
             s AS (INSERT INTO job_shards (job_id, shard_index, attempt, worker_id, worker_generation, status)
                   SELECT j.job_id, j.shard_index, j.attempts, j.worker_id, g.generation, 'running'
                   FROM j JOIN workers g ON g.worker_id = j.worker_id),
             w AS (",
    workers::record_claim_sql!("SELECT worker_id FROM j"),
    ")
             SELECT * FROM j"
    ) };
}

/// The usual transaction's start statement: starts every fresh claim
/// whose job is `queued` (or still `pending`: the relay published it but
/// has not yet committed that, and the claim records it, as alone) at the
/// attempt before the claimed one with the shard in range: the job becomes
/// `running` with the attempt counted, its events and its shard (held by
/// the claiming worker's current incarnation) are written, and it no
/// longer waits for a worker; every worker that started one has its row
/// record the claim as [`workers::claimed`] would (busy, heard from), in
/// the same statement rather than a round trip of its own. A job a worker
/// may not run (its pool, its selector), or any job of a worker that never
/// registered, is left to the single claim's rules, which refuse it; the
/// caller decides those one by one.
const START_FRESH: &str = start_sql!();

/// [`start_all_at_once`]'s statement: starts every claim, or none when one
/// of them may not start.
const START_EVERY: &str = start_sql!(every);

/// The group as one round trip, when every claim is fresh: `BEGIN`, the
/// lock of the jobs' rows in id order ([`LOCK_PARTS`], which also answers
/// which workers have registered), [`START_EVERY`] and `COMMIT`, sent
/// together (Postgres runs them in the order sent). Answers the group's
/// answers when every claim started; `None` when a claim is not fresh
/// (nothing was sent) or when the statement started none (nothing was
/// written): the caller then answers the group in the usual transaction.
async fn start_all_at_once(
    conn: &mut AtOnce,
    parts: &[Part<'_>],
    flat: &[(&str, &ShardClaim)],
) -> Result<Option<Vec<PartAnswers>>, DbError> {
    if flat.is_empty() || fresh(flat).len() != flat.len() {
        return Ok(None);
    }
    let begin = conn.begin(flat.len());
    let starting = (START_EVERY, flat);
    let sent = lock_and_start(conn.client(), Some(begin), starting, parts, flat, Some("COMMIT")).await;
    let (mut registered, mut started) = conn.or_roll_back(sent).await?;
    conn.ended();
    if started.len() != flat.len() {
        return Ok(None);
    }
    let answers = started_answers(flat, &mut started, &mut registered);
    Ok(Some(split(parts, &registered, answers)))
}

/// A start statement's parameters, one array per column.
struct Starts<'a> {
    /// The claims' job ids.
    ids: Vec<Uuid>,
    /// The claimed attempts.
    attempts: Vec<i32>,
    /// The claimed shards.
    shards: Vec<i32>,
    /// The claiming workers.
    workers: Vec<&'a str>,
}

impl<'a> Starts<'a> {
    /// The parameters of `claims`, after checking that the state machines
    /// allow what the statement does.
    fn of(claims: &[(&'a str, &ShardClaim)]) -> Result<Self, DbError> {
        JobStatus::Pending.transition(JobStatus::Queued)?;
        JobStatus::Queued.transition(JobStatus::Running)?;
        WorkerStatus::Idle.transition(WorkerStatus::Busy)?;
        Ok(Starts {
            ids: claims.iter().map(|(_, c)| c.job_id).collect(),
            attempts: claims.iter().map(|(_, c)| c.attempt).collect(),
            shards: claims.iter().map(|(_, c)| c.shard_index).collect(),
            workers: claims.iter().map(|(w, _)| *w).collect(),
        })
    }

    /// `$1`–`$4` of [`start_sql`].
    fn params(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.ids, &self.attempts, &self.shards, &self.workers]
    }
}

/// The started jobs' work by job id, from a start statement's rows.
fn started_work(rows: &[tokio_postgres::Row]) -> Result<HashMap<Uuid, ShardWork>, DbError> {
    rows.iter()
        .map(|r| Ok((r.try_get("job_id")?, shard_work(r)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_all_or_none_start_asks_whether_every_claim_may_start() {
        let ok_start = START_EVERY
            .find("ok AS MATERIALIZED")
            .expect("START_EVERY has ok");
        let ok_end = ok_start + START_EVERY[ok_start..].find("j AS").expect("j follows ok");
        let without_ok = format!("{}{}", &START_EVERY[..ok_start], &START_EVERY[ok_end..]);
        assert_eq!(
            without_ok.replacen(" AND (SELECT every FROM ok)", "", 1),
            START_FRESH
        );
        assert!(!START_FRESH.contains("ok"), "{START_FRESH}");
    }
}
