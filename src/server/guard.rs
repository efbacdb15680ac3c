//! Limits on connections that are not sending requests: a connection must start its first
//! request within the header timeout and, between requests, may stay idle for the idle
//! timeout; one client address may hold only so many connections. "Idle" counts requests,
//! not bytes, so a peer that keeps a connection busy with HTTP/2 PINGs or stray bytes and
//! no request is closed all the same.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Open connections per client address, up to a limit; addresses in `exempt` (trusted
/// proxies, which carry many clients' connections) are not limited.
pub struct PerIp {
    limit: usize,
    exempt: Vec<ipnet::IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`], given back when dropped (`None` for an exempt
/// address, which is not counted).
pub struct IpSlot(Option<(Arc<PerIp>, IpAddr)>);

impl PerIp {
    pub fn new(limit: usize, exempt: Vec<ipnet::IpNet>) -> Arc<Self> {
        Arc::new(PerIp {
            limit,
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, or `None` when it holds the limit already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.exempt.iter().any(|n| n.contains(&ip)) {
            return Some(IpSlot(None));
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(IpSlot(Some((self.clone(), ip))))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some((per_ip, ip)) = &self.0 else {
            return;
        };
        let mut open = per_ip.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(ip);
            }
        }
    }
}

/// Requests on one connection: how many are in flight, and a count of every start and end.
/// Counting costs a request two atomic adds and no clock read; the watchdog reads the
/// counts now and then.
pub struct Activity {
    in_flight: AtomicUsize,
    events: AtomicU64,
}

/// A request in flight; dropped when its answer is ready.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            events: AtomicU64::new(0),
        })
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.events.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves when the connection should close, with why: no request started within
    /// `first`, or none in flight and none started or ended for `idle` (checked every half
    /// `idle`, so it closes between `idle` and one and a half times `idle` after the last).
    pub async fn idle(&self, first: Duration, idle: Duration) -> &'static str {
        tokio::time::sleep(first).await;
        if self.events.load(Ordering::Acquire) == 0 {
            return "first_request";
        }
        let step = (idle / 2).max(Duration::from_millis(1));
        let (mut seen, mut quiet) = (u64::MAX, 0);
        loop {
            let now = self.events.load(Ordering::Acquire);
            if now == seen && self.in_flight.load(Ordering::Acquire) == 0 {
                quiet += 1;
                if quiet >= 2 {
                    return "idle";
                }
            } else {
                (seen, quiet) = (now, 0);
            }
            tokio::time::sleep(step).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_limit() {
        let p = PerIp::new(2, vec!["10.0.0.0/8".parse().unwrap()]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = p.admit(ip).unwrap();
        let _b = p.admit(ip).unwrap();
        assert!(p.admit(ip).is_none());
        assert!(p.admit(other).is_some());
        drop(a);
        assert!(p.admit(ip).is_some());
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| p.admit(proxy).unwrap()).collect();
        assert_eq!(held.len(), 10, "a trusted proxy is not limited");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_requests_not_time_alone() {
        let (first, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        let a = Activity::new();
        assert_eq!(a.idle(first, idle).await, "first_request");
        assert_eq!(started.elapsed(), first);

        // A request in flight for 100 s keeps the connection; idle counts from its end.
        let a = Activity::new();
        let r = a.begin();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.idle(first, idle).await }
        });
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!waiting.is_finished());
        let ended = tokio::time::Instant::now();
        drop(r);
        assert_eq!(waiting.await.unwrap(), "idle");
        let waited = ended.elapsed();
        assert!(waited >= idle && waited <= idle * 3 / 2, "{waited:?}");
    }
}
