//! Several controller replicas and no load balancer in front of them: the
//! agent and the CLI are given a comma-separated list of base URLs, stick
//! to the one that last answered, and move on by one rule, the same for
//! both: which failures mean "this replica cannot serve" and which are an
//! answer. Pure logic; the clients send the requests and log.
//!
//! Only a request that provably never reached a replica (no connection:
//! refused, unreachable, connect timeout, TLS handshake refused) is sent to
//! the next one at once. A request that may have reached it (a timeout
//! after sending, a connection lost mid-request, a 502, 503 or 504) is not
//! sent again elsewhere, since it may have been applied: its caller hears
//! of the failure and retries by its own rules, and the retry goes to the
//! next replica. Every other answer, a 4xx (409 included) or another 5xx,
//! is the controller's word and moves nothing.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a comma-separated list of controller URLs was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlListError {
    /// An entry is empty or blank (`a,,b`, a trailing comma, nothing at all).
    #[error("entry {0} of the controller URL list is empty")]
    Empty(usize),
}

/// The entries of a comma-separated list of base URLs, trimmed, in order;
/// each is non-empty (the callers check that each is a URL).
pub fn split_urls(raw: &str) -> Result<Vec<&str>, UrlListError> {
    raw.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, entry)| {
            if entry.is_empty() {
                Err(UrlListError::Empty(i + 1))
            } else {
                Ok(entry)
            }
        })
        .collect()
}

/// What a client does after one attempt at a replica failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// The request never reached the replica: send it to the next one now.
    RetryElsewhere,
    /// The replica may have received it but cannot serve now: the caller
    /// gets the failure (not resent: it may have been applied), and the
    /// next request goes to the next replica.
    NextTime,
    /// An answer: the replica serves; nothing moves.
    Stay,
}

impl Failover {
    /// The rule for an error status: 502, 503 and 504 say the replica (or
    /// a proxy before it) cannot serve now; any other status is an answer.
    pub fn for_status(status: u16) -> Failover {
        match status {
            502..=504 => Failover::NextTime,
            _ => Failover::Stay,
        }
    }

    /// The rule for a failed exchange: `connect` when no connection was
    /// made (the request never went out), else `lost` when it went out and
    /// no answer came (timeout, connection lost); otherwise (an answer that
    /// could not be read) the replica answered.
    pub fn for_transport(connect: bool, lost: bool) -> Failover {
        if connect {
            Failover::RetryElsewhere
        } else if lost {
            Failover::NextTime
        } else {
            Failover::Stay
        }
    }
}

/// Which replica of a list a client uses now; shared by every request of
/// the client (clones included, behind an `Arc`), so all move together.
#[derive(Debug)]
pub struct Preferred {
    /// The index of the replica in use.
    current: AtomicUsize,
    /// How many replicas there are.
    len: NonZeroUsize,
}

impl Preferred {
    /// The first of `len` replicas.
    pub fn new(len: NonZeroUsize) -> Self {
        Preferred {
            current: AtomicUsize::new(0),
            len,
        }
    }

    /// The index of the replica in use.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Moves from `from` to `to`; `Some(to)` only for the one caller that
    /// moved it (so a switch is logged once, however many requests saw it).
    fn settle(&self, from: usize, to: usize) -> Option<usize> {
        if from == to {
            return None;
        }
        let moved = self
            .current
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
        moved.ok().map(|_| to)
    }
}

/// A request's outcome, and the replica the client moved to because of it.
#[derive(Debug)]
pub struct Sent<T, E> {
    /// The last attempt's result.
    pub result: Result<T, E>,
    /// The index of the replica now in use, when this request moved it.
    pub moved_to: Option<usize>,
}

/// Sends a request with `send(index)` to the replica in use and, when
/// `judge` says it never reached it, to each next one in turn, until one
/// answers or every one was tried (then the last failure is the result).
pub async fn send<T, E, F, Fut>(
    preferred: &Preferred,
    mut send: F,
    judge: impl Fn(&E) -> Failover,
) -> Sent<T, E>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let n = preferred.len.get();
    let first = preferred.current();
    let mut step = 0;
    loop {
        let i = (first + step) % n;
        let result = send(i).await;
        let verdict = result.as_ref().err().map_or(Failover::Stay, &judge);
        step += 1;
        let moved_to = match verdict {
            Failover::RetryElsewhere if step < n => continue,
            Failover::RetryElsewhere => None,
            Failover::NextTime => preferred.settle(first, (i + 1) % n),
            Failover::Stay => preferred.settle(first, i),
        };
        return Sent { result, moved_to };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_list_is_split_and_trimmed_and_an_empty_entry_is_refused() {
        assert_eq!(split_urls("https://a:8000"), Ok(vec!["https://a:8000"]));
        assert_eq!(
            split_urls(" https://a:8000 , https://b:8000/ "),
            Ok(vec!["https://a:8000", "https://b:8000/"])
        );
        assert_eq!(split_urls("https://a,,https://b"), Err(UrlListError::Empty(2)));
        assert_eq!(split_urls("https://a,"), Err(UrlListError::Empty(2)));
        assert_eq!(split_urls(" "), Err(UrlListError::Empty(1)));
    }

    #[test]
    fn only_a_replica_that_cannot_serve_is_left() {
        for status in [502, 503, 504] {
            assert_eq!(Failover::for_status(status), Failover::NextTime, "{status}");
        }
        for status in [400, 401, 403, 404, 409, 422, 429, 500] {
            assert_eq!(Failover::for_status(status), Failover::Stay, "{status}");
        }
        assert_eq!(Failover::for_transport(true, false), Failover::RetryElsewhere);
        assert_eq!(Failover::for_transport(true, true), Failover::RetryElsewhere);
        assert_eq!(Failover::for_transport(false, true), Failover::NextTime);
        assert_eq!(Failover::for_transport(false, false), Failover::Stay);
    }

    /// Three replicas, each failing with the given verdict (`None`: answers).
    async fn run(preferred: &Preferred, fates: [Option<Failover>; 3]) -> (Sent<usize, Failover>, Vec<usize>) {
        let tried = RefCell::new(Vec::new());
        let sent = send(
            preferred,
            |i| {
                tried.borrow_mut().push(i);
                std::future::ready(fates[i].map_or(Ok(i), Err))
            },
            |verdict: &Failover| *verdict,
        )
        .await;
        (sent, tried.into_inner())
    }

    fn three() -> Preferred {
        Preferred::new(NonZeroUsize::MIN.saturating_add(2))
    }

    #[tokio::test]
    async fn an_unreachable_replica_is_skipped_and_the_one_that_answered_is_kept() {
        let p = three();
        let fates = [Some(Failover::RetryElsewhere), None, None];
        let (sent, tried) = run(&p, fates).await;
        assert_eq!(
            (sent.result.ok(), sent.moved_to, tried),
            (Some(1), Some(1), vec![0, 1])
        );
        let (sent, tried) = run(&p, fates).await;
        assert_eq!((sent.result.ok(), sent.moved_to, tried), (Some(1), None, vec![1]));
    }

    #[tokio::test]
    async fn a_request_that_may_have_arrived_is_not_sent_again_but_the_next_one_moves_on() {
        let p = three();
        let (sent, tried) = run(&p, [Some(Failover::NextTime), None, None]).await;
        assert_eq!(
            (sent.result.err(), sent.moved_to, tried),
            (Some(Failover::NextTime), Some(1), vec![0])
        );
        assert_eq!(p.current(), 1);
        let (sent, tried) = run(&p, [None, Some(Failover::Stay), None]).await;
        assert_eq!(
            (sent.result.err(), sent.moved_to, tried),
            (Some(Failover::Stay), None, vec![1])
        );
        assert_eq!(p.current(), 1, "an answer moves nothing");
    }

    #[tokio::test]
    async fn when_no_replica_is_reachable_the_last_failure_is_told_and_nothing_moves() {
        let p = three();
        let none = Some(Failover::RetryElsewhere);
        let (sent, tried) = run(&p, [none; 3]).await;
        assert_eq!(
            (sent.result.err(), sent.moved_to, tried),
            (none, None, vec![0, 1, 2])
        );
        assert_eq!(p.current(), 0);
    }
}
