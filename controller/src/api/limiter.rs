//! Login attempt limits, per client IP and per username, so neither one
//! address nor a spread of addresses can guess one account's password
//! quickly. Backed by governor's keyed GCRA limiters.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

/// Keys kept before old ones are pruned, bounding memory under a spray.
const MAX_TRACKED_KEYS: usize = 100_000;

/// Two keyed limiters: one by IP address, one by username.
pub struct LoginLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_user: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl LoginLimiter {
    /// Allows `per_ip` and `per_user` attempts a minute (at least one each).
    pub fn new(per_ip: u32, per_user: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN));
        LoginLimiter {
            by_ip: RateLimiter::keyed(quota(per_ip)),
            by_user: RateLimiter::keyed(quota(per_user)),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` if this attempt is allowed; otherwise the seconds to wait.
    pub fn check(&self, ip: Option<IpAddr>, username: &str) -> Result<(), u64> {
        if self.by_ip.len() > MAX_TRACKED_KEYS {
            self.by_ip.retain_recent();
        }
        if self.by_user.len() > MAX_TRACKED_KEYS {
            self.by_user.retain_recent();
        }
        let now = self.clock.now();
        if let Some(ip) = ip {
            self.by_ip
                .check_key(&ip)
                .map_err(|n| n.wait_time_from(now).as_secs().max(1))?;
        }
        self.by_user
            .check_key(&username.to_lowercase())
            .map_err(|n| n.wait_time_from(now).as_secs().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_limit_applies_across_addresses_and_names_a_wait() {
        let l = LoginLimiter::new(100, 2);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(l.check(a, "alice").is_ok());
        assert!(l.check(b, "Alice").is_ok());
        let wait = l.check(a, "alice").unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.check(a, "bob").is_ok(), "other users are unaffected");
    }

    #[test]
    fn ip_limit_applies_across_usernames() {
        let l = LoginLimiter::new(1, 100);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(l.check(a, "u1").is_ok());
        assert!(l.check(a, "u2").is_err());
        assert!(l.check(None, "u3").is_ok());
    }
}
