//! Requests gathered into batches by taking turns. Sent one at a time,
//! each of a busy agent's claims cost a round trip and a transaction, each
//! shard report a message, a confirm and a delivery, and each submission
//! to the controller a transaction of its own. Here every item
//! joins a queue and at most `in_flight` batches are out at once: whoever
//! gets a turn sends everything queued by then (up to a batch's bounds) and
//! hands each item its answer; a caller whose item another turn answered
//! returns without a turn. A turn first lets every other ready task run,
//! so items that arrive together leave together; a lone item then goes out
//! at once (no timer adds latency); under load the queue fills while the
//! batches in flight are answered, so the batches grow with the load. No
//! task runs in the background: the callers take turns.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{oneshot, Semaphore};

/// An item waiting for its turn.
struct Waiting<T, A> {
    /// What to send.
    item: T,
    /// Where its answer goes.
    answer: oneshot::Sender<A>,
}

/// Items of type `T` sent in batches, each answered with an `A`.
pub struct Batches<T, A> {
    /// Items not yet sent, oldest first.
    queue: Mutex<Vec<Waiting<T, A>>>,
    /// Turns to send: how many batches may be out at once.
    turns: Semaphore,
    /// Most items in one batch.
    max_items: usize,
    /// Most total weight in one batch (its first item always goes, however
    /// heavy), so that a batch of large items stays a reasonable message.
    max_weight: usize,
    /// An item's weight.
    weight: fn(&T) -> usize,
}

impl<T, A> Batches<T, A> {
    /// Batches of at most `max_items` items weighing at most `max_weight`
    /// together, `in_flight` of them out at once.
    pub fn new(in_flight: usize, max_items: usize, max_weight: usize, weight: fn(&T) -> usize) -> Self {
        Batches {
            queue: Mutex::new(Vec::new()),
            turns: Semaphore::new(in_flight.max(1)),
            max_items: max_items.max(1),
            max_weight,
            weight,
        }
    }

    /// Queues `item` and waits for a turn; a turn sends what is queued by
    /// then through `send`, which answers a batch's items in their order.
    /// Returns `item`'s answer; `None` when its batch got no answer for it
    /// (`send` answered fewer items than it was given).
    pub async fn submit<F, Fut>(&self, item: T, send: F) -> Option<A>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<A>>,
    {
        let (answer, mut answered) = oneshot::channel();
        self.queue().push(Waiting { item, answer });
        // Every caller waits for a turn of its own, so no item is left
        // queued, unless another turn's batch answers it first: a caller
        // that took a turn once answered would send the items queued since
        // in a batch of their own, and hold the turn a round trip for them.
        let turn = tokio::select! {
            biased;
            got = &mut answered => return got.ok(),
            turn = self.turns.acquire() => turn,
        };
        if let Ok(_turn) = turn {
            // Items that arrived together (a burst of deliveries, each in a
            // task of its own) are queued once every task ready now has run:
            // let them, so that the first of a burst does not go alone and
            // hold a turn while the rest wait for it. No timer: a lone item
            // loses only the time the other ready tasks take.
            tokio::task::yield_now().await;
            let batch = self.take_batch();
            if !batch.is_empty() {
                let (items, answers): (Vec<T>, Vec<oneshot::Sender<A>>) =
                    batch.into_iter().map(|w| (w.item, w.answer)).unzip();
                for (to, answer) in answers.into_iter().zip(send(items).await) {
                    let _ = to.send(answer);
                }
            }
        }
        answered.await.ok()
    }

    /// How many items wait for a turn.
    pub fn queued(&self) -> usize {
        self.queue().len()
    }

    fn queue(&self) -> MutexGuard<'_, Vec<Waiting<T, A>>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The oldest queued items, within a batch's bounds.
    fn take_batch(&self) -> Vec<Waiting<T, A>> {
        let mut queue = self.queue();
        let mut weight = 0usize;
        let n = queue
            .iter()
            .take(self.max_items)
            .enumerate()
            .take_while(|(i, w)| {
                weight = weight.saturating_add((self.weight)(&w.item));
                *i == 0 || weight <= self.max_weight
            })
            .count();
        queue.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn one(_: &u32) -> usize {
        1
    }

    /// Sends each batch after a pause, recording the batches it saw, and
    /// answers each item with its double.
    async fn submit_all(
        batches: Arc<Batches<u32, u32>>,
        items: u32,
        seen: Arc<Mutex<Vec<Vec<u32>>>>,
    ) -> Vec<Option<u32>> {
        let callers = (0..items).map(|i| {
            let (batches, seen) = (Arc::clone(&batches), Arc::clone(&seen));
            tokio::spawn(async move {
                batches
                    .submit(i, |batch| async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let answers = batch.iter().map(|i| i * 2).collect();
                        seen.lock().unwrap().push(batch);
                        answers
                    })
                    .await
            })
        });
        let callers: Vec<_> = callers.collect();
        let mut answers = Vec::new();
        for caller in callers {
            answers.push(caller.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn under_load_items_share_batches_and_each_gets_its_own_answer() {
        let batches = Arc::new(Batches::new(1, 8, usize::MAX, one));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = submit_all(batches, 20, Arc::clone(&seen)).await;
        assert_eq!(answers, (0..20).map(|i| Some(i * 2)).collect::<Vec<_>>());
        let seen = seen.lock().unwrap();
        let mut sent: Vec<u32> = seen.iter().flatten().copied().collect();
        sent.sort_unstable();
        assert_eq!(sent, (0..20).collect::<Vec<_>>(), "every item sent exactly once");
        assert!(seen.iter().all(|b| b.len() <= 8), "{seen:?}");
        assert!(
            seen.len() < 20,
            "items waiting for a turn share a batch: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_lone_item_goes_at_once_and_heavy_items_split_batches() {
        let batches = Arc::new(Batches::new(1, 8, 10, |i: &u32| *i as usize));
        let seen = Arc::new(Mutex::new(Vec::new()));
        assert_eq!(
            submit_all(Arc::clone(&batches), 1, Arc::clone(&seen)).await,
            vec![Some(0)]
        );
        batches.queue().extend([6u32, 6, 20, 1].map(|item| Waiting {
            item,
            answer: oneshot::channel().0,
        }));
        let sizes: Vec<Vec<u32>> = (0..3)
            .map(|_| batches.take_batch().into_iter().map(|w| w.item).collect())
            .collect();
        assert_eq!(
            sizes,
            vec![vec![6], vec![6], vec![20]],
            "the first item goes however heavy"
        );
        assert_eq!(batches.queued(), 1);
    }

    #[tokio::test]
    async fn items_that_arrive_together_leave_in_one_batch() {
        // Two turns, as the agent's claims and reports have: before a turn
        // let the other ready tasks queue their items, the first item of a
        // burst went alone, the second too, and only then the rest.
        let batches = Arc::new(Batches::new(2, 64, usize::MAX, one));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = submit_all(batches, 20, Arc::clone(&seen)).await;
        assert_eq!(answers, (0..20).map(|i| Some(i * 2)).collect::<Vec<_>>());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(0..20).collect::<Vec<_>>()],
            "a burst is one batch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_answered_in_another_turns_batch_does_not_wait_for_a_turn() {
        let batches = Arc::new(Batches::new(1, 64, usize::MAX, one));
        let start = tokio::time::Instant::now();
        let submit = |i: u32| {
            let batches = Arc::clone(&batches);
            tokio::spawn(async move {
                let answer = batches
                    .submit(i, |batch| async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        batch.iter().map(|i| i * 2).collect()
                    })
                    .await;
                (answer, start.elapsed())
            })
        };
        // 0 goes alone (0–20 ms); 1 to 5 queue meanwhile and go together
        // (20–40 ms); 6 arrives while they are out and waits for the turn.
        let first = submit(0);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let together: Vec<_> = (1..=5).map(submit).collect();
        tokio::time::sleep(Duration::from_millis(24)).await;
        let late = submit(6);
        for (i, caller) in (1u32..).zip(together) {
            let (answer, took) = caller.await.unwrap();
            assert_eq!(answer, Some(i * 2));
            assert!(
                took <= Duration::from_millis(41),
                "item {i} was answered at 40 ms but returned after {took:?}"
            );
        }
        assert_eq!(first.await.unwrap().0, Some(0));
        assert_eq!(late.await.unwrap().0, Some(12));
    }

    #[tokio::test]
    async fn an_item_its_batch_did_not_answer_learns_it() {
        let batches: Batches<u32, u32> = Batches::new(2, 8, usize::MAX, one);
        assert_eq!(batches.submit(7, |_| async { Vec::new() }).await, None);
    }
}
