//! Fuzz targets: functions that take arbitrary bytes and must neither panic nor accept what
//! they should not. They are shared by the stable fuzzer that `cargo test` runs
//! (`tests/fuzz.rs`: the committed corpus, then mutations of it) and by the libFuzzer
//! harnesses in `fuzz/` for longer coverage-guided runs on a nightly toolchain.

use crate::config::{Provider, ProviderSpec, Secret};
use crate::verify::providers::ProviderVerifier;

/// A target: arbitrary bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("provider_headers", provider_headers),
    ("interpolation", interpolation),
    ("jq_compile", jq_compile),
];

/// Arbitrary bytes as `routes.yaml`: the loader reports problems, never panics.
pub fn config(data: &[u8]) {
    let env = |name: &str| (name == "SET").then(|| "value".to_owned());
    let _ = crate::config::load_bytes(std::path::Path::new("fuzz.yaml"), data, &env);
}

/// `${VAR}` / `${VAR:-default}` resolution of arbitrary text.
pub fn interpolation(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| name.len().is_multiple_of(2).then(|| format!("<{name}>"));
    if let Ok(out) = crate::config::interp::interpolate(text, &env) {
        // Without `$`, the text is left exactly as it was.
        assert!(text.contains('$') || out == text, "{text:?} became {out:?}");
    }
}

/// Arbitrary text as a jq program: compiled (and checked for unbounded constructs), never run.
pub fn jq_compile(data: &[u8]) {
    let Ok(code) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::rules::check(code);
    let _ = crate::rules::unbounded::warnings(code);
}

/// Headers every verifier reads, in order; the fuzz input gives their values line by line.
const HEADER_NAMES: &[&str] = &[
    "x-hub-signature-256",
    "stripe-signature",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-shopify-hmac-sha256",
    "x-twilio-signature",
    "x-gitlab-token",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "paddle-signature",
    "linear-signature",
    "x-zm-signature",
    "x-zm-request-timestamp",
    "x-square-hmacsha256-signature",
    "x-signature-ed25519",
    "x-signature-timestamp",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "authorization",
];

/// Arbitrary header values and bodies against every verifier: no panic, and nothing
/// accepted (the secrets are unknown to the input, so an acceptance is a parser bug).
pub fn provider_headers(data: &[u8]) {
    let mut parts = data.split(|b| *b == b'\n');
    let mut req = http::Request::post("/in?bodySHA256=00").header("host", "h");
    for name in HEADER_NAMES {
        if let Some(v) = parts.next() {
            if let Ok(v) = http::HeaderValue::from_bytes(v) {
                req = req.header(*name, v);
            }
        }
    }
    let body: Vec<u8> = parts.flatten().copied().collect();
    let Ok(head) = req.body(()).map(|r| r.into_parts().0) else {
        return;
    };
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
        let r =
            ProviderVerifier::new(&spec).check(&head, &body, std::time::SystemTime::now(), true);
        assert!(r.is_err(), "{} accepted fuzz input", p.name());
    }
}
