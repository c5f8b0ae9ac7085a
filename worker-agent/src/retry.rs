//! Retrying a request to the controller for a bounded time: a claim, a
//! piece of output. Each is worth retrying only while its answer can still
//! matter, so each gives up once the next wait would pass its patience.

use orchestrator_shared::backoff::backoff;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Calls `op` until it succeeds, `retryable` says its error will not go
/// away, or waiting the next backoff would pass `patience`; the last error
/// otherwise. Each error retried is handed to `retrying` first (to log it).
pub async fn within<T, E, Fut>(
    patience: Duration,
    mut op: impl FnMut() -> Fut,
    retryable: impl Fn(&E) -> bool,
    mut retrying: impl FnMut(&E),
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let give_up_at = Instant::now() + patience;
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(answer) => return Ok(answer),
            Err(e) if retryable(&e) && Instant::now() + backoff(attempt) < give_up_at => retrying(&e),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}
