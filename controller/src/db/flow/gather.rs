//! Several agents' claim requests gathered into shared transactions. Alone,
//! each request is a transaction of its own: its row locks, its start
//! statement and a commit (a WAL flush), and with many agents each holding
//! a few slots a request mostly carries one or two claims. Here concurrent
//! requests take turns ([`Batches`]): whoever gets a turn answers every
//! request queued by then in one transaction ([`claim_parts`], sent at once
//! when every claim is fresh), one part per agent, and hands each its own
//! answers. A lone request still goes at once.
//!
//! Every answer is the one the request would get alone. When the shared
//! transaction fails (a deadlock with a lone request, a statement refused:
//! nothing of it was kept), or a part's worker never registered, the
//! requests are handed back ([`GatheredClaims::Alone`]) to be answered one
//! transaction each, with their own retries and errors. Only when Postgres
//! could not be reached, so that whether a commit took is unknown, is every
//! request it held answered with that failure.

use super::claims::{claim_parts, Part};
use super::Claim;
use crate::db::Database;
use orchestrator_shared::api::{ShardClaim, ShardWork};
use orchestrator_shared::batches::Batches;
use std::time::Duration;

/// Shared transactions out at once: two, so that two agents' requests
/// never wait for each other, and requests gather only when a third
/// arrives while two are out. With one out, the second agent's claims
/// waited for the first's commit: paced at 500 jobs/s (2 `noop-agent`s,
/// 10-job submissions), submit→start was p50 8.6–9.1 ms and p99
/// 24.9–26.2 against 7.5–7.7 and 21.1–24.4 with two (and 7.2–7.8 and
/// 22.2–38.6 with every request alone). With 4 agents × 4 slots and 10 ms
/// jobs (requests of 1.5 claims on average), two out took Postgres to
/// 1.01–1.07 CPU ms per job, one to 0.93–0.97, every request alone to
/// 1.10–1.14, at the same rate (364–412 jobs/s).
const IN_FLIGHT: usize = 2;
/// Most claims a request may carry to be gathered; a larger one goes
/// alone. Such a request already shares its transaction's fixed cost
/// (round trips, a commit) among its claims, and gathered with another
/// large one it would only take the two out of Postgres's two backends
/// into one: with 2 `noop-agent`s × 64 (requests of up to 128 claims),
/// gathering every request completed 30,000 jobs at 3,284–3,448 jobs/s
/// against 3,560–3,645 alone.
pub const GATHER_UP_TO: usize = 8;
/// Most agents' requests in one transaction.
const MAX_REQUESTS: usize = 64;
/// Most claims in one transaction.
const MAX_CLAIMS: usize = MAX_REQUESTS * GATHER_UP_TO;

/// One agent's claim request waiting for a turn.
struct Request {
    /// The claiming worker, checked against the credential.
    worker_id: String,
    /// Its claims, in order.
    claims: Vec<ShardClaim>,
}

/// What became of a gathered claim request.
#[derive(Debug)]
pub enum GatheredClaims {
    /// Answered and committed with others: one answer per claim, in order.
    Done(Vec<(Claim, Option<ShardWork>)>),
    /// Not answered: the shared transaction failed (nothing of it was
    /// kept), or the worker never registered. The caller answers it alone,
    /// as if it had never waited.
    Alone,
    /// Postgres could not be reached, so whether the starts took is unknown.
    Failed {
        /// Whether Postgres could not be reached (503, not 500).
        unavailable: bool,
    },
}

/// Concurrent claim requests, answered in shared transactions.
pub struct ClaimGather {
    /// Requests waiting for a turn.
    batches: Batches<Request, GatheredClaims>,
}

impl Default for ClaimGather {
    fn default() -> Self {
        ClaimGather {
            batches: Batches::new(IN_FLIGHT, MAX_REQUESTS, MAX_CLAIMS, |r| r.claims.len()),
        }
    }
}

impl std::fmt::Debug for ClaimGather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimGather")
            .field("queued", &self.batches.queued())
            .finish()
    }
}

impl ClaimGather {
    /// Answers `claims` of `worker_id` (already checked against the
    /// caller's credential) in a transaction shared with whatever other
    /// agents' requests are waiting; `silent_after` is the heartbeat
    /// timeout.
    pub async fn claim(
        &self,
        db: &Database,
        silent_after: Duration,
        worker_id: String,
        claims: Vec<ShardClaim>,
    ) -> GatheredClaims {
        let item = Request { worker_id, claims };
        self.batches
            .submit(item, |group| answer_group(db, silent_after, group))
            .await
            .unwrap_or_else(|| {
                tracing::error!("a gathered claim request was not answered");
                GatheredClaims::Failed { unavailable: false }
            })
    }
}

/// Answers `group` together, each request in the group's order.
async fn answer_group(db: &Database, silent_after: Duration, group: Vec<Request>) -> Vec<GatheredClaims> {
    let parts: Vec<Part<'_>> = group
        .iter()
        .map(|r| Part {
            worker_id: &r.worker_id,
            claims: &r.claims,
        })
        .collect();
    let answered = match db.client().await {
        Ok(client) => {
            tracing::debug!(requests = group.len(), "answering gathered claims");
            claim_parts(client, &parts, silent_after).await
        }
        Err(e) => Err(e),
    };
    match answered {
        Ok(answers) => answers
            .into_iter()
            .map(|a| a.map_or(GatheredClaims::Alone, GatheredClaims::Done))
            .collect(),
        Err(e) => {
            let unavailable = e.is_unavailable();
            tracing::debug!(error = %e, unavailable, "gathered claims failed");
            let failed = || {
                if unavailable {
                    GatheredClaims::Failed { unavailable }
                } else {
                    GatheredClaims::Alone
                }
            };
            group.iter().map(|_| failed()).collect()
        }
    }
}
