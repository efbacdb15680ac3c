//! The cost of a jq filter and transform on GitHub pushes of 2 KiB and 16 KiB, through the
//! jq pool as the gateway runs them (one hop to a jq thread and back included).
//!
//!     cargo bench --bench rules

use criterion::{criterion_group, criterion_main, Criterion};
use hookgate::rules::pool::JqPool;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = JqPool::new(1, Duration::from_secs(1), 1 << 20);
    let headers = json!({"x-github-event": "push"});
    let filter: Arc<str> =
        Arc::from(r#".ref == "refs/heads/main" and $headers["x-github-event"] == "push""#);
    let transform: Arc<str> =
        Arc::from("{repo: .repository.full_name, sha: .after, pusher: .pusher.name}");
    for (size, pad) in [("2k", 2000), ("16k", 16000)] {
        let path = format!(
            "{}/../shared/bench/payloads/push-{size}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body: serde_json::Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"ref": "refs/heads/main", "pad": "x".repeat(pad)}));
        let run = |program: &Arc<str>| {
            rt.block_on(pool.run(
                program.clone(),
                body.clone(),
                headers.clone(),
                "gh",
                json!({}),
            ))
        };
        c.bench_function(&format!("jq/filter/push-{size}"), |b| {
            b.iter(|| run(&filter))
        });
        c.bench_function(&format!("jq/transform/push-{size}"), |b| {
            b.iter(|| run(&transform))
        });
    }
    c.bench_function("jq/compile/transform", |b| {
        b.iter(|| hookgate::rules::compile(&transform))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
