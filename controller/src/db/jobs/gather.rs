//! Submissions gathered into shared transactions. Alone, each submission
//! is a transaction of its own: eight round trips and a commit (a WAL
//! flush) for what is often one job, which is how a queue is mostly used
//! (one job per call, from many threads or processes). Here concurrent
//! submissions without dependencies take turns ([`Batches`]): whoever gets
//! a turn writes every submission queued by then in one transaction, one
//! [`submit_batch`](super::submit_batch) per user (so the user's lock, quota and idempotency
//! keys hold as for one batch), and answers each submission its own jobs.
//! A lone submission still goes at once.
//!
//! Every answer is the one the submission would get alone. A user's part
//! that fails (a quota, a key reused with another body, a user deleted
//! meanwhile) is rolled back and its submissions are handed back
//! ([`Gathered::Alone`]) to be written one transaction each, so that each
//! gets its own answer. Only a failed commit is answered to every
//! submission it held: whether it took is unknown, and writing them again
//! could make every job twice.

use super::submit::{lock_user, submit_locked};
use super::Submitted;
use crate::db::{quotas, Database, DbError};
use crate::models::{NewJob, Quota};
use deadpool_postgres::Transaction;
use orchestrator_shared::batches::Batches;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Shared transactions out at once: one. Everything that arrives while it
/// commits is the next one. With two, one user's second transaction only
/// waited on the first's lock on the user's row (3.1 ms mean, about one
/// WAL flush here) and closed its batch early: on the 2-core test box,
/// single-job submissions from eight connections (`loadgen --batch 1
/// --connections 8 --rate 500`) completed 314 and 335 jobs/s with two and
/// 451 and 414 with one, at 4.2–4.5 ms of the box per job against
/// 5.5–6.0, and the requests' p99 fell from 50–55 to 35 ms. Capacity
/// (100,000 jobs in batches of 500) and 10-job requests at 500/s were
/// unchanged; `api-bench --requests 3000 --concurrency 32` submitted
/// 2,443 and 1,990 requests/s against 1,691 and 1,746. Several users'
/// submissions still share the one transaction, one part each. The price:
/// a part that waits on its user's row (locked by a change of that user)
/// holds every user's next submissions back until that change commits.
const IN_FLIGHT: usize = 1;
/// Most submissions in one transaction.
const MAX_SUBMISSIONS: usize = 1_000;
/// Most jobs in one transaction (a larger submission still goes, alone):
/// the most one batch request may carry.
const MAX_JOBS: usize = 10_000;

/// One submission waiting for a turn.
struct Submission {
    /// Who submits.
    user_id: Uuid,
    /// Its jobs, none with dependencies.
    news: Vec<NewJob>,
}

/// What became of a gathered submission.
#[derive(Debug)]
pub enum Gathered {
    /// Written and committed with others: one entry per job, in order.
    Done(Vec<Submitted>),
    /// Not written: its user's part failed, or the shared transaction could
    /// not start. The caller writes it alone, as if it had never waited.
    Alone(Vec<NewJob>),
    /// The shared commit failed, so whether it was written is unknown.
    Failed {
        /// Whether Postgres could not be reached (503, not 500).
        unavailable: bool,
    },
}

/// Concurrent submissions, written in shared transactions.
pub struct Gather {
    /// Submissions waiting for a turn.
    batches: Batches<Submission, Gathered>,
}

impl Default for Gather {
    fn default() -> Self {
        Gather {
            batches: Batches::new(IN_FLIGHT, MAX_SUBMISSIONS, MAX_JOBS, |s| s.news.len()),
        }
    }
}

impl std::fmt::Debug for Gather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gather")
            .field("queued", &self.batches.queued())
            .finish()
    }
}

impl Gather {
    /// Writes `news` for `user_id` (whose quota, without a row of its own,
    /// is `default`) in a transaction shared with whatever other
    /// submissions are waiting. `news` must not depend on other jobs: a
    /// dependency's index names a job of its own request.
    pub async fn submit(&self, db: &Database, default: Quota, user_id: Uuid, news: Vec<NewJob>) -> Gathered {
        let item = Submission { user_id, news };
        self.batches
            .submit(item, |group| write_group(db, default, group))
            .await
            .unwrap_or_else(|| {
                tracing::error!("a gathered submission was not answered");
                Gathered::Failed { unavailable: false }
            })
    }
}

/// A user's submissions in a group: their places in it and their jobs.
type Part = (Vec<usize>, Vec<Vec<NewJob>>);

/// Writes `group` in one transaction, one part per user in id order (so
/// that two shared transactions lock users' rows in the same order), and
/// answers each submission in the group's order.
async fn write_group(db: &Database, default: Quota, group: Vec<Submission>) -> Vec<Gathered> {
    let n = group.len();
    let mut parts: BTreeMap<Uuid, Part> = BTreeMap::new();
    for (i, s) in group.into_iter().enumerate() {
        let part = parts.entry(s.user_id).or_default();
        part.0.push(i);
        part.1.push(s.news);
    }
    let mut answers: Vec<Option<Gathered>> = (0..n).map(|_| None).collect();
    tracing::debug!(
        submissions = n,
        users = parts.len(),
        "writing gathered submissions"
    );
    let mut client = match db.client().await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = ?e, "no connection for gathered submissions; each goes alone");
            return alone(parts, answers);
        }
    };
    let mut tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => {
            tracing::warn!(error = ?e, "gathered submissions could not begin; each goes alone");
            return alone(parts, answers);
        }
    };
    let several = parts.len() > 1;
    let mut written = Vec::new();
    for (user_id, (places, news)) in parts {
        match write_part(&mut tx, default, user_id, news, several).await {
            Ok(done) => written.extend(places.into_iter().zip(done)),
            Err(news) => hand_back(&mut answers, places, news),
        }
    }
    let committed = if written.is_empty() {
        Ok(())
    } else {
        tx.commit().await
    };
    settle(committed, written, answers)
}

/// Answers every written submission once the commit is known, and the
/// rest as they were decided.
fn settle(
    committed: Result<(), tokio_postgres::Error>,
    written: Vec<(usize, Vec<Submitted>)>,
    mut answers: Vec<Option<Gathered>>,
) -> Vec<Gathered> {
    match committed {
        Ok(()) => {
            for (place, done) in written {
                answers[place] = Some(Gathered::Done(done));
            }
        }
        Err(e) => {
            let e = DbError::from(e);
            tracing::error!(error = ?e, submissions = written.len(), "a shared submission commit failed");
            let unavailable = e.is_unavailable();
            for (place, _) in written {
                answers[place] = Some(Gathered::Failed { unavailable });
            }
        }
    }
    finish(answers)
}

/// The answers, every submission having one (a gap would be a bug:
/// answered as a failure, never left waiting).
fn finish(answers: Vec<Option<Gathered>>) -> Vec<Gathered> {
    answers
        .into_iter()
        .map(|a| a.unwrap_or(Gathered::Failed { unavailable: false }))
        .collect()
}

/// Every submission of `parts` handed back to be written alone.
fn alone(parts: BTreeMap<Uuid, Part>, mut answers: Vec<Option<Gathered>>) -> Vec<Gathered> {
    for (places, news) in parts.into_values() {
        hand_back(&mut answers, places, news);
    }
    finish(answers)
}

/// Answers the submissions at `places` with their own jobs, to be written
/// alone.
fn hand_back(answers: &mut [Option<Gathered>], places: Vec<usize>, news: Vec<Vec<NewJob>>) {
    for (place, news) in places.into_iter().zip(news) {
        answers[place] = Some(Gathered::Alone(news));
    }
}

/// Writes one user's submissions as one batch (inside a savepoint when
/// others share the transaction) and splits the answer per submission.
/// On failure the part is rolled back and its jobs handed back.
async fn write_part(
    tx: &mut Transaction<'_>,
    default: Quota,
    user_id: Uuid,
    news: Vec<Vec<NewJob>>,
    savepoint: bool,
) -> Result<Vec<Vec<Submitted>>, Vec<Vec<NewJob>>> {
    let sizes: Vec<usize> = news.iter().map(Vec::len).collect();
    let all: Vec<NewJob> = news.into_iter().flatten().collect();
    let written = if savepoint {
        in_savepoint(tx, default, user_id, &all).await
    } else {
        write_batch(tx, default, user_id, &all).await
    };
    match written {
        Ok(out) => Ok(split(out, &sizes)),
        Err(e) => {
            tracing::debug!(error = %e, "a gathered part failed; its submissions go alone");
            Err(split(all, &sizes))
        }
    }
}

/// [`write_batch`] inside a savepoint, rolled back to it on failure.
async fn in_savepoint(
    tx: &mut Transaction<'_>,
    default: Quota,
    user_id: Uuid,
    news: &[NewJob],
) -> Result<Vec<Submitted>, DbError> {
    let part = tx.savepoint("part").await?;
    match write_batch(&part, default, user_id, news).await {
        Ok(out) => {
            part.commit().await?;
            Ok(out)
        }
        Err(e) => {
            part.rollback().await?;
            Err(e)
        }
    }
}

/// One user's jobs as one batch under the user's quota (its own row, else
/// `default`): what a gathered part writes, and a submission written alone.
pub async fn write_batch(
    tx: &Transaction<'_>,
    default: Quota,
    user_id: Uuid,
    news: &[NewJob],
) -> Result<Vec<Submitted>, DbError> {
    // The quota's read goes out with the lock and the count: one round trip.
    let (quota, waiting) = futures::try_join!(quotas::get(tx, user_id, default), lock_user(tx, user_id))?;
    submit_locked(tx, user_id, news, quota, waiting).await
}

/// `items` cut into consecutive runs of `sizes`.
fn split<T>(items: Vec<T>, sizes: &[usize]) -> Vec<Vec<T>> {
    let mut items = items.into_iter();
    sizes.iter().map(|&n| items.by_ref().take(n).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::split;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn split_gives_each_submission_its_own_jobs_in_order(sizes in prop::collection::vec(0usize..5, 0..8)) {
            let total: usize = sizes.iter().sum();
            let parts = split((0..total).collect::<Vec<_>>(), &sizes);
            prop_assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), sizes);
            prop_assert_eq!(parts.concat(), (0..total).collect::<Vec<_>>());
        }
    }
}
