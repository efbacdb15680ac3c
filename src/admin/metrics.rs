//! Every metric name in one place, with explicit histogram buckets. Labels are bounded:
//! route and target names from the config, status codes and fixed reason kinds — never ids
//! or IP addresses.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const REQUESTS: &str = "hookgate_requests_total";
pub const REQUEST_DURATION: &str = "hookgate_request_duration_seconds";
pub const VERIFY_FAILURES: &str = "hookgate_verification_failures_total";
pub const VERIFY_SHADOW_FAILURES: &str = "hookgate_verification_shadow_failures_total";
pub const SECRET_MATCHES: &str = "hookgate_verification_secret_matches_total";
pub const UPSTREAM_DURATION: &str = "hookgate_upstream_duration_seconds";
pub const UPSTREAM_RESPONSES: &str = "hookgate_upstream_responses_total";
pub const OPEN_CONNECTIONS: &str = "hookgate_open_connections";
pub const TLS_HANDSHAKE_FAILURES: &str = "hookgate_tls_handshake_failures_total";
pub const CONNECTIONS_CLOSED: &str = "hookgate_connections_closed_total";
pub const EVENTS: &str = "hookgate_events_total";
pub const JQ_RUNS: &str = "hookgate_jq_runs_total";
pub const RELOADS: &str = "hookgate_reloads_total";
pub const HANDSHAKES: &str = "hookgate_handshakes_total";
pub const DELIVERIES: &str = "hookgate_deliveries_total";
pub const DELIVERY_DURATION: &str = "hookgate_delivery_duration_seconds";
pub const QUEUE_DEPTH: &str = "hookgate_queue_depth";
pub const DEAD_LETTERS: &str = "hookgate_dead_letters";
pub const OLDEST_PENDING: &str = "hookgate_oldest_pending_age_seconds";
pub const CIRCUIT_OPEN: &str = "hookgate_circuit_open";
pub const STORE_COMMIT_BATCH: &str = "hookgate_store_commit_batch_size";
pub const STORE_COMMIT_DURATION: &str = "hookgate_store_commit_duration_seconds";
pub const STORE_SIZE: &str = "hookgate_store_size_bytes";

/// Label value for requests that matched no route.
pub const NO_ROUTE: &str = "_none";

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// This process's name in a fleet: `$HOOKGATE_REPLICA`, else the host name.
pub fn replica() -> String {
    std::env::var("HOOKGATE_REPLICA")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "hookgate".to_owned())
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets (as a scrape would).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide recorder once (several gateways in one test process share it)
/// and returns the handle that renders `/metrics`.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .add_global_label("replica", replica())
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full(STORE_COMMIT_BATCH.into()), BATCH_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            // Histogram samples pile up until drained: without this, a gateway nobody
            // scrapes would grow by ≈40 bytes per request, forever.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("hookgate-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS, "Requests answered, by route and HTTP status.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request head to answer, by route."
    );
    describe_counter!(
        VERIFY_FAILURES,
        "Requests refused by signature verification, by route and reason."
    );
    describe_counter!(
        VERIFY_SHADOW_FAILURES,
        "Verification failures let through by shadow mode (enforce: false)."
    );
    describe_counter!(
        SECRET_MATCHES,
        "Verified requests by route and index of the secret that matched."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time for a target to answer, by route and target."
    );
    describe_counter!(
        UPSTREAM_RESPONSES,
        "Target answers by route, target and outcome (2xx..5xx, other, error, timeout)."
    );
    describe_gauge!(
        OPEN_CONNECTIONS,
        "Client connections currently open on the public listeners."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS handshakes that failed or timed out."
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections closed by a limit: no first request in time (first_request), idle between requests (idle), over the per-address cap (per_ip)."
    );
}

/// A route's request metrics, looked up in the registry once (on first use, so a runtime
/// built before the recorder is installed still records): each request then costs an
/// atomic add, not a label-keyed registry lookup with freshly allocated strings.
pub struct RouteMetrics {
    route: String,
    duration: OnceLock<metrics::Histogram>,
    by_status: std::sync::Mutex<Vec<(u16, metrics::Counter)>>,
    events: std::sync::Mutex<Vec<(&'static str, metrics::Counter)>>,
    secrets: std::sync::Mutex<Vec<(usize, metrics::Counter)>>,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        RouteMetrics {
            route: route.to_owned(),
            duration: OnceLock::new(),
            by_status: Default::default(),
            events: Default::default(),
            secrets: Default::default(),
        }
    }

    /// `hookgate_events_total`: `stored`, `duplicate`, `refused`.
    pub fn event(&self, result: &'static str) {
        cached(
            &self.events,
            result,
            || metrics::counter!(EVENTS, "route" => self.route.clone(), "result" => result),
        )
        .increment(1);
    }

    /// `hookgate_verification_secret_matches_total`: which secret verified a request.
    pub fn secret_matched(&self, index: usize) {
        cached(&self.secrets, index, || {
            metrics::counter!(SECRET_MATCHES, "route" => self.route.clone(), "index" => index.to_string())
        })
        .increment(1);
    }

    /// One answered request: `hookgate_requests_total` and `hookgate_request_duration_seconds`.
    pub fn request(&self, status: u16, seconds: f64) {
        cached(&self.by_status, status, || {
            metrics::counter!(REQUESTS, "route" => self.route.clone(), "status" => status.to_string())
        })
        .increment(1);
        self.duration
            .get_or_init(|| metrics::histogram!(REQUEST_DURATION, "route" => self.route.clone()))
            .record(seconds);
    }
}

/// A target's answers, timed and counted by outcome: as a sync route relays them
/// ([`TargetMetrics::upstream`]) or as the delivery workers send ([`TargetMetrics::delivery`]).
pub struct TargetMetrics {
    route: String,
    target: String,
    duration_name: &'static str,
    outcome_name: &'static str,
    duration: OnceLock<metrics::Histogram>,
    by_outcome: std::sync::Mutex<Vec<(&'static str, metrics::Counter)>>,
}

impl TargetMetrics {
    fn new(
        route: &str,
        target: &str,
        duration_name: &'static str,
        outcome_name: &'static str,
    ) -> Self {
        TargetMetrics {
            route: route.to_owned(),
            target: target.to_owned(),
            duration_name,
            outcome_name,
            duration: OnceLock::new(),
            by_outcome: Default::default(),
        }
    }

    /// `hookgate_upstream_duration_seconds` and `hookgate_upstream_responses_total`.
    pub fn upstream(route: &str, target: &str) -> Self {
        Self::new(route, target, UPSTREAM_DURATION, UPSTREAM_RESPONSES)
    }

    /// `hookgate_delivery_duration_seconds` and `hookgate_deliveries_total`.
    pub fn delivery(route: &str, target: &str) -> Self {
        Self::new(route, target, DELIVERY_DURATION, DELIVERIES)
    }

    /// One answer (or failure) after `seconds`, by its outcome label.
    pub fn answer(&self, outcome: &'static str, seconds: f64) {
        self.duration
            .get_or_init(|| {
                metrics::histogram!(self.duration_name, "route" => self.route.clone(), "target" => self.target.clone())
            })
            .record(seconds);
        cached(&self.by_outcome, outcome, || {
            metrics::counter!(self.outcome_name, "route" => self.route.clone(), "target" => self.target.clone(), "outcome" => outcome)
        })
        .increment(1);
    }
}

/// One target's jq runs (`hookgate_jq_runs_total`), by kind and result.
pub struct JqMetrics {
    pub route: String,
    pub target: String,
    runs: std::sync::Mutex<Vec<((&'static str, &'static str), metrics::Counter)>>,
}

impl JqMetrics {
    pub fn new(route: &str, target: &str) -> Self {
        JqMetrics {
            route: route.to_owned(),
            target: target.to_owned(),
            runs: Default::default(),
        }
    }

    /// `kind`: `filter` or `transform`; `result`: `match`, `no_match`, `ok`, `error`, …
    pub fn run(&self, kind: &'static str, result: &'static str) {
        cached(&self.runs, (kind, result), || {
            metrics::counter!(JQ_RUNS, "route" => self.route.clone(), "target" => self.target.clone(), "kind" => kind, "result" => result)
        })
        .increment(1);
    }
}

/// The handle for `key`, made by `make` the first time. The lists stay tiny (statuses a
/// route has answered), so a scan beats hashing.
fn cached<K: PartialEq + Copy>(
    list: &std::sync::Mutex<Vec<(K, metrics::Counter)>>,
    key: K,
    make: impl FnOnce() -> metrics::Counter,
) -> metrics::Counter {
    let mut l = list.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = l.iter().find(|(k, _)| *k == key) {
        return c.clone();
    }
    let c = make();
    l.push((key, c.clone()));
    c
}

/// The outcome label of a target's HTTP status.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_record_into_the_registry() {
        let handle = install().expect("recorder");
        let r = RouteMetrics::new("metrics-cache-test");
        r.request(200, 0.001);
        r.request(200, 0.002);
        r.request(401, 0.001);
        r.event("stored");
        r.secret_matched(1);
        let u = TargetMetrics::upstream("metrics-cache-test", "t");
        u.answer(status_class(204), 0.001);
        u.answer("timeout", 1.0);
        let text = handle.render();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains("metrics-cache-test") && l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle} in\n{text}"))
                .to_owned()
        };
        assert!(line("status=\"200\"").ends_with(" 2"));
        assert!(line("status=\"401\"").ends_with(" 1"));
        assert!(line("hookgate_request_duration_seconds_count").ends_with(" 3"));
        assert!(line("outcome=\"2xx\"").ends_with(" 1"));
        assert!(line("outcome=\"timeout\"").ends_with(" 1"));
        assert!(line("hookgate_events_total").ends_with(" 1"));
        assert!(line("index=\"1\"").ends_with(" 1"));
        let d = TargetMetrics::delivery("metrics-cache-test", "t");
        d.answer("delivered", 0.01);
        let j = JqMetrics::new("metrics-cache-test", "t");
        j.run("filter", "match");
        j.run("filter", "match");
        j.run("transform", "error");
        let text = handle.render();
        assert!(text
            .lines()
            .any(|l| l.starts_with("hookgate_deliveries_total")
                && l.contains("metrics-cache-test")
                && l.contains("outcome=\"delivered\"")
                && l.ends_with(" 1")));
        let jq = |kind: &str, result: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("hookgate_jq_runs_total")
                        && l.contains("metrics-cache-test")
                        && l.contains(&format!("kind=\"{kind}\""))
                        && l.contains(&format!("result=\"{result}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        assert_eq!(jq("filter", "match").as_deref(), Some("2"));
        assert_eq!(jq("transform", "error").as_deref(), Some("1"));
    }
}
