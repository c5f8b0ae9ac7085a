//! Capped exponential backoff, the one retry rhythm of the agent
//! (registration, reconnection, claims, report publishing).

use std::time::Duration;

/// Shortest wait between two attempts.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two attempts: a controller or broker that comes back
/// is found within this long.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait before retry `attempt` (0-based): doubling from [`MIN_BACKOFF`],
/// capped at [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        assert_eq!(backoff(0), MIN_BACKOFF);
        assert_eq!(backoff(1), MIN_BACKOFF * 2);
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
