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
        "Target answers by route, target and outcome (2xx..5xx, error, timeout)."
    );
    describe_gauge!(
        OPEN_CONNECTIONS,
        "Client connections currently open on the public listeners."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS handshakes that failed or timed out."
    );
}
