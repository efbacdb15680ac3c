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
    admin_probe(gw.admin, "/readyz").await.0.as_u16()
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

    let m = admin_metrics(gw.admin).await;
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

/// Request-smuggling and framing tricks, each on its own connection: a 4xx and a closed
/// connection, never a request forwarded with a guessed length. With both Content-Length
/// and Transfer-Encoding, Transfer-Encoding frames the body (RFC 9112 §6.1; here an empty
/// chunked body, unsigned, so 401) and the connection is closed after the answer, so
/// nothing can ride behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused() {
    let rx = TestReceiver::start().await;
    let gw = gateway(&rx, "  max_body: 1KiB\n").await;
    let h = "POST /hooks/github HTTP/1.1\r\nHost: a\r\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "CL+TE",
            format!("{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "401",
        ),
        (
            "TE+CL",
            format!("{h}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
            "401",
        ),
        (
            "two lengths",
            format!("{h}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}x"),
            "400",
        ),
        (
            "obs-fold",
            format!("{h}X-A: b\r\n c\r\nContent-Length: 2\r\n\r\n{{}}"),
            "400",
        ),
        (
            "chunk size overflow",
            format!("{h}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "NUL in a value",
            format!("{h}X-A: b\0c\r\nContent-Length: 2\r\n\r\n{{}}"),
            "400",
        ),
        (
            "bare CR",
            "POST /hooks/github HTTP/1.1\r\nHost: a\rX-A: b\r\nContent-Length: 2\r\n\r\n{}"
                .to_string(),
            "400",
        ),
        (
            "unknown coding",
            format!("{h}Transfer-Encoding: xchunked\r\n\r\n{{}}"),
            "400",
        ),
        (
            "space before colon",
            format!("{h}Content-Length : 2\r\n\r\n{{}}"),
            "400",
        ),
        (
            "signed length",
            format!("{h}Content-Length: +2\r\n\r\n{{}}"),
            "400",
        ),
        (
            "oversized",
            format!("{h}Content-Length: 999999\r\n\r\n{{}}"),
            "413",
        ),
    ];
    for (name, raw, status) in cases {
        let answer = raw_exchange(&gw, raw.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{name}: {answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close") || *status == "400",
            "{name}: the connection stays open: {answer}"
        );
    }
    assert_eq!(rx.count(), 0, "nothing ambiguous reached the target");
    good_request_succeeds(&gw).await;
    gw.gw.drain().await;
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Sends the HTTP/2 preface, then `unit` up to `times` times as fast as the gateway takes
/// it, while draining what it answers; returns once the gateway has closed the connection.
async fn h2_flood(gw: &TestGateway, unit: &[u8], times: usize) -> Duration {
    let started = std::time::Instant::now();
    let s = TcpStream::connect(gw.addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(4, 0, 0, &[]));
    let _ = w.write_all(&hello).await;
    for _ in 0..times {
        if w.write_all(unit).await.is_err() {
            break;
        }
    }
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("the gateway kept the flooding connection open")
        .unwrap();
    started.elapsed()
}

/// HTTP/2 floods (PINGs, CONTINUATION without end, rapid reset) end in a closed connection
/// within the limits, and a good sender is served meanwhile and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_are_cut_off() {
    let rx = TestReceiver::start().await;
    let gw = gateway(&rx, "  h2c: true\n  header_timeout: 500ms\n").await;
    // PING flood: no request ever starts, so the connection ends at the header timeout.
    let ping = h2_frame(6, 0, 0, &[0; 8]);
    let t = h2_flood(&gw, &ping, 200_000).await;
    assert!(t < Duration::from_secs(8), "{t:?}");
    good_request_succeeds(&gw).await;

    // CONTINUATION flood: a header block that never ends.
    let mut unit = h2_frame(1, 0, 1, &[0x82, 0x87, 0x84]);
    let literal = [0x40, 0x01, b'x', 0x7f, 0x7f]
        .into_iter()
        .chain(std::iter::repeat_n(b'y', 127 + 127))
        .collect::<Vec<u8>>();
    for _ in 0..2000 {
        unit.extend(h2_frame(9, 0, 1, &literal));
    }
    let t = h2_flood(&gw, &unit, 1).await;
    assert!(t < Duration::from_secs(8), "{t:?}");
    good_request_succeeds(&gw).await;

    // Rapid reset: streams opened and cancelled at once, with the h2 crate as the client.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut refused = false;
    for _ in 0..5000 {
        let req = http::Request::post(format!("http://{}/hooks/github", gw.addr))
            .body(())
            .unwrap();
        match client.send_request(req, false) {
            Ok((_resp, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => {
                refused = true;
                break;
            }
        }
        match client.clone().ready().await {
            Ok(c) => client = c,
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(refused || ended.is_ok(), "rapid resets were never cut off");
    good_request_succeeds(&gw).await;
    gw.gw.drain().await;
}

/// A full disk (a small tmpfs under the store): the gateway answers 503 instead of 202 once
/// it cannot store, stays up, and every event it acknowledged reaches the target. Needs
/// permission to mount a tmpfs; says `skipped` otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_events_and_loses_none() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(mnt.path())
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        other => {
            println!("skipped: cannot mount a tmpfs here ({other:?})");
            return;
        }
    }
    let rx = TestReceiver::start().await;
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"], max_body: 64KiB }}
admin: {{ listen: "127.0.0.1:0" }}
storage: {{ path: "{dir}/data", max_size: 10GiB }}
routes:
  - name: github
    path: /hooks/github
    dedup: false
    verify: {{ github: {{ secret: "{SECRET}" }} }}
    targets: [{{ name: ci, url: "{u}" }}]
"#,
        dir = mnt.path().display(),
        u = rx.url("/in")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(32 << 10));
    let sig = github_sig(SECRET, body.as_bytes());
    let (mut acknowledged, mut refused) = (Vec::new(), 0);
    for _ in 0..2000 {
        let h = [("x-hub-signature-256", sig.as_str())];
        let a = plain(gw.addr, post("/hooks/github", &h, body.as_bytes())).await;
        match a.status.as_u16() {
            202 => {
                let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
                acknowledged.push(v["id"].as_str().unwrap().to_owned());
            }
            503 => {
                assert!(a.headers.contains_key("retry-after"));
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            s => panic!("unexpected {s}: {}", String::from_utf8_lossy(&a.body)),
        }
    }
    assert!(refused >= 5, "the disk never filled");
    assert!(!acknowledged.is_empty());
    assert_eq!(admin_probe(gw.admin, "/healthz").await.0, 200);
    // Every acknowledged event arrives (at least once: a completion that cannot be written
    // on a full disk is sent again).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: std::collections::HashSet<String> = rx
            .all()
            .iter()
            .filter_map(|r| {
                r.headers
                    .get("hookgate-event-id")?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
            .collect();
        let missing = acknowledged.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of {} acknowledged events never arrived",
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.gw.drain().await;
    let _ = std::process::Command::new("umount")
        .arg(mnt.path())
        .status();
}
