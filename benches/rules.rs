//! The cost of a jq filter and transform on GitHub pushes of 2 KiB and 16 KiB, through the
//! jq pool as the gateway runs them (one hop to a jq worker process and back, and the body parsed,
//! included; `filter+transform` is one trip with both, as a sync route makes it).
//!
//!     cargo bench --bench rules

// The allocator the `hookgate` binary runs with.
#[global_allocator]
static GLOBAL: hookgate::rules::budget::Budgeted<mimalloc::MiMalloc> =
    hookgate::rules::budget::Budgeted(mimalloc::MiMalloc);

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use hookgate::rules::pool::{Input, JqPool, Limits, Plan, Plans};
use std::sync::Arc;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    hookgate::rules::pool::set_worker_program(env!("CARGO_BIN_EXE_hookgate"));
    let pool = rt.block_on(async {
        JqPool::new(
            1,
            Limits {
                deadline: Duration::from_secs(1),
                max_output: 1 << 20,
                memory: 256 << 20,
            },
        )
    });
    let filter: Arc<str> =
        Arc::from(r#".ref == "refs/heads/main" and $headers["x-github-event"] == "push""#);
    let transform: Arc<str> =
        Arc::from("{repo: .repository.full_name, sha: .after, pusher: .pusher.name}");
    for (size, pad) in [("2k", 2000), ("16k", 16000)] {
        let path = format!(
            "{}/benches/kit/payloads/push-{size}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).map(Bytes::from).unwrap_or_else(|_| {
            Bytes::from(format!(
                r#"{{"ref":"refs/heads/main","pad":"{}"}}"#,
                "x".repeat(pad)
            ))
        });
        let headers: &[(&str, &[u8])] = &[
            ("content-type", b"application/json"),
            ("x-github-event", b"push"),
        ];
        let route: Arc<str> = Arc::from("gh");
        let run = |plans: &Plans| {
            let input = Input::new(
                body.clone(),
                headers.iter().copied(),
                None,
                route.clone(),
                true,
            );
            rt.block_on(pool.run(input, plans))
        };
        let only = |f: Option<&Arc<str>>, t: Option<&Arc<str>>| -> Plans {
            vec![Plan {
                filter: f.cloned(),
                transform: t.cloned(),
            }]
            .into()
        };
        c.bench_function(&format!("jq/parse/push-{size}"), |b| {
            b.iter(|| hookgate::rules::pool::body_value(None, &body))
        });
        let keys = hookgate::rules::project::keys(&transform).unwrap_or_default();
        c.bench_function(&format!("jq/projected-parse/push-{size}"), |b| {
            b.iter(|| hookgate::rules::project::parse(&body, &keys))
        });
        c.bench_function(&format!("jq/serde-skip/push-{size}"), |b| {
            b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(&body).map(|_| ()))
        });
        c.bench_function(&format!("jq/serde-parse/push-{size}"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(&body).map(|_| ()))
        });
        c.bench_function(&format!("jq/filter/push-{size}"), |b| {
            let plans = only(Some(&filter), None);
            b.iter(|| run(&plans))
        });
        c.bench_function(&format!("jq/transform/push-{size}"), |b| {
            let plans = only(None, Some(&transform));
            b.iter(|| run(&plans))
        });
        c.bench_function(&format!("jq/filter+transform/push-{size}"), |b| {
            let plans = only(Some(&filter), Some(&transform));
            b.iter(|| run(&plans))
        });
    }
    c.bench_function("jq/compile/transform", |b| {
        b.iter(|| hookgate::rules::compile(&transform))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
