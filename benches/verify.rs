//! Verification cost per provider at 2 KiB and 16 KiB, next to the HTTP handling it sits in
//! (see the README's benchmark tables for the whole request).
//!
//!     cargo bench --bench verify

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hookgate::config::{Provider, ProviderSpec, Secret};
use hookgate::verify::providers::ProviderVerifier;
use std::time::{SystemTime, UNIX_EPOCH};

fn spec(p: Provider, secret: &str) -> ProviderSpec {
    ProviderSpec {
        provider: p,
        secrets: vec![Secret::new(secret.to_owned())],
        public_keys: vec![],
        enforce: true,
        tolerance: p.default_tolerance().unwrap_or_default(),
        public_url: Some("https://hooks.example.com/in".into()),
        verify_token: None,
        username: Some("user".into()),
    }
}

fn bench(c: &mut Criterion) {
    let now = SystemTime::now();
    let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut g = c.benchmark_group("verify");
    for size in [2048usize, 16384] {
        for p in Provider::ALL.into_iter().filter(|p| !p.asymmetric()) {
            let secret = match p {
                Provider::Standard => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                Provider::Basic => "pw",
                _ => "bench-secret",
            };
            let body: Vec<u8> = match p {
                Provider::Linear => {
                    let mut b =
                        format!("{{\"webhookTimestamp\":{},\"pad\":\"", t * 1000).into_bytes();
                    b.resize(size - 2, b'x');
                    b.extend_from_slice(b"\"}");
                    b
                }
                Provider::Twilio => {
                    let mut b = b"Body=".to_vec();
                    b.resize(size, b'x');
                    b
                }
                _ => vec![b'x'; size],
            };
            let sign_secret = if p == Provider::Basic {
                "user:pw"
            } else {
                secret
            };
            let (headers, _) = hookgate::verify::sender::headers(
                p,
                sign_secret,
                &body,
                Some("https://hooks.example.com/in"),
                t,
            )
            .unwrap();
            let mut req = http::Request::post("/in").header("host", "hooks.example.com");
            for (n, v) in &headers {
                req = req.header(n.as_str(), v.as_str());
            }
            let parts = req.body(()).unwrap().into_parts().0;
            let v = ProviderVerifier::new(&spec(p, secret));
            assert!(v.check(&parts, &body, now, true).is_ok(), "{}", p.name());
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_with_input(BenchmarkId::new(p.name(), size), &body, |b, body| {
                b.iter(|| v.check(&parts, body, now, true))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
