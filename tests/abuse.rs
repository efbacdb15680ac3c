//! Requests an attacker would send, each against a real gateway on port 0: the gateway
//! answers each one correctly and stays healthy (a good signed request succeeds after).

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "abuse-secret";

async fn gateway(rx: &TestReceiver, server_extra: &str) -> TestGateway {
    let yaml = format!(
        r#"server:
  listen: ["127.0.0.1:0"]
{server_extra}admin:
  listen: 127.0.0.1:0
routes:
  - name: github
    path: /hooks/github
    mode: sync
    verify: {{ github: {{ secret: "{SECRET}" }} }}
    targets: [{{ name: ci, url: "{u}", timeout: 2s }}]
"#,
        u = rx.url("/in")
    );
    start_gateway(&yaml, |_| {}).await
}

/// A good signed request, on a new connection: what must keep working.
async fn good_request_succeeds(gw: &TestGateway) {
    let body = br#"{"zen":"ok"}"#;
    let sig = github_sig(SECRET, body);
    let h = [("x-hub-signature-256", sig.as_str())];
    let a = plain(gw.addr, post("/hooks/github", &h, body)).await;
    assert_eq!(a.status, 200, "a good request after the abuse");
}

/// Writes `raw` on a new connection and reads until the gateway closes it or 5 s pass.
async fn raw_exchange(gw: &TestGateway, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_repeated_host_is_a_bad_request() {
    let rx = TestReceiver::start().await;
    let gw = gateway(&rx, "").await;
    let body = br#"{"zen":"ok"}"#;
    let sig = github_sig(SECRET, body);
    let head = |hosts: &str| {
        format!(
            "POST /hooks/github HTTP/1.1\r\n{hosts}x-hub-signature-256: {sig}\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            String::from_utf8_lossy(body)
        )
    };
    for hosts in ["", "Host: a.example\r\nHost: b.example\r\n"] {
        let answer = raw_exchange(&gw, head(hosts).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{hosts:?}: {answer}");
        assert!(answer.contains("Host header"), "{answer}");
    }
    let answer = raw_exchange(
        &gw,
        head("Host: a.example\r\nConnection: close\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(rx.count(), 1);
    good_request_succeeds(&gw).await;
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_signature_header_fails_whatever_the_order() {
    let rx = TestReceiver::start().await;
    let gw = gateway(&rx, "").await;
    let body = br#"{"zen":"ok"}"#;
    let good = github_sig(SECRET, body);
    let bad = github_sig("not-the-secret", body);
    for (first, second) in [(&good, &bad), (&bad, &good), (&good, &good)] {
        let h = [
            ("x-hub-signature-256", first.as_str()),
            ("x-hub-signature-256", second.as_str()),
        ];
        let a = plain(gw.addr, post("/hooks/github", &h, body)).await;
        assert_eq!(a.status, 401);
    }
    assert_eq!(rx.count(), 0);
    let (_, rejections) = admin_get(gw.admin, "/api/v1/rejections").await;
    assert!(
        rejections.to_string().contains("sent more than once"),
        "{rejections}"
    );
    good_request_succeeds(&gw).await;
    gw.gw.drain().await;
}

async fn connect_from(source: &str, gw: &TestGateway) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{source}:0").parse().unwrap()).unwrap();
    s.connect(gw.addr).await.unwrap()
}

/// Reads until the gateway closes `s`; how long that took.
async fn closed_within(mut s: TcpStream, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut buf))
        .await
        .expect("the gateway kept the connection open")
        .ok();
    started.elapsed()
}

async fn ready(gw: &TestGateway) -> u16 {
    let req = http::Request::get("/readyz")
        .body(Default::default())
        .unwrap();
    plain(gw.admin, req).await.status.as_u16()
}

/// Connections that send nothing are closed after the header timeout, idle keep-alive
/// connections after the idle timeout, and one address cannot take every connection: the
/// gateway keeps serving a good sender throughout, and `/readyz` says when it is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_bounded() {
    let rx = TestReceiver::start().await;
    let limits = "  header_timeout: 400ms\n  idle_timeout: 600ms\n  max_connections: 8\n  max_connections_per_ip: 5\n  h2c: true\n";
    let gw = gateway(&rx, limits).await;
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(connect_from("127.0.0.2", &gw).await);
    }
    // Over the address's share: closed at once.
    let extra = connect_from("127.0.0.2", &gw).await;
    assert!(closed_within(extra, Duration::from_secs(2)).await < Duration::from_millis(300));
    good_request_succeeds(&gw).await;
    assert_eq!(ready(&gw).await, 200);
    // Three more from elsewhere fill the gateway: not ready, so a balancer looks elsewhere.
    for _ in 0..3 {
        silent.push(connect_from("127.0.0.3", &gw).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready(&gw).await, 503);
    // Silence costs the header timeout, then the places are free again.
    for s in silent {
        let t = closed_within(s, Duration::from_secs(5)).await;
        assert!(t < Duration::from_millis(1500), "{t:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready(&gw).await, 200);
    good_request_succeeds(&gw).await;

    // HTTP/1.1 keep-alive: the next request's headers must come within the header timeout.
    let mut s = connect_from("127.0.0.4", &gw).await;
    let body = br#"{"zen":"ok"}"#;
    let sig = github_sig(SECRET, body);
    let req = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: a\r\nx-hub-signature-256: {sig}\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let t = closed_within(s, Duration::from_secs(5)).await;
    assert!(t < Duration::from_secs(2), "{t:?}");

    // HTTP/2: a client that made a request and then only answers PINGs is closed after the
    // idle timeout.
    let tcp = connect_from("127.0.0.5", &gw).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let h = [("x-hub-signature-256", sig.as_str())];
    let resp = send
        .send_request(post("/hooks/github", &h, body))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let idle_from = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle HTTP/2 connection stayed open")
        .unwrap()
        .ok();
    let t = idle_from.elapsed();
    assert!(
        t >= Duration::from_millis(550) && t < Duration::from_secs(3),
        "{t:?}"
    );
    drop(send);

    let m = plain(
        gw.admin,
        http::Request::get("/metrics")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    let m = metrics_text(&m.body);
    for reason in ["per_ip", "first_request", "idle"] {
        assert!(
            m.contains(&format!(
                "hookgate_connections_closed_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {m}"
        );
    }
    gw.gw.drain().await;
}
