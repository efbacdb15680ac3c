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
}

impl UpstreamError {
    pub fn retryable(&self) -> bool {
        !matches!(self, UpstreamError::Request(_))
    }
}
