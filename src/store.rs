//! The durable buffer: where an accepted webhook lives until every target has it. Ingress
//! enqueues an event with one delivery per target in one transaction and answers 2xx only
//! after that transaction is on disk; delivery workers claim due deliveries, and record
//! each attempt's outcome.
//!
//! ## Model
//!
//! - **event**: the request as received — route, method, path and query, headers, the exact
//!   body bytes, client IP, received time — identified by a UUIDv7.
//! - **delivery**: one per (event, target). State `pending` → `delivered`, or `dead` (a dead
//!   letter), or `filtered` (the target's filter declined it). A pending delivery has
//!   `next_attempt_at`; claiming it sets a lease so it is not handed out twice while an
//!   attempt runs (in the database for PostgreSQL, where replicas share it; in the process
//!   for the embedded store, which only one process may open).
//! - **attempt**: one row per HTTP attempt (time, status, error, duration).
//! - **dedup**: (route, provider delivery id) → event id, until it expires.
//!
//! ## Invariants
//!
//! 1. `enqueue` returns only after the event and all its deliveries are committed (fsync'd):
//!    a 2xx is never given for something that is not durable.
//! 2. A delivery leaves `pending` only through an explicit completion: delivered, or dead
//!    (by policy, or because its target left the config). Nothing is dropped.
//! 3. A claim is a lease, not a state: if the process dies mid-attempt, the lease is ignored
//!    on the next start and the delivery is attempted again (at least once).
//! 4. Retry times live in the store (`next_attempt_at`), never only in memory.
//! 5. A replay is never undone: each one bumps the delivery's `replays`, and a completion
//!    applies only when `replays` still has the value its claim saw. An attempt in flight
//!    during a replay is recorded, and the delivery stays pending and due.
//!
//! Implementations: [`embedded`] (SQLite in one file, the default) and [`postgres`] (shared
//! by many replicas). The conformance tests in `tests/store.rs` run against both.

pub mod codec;
pub mod embedded;
pub mod pg_tls;
pub mod postgres;

use bytes::Bytes;
use serde::Serialize;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes: disk full, I/O error, database locked or gone.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// `storage.max_size` reached.
    #[error("storage full ({used} bytes used, limit {limit})")]
    Full { used: u64, limit: u64 },
    #[error("not found")]
    NotFound,
}

/// Milliseconds since the Unix epoch, the store's clock unit.
pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// What the ingress hands over for a new event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub route: String,
    pub method: String,
    /// Path and query as received, e.g. `/hooks/github?x=1`.
    pub path_and_query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub client_ip: IpAddr,
    pub received_at: SystemTime,
    /// Forwarding context captured on arrival: `X-Forwarded-For` chain, proto, host.
    pub forwarded_for: String,
    pub forwarded_proto: String,
    pub forwarded_host: Option<String>,
    /// Targets to deliver to; targets named in `filtered` are recorded as filtered.
    pub targets: Vec<String>,
    pub filtered: Vec<String>,
    /// Targets whose filter failed inside the gateway, with why: recorded as dead letters
    /// with that reason, never as filtered.
    pub failed: Vec<(String, String)>,
    /// The provider's delivery id, with how long it deduplicates.
    pub dedup: Option<(String, Duration)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    Stored {
        id: String,
    },
    /// Seen within the dedup window: the first event's id.
    Duplicate {
        id: String,
    },
}

/// A stored event, as a worker needs it to make a request.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: String,
    pub route: String,
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub client_ip: String,
    pub received_at: SystemTime,
    pub forwarded_for: String,
    pub forwarded_proto: String,
    pub forwarded_host: Option<String>,
}

/// A delivery handed to a worker under a lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    /// How many times an operator had replayed the delivery when it was claimed.
    pub replays: i64,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: SystemTime,
    pub event: StoredEvent,
}

/// One attempt's record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attempt {
    pub at_ms: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Clone)]
pub enum Completion {
    Delivered,
    Retry { at: SystemTime, error: String },
    Dead { error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
    Filtered,
}

impl DeliveryState {
    pub fn code(self) -> i64 {
        match self {
            DeliveryState::Pending => 0,
            DeliveryState::Delivered => 1,
            DeliveryState::Dead => 2,
            DeliveryState::Filtered => 3,
        }
    }
    pub fn from_code(c: i64) -> Self {
        match c {
            1 => DeliveryState::Delivered,
            2 => DeliveryState::Dead,
            3 => DeliveryState::Filtered,
            _ => DeliveryState::Pending,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "dead" => DeliveryState::Dead,
            "filtered" => DeliveryState::Filtered,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub target: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: String,
    pub route: String,
    pub received_at_ms: i64,
    pub body_bytes: usize,
    pub deliveries: Vec<DeliveryView>,
    /// Set on a repeat of an earlier delivery id: kept for inspection, not delivered.
    pub duplicate_of: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub delivery_id: i64,
    pub target: String,
    #[serde(flatten)]
    pub attempt: Attempt,
}

#[derive(Debug, Clone)]
pub struct EventDetail {
    pub summary: EventSummary,
    pub event: StoredEvent,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub route: Option<String>,
    /// `route/target` or `target`.
    pub target: Option<String>,
    pub state: Option<DeliveryState>,
    pub since: Option<SystemTime>,
    /// Events older than this id (cursor for the next page).
    pub before: Option<String>,
    /// Only repeats of an earlier delivery id.
    pub duplicates: bool,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub delivery_id: i64,
    pub event_id: String,
    pub route: String,
    pub target: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TargetStats {
    pub route: String,
    pub target: String,
    pub pending: u64,
    pub dead: u64,
    pub delivered: u64,
    /// Age of the oldest pending delivery, in ms.
    pub oldest_pending_ms: Option<i64>,
}

/// Which dead letters to replay.
#[derive(Debug, Clone)]
pub enum DeadSelector {
    Ids(Vec<i64>),
    AllFor {
        route: String,
        target: String,
    },
    /// Every dead letter matching all the given conditions (none given: every dead letter).
    Matching {
        route: Option<String>,
        target: Option<String>,
        /// A substring of the last error, e.g. `410` or `timed out`.
        error_contains: Option<String>,
    },
}

/// What a completion names: the delivery, and its replay count when it was claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub delivery_id: i64,
    pub replays: i64,
}

impl Claimed {
    pub fn lease(&self) -> Lease {
        Lease {
            delivery_id: self.delivery_id,
            replays: self.replays,
        }
    }
}

/// The storage boundary. Every backend passes the same conformance tests.
pub trait Store: Send + Sync + 'static {
    fn enqueue(&self, ev: NewEvent) -> BoxFut<'_, Result<Enqueued, StoreError>>;
    /// Up to `limit` due deliveries of one target, leased for `lease`.
    fn claim(
        &self,
        route: &str,
        target: &str,
        limit: usize,
        lease: Duration,
    ) -> BoxFut<'_, Result<Vec<Claimed>, StoreError>>;
    /// Records an attempt and its outcome. When the delivery was replayed after `lease` was
    /// claimed, the attempt is recorded but the delivery stays as the replay left it
    /// (pending, due now): the replay asked for a delivery after it, and gets one.
    fn complete(
        &self,
        lease: Lease,
        attempt: Attempt,
        outcome: Completion,
    ) -> BoxFut<'_, Result<(), StoreError>>;
    /// When the next pending delivery of a target falls due (leases included).
    fn next_due(
        &self,
        route: &str,
        target: &str,
    ) -> BoxFut<'_, Result<Option<SystemTime>, StoreError>>;
    /// Makes one event's deliveries (all, or one target's) pending again now.
    fn replay_event(
        &self,
        event_id: &str,
        target: Option<&str>,
    ) -> BoxFut<'_, Result<usize, StoreError>>;
    fn replay_dead(&self, sel: DeadSelector) -> BoxFut<'_, Result<usize, StoreError>>;
    fn list_events(&self, q: EventQuery) -> BoxFut<'_, Result<Vec<EventSummary>, StoreError>>;
    fn get_event(&self, id: &str) -> BoxFut<'_, Result<Option<EventDetail>, StoreError>>;
    fn list_dead(
        &self,
        route: Option<String>,
        target: Option<String>,
        limit: usize,
    ) -> BoxFut<'_, Result<Vec<DeadLetter>, StoreError>>;
    fn stats(&self) -> BoxFut<'_, Result<Vec<TargetStats>, StoreError>>;
    /// Pending deliveries of targets not in `live` become dead letters. Returns how many.
    fn retire_targets(&self, live: Vec<(String, String)>) -> BoxFut<'_, Result<usize, StoreError>>;
    /// Removes up to `batch` events older than `older_than` whose deliveries are all finished
    /// (delivered or filtered), and expired dedup records. Returns events removed.
    fn purge(&self, older_than: SystemTime, batch: usize) -> BoxFut<'_, Result<usize, StoreError>>;
    /// Holds (or releases) a target's deliveries; kept across restarts.
    fn set_paused(
        &self,
        route: &str,
        target: &str,
        paused: bool,
    ) -> BoxFut<'_, Result<(), StoreError>>;
    /// Every paused (route, target).
    fn paused(&self) -> BoxFut<'_, Result<Vec<(String, String)>, StoreError>>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> u64;
    /// False while the store cannot commit or is at `max_size` (readiness turns 503).
    fn healthy(&self) -> bool;
    /// Routes with new events written by another process (shared stores only).
    fn wakes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
    /// A target's `concurrency`, for stores that enforce it across a fleet of replicas.
    fn fleet_concurrency(&self, _route: &str, _target: &str, _n: usize) {}
    /// A shared store's fleet-wide rate limit: `Some(true)` a token was taken, `Some(false)`
    /// none is left now, `None` this store leaves rate limiting to each process.
    fn take_token(
        &self,
        _route: &str,
        _target: &str,
        _per_second: f64,
        _burst: f64,
    ) -> BoxFut<'_, Result<Option<bool>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}
