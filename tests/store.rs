//! Store conformance: the same checks for every `Store` implementation (today the embedded
//! SQLite store), plus a randomized model check: random sequences of enqueue / claim /
//! deliver / retry / dead-letter / replay / restart, compared after every step with a
//! simple in-memory model. No delivery may be lost, handed out twice under a lease, or
//! leave `pending` except through an explicit completion.

use hookgate::store::embedded::EmbeddedStore;
use hookgate::store::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn event(id: &str, targets: &[&str], dedup: Option<&str>) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        route: "r".into(),
        method: "POST".into(),
        path_and_query: "/in?x=1".into(),
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("x-bin".into(), vec![0xff, 0]),
        ],
        body: bytes::Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        client_ip: "192.0.2.1".parse().unwrap(),
        received_at: SystemTime::now(),
        forwarded_for: "192.0.2.1".into(),
        forwarded_proto: "https".into(),
        forwarded_host: Some("hooks.example".into()),
        targets: targets.iter().map(|t| t.to_string()).collect(),
        filtered: vec![],
        failed: vec![],
        dedup: dedup.map(|d| (d.to_owned(), Duration::from_secs(3600))),
    }
}

fn attempt() -> Attempt {
    Attempt {
        at_ms: to_ms(SystemTime::now()),
        status: Some(200),
        error: None,
        duration_ms: 1,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

async fn conformance<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    let s = open().await;
    // Ack after commit, with the exact bytes and headers back.
    assert_eq!(
        s.enqueue(event("e1", &["a", "b"], Some("k1")))
            .await
            .unwrap(),
        Enqueued::Stored { id: "e1".into() }
    );
    assert_eq!(
        s.enqueue(event("e2", &["a"], Some("k1"))).await.unwrap(),
        Enqueued::Duplicate { id: "e1".into() }
    );
    let c = s.claim("r", "a", 10, HOUR).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].event.id, "e1");
    assert_eq!(c[0].event.headers[1], ("x-bin".to_owned(), vec![0xff, 0]));
    assert_eq!(&c[0].event.body[..], b"{\"id\":\"e1\"}");
    assert_eq!(c[0].event.path_and_query, "/in?x=1");
    // Leased: not handed out again.
    assert!(s.claim("r", "a", 10, HOUR).await.unwrap().is_empty());
    // Targets progress independently. (A short lease: the restart below outlives it.)
    assert_eq!(
        s.claim("r", "b", 10, Duration::from_millis(300))
            .await
            .unwrap()
            .len(),
        1
    );

    // Retry at a time in the future: not due before it.
    let later = SystemTime::now() + Duration::from_millis(300);
    s.complete(
        c[0].lease(),
        attempt(),
        Completion::Retry {
            at: later,
            error: "503".into(),
        },
    )
    .await
    .unwrap();
    assert!(s.claim("r", "a", 10, HOUR).await.unwrap().is_empty());
    let due = s.next_due("r", "a").await.unwrap().unwrap();
    assert!(due >= later - Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let c = s.claim("r", "a", 10, HOUR).await.unwrap();
    assert_eq!(c[0].attempts, 1);
    s.complete(
        c[0].lease(),
        attempt(),
        Completion::Dead {
            error: "410".into(),
        },
    )
    .await
    .unwrap();
    let dead = s
        .list_dead(Some("r".into()), Some("a".into()), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        s.replay_dead(DeadSelector::AllFor {
            route: "r".into(),
            target: "a".into()
        })
        .await
        .unwrap(),
        1
    );
    let c = s.claim("r", "a", 10, HOUR).await.unwrap();
    assert_eq!(c.len(), 1);
    s.complete(c[0].lease(), attempt(), Completion::Delivered)
        .await
        .unwrap();
    let detail = s.get_event("e1").await.unwrap().unwrap();
    assert_eq!(detail.attempts.len(), 3);
    assert_eq!(
        s.replay_event("missing", None)
            .await
            .unwrap_err()
            .to_string(),
        "not found"
    );

    // Restart: a lease held by the dead process ends (at once for the embedded store, at its
    // expiry for a shared one); pending work is due again.
    drop(s);
    let s = open().await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let c = s.claim("r", "b", 10, HOUR).await.unwrap();
    assert_eq!(
        c.len(),
        1,
        "in-flight delivery must be retried after restart"
    );
    s.complete(c[0].lease(), attempt(), Completion::Delivered)
        .await
        .unwrap();

    // Listing, newest first, with filters and cursor.
    for i in 0..5 {
        s.enqueue(event(&format!("f{i}"), &["a"], None))
            .await
            .unwrap();
    }
    let page = s
        .list_events(EventQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec!["f4", "f3"]
    );
    let next = s
        .list_events(EventQuery {
            limit: 2,
            before: Some("f3".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next[0].id, "f2");
    let delivered = s
        .list_events(EventQuery {
            state: Some(DeliveryState::Delivered),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        delivered.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec!["e1"]
    );

    // The repeat is kept for the operator, pointing at the first event.
    let dups = s
        .list_events(EventQuery {
            duplicates: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dups.len(), 1);
    assert_eq!(
        (dups[0].id.as_str(), dups[0].duplicate_of.as_deref()),
        ("e2", Some("e1"))
    );
    assert!(dups[0].deliveries.is_empty());

    // Retention removes only finished events (the delivered one and the repeat).
    assert_eq!(
        s.purge(SystemTime::now() + Duration::from_secs(1), 100)
            .await
            .unwrap(),
        2
    );
    assert!(s.get_event("e1").await.unwrap().is_none());
    assert!(s.get_event("f0").await.unwrap().is_some());

    // Pause is durable.
    s.set_paused("r", "a", true).await.unwrap();
    s.set_paused("r", "a", true).await.unwrap();
    assert_eq!(
        s.paused().await.unwrap(),
        vec![("r".to_owned(), "a".to_owned())]
    );
    s.set_paused("r", "a", false).await.unwrap();
    assert!(s.paused().await.unwrap().is_empty());

    // A target that left the config: its pending work becomes dead letters, not lost.
    assert_eq!(
        s.retire_targets(vec![("r".into(), "b".into())])
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        s.list_dead(None, Some("a".into()), 100)
            .await
            .unwrap()
            .len(),
        5
    );
    // Replay by filter: only dead letters whose error matches.
    let by = |e: &str| DeadSelector::Matching {
        route: Some("r".into()),
        target: None,
        error_contains: Some(e.into()),
    };
    assert_eq!(s.replay_dead(by("no such error")).await.unwrap(), 0);
    assert_eq!(s.replay_dead(by("removed")).await.unwrap(), 5);

    // A replay while an attempt is in flight: whatever that attempt's outcome, the delivery
    // stays pending and due, so the replay gets the delivery it asked for.
    let outcomes = [
        Completion::Delivered,
        Completion::Retry {
            at: SystemTime::now() + HOUR,
            error: "x".into(),
        },
        Completion::Dead { error: "x".into() },
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let id = format!("inflight{i}");
        s.enqueue(event(&id, &["z"], None)).await.unwrap();
        let c = s.claim("r", "z", 10, HOUR).await.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(s.replay_event(&id, Some("z")).await.unwrap(), 1);
        s.complete(c[0].lease(), attempt(), outcome).await.unwrap();
        let again = s.claim("r", "z", 10, HOUR).await.unwrap();
        assert_eq!(again.len(), 1, "outcome {i} undid the replay");
        assert_eq!(again[0].delivery_id, c[0].delivery_id);
        assert_eq!(again[0].attempts, 0);
        s.complete(again[0].lease(), attempt(), Completion::Delivered)
            .await
            .unwrap();
        assert!(s.claim("r", "z", 10, HOUR).await.unwrap().is_empty());
        let ev = s.get_event(&id).await.unwrap().unwrap();
        assert_eq!(ev.attempts.len(), 2, "both attempts are on record");
    }
}

fn embedded(dir: &std::path::Path) -> impl Fn() -> std::future::Ready<Arc<dyn Store>> + '_ {
    move || {
        // The previous instance's writer thread may still hold the lock for a moment.
        for _ in 0..100 {
            if let Ok(s) = EmbeddedStore::open(dir, u64::MAX) {
                return std::future::ready(s as Arc<dyn Store>);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::future::ready(EmbeddedStore::open(dir, u64::MAX).unwrap() as Arc<dyn Store>)
    }
}

type Opening = std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn Store>>>>;

/// A fresh schema on the test database, when `HOOKGATE_TEST_DATABASE_URL` is set.
fn postgres(tag: &str) -> Option<impl Fn() -> Opening> {
    let url = std::env::var("HOOKGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let schema = format!("hg_{tag}_{}_{}", std::process::id(), fastrand::u32(..));
    Some(move || {
        let (url, schema) = (url.clone(), schema.clone());
        Box::pin(async move {
            hookgate::store::postgres::PgStore::open(&url, 4, Some(&schema))
                .await
                .unwrap() as Arc<dyn Store>
        }) as Opening
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let Some(open) = postgres("conf") else {
        eprintln!(
            "HOOKGATE_TEST_DATABASE_URL is not set: the PostgreSQL conformance run is skipped"
        );
        return;
    };
    conformance(open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_matches_the_model() {
    let Some(open) = postgres("model") else {
        return;
    };
    model_check(9, true, open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dedup_and_claims_hold_across_replicas() {
    let Some(open) = postgres("fleet") else {
        return;
    };
    let (a, b) = (open().await, open().await);
    // Two replicas race on one provider delivery id: exactly one event is stored.
    let (x, y) = tokio::join!(
        a.enqueue(event("x1", &["t"], Some("same"))),
        b.enqueue(event("y1", &["t"], Some("same")))
    );
    let stored = [x.unwrap(), y.unwrap()]
        .iter()
        .filter(|e| matches!(e, Enqueued::Stored { .. }))
        .count();
    assert_eq!(stored, 1);
    // Claims from two replicas never overlap.
    for i in 0..20 {
        a.enqueue(event(&format!("c{i}"), &["t"], None))
            .await
            .unwrap();
    }
    let (ca, cb) = tokio::join!(a.claim("r", "t", 15, HOUR), b.claim("r", "t", 15, HOUR));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    let ids: std::collections::HashSet<i64> =
        ca.iter().chain(cb.iter()).map(|c| c.delivery_id).collect();
    assert_eq!(
        ids.len(),
        ca.len() + cb.len(),
        "a delivery was claimed twice"
    );
    assert_eq!(ids.len(), 21);
    // Fleet-wide concurrency: with a cap of 2 and 21 leases out, nobody may claim more.
    a.fleet_concurrency("r", "t", 2);
    for c in ca.iter().chain(cb.iter()) {
        a.complete(
            c.lease(),
            attempt(),
            Completion::Retry {
                at: SystemTime::now(),
                error: "x".into(),
            },
        )
        .await
        .unwrap();
    }
    let (ca, cb) = tokio::join!(a.claim("r", "t", 10, HOUR), a.claim("r", "t", 10, HOUR));
    assert_eq!(ca.unwrap().len() + cb.unwrap().len(), 2);
    // Fleet-wide rate limit: a burst of 5 shared by two replicas.
    let mut taken = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        if s.take_token("r", "t", 1.0, 5.0).await.unwrap() == Some(true) {
            taken += 1;
        }
    }
    assert_eq!(taken, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(embedded(dir.path())).await;
}

/// A store file written by an earlier version (without `duplicate_of` and `replays`) opens,
/// gets the columns, and works: pending work is kept and replays are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_upgrades_an_older_file() {
    let dir = tempfile::tempdir().unwrap();
    let open = embedded(dir.path());
    let s = open().await;
    s.enqueue(event("old", &["a"], None)).await.unwrap();
    drop(s);
    {
        // What an earlier version left behind: the same tables, without the newer columns.
        let c = rusqlite::Connection::open(dir.path().join("hookgate.db")).unwrap();
        c.execute_batch(
            "ALTER TABLE deliveries DROP COLUMN replays; ALTER TABLE events DROP COLUMN duplicate_of;",
        )
        .unwrap();
    }
    let s = open().await;
    let c = s.claim("r", "a", 10, HOUR).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].event.id.as_str(), c[0].replays), ("old", 0));
    assert_eq!(s.replay_event("old", None).await.unwrap(), 1);
    s.complete(c[0].lease(), attempt(), Completion::Delivered)
        .await
        .unwrap();
    let again = s.claim("r", "a", 10, HOUR).await.unwrap();
    assert_eq!(again.len(), 1, "the replay survives the attempt in flight");
    assert_eq!(again[0].replays, 1);
    assert_eq!(
        s.enqueue(event("new", &["a"], Some("k"))).await.unwrap(),
        Enqueued::Stored { id: "new".into() }
    );
    assert_eq!(
        s.enqueue(event("dup", &["a"], Some("k"))).await.unwrap(),
        Enqueued::Duplicate { id: "new".into() }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_refuses_a_second_process() {
    let dir = tempfile::tempdir().unwrap();
    let _s = EmbeddedStore::open(dir.path(), u64::MAX).unwrap();
    let err = EmbeddedStore::open(dir.path(), u64::MAX).err().unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    Pending,
    Delivered,
    Dead,
}

/// `shared`: leases outlive a "restart" (another replica took over), as with PostgreSQL.
async fn model_check<F, Fut>(seed: u64, shared: bool, open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    let mut rng = fastrand::Rng::with_seed(seed);
    let targets = ["a", "b", "c"];
    let mut s = open().await;
    // delivery id → (target, state); the ids currently leased.
    let mut model: HashMap<i64, (&str, M)> = HashMap::new();
    let mut leased: HashMap<i64, Lease> = HashMap::new();
    let mut pending_new: HashMap<&str, usize> = HashMap::new();
    let mut n = 0;
    for step in 0..300 {
        match rng.u8(0..100) {
            0..=29 => {
                n += 1;
                let ts: Vec<&str> = targets.iter().copied().filter(|_| rng.bool()).collect();
                s.enqueue(event(&format!("ev{seed}-{n}"), &ts, None))
                    .await
                    .unwrap();
                for t in ts {
                    *pending_new.entry(t).or_default() += 1;
                }
            }
            30..=59 => {
                let t = targets[rng.usize(0..3)];
                let claimed = s.claim("r", t, rng.usize(1..5), HOUR).await.unwrap();
                for c in claimed {
                    let id = c.delivery_id;
                    match model.get(&id) {
                        None => {
                            let left = pending_new.get_mut(t).unwrap();
                            assert!(
                                *left > 0,
                                "step {step}: claimed a delivery that was never enqueued"
                            );
                            *left -= 1;
                            model.insert(id, (t, M::Pending));
                        }
                        Some((mt, st)) => {
                            assert_eq!(*mt, t);
                            assert_eq!(
                                *st,
                                M::Pending,
                                "step {step}: claimed a finished delivery {id}"
                            );
                        }
                    }
                    assert!(
                        leased.insert(id, c.lease()).is_none(),
                        "step {step}: {id} handed out twice under a lease"
                    );
                }
            }
            60..=89 => {
                let Some(&id) = leased.keys().nth(rng.usize(0..leased.len().max(1))) else {
                    continue;
                };
                let Some(lease) = leased.remove(&id) else {
                    continue;
                };
                let (c, st) = match rng.u8(0..3) {
                    0 => (Completion::Delivered, M::Delivered),
                    1 => (
                        Completion::Retry {
                            at: SystemTime::now(),
                            error: "x".into(),
                        },
                        M::Pending,
                    ),
                    _ => (Completion::Dead { error: "x".into() }, M::Dead),
                };
                s.complete(lease, attempt(), c).await.unwrap();
                model.get_mut(&id).unwrap().1 = st;
            }
            90..=94 => {
                let t = targets[rng.usize(0..3)];
                let n = s
                    .replay_dead(DeadSelector::AllFor {
                        route: "r".into(),
                        target: t.into(),
                    })
                    .await
                    .unwrap();
                let mut expected = 0;
                for (mt, st) in model.values_mut() {
                    if *mt == t && *st == M::Dead {
                        *st = M::Pending;
                        expected += 1;
                    }
                }
                assert_eq!(n, expected, "step {step}: replay count");
            }
            _ => {
                // Restart: leases vanish with the process (embedded), or stay with the
                // shared database until they expire.
                drop(s);
                s = open().await;
                if !shared {
                    leased.clear();
                }
            }
        }
        // The store's counts agree with the model after every step.
        let stats = s.stats().await.unwrap();
        for t in targets {
            let st = stats
                .iter()
                .find(|x| x.target == t)
                .cloned()
                .unwrap_or_default();
            let count = |m: M| model.values().filter(|(mt, s)| *mt == t && *s == m).count() as u64;
            let new = *pending_new.get(t).unwrap_or(&0) as u64;
            assert_eq!(
                st.pending,
                count(M::Pending) + new,
                "step {step} target {t} pending"
            );
            assert_eq!(
                st.delivered,
                count(M::Delivered),
                "step {step} target {t} delivered"
            );
            assert_eq!(st.dead, count(M::Dead), "step {step} target {t} dead");
        }
    }
    // Nothing is lost: after a restart every pending delivery can be claimed.
    for lease in leased.values() {
        s.complete(
            *lease,
            attempt(),
            Completion::Retry {
                at: SystemTime::now(),
                error: "x".into(),
            },
        )
        .await
        .unwrap();
    }
    drop(s);
    let s = open().await;
    for t in targets {
        let mut got = 0;
        loop {
            let c = s.claim("r", t, 50, HOUR).await.unwrap();
            if c.is_empty() {
                break;
            }
            got += c.len();
        }
        let pending = model
            .values()
            .filter(|(mt, st)| *mt == t && *st == M::Pending)
            .count()
            + pending_new.get(t).copied().unwrap_or(0);
        assert_eq!(got, pending, "target {t}: pending deliveries lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_matches_the_model() {
    for seed in 1..=4 {
        let dir = tempfile::tempdir().unwrap();
        model_check(seed, false, embedded(dir.path())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_is_verified() {
    let Some(url) = std::env::var("HOOKGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    // The local server's certificate is self-signed: with sslmode=require hookgate speaks TLS
    // and refuses a certificate no trusted root vouches for (or the server has no TLS at all).
    let tls_url = format!("{url}{sep}sslmode=require");
    let err = hookgate::store::postgres::migrate(&tls_url, None)
        .await
        .expect_err("an unverifiable server certificate must be refused");
    // The store itself starts regardless, unhealthy, and keeps trying.
    let store = hookgate::store::postgres::PgStore::open(&tls_url, 2, None)
        .await
        .unwrap();
    assert!(!store.healthy());
    let msg = err.to_string().to_lowercase();
    assert!(
        msg.contains("certificate") || msg.contains("tls") || msg.contains("ssl"),
        "{msg}"
    );
}
