//! What the operator may ask about recent requests without a database: the last rejections
//! of each route with their precise reasons (a bounded ring per route), and — for sync routes,
//! which have no store — the recently seen delivery ids (bounded, expiring) for dedup.

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Rejections kept per route.
pub const RING: usize = 200;
/// Delivery ids remembered for sync routes, all routes together.
pub const SYNC_DEDUP_MAX: usize = 100_000;

#[derive(Debug, Clone, Serialize)]
pub struct RejectionRecord {
    pub at_ms: i64,
    pub route: String,
    pub client_ip: String,
    pub kind: &'static str,
    pub reason: String,
    /// True when shadow mode let the request through.
    pub shadow: bool,
}

#[derive(Default)]
pub struct Diagnostics {
    rejections: Mutex<HashMap<String, VecDeque<RejectionRecord>>>,
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl Diagnostics {
    pub fn record(
        &self,
        route: &str,
        client_ip: std::net::IpAddr,
        kind: &'static str,
        reason: &str,
        shadow: bool,
    ) {
        let rec = RejectionRecord {
            at_ms: crate::store::to_ms(SystemTime::now()),
            route: route.to_owned(),
            client_ip: client_ip.to_string(),
            kind,
            reason: reason.to_owned(),
            shadow,
        };
        if let Ok(mut m) = self.rejections.lock() {
            let ring = m.entry(route.to_owned()).or_default();
            if ring.len() >= RING {
                ring.pop_front();
            }
            ring.push_back(rec);
        }
    }

    /// Newest first; one route, or all.
    pub fn rejections(&self, route: Option<&str>, limit: usize) -> Vec<RejectionRecord> {
        let Ok(m) = self.rejections.lock() else {
            return Vec::new();
        };
        let mut out: Vec<RejectionRecord> = m
            .iter()
            .filter(|(r, _)| route.is_none_or(|want| want == r.as_str()))
            .flat_map(|(_, ring)| ring.iter().cloned())
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
        out.truncate(limit);
        out
    }

    /// True when `id` was seen on `route` within `window` (then it is a duplicate); otherwise
    /// remembers it.
    pub fn seen_recently(&self, route: &str, id: &str, window: Duration) -> bool {
        let Ok(mut m) = self.seen.lock() else {
            return false;
        };
        let now = Instant::now();
        let key = (route.to_owned(), id.to_owned());
        if let Some(at) = m.get(&key) {
            if now.duration_since(*at) < window {
                return true;
            }
        }
        if m.len() >= SYNC_DEDUP_MAX {
            m.retain(|_, at| now.duration_since(*at) < window);
            if m.len() >= SYNC_DEDUP_MAX {
                // Still full of live ids: forget the oldest half rather than grow.
                let mut ages: Vec<Instant> = m.values().copied().collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                m.retain(|_, at| *at > cut);
            }
        }
        m.insert(key, now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_newest_first() {
        let d = Diagnostics::default();
        let ip = "192.0.2.1".parse().unwrap();
        for i in 0..(RING + 10) {
            d.record("r", ip, "no_match", &format!("n{i}"), false);
        }
        let got = d.rejections(Some("r"), 1000);
        assert_eq!(got.len(), RING);
        assert!(d.rejections(Some("other"), 10).is_empty());
    }

    #[test]
    fn sync_dedup_window() {
        let d = Diagnostics::default();
        assert!(!d.seen_recently("r", "a", Duration::from_secs(60)));
        assert!(d.seen_recently("r", "a", Duration::from_secs(60)));
        assert!(!d.seen_recently("r2", "a", Duration::from_secs(60)));
        assert!(!d.seen_recently("r", "b", Duration::ZERO));
        assert!(!d.seen_recently("r", "b", Duration::ZERO));
    }
}
