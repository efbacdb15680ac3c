//! Route rate limits (governor's GCRA), keyed by route or by client IP. The per-IP key set
//! is bounded: when it grows past `MAX_KEYS` the keys whose state has fully recovered are
//! pruned, and a periodic prune keeps an idle set small.

use crate::config::{RateKey, RouteRate};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::time::Duration;

const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub enum Limiter {
    Route(DefaultDirectRateLimiter),
    Ip(DefaultKeyedRateLimiter<IpAddr>),
}

impl Limiter {
    pub fn new(r: &RouteRate) -> Self {
        let quota = Quota::per_second(r.per_second).allow_burst(r.burst);
        match r.key {
            RateKey::Route => Limiter::Route(governor::RateLimiter::direct(quota)),
            RateKey::Ip => Limiter::Ip(governor::RateLimiter::keyed(quota)),
        }
    }

    /// `Err(wait)` when over the limit: how long until a request would be allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let clock = DefaultClock::default();
        let res = match self {
            Limiter::Route(l) => l.check(),
            Limiter::Ip(l) => {
                if l.len() >= MAX_KEYS {
                    l.retain_recent();
                }
                l.check_key(&ip)
            }
        };
        res.map_err(|not_until| not_until.wait_time_from(clock.now()))
    }

    pub fn prune(&self) {
        if let Limiter::Ip(l) = self {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Seconds for `Retry-After`, rounded up so a client that honours it succeeds.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn per_ip_keys_are_independent() {
        let l = Limiter::new(&RouteRate {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
            key: RateKey::Ip,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        let wait = l.check(a).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(l.check(b).is_ok());
    }

    #[test]
    fn route_key_is_shared() {
        let l = Limiter::new(&RouteRate {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(1).unwrap(),
            key: RateKey::Route,
        });
        assert!(l.check("192.0.2.1".parse().unwrap()).is_ok());
        assert!(l.check("192.0.2.2".parse().unwrap()).is_err());
    }
}
