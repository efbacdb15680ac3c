//! The spine end to end: a real gateway on port 0 (TLS or plain), a recording receiver, and
//! requests over real sockets.

mod common;

use common::*;
use std::time::Duration;

const SECRET: &str = "It's a Secret to Everybody";

fn github_yaml(target: &str, extra_route: &str, tls: bool) -> String {
    let tls = if tls {
        "  tls: { cert: gw.crt, key: gw.key }\n"
    } else {
        ""
    };
    format!(
        r#"server:
  listen: ["127.0.0.1:0"]
{tls}  max_body: 1KiB
  header_timeout: 300ms
admin:
  listen: 127.0.0.1:0
routes:
  - name: github
    path: /hooks/github
    mode: sync
    verify:
      github:
        secrets: ["old-secret", "{SECRET}"]
{extra_route}    targets:
      - name: ci
        url: {target}
        timeout: 500ms
        headers:
          set: {{ X-Source: github, X-Request-Id: "{{{{ event.id }}}}" }}
          remove: [X-Drop-Me]
"#
    )
}

async fn tls_gateway(
    target: &str,
    extra: &str,
) -> (TestGateway, std::sync::Arc<rustls::ClientConfig>) {
    let mut der = None;
    let gw = start_gateway(&github_yaml(target, extra, true), |d| {
        der = Some(write_cert(d, "gw"))
    })
    .await;
    let cfg = client_tls(&[der.unwrap()], &[b"http/1.1"]);
    (gw, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_github_webhook_reaches_target_byte_exact() {
    let rx = TestReceiver::start().await;
    let (gw, tls) = tls_gateway(&rx.url("/in"), "").await;
    let body = br#"{"zen":"Design for failure.","hook_id":1}"#;
    let sig = github_sig(SECRET, body);
    let mut c = H1::over(tls_connect(gw.addr, tls).await).await;
    let req = post(
        "/hooks/github?x=1",
        &[
            ("x-hub-signature-256", &sig),
            ("x-github-event", "push"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("content-type", "application/json"),
            ("x-drop-me", "1"),
        ],
        body,
    );
    let a = c.send(req).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-receiver"], "yes");
    assert_eq!(&a.body[..], b"{\"ok\":true}");

    let got = rx.last();
    assert_eq!(&got.body[..], body);
    assert_eq!(got.method, http::Method::POST);
    assert_eq!(got.uri.path(), "/in");
    assert_eq!(got.uri.query(), Some("x=1"));
    let h = &got.headers;
    assert_eq!(h["x-github-event"], "push");
    assert_eq!(
        h["x-github-delivery"],
        "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    );
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["hookgate-route"], "github");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "localhost");
    assert_eq!(h["x-source"], "github");
    // `{{ event.id }}` on a sync route: a fresh UUID per request.
    let id = h["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert!(!h.contains_key("x-drop-me"));
    // The signature is the gateway's business: not passed on by default.
    assert!(!h.contains_key("x-hub-signature-256"));
    assert_eq!(h["content-length"], body.len().to_string());
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_get_401_and_nothing_is_forwarded() {
    let rx = TestReceiver::start().await;
    let (gw, tls) = tls_gateway(&rx.url("/in"), "").await;
    let body = b"{\"a\":1}";
    let good = github_sig(SECRET, body);
    let wrong_secret = github_sig("not the secret", body);
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a [u8]);
    let cases: Vec<Case> = vec![
        (vec![("x-hub-signature-256", good.as_str())], b"{\"a\":2}"), // tampered body
        (vec![("x-hub-signature-256", wrong_secret.as_str())], body),
        (vec![], body), // missing header
        (vec![("x-hub-signature-256", "sha256=nothex")], body),
    ];
    let mut c = H1::over(tls_connect(gw.addr, tls).await).await;
    for (headers, b) in cases {
        let a = c.send(post("/hooks/github", &headers, b)).await.unwrap();
        assert_eq!(a.status, 401);
        // A fixed body: nothing about which check failed.
        assert_eq!(&a.body[..], br#"{"error":"unauthorized"}"#);
    }
    assert_eq!(rx.count(), 0);
    let metrics = plain(
        gw.admin,
        http::Request::get("/metrics")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    let text = metrics_text(&metrics.body);
    assert!(
        text.contains(r#"hookgate_verification_failures_total{route="github",reason="no_match"}"#),
        "{text}"
    );
    assert!(text.contains(r#"reason="missing_header""#));
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_by_alpn() {
    let rx = TestReceiver::start().await;
    let mut der = None;
    let gw = start_gateway(&github_yaml(&rx.url("/in"), "", true), |d| {
        der = Some(write_cert(d, "gw"))
    })
    .await;
    let tls = client_tls(&[der.unwrap()], &[b"h2", b"http/1.1"]);
    let stream = tls_connect(gw.addr, tls).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let body = b"{\"h2\":true}";
    let sig = github_sig(SECRET, body);
    let req = http::Request::post("https://localhost/hooks/github")
        .version(http::Version::HTTP_2)
        .header("x-hub-signature-256", sig)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(body)))
        .unwrap();
    let a = h2_send(stream, req).await;
    assert_eq!(a.version, http::Version::HTTP_2);
    assert_eq!(a.status, 200);
    assert_eq!(&rx.last().body[..], body);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_and_limits_answer_per_spec() {
    let rx = TestReceiver::start().await;
    let extra = "    allow_ips: [\"10.0.0.0/8\"]\n";
    let yaml = github_yaml(&rx.url("/in"), "", false).replace(
        "routes:\n",
        &format!(
            "routes:\n  - name: fenced\n    path: /fenced\n    mode: sync\n    verify: {{ none: true }}\n{extra}    targets: [{{ name: t, url: \"{}\" }}]\n",
            rx.url("/x")
        ),
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let get = |p: &str| {
        http::Request::get(p)
            .header("host", "localhost")
            .body(Default::default())
            .unwrap()
    };

    assert_eq!(plain(gw.addr, post("/nope", &[], b"")).await.status, 404);
    let a = plain(gw.addr, get("/hooks/github")).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "POST");
    assert_eq!(plain(gw.addr, post("/fenced", &[], b"")).await.status, 403);

    // Declared too large: refused from Content-Length alone.
    let big = vec![b'x'; 2048];
    let sig = github_sig(SECRET, &big);
    let a = plain(
        gw.addr,
        post("/hooks/github", &[("x-hub-signature-256", &sig)], &big),
    )
    .await;
    assert_eq!(a.status, 413);
    assert_eq!(rx.count(), 0);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_cut_mid_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rx = TestReceiver::start().await;
    let gw = start_gateway(&github_yaml(&rx.url("/in"), "", false), |_| {}).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /hooks/github HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\nx-hub-signature-256: sha256=00\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'a'; 600];
    for _ in 0..2 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(&chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    // No terminating chunk: the gateway must answer without waiting for the rest.
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(rx.count(), 0);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_down_is_502_and_slow_is_504() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = start_gateway(
        &github_yaml(&format!("http://{closed}/in"), "", false),
        |_| {},
    )
    .await;
    let body = b"{}";
    let sig = github_sig(SECRET, body);
    let a = plain(
        gw.addr,
        post("/hooks/github", &[("x-hub-signature-256", &sig)], body),
    )
    .await;
    assert_eq!(a.status, 502);
    gw.gw.drain().await;

    let rx = TestReceiver::start().await;
    rx.delay_ms.store(2000, std::sync::atomic::Ordering::SeqCst);
    let gw = start_gateway(&github_yaml(&rx.url("/in"), "", false), |_| {}).await;
    let a = plain(
        gw.addr,
        post("/hooks/github", &[("x-hub-signature-256", &sig)], body),
    )
    .await;
    assert_eq!(a.status, 504);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_requests_reuse_kept_alive_target_connections() {
    let rx = TestReceiver::start().await;
    // Each answer waits, so the requests of a round overlap at the target.
    rx.delay_ms.store(50, std::sync::atomic::Ordering::SeqCst);
    let gw = start_gateway(&github_yaml(&rx.url("/in"), "", false), |_| {}).await;
    let mut sent = Vec::new();
    for round in 0..2 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..16 {
            let body = format!("{{\"round\":{round},\"n\":{i}}}");
            let sig = github_sig(SECRET, body.as_bytes());
            sent.push(body.clone());
            let addr = gw.addr;
            set.spawn(async move {
                plain(
                    addr,
                    post(
                        "/hooks/github",
                        &[("x-hub-signature-256", &sig)],
                        body.as_bytes(),
                    ),
                )
                .await
                .status
            });
        }
        while let Some(status) = set.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
    }
    let mut got: Vec<String> = rx
        .all()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every body arrived once, byte for byte");
    // The second round found the first round's connections idle and used them.
    let conns = rx.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=16).contains(&conns),
        "{conns} connections for 32 requests"
    );
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_status_is_relayed() {
    let rx = TestReceiver::start().await;
    rx.status.store(418, std::sync::atomic::Ordering::SeqCst);
    let gw = start_gateway(&github_yaml(&rx.url("/in"), "", false), |_| {}).await;
    let body = b"{}";
    let sig = github_sig(SECRET, body);
    let a = plain(
        gw.addr,
        post("/hooks/github", &[("x-hub-signature-256", &sig)], body),
    )
    .await;
    assert_eq!(a.status, 418);
    assert_eq!(a.headers["x-receiver"], "yes");
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let rx = TestReceiver::start().await;
    let extra = "    rate_limit: { per_second: 1, burst: 2, key: ip }\n";
    let gw = start_gateway(&github_yaml(&rx.url("/in"), extra, false), |_| {}).await;
    let body = b"{}";
    let sig = github_sig(SECRET, body);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let a = plain(
            gw.addr,
            post("/hooks/github", &[("x-hub-signature-256", &sig)], body),
        )
        .await;
        statuses.push(a.status.as_u16());
        if let Some(v) = a.headers.get("retry-after") {
            retry_after = Some(v.to_str().unwrap().to_owned());
        }
    }
    assert_eq!(statuses, vec![200, 200, 429]);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(rx.count(), 2);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_closes_slow_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rx = TestReceiver::start().await;
    let gw = start_gateway(&github_yaml(&rx.url("/in"), "", false), |_| {}).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /hooks/github HTTP/1.1\r\nhost: local")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    // header_timeout is 300ms: the connection ends well within 5s (408 or plain close).
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(r.is_ok(), "slow client was not cut off");
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_hmac_route() {
    let rx = TestReceiver::start().await;
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0" }}
routes:
  - name: acme
    path_prefix: /acme/
    mode: sync
    verify:
      hmac:
        secret: "${{ACME_TEST_SECRET:-k3y}}"
        header: X-Acme-Signature
        algorithm: sha512
        encoding: base64
        prefix: "v1="
        signed: "{{timestamp}}.{{body}}"
        timestamp_header: X-Acme-Timestamp
    targets: [{{ name: sink, url: "{}" }}]
"#,
        rx.url("/sink")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    use base64::Engine;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let body = b"{\"order\":7}";
    let mac = hookgate::verify::mac::compute(
        hookgate::config::HmacAlgorithm::Sha512,
        b"k3y",
        &[ts.as_bytes(), b".", body],
    );
    let sig = format!(
        "v1={}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    );
    let ok = post(
        "/acme/orders/7",
        &[("x-acme-signature", &sig), ("x-acme-timestamp", &ts)],
        body,
    );
    assert_eq!(plain(gw.addr, ok).await.status, 200);
    assert_eq!(rx.last().uri.path(), "/sink/orders/7");
    let stale = post(
        "/acme/orders/7",
        &[("x-acme-signature", &sig), ("x-acme-timestamp", "1000")],
        body,
    );
    assert_eq!(plain(gw.addr, stale).await.status, 401);
    assert_eq!(rx.count(), 1);
    gw.gw.drain().await;
}
