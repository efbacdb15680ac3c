//! Arbitrary header values and bodies against every verifier: no panic, and nothing
//! accepted (the secrets are unknown to the fuzzer, so any acceptance is a parser bug).
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run provider_headers -- -max_total_time=60
#![no_main]

use hookgate::config::{Provider, ProviderSpec, Secret};
use hookgate::verify::providers::ProviderVerifier;
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "x-hub-signature-256", "stripe-signature", "x-slack-signature", "x-slack-request-timestamp",
    "x-shopify-hmac-sha256", "x-twilio-signature", "x-gitlab-token", "webhook-id", "webhook-timestamp",
    "webhook-signature", "svix-id", "svix-timestamp", "svix-signature", "paddle-signature",
    "linear-signature", "x-zm-signature", "x-zm-request-timestamp", "x-square-hmacsha256-signature",
    "x-signature-ed25519", "x-signature-timestamp", "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp", "authorization",
];

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == b'\n');
    let mut req = http::Request::post("/in?bodySHA256=00").header("host", "h");
    for name in NAMES {
        if let Some(v) = parts.next() {
            if let Ok(v) = http::HeaderValue::from_bytes(v) {
                req = req.header(*name, v);
            }
        }
    }
    let body: Vec<u8> = parts.flatten().copied().collect();
    let head = req.body(()).map(|r| r.into_parts().0);
    let Ok(head) = head else { return };
    for p in Provider::ALL {
        let spec = ProviderSpec {
            provider: p,
            secrets: vec![Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())],
            public_keys: vec![vec![3u8; 32]],
            enforce: true,
            tolerance: std::time::Duration::from_secs(300),
            public_url: None,
            verify_token: None,
            username: Some("u".into()),
        };
        let r = ProviderVerifier::new(&spec).check(&head, &body, std::time::SystemTime::now(), true);
        assert!(r.is_err(), "{} accepted fuzz input", p.name());
    }
});
