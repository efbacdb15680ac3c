//! `mode: async` end to end: durable acknowledgement, delivery with retries, dead letters,
//! replay, fan-out isolation and restart, against a real gateway and real receivers.

mod common;

use common::*;
use std::time::{Duration, Instant};

const SECRET: &str = "s3cret";
const SIGN: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn yaml(targets: &str) -> String {
    format!(
        r#"server: {{ listen: ["127.0.0.1:0"], shutdown_grace: 5s }}
admin: {{ listen: "127.0.0.1:0" }}
storage: {{ path: data }}
routes:
  - name: gh
    path: /hooks/github
    verify: {{ github: {{ secret: "{SECRET}" }} }}
    targets:
{targets}"#
    )
}

fn target(name: &str, url: &str, extra: &str) -> String {
    format!(
        "      - name: {name}\n        url: {url}\n        timeout: 1s\n        retry: {{ initial: 50ms, max_delay: 300ms, max_attempts: 4 }}\n{extra}"
    )
}

async fn send(addr: std::net::SocketAddr, body: &[u8], delivery: &str) -> Answer {
    let sig = github_sig(SECRET, body);
    plain(
        addr,
        post(
            "/hooks/github",
            &[
                ("x-hub-signature-256", &sig),
                ("x-github-delivery", delivery),
                ("x-github-event", "push"),
            ],
            body,
        ),
    )
    .await
}

fn event_id(a: &Answer) -> String {
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(a.headers["hookgate-event-id"], id.as_str());
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_event_is_delivered_signed_with_its_id() {
    let rx = TestReceiver::start().await;
    let t = target(
        "ci",
        &rx.url("/ci"),
        &format!("        sign: {{ secret: \"{SIGN}\" }}\n"),
    );
    let gw = start_gateway(&yaml(&t), |_| {}).await;
    let body = br#"{"ref":"refs/heads/main"}"#;
    let a = send(gw.addr, body, "d-1").await;
    assert_eq!(a.status, 202);
    let id = event_id(&a);
    rx.wait_for(1, 10).await;
    let got = rx.last();
    assert_eq!(&got.body[..], body);
    let h = &got.headers;
    assert_eq!(h["hookgate-event-id"], id.as_str());
    assert_eq!(h["hookgate-route"], "gh");
    assert_eq!(h["hookgate-attempt"], "1");
    assert_eq!(h["x-github-event"], "push");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(!h.contains_key("x-hub-signature-256"));
    // Standard Webhooks signature over id.timestamp.body with the decoded whsec_ key.
    assert_eq!(h["webhook-id"], id.as_str());
    let ts: u64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let key = hookgate::deliver::sign::decode_secret(SIGN).unwrap();
    assert_eq!(
        h["webhook-signature"],
        hookgate::deliver::sign::signature(&key, &id, ts, body).as_str()
    );

    // The same provider delivery id again: 200, the first event's id, nothing new sent.
    let again = send(gw.addr, body, "d-1").await;
    assert_eq!(again.status, 200);
    assert_eq!(event_id(&again), id);
    // The event and its attempt are visible to the operator.
    let (st, ev) = admin_get(gw.admin, &format!("/api/v1/events/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(ev["deliveries"][0]["state"], "delivered");
    assert_eq!(ev["attempts"][0]["status"], 200);
    assert_eq!(ev["body"]["data"], std::str::from_utf8(body).unwrap());
    let sig_header = ev["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-hub-signature-256")
        .unwrap();
    assert_eq!(sig_header[1], "[redacted]");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 1);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_until_success_with_retry_after_honoured() {
    let rx = TestReceiver::start().await;
    rx.script
        .lock()
        .unwrap()
        .extend([(503, None), (429, Some("1"))]);
    let t = target("ci", &rx.url("/ci"), "").replace("max_delay: 300ms", "max_delay: 5s");
    let gw = start_gateway(&yaml(&t), |_| {}).await;
    let a = send(gw.addr, b"{}", "d-2").await;
    let id = event_id(&a);
    rx.wait_for(3, 15).await;
    let all = rx.all();
    let attempts: Vec<_> = all
        .iter()
        .map(|r| r.headers["hookgate-attempt"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);
    // Wait for the outcome to be recorded, then read the attempts back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ev = loop {
        let (_, ev) = admin_get(gw.admin, &format!("/api/v1/events/{id}")).await;
        if ev["deliveries"][0]["state"] == "delivered" {
            break ev;
        }
        assert!(Instant::now() < deadline, "{ev}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at: Vec<i64> = ev["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["at_ms"].as_i64().unwrap())
        .collect();
    let statuses: Vec<i64> = ev["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![503, 429, 200]);
    // The 429 said Retry-After: 1, longer than the backoff would wait: it was honoured.
    assert!(at[2] - at[1] >= 990, "{at:?}");
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_is_a_dead_letter_that_replays() {
    let rx = TestReceiver::start().await;
    rx.script.lock().unwrap().push_back((410, None));
    let gw = start_gateway(&yaml(&target("ci", &rx.url("/ci"), "")), |_| {}).await;
    let id = event_id(&send(gw.addr, b"{\"x\":1}", "d-3").await);
    rx.wait_for(1, 10).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let dead = loop {
        let (_, v) = admin_get(gw.admin, "/api/v1/dead-letters?target=gh/ci").await;
        if !v["dead_letters"].as_array().unwrap().is_empty() {
            break v;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead["dead_letters"][0]["event_id"], id.as_str());
    assert_eq!(dead["dead_letters"][0]["attempts"], 1);
    // Not retried by itself.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.count(), 1);
    let (st, v) = admin_post(
        gw.admin,
        "/api/v1/dead-letters/replay",
        r#"{"target":"gh/ci","all":true}"#,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["replayed"], 1);
    rx.wait_for(2, 10).await;
    assert_eq!(rx.last().headers["hookgate-event-id"], id.as_str());
    // And one event replayed on demand.
    let (st, _) = admin_post(
        gw.admin,
        &format!("/api/v1/events/{id}/replay?target=ci"),
        "",
    )
    .await;
    assert_eq!(st, 202);
    rx.wait_for(3, 10).await;
    let (st, _) = admin_post(gw.admin, "/api/v1/events/nope/replay", "").await;
    assert_eq!(st, 404);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_does_not_delay_a_healthy_one() {
    let healthy = TestReceiver::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let targets = format!(
        "{}{}",
        target("down", &format!("http://{closed}/x"), ""),
        target("up", &healthy.url("/up"), "")
    );
    let gw = start_gateway(&yaml(&targets), |_| {}).await;
    let start = Instant::now();
    for i in 0..50 {
        assert_eq!(
            send(
                gw.addr,
                format!("{{\"n\":{i}}}").as_bytes(),
                &format!("iso-{i}")
            )
            .await
            .status,
            202
        );
    }
    healthy.wait_for(50, 10).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "healthy target was held back: {:?}",
        start.elapsed()
    );
    // The dead target's deliveries wait on disk, pending.
    let (_, routes) = admin_get(gw.admin, "/api/v1/routes").await;
    let down = routes["routes"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "down")
        .unwrap()
        .clone();
    assert!(
        down["pending"].as_u64().unwrap() + down["dead_letters"].as_u64().unwrap() == 50,
        "{down}"
    );
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart() {
    let rx = TestReceiver::start().await;
    rx.status.store(503, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let y = yaml(
        &target(
            "ci",
            &rx.url("/ci"),
            "        retry: { initial: 50ms, max_delay: 100ms, max_attempts: 1000 }\n",
        )
        .replace(
            "        retry: { initial: 50ms, max_delay: 300ms, max_attempts: 4 }\n",
            "",
        ),
    );
    let gw = start_in(dir.path(), &y).await;
    let addr = gw.public_addrs[0];
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(event_id(
            &send(addr, format!("{{\"n\":{i}}}").as_bytes(), &format!("r-{i}")).await,
        ));
    }
    rx.wait_for(20, 10).await;
    gw.drain().await;

    rx.status.store(200, std::sync::atomic::Ordering::SeqCst);
    let before = rx.count();
    let gw = start_in(dir.path(), &y).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok: std::collections::HashSet<String> = rx.all()[before..]
            .iter()
            .map(|r| r.headers["hookgate-event-id"].to_str().unwrap().to_owned())
            .collect();
        if ids.iter().all(|id| ok.contains(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered after restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_full_is_503_never_2xx() {
    let rx = TestReceiver::start().await;
    let y = yaml(&target("ci", &rx.url("/ci"), "")).replace(
        "storage: { path: data }",
        "storage: { path: data, max_size: 1KiB }",
    );
    let gw = start_gateway(&y, |_| {}).await;
    let a = send(gw.addr, b"{}", "full-1").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.headers["retry-after"], "5");
    assert_eq!(rx.count(), 0);
    let ready = plain(
        gw.admin,
        http::Request::get("/readyz")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(ready.status, 503);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_target_keeps_its_deliveries_as_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rx = TestReceiver::start().await;
    let both = format!(
        "{}{}",
        target("old", &format!("http://{closed}/x"), ""),
        target("keep", &rx.url("/k"), "")
    );
    let gw = start_in(dir.path(), &yaml(&both)).await;
    send(gw.public_addrs[0], b"{}", "rm-1").await;
    rx.wait_for(1, 10).await;
    gw.drain().await;
    let gw = start_in(dir.path(), &yaml(&target("keep", &rx.url("/k"), ""))).await;
    let (_, v) = admin_get(gw.admin_addr, "/api/v1/dead-letters?target=gh/old").await;
    let dl = v["dead_letters"].as_array().unwrap();
    assert_eq!(dl.len(), 1, "{v}");
    assert!(dl[0]["last_error"].as_str().unwrap().contains("removed"));
    gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_targets_queue_and_stay_paused_across_restarts() {
    let rx = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let y = yaml(&target("ci", &rx.url("/ci"), ""));
    let gw = start_in(dir.path(), &y).await;
    let (st, v) = admin_post(gw.admin_addr, "/api/v1/targets/gh/ci/pause", "").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        admin_post(gw.admin_addr, "/api/v1/targets/gh/nope/pause", "")
            .await
            .0,
        404
    );
    for i in 0..3 {
        assert_eq!(
            send(gw.public_addrs[0], b"{}", &format!("p-{i}"))
                .await
                .status,
            202
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0, "a paused target received deliveries");
    let (_, routes) = admin_get(gw.admin_addr, "/api/v1/routes").await;
    assert_eq!(routes["routes"][0]["targets"][0]["paused"], true);
    assert_eq!(routes["routes"][0]["targets"][0]["pending"], 3);
    gw.drain().await;

    // Still paused after a restart.
    let gw = start_in(dir.path(), &y).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0);
    let (st, _) = admin_post(gw.admin_addr, "/api/v1/targets/gh/ci/resume", "").await;
    assert_eq!(st, 200);
    rx.wait_for(3, 10).await;
    gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_dead_letters_reach_a_target_that_came_back() {
    // A target down long enough to open its circuit and exhaust every delivery.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = target("ci", &format!("http://127.0.0.1:{port}/ci"), "")
        .replace("max_attempts: 4", "max_attempts: 2");
    let gw = start_gateway(&yaml(&t), |_| {}).await;
    for i in 0..3 {
        assert_eq!(send(gw.addr, b"{}", &format!("back-{i}")).await.status, 202);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = admin_get(gw.admin, "/api/v1/dead-letters?target=gh/ci").await;
        if v["dead_letters"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Idle with an open circuit for a while, then the target returns and is replayed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |_req: http::Request<hyper::body::Incoming>| {
                        g.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let (st, _) = admin_post(
        gw.admin,
        "/api/v1/dead-letters/replay",
        r#"{"target":"gh/ci","all":true}"#,
    )
    .await;
    assert_eq!(st, 202);
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "replayed deliveries never went out (circuit wedged?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.gw.drain().await;
}
