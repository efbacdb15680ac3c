//! Limits on connections that are not sending requests: a connection must start its first
//! request within the header timeout and, between requests, may stay idle for the idle
//! timeout; one client address may hold only so many connections. "Idle" counts requests,
//! not bytes, so a peer that keeps a connection busy with HTTP/2 PINGs or stray bytes and
//! no request is closed all the same.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Open connections per client address, up to a limit.
pub struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`], given back when dropped.
pub struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, or `None` when it holds the limit already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Requests in flight on one connection, and when the connection last became idle.
pub struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), and whether any has.
    last: Mutex<(Instant, bool)>,
}

/// A request in flight; its drop marks the connection idle from now when it was the last.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new((Instant::now(), false)),
        })
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `first` (before its
    /// first request) or `idle` (after one), with which of the two it was.
    pub async fn idle(&self, first: Duration, idle: Duration) -> &'static str {
        loop {
            let (since, served) = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
            let (limit, reason) = if served {
                (idle, "idle")
            } else {
                (first, "first_request")
            };
            let due = since + limit;
            if self.in_flight.load(Ordering::Acquire) == 0 && Instant::now() >= due {
                return reason;
            }
            // Busy, or not yet due: look again at the earliest moment it could be.
            tokio::time::sleep_until(due.max(Instant::now() + Duration::from_millis(10))).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut last = self.0.last.lock().unwrap_or_else(PoisonError::into_inner);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *last = (Instant::now(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_limit() {
        let p = PerIp::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = p.admit(ip).unwrap();
        let _b = p.admit(ip).unwrap();
        assert!(p.admit(ip).is_none());
        assert!(p.admit(other).is_some());
        drop(a);
        assert!(p.admit(ip).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_requests_not_time_alone() {
        let a = Activity::new();
        let started = Instant::now();
        assert_eq!(
            a.idle(Duration::from_secs(5), Duration::from_secs(60))
                .await,
            "first_request"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // A request in flight for 100 s keeps the connection; idle counts from its end.
        let r = a.begin();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move {
                a.idle(Duration::from_secs(5), Duration::from_secs(60))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!waiting.is_finished());
        let ended = Instant::now();
        drop(r);
        assert_eq!(waiting.await.unwrap(), "idle");
        let waited = ended.elapsed();
        assert!(waited >= Duration::from_secs(60) && waited < Duration::from_secs(61));
    }
}
