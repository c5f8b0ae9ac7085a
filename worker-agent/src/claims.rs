//! Claims gathered into batches. A busy agent's deliveries each need a
//! claim; sent one request each, they cost a round trip and a transaction
//! apiece. Here every claim joins a queue, and at most [`IN_FLIGHT`]
//! requests are out at once: whoever gets a turn sends everything queued
//! by then as one `POST /api/agents/claims`. An idle agent's claim goes
//! out at once, alone (no timer adds latency); under load the queue fills
//! while the requests in flight are answered, so the batches grow with the
//! load. No task runs in the background: the callers take turns.
//!
//! A controller that predates `/api/agents/claims` answers 404; the agent
//! then claims one request per shard from there on.

use crate::client::{ClientError, ControllerClient};
use orchestrator_shared::api::{
    ClaimBatchRequest, ClaimRequest, ClaimResponse, ShardClaim, MAX_CLAIMS_PER_REQUEST,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, Semaphore};

/// Claim requests out at once: two, so one slow answer (a claim waiting
/// on a job's lock) does not hold every other claim back.
const IN_FLIGHT: usize = 2;

/// What a queued claim learns: the controller's answer, or why there is
/// none (shared by every claim of the failed request).
pub type ClaimResult = Result<ClaimResponse, Arc<ClientError>>;

/// A claim waiting for its turn.
struct Waiting {
    /// The shard.
    claim: ShardClaim,
    /// Where its answer goes.
    answer: oneshot::Sender<ClaimResult>,
}

/// The agent's claims, batched (see the module's doc).
pub struct Claims {
    /// The controller's agent API.
    client: ControllerClient,
    /// The worker every claim is made for.
    worker_id: String,
    /// Claims not yet sent.
    queue: Mutex<Vec<Waiting>>,
    /// Turns to send.
    turns: Semaphore,
    /// Set once the controller turned out not to know batches.
    one_by_one: AtomicBool,
}

impl Claims {
    /// Claims for `worker_id` through `client`.
    pub fn new(client: ControllerClient, worker_id: String) -> Self {
        Claims {
            client,
            worker_id,
            queue: Mutex::new(Vec::new()),
            turns: Semaphore::new(IN_FLIGHT),
            one_by_one: AtomicBool::new(false),
        }
    }

    /// Asks the controller whether to run `claim`'s shard, in a batch with
    /// whatever other claims are waiting.
    pub async fn claim(&self, claim: ShardClaim) -> ClaimResult {
        if self.one_by_one.load(Ordering::Relaxed) {
            let single: ClaimRequest = claim.by(&self.worker_id);
            return self.client.claim(&single).await.map_err(Arc::new);
        }
        let (answer, answered) = oneshot::channel();
        self.queue().push(Waiting { claim, answer });
        // Every claimer waits for a turn of its own, so no claim is left
        // queued; by then another turn may have sent this one already.
        if let Ok(_turn) = self.turns.acquire().await {
            let batch = self.take_batch();
            if !batch.is_empty() {
                self.send(batch).await;
            }
        }
        answered.await.unwrap_or_else(|_| {
            Err(Arc::new(ClientError::Abandoned(
                "the claim's batch was abandoned before it was answered",
            )))
        })
    }

    fn queue(&self) -> MutexGuard<'_, Vec<Waiting>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Up to [`MAX_CLAIMS_PER_REQUEST`] of the queued claims, oldest first.
    fn take_batch(&self) -> Vec<Waiting> {
        let mut queue = self.queue();
        let n = queue.len().min(MAX_CLAIMS_PER_REQUEST);
        queue.drain(..n).collect()
    }

    /// Sends `batch` as one request and hands each claim its answer.
    async fn send(&self, batch: Vec<Waiting>) {
        let request = ClaimBatchRequest {
            worker_id: self.worker_id.clone(),
            claims: batch.iter().map(|w| w.claim).collect(),
        };
        let result = match self.client.claim_batch(&request).await {
            Ok(answer) if answer.answers.len() == batch.len() => Ok(answer.answers),
            Ok(answer) => Err(ClientError::Abandoned(if answer.answers.len() < batch.len() {
                "the controller answered fewer claims than were asked"
            } else {
                "the controller answered more claims than were asked"
            })),
            Err(e) => Err(e),
        };
        match result {
            Ok(answers) => {
                for (waiting, answer) in batch.into_iter().zip(answers) {
                    let _ = waiting.answer.send(Ok(answer));
                }
            }
            Err(e) => {
                if e.is_not_found() {
                    tracing::info!("the controller does not take batches of claims; claiming one by one");
                    self.one_by_one.store(true, Ordering::Relaxed);
                }
                let e = Arc::new(e);
                for waiting in batch {
                    let _ = waiting.answer.send(Err(Arc::clone(&e)));
                }
            }
        }
    }
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("worker_id", &self.worker_id)
            .field("queued", &self.queue().len())
            .finish_non_exhaustive()
    }
}
