//! Capped exponential backoff: the one retry rhythm of both daemons (the
//! controller reconnecting to RabbitMQ; the agent registering, reconnecting,
//! claiming and publishing reports). Pure arithmetic: it computes the next
//! wait and leaves the sleeping to the caller's runtime.

use std::time::Duration;

/// Delays that start at a floor and double with every failed attempt until
/// they reach a cap. A type rather than two constants so the rule can be
/// tested for any floor and cap, not only the daemons' own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry: short, because most failures (a
    /// restarting peer, a dropped connection) clear up at once.
    floor: Duration,
    /// The longest wait: a peer that comes back is found within this long.
    cap: Duration,
}

impl Backoff {
    /// Doubling from `floor` up to `cap`. A cap below the floor is raised to
    /// the floor, so every delay lies between the two.
    pub const fn new(floor: Duration, cap: Duration) -> Self {
        let cap = if cap.as_nanos() < floor.as_nanos() {
            floor
        } else {
            cap
        };
        Backoff { floor, cap }
    }

    /// The shortest delay this backoff gives (attempt 0).
    pub const fn floor(&self) -> Duration {
        self.floor
    }

    /// The longest delay this backoff gives.
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// The wait before retry `attempt` (0-based): the floor doubled
    /// `attempt` times, capped. Never overflows, for any attempt.
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut delay = self.floor;
        for _ in 0..attempt {
            // At most ~94 doublings take 1 ns past any `Duration`, so the
            // loop is short even for `u32::MAX`; a zero floor never grows.
            if delay >= self.cap || delay.is_zero() {
                break;
            }
            delay = delay.saturating_mul(2);
        }
        delay.min(self.cap)
    }
}

/// The daemons' retry rhythm: 250 ms first (a dropped connection is usually
/// back at once), never more than 5 s (a controller or broker that comes
/// back is found within that long).
pub const RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

/// The wait before retry `attempt` (0-based) in the daemons' rhythm
/// [`RETRY`]: what every reconnect and retry loop of both daemons sleeps.
pub fn backoff(attempt: u32) -> Duration {
    RETRY.delay(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_daemons_rhythm_doubles_from_250_ms_then_caps_at_5_s() {
        let floor = Duration::from_millis(250);
        assert_eq!(backoff(0), floor);
        assert_eq!(backoff(1), floor * 2);
        assert_eq!(backoff(3), floor * 8);
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(5));
        assert_eq!(backoff(10), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn a_cap_below_the_floor_is_raised_to_it() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.cap(), Duration::from_secs(2));
        assert_eq!(b.delay(0), Duration::from_secs(2));
        assert_eq!(b.delay(7), Duration::from_secs(2));
    }

    #[test]
    fn a_zero_floor_means_no_wait() {
        let b = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn the_largest_durations_saturate_at_the_cap() {
        let b = Backoff::new(Duration::from_nanos(1), Duration::MAX);
        assert_eq!(b.delay(u32::MAX), Duration::MAX);
        assert_eq!(b.delay(10), Duration::from_nanos(1024));
    }

    /// A backoff with a floor of 1 ns to 10 s and a cap of up to 1000 s.
    fn backoffs() -> impl Strategy<Value = Backoff> {
        (1u64..10_000_000_000, 0u64..1_000_000_000_000)
            .prop_map(|(floor, cap)| Backoff::new(Duration::from_nanos(floor), Duration::from_nanos(cap)))
    }

    proptest! {
        #[test]
        fn every_delay_lies_between_the_floor_and_the_cap(b in backoffs(), attempt in any::<u32>()) {
            let d = b.delay(attempt);
            prop_assert!(d >= b.floor(), "{d:?} below the floor of {b:?}");
            prop_assert!(d <= b.cap(), "{d:?} above the cap of {b:?}");
        }

        #[test]
        fn delays_double_until_the_cap_then_stay_there(b in backoffs(), attempt in 0u32..200) {
            let (now, next) = (b.delay(attempt), b.delay(attempt + 1));
            if now < b.cap() {
                prop_assert_eq!(next, (now * 2).min(b.cap()), "{:?} at attempt {}", b, attempt);
            } else {
                prop_assert_eq!(next, b.cap());
            }
        }

        #[test]
        fn the_cap_is_reached(b in backoffs()) {
            // 1 ns doubled 40 times is over 1000 s: every generated cap is hit.
            prop_assert_eq!(b.delay(40), b.cap());
        }
    }
}
