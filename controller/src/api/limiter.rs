//! Login attempt limits that slow password guessing without locking an
//! account's owner out.
//!
//! - **Per username and client**: one client may try one username
//!   `attempts_per_client_and_user` times at once; each further attempt
//!   waits a delay that starts at a minute divided by that number and
//!   doubles with every attempt, up to [`MAX_DELAY_MS`]. A successful login
//!   clears the pair, and a pair left alone for [`FORGET_AFTER_MS`] after
//!   its last delay ran out is forgotten. Another client of the same
//!   username has its own pair, so a guesser elsewhere cannot keep the
//!   owner out.
//! - **Per client**: `per_client_per_minute` attempts a minute whatever the
//!   username, a generous cap on the Argon2 work one address can cause.
//!
//! A client is its IP address (IPv6: its /64, which one host usually holds
//! whole); see [`super::client_ip`] for how it is found behind a proxy.
//! Usernames are keyed as the login looks them up (the NFKC form of
//! `shared::api::auth::login_name`), so `ADMIN` and `admin` are two users
//! with two limits.
//!
//! Memory stays bounded whatever clients send: keys are 64-bit SipHash
//! digests under a random per-process key (a username of any length costs
//! 8 bytes, and no one can aim collisions), each table holds at most
//! [`MAX_TRACKED_KEYS`] entries, and expired entries are swept every
//! [`SWEEP_EVERY_MS`].

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Entries each table keeps at most: about 2.5 MiB of pairs and 2 MiB of
/// clients. Filling it takes a flood from many addresses (each client gets
/// only `per_client_per_minute` new pairs a minute); when it is full, the
/// entries closest to expiring go first.
pub const MAX_TRACKED_KEYS: usize = 100_000;
/// The longest delay between two attempts of one pair: slow enough that
/// one address guesses a handful of passwords an hour.
pub const MAX_DELAY_MS: u64 = 15 * 60 * 1000;
/// How long a pair is remembered after its last delay ran out; longer
/// than [`MAX_DELAY_MS`], so waiting out a delay does not reset it.
pub const FORGET_AFTER_MS: u64 = 30 * 60 * 1000;
/// How often expired entries are swept out of the tables.
pub const SWEEP_EVERY_MS: u64 = 60 * 1000;
/// One minute, the unit the limits are given in.
const MINUTE_MS: u64 = 60 * 1000;

/// The limits, as configured.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Attempts one client may make for one username before each further
    /// one is delayed (at least one).
    pub attempts_per_client_and_user: u32,
    /// Attempts one client may make a minute for all usernames together
    /// (at least one).
    pub per_client_per_minute: u32,
}

/// A login the limiter let through; handed back with
/// [`LoginLimiter::succeeded`] when the password was right.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The (username, client) pair's key.
    pair: u64,
}

/// Milliseconds since the limiter was made: a compact monotonic clock.
type Millis = u64;

/// The record of a table entry: when it is as good as absent.
trait Expiring: Copy {
    /// The time from which this entry says nothing a fresh one would not.
    fn expires(&self) -> Millis;
}

/// One (username, client) pair: attempts counted and the earliest time of
/// the next one.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    /// Attempts since the pair was last cleared or forgotten.
    attempts: u32,
    /// No attempt before this time (the time of the last one when it
    /// earned no delay).
    not_before: Millis,
}

impl Expiring for Strikes {
    fn expires(&self) -> Millis {
        self.not_before.saturating_add(FORGET_AFTER_MS)
    }
}

/// One client's pace for the per-minute cap (GCRA): the theoretical
/// arrival time of its next attempt.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// When the client's budget will be whole again if it sends nothing.
    full_at: Millis,
}

impl Expiring for Pace {
    fn expires(&self) -> Millis {
        self.full_at
    }
}

/// Entries by key, bounded in number and swept on time.
struct Table<V> {
    /// The live (and not yet swept) entries.
    entries: HashMap<u64, V>,
    /// Most entries kept.
    capacity: usize,
    /// When the next sweep is due.
    next_sweep: Millis,
}

impl<V: Expiring> Table<V> {
    fn new(capacity: usize) -> Self {
        Table {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            next_sweep: SWEEP_EVERY_MS,
        }
    }

    /// The entry under `key`, `fresh` if there is none or it expired.
    fn get(&self, key: u64, now: Millis, fresh: V) -> V {
        match self.entries.get(&key) {
            Some(v) if v.expires() > now => *v,
            _ => fresh,
        }
    }

    /// Stores `value` under `key`, making room first if the table is full.
    fn put(&mut self, key: u64, value: V, now: Millis) {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.sweep(now);
            self.evict_soonest();
        }
        self.entries.insert(key, value);
    }

    /// Drops expired entries, and hands memory back after a flood.
    fn sweep(&mut self, now: Millis) {
        self.entries.retain(|_, v| v.expires() > now);
        self.next_sweep = now.saturating_add(SWEEP_EVERY_MS);
        if self.entries.capacity() > 4 * self.entries.len().max(1024) {
            self.entries.shrink_to(2 * self.entries.len());
        }
    }

    /// When still full: drops the quarter of entries that expire soonest
    /// (the ones holding the least back), so room is made rarely.
    fn evict_soonest(&mut self) {
        if self.entries.len() < self.capacity {
            return;
        }
        let mut expiries: Vec<Millis> = self.entries.values().map(Expiring::expires).collect();
        let cut = expiries.len() / 4;
        let (sooner, &mut threshold, _) = expiries.select_nth_unstable(cut);
        // Everything before `threshold` goes, and as many entries expiring
        // exactly then as make `cut + 1` in all.
        let below = sooner.iter().filter(|&&e| e < threshold).count();
        let mut ties = cut + 1 - below;
        self.entries.retain(|_, v| match v.expires() {
            e if e < threshold => false,
            e if e == threshold && ties > 0 => {
                ties -= 1;
                false
            }
            _ => true,
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The login limiter: a table of (username, client) pairs and one of
/// clients, shared by every request.
pub struct LoginLimiter {
    /// Strikes of each (username, client) pair.
    pairs: Mutex<Table<Strikes>>,
    /// Pace of each client.
    clients: Mutex<Table<Pace>>,
    /// Keys the digests, at random per process.
    keys: RandomState,
    /// Time zero of [`Millis`].
    started: Instant,
    /// Attempts of a pair before delays begin.
    free_attempts: u32,
    /// The first delay; each later one doubles it.
    first_delay: Millis,
    /// A client's budget refills one attempt per this many milliseconds.
    client_interval: Millis,
    /// The most a client may spend at once: a minute's worth.
    client_burst: Millis,
}

/// Locks `mutex`; a panic elsewhere while it was held left the table
/// consistent (every update is one insert), so it is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The client a limit applies to: the address, or the /64 of an IPv6 one.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// Whole seconds to wait for `ms` milliseconds, at least one (Retry-After).
fn seconds_to_wait(ms: Millis) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl LoginLimiter {
    /// A limiter with `limits` and tables of [`MAX_TRACKED_KEYS`] entries.
    pub fn new(limits: LoginLimits) -> Self {
        Self::with_capacity(limits, MAX_TRACKED_KEYS)
    }

    fn with_capacity(limits: LoginLimits, capacity: usize) -> Self {
        let free_attempts = limits.attempts_per_client_and_user.max(1);
        let per_minute = u64::from(limits.per_client_per_minute.max(1));
        let client_interval = (MINUTE_MS / per_minute).max(1);
        LoginLimiter {
            pairs: Mutex::new(Table::new(capacity)),
            clients: Mutex::new(Table::new(capacity)),
            keys: RandomState::new(),
            started: Instant::now(),
            free_attempts,
            first_delay: (MINUTE_MS / u64::from(free_attempts)).max(1),
            client_interval,
            client_burst: client_interval.saturating_mul(per_minute),
        }
    }

    /// Lets a login attempt of `username` from `client` (unknown for
    /// in-process calls) through, or answers the seconds it must wait.
    pub fn check(&self, client: Option<IpAddr>, username: &str) -> Result<Attempt, u64> {
        self.check_at(client, username, self.now())
    }

    /// Clears the pair of a login whose password was right.
    pub fn succeeded(&self, attempt: Attempt) {
        lock(&self.pairs).entries.remove(&attempt.pair);
    }

    fn now(&self) -> Millis {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn check_at(&self, client: Option<IpAddr>, username: &str, now: Millis) -> Result<Attempt, u64> {
        let client = client.map(client_key);
        if let Some(client) = client {
            self.pace(self.keys.hash_one(client), now)?;
        }
        let pair = self.keys.hash_one((username, client));
        self.strike(pair, now)?;
        Ok(Attempt { pair })
    }

    /// Spends one attempt of the client's per-minute budget.
    fn pace(&self, key: u64, now: Millis) -> Result<(), u64> {
        let mut clients = lock(&self.clients);
        let full_at = (clients.get(key, now, Pace { full_at: now }).full_at)
            .max(now)
            .saturating_add(self.client_interval);
        let over = (full_at - now).saturating_sub(self.client_burst);
        if over > 0 {
            return Err(seconds_to_wait(over));
        }
        clients.put(key, Pace { full_at }, now);
        Ok(())
    }

    /// Counts an attempt of the pair, unless it must still wait.
    fn strike(&self, key: u64, now: Millis) -> Result<(), u64> {
        let mut pairs = lock(&self.pairs);
        let fresh = Strikes {
            attempts: 0,
            not_before: now,
        };
        let strikes = pairs.get(key, now, fresh);
        if strikes.not_before > now {
            return Err(seconds_to_wait(strikes.not_before - now));
        }
        let attempts = strikes.attempts.saturating_add(1);
        let not_before = match attempts.checked_sub(self.free_attempts) {
            None => now,
            Some(doublings) => now.saturating_add(self.delay(doublings)),
        };
        pairs.put(key, Strikes { attempts, not_before }, now);
        Ok(())
    }

    /// The delay after `doublings` attempts beyond the free ones.
    fn delay(&self, doublings: u32) -> Millis {
        let factor = 1u64 << doublings.min(32);
        self.first_delay.saturating_mul(factor).min(MAX_DELAY_MS)
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (lock(&self.clients).len(), lock(&self.pairs).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    /// A limiter of `attempts` per pair, `per_minute` per client and
    /// tables of `capacity` entries.
    fn sized(attempts: u32, per_minute: u32, capacity: usize) -> LoginLimiter {
        let limits = LoginLimits {
            attempts_per_client_and_user: attempts,
            per_client_per_minute: per_minute,
        };
        LoginLimiter::with_capacity(limits, capacity)
    }

    /// 3 free attempts per pair (first delay 20 s), 100 a minute per client.
    fn limiter() -> LoginLimiter {
        sized(3, 100, MAX_TRACKED_KEYS)
    }

    /// Makes attempts of `username` from `client` at `now` until one is
    /// refused; answers how many passed and the wait named.
    fn exhaust(l: &LoginLimiter, client: Option<IpAddr>, username: &str, now: Millis) -> (usize, u64) {
        for passed in 0..1000 {
            if let Err(wait) = l.check_at(client, username, now) {
                return (passed, wait);
            }
        }
        panic!("never refused")
    }

    #[test]
    fn a_pair_is_delayed_after_its_free_attempts_and_each_delay_doubles() {
        let l = limiter();
        assert_eq!(exhaust(&l, A, "alice", 0), (3, 20));
        assert_eq!(l.check_at(A, "alice", 19_999), Err(1));
        assert!(l.check_at(A, "alice", 20_000).is_ok());
        assert_eq!(l.check_at(A, "alice", 20_000), Err(40));
        assert!(l.check_at(A, "alice", 60_000).is_ok());
        assert_eq!(l.check_at(A, "alice", 60_000), Err(80));
    }

    #[test]
    fn delays_stop_growing_at_the_maximum() {
        let l = limiter();
        let (mut now, mut waits) = (0, Vec::new());
        while waits.len() < 9 {
            if let Err(wait) = l.check_at(A, "alice", now) {
                waits.push(wait);
                now += wait * 1000;
            }
        }
        assert_eq!(waits, [20, 40, 80, 160, 320, 640, 900, 900, 900]);
    }

    #[test]
    fn another_client_of_the_same_username_is_not_delayed() {
        let l = limiter();
        exhaust(&l, A, "alice", 0);
        assert!(l.check_at(B, "alice", 0).is_ok());
    }

    #[test]
    fn usernames_are_keyed_exactly() {
        let l = limiter();
        exhaust(&l, A, "admin", 0);
        assert!(l.check_at(A, "ADMIN", 0).is_ok(), "ADMIN is another user");
        assert!(l.check_at(A, "bob", 0).is_ok(), "other users are unaffected");
    }

    #[test]
    fn success_clears_the_pair() {
        let l = limiter();
        assert!(l.check_at(A, "alice", 0).is_ok());
        assert!(l.check_at(A, "alice", 0).is_ok());
        let right = l.check_at(A, "alice", 0).unwrap();
        l.succeeded(right);
        assert_eq!(exhaust(&l, A, "alice", 0).0, 3, "three free attempts again");
    }

    #[test]
    fn a_pair_is_forgotten_after_a_quiet_spell_past_its_delay() {
        let l = limiter();
        exhaust(&l, A, "alice", 0);
        assert!(l.check_at(A, "alice", 20_000 + FORGET_AFTER_MS - 1).is_ok());
        let later = 20_000 + FORGET_AFTER_MS + 60_000 + FORGET_AFTER_MS;
        assert_eq!(exhaust(&l, A, "alice", later).0, 3);
    }

    #[test]
    fn a_client_is_capped_per_minute_across_usernames() {
        let l = sized(3, 60, MAX_TRACKED_KEYS);
        for i in 0..60 {
            assert!(l.check_at(A, &format!("u{i}"), 0).is_ok(), "attempt {i}");
        }
        assert_eq!(l.check_at(A, "u60", 0), Err(1));
        assert!(l.check_at(B, "u60", 0).is_ok(), "other clients are unaffected");
        assert!(l.check_at(A, "u60", 1_000).is_ok(), "one more a second");
        assert!(l.check_at(None, "u61", 0).is_ok(), "no address, no client cap");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let l = limiter();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        exhaust(&l, Some(one), "alice", 0);
        assert!(l.check_at(Some(same_64), "alice", 0).is_err());
        assert!(l.check_at(Some(other_64), "alice", 0).is_ok());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), A.unwrap());
    }

    #[test]
    fn a_flood_of_usernames_from_many_clients_keeps_the_tables_bounded() {
        let l = sized(10, 300, MAX_TRACKED_KEYS);
        // All at one instant, so nothing expires: only the bound holds.
        for i in 0..(MAX_TRACKED_KEYS as u32 + 50_000) {
            let client = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            assert!(l.check_at(Some(client), &format!("user-{i}"), 0).is_ok());
        }
        let (clients, pairs) = l.tracked();
        assert!(
            clients <= MAX_TRACKED_KEYS && pairs <= MAX_TRACKED_KEYS,
            "{clients} clients and {pairs} pairs tracked"
        );
    }

    #[test]
    fn expired_entries_are_swept_on_time() {
        let l = sized(10, 60, 1000);
        for i in 0..500u32 {
            let client = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            assert!(l.check_at(Some(client), "alice", 0).is_ok());
        }
        assert_eq!(l.tracked(), (500, 500));
        // After the pairs are forgotten, the next attempt sweeps both.
        assert!(l.check_at(A, "bob", FORGET_AFTER_MS + SWEEP_EVERY_MS).is_ok());
        assert_eq!(l.tracked(), (1, 1));
    }

    #[test]
    fn a_full_table_makes_room_and_keeps_the_newest() {
        let l = sized(1, 1000, 100);
        for i in 0..100u64 {
            assert!(l.check_at(A, &format!("user-{i}"), i).is_ok());
        }
        assert!(l.check_at(A, "newest", 100).is_ok());
        let (_, pairs) = l.tracked();
        assert!((70..=100).contains(&pairs), "{pairs}");
        assert!(l.check_at(A, "newest", 100).is_err(), "the newest pair is kept");
    }
}
