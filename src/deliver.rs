//! Delivery to targets: the pooled outbound client; for `mode: sync`, forwarding one
//! verified request to the route's target; for `mode: async`, the workers that deliver
//! stored events with retries, backoff, a circuit breaker and dead letters.

pub mod breaker;
pub mod client;
pub mod h1pool;
pub mod proxy;
pub mod retry;
pub mod sign;
pub mod worker;

use std::time::Duration;

/// Why a target could not give an answer. Its source is always the target (or the network
/// to it); `retryable` tells a retry policy whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("target unreachable: {0}")]
    Unreachable(String),
    #[error("target did not answer within {0:?}")]
    Timeout(Duration),
    #[error("target answer unusable: {0}")]
    BadResponse(String),
    #[error("cannot build the request to the target: {0}")]
    Request(String),
    /// The target's transform failed inside the gateway; retried only when the failure
    /// was passing (a busy pool, a worker that died beside another's run).
    #[error("{0}")]
    Rule(crate::rules::transform::RuleFailure),
}

impl UpstreamError {
    pub fn retryable(&self) -> bool {
        match self {
            UpstreamError::Request(_) => false,
            UpstreamError::Rule(f) => f.transient,
            _ => true,
        }
    }
}
