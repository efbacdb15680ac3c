//! Canary secrets — a verifier secret, a bearer token, an outbound signing key, the admin
//! token, and the signature headers senders attach — must appear nowhere: not in logs at any
//! level (human or JSON), not in metrics, not in any admin API answer or error.

mod common;

use base64::Engine;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GH: &str = "CANARY-gh-secret-4f1d";
const BEARER: &str = "CANARY-bearer-token-9a7c";
const ADMIN: &str = "CANARY-admin-token-1e2b";
const SIGN_RAW: &[u8] = b"CANARY-signing-key-77";
/// Credentials a target's `headers.set` adds to every delivery.
const SET_AUTH: &str = "CANARY-set-authorization-3c5d";
const SET_KEY: &str = "CANARY-set-api-key-8e8f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_appear_nowhere() {
    let rx = TestReceiver::start().await;
    let sign = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(SIGN_RAW)
    );
    for format in ["human", "json"] {
        let (port, admin) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(
            dir.path(),
            &format!(
                r#"server: {{ listen: ["127.0.0.1:{port}"] }}
admin: {{ listen: "127.0.0.1:{admin}", token: "{ADMIN}" }}
storage: {{ path: data }}
routes:
  - name: gh
    path: /gh
    verify: {{ github: {{ secret: "{GH}" }} }}
    targets: [{{ name: t, url: "{u}", sign: {{ secret: "{sign}" }}, headers: {{ set: {{ Authorization: "Bearer {SET_AUTH}", X-Api-Key: "{SET_KEY}" }} }} }}]
  - name: tok
    path: /tok
    mode: sync
    verify: {{ bearer: {{ secret: "{BEARER}" }} }}
    targets: [{{ name: t, url: "{u}" }}]
"#,
                u = rx.url("/x")
            ),
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["run", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "trace")
            .env("HOOKGATE_LOG_FORMAT", format)
            .stdout(Stdio::null())
            // A file, not a pipe: trace-level output must never block the process.
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(admin_addr).await.is_err() {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = br#"{"canary":"payload"}"#;
        let sig = github_sig(GH, body);
        let mut canaries: Vec<String> = vec![
            GH.into(),
            BEARER.into(),
            ADMIN.into(),
            sign.clone(),
            String::from_utf8_lossy(SIGN_RAW).into(),
            sig.clone(),
            SET_AUTH.into(),
            SET_KEY.into(),
        ];
        // Traffic: good and bad signatures, good and bad tokens.
        let ok = plain(
            addr,
            post(
                "/gh",
                &[("x-hub-signature-256", &sig), ("x-github-delivery", "d1")],
                body,
            ),
        )
        .await;
        assert_eq!(ok.status, 202);
        let id = serde_json::from_slice::<serde_json::Value>(&ok.body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let wrong = github_sig("not-the-secret", body);
        canaries.push(wrong.clone());
        assert_eq!(
            plain(addr, post("/gh", &[("x-hub-signature-256", &wrong)], body))
                .await
                .status,
            401
        );
        assert_eq!(
            plain(
                addr,
                post(
                    "/tok",
                    &[("authorization", &format!("Bearer {BEARER}"))],
                    b"{}"
                )
            )
            .await
            .status,
            200
        );
        let bad_bearer = "CANARY-guessed-token-0000";
        canaries.push(bad_bearer.into());
        assert_eq!(
            plain(
                addr,
                post(
                    "/tok",
                    &[("authorization", &format!("Bearer {bad_bearer}"))],
                    b"{}"
                )
            )
            .await
            .status,
            401
        );
        rx.wait_for(if format == "human" { 2 } else { 4 }, 10).await;

        // Every endpoint, with the token, without it, and with a wrong one.
        let mut answers = String::new();
        let paths = [
            "/healthz".to_owned(),
            "/readyz".into(),
            "/metrics".into(),
            "/api/v1/routes".into(),
            "/api/v1/events".into(),
            format!("/api/v1/events/{id}"),
            "/api/v1/dead-letters".into(),
            "/api/v1/rejections".into(),
            "/api/v1/config".into(),
            "/api/v1/openapi.json".into(),
            "/api/v1/nope".into(),
        ];
        for p in &paths {
            for token in [Some(ADMIN), None, Some("CANARY-wrong-admin-5555")] {
                let mut b = http::Request::get(p.as_str()).header("host", "x");
                if let Some(t) = token {
                    b = b.header("authorization", format!("Bearer {t}"));
                }
                let a = plain(admin_addr, b.body(Default::default()).unwrap()).await;
                answers.push_str(&String::from_utf8_lossy(&a.body));
            }
        }
        canaries.push("CANARY-wrong-admin-5555".into());
        let reload = plain(
            admin_addr,
            http::Request::post("/api/v1/reload")
                .header("host", "x")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        answers.push_str(&String::from_utf8_lossy(&reload.body));
        // `check` and `check --sample` on the same file print headers, never credentials.
        let sample = dir.path().join("sample.json");
        std::fs::write(&sample, body).unwrap();
        for extra in [
            &[][..],
            &["--sample", sample.to_str().unwrap(), "--route", "gh"][..],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
                .args(["check", "-c"])
                .arg(&cfg)
                .args(extra)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            answers.push_str(&String::from_utf8_lossy(&out.stdout));
            answers.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        assert!(answers.contains("authorization: [redacted]"), "{answers}");

        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0));
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(log.len() > 10_000, "trace logging did not run ({format})");
        assert!(
            log.contains("hookgate::access"),
            "no access log at all ({format})"
        );
        for c in &canaries {
            assert!(
                !answers.contains(c.as_str()),
                "`{c}` in an admin API answer ({format})"
            );
            assert!(!log.contains(c.as_str()), "`{c}` in the {format} log");
        }
    }
}
