//! The process as an operator runs it: the built binary, SIGTERM drain, admin endpoints.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits_0() {
    let rx = TestReceiver::start().await;
    rx.delay_ms.store(1500, std::sync::atomic::Ordering::SeqCst);
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"server: {{ listen: ["127.0.0.1:{port}"], shutdown_grace: 10s }}
admin: {{ listen: "127.0.0.1:{admin}" }}
routes:
  - name: slow
    path: /slow
    mode: sync
    verify: {{ none: true }}
    targets: [{{ name: t, url: "{}", timeout: 5s }}]
"#,
            rx.url("/")
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(admin).await;

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let inflight = tokio::spawn(async move { plain(addr, post("/slow", &[], b"payload")).await });
    // Wait until the request is at the receiver, then ask the gateway to stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.count() == 0 {
        assert!(Instant::now() < deadline, "request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let answer = inflight.await.unwrap();
    assert_eq!(answer.status, 200, "the in-flight request must complete");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_token() {
    let rx = TestReceiver::start().await;
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0", token: "t0ken" }}
routes:
  - name: open
    path: /in
    mode: sync
    verify: {{ none: true }}
    targets: [{{ name: t, url: "{}" }}]
"#,
        rx.url("/")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let get = |p: &str, token: Option<&str>| {
        let mut b = http::Request::get(p).header("host", "x");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(Default::default()).unwrap()
    };
    assert_eq!(plain(gw.admin, get("/healthz", None)).await.status, 200);
    assert_eq!(plain(gw.admin, get("/readyz", None)).await.status, 200);
    assert_eq!(plain(gw.addr, post("/in", &[], b"x")).await.status, 200);
    let m = plain(gw.admin, get("/metrics", None)).await;
    let text = metrics_text(&m.body);
    assert!(
        text.contains(r#"hookgate_requests_total{route="open",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains("hookgate_upstream_duration_seconds_bucket"),
        "{text}"
    );
    assert_eq!(
        plain(gw.admin, get("/api/v1/routes", None)).await.status,
        401
    );
    assert_eq!(
        plain(gw.admin, get("/api/v1/routes", Some("wrong")))
            .await
            .status,
        401
    );
    assert_ne!(
        plain(gw.admin, get("/api/v1/routes", Some("t0ken")))
            .await
            .status,
        401
    );
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_secrets_stay_out_of_the_logs_unless_debug_body() {
    let rx = TestReceiver::start().await;
    for debug_body in [false, true] {
        let (port, admin) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(
            dir.path(),
            &format!(
                r#"server: {{ listen: ["127.0.0.1:{port}"] }}
admin: {{ listen: "127.0.0.1:{admin}", token: "admin-t0ken-xyz" }}
routes:
  - name: r
    path: /r
    mode: sync
    debug_body: {debug_body}
    verify: {{ bearer: {{ secret: "sekrit-123" }} }}
    targets: [{{ name: t, url: "{}" }}]
"#,
                rx.url("/")
            ),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["run", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ok = plain(
            addr,
            post(
                "/r",
                &[("authorization", "Bearer sekrit-123")],
                b"{\"marker\":\"b0dy-m4rker\"}",
            ),
        )
        .await;
        assert_eq!(ok.status, 200);
        let bad = plain(
            addr,
            post("/r", &[("authorization", "Bearer wrong-guess-777")], b"{}"),
        )
        .await;
        assert_eq!(bad.status, 401);
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("hookgate::access"), "no access log:\n{log}");
        for secret in ["sekrit-123", "admin-t0ken-xyz", "wrong-guess-777"] {
            assert!(!log.contains(secret), "`{secret}` appeared in the log");
        }
        assert_eq!(
            log.contains("b0dy-m4rker"),
            debug_body,
            "body logging should follow debug_body={debug_body}"
        );
    }
}
