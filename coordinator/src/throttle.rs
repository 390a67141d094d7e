//! Slowing down guessed secrets: a per-address count of failed attempts
//! (wrong registration tokens today, wrong API tokens when they exist).
//!
//! An address gets [`ThrottleSettings::free_failures`] failures within a
//! window at full speed. Each further failure blocks it for a delay that
//! doubles (1 s, 2 s, 4 s … up to `max_delay`); while blocked, every attempt
//! from it is refused at once with the time left, *before* its secret is
//! compared, so blocked guesses cost the attacker time and teach nothing. A
//! correct secret from the same address works once the block has ended (not
//! during it: otherwise the block would not slow guessing) and clears the
//! count. A window without failures clears it too.
//!
//! The table is in memory and bounded ([`ThrottleSettings::max_tracked`]):
//! when full, entries past their window are dropped first, then the stalest.
//! IPv6 addresses are counted per /64, since one host usually holds a whole
//! /64. Time is passed in, so the rules are tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits of one throttle.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    /// Failures within `window` answered without delay.
    pub free_failures: u32,
    /// A count is forgotten after this long without a failure.
    pub window: Duration,
    /// Block after the first failure past the free ones; doubles after each.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Most addresses tracked at once.
    pub max_tracked: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            free_failures: 5,
            window: Duration::from_secs(300),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_tracked: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// Failed attempts per address; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FailureThrottle {
    settings: ThrottleSettings,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// The key an address is counted under.
fn bucket(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl FailureThrottle {
    pub fn new(settings: ThrottleSettings) -> Self {
        FailureThrottle {
            settings,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // The table only rate-limits; a panic mid-update leaves it usable.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Err(time left)` while `address` is blocked; call before comparing
    /// the secret.
    pub fn check(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let table = self.table();
        match table
            .get(&bucket(address))
            .and_then(|entry| entry.blocked_until)
        {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt; returns the block it starts, if any.
    pub fn failed(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let settings = self.settings;
        let key = bucket(address);
        let mut table = self.table();
        if !table.contains_key(&key) && table.len() >= settings.max_tracked {
            make_room(&mut table, now, settings.window);
        }
        let entry = table.entry(key).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(entry.last_failure) > settings.window {
            entry.failures = 0;
            entry.blocked_until = None;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let past_free = entry.failures.checked_sub(settings.free_failures + 1)?;
        let delay = settings
            .first_delay
            .saturating_mul(1u32.checked_shl(past_free.min(31)).unwrap_or(u32::MAX))
            .min(settings.max_delay);
        entry.blocked_until = Some(now + delay);
        Some(delay)
    }

    /// A correct secret: the address starts afresh.
    pub fn succeeded(&self, address: IpAddr) {
        self.table().remove(&bucket(address));
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.table().len()
    }
}

/// Drops the entries past their window, or else the stalest one.
fn make_room(table: &mut HashMap<IpAddr, Entry>, now: Instant, window: Duration) {
    let before = table.len();
    table.retain(|_, entry| now.saturating_duration_since(entry.last_failure) <= window);
    if table.len() < before {
        return;
    }
    if let Some(stalest) = table
        .iter()
        .min_by_key(|(_, entry)| entry.last_failure)
        .map(|(key, _)| *key)
    {
        table.remove(&stalest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_tracked: usize) -> FailureThrottle {
        FailureThrottle::new(ThrottleSettings {
            free_failures: 3,
            window: Duration::from_secs(60),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_tracked,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn failures_past_the_free_ones_block_for_doubling_delays() {
        let throttle = throttle(100);
        let start = Instant::now();
        let guesser = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(throttle.failed(guesser, start), None);
            assert_eq!(throttle.check(guesser, start), Ok(()));
        }
        let mut now = start;
        for expected in [1, 2, 4, 8, 8] {
            assert_eq!(
                throttle.failed(guesser, now),
                Some(Duration::from_secs(expected))
            );
            assert_eq!(
                throttle.check(guesser, now),
                Err(Duration::from_secs(expected))
            );
            now += Duration::from_secs(expected);
            assert_eq!(throttle.check(guesser, now), Ok(()), "the block ends");
        }
        assert_eq!(
            throttle.check(ip("10.0.0.2"), now),
            Ok(()),
            "others unaffected"
        );
        throttle.succeeded(guesser);
        assert_eq!(
            throttle.failed(guesser, now),
            None,
            "a success starts afresh"
        );
    }

    #[test]
    fn a_quiet_window_forgets_and_the_table_stays_bounded() {
        let throttle = throttle(2);
        let start = Instant::now();
        for _ in 0..4 {
            throttle.failed(ip("10.0.0.1"), start);
        }
        let later = start + Duration::from_secs(61);
        assert_eq!(throttle.failed(ip("10.0.0.1"), later), None);
        for n in 0..50 {
            throttle.failed(ip(&format!("10.1.0.{n}")), later);
        }
        assert!(throttle.tracked() <= 2);
    }

    #[test]
    fn an_ipv6_host_is_counted_per_64() {
        let throttle = throttle(100);
        let now = Instant::now();
        for n in 0..4 {
            throttle.failed(ip(&format!("2001:db8:1:2::{n}")), now);
        }
        assert!(throttle.check(ip("2001:db8:1:2:ffff::1"), now).is_err());
        assert!(throttle.check(ip("2001:db8:1:3::1"), now).is_ok());
    }
}
