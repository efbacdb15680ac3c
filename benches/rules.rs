//! The cost of a jq filter and transform on a 2 KiB GitHub push, through the jq pool as the
//! gateway runs them (one hop to a jq thread and back included).
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
    let body: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/bench/payloads/push-2k.json"
        ))
        .unwrap_or_else(|_| br#"{"ref":"refs/heads/main"}"#.to_vec()),
    )
    .unwrap_or(json!({}));
    let headers = json!({"x-github-event": "push"});
    let filter: Arc<str> =
        Arc::from(r#".ref == "refs/heads/main" and $headers["x-github-event"] == "push""#);
    let transform: Arc<str> =
        Arc::from("{repo: .repository.full_name, sha: .after, pusher: .pusher.name}");
    c.bench_function("jq/filter/push-2k", |b| {
        b.iter(|| {
            rt.block_on(pool.run(
                filter.clone(),
                body.clone(),
                headers.clone(),
                "gh",
                json!({}),
            ))
        })
    });
    c.bench_function("jq/transform/push-2k", |b| {
        b.iter(|| {
            rt.block_on(pool.run(
                transform.clone(),
                body.clone(),
                headers.clone(),
                "gh",
                json!({}),
            ))
        })
    });
    c.bench_function("jq/compile/transform", |b| {
        b.iter(|| hookgate::rules::compile(&transform))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
