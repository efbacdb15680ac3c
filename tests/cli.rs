//! The operator CLI against a real gateway: every command, tables and `--json`, exit codes
//! for a wrong token and an unreachable admin listener.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

async fn hg(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(&args)
            .env_remove("HOOKGATE_ADMIN_TOKEN")
            .env_remove("HOOKGATE_ADMIN")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(admin: std::net::SocketAddr, rest: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
    v.extend([
        "--admin".into(),
        format!("http://{admin}"),
        "--token".into(),
        "tok".into(),
    ]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_command() {
    let rx = TestReceiver::start().await;
    rx.script.lock().unwrap().push_back((410, None));
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0", token: tok }}
storage: {{ path: data }}
routes:
  - name: gh
    path: /gh
    verify: {{ bearer: {{ secret: s }} }}
    dedup: {{ header: X-Dedup }}
    targets:
      - {{ name: ci, url: "{u}", filter: '.keep == true' }}
"#,
        u = rx.url("/ci")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let send = |body: &'static [u8]| {
        let addr = gw.addr;
        async move { plain(addr, post("/gh", &[("authorization", "Bearer s")], body)).await }
    };
    // First delivery: 410 → dead letter. Second: delivered. Third: filtered.
    let dead: serde_json::Value =
        serde_json::from_slice(&send(br#"{"keep":true,"n":1}"#).await.body).unwrap();
    rx.wait_for(1, 10).await;
    send(br#"{"keep":true,"n":2}"#).await;
    send(br#"{"keep":false}"#).await;
    rx.wait_for(2, 10).await;
    // A repeated delivery id: kept as a duplicate, not delivered.
    let dup = |id: &'static str| {
        let addr = gw.addr;
        async move {
            plain(
                addr,
                post(
                    "/gh",
                    &[("authorization", "Bearer s"), ("x-dedup", id)],
                    br#"{"keep":true}"#,
                ),
            )
            .await
        }
    };
    assert_eq!(dup("same").await.status, 202);
    assert_eq!(dup("same").await.status, 200);
    rx.wait_for(3, 10).await;
    let a = gw.admin;

    let (code, out, err) = hg(args(a, &["status"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ROUTE") && out.contains("gh") && out.contains("ci"),
        "{out}"
    );

    let (code, out, err) = hg(args(a, &["events", "list"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ci:filtered") && out.contains("ci:delivered") && out.contains("ci:dead"),
        "{out}"
    );
    let (code, out, _) = hg(args(
        a,
        &["events", "list", "--status", "duplicate", "--json"],
    ))
    .await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["events"][0]["duplicate_of"].is_string());
    let (code, out, _) = hg(args(a, &["events", "list", "--status", "dead", "--json"])).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);

    let id = dead["id"].as_str().unwrap();
    let (code, out, _) = hg(args(a, &["events", "show", id])).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("410") && out.contains("authorization: [redacted]"),
        "{out}"
    );

    let (code, out, _) = hg(args(a, &["dead-letters", "list", "--target", "gh/ci"])).await;
    assert_eq!(code, 0);
    assert!(out.contains(id), "{out}");
    let (code, out, err) = hg(args(
        a,
        &["dead-letters", "replay", "--target", "gh/ci", "--all"],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1"), "{out}");
    assert!(err.contains("replayed 1/1"), "progress: {err}");
    rx.wait_for(4, 10).await;

    let (code, _, _) = hg(args(a, &["replay", id, "--target", "ci"])).await;
    assert_eq!(code, 0);
    rx.wait_for(5, 10).await;

    let (code, out, _) = hg(args(a, &["targets", "pause", "gh/ci"])).await;
    assert_eq!((code, out.trim()), (0, "gh/ci: paused"));
    let (code, out, _) = hg(args(a, &["status", "--json"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"paused\": true"), "{out}");
    let (code, _, _) = hg(args(a, &["targets", "resume", "gh/ci"])).await;
    assert_eq!(code, 0);

    let (code, out, _) = hg(args(a, &["reload"])).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("unchanged") || out.starts_with("reloaded"),
        "{out}"
    );

    // Refusals: exit 1 with a clear message; an unknown event, a wrong token.
    let (code, _, err) = hg(args(a, &["events", "show", "nope"])).await;
    assert_eq!(code, 1, "{err}");
    let mut wrong = args(a, &["status"]);
    wrong.pop();
    wrong.push("bad".into());
    let (code, _, err) = hg(wrong).await;
    assert_eq!(code, 1);
    assert!(err.contains("token"), "{err}");
    gw.gw.drain().await;

    // Nothing listening: exit 2.
    let start = Instant::now();
    let (code, _, err) = hg(args(a, &["status"])).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach the admin listener"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}
