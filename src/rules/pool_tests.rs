use super::*;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// A pool whose workers are the `hookgate` binary that `cargo test` builds beside this one.
fn new_pool(workers: usize, deadline: Duration, max_output: usize) -> JqPool {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("hookgate");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build) first",
        bin.display()
    );
    set_worker_program(bin);
    JqPool::new(
        workers,
        Limits {
            deadline,
            max_output,
            memory: 256 << 20,
        },
    )
}

fn input(body: &str, headers: &[(&str, &str)], query: Option<&str>) -> Input {
    Input::new(
        Bytes::from(body.to_owned()),
        headers.iter().map(|(n, v)| (*n, v.as_bytes())),
        query,
        Arc::from("gh"),
        true,
    )
}

fn transform(code: &str) -> Plan {
    Plan {
        filter: None,
        transform: Some(Arc::from(code)),
    }
}

fn filter(code: &str) -> Plan {
    Plan {
        filter: Some(Arc::from(code)),
        transform: None,
    }
}

async fn one(pool: &JqPool, i: Input, p: Plan) -> Verdict {
    pool.run(i, &vec![p].into()).await.remove(0)
}

#[tokio::test]
async fn runs_with_variables_and_limits() {
    let pool = new_pool(1, Duration::from_millis(500), 1 << 20);
    let v = one(
        &pool,
        input(
            r#"{"after": "abc"}"#,
            &[("X-GitHub-Event", "push")],
            Some("x=1"),
        ),
        transform("{ev: $headers[\"x-github-event\"], r: $route, q: $query.x, sha: .after}"),
    )
    .await;
    assert_eq!(
        v.transform,
        Some(Ok(Bytes::from_static(
            br#"{"ev":"push","r":"gh","q":"1","sha":"abc"}"#
        )))
    );
    let v = one(&pool, input(r#"{"a": 5}"#, &[], None), transform(".a.b")).await;
    assert!(matches!(v.transform, Some(Err(RunError::Jq(_)))), "{v:?}");
    let v = one(
        &pool,
        input("null", &[], None),
        transform("range(100000000)"),
    )
    .await;
    assert_eq!(v.transform, Some(Err(RunError::Outputs(2))));
    let v = one(&pool, input("null", &[], None), transform("empty")).await;
    assert_eq!(v.transform, Some(Err(RunError::Outputs(0))));
    let small = new_pool(1, Duration::from_millis(500), 10);
    let v = one(
        &small,
        input("null", &[], None),
        transform("\"0123456789abcdef\""),
    )
    .await;
    assert_eq!(v.transform, Some(Err(RunError::TooLarge(10))));
}

/// The bytes a transform sends are jq's own printing of its output: the same JSON text
/// as jaq's `Display`, escapes aside (serde_json writes `\b` and `\f` short).
#[tokio::test]
async fn plans_are_prepared_per_list() {
    let pool = new_pool(1, Duration::from_millis(500), 1 << 20);
    let i = || input(r#"{"a": 1, "b": 2}"#, &[("X-Kind", "k")], None);
    for _ in 0..3 {
        let a: Plans = vec![transform(".a")].into();
        let b: Plans = vec![transform(".b"), filter("$headers[\"x-kind\"] == \"k\"")].into();
        assert_eq!(
            pool.run(i(), &a).await[0].transform,
            Some(Ok(Bytes::from("1")))
        );
        let v = pool.run(i(), &b).await;
        assert_eq!(v[0].transform, Some(Ok(Bytes::from("2"))));
        assert_eq!(v[1].filter, Some(Ok(true)));
        assert!(b.reads_headers() && !a.reads_headers());
        assert!(!a.runs_nothing());
        assert!(Plans::from(vec![Plan::default()]).runs_nothing());
    }
}

/// A program can build a value nested deeper than any stack can print or drop
/// recursively; the run fails (or declines) and the gateway lives on.
#[tokio::test]
async fn deeply_nested_outputs_fail_without_a_crash() {
    let pool = new_pool(1, Duration::from_secs(5), 1 << 30);
    let deep = "reduce range(200000) as $i (null; [.])";
    let i = || input("{}", &[], None);
    let v = one(&pool, i(), transform(deep)).await;
    assert_eq!(
        v.transform,
        Some(Err(RunError::TooDeep(super::super::eval::MAX_OUTPUT_DEPTH)))
    );
    let v = one(&pool, i(), filter(deep)).await;
    assert_eq!(v.filter, Some(Ok(true)));
    // Dropped inside jaq, on the jq thread's own stack.
    let v = one(&pool, i(), filter(&format!("({deep}) | length == 1"))).await;
    assert_eq!(v.filter, Some(Ok(true)));
    // Nested as deep as allowed still prints.
    let ok = format!(
        "reduce range({}) as $i (0; [.])",
        super::super::eval::MAX_OUTPUT_DEPTH
    );
    let v = one(&pool, i(), transform(&ok)).await;
    assert!(
        matches!(v.transform, Some(Ok(ref b)) if b.len() == 2 * super::super::eval::MAX_OUTPUT_DEPTH + 1)
    );
    // The pool still answers.
    let v = one(&pool, i(), transform("1")).await;
    assert_eq!(v.transform, Some(Ok(Bytes::from("1"))));
}

#[tokio::test]
async fn filters_and_plans() {
    let pool = new_pool(1, Duration::from_millis(500), 1 << 20);
    let i = input(r#"{"ref":"refs/heads/main","n":[1,2]}"#, &[], None);
    let plans = vec![
        filter(r#".ref == "refs/heads/main""#),
        filter(".ref == \"x\""),
        filter(".n[]"),
        filter("empty"),
        filter(".ref.nope"),
        Plan {
            filter: Some(Arc::from("false")),
            transform: Some(Arc::from(".n")),
        },
        Plan {
            filter: Some(Arc::from("true")),
            transform: Some(Arc::from(".n")),
        },
    ];
    let v = pool.run(i, &plans.into()).await;
    assert_eq!(v[0].filter, Some(Ok(true)));
    assert_eq!(v[1].filter, Some(Ok(false)));
    assert_eq!(v[2].filter, Some(Ok(true)));
    assert_eq!(v[3].filter, Some(Ok(false)));
    assert!(matches!(v[4].filter, Some(Err(RunError::Jq(_)))));
    assert!(!v[4].admitted());
    assert_eq!(v[5].transform, None);
    assert_eq!(v[6].transform, Some(Ok(Bytes::from_static(b"[1,2]"))));
}

/// Many callers at once on two workers, while programs that never end run beside them:
/// each caller gets its own answer, the stuck runs fail at their deadline with their
/// workers killed, and the pool keeps answering; the drivers end with the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_programs_cost_their_deadline_and_the_pool_recovers() {
    let pool = new_pool(2, Duration::from_millis(300), 1 << 20);
    let stuck = |pool: &JqPool| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let i = input("null", &[], None);
            one(&pool, i, filter("last(range(1e12)) > 0")).await
        })
    };
    let (a, b) = (stuck(&pool), stuck(&pool));
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..200 {
        let pool = pool.clone();
        calls.spawn(async move {
            let i = input(&format!(r#"{{"n": {n}}}"#), &[], None);
            (n, one(&pool, i, transform(".n * 2")).await)
        });
    }
    while let Some(r) = calls.join_next().await {
        let (n, v) = r.unwrap();
        assert_eq!(v.transform, Some(Ok(Bytes::from((n * 2).to_string()))));
    }
    for s in [a, b] {
        let v = s.await.unwrap();
        assert_eq!(
            v.filter,
            Some(Err(RunError::Timeout(Duration::from_millis(300))))
        );
    }
    // Both workers were replaced: the pool still answers at once.
    let started = Instant::now();
    let v = one(&pool, input(r#"{"n": 1}"#, &[], None), filter(".n == 1")).await;
    assert_eq!(v.filter, Some(Ok(true)));
    assert!(started.elapsed() < Duration::from_secs(5));
    let shared = Arc::downgrade(&pool.shared.0);
    drop(pool);
    for _ in 0..100 {
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("jq drivers still hold the pool 5 s after it was dropped");
}

/// A program that eats memory ends its worker at the budget, whatever the machine has.
#[tokio::test]
async fn memory_hungry_programs_stop_at_the_budget() {
    let exe = std::env::current_exe().unwrap();
    set_worker_program(exe.parent().unwrap().parent().unwrap().join("hookgate"));
    let pool = JqPool::new(
        1,
        Limits {
            deadline: Duration::from_secs(20),
            max_output: 1 << 20,
            memory: 64 << 20,
        },
    );
    let i = || input("null", &[], None);
    let v = one(&pool, i(), filter("[range(1e9)] | length > 0")).await;
    assert_eq!(v.filter, Some(Err(RunError::OverMemory(64 << 20))));
    let v = one(&pool, i(), transform("[limit(3; repeat(1))]")).await;
    assert_eq!(v.transform, Some(Ok(Bytes::from("[1,1,1]"))));
}
