//! Outbound signing with Standard Webhooks headers, so a target can verify that a request
//! came from the gateway with any Standard Webhooks library: `webhook-id` (the event id,
//! stable across retries), `webhook-timestamp` (seconds), and `webhook-signature:
//! v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is the base64
//! after `whsec_`.

use crate::config::HmacAlgorithm;
use crate::verify::mac;
use base64::Engine;

/// Decodes a `whsec_<base64>` secret (or bare base64) into the key bytes.
pub fn decode_secret(s: &str) -> Result<Vec<u8>, String> {
    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "a Standard Webhooks secret must be `whsec_` followed by base64".to_owned())
}

pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = mac::compute(
        HmacAlgorithm::Sha256,
        key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_published_vector() {
        // libraries/go/webhook_test.go TestWebhookSign
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(decode_secret("whsec_***").is_err());
    }
}
