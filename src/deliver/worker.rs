//! Delivery workers: one per (route, target), each progressing on its own so that a slow or
//! dead target never delays another. A worker claims due deliveries from the store (never
//! more than it has free `concurrency` slots, so a backlog stays on disk), sends each one,
//! classifies the answer and records the outcome with the next attempt time. A circuit
//! breaker stops it hammering a target that keeps failing.

use super::breaker::Breaker;
use super::client::HttpClient;
use super::proxy::{self, Forwarded, Outbound};
use super::retry::{self, Outcome};
use super::UpstreamError;
use crate::admin::metrics as m;
use crate::config::{Route, Target};
use crate::store::{Attempt, Claimed, Completion, Lease, Store};
use governor::{DefaultDirectRateLimiter, Quota};
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify, Semaphore};

/// Consecutive failures that open a target's circuit.
const BREAKER_THRESHOLD: u32 = 5;
/// Longest idle wait before looking at the store again (a fallback; enqueues wake workers).
const IDLE_POLL: Duration = Duration::from_secs(1);

pub struct TargetWorker {
    store: Arc<dyn Store>,
    route: Arc<Route>,
    target: Target,
    client: HttpClient,
    signature_headers: Vec<HeaderName>,
    sign_key: Option<Vec<u8>>,
    limiter: Option<DefaultDirectRateLimiter>,
    breaker: Mutex<Breaker>,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// Outcomes sent to the store and not yet committed: a slot is free again as soon as the
    /// target has answered (the delivery stays leased until its outcome commits), and drain
    /// waits for these too.
    records: Arc<Semaphore>,
    jq: crate::rules::pool::JqPool,
    /// Held by an operator: deliveries queue on disk meanwhile.
    paused: std::sync::atomic::AtomicBool,
    /// The last failed attempt's error, cleared by a success.
    last_error: Mutex<Option<String>>,
    metrics: m::TargetMetrics,
    jq_metrics: m::JqMetrics,
    /// The target's transform, as one plan for the jq pool (built once).
    transform: crate::rules::transform::Plans,
    /// The route's name, as the `$route` of its programs.
    route_name: Arc<str>,
}

impl TargetWorker {
    pub fn new(
        store: Arc<dyn Store>,
        route: Arc<Route>,
        target: Target,
        client: HttpClient,
        signature_headers: Vec<HeaderName>,
        jq: crate::rules::pool::JqPool,
    ) -> Self {
        let limiter = target.rate_limit.map(|r| {
            governor::RateLimiter::direct(Quota::per_second(r.per_second).allow_burst(r.burst))
        });
        let breaker = Breaker::new(
            BREAKER_THRESHOLD,
            target.retry.initial.max(Duration::from_millis(100)),
            target.retry.max_delay.min(Duration::from_secs(300)),
        );
        let metrics = m::TargetMetrics::delivery(&route.name, &target.name);
        let jq_metrics = m::JqMetrics::new(&route.name, &target.name);
        TargetWorker {
            transform: vec![crate::rules::transform::plan(&target, false, true)].into(),
            route_name: Arc::from(route.name.as_str()),
            sign_key: target.sign_key.clone(),
            slots: Arc::new(Semaphore::new(target.concurrency.max(1))),
            // As many outcomes on their way to the store as attempts in flight: after a crash,
            // at most 2 × concurrency deliveries are sent again.
            records: Arc::new(Semaphore::new(target.concurrency.max(1))),
            store,
            route,
            target,
            client,
            signature_headers,
            limiter,
            breaker: Mutex::new(breaker),
            wake: Notify::new(),
            jq,
            paused: Default::default(),
            last_error: Mutex::new(None),
            metrics,
            jq_metrics,
        }
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::Release);
        self.wake();
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Attempts running now.
    pub fn in_flight(&self) -> usize {
        self.target
            .concurrency
            .saturating_sub(self.slots.available_permits())
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn circuit(&self) -> &'static str {
        self.breaker.lock().map(|b| b.label()).unwrap_or("closed")
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("route", self.route.name.clone()),
            ("target", self.target.name.clone()),
        ]
    }

    /// Claims and delivers until `stop` turns true, then waits for attempts in flight.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // Long enough for an attempt and its record; after a crash another replica (or this one,
        // restarted) takes the delivery over when the lease runs out.
        let lease = self.target.timeout + Duration::from_secs(5);
        while !*stop.borrow() {
            if self.is_paused() {
                tokio::select! {
                    _ = self.wake.notified() => {},
                    _ = stop.changed() => break,
                }
                continue;
            }
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.changed() => break,
            };
            let free = 1 + self.slots.available_permits();
            let admitted = match self.breaker.lock() {
                Ok(mut b) => b.admit(free, Instant::now()),
                Err(_) => free,
            };
            if admitted == 0 {
                drop(first);
                let reopen = self.breaker.lock().ok().and_then(|b| b.reopens_at());
                let wait = reopen
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(100))
                    .max(Duration::from_millis(10));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = stop.changed() => break,
                }
                continue;
            }
            let batch = match self
                .store
                .claim(&self.route.name, &self.target.name, admitted, lease)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(route = %self.route.name, target = %self.target.name, error = %e, "cannot claim deliveries");
                    drop(first);
                    if let Ok(mut b) = self.breaker.lock() {
                        b.probe_unused(Instant::now());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {},
                        _ = stop.changed() => break,
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                drop(first);
                if let Ok(mut b) = self.breaker.lock() {
                    b.probe_unused(Instant::now());
                }
                self.idle(&mut stop).await;
                continue;
            }
            let mut first = Some(first);
            for claimed in batch {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match self.slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        // Cannot happen (we claimed no more than free slots); the lease expires
                        // and the delivery is claimed again.
                        Err(_) => break,
                    },
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let (id, record, completion) = me.attempt(&claimed).await;
                    // Recording must not be lost at drain, so it holds a permit of its own.
                    let rec = me.records.clone().acquire_owned().await;
                    drop(permit);
                    if let Err(e) = me.store.complete(id, record, completion).await {
                        // The lease runs out and the delivery is attempted again: at least once holds.
                        tracing::error!(route = %me.route.name, target = %me.target.name, event_id = %claimed.event.id, error = %e, "cannot record a delivery outcome");
                    }
                    drop(rec);
                });
            }
        }
        // Drain: wait until every slot is free again, i.e. every attempt has been recorded.
        let n = u32::try_from(self.target.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(n).await;
        let _ = self.records.acquire_many(n).await;
    }

    /// Sleeps until woken by an enqueue, the next retry is due, or the poll interval passes.
    async fn idle(&self, stop: &mut watch::Receiver<bool>) {
        let wait = match self
            .store
            .next_due(&self.route.name, &self.target.name)
            .await
        {
            Ok(Some(t)) => t
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(IDLE_POLL),
            _ => IDLE_POLL,
        };
        if wait.is_zero() {
            // Due but leased elsewhere or just released: a short pause avoids a busy loop.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {},
                _ = stop.changed() => {},
            }
            return;
        }
        tokio::select! {
            _ = self.wake.notified() => {},
            _ = tokio::time::sleep(wait) => {},
            _ = stop.changed() => {},
        }
    }

    /// The body for this target: the original bytes, or the transform's single JSON output.
    async fn body(
        &self,
        c: &Claimed,
    ) -> Result<Option<bytes::Bytes>, crate::rules::transform::RuleFailure> {
        if self.transform.runs_nothing() {
            return Ok(None);
        }
        let ev = &c.event;
        let input = crate::rules::transform::Input::new(
            ev.body.clone(),
            ev.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            ev.path_and_query.split_once('?').map(|(_, q)| q),
            self.route_name.clone(),
            self.transform.reads_headers(),
        );
        let counters = std::slice::from_ref(&self.jq_metrics);
        let d = crate::rules::transform::decide(&self.jq, input, &self.transform, counters).await;
        match d.into_iter().next().and_then(|d| d.body) {
            Some(r) => r.map(Some),
            None => Err(crate::rules::transform::RuleFailure {
                reason: "transform gave no answer".into(),
                transient: true,
            }),
        }
    }

    fn request(
        &self,
        c: &Claimed,
        attempt_no: u32,
        transformed: Option<bytes::Bytes>,
    ) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, UpstreamError> {
        let ev = &c.event;
        let uri: http::Uri = ev
            .path_and_query
            .parse()
            .map_err(|e| UpstreamError::Request(format!("stored path: {e}")))?;
        let mut headers = http::HeaderMap::with_capacity(ev.headers.len() + 8);
        for (n, v) in &ev.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_bytes(v),
            ) {
                headers.append(n, v);
            }
        }
        if transformed.is_some() {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let body = transformed.unwrap_or_else(|| ev.body.clone());
        let mut extra = vec![
            (
                HeaderName::from_static("hookgate-event-id"),
                HeaderValue::from_str(&ev.id).map_err(|e| UpstreamError::Request(e.to_string()))?,
            ),
            (
                HeaderName::from_static("hookgate-attempt"),
                HeaderValue::from(attempt_no),
            ),
        ];
        if let Some(key) = &self.sign_key {
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let sig = super::sign::signature(key, &ev.id, ts, &body);
            let hv = |s: &str| {
                HeaderValue::from_str(s).map_err(|e| UpstreamError::Request(e.to_string()))
            };
            extra.push((HeaderName::from_static("webhook-id"), hv(&ev.id)?));
            extra.push((
                HeaderName::from_static("webhook-timestamp"),
                HeaderValue::from(ts),
            ));
            extra.push((HeaderName::from_static("webhook-signature"), hv(&sig)?));
        }
        let forwarded = Forwarded {
            for_chain: ev.forwarded_for.clone(),
            proto: if ev.forwarded_proto == "https" {
                "https"
            } else {
                "http"
            },
            host: ev.forwarded_host.clone(),
        };
        Outbound {
            method: http::Method::from_bytes(ev.method.as_bytes()).unwrap_or(http::Method::POST),
            uri: &uri,
            headers,
            body,
            forwarded: &forwarded,
            route_name: &self.route.name,
            route_path: &self.route.path,
            target: &self.target,
            signature_headers: &self.signature_headers,
            extra,
            event_id: &ev.id,
        }
        .into_request()
    }

    /// Waits for the target's rate limit: fleet-wide when the store shares one, else local.
    async fn rate_limit(&self) {
        let (Some(l), Some(r)) = (&self.limiter, self.target.rate_limit) else {
            return;
        };
        let per_second = f64::from(r.per_second.get());
        let burst = f64::from(r.burst.get());
        loop {
            match self
                .store
                .take_token(&self.route.name, &self.target.name, per_second, burst)
                .await
            {
                Ok(Some(true)) => return,
                Ok(Some(false)) => {
                    tokio::time::sleep(Duration::from_secs_f64(1.0 / per_second)).await
                }
                // Not shared, or the database is away: this process's own limiter holds.
                Ok(None) | Err(_) => {
                    l.until_ready().await;
                    return;
                }
            }
        }
    }

    /// Makes one attempt; returns what the store must record of it.
    async fn attempt(&self, c: &Claimed) -> (Lease, Attempt, Completion) {
        self.rate_limit().await;
        let attempt_no = c.attempts + 1;
        let started_at = SystemTime::now();
        let start = Instant::now();
        let result = match self.body(c).await {
            // A transform that fails is the rule's fault, not the target's: retried only when
            // the failure was passing, else dead with the reason until the rule is fixed and
            // the delivery replayed.
            Err(e) => Err(UpstreamError::Rule(e)),
            Ok(body) => match self.request(c, attempt_no, body) {
                Ok(req) => proxy::send(&self.client, req, self.target.timeout).await,
                Err(e) => Err(e),
            },
        };
        let elapsed = start.elapsed();
        let (outcome, status, error) = match &result {
            Ok(resp) => {
                let ra = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                let o = retry::classify(resp.status().as_u16(), ra);
                let err = match &o {
                    Outcome::Success => None,
                    Outcome::Retry { reason, .. } | Outcome::Fatal { reason } => {
                        Some(reason.clone())
                    }
                };
                (o, Some(resp.status().as_u16()), err)
            }
            Err(e) if e.retryable() => (
                Outcome::Retry {
                    reason: e.to_string(),
                    retry_after: None,
                },
                None,
                Some(e.to_string()),
            ),
            Err(e) => (
                Outcome::Fatal {
                    reason: e.to_string(),
                },
                None,
                Some(e.to_string()),
            ),
        };
        if let Ok(mut b) = self.breaker.lock() {
            match &outcome {
                // A 4xx comes from a live target: it says nothing about the target's health.
                Outcome::Success | Outcome::Fatal { .. } => b.success(),
                Outcome::Retry { .. } => b.failure(Instant::now()),
            }
            let open = if b.label() == "closed" { 0.0 } else { 1.0 };
            metrics::gauge!(m::CIRCUIT_OPEN, &self.labels()).set(open);
        }
        let retry = &self.target.retry;
        let completion = match outcome {
            Outcome::Success => Completion::Delivered,
            Outcome::Fatal { reason } => Completion::Dead { error: reason },
            Outcome::Retry {
                reason,
                retry_after,
            } => {
                let age = SystemTime::now()
                    .duration_since(c.created_at)
                    .unwrap_or(Duration::ZERO);
                if attempt_no >= retry.max_attempts {
                    Completion::Dead {
                        error: format!("{reason}; gave up after {attempt_no} attempts"),
                    }
                } else if age >= retry.max_age {
                    Completion::Dead {
                        error: format!("{reason}; gave up after max_age {:?}", retry.max_age),
                    }
                } else {
                    let d = retry::delay(
                        attempt_no,
                        retry.initial,
                        retry.max_delay,
                        retry_after,
                        fastrand::f64(),
                    );
                    Completion::Retry {
                        at: SystemTime::now() + d,
                        error: reason,
                    }
                }
            }
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = match &completion {
                Completion::Delivered => None,
                Completion::Retry { error, .. } | Completion::Dead { error } => Some(error.clone()),
            };
        }
        let label = match &completion {
            Completion::Delivered => "delivered",
            Completion::Retry { .. } => "retry",
            Completion::Dead { .. } => "dead",
        };
        self.metrics.answer(label, elapsed.as_secs_f64());
        tracing::info!(
            target: "hookgate::delivery",
            route = %self.route.name,
            target_name = %self.target.name,
            event_id = %c.event.id,
            attempt = attempt_no,
            status = status.map(i64::from).unwrap_or(-1),
            outcome = label,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            error = error.as_deref().unwrap_or(""),
            "delivery attempt"
        );
        let record = Attempt {
            at_ms: crate::store::to_ms(started_at),
            status,
            error,
            duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        };
        (c.lease(), record, completion)
    }
}

struct Handle {
    worker: Arc<TargetWorker>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// What the worker was built from; a change means a new worker.
    fingerprint: String,
}

/// All workers, by (route, target). A config reload reconciles it: new targets get a worker,
/// changed targets a new one with the new settings, removed targets' workers stop after
/// their attempts in flight (their pending deliveries become dead letters in the store).
pub struct Engine {
    store: Option<Arc<dyn Store>>,
    /// The jq pool, shared with ingress.
    pub jq: crate::rules::pool::JqPool,
    workers: Mutex<HashMap<(String, String), Handle>>,
}

/// One async target as the runtime built it.
pub struct Wanted {
    pub route: Arc<Route>,
    pub target: Target,
    pub client: HttpClient,
    pub signature_headers: Vec<HeaderName>,
}

impl Engine {
    pub fn new(store: Option<Arc<dyn Store>>, jq: crate::rules::pool::JqPool) -> Arc<Self> {
        let wakes = store.as_ref().and_then(|s| s.wakes());
        let engine = Arc::new(Engine {
            store,
            jq,
            workers: Mutex::new(HashMap::new()),
        });
        // A shared store announces events written by other replicas: wake their route here.
        if let Some(mut rx) = wakes {
            let weak = Arc::downgrade(&engine);
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(route) => match weak.upgrade() {
                            Some(e) => e.wake_route(&route),
                            None => return,
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            if let Some(e) = weak.upgrade() {
                                e.wake_all();
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
        engine
    }

    /// Starts, replaces and stops workers to match `wanted`, then retires the pending
    /// deliveries of targets that are gone. Returns how many deliveries were retired.
    pub async fn reconcile(&self, wanted: Vec<Wanted>) -> Result<usize, crate::store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let paused: std::collections::HashSet<(String, String)> = match store.paused().await {
            Ok(p) => p.into_iter().collect(),
            Err(e) => {
                // The store is away (it recovers by itself); pauses apply once it is back.
                tracing::warn!(error = %e, "cannot read paused targets");
                Default::default()
            }
        };
        let mut live = Vec::new();
        let mut stopping = Vec::new();
        if let Ok(mut workers) = self.workers.lock() {
            let keep: std::collections::HashSet<(String, String)> = wanted
                .iter()
                .map(|w| (w.route.name.clone(), w.target.name.clone()))
                .collect();
            let gone: Vec<_> = workers
                .keys()
                .filter(|k| !keep.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                stopping.extend(workers.remove(&k));
            }
            for w in wanted {
                let key = (w.route.name.clone(), w.target.name.clone());
                live.push(key.clone());
                let fingerprint = format!(
                    "{:?}|{:?}|{:?}",
                    w.target, w.route.path, w.signature_headers
                );
                if workers
                    .get(&key)
                    .is_some_and(|h| h.fingerprint == fingerprint)
                {
                    continue;
                }
                stopping.extend(workers.remove(&key));
                let worker = Arc::new(TargetWorker::new(
                    store.clone(),
                    w.route,
                    w.target,
                    w.client,
                    w.signature_headers,
                    self.jq.clone(),
                ));
                worker.set_paused(paused.contains(&key));
                store.fleet_concurrency(&key.0, &key.1, worker.target.concurrency);
                let (stop, rx) = watch::channel(false);
                let task = tokio::spawn(worker.clone().run(rx));
                workers.insert(
                    key,
                    Handle {
                        worker,
                        stop,
                        task,
                        fingerprint,
                    },
                );
            }
        }
        for h in &stopping {
            let _ = h.stop.send(true);
        }
        let retired = match store.retire_targets(live).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot retire removed targets now; the next start or reload will");
                0
            }
        };
        if retired > 0 {
            tracing::warn!(
                retired,
                "pending deliveries of targets no longer in the config are now dead letters"
            );
        }
        Ok(retired)
    }

    /// Stops every worker and waits until their attempts in flight are recorded.
    pub async fn shutdown(&self) {
        let handles: Vec<Handle> = match self.workers.lock() {
            Ok(mut w) => w.drain().map(|(_, h)| h).collect(),
            Err(_) => Vec::new(),
        };
        for h in &handles {
            let _ = h.stop.send(true);
        }
        for h in handles {
            let _ = h.task.await;
        }
    }

    fn each(&self, mut f: impl FnMut(&(String, String), &TargetWorker)) {
        if let Ok(w) = self.workers.lock() {
            for (k, h) in w.iter() {
                f(k, &h.worker);
            }
        }
    }

    pub fn wake_route(&self, route: &str) {
        self.each(|(r, _), w| {
            if r == route {
                w.wake();
            }
        });
    }

    pub fn wake_all(&self) {
        self.each(|_, w| w.wake());
    }

    /// Pauses or resumes a target, durably. False when no such async target runs.
    pub async fn set_paused(
        &self,
        route: &str,
        target: &str,
        paused: bool,
    ) -> Result<bool, crate::store::StoreError> {
        let worker = self.workers.lock().ok().and_then(|w| {
            w.get(&(route.to_owned(), target.to_owned()))
                .map(|h| h.worker.clone())
        });
        let (Some(worker), Some(store)) = (worker, &self.store) else {
            return Ok(false);
        };
        store.set_paused(route, target, paused).await?;
        worker.set_paused(paused);
        Ok(true)
    }

    /// (in flight, last error) of one target's worker.
    pub fn activity(&self, route: &str, target: &str) -> (usize, Option<String>) {
        self.workers
            .lock()
            .ok()
            .and_then(|w| {
                w.get(&(route.to_owned(), target.to_owned()))
                    .map(|h| (h.worker.in_flight(), h.worker.last_error()))
            })
            .unwrap_or((0, None))
    }

    pub fn is_paused(&self, route: &str, target: &str) -> bool {
        self.workers
            .lock()
            .ok()
            .and_then(|w| {
                w.get(&(route.to_owned(), target.to_owned()))
                    .map(|h| h.worker.is_paused())
            })
            .unwrap_or(false)
    }

    /// The circuit state of one target's worker.
    pub fn circuit(&self, route: &str, target: &str) -> Option<&'static str> {
        let w = self.workers.lock().ok()?;
        w.get(&(route.to_owned(), target.to_owned()))
            .map(|h| h.worker.circuit())
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.workers.lock().map(|w| w.len()).unwrap_or(0);
        f.debug_struct("Engine").field("workers", &n).finish()
    }
}
