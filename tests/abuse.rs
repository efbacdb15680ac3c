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
