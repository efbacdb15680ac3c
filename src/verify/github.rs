//! GitHub's signature header, for `hookgate sign` and tests. Verification lives in
//! `providers.rs` with the other senders.

use super::mac;
use crate::config::HmacAlgorithm;

/// The `X-Hub-Signature-256` value GitHub would send for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac::compute(
            HmacAlgorithm::Sha256,
            secret.as_bytes(),
            &[body]
        ))
    )
}
