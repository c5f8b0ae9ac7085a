//! The controller's view of RabbitMQ. For now it keeps one connection open,
//! reconnecting with capped exponential backoff, so `/readyz` can say
//! whether the broker is reachable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Shortest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts (a restarted broker is found
/// within this long of coming back).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the broker connection is currently open. Cheap to clone.
#[derive(Clone, Default)]
pub struct BrokerStatus(Arc<AtomicBool>);

impl BrokerStatus {
    /// True while a connection is open.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }
}

/// The wait before reconnection attempt `n` (0-based): doubling from
/// [`MIN_BACKOFF`], capped at [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX_BACKOFF)
}

/// Keeps a connection to `url` open until the task is dropped, updating
/// `status` as it goes up and down.
pub async fn monitor(url: String, status: BrokerStatus) {
    let mut attempt = 0;
    loop {
        match lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await {
            Ok(conn) => {
                tracing::info!("broker connected");
                status.set(true);
                attempt = 0;
                while conn.status().connected() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                tracing::warn!("broker connection lost");
                status.set(false);
            }
            Err(e) => {
                status.set(false);
                tracing::warn!(error = %e, attempt, "broker connection failed");
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(0), MIN_BACKOFF);
        assert_eq!(backoff(1), MIN_BACKOFF * 2);
        assert_eq!(backoff(3), MIN_BACKOFF * 8);
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
